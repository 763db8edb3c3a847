//! What crossed the wire, as plain data: a [`Record`] of every message a
//! user agent (or the server) sent or received, its raw bytes kept beside
//! what was made of them, and the [`Inbound`] message a sans-IO core is
//! handed.
//!
//! Pure: no sockets, no runtime. The sans-IO cores, the derivers and the
//! capture readers and writers name these types without the socket edge;
//! [`super::transport`] makes them from the wire, a capture reader from a
//! file. A record is never rewritten: bytes that are not a usable SIP
//! message are kept as they came, with the reason in
//! [`Record::problem`].

use std::net::SocketAddr;
use std::time::SystemTime;

use super::{Message, ParseError, Transport};

/// Which way a message went, seen from the agent that recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Sent,
    Received,
}

/// One message as it crossed the wire.
#[derive(Debug, Clone)]
pub struct Record {
    /// Order of recording within the case.
    pub seq: u64,
    pub at: SystemTime,
    /// The user agent (or server) that sent or received it.
    pub agent: String,
    pub direction: Direction,
    pub transport: Transport,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    pub raw: Vec<u8>,
    /// Why the bytes are not a usable SIP message, if they are not.
    pub problem: Option<String>,
    /// `raw` parsed, once, when first asked for ([`Record::message`]) or
    /// by whoever made the record; shared by its clones (a capture's
    /// message is a record of its sender and one of its receiver). Made
    /// with the record: a record whose `raw` changed needs a new one.
    pub parsed: Parsed,
}

/// A record's bytes parsed, at most once ([`Record::message`]).
#[derive(Clone, Default)]
pub struct Parsed(std::sync::Arc<std::sync::OnceLock<Result<Message, ParseError>>>);

impl Parsed {
    /// `raw` parsed ([`Message::parse`]), the first time only: `raw` must
    /// be the bytes this was made for, always the same.
    pub fn message(&self, raw: &[u8]) -> Result<&Message, &ParseError> {
        let parsed = self.0.get_or_init(|| Message::parse(raw.to_vec()));
        if let Ok(m) = parsed {
            debug_assert!(m.raw() == raw, "parsed bytes changed");
        }
        parsed.as_ref()
    }
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0.get() {
            None => "Parsed(not yet)",
            Some(Ok(_)) => "Parsed(ok)",
            Some(Err(_)) => "Parsed(err)",
        })
    }
}

impl Record {
    /// Its bytes as a SIP message ([`Message::parse`] of `raw`, whatever
    /// [`Record::problem`] says), parsed the first time only: the derivers,
    /// the phones' reading and a capture check's detection all ask.
    pub fn message(&self) -> Result<&Message, &ParseError> {
        self.parsed.message(&self.raw)
    }

    /// Its bytes as a SIP message, for a reader that will not ask again
    /// (a report drawing every record of a case): the parse already made,
    /// else a fresh one that is not kept, so that reading a report's
    /// records does not double what they hold.
    pub fn message_once(&self) -> Option<std::borrow::Cow<'_, Message>> {
        match self.parsed.0.get() {
            Some(parsed) => parsed.as_ref().ok().map(std::borrow::Cow::Borrowed),
            None => Message::parse(self.raw.clone())
                .ok()
                .map(std::borrow::Cow::Owned),
        }
    }

    /// The first line, for ladders and summaries.
    pub fn first_line(&self) -> String {
        let end = self
            .raw
            .iter()
            .position(|b| *b == b'\r' || *b == b'\n')
            .unwrap_or(self.raw.len());
        String::from_utf8_lossy(&self.raw[..end.min(200)]).into_owned()
    }
}

/// A parsed message that arrived, with where it came from.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub msg: Message,
    pub transport: Transport,
    pub peer: SocketAddr,
}
