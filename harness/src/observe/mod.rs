//! Capture sources. Each turns what it can see into events of the one
//! model, in arrival order, and declares what it can observe so that the
//! diff compares only that (as [`crate::observation`]'s types).

pub mod feed;
pub mod hep;
pub mod sip_tlib;
pub mod tlib_log;
pub mod wire;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::model::{Channel, Event};
use crate::observation::Observation;

/// Where a SIP-derived event came from: the message's start line and the
/// header the event was read from.
pub(crate) fn provenance(msg: &crate::sip::Message, header: &str) -> String {
    let values: Vec<&str> = msg.headers(header).collect();
    if values.is_empty() {
        msg.start_line().to_string()
    } else {
        format!("{} | {header}: {}", msg.start_line(), values.join(", "))
    }
}

/// An event a SIP deriver found, with the provenance text it is reported with.
pub(crate) type Found = (Event, String);

/// The message of a record, if a SIP deriver may use it: the transport
/// took it for SIP and it parses.
pub(crate) fn message_of(rec: &crate::sip::record::Record) -> Option<crate::sip::Message> {
    if rec.problem.is_some() {
        return None;
    }
    crate::sip::Message::parse(rec.raw.clone()).ok()
}

/// What a SIP deriver found in one message, as observations on one
/// channel, ordered `within` that message's sequence (its SIP dialog).
pub(crate) fn on_channel(channel: &Channel, within: &str, found: Vec<Found>) -> Vec<Observation> {
    found
        .into_iter()
        .map(|(event, raw)| Observation {
            channel: channel.clone(),
            event,
            raw,
            within: Some(within.to_string()),
        })
        .collect()
}

/// Bytes no SIP deriver may take for a message, or panic on: empty, not
/// SIP, not UTF-8, a request without its headers, a response with an
/// impossible status and broken headers. Each deriver's tests add a message
/// of its own cut in half.
#[cfg(test)]
pub(crate) const GARBAGE: [&[u8]; 6] = [
    b"",
    b"garbage",
    b"\xff\xfe\r\n\r\n",
    b"BYE sip:a@b SIP/2.0\r\nCall-ID: c1\r\n\r\n",
    b"NOTIFY sip:a@b SIP/2.0\r\nEvent: call-info\r\n\r\n",
    b"SIP/2.0 999999 X\r\nVia: x\r\nFrom: <\r\nTo: >\r\nCall-ID:\r\nCSeq: 1\r\n\r\n",
];

/// A phone's record of a message, for the SIP derivers' tests.
#[cfg(test)]
pub(crate) fn test_record(
    agent: &str,
    direction: crate::sip::record::Direction,
    raw: Vec<u8>,
) -> crate::sip::record::Record {
    crate::sip::record::Record {
        seq: 0,
        at: std::time::SystemTime::UNIX_EPOCH,
        agent: agent.to_string(),
        direction,
        transport: crate::sip::Transport::Udp,
        local: "127.0.0.1:6000".parse().unwrap(),
        peer: "127.0.0.1:5060".parse().unwrap(),
        raw,
        problem: None,
    }
}

#[derive(Debug, Default)]
struct Inner {
    events: Vec<Observation>,
    problems: Vec<String>,
}

/// The events a source has delivered so far, shared between the source's
/// reader task and the run that waits on them.
#[derive(Debug, Clone)]
pub struct EventLog {
    inner: Arc<Mutex<Inner>>,
    changed: watch::Sender<usize>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            inner: Arc::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl EventLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, obs: Observation) {
        let n = {
            let mut inner = self.lock();
            inner.events.push(obs);
            inner.events.len()
        };
        self.changed.send_replace(n);
    }

    /// Something the source delivered that is not a usable event.
    pub fn problem(&self, what: String) {
        self.lock().problems.push(what);
        self.changed.send_modify(|_| {});
    }

    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events from position `from` on.
    pub fn since(&self, from: usize) -> Vec<Observation> {
        self.lock()
            .events
            .get(from..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    pub fn problems(&self) -> Vec<String> {
        self.lock().problems.clone()
    }

    /// Waits until `done` holds for the events since `from`, or `deadline`
    /// passes. Returns whether it held.
    pub async fn wait_for(
        &self,
        from: usize,
        deadline: Duration,
        done: impl Fn(&[Observation]) -> bool,
    ) -> bool {
        let mut rx = self.changed.subscribe();
        let check = |_: &usize| done(self.lock().events.get(from..).unwrap_or_default());
        tokio::time::timeout(deadline, rx.wait_for(check))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until no event has arrived for `quiet`, at most `deadline`.
    pub async fn settle(&self, quiet: Duration, deadline: Duration) {
        let mut rx = self.changed.subscribe();
        let _ = tokio::time::timeout(deadline, async {
            while tokio::time::timeout(quiet, rx.changed())
                .await
                .is_ok_and(|r| r.is_ok())
            {}
        })
        .await;
    }
}
