//! `scacheck serve`: the embedded server on its own, for phones that are
//! not scacheck's (the field phones of fixtures/captures/field/), until it
//! is told to stop (SIGTERM or SIGINT: exit 0).
//!
//! It is the server `scacheck run` starts per case, with the same seeded
//! defects; its one SIP port speaks UDP, TCP and TLS at once. With
//! `lines` it serves a pool of lines as Kamailio's profile does
//! ([`Topology::numbered`]: line N is 60970-N with its phones 60970-N and
//! 60970_2-N, and 60972-N), so that many flows run one after another on a
//! line each and a capture splits into them; without, the reference's own
//! parties (60970, 60970_2, 60972).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{Embedded, Fault};
use crate::sip::record::{Direction, Record};
use crate::sip::Transport;
use crate::topology::Topology;

/// What `scacheck serve` was asked for.
#[derive(Debug, Clone)]
pub struct Serve {
    /// Where its SIP port goes (port 0: a free one).
    pub address: SocketAddr,
    /// The transport the phones are to use: the port speaks all three,
    /// this only says which one the address is announced for.
    pub transport: Transport,
    pub domain: String,
    pub fault: Option<Fault>,
    /// A pool of this many numbered lines, or the reference's parties.
    pub lines: Option<usize>,
    /// Written (whole, once bound) with the SIP address, `IP:PORT`.
    pub address_file: Option<PathBuf>,
    /// Written with this process's PID once a SIGTERM to it stops it
    /// cleanly (before the address file).
    pub pid_file: Option<PathBuf>,
    /// Written with the PEM of the CA that signed the certificate it
    /// presents over TLS (a throwaway one per start).
    pub ca_file: Option<PathBuf>,
}

impl Serve {
    /// The parties it knows.
    pub fn topology(&self) -> Topology {
        self.lines
            .map_or_else(Topology::reference, Topology::numbered)
    }

    /// Runs the server until SIGTERM or SIGINT; `say` gets what it logs
    /// (a line each: the start, every SIP message, the stop).
    pub async fn run(self, say: impl Fn(&str) + Send + Sync + 'static) -> io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        // Before anything says the server is up: a signal right after the
        // PID file is written is ours to handle.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let topology = self.topology();
        let server = Embedded::start_at(
            self.address,
            &self.domain,
            topology.clone(),
            self.fault,
            None,
        )
        .await?;
        let say = std::sync::Arc::new(say);
        let log = say.clone();
        server.tap(move |r| log(&message_line(r)));
        if let Some(path) = &self.ca_file {
            server.pki.write_ca(path)?;
        }
        let parties = match self.lines {
            Some(n) => {
                format!("lines 60970-1..60970-{n} (phones 60970-N, 60970_2-N; caller 60972-N)")
            }
            None => "line 60970 (phones 60970, 60970_2; caller 60972)".to_string(),
        };
        let fault = self
            .fault
            .map_or_else(|| "no fault".to_string(), |f| format!("fault {f}"));
        say(&format!(
            "serving {} for {} (the port speaks udp, tcp and tls), domain {}, {parties}, {fault}, event feed on {}",
            server.sip, self.transport, self.domain, server.feed
        ));
        if let Some(path) = &self.pid_file {
            write_whole(path, &format!("{}\n", std::process::id()))?;
        }
        if let Some(path) = &self.address_file {
            write_whole(path, &format!("{}\n", server.sip))?;
        }
        let why = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            () = server.stopped() => {
                // As a crash: gone at once, its PID file left behind.
                say("stopped answering (fault stops-on-reboot); exiting");
                std::process::exit(3);
            }
        };
        say(&format!("stopping on {why}"));
        drop(server);
        Ok(())
    }
}

/// One logged SIP message: direction, transport, peer, start line.
fn message_line(r: &Record) -> String {
    let arrow = match r.direction {
        Direction::Received => "<-",
        Direction::Sent => "->",
    };
    let start = r.raw.split(|b| *b == b'\n').next().unwrap_or_default();
    let start = String::from_utf8_lossy(start);
    format!("{arrow} {} {} {}", r.transport, r.peer, start.trim_end())
}

/// Writes `text` to `path` so that a reader sees all of it or nothing.
fn write_whole(path: &Path, text: &str) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_or_the_reference_parties() {
        let s = Serve {
            address: "127.0.0.1:0".parse().unwrap(),
            transport: Transport::Udp,
            domain: "sca.test".into(),
            fault: None,
            lines: None,
            address_file: None,
            pid_file: None,
            ca_file: None,
        };
        assert_eq!(s.topology(), Topology::reference());
        let pool = Serve {
            lines: Some(16),
            ..s
        };
        assert!(pool.topology().knows("60970_2-16"));
    }
}
