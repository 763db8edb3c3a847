//! The capture container: pcap (both byte orders, micro and nano, and the
//! "modified" variant) or pcapng, read through a buffer no larger than the
//! largest record allowed. pcap-parser decodes the records and blocks; this
//! module frames them, so it can bound them, skip the ones it does not want
//! and say where a broken file broke.

use std::io::{self, Read};
use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_parser::pcapng::{
    parse_enhancedpacketblock_be, parse_enhancedpacketblock_le, parse_interfacedescriptionblock_be,
    parse_interfacedescriptionblock_le, parse_sectionheaderblock, parse_simplepacketblock_be,
    parse_simplepacketblock_le, OptionCode,
};
use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::{parse_pcap_frame, parse_pcap_frame_be, parse_pcap_frame_modified};

use super::{PcapError, Skipped};

/// Largest record (pcap) or block (pcapng) read into memory. A pcapng
/// block over it is skipped unread; a pcap record over it means the file is
/// broken (pcap has no other way to tell).
pub(crate) const MAX_RECORD: usize = 1024 * 1024;
/// Interfaces described in one pcapng section that we keep.
const MAX_INTERFACES: usize = 4096;
/// How much to ask the source for at a time.
const READ_CHUNK: usize = 64 * 1024;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 1;
const SPB: u32 = 3;
const EPB: u32 = 6;
/// Offsets of the packet bytes inside their blocks.
const EPB_DATA: usize = 28;
const SPB_DATA: usize = 12;

/// Legacy pcap magic numbers, read little-endian: micro, nano, modified;
/// then micro and nano written big-endian.
const PCAP_MAGICS: [u32; 5] = [
    0xa1b2_c3d4,
    0xa1b2_3c4d,
    0xa1b2_cd34,
    0xd4c3_b2a1,
    0x4d3c_b2a1,
];

/// One captured frame.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub time: SystemTime,
    pub linktype: u32,
    pub data: &'a [u8],
    /// Its length on the wire (more than `data.len()` if cut by the snap
    /// length).
    pub orig_len: u32,
}

/// Bytes from the source, with the file offset of the first one held.
struct Input<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    offset: u64,
    eof: bool,
}

impl<R: Read> Input<R> {
    fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Makes `n` bytes available unless the source ends first; returns how
    /// many are.
    fn fill(&mut self, n: usize) -> Result<usize, PcapError> {
        while self.end - self.start < n && !self.eof {
            let want = n.max(READ_CHUNK);
            if self.buf.len() - self.start < want {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                if self.buf.len() < want {
                    self.buf.resize(want, 0);
                }
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end = (self.end + k).min(self.buf.len()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(PcapError::Io {
                        offset: self.offset + (self.end - self.start) as u64,
                        source,
                    })
                }
            }
        }
        Ok(self.end - self.start)
    }

    fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.start += n;
        self.offset += n as u64;
    }

    /// Discards `n` bytes without holding them; false if the source ended
    /// first.
    fn skip(&mut self, n: u64) -> Result<bool, PcapError> {
        let held = n.min((self.end - self.start) as u64);
        self.consume(held as usize);
        let rest = n - held;
        if rest == 0 {
            return Ok(true);
        }
        let copied =
            io::copy(&mut (&mut self.inner).take(rest), &mut io::sink()).map_err(|source| {
                PcapError::Io {
                    offset: self.offset,
                    source,
                }
            })?;
        self.offset += copied;
        if copied < rest {
            self.eof = true;
            return Ok(false);
        }
        Ok(true)
    }
}

#[derive(Debug, Clone, Copy)]
struct Iface {
    linktype: u32,
    snaplen: u32,
    /// Timestamp units per second.
    units: u64,
    /// Seconds to add to every timestamp.
    offset: i64,
}

enum Format {
    Pcap {
        be: bool,
        nanos: bool,
        modified: bool,
        linktype: u32,
    },
    PcapNg {
        be: bool,
        ifaces: Vec<Iface>,
    },
}

/// What the next record or block turned out to be.
enum Next {
    End,
    Skip,
    Packet {
        time: SystemTime,
        linktype: u32,
        data: Range<usize>,
        orig_len: u32,
    },
}

/// A capture file being read, frame by frame.
pub(crate) struct Capture<R> {
    input: Input<R>,
    format: Format,
    /// Packet records or blocks met so far (for error messages).
    packets: u64,
    /// pcapng blocks met so far.
    blocks: u64,
    /// A simple packet block has no time: it gets the last one seen.
    last_time: SystemTime,
}

fn u32_at(bytes: &[u8], at: usize, be: bool) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = bytes.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    if be {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

impl<R: Read> Capture<R> {
    /// Reads the file header (pcap) or checks the first block (pcapng).
    pub(crate) fn open(inner: R) -> Result<Capture<R>, PcapError> {
        let mut input = Input {
            inner,
            buf: Vec::new(),
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
        };
        let n = input.fill(24)?;
        let head = input.available();
        let truncated = PcapError::Truncated {
            what: "file header",
            offset: 0,
            packets: 0,
        };
        if n < 4 {
            return Err(truncated);
        }
        let magic = u32_at(head, 0, false);
        let format = if magic == SHB {
            if n < 12 {
                return Err(truncated);
            }
            Format::PcapNg {
                be: section_be(head).ok_or_else(|| unknown_bom(1, 0))?,
                ifaces: Vec::new(),
            }
        } else if PCAP_MAGICS.contains(&magic) {
            if n < 24 {
                return Err(truncated);
            }
            let header = pcap_parser::parse_pcap_header(&head[..24])
                .map_err(|_| PcapError::UnknownFormat {
                    magic: head[..4].to_vec(),
                })?
                .1;
            let format = Format::Pcap {
                be: header.is_bigendian(),
                nanos: header.is_nanosecond_precision(),
                modified: header.is_modified_format(),
                // The upper bits may carry FCS information.
                linktype: (header.network.0 as u32) & 0xffff,
            };
            input.consume(24);
            format
        } else {
            return Err(PcapError::UnknownFormat {
                magic: head[..4].to_vec(),
            });
        };
        Ok(Capture {
            input,
            format,
            packets: 0,
            blocks: 0,
            last_time: UNIX_EPOCH,
        })
    }

    /// The next packet frame; Ok(None) at the end of the file.
    pub(crate) fn next_frame(
        &mut self,
        skipped: &mut Skipped,
    ) -> Result<Option<Frame<'_>>, PcapError> {
        loop {
            let next = match self.format {
                Format::Pcap { .. } => self.next_record()?,
                Format::PcapNg { .. } => self.next_block(skipped)?,
            };
            match next {
                Next::End => return Ok(None),
                Next::Skip => continue,
                Next::Packet {
                    time,
                    linktype,
                    data,
                    orig_len,
                } => {
                    self.last_time = time;
                    return Ok(Some(Frame {
                        time,
                        linktype,
                        data: self.input.buf.get(data).unwrap_or_default(),
                        orig_len,
                    }));
                }
            }
        }
    }

    fn next_record(&mut self) -> Result<Next, PcapError> {
        let Format::Pcap {
            be,
            nanos,
            modified,
            linktype,
        } = self.format
        else {
            return Ok(Next::End);
        };
        let header_len = if modified { 24 } else { 16 };
        let at = self.input.offset;
        let n = self.input.fill(header_len)?;
        if n == 0 {
            return Ok(Next::End);
        }
        let truncated = |what| PcapError::Truncated {
            what,
            offset: at,
            packets: self.packets,
        };
        if n < header_len {
            return Err(truncated("packet header"));
        }
        let caplen = u32_at(self.input.available(), 8, be) as usize;
        let number = self.packets + 1;
        if caplen > MAX_RECORD {
            return Err(PcapError::BadRecord {
                packet: number,
                offset: at,
                reason: format!("captured length {caplen} is over the {MAX_RECORD}-byte limit"),
            });
        }
        let total = header_len + caplen;
        if self.input.fill(total)? < total {
            return Err(truncated("packet data"));
        }
        self.packets = number;
        let record = &self.input.available()[..total];
        let parsed = if modified {
            parse_pcap_frame_modified(record)
        } else if be {
            parse_pcap_frame_be(record)
        } else {
            parse_pcap_frame(record)
        };
        let next = match parsed {
            Ok((_, block)) => {
                let start = self.input.start + header_len;
                Next::Packet {
                    time: pcap_time(block.ts_sec, block.ts_usec, nanos),
                    linktype,
                    data: start..start + block.data.len(),
                    orig_len: block.origlen,
                }
            }
            Err(_) => Next::Skip,
        };
        self.input.consume(total);
        Ok(next)
    }

    fn next_block(&mut self, skipped: &mut Skipped) -> Result<Next, PcapError> {
        let at = self.input.offset;
        let number = self.blocks + 1;
        let truncated = |what, packets| PcapError::Truncated {
            what,
            offset: at,
            packets,
        };
        let n = self.input.fill(12)?;
        if n == 0 {
            return Ok(Next::End);
        }
        if n < 8 {
            return Err(truncated("block header", self.packets));
        }
        let Format::PcapNg { be, ifaces } = &mut self.format else {
            return Ok(Next::End);
        };
        let head = &self.input.buf[self.input.start..self.input.end];
        let is_shb = u32_at(head, 0, false) == SHB;
        if is_shb {
            if n < 12 {
                return Err(truncated("section header", self.packets));
            }
            *be = section_be(head).ok_or_else(|| unknown_bom(number, at))?;
            ifaces.clear();
        }
        let be = *be;
        let block_type = u32_at(head, 0, be);
        let len = u32_at(head, 4, be) as usize;
        if len < 12 || !len.is_multiple_of(4) {
            return Err(PcapError::BadBlock {
                block: number,
                offset: at,
                reason: format!("block length {len} is not a multiple of 4 of at least 12"),
            });
        }
        let is_packet = matches!(block_type, EPB | SPB);
        if len > MAX_RECORD {
            if !self.input.skip(len as u64)? {
                return Err(truncated("block", self.packets));
            }
            self.blocks = number;
            self.packets += u64::from(is_packet);
            skipped.oversize += 1;
            return Ok(Next::Skip);
        }
        if self.input.fill(len)? < len {
            return Err(truncated("block", self.packets));
        }
        let start = self.input.start;
        let block = &self.input.buf[start..start + len];
        if u32_at(block, len - 4, be) as usize != len {
            return Err(PcapError::BadBlock {
                block: number,
                offset: at,
                reason: "its trailing length differs from its leading one".into(),
            });
        }
        self.blocks = number;
        self.packets += u64::from(is_packet);
        let next = match block_type {
            SHB => match parse_sectionheaderblock(block) {
                Ok((_, shb)) if shb.major_version != 1 => {
                    return Err(PcapError::BadBlock {
                        block: number,
                        offset: at,
                        reason: format!(
                            "section version {}.{} is not supported",
                            shb.major_version, shb.minor_version
                        ),
                    })
                }
                Ok(_) => Next::Skip,
                Err(_) => {
                    skipped.malformed += 1;
                    Next::Skip
                }
            },
            IDB => {
                let parsed = if be {
                    parse_interfacedescriptionblock_be(block)
                } else {
                    parse_interfacedescriptionblock_le(block)
                };
                let iface = match parsed {
                    Ok((_, idb)) => {
                        let offset = idb
                            .options
                            .iter()
                            .find(|o| o.code == OptionCode::IfTsoffset)
                            .and_then(|o| o.value().get(..8))
                            .map_or(0, |v| {
                                let mut b = [0u8; 8];
                                b.copy_from_slice(v);
                                if be {
                                    i64::from_be_bytes(b)
                                } else {
                                    i64::from_le_bytes(b)
                                }
                            });
                        let units = units_per_second(idb.if_tsresol).unwrap_or_else(|| {
                            skipped.malformed += 1;
                            1_000_000
                        });
                        Iface {
                            linktype: idb.linktype.0 as u32,
                            snaplen: idb.snaplen,
                            units,
                            offset,
                        }
                    }
                    Err(_) => {
                        // Keep the numbering of the interfaces after it.
                        skipped.malformed += 1;
                        Iface {
                            linktype: u32::MAX,
                            snaplen: 0,
                            units: 1_000_000,
                            offset: 0,
                        }
                    }
                };
                if ifaces.len() < MAX_INTERFACES {
                    ifaces.push(iface);
                } else {
                    skipped.malformed += 1;
                }
                Next::Skip
            }
            EPB => {
                let parsed = if be {
                    parse_enhancedpacketblock_be(block)
                } else {
                    parse_enhancedpacketblock_le(block)
                };
                match parsed {
                    Ok((_, epb)) => match ifaces.get(epb.if_id as usize) {
                        Some(iface) => {
                            let ts = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                            let data = start + EPB_DATA;
                            Next::Packet {
                                time: ng_time(ts, iface.units, iface.offset),
                                linktype: iface.linktype,
                                data: data..data + epb.packet_data().len(),
                                orig_len: epb.origlen,
                            }
                        }
                        None => {
                            skipped.malformed += 1;
                            Next::Skip
                        }
                    },
                    Err(_) => {
                        skipped.malformed += 1;
                        Next::Skip
                    }
                }
            }
            SPB => {
                let parsed = if be {
                    parse_simplepacketblock_be(block)
                } else {
                    parse_simplepacketblock_le(block)
                };
                match (parsed, ifaces.first()) {
                    (Ok((_, spb)), Some(iface)) => {
                        let mut caplen = spb.packet_data().len();
                        if iface.snaplen > 0 {
                            caplen = caplen.min(iface.snaplen as usize);
                        }
                        let data = start + SPB_DATA;
                        Next::Packet {
                            time: self.last_time,
                            linktype: iface.linktype,
                            data: data..data + caplen,
                            orig_len: spb.origlen,
                        }
                    }
                    _ => {
                        skipped.malformed += 1;
                        Next::Skip
                    }
                }
            }
            _ => Next::Skip,
        };
        self.input.consume(len);
        Ok(next)
    }
}

/// The byte order of a section, from its header's byte-order magic.
fn section_be(shb: &[u8]) -> Option<bool> {
    match shb.get(8..12)? {
        [0x4d, 0x3c, 0x2b, 0x1a] => Some(false),
        [0x1a, 0x2b, 0x3c, 0x4d] => Some(true),
        _ => None,
    }
}

fn unknown_bom(block: u64, offset: u64) -> PcapError {
    PcapError::BadBlock {
        block,
        offset,
        reason: "section header with an unknown byte-order magic".into(),
    }
}

/// `if_tsresol`: a power of 10, or of 2 if the top bit is set.
fn units_per_second(tsresol: u8) -> Option<u64> {
    let exp = u32::from(tsresol & 0x7f);
    if tsresol & 0x80 == 0 {
        10u64.checked_pow(exp)
    } else {
        1u64.checked_shl(exp)
    }
}

fn pcap_time(secs: u32, frac: u32, nanos: bool) -> SystemTime {
    let frac = if nanos {
        u64::from(frac)
    } else {
        u64::from(frac) * 1000
    };
    Duration::from_secs(u64::from(secs))
        .checked_add(Duration::from_nanos(frac))
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .unwrap_or(UNIX_EPOCH)
}

fn ng_time(ts: u64, units: u64, offset: i64) -> SystemTime {
    let units = units.max(1);
    let nanos = (u128::from(ts % units) * 1_000_000_000 / u128::from(units)) as u64;
    let t = UNIX_EPOCH
        .checked_add(Duration::from_secs(ts / units))
        .and_then(|t| t.checked_add(Duration::from_nanos(nanos)));
    let shift = Duration::from_secs(offset.unsigned_abs());
    let t = if offset >= 0 {
        t.and_then(|t| t.checked_add(shift))
    } else {
        t.and_then(|t| t.checked_sub(shift))
    };
    t.unwrap_or(UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_resolutions() {
        assert_eq!(units_per_second(6), Some(1_000_000));
        assert_eq!(units_per_second(9), Some(1_000_000_000));
        assert_eq!(units_per_second(0x80 | 10), Some(1024));
        assert_eq!(units_per_second(20), None);
        assert_eq!(units_per_second(0x80 | 64), None);
        let t = ng_time(1_500_000_000_123_456_789, 1_000_000_000, 0);
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1_500_000_000, 123_456_789)
        );
        let t = ng_time(3 * 1024 + 512, 1024, -1);
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(ng_time(u64::MAX, 1, i64::MIN), UNIX_EPOCH);
        assert_eq!(
            pcap_time(7, 999_999, false)
                .duration_since(UNIX_EPOCH)
                .unwrap(),
            Duration::new(7, 999_999_000)
        );
        // A fraction past one second is carried, not a panic.
        assert_eq!(
            pcap_time(7, u32::MAX, false)
                .duration_since(UNIX_EPOCH)
                .unwrap(),
            Duration::new(7 + 4294, 967_295_000)
        );
    }

    /// A source that hands out one byte per read.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(slot)) => {
                    *slot = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn input_fills_from_short_reads_and_skips() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
        let mut input = Input {
            inner: Trickle(&bytes),
            buf: Vec::new(),
            start: 0,
            end: 0,
            offset: 0,
            eof: false,
        };
        assert_eq!(input.fill(10).unwrap(), 10);
        assert_eq!(input.available(), &bytes[..10]);
        input.consume(4);
        assert!(input.skip(100_000).unwrap());
        assert_eq!(input.offset, 100_004);
        assert_eq!(input.fill(70_000).unwrap(), 70_000);
        assert_eq!(input.available()[0], bytes[100_004]);
        assert!(!input.skip(150_000).unwrap());
        assert_eq!(input.fill(1).unwrap(), 0);
    }
}
