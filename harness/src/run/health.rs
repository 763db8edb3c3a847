//! Whether the target is still there, asked after every case's stages: a
//! server that stopped answering, or whose process exited, is the finding
//! of the case it stopped in ("the server stopped answering after 60970's
//! call-info SUBSCRIBE at stage rebooted: ..."), not a timeout, and the
//! cases after it are not run. How to tell is the profile's (`[liveness]`:
//! a PID file, an OPTIONS probe); the embedded server is always probed.
//! Nothing here waits for long: a PID file is read at once, a probe is
//! given [`PROBE_DEADLINE`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sip::build::Builder;
use crate::sip::record::{Direction, Record};
use crate::sip::tls::TlsSettings;
use crate::sip::transport::{Endpoint, Recorder};
use crate::sip::Transport;

/// How long an OPTIONS probe waits for any answer (over UDP it is sent
/// again at 0.5 s and 1.5 s): far longer than a live server takes.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// What asks the server an OPTIONS: where, how, in which domain.
#[derive(Debug, Clone)]
pub(super) struct Probe {
    pub to: SocketAddr,
    pub transport: Transport,
    pub tls: Option<Arc<TlsSettings>>,
    pub domain: String,
}

/// How to tell, for one run: the PID file (expanded), the probe, or both.
#[derive(Debug, Clone, Default)]
pub(super) struct Watch {
    pub pid_file: Option<std::path::PathBuf>,
    pub probe: bool,
}

/// Has the server stopped? Why, in words, if so.
pub(super) async fn stopped(watch: &Watch, probe: &Probe) -> Option<String> {
    if let Some(why) = watch.pid_file.as_deref().and_then(process_gone) {
        return Some(why);
    }
    if watch.probe && !options_answered(probe).await {
        return Some(format!(
            "it did not answer an OPTIONS within {PROBE_DEADLINE:?}"
        ));
    }
    None
}

/// Why the process a PID file names is not running, if it is not. A file
/// that cannot be read or names no PID says so: the profile names it, and
/// the run checked it when it began ([`running`]).
pub(super) fn process_gone(path: &Path) -> Option<String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            return Some(format!(
                "its PID file {} cannot be read: {e}",
                path.display()
            ))
        }
    };
    let Ok(pid) = text.trim().parse::<u32>() else {
        return Some(format!(
            "its PID file {} holds no PID ({:?})",
            path.display(),
            text.trim()
        ));
    };
    // Without /proc nothing can be told from a PID here.
    let proc = Path::new("/proc");
    if !proc.is_dir() {
        return None;
    }
    // A process that exited but was not reaped yet is a zombie: gone.
    let state = std::fs::read_to_string(proc.join(pid.to_string()).join("stat"))
        .ok()
        .and_then(|stat| {
            let after = stat.rsplit_once(')')?.1;
            after.trim_start().chars().next()
        });
    match state {
        Some('Z' | 'X') | None => Some(format!(
            "its process (PID {pid}, from {}) has exited",
            path.display()
        )),
        Some(_) => None,
    }
}

/// Is the PID file's server running when a run begins? The error says
/// why not (a wrong path is found here, not taken for a crash later).
pub(super) fn running(path: &Path) -> Result<(), String> {
    match process_gone(path) {
        None => Ok(()),
        Some(why) => Err(format!("[liveness] pid_file: {why} before the run began")),
    }
}

/// Sends an OPTIONS and waits for any answer to it.
async fn options_answered(p: &Probe) -> bool {
    let ip = match p.to.ip() {
        ip if ip.is_loopback() => ip,
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let Ok((endpoint, mut inbound)) =
        Endpoint::bind_with("probe", ip, Recorder::default(), p.tls.clone()).await
    else {
        // Nothing can be asked: not the server's doing.
        return true;
    };
    let local = endpoint.local_addr();
    let nonce = format!(
        "{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let call_id = format!("probe-{nonce}@scacheck");
    let bytes = Builder::request("OPTIONS", &format!("sip:{}", p.domain))
        .header(
            "Via",
            &format!(
                "SIP/2.0/{} {local};branch=z9hG4bK-probe-{nonce};rport",
                p.transport.via_token()
            ),
        )
        .header(
            "From",
            &format!("<sip:probe@{}>;tag=probe-{nonce}", p.domain),
        )
        .header("To", &format!("<sip:{}>", p.domain))
        .header("Call-ID", &call_id)
        .header("CSeq", "1 OPTIONS")
        .build();
    let end = Instant::now() + PROBE_DEADLINE;
    let mut gap = Duration::from_millis(500);
    loop {
        if endpoint
            .send(p.transport, p.to, bytes.clone())
            .await
            .is_err()
        {
            // A connection refused: nobody listens.
            return false;
        }
        let wait = match p.transport {
            Transport::Udp => gap.min(end.saturating_duration_since(Instant::now())),
            _ => end.saturating_duration_since(Instant::now()),
        };
        let answered = tokio::time::timeout(wait, async {
            while let Some(msg) = inbound.recv().await {
                if !msg.msg.is_request() && msg.msg.call_id() == call_id {
                    return true;
                }
            }
            false
        })
        .await;
        match answered {
            Ok(answered) => return answered,
            Err(_) if Instant::now() >= end => return false,
            Err(_) => gap *= 2,
        }
    }
}

/// What the phones were last doing when the server stopped: the first of
/// their requests in the case's stages that got no answer ("60970's
/// SUBSCRIBE (call-info) at stage rebooted"), else the last message the
/// server sent them. `marks`: where each stage began.
pub(super) fn last_act(records: &[Record], marks: &[super::Mark]) -> String {
    let stage_of = |i: usize| {
        marks
            .iter()
            .rev()
            .find(|m| m.record <= i)
            .map_or("setup", |m| m.stage.as_str())
    };
    let key = |r: &Record| {
        let msg = r.message().ok()?;
        let (n, method) = msg.cseq()?;
        Some((
            r.agent.clone(),
            msg.call_id().to_string(),
            n,
            method.to_string(),
        ))
    };
    for (i, rec) in records.iter().enumerate() {
        let Ok(msg) = rec.message() else { continue };
        if rec.direction != Direction::Sent || !msg.is_request() || msg.is("ACK") {
            continue;
        }
        let sent = key(rec);
        let answered = records[i + 1..].iter().any(|r| {
            r.direction == Direction::Received
                && r.message().is_ok_and(|m| !m.is_request())
                && key(r) == sent
        });
        if !answered {
            let method = msg.method().unwrap_or_default();
            let package = msg
                .header("Event")
                .and_then(crate::sip::headers::EventHeader::parse)
                .map(|e| format!(" ({})", e.package))
                .unwrap_or_default();
            return format!("{}'s {method}{package} at stage {}", rec.agent, stage_of(i));
        }
    }
    match records
        .iter()
        .enumerate()
        .rev()
        .find(|(_, r)| r.direction == Direction::Received)
    {
        Some((i, r)) => {
            let start = r
                .message()
                .map(|m| m.start_line().to_string())
                .unwrap_or_default();
            format!(
                "its last message to the phones ({start}, to {}) at stage {}",
                r.agent,
                stage_of(i)
            )
        }
        None => "the case began".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(agent: &str, direction: Direction, raw: &str) -> Record {
        crate::derive::test_record(agent, direction, raw.as_bytes().to_vec())
    }

    fn request(method: &str, call_id: &str, event: &str) -> String {
        format!(
            "{method} sip:60970@sca.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:60970@sca.test>;tag=a\r\nTo: <sip:60970@sca.test>\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n{event}Content-Length: 0\r\n\r\n"
        )
    }

    fn answer(method: &str, call_id: &str) -> String {
        format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\nFrom: <sip:60970@sca.test>;tag=a\r\nTo: <sip:60970@sca.test>;tag=b\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        )
    }

    #[test]
    fn the_first_unanswered_request_is_what_the_server_stopped_after() {
        // The stage's events began at 5, its records at 2: the records
        // count.
        let marks = vec![
            super::super::Mark::default(),
            super::super::Mark {
                stage: "rebooted".into(),
                event: 5,
                record: 2,
            },
        ];
        let records = vec![
            record("60970", Direction::Sent, &request("REGISTER", "r", "")),
            record("60970", Direction::Received, &answer("REGISTER", "r")),
            record(
                "60970",
                Direction::Sent,
                &request("SUBSCRIBE", "s", "Event: call-info\r\n"),
            ),
        ];
        assert_eq!(
            last_act(&records, &marks),
            "60970's SUBSCRIBE (call-info) at stage rebooted"
        );
        let answered = &records[..2];
        assert_eq!(
            last_act(answered, &marks),
            "its last message to the phones (SIP/2.0 200 OK, to 60970) at stage setup"
        );
        assert_eq!(last_act(&[], &marks), "the case began");
    }

    #[test]
    fn a_pid_file_tells_a_running_process_from_a_gone_one() {
        let dir = std::env::temp_dir().join(format!("scacheck-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pid");
        std::fs::write(&file, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(process_gone(&file), None);
        assert!(running(&file).is_ok());
        // A child that exited, not yet reaped (a zombie), then reaped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        std::fs::write(&file, child.id().to_string()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let gone = process_gone(&file).unwrap();
        assert!(gone.contains("has exited"), "{gone}");
        child.wait().unwrap();
        assert!(process_gone(&file).unwrap().contains("has exited"));
        std::fs::write(&file, "nonsense").unwrap();
        assert!(process_gone(&file).unwrap().contains("holds no PID"));
        let missing = dir.join("none");
        assert!(running(&missing).unwrap_err().contains("cannot be read"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
