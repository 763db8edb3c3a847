//! The embedded server's edge: its SIP endpoint and its event feed (JSON
//! lines over TCP, see docs/event-feed.md). One instance per case.
//!
//! Its SIP port speaks UDP, TCP and TLS: each start makes a throwaway PKI
//! ([`TestPki`]) whose server certificate it presents, and whose CA the
//! phones of the case trust ([`Embedded::pki`]). Its own connections to
//! phones accept any certificate (theirs are throwaway too).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::server::Server;
use super::Fault;
use crate::observe::feed;
use crate::pcap::Packet;
use crate::sip::record::Direction;
use crate::sip::tls::{TestPki, TlsSettings, TlsUri, Trust};
use crate::sip::transport::{sleep_until, Endpoint, Recorder};
use crate::topology::Topology;

/// A running embedded server. Dropping it stops it.
pub struct Embedded {
    pub sip: SocketAddr,
    pub feed: SocketAddr,
    /// The PKI of this start: its CA signed the certificate the server
    /// presents over TLS (for its domain and 127.0.0.1).
    pub pki: Arc<TestPki>,
    recorder: Recorder,
    tasks: Vec<AbortHandle>,
    /// Becomes true when the server stops answering (a fault's crash).
    stopped: watch::Receiver<bool>,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Embedded {
    pub async fn start(
        ip: IpAddr,
        domain: &str,
        topology: Topology,
        fault: Option<Fault>,
        challenger: Option<crate::sip::auth::Challenger>,
    ) -> io::Result<Embedded> {
        let at = SocketAddr::new(ip, 0);
        Self::start_at(at, domain, topology, fault, challenger).await
    }

    /// [`Embedded::start`] with its SIP port at `at` (port 0: a free one);
    /// its event feed is on a free port of the same address.
    pub async fn start_at(
        at: SocketAddr,
        domain: &str,
        topology: Topology,
        fault: Option<Fault>,
        challenger: Option<crate::sip::auth::Challenger>,
    ) -> io::Result<Embedded> {
        let ip = at.ip();
        // The server's own view of the traffic is not part of a case's
        // capture (the user agents record every message already); it is
        // only mirrored, on request.
        let recorder = Recorder::default();
        let pki = Arc::new(TestPki::generate(domain).map_err(io::Error::other)?);
        let tls = TlsSettings::new(
            Trust::Insecure,
            domain,
            pki.server_identity(),
            TlsUri::default(),
        )
        .map_err(io::Error::other)?;
        let (endpoint, mut inbound) =
            Endpoint::bind_at("server", at, recorder.clone(), Some(Arc::new(tls))).await?;
        let sip = endpoint.local_addr();
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let feed_addr = listener.local_addr()?;
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let (count_tx, count_rx) = watch::channel(0usize);

        let mut core = Server::new(domain, sip, topology, fault);
        if let Some(c) = challenger {
            core = core.challenging(c);
        }
        let server_log = log.clone();
        let (stopped_tx, stopped) = watch::channel(false);
        let server = tokio::spawn(async move {
            let mut seq = 0u64;
            loop {
                // The core says when it next needs the clock (a seizure
                // expiring); otherwise the server only waits for messages.
                let wake = core.poll_timeout();
                tokio::select! {
                    msg = inbound.recv() => match msg {
                        Some(msg) => core.handle(&msg, std::time::Instant::now()),
                        None => break,
                    },
                    _ = sleep_until(wake) => core.handle_timeout(std::time::Instant::now()),
                }
                while let Some(out) = core.poll_transmit() {
                    // A phone that went away is the phone's problem; the
                    // server carries on, as a real one would.
                    let _ = endpoint
                        .send_or(out.transport, out.to, out.reconnect, out.bytes)
                        .await;
                }
                let mut lines = server_log.lock().unwrap_or_else(|p| p.into_inner());
                while let Some((channel, event)) = core.poll_event() {
                    seq += 1;
                    lines.push(feed::encode(seq, &channel, &event));
                }
                count_tx.send_replace(lines.len());
                drop(lines);
                // Crashed (a fault): the socket closes with the task.
                if core.stopped() {
                    stopped_tx.send_replace(true);
                    break;
                }
            }
        });

        let feed_task = tokio::spawn(async move {
            let mut clients = tokio::task::JoinSet::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                let (log, mut count) = (log.clone(), count_rx.clone());
                // Each client gets the whole feed from the start, the line
                // that ends that backlog, then every new line: a late
                // subscriber loses nothing, and one that only wants what
                // comes after it connected can tell.
                clients.spawn(async move {
                    let mut sent = 0;
                    let mut live = false;
                    loop {
                        let batch: Vec<String> =
                            log.lock().unwrap_or_else(|p| p.into_inner())[sent..].to_vec();
                        for line in &batch {
                            if stream
                                .write_all(format!("{line}\n").as_bytes())
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        sent += batch.len();
                        if !live {
                            live = true;
                            let marker = format!("{}\n", feed::live_line(sent));
                            if stream.write_all(marker.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        if count.wait_for(|n| *n > sent).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(Embedded {
            sip,
            feed: feed_addr,
            pki,
            recorder,
            tasks: vec![server.abort_handle(), feed_task.abort_handle()],
            stopped,
        })
    }
}

impl Embedded {
    /// Returns once the server has stopped answering (never, unless a
    /// fault makes it).
    pub async fn stopped(&self) {
        let mut rx = self.stopped.clone();
        if rx.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await
        }
    }

    /// Calls `tap` with every SIP message the server receives and sends
    /// (`scacheck serve` logs them); replaces a HEP mirror.
    pub fn tap(&self, tap: impl FnMut(&crate::sip::record::Record) + Send + 'static) {
        self.recorder.set_tap(tap);
    }

    /// Mirrors every SIP message the server receives and sends to `to` as
    /// HEPv3, as a real server's capture agent does (Kamailio's siptrace),
    /// so that the HEP source can be tested without one.
    pub fn mirror_over_hep(&self, to: SocketAddr) -> io::Result<()> {
        let socket = std::net::UdpSocket::bind(SocketAddr::new(to.ip(), 0))?;
        self.recorder.set_tap(move |rec| {
            let (src, dst) = match rec.direction {
                Direction::Sent => (rec.local, rec.peer),
                Direction::Received => (rec.peer, rec.local),
            };
            let packet = Packet {
                time: rec.at,
                src,
                dst,
                transport: rec.transport,
                raw: rec.raw.clone(),
            };
            // Like a real mirror: best effort, never in the server's way.
            if let Ok(datagram) = crate::hep::encode(&packet, 0) {
                let _ = socket.send_to(&datagram, to);
            }
        });
        Ok(())
    }
}
