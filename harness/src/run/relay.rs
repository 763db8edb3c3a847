//! The socket edge of a relayed phone's edge proxy ([`crate::sip::proxy`]):
//! one UDP socket on loopback, one task, for as long as the handle lives.
//! Dropping it stops the task and closes the socket at once, as an edge
//! proxy that went away: what the server sends it afterwards is lost,
//! which is what a case that moves a phone to another relay looks for.
//!
//! The relay records nothing: the phones record what they send and
//! receive, and a second copy of each message (with one Via more) would
//! be a second message in the capture. What it drops it counts, with the
//! last reason, for the case's notes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::sip::proxy::Relay;

/// What a relay has dropped so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Drops {
    pub count: usize,
    pub last: Option<String>,
}

/// A running relay; stopped when dropped.
pub(super) struct RelayTask {
    pub addr: SocketAddr,
    drops: Arc<Mutex<Drops>>,
    task: JoinHandle<()>,
}

/// The largest datagram read: UDP's own limit, so nothing is cut.
const DATAGRAM: usize = 65_535;

/// Reads that fail in a row before the relay gives up on its socket.
const MAX_FAILING_READS: u32 = 1000;

impl RelayTask {
    /// A relay on a new loopback port, forwarding to `server`.
    pub async fn start(server: SocketAddr) -> std::io::Result<RelayTask> {
        let socket = UdpSocket::bind((server.ip(), 0)).await?;
        let relay = Relay {
            me: socket.local_addr()?,
            server,
        };
        let drops = Arc::new(Mutex::new(Drops::default()));
        let told = drops.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; DATAGRAM];
            let mut failing = 0;
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    // An ICMP unreachable for an earlier send, on some
                    // systems: the socket is still good, unless it fails
                    // on and on (then the relay is gone, said once).
                    failing += 1;
                    if failing == MAX_FAILING_READS {
                        let mut d = told.lock().unwrap_or_else(|p| p.into_inner());
                        d.last = Some(format!(
                            "its socket failed {failing} times in a row: stopped"
                        ));
                        return;
                    }
                    continue;
                };
                failing = 0;
                match relay.handle(from, &buf[..n]) {
                    Ok(out) => {
                        // A peer gone is the peer's loss, as on the wire.
                        let _ = socket.send_to(&out.bytes, out.to).await;
                    }
                    Err(why) => {
                        let mut d = told.lock().unwrap_or_else(|p| p.into_inner());
                        d.count += 1;
                        d.last = Some(why.to_string());
                    }
                }
            }
        });
        Ok(RelayTask {
            addr: relay.me,
            drops,
            task,
        })
    }

    pub fn drops(&self) -> Drops {
        self.drops.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for RelayTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}
