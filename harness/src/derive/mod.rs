//! Derivers: the events of the one model that SIP shows, read from what
//! each user agent sent and received. The contract: pure. SIP records in
//! ([`crate::sip::record::Record`], in recording order), observations out
//! ([`crate::observation::Observation`], ordered within their SIP dialog);
//! what SIP cannot show is declared as a
//! [`crate::observation::Observability`]. No sockets, no runtime, no clock: the same records always derive
//! the same events, and bytes that cannot be read derive nothing, never a
//! panic. A run feeds them the phones' records as they are made, or those
//! of the server's HEP mirror ([`crate::observe::hep`]); a capture check
//! the records it read. Nothing here imports an event source.
//!
//! - [`wire`]: the SCA wire layer each shared-line phone was told;
//! - [`sip_tlib`]: the T-Library events each party's DN would report.

pub mod sip_tlib;
pub mod wire;

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
pub(crate) fn message_of(rec: &crate::sip::record::Record) -> Option<&crate::sip::Message> {
    if rec.problem.is_some() {
        return None;
    }
    rec.message().ok()
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
            record: None,
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
        parsed: Default::default(),
    }
}
