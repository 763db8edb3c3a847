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

use super::{Message, Transport};

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
}

impl Record {
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
