//! The socket edge: one UDP socket and one TCP listener on the same port,
//! outgoing TCP connections reused per peer, and a [`Recorder`] that keeps
//! the raw bytes of every message sent or received (as the plain
//! [`Record`]s of [`super::record`]). Nothing here knows SIP beyond framing
//! and parsing.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::framing::StreamFramer;
use super::record::{Direction, Inbound, Record};
use super::{Message, Transport};

/// How long a TCP connect may take on loopback before we call it refused.
const CONNECT_DEADLINE: Duration = Duration::from_secs(2);

/// Called with every record as it is made (a sans-IO deriver, say).
pub type Tap = Box<dyn FnMut(&Record) + Send>;

#[derive(Default)]
struct Log {
    records: Vec<Record>,
    tap: Option<Tap>,
}

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
        };
        if let Some(tap) = log.tap.as_mut() {
            tap(&record);
        }
        log.records.push(record);
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
}

/// A TCP connection's writer and its local address (an ephemeral port for
/// the connections we open: what a capture must show).
type Connection = (mpsc::UnboundedSender<Vec<u8>>, SocketAddr);
type Writers = Arc<Mutex<HashMap<SocketAddr, Connection>>>;

/// A bound SIP endpoint. Dropping it stops all its tasks.
pub struct Endpoint {
    name: String,
    local: SocketAddr,
    udp: Arc<UdpSocket>,
    writers: Writers,
    inbound: mpsc::UnboundedSender<Inbound>,
    recorder: Recorder,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
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
        let mut last_err = None;
        for _ in 0..32 {
            let udp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
            let local = udp.local_addr()?;
            match TcpListener::bind(local).await {
                Ok(listener) => return Ok(Self::start(name, local, udp, listener, recorder)),
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
        };
        let (udp, rec, name, inbound) = (
            ep.udp.clone(),
            ep.recorder.clone(),
            ep.name.clone(),
            ep.inbound.clone(),
        );
        ep.spawn(async move {
            let mut buf = vec![0u8; 65_535];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
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
        let conn = ep.connector();
        ep.spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                // A connection that has no local address any more is gone.
                let _ = conn.adopt(stream, peer);
            }
        });
        (ep, rx)
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let h = tokio::spawn(fut);
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(h.abort_handle());
    }

    fn connector(&self) -> Connector {
        Connector {
            name: self.name.clone(),
            writers: self.writers.clone(),
            inbound: self.inbound.clone(),
            recorder: self.recorder.clone(),
            tasks: self.tasks.clone(),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends one message; records it first, so a failed send is still seen.
    pub async fn send(
        &self,
        transport: Transport,
        peer: SocketAddr,
        bytes: Vec<u8>,
    ) -> Result<(), SendError> {
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
            Transport::Tcp => {
                let existing = self
                    .writers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&peer)
                    .cloned();
                let connection = match existing {
                    Some(c) if !c.0.is_closed() => Ok(c),
                    _ => match tokio::time::timeout(CONNECT_DEADLINE, TcpStream::connect(peer))
                        .await
                    {
                        Err(_) => Err(SendError::ConnectTimeout(peer)),
                        Ok(Err(e)) => Err(io_err(e)),
                        Ok(Ok(stream)) => self.connector().adopt(stream, peer).map_err(io_err),
                    },
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
                    .send(bytes)
                    .map_err(|_| io_err(io::ErrorKind::BrokenPipe.into()))
            }
        }
    }
}

/// What a TCP connection task needs from its endpoint.
struct Connector {
    name: String,
    writers: Writers,
    inbound: mpsc::UnboundedSender<Inbound>,
    recorder: Recorder,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Connector {
    /// Starts reading and writing a connection; returns its writer and
    /// local address.
    fn adopt(&self, stream: TcpStream, peer: SocketAddr) -> io::Result<Connection> {
        let local = stream.local_addr()?;
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        self.writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, (tx.clone(), local));
        let writer = tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let (rec, name, inbound, writers) = (
            self.recorder.clone(),
            self.name.clone(),
            self.inbound.clone(),
            self.writers.clone(),
        );
        let reader = tokio::spawn(async move {
            let mut framer = StreamFramer::default();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => framer.push(&buf[..n]),
                }
                while let Some(frame) = framer.next_message() {
                    match frame {
                        Ok(raw) => deliver(&rec, &name, Transport::Tcp, local, peer, raw, &inbound),
                        Err(e) => {
                            // A broken stream cannot be re-synchronised: keep
                            // what we had for the report and drop the link.
                            let mut held = framer.take_pending();
                            held.truncate(super::framing::MAX_HEADER_BYTES);
                            rec.push(
                                &name,
                                Direction::Received,
                                Transport::Tcp,
                                local,
                                peer,
                                held,
                                Some(format!("TCP stream from {peer} dropped: {e}")),
                            );
                            writers
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&peer);
                            return;
                        }
                    }
                }
            }
            writers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&peer);
        });
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.push(writer.abort_handle());
        tasks.push(reader.abort_handle());
        Ok((tx, local))
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
