//! SIP messages out of a capture: frames, then IP (with fragments), then a
//! UDP datagram each or TCP streams cut into messages.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::SystemTime;

use etherparse::{ip_number, IpNumber, Ipv6ExtensionSlice, LaxIpSlice, TcpSlice, UdpSlice};

use super::file::{Capture, Frame};
use super::frag::{Defrag, FragKey};
use super::link::{self, LinkError};
use super::reassembly::{FlowKey, SegData, Segment, Sink, Streams};
use super::sip::{self, Start};
use super::{Limits, Packet, PcapError, Skipped};
use crate::sip::Transport;

/// Streams SIP messages out of a pcap or pcapng file (told apart by their
/// magic number). Memory is bounded by [`Limits`], whatever the file size.
pub struct Reader {
    capture: Capture<Box<dyn Read>>,
    decoder: Decoder,
    queue: VecDeque<Packet>,
    phase: Phase,
}

enum Phase {
    Reading,
    /// The file has ended; flows still holding bytes are flushed one by
    /// one.
    Draining(VecDeque<FlowKey>),
    Done,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("skipped", &self.decoder.skipped)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader, PcapError> {
        let file = File::open(path).map_err(|source| PcapError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Reader::from_reader(file)
    }

    pub fn from_reader<R: Read + 'static>(r: R) -> Result<Reader, PcapError> {
        Reader::with_limits(r, Limits::default())
    }

    pub fn with_limits<R: Read + 'static>(r: R, limits: Limits) -> Result<Reader, PcapError> {
        Ok(Reader {
            capture: Capture::open(Box::new(r) as Box<dyn Read>)?,
            decoder: Decoder {
                limits,
                skipped: Skipped::default(),
                defrag: Defrag::default(),
                streams: Streams::default(),
            },
            queue: VecDeque::new(),
            phase: Phase::Reading,
        })
    }

    /// The next SIP message: a UDP datagram, reassembled IP fragments, or a
    /// TCP message framed by Content-Length. Ok(None) at the end. A broken
    /// file gives Err saying where, and then Ok(None); garbage inside a
    /// packet is a counted skip, never an Err.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, PcapError> {
        loop {
            if let Some(p) = self.queue.pop_front() {
                return Ok(Some(p));
            }
            match &mut self.phase {
                Phase::Reading => match self.capture.next_frame(&mut self.decoder.skipped) {
                    Ok(Some(frame)) => self.decoder.frame(&frame, &mut self.queue),
                    Ok(None) => self.phase = Phase::Draining(self.decoder.streams.keys().into()),
                    Err(e) => {
                        self.phase = Phase::Done;
                        return Err(e);
                    }
                },
                Phase::Draining(keys) => match keys.pop_front() {
                    Some(key) => {
                        let mut sink = Sink {
                            out: &mut self.queue,
                            skipped: &mut self.decoder.skipped,
                        };
                        self.decoder.streams.finish(key, &mut sink);
                    }
                    None => {
                        self.decoder.defrag.finish(&mut self.decoder.skipped);
                        self.phase = Phase::Done;
                    }
                },
                Phase::Done => return Ok(None),
            }
        }
    }

    /// What was passed over so far.
    pub fn skipped(&self) -> &Skipped {
        &self.decoder.skipped
    }
}

impl Iterator for Reader {
    type Item = Result<Packet, PcapError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_packet().transpose()
    }
}

struct Decoder {
    limits: Limits,
    skipped: Skipped,
    defrag: Defrag,
    streams: Streams,
}

impl Decoder {
    fn frame(&mut self, frame: &Frame<'_>, out: &mut VecDeque<Packet>) {
        if frame.data.is_empty() {
            self.skipped.empty += 1;
            return;
        }
        let cut = (frame.data.len() as u64) < u64::from(frame.orig_len);
        let net = match link::network(frame.linktype, frame.data) {
            Ok(net) => net,
            Err(LinkError::NotIp) => {
                self.skipped.non_ip += 1;
                return;
            }
            Err(LinkError::Short) => return self.broken(cut),
        };
        let Ok((ip, _)) = LaxIpSlice::from_slice(net) else {
            return self.broken(cut);
        };
        let (src, dst) = (ip.source_addr(), ip.destination_addr());
        let payload = ip.payload();
        if payload.fragmented {
            if payload.incomplete {
                // This fragment is cut: its datagram will never complete.
                self.skipped.truncated += 1;
                return;
            }
            let Some((id, offset, more, proto)) = fragment(&ip) else {
                self.skipped.malformed += 1;
                return;
            };
            let key = FragKey {
                src,
                dst,
                id,
                proto: proto.0,
            };
            let whole = self.defrag.add(
                key,
                offset,
                more,
                payload.payload,
                &self.limits,
                &mut self.skipped,
            );
            if let Some(datagram) = whole {
                self.transport(proto, src, dst, &datagram, None, frame.time, out);
            }
            return;
        }
        // When the packet is cut, what its IP header says the payload was.
        let declared = payload.incomplete.then(|| {
            let before_payload = net.len() - payload.payload.len();
            let total = match &ip {
                LaxIpSlice::Ipv4(v4) => usize::from(v4.header().total_len()),
                LaxIpSlice::Ipv6(v6) => 40 + usize::from(v6.header().payload_length()),
            };
            total.saturating_sub(before_payload)
        });
        self.transport(
            payload.ip_number,
            src,
            dst,
            payload.payload,
            declared,
            frame.time,
            out,
        );
    }

    /// Headers that do not decode: cut by the snap length, or garbage.
    fn broken(&mut self, cut: bool) {
        if cut {
            self.skipped.truncated += 1;
        } else {
            self.skipped.malformed += 1;
        }
    }

    /// `bytes` is the IP payload; `declared` its length on the wire if the
    /// capture cut it.
    #[allow(clippy::too_many_arguments)]
    fn transport(
        &mut self,
        proto: IpNumber,
        src: IpAddr,
        dst: IpAddr,
        bytes: &[u8],
        declared: Option<usize>,
        time: SystemTime,
        out: &mut VecDeque<Packet>,
    ) {
        match proto {
            ip_number::UDP => {
                if declared.is_some() {
                    self.skipped.truncated += 1;
                    return;
                }
                let Ok(udp) = UdpSlice::from_slice(bytes) else {
                    self.skipped.malformed += 1;
                    return;
                };
                let payload = udp.payload();
                if sip::start_line(payload, true) != Start::Yes {
                    self.skipped.non_sip += 1;
                    return;
                }
                out.push_back(Packet {
                    time,
                    src: SocketAddr::new(src, udp.source_port()),
                    dst: SocketAddr::new(dst, udp.destination_port()),
                    transport: Transport::Udp,
                    raw: payload.to_vec(),
                });
            }
            ip_number::TCP => {
                let Ok(tcp) = TcpSlice::from_slice(bytes) else {
                    return self.broken(declared.is_some());
                };
                let data = match declared {
                    None => SegData::Bytes(tcp.payload()),
                    Some(len) => {
                        self.skipped.truncated += 1;
                        let missing = len.saturating_sub(tcp.header_len());
                        SegData::Missing(u32::try_from(missing).unwrap_or(u32::MAX))
                    }
                };
                let key = FlowKey {
                    src: SocketAddr::new(src, tcp.source_port()),
                    dst: SocketAddr::new(dst, tcp.destination_port()),
                };
                let seg = Segment {
                    seq: tcp.sequence_number(),
                    syn: tcp.syn(),
                    fin: tcp.fin(),
                    rst: tcp.rst(),
                    data,
                };
                let mut sink = Sink {
                    out,
                    skipped: &mut self.skipped,
                };
                self.streams
                    .segment(key, seg, time, &self.limits, &mut sink);
            }
            _ => self.skipped.other_transport += 1,
        }
    }
}

/// Identification, byte offset, more-fragments flag and protocol of a
/// fragment.
fn fragment(ip: &LaxIpSlice<'_>) -> Option<(u32, usize, bool, IpNumber)> {
    match ip {
        LaxIpSlice::Ipv4(v4) => {
            let h = v4.header();
            Some((
                u32::from(h.identification()),
                usize::from(h.fragments_offset().byte_offset()),
                h.more_fragments(),
                h.protocol(),
            ))
        }
        LaxIpSlice::Ipv6(v6) => v6
            .extensions()
            .clone()
            .into_iter()
            .find_map(|ext| match ext {
                Ipv6ExtensionSlice::Fragment(f) => Some((
                    f.identification(),
                    usize::from(f.fragment_offset().byte_offset()),
                    f.more_fragments(),
                    f.next_header(),
                )),
                _ => None,
            }),
    }
}
