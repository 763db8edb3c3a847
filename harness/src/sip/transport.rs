//! The socket edge: one UDP socket and one TCP listener on the same port,
//! outgoing TCP connections reused per peer, and a [`Recorder`] that keeps
//! the raw bytes of every message sent or received (as the plain
//! [`Record`]s of [`super::record`]). Nothing here knows SIP beyond framing
//! and parsing.
//!
//! An endpoint given [`TlsSettings`] ([`Endpoint::bind_with`]) also speaks
//! SIP over TLS: it opens TLS connections (one per peer, reused, as TCP)
//! and accepts them on its TCP port beside plain TCP (a connection whose
//! first byte is a TLS handshake record is TLS), presenting its identity.
//! A connection and then its handshake each get [`CONNECT_DEADLINE`]; a
//! handshake that fails is a [`SendError`] naming the peer and rustls'
//! reason (one a peer opened to us, a problem recorded as received). Every TLS session's secrets go to the recorder's
//! [`KeyLogSink`]; its messages are recorded in clear, as
//! [`Transport::Tls`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::framing::StreamFramer;
use super::loss::{Dropper, Loss};
use super::record::{Direction, Inbound, Record};
use super::tls::{KeyLogSink, TlsSettings};
use super::{Message, Transport};

/// How long a TCP connect may take on loopback before we call it refused;
/// a TLS handshake gets as long again.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(2);

/// Called with every record as it is made (a sans-IO deriver, say).
pub type Tap = Box<dyn FnMut(&Record) + Send>;

#[derive(Default)]
struct Log {
    records: Vec<Record>,
    tap: Option<Tap>,
    keys: KeyLogSink,
    /// The datagrams dropped on purpose (`--loss`), the first
    /// [`DROPPED_KEPT`] of them, and how many in all.
    dropped: Vec<Record>,
    dropped_count: usize,
}

/// How many dropped datagrams a case keeps to report (the rest counted).
pub const DROPPED_KEPT: usize = 1000;

/// Shared, append-only log of every message of a case.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Log>>);

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("records", &self.lock().records.len())
            .finish()
    }
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands every record from now on to `tap`, in recording order.
    pub fn set_tap(&self, tap: impl FnMut(&Record) + Send + 'static) {
        self.lock().tap = Some(Box::new(tap));
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &self,
        agent: &str,
        direction: Direction,
        transport: Transport,
        local: SocketAddr,
        peer: SocketAddr,
        raw: Vec<u8>,
        problem: Option<String>,
    ) {
        let mut log = self.lock();
        let seq = log.records.len() as u64;
        let record = Record {
            seq,
            at: SystemTime::now(),
            agent: agent.to_string(),
            direction,
            transport,
            local,
            peer,
            raw,
            problem,
            parsed: Default::default(),
        };
        if let Some(tap) = log.tap.as_mut() {
            tap(&record);
        }
        log.records.push(record);
    }

    /// A datagram dropped on purpose: kept apart from what crossed the
    /// wire (no phone saw it, no server got it), for the report.
    fn push_dropped(&self, record: Record) {
        let mut log = self.lock();
        log.dropped_count += 1;
        if log.dropped.len() < DROPPED_KEPT {
            log.dropped.push(record);
        }
    }

    /// The datagrams dropped on purpose that were kept, and how many were
    /// dropped in all.
    pub fn dropped(&self) -> (Vec<Record>, usize) {
        let log = self.lock();
        (log.dropped.clone(), log.dropped_count)
    }

    /// How many messages have been recorded.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn snapshot(&self) -> Vec<Record> {
        self.lock().records.clone()
    }

    /// Where the endpoints recording here put their TLS sessions' secrets.
    pub fn key_log(&self) -> KeyLogSink {
        self.lock().keys.clone()
    }

    /// The first record from index `from` on that `f` picks, without
    /// copying the others.
    pub fn find_since<T>(&self, from: usize, f: impl FnMut(&Record) -> Option<T>) -> Option<T> {
        self.lock().records.iter().skip(from).find_map(f)
    }
}

/// Sleeps until `at`, or forever when nothing is due: the timer arm of an
/// edge task's `select!` over a sans-IO core's `poll_timeout`.
pub async fn sleep_until(at: Option<std::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{transport} send to {peer} failed: {source}")]
    Io {
        transport: Transport,
        peer: SocketAddr,
        source: io::Error,
    },
    #[error("TCP connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("TLS handshake with {peer} failed: {reason}")]
    Handshake { peer: SocketAddr, reason: String },
    #[error("TLS handshake with {0} did not finish within {CONNECT_DEADLINE:?}")]
    HandshakeTimeout(SocketAddr),
    #[error("TLS to {0}: this endpoint has no TLS settings")]
    NoTls(SocketAddr),
}

/// A connection's writer and its local address (an ephemeral port for
/// the connections we open: what a capture must show).
type Connection = (mpsc::UnboundedSender<Write>, SocketAddr);

/// What a connection's writer task is given.
enum Write {
    Bytes(Vec<u8>),
    /// Close our side (TLS close_notify, then FIN) and write no more.
    Close,
}
/// Open connections by transport (TCP or TLS) and peer.
type Writers = Arc<Mutex<HashMap<(Transport, SocketAddr), Open>>>;

/// An open connection: how to write to it, its reader's and writer's
/// tasks (aborting both closes it at once), and what tells that its
/// reader has ended (the peer closed its side, or the link broke).
#[derive(Clone)]
struct Open {
    connection: Connection,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    read_ended: tokio::sync::watch::Receiver<()>,
}

/// How long a peer gets to close its side of a connection we closed
/// ([`Endpoint::close_streams`]): as long as a connect.
pub const CLOSE_DEADLINE: Duration = CONNECT_DEADLINE;

/// An endpoint's TLS: its configurations for the connections it opens and
/// accepts, and the name it checks servers against.
struct Tls {
    connector: tokio_rustls::TlsConnector,
    acceptor: tokio_rustls::TlsAcceptor,
    server_name: rustls::pki_types::ServerName<'static>,
}

impl Tls {
    fn new(settings: &TlsSettings, keys: &KeyLogSink) -> io::Result<Tls> {
        let client = settings.client_config(keys).map_err(io::Error::other)?;
        let server = settings.server_config(keys).map_err(io::Error::other)?;
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(client),
            acceptor: tokio_rustls::TlsAcceptor::from(server),
            server_name: settings.server_name().clone(),
        })
    }
}

/// The first byte of a TLS handshake record (a ClientHello): what tells a
/// TLS connection from plain TCP on one port.
const TLS_HANDSHAKE: u8 = 0x16;

/// A bound SIP endpoint. Dropping it stops all its tasks.
pub struct Endpoint {
    name: String,
    local: SocketAddr,
    udp: Arc<UdpSocket>,
    writers: Writers,
    inbound: mpsc::UnboundedSender<Inbound>,
    recorder: Recorder,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    tls: Option<Arc<Tls>>,
    /// `--loss`: what it sends and what it receives over UDP, each
    /// dropped as its stream decides ([`Endpoint::lose`]).
    loss: Arc<Mutex<Option<(Dropper, Dropper)>>>,
    gate: Gate,
}

/// Holds an endpoint's reading: while held, what arrives stays where it
/// is (in the socket, or the stream's last read), neither recorded nor
/// delivered, as if still on the wire, until released or until the
/// instant it is held until. A race's phones are held so, from before
/// the first of them acts until each has acted: a message the server
/// sends in between (the CANCEL provoked by the first answer) then
/// crosses the second phone's action, as it would on a real network,
/// instead of overtaking it.
#[derive(Debug, Clone)]
pub struct Gate(Arc<tokio::sync::watch::Sender<Option<std::time::Instant>>>);

impl Default for Gate {
    fn default() -> Gate {
        Gate(Arc::new(tokio::sync::watch::channel(None).0))
    }
}

impl Gate {
    /// Holds reading until `until` (None: releases it).
    pub fn hold(&self, until: Option<std::time::Instant>) {
        self.0.send_replace(until);
    }

    /// Returns once reading is not held.
    pub async fn passed(&self) {
        let mut rx = self.0.subscribe();
        loop {
            let Some(until) = *rx.borrow_and_update() else {
                return;
            };
            if until <= std::time::Instant::now() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

impl Endpoint {
    /// Binds UDP and TCP on one ephemeral port of `ip`.
    pub async fn bind(
        name: &str,
        ip: IpAddr,
        recorder: Recorder,
    ) -> io::Result<(Endpoint, mpsc::UnboundedReceiver<Inbound>)> {
        Self::bind_with(name, ip, recorder, None).await
    }

    /// [`Endpoint::bind`], speaking TLS too when given its settings (see
    /// the module's doc); a configuration rustls refuses is an error.
    pub async fn bind_with(
        name: &str,
        ip: IpAddr,
        recorder: Recorder,
        tls: Option<Arc<TlsSettings>>,
    ) -> io::Result<(Endpoint, mpsc::UnboundedReceiver<Inbound>)> {
        Self::bind_at(name, SocketAddr::new(ip, 0), recorder, tls).await
    }

    /// [`Endpoint::bind_with`] on a given address: port 0 is a free port
    /// for both UDP and TCP, any other is that port (both, or an error).
    pub async fn bind_at(
        name: &str,
        at: SocketAddr,
        recorder: Recorder,
        tls: Option<Arc<TlsSettings>>,
    ) -> io::Result<(Endpoint, mpsc::UnboundedReceiver<Inbound>)> {
        let tls = match tls {
            Some(settings) => Some(Arc::new(Tls::new(&settings, &recorder.key_log())?)),
            None => None,
        };
        if at.port() != 0 {
            let udp = UdpSocket::bind(at).await?;
            let listener = TcpListener::bind(at).await?;
            return Ok(Self::start(name, at, udp, listener, recorder, tls));
        }
        let mut last_err = None;
        for attempt in 0..32 {
            let udp = UdpSocket::bind(at).await?;
            let local = udp.local_addr()?;
            // A port an earlier endpoint of this process had is taken
            // only as a last resort: a server may still hold that phone's
            // contact and send it requests for another identity (strays),
            // which would land in this case's capture.
            if attempt < 31 && !first_use(local.port()) {
                continue;
            }
            match TcpListener::bind(local).await {
                Ok(listener) => return Ok(Self::start(name, local, udp, listener, recorder, tls)),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
    }

    fn start(
        name: &str,
        local: SocketAddr,
        udp: UdpSocket,
        listener: TcpListener,
        recorder: Recorder,
        tls: Option<Arc<Tls>>,
    ) -> (Endpoint, mpsc::UnboundedReceiver<Inbound>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let ep = Endpoint {
            name: name.to_string(),
            local,
            udp: Arc::new(udp),
            writers: Arc::default(),
            inbound: tx,
            recorder,
            tasks: Arc::default(),
            tls,
            loss: Arc::default(),
            gate: Gate::default(),
        };
        let (udp, rec, name, inbound, loss, gate) = (
            ep.udp.clone(),
            ep.recorder.clone(),
            ep.name.clone(),
            ep.inbound.clone(),
            ep.loss.clone(),
            ep.gate.clone(),
        );
        ep.spawn(async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                // Held: what came waits here, unrecorded, as if in flight.
                gate.passed().await;
                let lost = lock(&loss)
                    .as_mut()
                    .is_some_and(|(_, received)| received.drops());
                if lost {
                    rec.push_dropped(dropped(&name, Direction::Received, local, peer, &buf[..n]));
                    continue;
                }
                deliver(
                    &rec,
                    &name,
                    Transport::Udp,
                    local,
                    peer,
                    buf[..n].to_vec(),
                    &inbound,
                );
            }
        });
        let conn = Arc::new(ep.connector());
        let tls = ep.tls.clone();
        let tasks = ep.tasks.clone();
        ep.spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                match &tls {
                    // A connection that has no local address any more is gone.
                    None => drop(conn.adopt_tcp(stream, peer)),
                    Some(tls) => {
                        let (conn, tls) = (conn.clone(), tls.clone());
                        let h = tokio::spawn(async move { conn.accept(stream, peer, &tls).await });
                        lock(&tasks).push(h.abort_handle());
                    }
                }
            }
        });
        (ep, rx)
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let h = tokio::spawn(fut);
        lock(&self.tasks).push(h.abort_handle());
    }

    fn connector(&self) -> Connector {
        Connector {
            name: self.name.clone(),
            writers: self.writers.clone(),
            inbound: self.inbound.clone(),
            recorder: self.recorder.clone(),
            tasks: self.tasks.clone(),
            gate: self.gate.clone(),
        }
    }

    /// What holds its reading ([`Gate`]).
    pub fn gate(&self) -> Gate {
        self.gate.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// From now on, drops datagrams it sends and receives over UDP as
    /// `loss` decides for the phone `name` (see [`crate::sip::loss`]);
    /// each one dropped is kept for the report ([`Recorder::dropped`]),
    /// not recorded as crossing the wire.
    pub fn lose(&self, loss: Loss, name: &str) {
        *lock(&self.loss) = Some((
            Dropper::new(loss, name, "sent"),
            Dropper::new(loss, name, "received"),
        ));
    }

    /// Closes every TCP and TLS connection it has, opened or accepted, as
    /// a phone does that closes its connections (after idling, on a
    /// network change): its side first (TLS close_notify, then FIN), then
    /// it waits, at most [`CLOSE_DEADLINE`], for the peer to close its own
    /// side, which says the peer has seen the close; what the peer sends
    /// until then is still read. Then it forgets them: what the server
    /// sends next must come on a connection it opens. Returns how many it
    /// closed, and how many of those the peer had not closed in time
    /// (cut off then).
    pub async fn close_streams(&self) -> (usize, usize) {
        let open: Vec<Open> = lock(&self.writers).drain().map(|(_, o)| o).collect();
        for o in &open {
            let _ = o.connection.0.send(Write::Close);
        }
        let mut late = 0;
        let until = tokio::time::Instant::now() + CLOSE_DEADLINE;
        for o in &open {
            let mut ended = o.read_ended.clone();
            // Err: the reader has ended and dropped its sender.
            let seen = async { while ended.changed().await.is_ok() {} };
            if tokio::time::timeout_at(until, seen).await.is_err() {
                late += 1;
            }
            for t in lock(&o.tasks).drain(..) {
                t.abort();
            }
        }
        (open.len(), late)
    }

    /// Sends one message; records it first, so a failed send is still seen.
    pub async fn send(
        &self,
        transport: Transport,
        peer: SocketAddr,
        bytes: Vec<u8>,
    ) -> Result<(), SendError> {
        self.send_or(transport, peer, None, bytes).await
    }

    /// [`Endpoint::send`], but over TCP or TLS with no connection open to
    /// `peer`, to `reconnect` when given: a request to a phone goes over
    /// the connection its requests came on while it is open, else to the
    /// phone's Contact on a new one (RFC 3261 18.1.1; `peer` is then the
    /// phone's ephemeral port, where nothing listens).
    pub async fn send_or(
        &self,
        transport: Transport,
        peer: SocketAddr,
        reconnect: Option<SocketAddr>,
        bytes: Vec<u8>,
    ) -> Result<(), SendError> {
        let open = |to: SocketAddr| {
            lock(&self.writers)
                .get(&(transport, to))
                .map(|o| o.connection.clone())
                .filter(|c| !c.0.is_closed())
        };
        let peer = match reconnect {
            Some(other) if transport != Transport::Udp && open(peer).is_none() => other,
            _ => peer,
        };
        let problem = Message::parse(bytes.clone())
            .err()
            .map(|e| format!("scacheck sent {e}"));
        let io_err = |source| SendError::Io {
            transport,
            peer,
            source,
        };
        match transport {
            Transport::Udp => {
                if lock(&self.loss)
                    .as_mut()
                    .is_some_and(|(sent, _)| sent.drops())
                {
                    let record = dropped(&self.name, Direction::Sent, self.local, peer, &bytes);
                    self.recorder.push_dropped(record);
                    return Ok(());
                }
                self.recorder.push(
                    &self.name,
                    Direction::Sent,
                    transport,
                    self.local,
                    peer,
                    bytes.clone(),
                    problem,
                );
                self.udp
                    .send_to(&bytes, peer)
                    .await
                    .map(|_| ())
                    .map_err(io_err)
            }
            Transport::Tcp | Transport::Tls => {
                let connection = match open(peer) {
                    Some(c) => Ok(c),
                    None => self.connect(transport, peer).await,
                };
                // Recorded even when it could not be sent: what scacheck
                // meant to send is part of the story.
                let local = connection.as_ref().map(|c| c.1).unwrap_or(self.local);
                self.recorder.push(
                    &self.name,
                    Direction::Sent,
                    transport,
                    local,
                    peer,
                    bytes.clone(),
                    problem,
                );
                let (writer, _) = connection?;
                writer
                    .send(Write::Bytes(bytes))
                    .map_err(|_| io_err(io::ErrorKind::BrokenPipe.into()))
            }
        }
    }

    /// Opens a connection to `peer`: TCP, and over TLS its handshake, each
    /// within [`CONNECT_DEADLINE`].
    async fn connect(
        &self,
        transport: Transport,
        peer: SocketAddr,
    ) -> Result<Connection, SendError> {
        let io_err = |source| SendError::Io {
            transport,
            peer,
            source,
        };
        let stream = match tokio::time::timeout(CONNECT_DEADLINE, TcpStream::connect(peer)).await {
            Err(_) => return Err(SendError::ConnectTimeout(peer)),
            Ok(Err(e)) => return Err(io_err(e)),
            Ok(Ok(stream)) => stream,
        };
        if transport != Transport::Tls {
            return self.connector().adopt_tcp(stream, peer).map_err(io_err);
        }
        let tls = self.tls.as_ref().ok_or(SendError::NoTls(peer))?;
        let local = stream.local_addr().map_err(io_err)?;
        let handshake = tls.connector.connect(tls.server_name.clone(), stream);
        match tokio::time::timeout(CONNECT_DEADLINE, handshake).await {
            Err(_) => Err(SendError::HandshakeTimeout(peer)),
            Ok(Err(e)) => Err(SendError::Handshake {
                peer,
                reason: e.to_string(),
            }),
            Ok(Ok(stream)) => Ok(self.connector().adopt(stream, local, peer, Transport::Tls)),
        }
    }
}

/// The record of a datagram dropped on purpose (never crossed the wire).
fn dropped(
    agent: &str,
    direction: Direction,
    local: SocketAddr,
    peer: SocketAddr,
    raw: &[u8],
) -> Record {
    Record {
        seq: 0,
        at: SystemTime::now(),
        agent: agent.to_string(),
        direction,
        transport: Transport::Udp,
        local,
        peer,
        raw: raw.to_vec(),
        problem: None,
        parsed: Default::default(),
    }
}

/// Whether no endpoint of this process has had `port` before (and
/// remembers it: at most 65,536 ports, so bounded).
fn first_use(port: u16) -> bool {
    static USED: Mutex<Option<std::collections::HashSet<u16>>> = Mutex::new(None);
    lock(&USED)
        .get_or_insert_with(Default::default)
        .insert(port)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What a connection task (TCP or TLS) needs from its endpoint.
struct Connector {
    name: String,
    writers: Writers,
    inbound: mpsc::UnboundedSender<Inbound>,
    recorder: Recorder,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
    gate: Gate,
}

impl Connector {
    /// Starts reading and writing a plain TCP connection; returns its
    /// writer and local address.
    fn adopt_tcp(&self, stream: TcpStream, peer: SocketAddr) -> io::Result<Connection> {
        let local = stream.local_addr()?;
        Ok(self.adopt(stream, local, peer, Transport::Tcp))
    }

    /// A connection a peer opened to an endpoint that speaks TLS: TLS if
    /// its first byte begins a handshake (then accepted within
    /// [`CONNECT_DEADLINE`]; a handshake that fails is recorded as a
    /// problem naming the peer), else plain TCP.
    async fn accept(&self, stream: TcpStream, peer: SocketAddr, tls: &Tls) {
        let Ok(local) = stream.local_addr() else {
            return;
        };
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(CONNECT_DEADLINE, stream.peek(&mut first)).await;
        if !matches!(peeked, Ok(Ok(1)) if first[0] == TLS_HANDSHAKE) {
            let _ = self.adopt(stream, local, peer, Transport::Tcp);
            return;
        }
        let why = match tokio::time::timeout(CONNECT_DEADLINE, tls.acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                self.adopt(stream, local, peer, Transport::Tls);
                return;
            }
            Ok(Err(e)) => format!("TLS handshake from {peer} failed: {e}"),
            Err(_) => {
                format!("TLS handshake from {peer} did not finish within {CONNECT_DEADLINE:?}")
            }
        };
        self.recorder.push(
            &self.name,
            Direction::Received,
            Transport::Tls,
            local,
            peer,
            Vec::new(),
            Some(why),
        );
    }

    /// Starts reading and writing a connection (TCP, or TLS over it) whose
    /// local address is `local`; returns its writer and that address.
    fn adopt<S>(
        &self,
        stream: S,
        local: SocketAddr,
        peer: SocketAddr,
        transport: Transport,
    ) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
        let own: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (read_ending, read_ended) = tokio::sync::watch::channel(());
        lock(&self.writers).insert(
            (transport, peer),
            Open {
                connection: (tx.clone(), local),
                tasks: own.clone(),
                read_ended,
            },
        );
        // Only this connection's entry: a newer one to the same peer may
        // have taken its place.
        let forget = {
            let (writers, tx) = (self.writers.clone(), tx.clone());
            move || {
                let mut writers = lock(&writers);
                if writers
                    .get(&(transport, peer))
                    .is_some_and(|o| o.connection.0.same_channel(&tx))
                {
                    writers.remove(&(transport, peer));
                }
            }
        };
        let writer = tokio::spawn(async move {
            while let Some(write) = rx.recv().await {
                let Write::Bytes(bytes) = write else {
                    let _ = wr.shutdown().await;
                    break;
                };
                // A TLS stream holds what it encrypted until flushed.
                if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
            }
        });
        let (rec, name, inbound, gate) = (
            self.recorder.clone(),
            self.name.clone(),
            self.inbound.clone(),
            self.gate.clone(),
        );
        let reader = tokio::spawn(async move {
            // Dropped when the reader ends: what close_streams waits for.
            let _ending = read_ending;
            let mut framer = StreamFramer::default();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => framer.push(&buf[..n]),
                }
                while let Some(frame) = framer.next_message() {
                    gate.passed().await;
                    match frame {
                        Ok(raw) => deliver(&rec, &name, transport, local, peer, raw, &inbound),
                        Err(e) => {
                            // A broken stream cannot be re-synchronised: keep
                            // what we had for the report and drop the link.
                            let mut held = framer.take_pending();
                            held.truncate(super::framing::MAX_HEADER_BYTES);
                            rec.push(
                                &name,
                                Direction::Received,
                                transport,
                                local,
                                peer,
                                held,
                                Some(format!(
                                    "{} stream from {peer} dropped: {e}",
                                    transport.via_token()
                                )),
                            );
                            forget();
                            return;
                        }
                    }
                }
            }
            forget();
        });
        lock(&own).extend([writer.abort_handle(), reader.abort_handle()]);
        let mut tasks = lock(&self.tasks);
        tasks.push(writer.abort_handle());
        tasks.push(reader.abort_handle());
        (tx, local)
    }
}

/// Records a received frame and hands it on if it parses.
fn deliver(
    rec: &Recorder,
    name: &str,
    transport: Transport,
    local: SocketAddr,
    peer: SocketAddr,
    raw: Vec<u8>,
    inbound: &mpsc::UnboundedSender<Inbound>,
) {
    match Message::parse(raw.clone()) {
        Ok(msg) => {
            rec.push(name, Direction::Received, transport, local, peer, raw, None);
            let _ = inbound.send(Inbound {
                msg,
                transport,
                peer,
            });
        }
        Err(e) => rec.push(
            name,
            Direction::Received,
            transport,
            local,
            peer,
            raw,
            Some(e.to_string()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_fresh_once_per_process() {
        // Port 1 is never bound here (privileged).
        assert!(first_use(1));
        assert!(!first_use(1));
    }
    use crate::sip::build::Builder;
    use crate::sip::tls::{TestPki, TlsUri, Trust};

    fn options(n: u32) -> Vec<u8> {
        Builder::request("OPTIONS", "sip:60970@127.0.0.1")
            .header("Via", &format!("SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bK{n}"))
            .header("From", "<sip:a@sca.test>;tag=1")
            .header("To", "<sip:b@sca.test>")
            .header("Call-ID", &format!("c{n}"))
            .header("CSeq", &format!("{n} OPTIONS"))
            .build()
    }

    async fn endpoint(
        name: &str,
        tls: Option<TlsSettings>,
    ) -> (Endpoint, mpsc::UnboundedReceiver<Inbound>, Recorder) {
        let recorder = Recorder::default();
        let (ep, rx) = Endpoint::bind_with(
            name,
            "127.0.0.1".parse().unwrap(),
            recorder.clone(),
            tls.map(Arc::new),
        )
        .await
        .unwrap();
        (ep, rx, recorder)
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<Inbound>) -> Inbound {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a message within 5 s")
            .expect("the endpoint runs")
    }

    /// A phone that closes its connections is reached again on a new one
    /// to the address it names (its Contact), never on the closed one;
    /// with the connection open, the connection is used.
    #[tokio::test]
    async fn a_closed_connection_is_replaced_by_one_to_the_contact() {
        let (phone, mut phone_rx, _) = endpoint("phone", None).await;
        let (server, mut server_rx, _) = endpoint("server", None).await;
        phone
            .send(Transport::Tcp, server.local_addr(), options(1))
            .await
            .unwrap();
        let from_phone = next(&mut server_rx).await.peer;
        assert_ne!(from_phone, phone.local_addr(), "an ephemeral port");
        let contact = Some(phone.local_addr());
        server
            .send_or(Transport::Tcp, from_phone, contact, options(2))
            .await
            .unwrap();
        let got = next(&mut phone_rx).await;
        assert_eq!(got.peer, server.local_addr(), "the phone's own connection");
        // Closed only once the server closed its side too: it has seen it.
        assert_eq!(phone.close_streams().await, (1, 0));
        assert!(!lock(&server.writers).contains_key(&(Transport::Tcp, from_phone)));
        server
            .send_or(Transport::Tcp, from_phone, contact, options(3))
            .await
            .unwrap();
        let again = next(&mut phone_rx).await;
        assert_eq!(again.msg.call_id(), "c3");
        assert_ne!(
            again.peer,
            server.local_addr(),
            "a connection the server opened"
        );
        // Without a Contact to go to, nothing reaches the phone.
        assert!(server
            .send(Transport::Tcp, from_phone, options(4))
            .await
            .is_err());
    }

    /// A phone checks the server against its CA and keeps the connection;
    /// a server that opens a connection to the phone's own port (as
    /// Kamailio does to a Contact) gets TLS there too, beside plain TCP,
    /// and every session's secrets are logged.
    #[tokio::test]
    async fn tls_both_ways_with_plain_tcp_beside_it() {
        let pki = TestPki::generate("sca.test").unwrap();
        let phone_tls = TlsSettings::new(
            pki.trust(),
            "sca.test",
            pki.phone_identity(),
            TlsUri::default(),
        )
        .unwrap();
        let server_tls = TlsSettings::new(
            Trust::Insecure,
            "sca.test",
            pki.server_identity(),
            TlsUri::default(),
        )
        .unwrap();
        let (phone, mut phone_rx, phone_rec) = endpoint("60970", Some(phone_tls)).await;
        let (server, mut server_rx, _) = endpoint("server", Some(server_tls)).await;

        phone
            .send(Transport::Tls, server.local_addr(), options(1))
            .await
            .unwrap();
        let got = next(&mut server_rx).await;
        assert_eq!(got.transport, Transport::Tls);
        // The answer goes back over the phone's connection.
        server
            .send(Transport::Tls, got.peer, options(2))
            .await
            .unwrap();
        assert_eq!(next(&mut phone_rx).await.msg.call_id(), "c2");
        // A new connection to the phone's listening port.
        server
            .send(Transport::Tls, phone.local_addr(), options(3))
            .await
            .unwrap();
        let inbound = next(&mut phone_rx).await;
        assert_eq!(
            (inbound.msg.call_id(), inbound.transport),
            ("c3", Transport::Tls)
        );
        // Plain TCP still works on a port that speaks TLS.
        server
            .send(Transport::Tcp, phone.local_addr(), options(4))
            .await
            .unwrap();
        let plain = next(&mut phone_rx).await;
        assert_eq!(
            (plain.msg.call_id(), plain.transport),
            ("c4", Transport::Tcp)
        );
        let records = phone_rec.snapshot();
        let tls: Vec<_> = records
            .iter()
            .filter(|r| r.transport == Transport::Tls)
            .collect();
        assert_eq!(tls.len(), 3, "{records:?}");
        assert!(tls
            .iter()
            .all(|r| r.problem.is_none() && r.raw.starts_with(b"OPTIONS")));
        // Two sessions the phone took part in, five TLS 1.3 secrets each.
        let keys = phone_rec.key_log().lines();
        assert_eq!(keys.len(), 10, "{keys:?}");
        assert_eq!(
            keys.iter()
                .filter(|l| l.starts_with("CLIENT_HANDSHAKE_TRAFFIC_SECRET "))
                .count(),
            2
        );
    }

    /// A server the phone cannot verify is a clear error naming it and
    /// rustls' reason, at once, and no connection is kept.
    #[tokio::test]
    async fn a_server_the_phone_cannot_verify_is_a_clear_error() {
        let (pki, other) = (
            TestPki::generate("sca.test").unwrap(),
            TestPki::generate("sca.test").unwrap(),
        );
        let server_tls = TlsSettings::new(
            Trust::Insecure,
            "sca.test",
            pki.server_identity(),
            TlsUri::default(),
        )
        .unwrap();
        let (server, _server_rx, _) = endpoint("server", Some(server_tls)).await;
        for (trust, name, says) in [
            (other.trust(), "sca.test", "UnknownIssuer"),
            (
                pki.trust(),
                "elsewhere.test",
                "not valid for name \"elsewhere.test\"",
            ),
        ] {
            let tls =
                TlsSettings::new(trust, name, pki.phone_identity(), TlsUri::default()).unwrap();
            let (phone, _rx, rec) = endpoint("60970", Some(tls)).await;
            let started = std::time::Instant::now();
            let e = phone
                .send(Transport::Tls, server.local_addr(), options(1))
                .await
                .unwrap_err()
                .to_string();
            assert!(started.elapsed() < CONNECT_DEADLINE, "{e}");
            assert!(
                e.starts_with(&format!(
                    "TLS handshake with {} failed: ",
                    server.local_addr()
                )),
                "{e}"
            );
            assert!(e.contains(says), "{e}");
            // What it meant to send is still recorded, not as a problem.
            assert_eq!(rec.len(), 1);
            assert!(rec.snapshot()[0].problem.is_none());
        }
        // An endpoint without TLS settings says so.
        let (plain, _rx, _) = endpoint("60970", None).await;
        let e = plain
            .send(Transport::Tls, server.local_addr(), options(1))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no TLS settings"), "{e}");
    }
}
