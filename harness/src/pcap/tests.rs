//! The capture layer end to end: what scacheck writes reads back exactly,
//! and what others write (pcapng, cooked links, VLANs, fragments, messy
//! TCP, broken files) is found, counted or refused, never a panic.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etherparse::{
    ip_number, IpFragOffset, Ipv4Header, NetHeaders, PacketBuilder, PacketHeaders, TransportHeader,
};
use proptest::prelude::*;

use super::file::Capture;
use super::reassembly::{FlowKey, SegData, Segment, Sink, Streams};
use super::*;
use crate::sip::record::{Direction, Record};

const BASE_SECS: u64 = 1_700_000_000;

fn at(ms: u64, ns: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(BASE_SECS + ms / 1000, (ms % 1000) as u32 * 1_000_000 + ns)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn request(n: usize, body: usize) -> Vec<u8> {
    let text = b"abcdefghijklmnopqrstuvwxyz0123456789 ";
    let body: Vec<u8> = (0..body).map(|i| text[(i + n) % text.len()]).collect();
    let mut m = format!(
        "MESSAGE sip:user{n}@example.com SIP/2.0\r\n\
         Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK{n}\r\n\
         Call-ID: call-{n}\r\nCSeq: {n} MESSAGE\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    m.extend(body);
    m
}

fn response(n: usize) -> Vec<u8> {
    format!("SIP/2.0 200 OK\r\nCall-ID: call-{n}\r\nCSeq: {n} MESSAGE\r\nContent-Length: 0\r\n\r\n")
        .into_bytes()
}

fn packet(time: SystemTime, src: &str, dst: &str, transport: Transport, raw: Vec<u8>) -> Packet {
    Packet {
        time,
        src: addr(src),
        dst: addr(dst),
        transport,
        raw,
    }
}

fn written(packets: &[Packet]) -> Vec<u8> {
    let mut out = Vec::new();
    write_packets(&mut out, packets).unwrap();
    out
}

#[derive(Debug)]
struct ReadOut {
    packets: Vec<Packet>,
    skipped: Skipped,
    error: Option<PcapError>,
}

fn read_all(bytes: Vec<u8>) -> ReadOut {
    read_with(bytes, Limits::default())
}

/// Reads to the end, asserting that the reader terminates and that an
/// error ends the reading.
fn read_with(bytes: Vec<u8>, limits: Limits) -> ReadOut {
    let budget = 10 * bytes.len() + 100;
    let mut reader = match Reader::with_limits(Cursor::new(bytes), limits) {
        Ok(r) => r,
        Err(e) => {
            return ReadOut {
                packets: Vec::new(),
                skipped: Skipped::default(),
                error: Some(e),
            }
        }
    };
    let mut packets = Vec::new();
    for _ in 0..budget {
        match reader.next_packet() {
            Ok(Some(p)) => packets.push(p),
            Ok(None) => {
                return ReadOut {
                    packets,
                    skipped: reader.skipped().clone(),
                    error: None,
                }
            }
            Err(e) => {
                assert!(matches!(reader.next_packet(), Ok(None)));
                return ReadOut {
                    packets,
                    skipped: reader.skipped().clone(),
                    error: Some(e),
                };
            }
        }
    }
    panic!("the reader did not terminate");
}

fn raws(packets: &[Packet]) -> Vec<Vec<u8>> {
    packets.iter().map(|p| p.raw.clone()).collect()
}

// ---------------------------------------------------------------- builders

/// A classic pcap written by hand: (time, frame, length on the wire).
fn legacy(
    be: bool,
    nanos: bool,
    snaplen: u32,
    linktype: u32,
    records: &[(SystemTime, Vec<u8>, u32)],
) -> Vec<u8> {
    let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut out = Vec::new();
    out.extend(w32(if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 }));
    out.extend(w16(2));
    out.extend(w16(4));
    out.extend(w32(0));
    out.extend(w32(0));
    out.extend(w32(snaplen));
    out.extend(w32(linktype));
    for (t, data, orig) in records {
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        out.extend(w32(d.as_secs() as u32));
        out.extend(w32(if nanos {
            d.subsec_nanos()
        } else {
            d.subsec_micros()
        }));
        out.extend(w32(data.len() as u32));
        out.extend(w32(*orig));
        out.extend(data);
    }
    out
}

/// Ethernet frames as a nanosecond pcap.
fn ethernet_pcap(frames: &[(SystemTime, Vec<u8>)]) -> Vec<u8> {
    let records: Vec<_> = frames
        .iter()
        .map(|(t, f)| (*t, f.clone(), f.len() as u32))
        .collect();
    legacy(false, true, 262_144, 1, &records)
}

/// A pcapng file written by hand.
#[derive(Default)]
struct Ng {
    out: Vec<u8>,
    be: bool,
}

impl Ng {
    fn w32(&self, v: u32) -> [u8; 4] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn w16(&self, v: u16) -> [u8; 2] {
        if self.be {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn block(&mut self, kind: u32, body: &[u8]) {
        let pad = (4 - body.len() % 4) % 4;
        let len = (12 + body.len() + pad) as u32;
        let (k, l) = (self.w32(kind), self.w32(len));
        self.out.extend(k);
        self.out.extend(l);
        self.out.extend(body);
        self.out.extend(vec![0; pad]);
        self.out.extend(l);
    }

    fn section(&mut self, be: bool) {
        self.be = be;
        let mut body = Vec::new();
        body.extend(self.w32(0x1A2B_3C4D));
        body.extend(self.w16(1));
        body.extend(self.w16(0));
        body.extend([0xff; 8]);
        self.block(0x0A0D_0D0A, &body);
    }

    fn interface(&mut self, linktype: u16, tsresol: Option<u8>) {
        let mut body = Vec::new();
        body.extend(self.w16(linktype));
        body.extend(self.w16(0));
        body.extend(self.w32(0));
        if let Some(r) = tsresol {
            body.extend(self.w16(9));
            body.extend(self.w16(1));
            body.extend([r, 0, 0, 0]);
            body.extend([0; 4]);
        }
        self.block(1, &body);
    }

    fn padded(data: &[u8]) -> Vec<u8> {
        let mut d = data.to_vec();
        d.resize(data.len().div_ceil(4) * 4, 0);
        d
    }

    fn packet(&mut self, iface: u32, ts: u64, data: &[u8]) {
        let mut body = Vec::new();
        body.extend(self.w32(iface));
        body.extend(self.w32((ts >> 32) as u32));
        body.extend(self.w32(ts as u32));
        body.extend(self.w32(data.len() as u32));
        body.extend(self.w32(data.len() as u32));
        body.extend(Ng::padded(data));
        self.block(6, &body);
    }

    fn simple(&mut self, data: &[u8]) {
        let mut body = Vec::new();
        body.extend(self.w32(data.len() as u32));
        body.extend(Ng::padded(data));
        self.block(3, &body);
    }
}

/// An IP packet holding one UDP datagram.
fn udp_ip(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64)
            .udp(src.port(), dst.port())
            .write(&mut out, payload),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64)
            .udp(src.port(), dst.port())
            .write(&mut out, payload),
        _ => panic!("mixed families"),
    }
    .unwrap();
    out
}

fn ethertype(ip: &[u8]) -> [u8; 2] {
    if ip[0] >> 4 == 6 {
        [0x86, 0xdd]
    } else {
        [0x08, 0x00]
    }
}

/// Ethernet with the given VLAN tag protocol identifiers, outermost first.
fn eth(tags: &[u16], ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    for (i, tpid) in tags.iter().enumerate() {
        f.extend(tpid.to_be_bytes());
        f.extend((100 + i as u16).to_be_bytes());
    }
    f.extend(ethertype(ip));
    f.extend(ip);
    f
}

fn sll(ip: &[u8]) -> Vec<u8> {
    let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    f.extend(ethertype(ip));
    f.extend(ip);
    f
}

fn sll2(ip: &[u8]) -> Vec<u8> {
    let mut f = ethertype(ip).to_vec();
    f.extend([0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    f.extend(ip);
    f
}

/// One TCP segment in an Ethernet frame; `flags` among "SAFRP".
fn tcp_frame(src: SocketAddr, dst: SocketAddr, seq: u32, flags: &str, payload: &[u8]) -> Vec<u8> {
    let base = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let mut step = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            base.ipv4(s.octets(), d.octets(), 64)
                .tcp(src.port(), dst.port(), seq, 65535)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            base.ipv6(s.octets(), d.octets(), 64)
                .tcp(src.port(), dst.port(), seq, 65535)
        }
        _ => panic!("mixed families"),
    };
    for f in flags.chars() {
        step = match f {
            'S' => step.syn(),
            'A' => step.ack(1),
            'F' => step.fin(),
            'R' => step.rst(),
            'P' => step.psh(),
            _ => panic!("flag {f}"),
        };
    }
    let mut out = Vec::new();
    step.write(&mut out, payload).unwrap();
    out
}

/// Data segments of one direction: (offset in the stream, bytes), with or
/// without the SYN first.
fn stream_frames(
    src: SocketAddr,
    dst: SocketAddr,
    isn: u32,
    syn: bool,
    segments: &[(usize, &[u8])],
) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let first = if syn {
        frames.push(tcp_frame(src, dst, isn, "S", &[]));
        isn.wrapping_add(1)
    } else {
        isn
    };
    for (offset, bytes) in segments {
        let seq = first.wrapping_add(*offset as u32);
        frames.push(tcp_frame(src, dst, seq, "AP", bytes));
    }
    frames
}

fn timed(frames: Vec<Vec<u8>>) -> Vec<(SystemTime, Vec<u8>)> {
    frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| (at(i as u64, 0), f))
        .collect()
}

/// `stream` cut at `cuts` into (offset, bytes) pieces.
fn pieces<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<(usize, &'a [u8])> {
    let mut bounds: Vec<usize> = cuts.iter().copied().filter(|c| *c < stream.len()).collect();
    bounds.push(0);
    bounds.push(stream.len());
    bounds.sort_unstable();
    bounds.dedup();
    bounds
        .windows(2)
        .map(|w| (w[0], &stream[w[0]..w[1]]))
        .collect()
}

// ------------------------------------------------------------- round trips

fn conversation() -> Vec<Packet> {
    let bodies = [0, 1, 100, 1399, 1400, 1401, 2800, 10_000];
    let mut packets = Vec::new();
    let mut ms = 0;
    let mut next = || {
        ms += 1;
        at(ms, ms as u32 * 7 + 3)
    };
    for (n, body) in bodies.into_iter().enumerate() {
        let (udp, tcp) = (Transport::Udp, Transport::Tcp);
        packets.push(packet(
            next(),
            "127.0.0.1:5060",
            "127.0.0.2:5070",
            udp,
            request(n, body),
        ));
        packets.push(packet(
            next(),
            "127.0.0.1:40001",
            "127.0.0.2:5070",
            tcp,
            request(n, body),
        ));
        packets.push(packet(
            next(),
            "[::1]:5080",
            "[2001:db8::2]:5090",
            udp,
            request(n, body),
        ));
        packets.push(packet(
            next(),
            "127.0.0.2:5070",
            "127.0.0.1:40001",
            tcp,
            response(n),
        ));
        packets.push(packet(
            next(),
            "127.0.0.1:40002",
            "127.0.0.2:5070",
            tcp,
            request(n + 50, body),
        ));
        packets.push(packet(
            next(),
            "[2001:db8::2]:5090",
            "[::1]:40003",
            tcp,
            request(n, body),
        ));
        packets.push(packet(
            next(),
            "[::1]:40003",
            "[2001:db8::2]:5090",
            tcp,
            response(n),
        ));
        packets.push(packet(
            next(),
            "[2001:db8::2]:5090",
            "[::1]:5080",
            udp,
            response(n),
        ));
    }
    packets
}

#[test]
fn round_trip_udp_and_tcp_over_ipv4_and_ipv6() {
    let packets = conversation();
    let got = read_all(written(&packets));
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.skipped, Skipped::default());
    assert_eq!(got.packets.len(), packets.len());
    for (i, (g, p)) in got.packets.iter().zip(&packets).enumerate() {
        assert_eq!(g, p, "packet {i}");
    }
}

#[test]
fn written_frames_are_valid_ethernet_ip_and_tcp() {
    let packets = conversation();
    let bytes = written(&packets);
    // Little-endian nanosecond pcap, LINKTYPE_ETHERNET.
    assert_eq!(&bytes[..4], &[0x4d, 0x3c, 0xb2, 0xa1]);
    assert_eq!(&bytes[20..24], &[1, 0, 0, 0]);
    let mut capture = Capture::open(Cursor::new(bytes)).unwrap();
    let mut skipped = Skipped::default();
    // Per direction: the next sequence number expected.
    let mut next_seq: HashMap<(SocketAddr, SocketAddr), u32> = HashMap::new();
    let (mut frames, mut syns, mut last_time) = (0, 0, UNIX_EPOCH);
    while let Some(frame) = capture.next_frame(&mut skipped).unwrap() {
        frames += 1;
        assert_eq!(frame.linktype, 1);
        assert_eq!(frame.orig_len as usize, frame.data.len());
        assert!(frame.time >= last_time);
        last_time = frame.time;
        let h = PacketHeaders::from_ethernet_slice(frame.data).unwrap();
        let payload = h.payload.slice();
        let (src_ip, dst_ip): (IpAddr, IpAddr) = match &h.net {
            Some(NetHeaders::Ipv4(ip, _)) => {
                assert_eq!(ip.header_checksum, ip.calc_header_checksum());
                (ip.source.into(), ip.destination.into())
            }
            Some(NetHeaders::Ipv6(ip, _)) => (ip.source.into(), ip.destination.into()),
            other => panic!("not IP: {other:?}"),
        };
        let checksum_ok = |v4: Option<u16>, v6: Option<u16>, got: u16| match &h.net {
            Some(NetHeaders::Ipv4(..)) => v4 == Some(got),
            _ => v6 == Some(got),
        };
        match &h.transport {
            Some(TransportHeader::Udp(u)) => {
                let (v4, v6) = match &h.net {
                    Some(NetHeaders::Ipv4(ip, _)) => (u.calc_checksum_ipv4(ip, payload).ok(), None),
                    Some(NetHeaders::Ipv6(ip, _)) => (None, u.calc_checksum_ipv6(ip, payload).ok()),
                    _ => (None, None),
                };
                assert!(checksum_ok(v4, v6, u.checksum));
            }
            Some(TransportHeader::Tcp(t)) => {
                let (v4, v6) = match &h.net {
                    Some(NetHeaders::Ipv4(ip, _)) => (t.calc_checksum_ipv4(ip, payload).ok(), None),
                    Some(NetHeaders::Ipv6(ip, _)) => (None, t.calc_checksum_ipv6(ip, payload).ok()),
                    _ => (None, None),
                };
                assert!(checksum_ok(v4, v6, t.checksum));
                assert!(payload.len() <= 1400);
                let key = (
                    SocketAddr::new(src_ip, t.source_port),
                    SocketAddr::new(dst_ip, t.destination_port),
                );
                let back = (key.1, key.0);
                if t.syn {
                    syns += 1;
                    assert!(!next_seq.contains_key(&key), "one SYN per direction");
                    if t.ack {
                        assert_eq!(Some(&t.acknowledgment_number), next_seq.get(&back));
                    } else {
                        assert!(!next_seq.contains_key(&back), "the SYN comes first");
                    }
                    next_seq.insert(key, t.sequence_number.wrapping_add(1));
                } else {
                    assert!(t.ack);
                    let expected = next_seq.get_mut(&key).expect("data after the handshake");
                    assert_eq!(t.sequence_number, *expected);
                    *expected = expected.wrapping_add(payload.len() as u32);
                    assert_eq!(Some(&t.acknowledgment_number), next_seq.get(&back));
                }
            }
            other => panic!("not UDP or TCP: {other:?}"),
        }
    }
    // Three connections, each a SYN and a SYN-ACK.
    assert_eq!(syns, 6);
    assert!(frames > packets.len());
    assert_eq!(skipped, Skipped::default());
}

fn record(
    seq: u64,
    agent: &str,
    direction: Direction,
    transport: Transport,
    local: &str,
    peer: &str,
    raw: &[u8],
) -> Record {
    Record {
        seq,
        at: at(seq, 0),
        agent: agent.into(),
        direction,
        transport,
        local: addr(local),
        peer: addr(peer),
        raw: raw.to_vec(),
        problem: None,
        parsed: Default::default(),
    }
}

#[test]
fn records_are_written_once_per_message_with_real_ports() {
    use Direction::{Received, Sent};
    use Transport::{Tcp, Udp};
    let (a, b, a_eph) = ("127.0.0.1:5060", "127.0.0.2:5070", "127.0.0.1:41000");
    let (invite, ok, bye) = (request(1, 10), response(1), request(2, 0));
    let records = vec![
        // UDP, recorded by both ends; then a retransmission, also by both.
        record(0, "alice", Sent, Udp, a, b, &invite),
        record(1, "server", Received, Udp, b, a, &invite),
        record(2, "alice", Sent, Udp, a, b, &invite),
        record(3, "server", Received, Udp, b, a, &invite),
        // TCP: alice connects from an ephemeral port but records her
        // listening one; the server records the real one.
        record(4, "alice", Sent, Tcp, a, b, &bye),
        record(5, "server", Received, Tcp, b, a_eph, &bye),
        record(6, "server", Sent, Tcp, b, a_eph, &ok),
        record(7, "alice", Received, Tcp, a, b, &ok),
        // A message only one end saw.
        record(8, "server", Sent, Udp, b, a, &ok),
    ];
    let packets = packets_from_records(&records);
    let seen: Vec<_> = packets
        .iter()
        .map(|p| (p.transport, p.src.to_string(), p.dst.to_string(), p.time))
        .collect();
    assert_eq!(
        seen,
        vec![
            (Udp, a.to_string(), b.to_string(), at(0, 0)),
            (Udp, a.to_string(), b.to_string(), at(2, 0)),
            (Tcp, a_eph.to_string(), b.to_string(), at(4, 0)),
            (Tcp, b.to_string(), a_eph.to_string(), at(6, 0)),
            (Udp, b.to_string(), a.to_string(), at(8, 0)),
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.pcap");
    write_records(&path, &records).unwrap();
    let mut reader = Reader::open(&path).unwrap();
    let mut back = Vec::new();
    while let Some(p) = reader.next_packet().unwrap() {
        back.push(p);
    }
    assert_eq!(back, packets);
    assert_eq!(reader.skipped(), &Skipped::default());
}

#[test]
fn opening_a_missing_file_names_it() {
    let err = Reader::open(std::path::Path::new("/nonexistent/x.pcap")).unwrap_err();
    assert!(matches!(err, PcapError::Open { .. }));
    assert!(err.to_string().contains("/nonexistent/x.pcap"), "{err}");
    let err =
        Reader::from_reader(Cursor::new(b"GIF89a..........................".to_vec())).unwrap_err();
    assert!(matches!(err, PcapError::UnknownFormat { .. }), "{err}");
}

// ------------------------------------------------------ foreign captures

#[test]
fn pcapng_with_cooked_links_vlans_and_other_blocks() {
    let (a, b) = (addr("10.0.0.1:5060"), addr("10.0.0.2:5060"));
    let (a6, b6) = (addr("[fd00::1]:5060"), addr("[fd00::2]:5062"));
    let m: Vec<Vec<u8>> = (0..6).map(|n| request(n, 20 * n)).collect();
    let secs = BASE_SECS;
    let mut ng = Ng::default();
    ng.section(false);
    ng.interface(276, Some(9)); // SLL2, nanoseconds
    ng.interface(1, None); // Ethernet, microseconds
    ng.block(0x0BAD, b"unknown block type");
    ng.block(4, &[0; 4]); // an (empty) name resolution block
    ng.packet(0, secs * 1_000_000_000 + 5, &sll2(&udp_ip(a, b, &m[0])));
    ng.packet(
        1,
        secs * 1_000_000 + 7,
        &eth(&[0x8100], &udp_ip(a6, b6, &m[1])),
    );
    ng.packet(
        1,
        secs * 1_000_000 + 8,
        &eth(&[0x88a8, 0x8100], &udp_ip(a, b, &m[2])),
    );
    let arp = [&[0xff; 6][..], &[2, 0, 0, 0, 0, 1], &[0x08, 0x06], &[0; 28]].concat();
    ng.packet(1, secs * 1_000_000 + 9, &arp); // not IP
    ng.packet(
        1,
        secs * 1_000_000 + 9,
        &[0x02, 0x04, 0x06, 0x08, 0x08, 0x06],
    );
    ng.simple(&sll2(&udp_ip(b, a, &m[3])));
    ng.packet(7, 0, &eth(&[], &udp_ip(a, b, &m[5]))); // no such interface
                                                      // A second section, big-endian, raw IP in 2^-10 s units.
    ng.section(true);
    ng.interface(101, Some(0x80 | 10));
    ng.packet(0, (secs << 10) + 512, &udp_ip(b6, a6, &m[4]));
    let got = read_all(ng.out);
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(
        raws(&got.packets),
        vec![
            m[0].clone(),
            m[1].clone(),
            m[2].clone(),
            m[3].clone(),
            m[4].clone()
        ]
    );
    let times: Vec<_> = got.packets.iter().map(|p| p.time).collect();
    let base = UNIX_EPOCH + Duration::from_secs(secs);
    assert_eq!(
        times,
        vec![
            base + Duration::from_nanos(5),
            base + Duration::from_micros(7),
            base + Duration::from_micros(8),
            // A simple packet block has no time: the last one seen.
            base + Duration::from_micros(9),
            base + Duration::from_millis(500),
        ]
    );
    assert_eq!(got.packets[1].src, a6);
    assert_eq!(got.packets[1].dst, b6);
    assert_eq!(got.packets[3].src, b);
    assert_eq!(
        got.skipped,
        Skipped {
            non_ip: 1,
            malformed: 2,
            ..Skipped::default()
        }
    );
}

#[test]
fn classic_pcap_in_both_byte_orders_and_resolutions() {
    let (a, b) = (addr("192.0.2.1:5060"), addr("192.0.2.2:5080"));
    let m = request(3, 30);
    let t = at(1234, 567_000);
    for (be, nanos, linktype, frame) in [
        (true, false, 113, sll(&udp_ip(a, b, &m))),
        (false, true, 101, udp_ip(a, b, &m)),
        (
            true,
            true,
            0,
            [&[0, 0, 0, 2][..], &udp_ip(a, b, &m)].concat(),
        ),
        (false, false, 1, eth(&[0x8100], &udp_ip(a, b, &m))),
    ] {
        let len = frame.len() as u32;
        let got = read_all(legacy(be, nanos, 65_535, linktype, &[(t, frame, len)]));
        assert!(got.error.is_none(), "{:?}", got.error);
        assert_eq!(
            got.packets,
            vec![Packet {
                time: t,
                src: a,
                dst: b,
                transport: Transport::Udp,
                raw: m.clone(),
            }],
            "be {be} nanos {nanos} link {linktype}"
        );
    }
    // An unknown link type is passed over, not an error.
    let got = read_all(legacy(false, false, 65_535, 147, &[(t, vec![1, 2, 3], 3)]));
    assert!(got.error.is_none());
    assert_eq!(got.skipped.non_ip, 1);
}

fn ipv4_fragments(
    src: SocketAddr,
    dst: SocketAddr,
    id: u16,
    payload: &[u8],
    size: usize,
) -> Vec<Vec<u8>> {
    let whole = udp_ip(src, dst, payload);
    let datagram = &whole[20..];
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only");
    };
    datagram
        .chunks(size)
        .enumerate()
        .map(|(i, piece)| {
            let mut h = Ipv4Header::new(
                piece.len() as u16,
                64,
                ip_number::UDP,
                s.octets(),
                d.octets(),
            )
            .unwrap();
            h.identification = id;
            h.dont_fragment = false;
            h.more_fragments = (i + 1) * size < datagram.len();
            h.fragment_offset = IpFragOffset::try_new((i * size / 8) as u16).unwrap();
            h.header_checksum = h.calc_header_checksum();
            let mut ip = h.to_bytes().to_vec();
            ip.extend(piece);
            eth(&[], &ip)
        })
        .collect()
}

fn ipv6_fragments(
    src: SocketAddr,
    dst: SocketAddr,
    id: u32,
    payload: &[u8],
    size: usize,
) -> Vec<Vec<u8>> {
    let whole = udp_ip(src, dst, payload);
    let datagram = &whole[40..];
    datagram
        .chunks(size)
        .enumerate()
        .map(|(i, piece)| {
            let mut ip = whole[..40].to_vec();
            ip[4..6].copy_from_slice(&((8 + piece.len()) as u16).to_be_bytes());
            ip[6] = 44; // a fragment header follows
            let more = u16::from((i + 1) * size < datagram.len());
            ip.extend([17, 0]);
            ip.extend(((i * size) as u16 | more).to_be_bytes());
            ip.extend(id.to_be_bytes());
            ip.extend(piece);
            eth(&[], &ip)
        })
        .collect()
}

#[test]
fn ip_fragments_are_reassembled_in_any_order() {
    let (a, b) = (addr("198.51.100.1:5060"), addr("198.51.100.2:5060"));
    let (a6, b6) = (addr("[2001:db8::1]:5060"), addr("[2001:db8::2]:5060"));
    let big = request(1, 3000);
    let big6 = request(2, 4000);
    let v4 = ipv4_fragments(a, b, 77, &big, 1480);
    let v6 = ipv6_fragments(a6, b6, 0xdead_beef, &big6, 1448);
    assert_eq!((v4.len(), v6.len()), (3, 3));
    let lost = ipv4_fragments(a, b, 78, &request(3, 3000), 1480);
    let frames = vec![
        v4[2].clone(),
        v6[1].clone(),
        lost[0].clone(),
        v4[0].clone(),
        v6[0].clone(),
        v4[0].clone(), // a duplicate
        v4[1].clone(),
        v6[2].clone(),
    ];
    let got = read_all(ethernet_pcap(&timed(frames)));
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(raws(&got.packets), vec![big, big6]);
    assert_eq!(
        got.packets[0].time,
        at(6, 0),
        "the time of the last fragment"
    );
    assert_eq!(got.packets[1].src, a6);
    assert_eq!(
        got.skipped,
        Skipped {
            fragments_incomplete: 1,
            ..Skipped::default()
        }
    );
}

// -------------------------------------------------------------- messy TCP

const CLIENT: &str = "10.1.1.1:40000";
const SERVER: &str = "10.1.1.2:5060";

fn tcp_read(frames: Vec<Vec<u8>>) -> ReadOut {
    read_all(ethernet_pcap(&timed(frames)))
}

#[test]
fn tcp_out_of_order_overlaps_and_retransmissions() {
    let (c, s) = (addr(CLIENT), addr(SERVER));
    let (m1, m2) = (request(1, 2000), request(2, 10));
    let stream = [m1.clone(), m2.clone()].concat();
    let p = pieces(&stream, &[700, 1400, 2100]);
    assert_eq!(p.len(), 4);
    let isn = u32::MAX - 1000; // the sequence numbers wrap inside m1
    let order = [&p[1], &p[0], &p[0], &p[3], &p[2]];
    let owned: Vec<(usize, &[u8])> = order.iter().map(|(o, b)| (*o, *b)).collect();
    let mut frames = stream_frames(c, s, isn, true, &owned);
    // A segment overlapping what is already in, retransmitted late.
    frames.push(tcp_frame(
        c,
        s,
        isn.wrapping_add(1 + 650),
        "A",
        &stream[650..900],
    ));
    let got = tcp_read(frames);
    assert!(got.error.is_none());
    assert_eq!(raws(&got.packets), vec![m1, m2]);
    assert!(got
        .packets
        .iter()
        .all(|p| p.src == c && p.dst == s && p.transport == Transport::Tcp));
    // m1 completes when its last piece (the fifth frame after the SYN) arrives.
    assert_eq!(got.packets[0].time, at(5, 0));
    assert_eq!(
        got.skipped,
        Skipped {
            tcp_retransmitted: 2,
            ..Skipped::default()
        }
    );
}

#[test]
fn capture_starting_mid_stream_syncs_at_the_next_message() {
    let (c, s) = (addr(CLIENT), addr(SERVER));
    let (m1, m2, m3) = (request(1, 300), request(2, 0), response(2));
    let stream = [m1.clone(), m2.clone(), m3.clone()].concat();
    // The capture begins inside m1's headers.
    let frames = stream_frames(
        c,
        s,
        7_000,
        false,
        &[
            (60, &stream[60..200]),
            (200, &stream[200..m1.len()]),
            (m1.len(), &m2),
            (m1.len() + m2.len(), &m3),
        ],
    );
    let got = tcp_read(frames);
    assert_eq!(raws(&got.packets), vec![m2, m3]);
    assert_eq!(
        got.skipped,
        Skipped {
            non_sip: 2,
            ..Skipped::default()
        }
    );
}

#[test]
fn a_gap_never_filled_is_counted_and_the_stream_resynchronises() {
    let (c, s) = (addr(CLIENT), addr(SERVER));
    let (m1, m2, m3) = (request(1, 3000), request(2, 5), request(3, 0));
    let stream = [m1.clone(), m2.clone(), m3.clone()].concat();
    let a = m1.len();
    let b = a + m2.len();
    let segments = [
        (0, &stream[..1000]),
        // 1000..2000 never captured
        (2000, &stream[2000..a]),
        (a, &stream[a..b]),
        (b, &stream[b..]),
    ];
    let got = tcp_read(stream_frames(c, s, 1, true, &segments));
    assert_eq!(raws(&got.packets), vec![m2.clone(), m3.clone()]);
    assert_eq!(got.skipped.tcp_gaps, 1);
    // The first segment after the gap is the tail of m1: passed over.
    assert_eq!(got.skipped.non_sip, 1);

    // With a small out-of-order bound, the gap is given up on before the
    // capture ends: m2 comes out while the segments are still arriving.
    let limits = Limits {
        max_flow_segments: 2,
        ..Limits::default()
    };
    let mut streams = Streams::default();
    let mut out = std::collections::VecDeque::new();
    let mut skipped = Skipped::default();
    let key = FlowKey { src: c, dst: s };
    let syn = Segment {
        seq: 0,
        syn: true,
        fin: false,
        rst: false,
        data: SegData::Bytes(&[]),
    };
    let mut sink = Sink {
        out: &mut out,
        skipped: &mut skipped,
    };
    streams.segment(key, syn, at(0, 0), &limits, &mut sink);
    for (i, (offset, bytes)) in segments.iter().enumerate() {
        let seg = Segment {
            seq: 1 + *offset as u32,
            data: SegData::Bytes(bytes),
            syn: false,
            ..syn
        };
        streams.segment(key, seg, at(i as u64 + 1, 0), &limits, &mut sink);
    }
    assert_eq!(raws(&Vec::from(out.clone())), vec![m2, m3]);
    assert_eq!(skipped.tcp_gaps, 1);
    assert_eq!(streams.held(), (1, 0));
}

/// A length the framer refuses is counted, not awaited, and its head still
/// reaches the phone's record, which flags it as the live transport does:
/// a gigabyte, or twenty digits (no number at all to the framer).
#[test]
fn a_gigabyte_content_length_is_counted_not_awaited() {
    for length in ["1073741824", "99999999999999999999"] {
        refused_length_is_counted_and_flagged(length);
    }
}

fn refused_length_is_counted_and_flagged(length: &str) {
    let (c, s) = (addr(CLIENT), addr(SERVER));
    let huge =
        format!("INVITE sip:bob@example.com SIP/2.0\r\nContent-Length: {length}\r\n\r\nv=0\r\n")
            .into_bytes();
    let (m2, m3) = (request(2, 10), response(2));
    let mut stream = huge.clone();
    stream.extend(vec![b'x'; 5000]);
    let after = stream.len();
    stream.extend(&m2);
    stream.extend(&m3);
    let segments: Vec<(usize, &[u8])> = vec![
        (0, &stream[..huge.len()]),
        (huge.len(), &stream[huge.len()..after]),
        (after, &stream[after..after + m2.len()]),
        (after + m2.len(), &stream[after + m2.len()..]),
    ];
    let got = tcp_read(stream_frames(c, s, 99, true, &segments));
    assert_eq!(raws(&got.packets), vec![huge, m2, m3], "{length}");
    assert_eq!(got.skipped.unframed, 1);
    assert_eq!(got.skipped.non_sip, 1);
    let phone = std::collections::BTreeMap::from([(s, "60970".to_string())]);
    let flagged = got.packets[0].records_for(&phone, 0);
    let problem = flagged[0].problem.as_deref().unwrap_or_default();
    assert!(problem.contains("Content-Length"), "{length}: {problem:?}");
}

#[test]
fn other_protocols_and_empty_records_are_counted() {
    let (c, s) = (addr(CLIENT), addr(SERVER));
    let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let mut frames = stream_frames(
        c,
        addr("10.1.1.2:80"),
        5,
        true,
        &[(0, &http), (http.len(), &http)],
    );
    frames.push(eth(&[], &udp_ip(c, s, b"\x00\x01 not sip")));
    frames.push(eth(&[], &udp_ip(c, s, b"")));
    // ICMP echo.
    let mut icmp = Vec::new();
    PacketBuilder::ipv4([10, 1, 1, 1], [10, 1, 1, 2], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut icmp, b"ping")
        .unwrap();
    frames.push(eth(&[], &icmp));
    frames.push(eth(&[], &[0x45, 0, 0])); // an IP header cut short
    frames.push(Vec::new());
    let got = tcp_read(frames);
    assert!(got.packets.is_empty());
    assert!(got.error.is_none());
    assert_eq!(
        got.skipped,
        Skipped {
            non_sip: 3,
            other_transport: 1,
            malformed: 1,
            empty: 1,
            ..Skipped::default()
        }
    );
}

#[test]
fn packets_cut_by_the_snap_length() {
    let (c, s) = (addr(CLIENT), addr(SERVER));
    let (m1, m2, m3) = (request(1, 50), request(2, 400), request(3, 5));
    let stream = [m1.clone(), m2.clone(), m3.clone()].concat();
    let (a, b) = (m1.len(), m1.len() + m2.len());
    let frames = stream_frames(
        c,
        s,
        1,
        true,
        &[(0, &stream[..a]), (a, &stream[a..b]), (b, &stream[b..])],
    );
    let snap = 300;
    let mut records: Vec<(SystemTime, Vec<u8>, u32)> = timed(frames)
        .into_iter()
        .map(|(t, f)| {
            let len = f.len() as u32;
            (t, f[..f.len().min(snap)].to_vec(), len)
        })
        .collect();
    let udp = eth(&[], &udp_ip(c, s, &m2));
    records.push((at(9, 0), udp[..snap].to_vec(), udp.len() as u32));
    let got = read_all(legacy(false, false, snap as u32, 1, &records));
    assert!(got.error.is_none());
    assert_eq!(raws(&got.packets), vec![m1, m3]);
    assert_eq!(
        got.skipped,
        Skipped {
            truncated: 2,
            tcp_gaps: 1,
            ..Skipped::default()
        }
    );
}

#[test]
fn flows_and_memory_stay_within_their_limits() {
    let s = addr(SERVER);
    let partial = request(1, 500);
    let mut frames = Vec::new();
    for port in 0..20 {
        let c = SocketAddr::new(addr(CLIENT).ip(), 30_000 + port);
        frames.extend(stream_frames(c, s, 1, true, &[(0, &partial[..300])]));
    }
    let limits = Limits {
        max_flows: 4,
        ..Limits::default()
    };
    let got = read_with(ethernet_pcap(&timed(frames)), limits);
    assert!(got.packets.is_empty());
    assert_eq!(got.skipped.flows_evicted, 16);
    assert_eq!(got.skipped.tcp_incomplete, 20);

    // Out-of-order bytes past the per-flow bound give the hole up; the
    // total bound evicts the least recent flows.
    let limits = Limits {
        max_flow_bytes: 4000,
        max_total_bytes: 10_000,
        ..Limits::default()
    };
    let mut streams = Streams::default();
    let mut out = std::collections::VecDeque::new();
    let mut skipped = Skipped::default();
    let mut sink = Sink {
        out: &mut out,
        skipped: &mut skipped,
    };
    let chunk = [b'z'; 1000];
    for flow in 0..10u16 {
        let key = FlowKey {
            src: SocketAddr::new(addr(CLIENT).ip(), 100 + flow),
            dst: s,
        };
        for i in 0..20u32 {
            let seg = Segment {
                seq: 10_000 + 2000 * i,
                syn: false,
                fin: false,
                rst: false,
                data: SegData::Bytes(&chunk),
            };
            streams.segment(key, seg, at(0, 0), &limits, &mut sink);
            let (_, held) = streams.held();
            assert!(held <= 10_000, "held {held}");
        }
    }
    assert!(skipped.tcp_gaps > 0);
    assert!(skipped.flows_evicted > 0);
}

// ------------------------------------------------------- broken captures

fn small_capture() -> Vec<Packet> {
    vec![
        packet(
            at(1, 0),
            "127.0.0.1:5060",
            "127.0.0.1:5070",
            Transport::Udp,
            request(1, 3),
        ),
        packet(
            at(2, 0),
            "127.0.0.1:40000",
            "127.0.0.1:5070",
            Transport::Tcp,
            request(2, 1500),
        ),
        packet(
            at(3, 0),
            "127.0.0.1:5070",
            "127.0.0.1:40000",
            Transport::Tcp,
            response(2),
        ),
    ]
}

fn small_pcapng() -> Vec<u8> {
    let (a, b) = (addr("10.0.0.1:5060"), addr("10.0.0.2:5060"));
    let mut ng = Ng::default();
    ng.section(false);
    ng.interface(1, Some(9));
    ng.packet(0, 1, &eth(&[0x8100], &udp_ip(a, b, &request(1, 0))));
    ng.block(0x0BAD, &[1, 2, 3]);
    ng.packet(0, 2, &eth(&[], &udp_ip(b, a, &response(1))));
    ng.out
}

#[test]
fn truncated_files_end_with_an_error_at_every_byte() {
    let pcap = written(&small_capture());
    for full in [pcap, small_pcapng()] {
        let whole = read_all(full.clone());
        assert!(whole.error.is_none());
        assert!(!whole.packets.is_empty());
        for cut in 0..full.len() {
            let got = read_all(full[..cut].to_vec());
            assert!(
                matches!(got.error, Some(PcapError::Truncated { .. }))
                    || (got.error.is_none() && got.packets.len() < whole.packets.len()),
                "cut at {cut}: {:?}",
                got.error
            );
            assert!(whole.packets.starts_with(&got.packets), "cut at {cut}");
        }
    }
}

#[test]
fn broken_framing_is_an_error_that_says_where() {
    let mut ng = small_pcapng();
    // The second block's trailing length.
    let shb_len = 28;
    let idb_len = u32::from_le_bytes(ng[shb_len + 4..shb_len + 8].try_into().unwrap()) as usize;
    ng[shb_len + idb_len - 4] ^= 0xff;
    let got = read_all(ng);
    let err = got.error.expect("an error");
    assert!(
        matches!(
            err,
            PcapError::BadBlock {
                block: 2,
                offset: 28,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("block 2 at byte 28"), "{err}");

    let mut pcap = written(&small_capture());
    pcap[24 + 8..24 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = read_all(pcap).error.expect("an error");
    assert!(
        matches!(
            err,
            PcapError::BadRecord {
                packet: 1,
                offset: 24,
                ..
            }
        ),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        read_all(bytes);
    }

    #[test]
    fn arbitrary_records_under_a_valid_header_never_panic(
        linktype in prop::sample::select(vec![0u32, 1, 12, 101, 113, 228, 229, 276]),
        ng in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut bytes = if ng {
            let mut ng = Ng::default();
            ng.section(false);
            ng.interface(linktype as u16, Some(9));
            ng.out
        } else {
            legacy(false, false, 65_535, linktype, &[])
        };
        bytes.extend(body);
        read_all(bytes);
    }

    #[test]
    fn damaged_real_captures_never_panic(
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        ng in any::<bool>(),
    ) {
        let mut bytes = if ng { small_pcapng() } else { written(&small_capture()) };
        for (at, value) in damage {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        read_all(bytes);
    }

    #[test]
    fn tcp_messages_split_anywhere_are_reassembled_exactly(
        bodies in proptest::collection::vec((any::<bool>(), 0usize..3000), 1..6),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
        isn in any::<u32>(),
        keepalives in any::<bool>(),
    ) {
        let messages: Vec<Vec<u8>> = bodies
            .iter()
            .enumerate()
            .map(|(n, (req, body))| if *req { request(n, *body) } else { response(n) })
            .collect();
        let mut stream = Vec::new();
        for m in &messages {
            if keepalives {
                stream.extend(b"\r\n\r\n");
            }
            stream.extend(m);
        }
        let cuts: Vec<usize> = cuts.iter().map(|c| c.index(stream.len())).collect();
        let segments = pieces(&stream, &cuts);
        let frames = stream_frames(addr(CLIENT), addr(SERVER), isn, true, &segments);
        let got = tcp_read(frames);
        prop_assert!(got.error.is_none());
        prop_assert_eq!(raws(&got.packets), messages);
        prop_assert_eq!(got.skipped, Skipped::default());
    }
}

#[test]
fn what_was_skipped_is_said_in_words_and_only_what_is_not_zero() {
    use crate::pcap::Skipped;
    assert_eq!(Skipped::default().to_string(), "nothing skipped");
    let s = Skipped {
        non_sip: 3,
        truncated: 1,
        tcp_gaps: 2,
        ..Skipped::default()
    };
    assert_eq!(
        s.to_string(),
        "skipped 3 non-SIP messages, 1 truncated packet, 2 gaps in TCP streams"
    );
    assert!(!s.to_string().contains("Skipped {"));
}
