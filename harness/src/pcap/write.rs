//! The messages of a case as real frames: Ethernet, IPv4 or IPv6, then UDP,
//! or TCP with a handshake per connection and consistent sequence numbers,
//! in a classic pcap (LINKTYPE_ETHERNET, nanosecond timestamps). SIP over
//! TLS is written as the TCP segments it ran in, on the real ports, its
//! SIP in clear: read back, it is TCP.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etherparse::{IpHeaders, Ipv4Header, Ipv6Header, PacketBuilder, TcpHeader, TcpOptionElement};
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use super::Packet;
use crate::sip::record::{Direction, Record};
use crate::sip::Transport;

/// Largest TCP payload per segment.
pub(crate) const MAX_SEGMENT: usize = 1400;
const SNAPLEN: u32 = 262_144;
const TTL: u8 = 64;
const WINDOW: u16 = 65_535;
/// Largest UDP payload IPv4 (and IPv6 without jumbograms) can carry.
const MAX_UDP_V4: usize = 65_535 - 20 - 8;
const MAX_UDP_V6: usize = 65_535 - 8;

/// Writes the records of one case to `path` (see [`packets_from_records`]
/// and [`write_packets`]).
pub fn write_records(path: &Path, records: &[Record]) -> io::Result<()> {
    let packets = packets_from_records(records);
    write_packets(File::create(path)?, &packets)
}

/// The messages of a case as they crossed the wire, in record order, each
/// once. A record's direction says who sent it: Sent is local -> peer,
/// Received is peer -> local. When both ends recorded a message, the
/// second record is dropped: it has the same transport, IPs and bytes and
/// the other direction, and the same ports, or (on TCP) one side's port
/// differs because the connecting end records its listening port rather
/// than the connection's; the addresses kept are then the ones no endpoint
/// listens on, i.e. the connection's real ephemeral port.
pub fn packets_from_records(records: &[Record]) -> Vec<Packet> {
    let listening: HashSet<SocketAddr> = records.iter().map(|r| r.local).collect();
    let unlisted = |a: SocketAddr, b: SocketAddr| {
        usize::from(!listening.contains(&a)) + usize::from(!listening.contains(&b))
    };
    let mut packets: Vec<Packet> = Vec::new();
    let mut directions: Vec<Direction> = Vec::new();
    type Key<'a> = (Transport, IpAddr, IpAddr, &'a [u8]);
    let mut unmatched: HashMap<Key<'_>, Vec<usize>> = HashMap::new();
    for r in records {
        let (src, dst) = match r.direction {
            Direction::Sent => (r.local, r.peer),
            Direction::Received => (r.peer, r.local),
        };
        let key = (r.transport, src.ip(), dst.ip(), r.raw.as_slice());
        let twin = unmatched.get_mut(&key).and_then(|candidates| {
            let other_end = |i: &usize| directions[*i] != r.direction;
            let exact = candidates
                .iter()
                .position(|i| other_end(i) && packets[*i].src == src && packets[*i].dst == dst);
            let loose = || {
                candidates.iter().position(|i| {
                    r.transport.is_stream()
                        && other_end(i)
                        && (packets[*i].src.port() == src.port()
                            || packets[*i].dst.port() == dst.port())
                })
            };
            exact.or_else(loose).map(|at| candidates.remove(at))
        });
        match twin {
            Some(i) => {
                let p = &mut packets[i];
                if unlisted(src, dst) > unlisted(p.src, p.dst) {
                    p.src = src;
                    p.dst = dst;
                }
            }
            None => {
                unmatched.entry(key).or_default().push(packets.len());
                directions.push(r.direction);
                packets.push(Packet {
                    time: r.at,
                    src,
                    dst,
                    transport: r.transport,
                    raw: r.raw.clone(),
                });
            }
        }
    }
    packets
}

/// Writes `packets` as a classic pcap, one message after another: a UDP
/// datagram each, or TCP segments of at most 1400 bytes (the first message
/// of a connection preceded by its SYN, SYN-ACK, ACK). An empty TCP message
/// writes nothing (it never crosses the wire), and neither does a UDP one
/// too long for an IP datagram (its send fails). Times before 1970 or past
/// 2106 are clamped to what pcap can hold.
pub fn write_packets<W: Write>(out: W, packets: &[Packet]) -> io::Result<()> {
    let mut writer = PacketWriter::new(out)?;
    for p in packets {
        writer.write(p)?;
    }
    writer.finish()
}

/// [`write_packets`] one message at a time, for a capture too big to hold
/// (the benchmark's generator writes a million messages through it).
pub struct PacketWriter<W: Write> {
    writer: PcapWriter<BufWriter<W>>,
    wire: Wire,
}

impl<W: Write> PacketWriter<W> {
    /// Writes the file header.
    pub fn new(out: W) -> io::Result<PacketWriter<W>> {
        let header = PcapHeader {
            version_major: 2,
            version_minor: 4,
            ts_correction: 0,
            ts_accuracy: 0,
            snaplen: SNAPLEN,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            endianness: Endianness::Little,
        };
        let writer = PcapWriter::with_header(BufWriter::new(out), header).map_err(io_error)?;
        Ok(PacketWriter {
            writer,
            wire: Wire::default(),
        })
    }

    /// One message, as its frames.
    pub fn write(&mut self, p: &Packet) -> io::Result<()> {
        let ts = pcap_timestamp(p.time);
        let writer = &mut self.writer;
        self.wire.frames(p, &mut |frame: &[u8]| {
            let len = frame.len() as u32;
            writer
                .write_packet(&PcapPacket::new(ts, len, frame))
                .map(drop)
                .map_err(io_error)
        })
    }

    /// Flushes what is buffered.
    pub fn finish(self) -> io::Result<()> {
        self.writer.into_writer().flush()
    }
}

fn io_error(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other),
    }
}

fn pcap_timestamp(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .min(Duration::new(u64::from(u32::MAX), 999_999_999))
}

/// Next sequence numbers of a connection: [client -> server, server -> client].
#[derive(Debug, Clone, Copy)]
struct Conn {
    next: [u32; 2],
}

/// What the writer remembers between messages.
#[derive(Default)]
struct Wire {
    /// By (client, server).
    conns: HashMap<(SocketAddr, SocketAddr), Conn>,
    ip_id: u16,
    buf: Vec<u8>,
}

type Emit<'a> = dyn FnMut(&[u8]) -> io::Result<()> + 'a;

enum L4 {
    Udp,
    Tcp(TcpHeader),
}

impl Wire {
    fn frames(&mut self, p: &Packet, emit: &mut Emit<'_>) -> io::Result<()> {
        match p.transport {
            Transport::Udp => {
                let max = match family(p.src.ip(), p.dst.ip()) {
                    (IpAddr::V4(_), IpAddr::V4(_)) => MAX_UDP_V4,
                    _ => MAX_UDP_V6,
                };
                if p.raw.len() <= max {
                    emit(self.build(p.src, p.dst, L4::Udp, &p.raw)?)?;
                }
                Ok(())
            }
            // TLS is written as the TCP it runs over, its SIP in clear (the
            // session keys go beside the capture, see `report`).
            Transport::Tcp | Transport::Tls if p.raw.is_empty() => Ok(()),
            Transport::Tcp | Transport::Tls => self.tcp(p, emit),
        }
    }

    fn tcp(&mut self, p: &Packet, emit: &mut Emit<'_>) -> io::Result<()> {
        let (key, dir) = if self.conns.contains_key(&(p.src, p.dst)) {
            ((p.src, p.dst), 0)
        } else if self.conns.contains_key(&(p.dst, p.src)) {
            ((p.dst, p.src), 1)
        } else {
            self.handshake(p.src, p.dst, emit)?;
            ((p.src, p.dst), 0)
        };
        let Some(mut conn) = self.conns.get(&key).copied() else {
            return Ok(());
        };
        let count = p.raw.chunks(MAX_SEGMENT).len();
        for (i, chunk) in p.raw.chunks(MAX_SEGMENT).enumerate() {
            let mut h = TcpHeader::new(p.src.port(), p.dst.port(), conn.next[dir], WINDOW);
            h.ack = true;
            h.acknowledgment_number = conn.next[1 - dir];
            h.psh = i + 1 == count;
            conn.next[dir] = conn.next[dir].wrapping_add(chunk.len() as u32);
            emit(self.build(p.src, p.dst, L4::Tcp(h), chunk)?)?;
        }
        self.conns.insert(key, conn);
        Ok(())
    }

    fn handshake(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        emit: &mut Emit<'_>,
    ) -> io::Result<()> {
        let (c, s) = (isn(client, server), isn(server, client));
        let mss = [TcpOptionElement::MaximumSegmentSize(MAX_SEGMENT as u16)];
        let mut syn = TcpHeader::new(client.port(), server.port(), c, WINDOW);
        syn.syn = true;
        let mut syn_ack = TcpHeader::new(server.port(), client.port(), s, WINDOW);
        syn_ack.syn = true;
        syn_ack.ack = true;
        syn_ack.acknowledgment_number = c.wrapping_add(1);
        for h in [&mut syn, &mut syn_ack] {
            h.set_options(&mss)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let mut ack = TcpHeader::new(client.port(), server.port(), c.wrapping_add(1), WINDOW);
        ack.ack = true;
        ack.acknowledgment_number = s.wrapping_add(1);
        emit(self.build(client, server, L4::Tcp(syn), &[])?)?;
        emit(self.build(server, client, L4::Tcp(syn_ack), &[])?)?;
        emit(self.build(client, server, L4::Tcp(ack), &[])?)?;
        self.conns.insert(
            (client, server),
            Conn {
                next: [c.wrapping_add(1), s.wrapping_add(1)],
            },
        );
        Ok(())
    }

    /// One Ethernet frame; lengths and checksums are filled in.
    fn build(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        l4: L4,
        payload: &[u8],
    ) -> io::Result<&[u8]> {
        self.ip_id = self.ip_id.wrapping_add(1);
        let (s, d) = family(src.ip(), dst.ip());
        let ip = match (s, d) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let h = Ipv4Header {
                    source: s.octets(),
                    destination: d.octets(),
                    time_to_live: TTL,
                    identification: self.ip_id,
                    dont_fragment: matches!(l4, L4::Tcp(_)),
                    ..Ipv4Header::default()
                };
                IpHeaders::Ipv4(h, Default::default())
            }
            (s, d) => {
                let h = Ipv6Header {
                    source: v6(s).octets(),
                    destination: v6(d).octets(),
                    hop_limit: TTL,
                    ..Ipv6Header::default()
                };
                IpHeaders::Ipv6(h, Default::default())
            }
        };
        self.buf.clear();
        let step = PacketBuilder::ethernet2(mac(s), mac(d)).ip(ip);
        let written = match l4 {
            L4::Udp => step
                .udp(src.port(), dst.port())
                .write(&mut self.buf, payload),
            L4::Tcp(h) => step.tcp_header(h).write(&mut self.buf, payload),
        };
        written.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(&self.buf)
    }
}

/// Both addresses in one family: IPv4 if both can be, else IPv6.
fn family(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    let a4 = a.to_canonical();
    let b4 = b.to_canonical();
    match (a4, b4) {
        (IpAddr::V4(_), IpAddr::V4(_)) => (a4, b4),
        _ => (IpAddr::V6(v6(a)), IpAddr::V6(v6(b))),
    }
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// A locally administered MAC made from the address, so each host keeps
/// one.
fn mac(ip: IpAddr) -> [u8; 6] {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [0x02, 0x00, o[0], o[1], o[2], o[3]]
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [0x02, o[11], o[12], o[13], o[14], o[15]]
        }
    }
}

/// A stable initial sequence number per direction (FNV-1a of the
/// addresses), so the same case writes the same capture.
fn isn(src: SocketAddr, dst: SocketAddr) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    for a in [src, dst] {
        match a.ip() {
            IpAddr::V4(ip) => eat(&ip.octets()),
            IpAddr::V6(ip) => eat(&ip.octets()),
        }
        eat(&a.port().to_be_bytes());
    }
    h
}
