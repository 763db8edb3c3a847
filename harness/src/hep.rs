//! HEPv3, the Homer encapsulation protocol: how a server mirrors every SIP
//! message it receives and sends (Kamailio's `siptrace`, OpenSIPS' `proto_hep`,
//! FreeSWITCH, Asterisk's `res_hep`...) to a capture agent, one UDP datagram
//! per message.
//!
//! A datagram is `HEP3`, a 16-bit total length, then chunks of
//! `vendor:u16 type:u16 length:u16 value` (length includes those six bytes),
//! all big-endian. Vendor 0's types used here: 1 IP family (2 IPv4, 10
//! IPv6), 2 IP protocol (17 UDP, 6 TCP), 3/4 IPv4 source/destination, 5/6
//! IPv6 source/destination, 7/8 ports, 9/10 timestamp seconds/microseconds,
//! 11 payload type (1 SIP), 12 capture agent id, 15 payload, 16 compressed
//! payload. Other vendors' chunks and other types are passed over.
//!
//! Pure: bytes in, a [`Packet`] or a [`HepError`] out, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::pcap::Packet;
use crate::sip::Transport;

const MAGIC: &[u8; 4] = b"HEP3";
const HEADER: usize = 6;
const CHUNK: usize = 6;
const FAMILY_V4: u8 = 2;
const FAMILY_V6: u8 = 10;
const PROTO_UDP: u8 = 17;
const PROTO_TCP: u8 = 6;
/// What HEP agents put in the IP protocol chunk for SIP over TLS: IPPROTO_IDP,
/// the "fake proto type" of Kamailio's siptrace (`pipport2su`), sofia-sip
/// and reSIProcate alike (the segments are TCP; the chunk tells the SIP
/// transport).
const PROTO_TLS: u8 = 22;
/// The HEP payload type of SIP.
pub const PAYLOAD_SIP: u8 = 1;

/// Why a datagram is not a mirrored SIP message. [`HepError::reason`] is
/// the short form a run counts skipped datagrams by.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HepError {
    #[error("not HEP: it starts with {0:02x?}")]
    NotHep(Vec<u8>),
    #[error("truncated HEPv3: {0} bytes, shorter than its {HEADER}-byte header")]
    Truncated(usize),
    #[error("HEP version {0}: only HEPv3 is read (set the server's HEP version to 3)")]
    Version(u8),
    #[error("the header says {declared} bytes, the datagram has {actual}")]
    Length { declared: usize, actual: usize },
    #[error("chunk type {kind} at byte {at}: {why}")]
    Chunk {
        kind: u16,
        at: usize,
        why: &'static str,
    },
    #[error("no {0} chunk")]
    Missing(&'static str),
    #[error("payload type {0}, not SIP")]
    NotSip(u8),
    #[error("IP protocol {0}: only UDP, TCP and TLS (22) are read")]
    Transport(u8),
    #[error("a compressed payload (chunk 16) is not read: turn payload compression off")]
    Compressed,
    #[error("the payload ({0} bytes) does not fit in one HEP datagram")]
    TooLarge(usize),
}

impl HepError {
    /// The kind of problem, for counting.
    pub fn reason(&self) -> &'static str {
        match self {
            HepError::NotHep(_) => "not HEP",
            HepError::Truncated(_) => "truncated HEPv3",
            HepError::Version(_) => "not HEPv3",
            HepError::Length { .. } => "bad length",
            HepError::Chunk { .. } => "bad chunk",
            HepError::Missing(_) => "missing chunk",
            HepError::NotSip(_) => "not SIP",
            HepError::Transport(_) => "not UDP, TCP or TLS",
            HepError::Compressed => "compressed",
            HepError::TooLarge(_) => "too large",
        }
    }
}

/// A decoded datagram: the message, and the capture agent that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrored {
    pub packet: Packet,
    /// Chunk 12, when present: which server (or process) mirrored it.
    pub capture_id: Option<u32>,
    /// Whether chunks 9/10 gave the time; if not, `packet.time` is the
    /// arrival time passed to [`decode`].
    pub timestamped: bool,
}

/// Decodes one datagram; `arrived` stands in for a missing timestamp.
pub fn decode(datagram: &[u8], arrived: SystemTime) -> Result<Mirrored, HepError> {
    if !datagram.starts_with(MAGIC) {
        // HEPv1 and v2 begin with their version number.
        return Err(match datagram.first() {
            Some(v @ (1 | 2)) => HepError::Version(*v),
            _ => HepError::NotHep(datagram.iter().take(4).copied().collect()),
        });
    }
    // The magic says HEPv3; what follows is cut short.
    if datagram.len() < HEADER {
        return Err(HepError::Truncated(datagram.len()));
    }
    let declared = usize::from(u16::from_be_bytes([datagram[4], datagram[5]]));
    if declared < HEADER || declared > datagram.len() {
        return Err(HepError::Length {
            declared,
            actual: datagram.len(),
        });
    }
    // Bytes past the declared length are not part of the message.
    let body = &datagram[..declared];
    let mut fields = Fields::default();
    let mut at = HEADER;
    while at < body.len() {
        let Some(head) = body.get(at..at + CHUNK) else {
            return Err(HepError::Chunk {
                kind: 0,
                at,
                why: "cut short",
            });
        };
        let vendor = u16::from_be_bytes([head[0], head[1]]);
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let len = usize::from(u16::from_be_bytes([head[4], head[5]]));
        let bad = |why| HepError::Chunk { kind, at, why };
        if len < CHUNK {
            return Err(bad("length shorter than its header"));
        }
        let value = body
            .get(at + CHUNK..at + len)
            .ok_or(bad("runs past the end"))?;
        if vendor == 0 {
            fields.take(kind, value).map_err(bad)?;
        }
        at += len;
    }
    fields.finish(arrived)
}

/// The vendor-0 chunks seen so far.
#[derive(Default)]
struct Fields {
    family: Option<u8>,
    proto: Option<u8>,
    src4: Option<Ipv4Addr>,
    dst4: Option<Ipv4Addr>,
    src6: Option<Ipv6Addr>,
    dst6: Option<Ipv6Addr>,
    sport: Option<u16>,
    dport: Option<u16>,
    secs: Option<u32>,
    usecs: Option<u32>,
    payload_type: Option<u8>,
    capture_id: Option<u32>,
    payload: Option<Vec<u8>>,
    compressed: bool,
}

impl Fields {
    fn take(&mut self, kind: u16, v: &[u8]) -> Result<(), &'static str> {
        const WRONG: &str = "wrong length for its type";
        let u8_ = |v: &[u8]| <[u8; 1]>::try_from(v).map(|b| b[0]).map_err(|_| WRONG);
        let u16_ = |v: &[u8]| {
            <[u8; 2]>::try_from(v)
                .map(u16::from_be_bytes)
                .map_err(|_| WRONG)
        };
        let u32_ = |v: &[u8]| {
            <[u8; 4]>::try_from(v)
                .map(u32::from_be_bytes)
                .map_err(|_| WRONG)
        };
        let v4 = |v: &[u8]| {
            <[u8; 4]>::try_from(v)
                .map(Ipv4Addr::from)
                .map_err(|_| WRONG)
        };
        let v6 = |v: &[u8]| {
            <[u8; 16]>::try_from(v)
                .map(Ipv6Addr::from)
                .map_err(|_| WRONG)
        };
        match kind {
            1 => self.family = Some(u8_(v)?),
            2 => self.proto = Some(u8_(v)?),
            3 => self.src4 = Some(v4(v)?),
            4 => self.dst4 = Some(v4(v)?),
            5 => self.src6 = Some(v6(v)?),
            6 => self.dst6 = Some(v6(v)?),
            7 => self.sport = Some(u16_(v)?),
            8 => self.dport = Some(u16_(v)?),
            9 => self.secs = Some(u32_(v)?),
            10 => self.usecs = Some(u32_(v)?),
            11 => self.payload_type = Some(u8_(v)?),
            12 => self.capture_id = Some(u32_(v)?),
            15 => self.payload = Some(v.to_vec()),
            16 => self.compressed = true,
            _ => {}
        }
        Ok(())
    }

    fn finish(self, arrived: SystemTime) -> Result<Mirrored, HepError> {
        // Some agents leave the payload type out; a SIP capture is the
        // common case, and a non-SIP payload is caught where it is parsed.
        let payload_type = self.payload_type.unwrap_or(PAYLOAD_SIP);
        if payload_type != PAYLOAD_SIP {
            return Err(HepError::NotSip(payload_type));
        }
        let payload = match self.payload {
            Some(p) => p,
            None if self.compressed => return Err(HepError::Compressed),
            None => return Err(HepError::Missing("payload (15)")),
        };
        let transport = match self.proto.ok_or(HepError::Missing("IP protocol (2)"))? {
            PROTO_UDP => Transport::Udp,
            PROTO_TCP => Transport::Tcp,
            PROTO_TLS => Transport::Tls,
            other => return Err(HepError::Transport(other)),
        };
        // The family chunk says which addresses to use; without it, the
        // pair that is there.
        let v4 = self.src4.zip(self.dst4).map(|(s, d)| (s.into(), d.into()));
        let v6 = self.src6.zip(self.dst6).map(|(s, d)| (s.into(), d.into()));
        let (src, dst): (IpAddr, IpAddr) = match self.family {
            Some(FAMILY_V4) => v4.ok_or(HepError::Missing("IPv4 address (3, 4)"))?,
            Some(FAMILY_V6) => v6.ok_or(HepError::Missing("IPv6 address (5, 6)"))?,
            _ => v4
                .or(v6)
                .ok_or(HepError::Missing("source and destination address"))?,
        };
        let sport = self.sport.ok_or(HepError::Missing("source port (7)"))?;
        let dport = self
            .dport
            .ok_or(HepError::Missing("destination port (8)"))?;
        let time = self.secs.map(|s| {
            UNIX_EPOCH
                + Duration::from_secs(u64::from(s))
                + Duration::from_micros(u64::from(self.usecs.unwrap_or(0)))
        });
        Ok(Mirrored {
            packet: Packet {
                time: time.unwrap_or(arrived),
                src: SocketAddr::new(src, sport),
                dst: SocketAddr::new(dst, dport),
                transport,
                raw: payload,
            },
            capture_id: self.capture_id,
            timestamped: time.is_some(),
        })
    }
}

/// Encodes a message as one HEPv3 datagram, as a server's mirror would.
pub fn encode(packet: &Packet, capture_id: u32) -> Result<Vec<u8>, HepError> {
    fn chunk(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        // Callers keep every value small enough (checked below for the payload).
        out.extend_from_slice(&((CHUNK + value.len()) as u16).to_be_bytes());
        out.extend_from_slice(value);
    }
    let mut out = Vec::with_capacity(packet.raw.len() + 96);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0, 0]);
    match (packet.src.ip(), packet.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            chunk(&mut out, 1, &[FAMILY_V4]);
            chunk(&mut out, 3, &s.octets());
            chunk(&mut out, 4, &d.octets());
        }
        (s, d) => {
            let six = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            chunk(&mut out, 1, &[FAMILY_V6]);
            chunk(&mut out, 5, &six(s).octets());
            chunk(&mut out, 6, &six(d).octets());
        }
    }
    let proto = match packet.transport {
        Transport::Udp => PROTO_UDP,
        Transport::Tcp => PROTO_TCP,
        Transport::Tls => PROTO_TLS,
    };
    chunk(&mut out, 2, &[proto]);
    chunk(&mut out, 7, &packet.src.port().to_be_bytes());
    chunk(&mut out, 8, &packet.dst.port().to_be_bytes());
    let since = packet.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    // HEP's seconds are 32 bits: good until 2106.
    chunk(&mut out, 9, &(since.as_secs() as u32).to_be_bytes());
    chunk(&mut out, 10, &since.subsec_micros().to_be_bytes());
    chunk(&mut out, 11, &[PAYLOAD_SIP]);
    chunk(&mut out, 12, &capture_id.to_be_bytes());
    if out.len() + CHUNK + packet.raw.len() > usize::from(u16::MAX) {
        return Err(HepError::TooLarge(packet.raw.len()));
    }
    chunk(&mut out, 15, &packet.raw);
    let total = out.len() as u16;
    out[4..6].copy_from_slice(&total.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/hep")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Captured from Kamailio 5.6.3's siptrace (trace_mode 1, HEPv3): the
    /// OPTIONS probe kamailio.sh sends, as received, and Kamailio's answer.
    #[test]
    fn reads_what_kamailio_mirrors() {
        let received = decode(&fixture("kamailio-options-in.hep"), UNIX_EPOCH).unwrap();
        let sent = decode(&fixture("kamailio-options-out.hep"), UNIX_EPOCH).unwrap();
        assert!(received
            .packet
            .raw
            .starts_with(b"OPTIONS sip:127.0.0.1:55388 SIP/2.0\r\n"));
        assert!(sent
            .packet
            .raw
            .starts_with(b"SIP/2.0 484 Address Incomplete\r\n"));
        assert_eq!(received.packet.src, "127.0.0.1:37709".parse().unwrap());
        assert_eq!(received.packet.dst, "127.0.0.1:55388".parse().unwrap());
        assert_eq!(sent.packet.src, received.packet.dst);
        assert_eq!(sent.packet.dst, received.packet.src);
        assert_eq!(received.packet.transport, Transport::Udp);
        assert_eq!(received.capture_id, Some(60970));
        assert!(received.timestamped);
        let secs = |m: &Mirrored| m.packet.time.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(secs(&received).as_secs(), 0x6b0739e7);
        assert_eq!(secs(&received).subsec_micros(), 0x000bb70f);
        assert!(secs(&sent) > secs(&received));
        // The payload is the whole message, to its last body byte.
        let raw = String::from_utf8(sent.packet.raw).unwrap();
        assert!(raw.ends_with("\r\n\r\n"), "{raw:?}");
    }

    fn packet(src: &str, dst: &str, transport: Transport, raw: &[u8]) -> Packet {
        Packet {
            time: UNIX_EPOCH + Duration::from_micros(1_764_000_000_123_456),
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            transport,
            raw: raw.to_vec(),
        }
    }

    #[test]
    fn what_it_encodes_it_decodes_over_v4_and_v6() {
        for p in [
            packet("127.0.0.1:5070", "127.0.0.1:5060", Transport::Udp, b"BYE x"),
            packet(
                "[::1]:5070",
                "[2001:db8::1]:5060",
                Transport::Tcp,
                b"SIP/2.0 200 OK\r\n\r\n",
            ),
        ] {
            let m = decode(&encode(&p, 7).unwrap(), SystemTime::now()).unwrap();
            assert_eq!((m.packet, m.capture_id, m.timestamped), (p, Some(7), true));
        }
    }

    #[test]
    fn says_what_is_wrong() {
        let good = encode(
            &packet("127.0.0.1:1", "127.0.0.1:2", Transport::Udp, b"OPTIONS x"),
            0,
        )
        .unwrap();
        let err = |d: &[u8]| decode(d, UNIX_EPOCH).unwrap_err();
        assert_eq!(
            err(b"OPTIONS sip:x SIP/2.0"),
            HepError::NotHep(b"OPTI".to_vec())
        );
        assert_eq!(err(&[2, 16, 2, 17]), HepError::Version(2));
        // The magic, and no room for the length after it.
        for cut in [&b"HEP3"[..], b"HEP3\0"] {
            let e = err(cut);
            assert_eq!(e, HepError::Truncated(cut.len()));
            assert_eq!(e.reason(), "truncated HEPv3");
            assert_eq!(
                e.to_string(),
                format!(
                    "truncated HEPv3: {} bytes, shorter than its 6-byte header",
                    cut.len()
                )
            );
        }
        assert_eq!(err(b"HEP"), HepError::NotHep(b"HEP".to_vec()));
        let mut long = good.clone();
        long[4..6].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(err(&long), HepError::Length { .. }));
        // A chunk whose length runs past the end.
        let mut cut = good.clone();
        let last = cut.len();
        cut.truncate(last - 2);
        let total = cut.len() as u16;
        cut[4..6].copy_from_slice(&total.to_be_bytes());
        assert!(
            matches!(err(&cut), HepError::Chunk { kind: 15, .. }),
            "{:?}",
            err(&cut)
        );
        // A two-byte IPv4 address.
        let mut short = b"HEP3\0\0".to_vec();
        short.extend_from_slice(&[0, 0, 0, 3, 0, 8, 127, 0]);
        let total = short.len() as u16;
        short[4..6].copy_from_slice(&total.to_be_bytes());
        assert_eq!(
            err(&short),
            HepError::Chunk {
                kind: 3,
                at: 6,
                why: "wrong length for its type"
            }
        );
        // A payload type that is not SIP (RTCP reports are type 5).
        let rtcp = good
            .windows(7)
            .position(|w| w == [0, 0, 0, 11, 0, 7, 1])
            .unwrap();
        let mut other = good.clone();
        other[rtcp + 6] = 5;
        assert_eq!(err(&other), HepError::NotSip(5));
    }

    #[test]
    fn other_vendors_chunks_and_trailing_bytes_are_passed_over() {
        let p = packet("127.0.0.1:1", "127.0.0.1:2", Transport::Udp, b"ACK x");
        let mut d = encode(&p, 1).unwrap();
        // A vendor chunk that reuses type 15 must not replace the payload.
        d.extend_from_slice(&[0, 9, 0, 15, 0, 9, b'a', b'b', b'c']);
        let total = d.len() as u16;
        d[4..6].copy_from_slice(&total.to_be_bytes());
        d.extend_from_slice(b"trailing");
        assert_eq!(decode(&d, UNIX_EPOCH).unwrap().packet, p);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes, UNIX_EPOCH);
            let mut hep = b"HEP3".to_vec();
            hep.extend_from_slice(&bytes);
            let _ = decode(&hep, UNIX_EPOCH);
        }

        #[test]
        fn round_trips(raw in proptest::collection::vec(any::<u8>(), 0..2000), sport: u16, dport: u16, proto in 0..3usize) {
            let transport = [Transport::Udp, Transport::Tcp, Transport::Tls][proto];
            let mut p = packet("10.0.0.1:1", "10.0.0.2:2", transport, &raw);
            p.src.set_port(sport);
            p.dst.set_port(dport);
            prop_assert_eq!(decode(&encode(&p, 3).unwrap(), UNIX_EPOCH).unwrap().packet, p);
        }
    }
}
