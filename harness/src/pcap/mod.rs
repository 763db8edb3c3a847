//! Packet captures: every case's SIP traffic as `<case>.pcap`, and the SIP
//! messages inside captures scacheck did not make.
//!
//! Writing ([`write_records`], [`write_packets`]) turns the records of a case
//! into real frames: Ethernet, IPv4 or IPv6, then UDP or TCP with a handshake
//! per connection, consistent sequence numbers and valid checksums, in a
//! classic pcap with nanosecond timestamps that Wireshark opens as it is.
//!
//! Reading ([`Reader`]) goes the other way, one layer per module, each pure
//! and bounded:
//! - `file`: pcap (both byte orders, micro and nano) and pcapng blocks, read
//!   through a buffer no larger than the largest record allowed;
//! - `link`: Ethernet (802.1Q / QinQ), Linux cooked v1 and v2, raw IP, BSD
//!   loopback, down to the IP header;
//! - `frag`: IPv4 and IPv6 fragment reassembly with a bounded pool;
//! - `reassembly`: TCP streams by sequence number, cut into messages by the
//!   same [`StreamFramer`](crate::sip::framing::StreamFramer) the live
//!   transport uses;
//! - `sip`: whether bytes begin a SIP message (by their first line, not by
//!   port).
//!
//! Nothing here panics on any input; what the reader passes over is counted
//! in [`Skipped`], and only a broken file (not a broken packet) is an error.

mod file;
mod frag;
mod link;
mod read;
mod reassembly;
mod sip;
mod write;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::SystemTime;

pub use read::Reader;
pub use write::{packets_from_records, write_packets, write_records, PacketWriter};

use crate::sip::Transport;

/// One SIP message found in (or written to) a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// When it was sent; for a reassembled message, the time of the frame
    /// that completed it.
    pub time: SystemTime,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: Transport,
    /// The message as it crossed the wire (a UDP payload, or one TCP
    /// message framed by Content-Length).
    pub raw: Vec<u8>,
}

impl Packet {
    /// The records the phones at either end would have made of this
    /// message (none, one or two: a phone may call another directly),
    /// numbered from `seq`. `who` says which phone each address is.
    pub fn records_for(
        &self,
        who: &std::collections::BTreeMap<SocketAddr, String>,
        seq: u64,
    ) -> Vec<crate::sip::record::Record> {
        self.records_parsed(who, seq, &Default::default())
    }

    /// [`Packet::records_for`], its bytes parsed into (or already in)
    /// `parsed`, made for this packet: a flow read several ways parses
    /// each message once.
    pub fn records_parsed(
        &self,
        who: &std::collections::BTreeMap<SocketAddr, String>,
        seq: u64,
        parsed: &crate::sip::record::Parsed,
    ) -> Vec<crate::sip::record::Record> {
        use crate::sip::record::{Direction, Record};
        let ends: Vec<_> = [
            (self.src, Direction::Sent, self.dst),
            (self.dst, Direction::Received, self.src),
        ]
        .into_iter()
        .filter_map(|(local, direction, peer)| {
            who.get(&local).map(|dn| (dn, direction, local, peer))
        })
        .collect();
        // Parsed only when a phone is at either end (a mirror also carries
        // traffic that is none of the case's), and once for both ends.
        if ends.is_empty() {
            return Vec::new();
        }
        let problem = parsed.message(&self.raw).err().map(|e| e.to_string());
        ends.into_iter()
            .enumerate()
            .map(|(i, (dn, direction, local, peer))| Record {
                seq: seq + i as u64,
                at: self.time,
                agent: dn.clone(),
                direction,
                transport: self.transport,
                local,
                peer,
                raw: self.raw.clone(),
                problem: problem.clone(),
                parsed: parsed.clone(),
            })
            .collect()
    }
}

/// What the reader passed over, by reason. Never fatal.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Frames that carry no IPv4 or IPv6 (ARP, LLDP, ...) or whose link
    /// type is not supported.
    pub non_ip: u64,
    /// IP packets that are neither UDP nor TCP (ICMP, SCTP, ...).
    pub other_transport: u64,
    /// UDP datagrams, TCP segments and framed stream messages that do not
    /// begin with a SIP request or status line.
    pub non_sip: u64,
    /// Frames, headers or blocks that do not decode (bad lengths, a packet
    /// block for an interface never described, ...).
    pub malformed: u64,
    /// Packets cut short by the snap length (caplen < len): UDP ones are
    /// dropped, a TCP one becomes a gap in its stream.
    pub truncated: u64,
    /// Zero-length packet records.
    pub empty: u64,
    /// pcapng blocks larger than the reader's record limit, skipped unread.
    pub oversize: u64,
    /// IP datagrams whose fragments never all arrived (at the end of the
    /// capture, or evicted to stay within the fragment pool's bounds).
    pub fragments_incomplete: u64,
    /// TCP segments holding only bytes already seen.
    pub tcp_retransmitted: u64,
    /// Holes in a TCP stream that were never filled; the stream was
    /// resynchronised at the next segment that starts a SIP message.
    pub tcp_gaps: u64,
    /// TCP streams that closed, reset, were evicted or were still open at
    /// the end of the capture while holding part of a message.
    pub tcp_incomplete: u64,
    /// TCP flows dropped to stay within the flow or memory limits.
    pub flows_evicted: u64,
    /// Stream messages the framer refused (a gigabyte Content-Length, a
    /// header section without an end); the stream was resynchronised. Each
    /// one's head (up to the header bound) is still a packet, which a
    /// phone's record then flags, as live.
    pub unframed: u64,
}

impl std::fmt::Display for Skipped {
    /// In words, only what is not zero: `nothing skipped`, or `skipped 3
    /// non-SIP messages, 1 truncated packet`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts = [
            (self.non_ip, "frame without IP", "frames without IP"),
            (
                self.other_transport,
                "packet neither UDP nor TCP",
                "packets neither UDP nor TCP",
            ),
            (self.non_sip, "non-SIP message", "non-SIP messages"),
            (
                self.malformed,
                "malformed frame or block",
                "malformed frames or blocks",
            ),
            (self.truncated, "truncated packet", "truncated packets"),
            (self.empty, "empty packet", "empty packets"),
            (self.oversize, "oversize block", "oversize blocks"),
            (
                self.fragments_incomplete,
                "IP datagram with missing fragments",
                "IP datagrams with missing fragments",
            ),
            (
                self.tcp_retransmitted,
                "retransmitted TCP segment",
                "retransmitted TCP segments",
            ),
            (self.tcp_gaps, "gap in a TCP stream", "gaps in TCP streams"),
            (
                self.tcp_incomplete,
                "TCP stream ending inside a message",
                "TCP streams ending inside a message",
            ),
            (
                self.flows_evicted,
                "TCP flow dropped at the flow limit",
                "TCP flows dropped at the flow limit",
            ),
            (
                self.unframed,
                "unframeable stream message",
                "unframeable stream messages",
            ),
        ];
        let said: Vec<String> = counts
            .iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
            .collect();
        if said.is_empty() {
            f.write_str("nothing skipped")
        } else {
            write!(f, "skipped {}", said.join(", "))
        }
    }
}

/// Bounds that keep the reader's memory proportional to the live flows,
/// never to the file size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// TCP flows (one per direction) tracked at once; the least recently
    /// active is evicted past this.
    pub max_flows: usize,
    /// Out-of-order bytes buffered per flow before the hole ahead of them
    /// is given up as a gap.
    pub max_flow_bytes: usize,
    /// Out-of-order segments buffered per flow, likewise.
    pub max_flow_segments: usize,
    /// Bytes buffered across all flows (out of order, or a message not yet
    /// complete); the least recently active flows are evicted past this.
    pub max_total_bytes: usize,
    /// IP datagrams being reassembled from fragments at once.
    pub max_fragment_datagrams: usize,
    /// Bytes held across those datagrams.
    pub max_fragment_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_flows: 10_000,
            max_flow_bytes: 1024 * 1024,
            max_flow_segments: 1024,
            max_total_bytes: 256 * 1024 * 1024,
            max_fragment_datagrams: 1024,
            max_fragment_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Why a capture could not be read (any further).
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("read failed at byte {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("not a pcap or pcapng capture (it starts with {magic:02x?})")]
    UnknownFormat { magic: Vec<u8> },
    #[error("the capture ends inside the {what} at byte {offset}, after {packets} packets")]
    Truncated {
        what: &'static str,
        offset: u64,
        packets: u64,
    },
    #[error("packet {packet}, record at byte {offset}: {reason}")]
    BadRecord {
        packet: u64,
        offset: u64,
        reason: String,
    },
    #[error("pcapng block {block} at byte {offset}: {reason}")]
    BadBlock {
        block: u64,
        offset: u64,
        reason: String,
    },
}
