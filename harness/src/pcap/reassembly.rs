//! TCP streams back into SIP messages: per-direction reassembly by sequence
//! number, then the live transport's [`StreamFramer`].
//!
//! A flow is synchronised when its bytes are known to start at a message
//! boundary: right after a SYN, or at a segment that begins with a whole
//! SIP start line (a capture that starts mid-stream, or after a gap). Until
//! then its bytes are passed over. Out-of-order segments wait in a bounded buffer; a
//! hole that is never filled (the buffer's bound is reached, or the capture
//! ends) is counted as a gap, and the flow resynchronises after it. Memory
//! is bounded per flow, in flow count and in total.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::SystemTime;

use super::sip::{self, Start};
use super::{Limits, Packet, Skipped};
use crate::sip::framing::{StreamFramer, MAX_HEADER_BYTES};
use crate::sip::Transport;

/// One direction of one TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FlowKey {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// What a segment carried.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SegData<'a> {
    Bytes(&'a [u8]),
    /// This many payload bytes were on the wire but not captured.
    Missing(u32),
}

impl SegData<'_> {
    fn len(&self) -> usize {
        match self {
            SegData::Bytes(b) => b.len(),
            SegData::Missing(n) => *n as usize,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment<'a> {
    pub seq: u32,
    pub syn: bool,
    pub fin: bool,
    pub rst: bool,
    pub data: SegData<'a>,
}

/// Where decoded messages and counts go.
pub(crate) struct Sink<'a> {
    pub out: &'a mut VecDeque<Packet>,
    pub skipped: &'a mut Skipped,
}

#[derive(Debug)]
enum Mode {
    /// Bytes start at a message boundary but the first line is not yet
    /// whole; `known_start` if that boundary is the stream's start (SYN).
    Probe { head: Vec<u8>, known_start: bool },
    /// Bytes go to the framer.
    Synced,
    /// Waiting for a segment that starts a SIP message.
    Hunting,
    /// The stream started with something other than SIP.
    Ignored,
    /// FIN or RST: nothing more until a new SYN.
    Closed,
}

#[derive(Debug)]
struct Held {
    data: Vec<u8>,
    time: SystemTime,
}

#[derive(Debug)]
struct Flow {
    /// Sequence number of the SYN, if seen.
    isn: Option<u32>,
    /// Whether `next_seq` means anything yet.
    started: bool,
    /// Sequence number of the next byte expected in order...
    next_seq: u32,
    /// ...and its position in the stream (wrap-free).
    next_pos: u64,
    /// Stream position of the FIN.
    fin_at: Option<u64>,
    /// Segments ahead of `next_pos`, by stream position.
    ooo: BTreeMap<u64, Held>,
    ooo_bytes: usize,
    mode: Mode,
    framer: StreamFramer,
    /// Recency, for eviction.
    tick: u64,
}

impl Flow {
    fn new() -> Flow {
        Flow {
            isn: None,
            started: false,
            next_seq: 0,
            next_pos: 0,
            fin_at: None,
            ooo: BTreeMap::new(),
            ooo_bytes: 0,
            mode: Mode::Hunting,
            framer: StreamFramer::default(),
            tick: 0,
        }
    }

    /// Bytes this flow holds.
    fn held(&self) -> usize {
        let head = match &self.mode {
            Mode::Probe { head, .. } => head.len(),
            _ => 0,
        };
        self.ooo_bytes + self.framer.pending() + head
    }

    /// Whether it holds part of a message (or bytes it may never place).
    fn partial(&self) -> bool {
        self.held() > 0
    }

    fn segment(
        &mut self,
        key: FlowKey,
        seg: Segment<'_>,
        now: SystemTime,
        limits: &Limits,
        sink: &mut Sink<'_>,
    ) {
        let mut seq = seg.seq;
        if seg.syn {
            if self.isn != Some(seg.seq) {
                // A new connection on this 4-tuple (or the first SYN seen).
                if self.partial() {
                    sink.skipped.tcp_incomplete += 1;
                }
                *self = Flow {
                    isn: Some(seg.seq),
                    started: true,
                    next_seq: seg.seq.wrapping_add(1),
                    mode: Mode::Probe {
                        head: Vec::new(),
                        known_start: true,
                    },
                    tick: self.tick,
                    ..Flow::new()
                };
            }
            seq = seg.seq.wrapping_add(1);
        }
        if matches!(self.mode, Mode::Closed | Mode::Ignored) {
            return;
        }
        if seg.rst {
            self.close(sink);
            return;
        }
        if !self.started {
            // The capture starts mid-stream.
            self.started = true;
            self.next_seq = seq;
            self.next_pos = 0;
        }
        let len = seg.data.len() as i64;
        let pos = self.next_pos as i64 + i64::from(seq.wrapping_sub(self.next_seq) as i32);
        if seg.fin {
            self.fin_at = Some((pos + len).max(0) as u64);
        }
        let next = self.next_pos as i64;
        if len > 0 {
            if pos + len <= next {
                sink.skipped.tcp_retransmitted += 1;
            } else if pos <= next {
                let skip = (next - pos) as usize;
                match seg.data {
                    SegData::Bytes(b) => self.advance(key, &b[skip..], skip == 0, now, sink),
                    SegData::Missing(_) => {
                        // The next bytes are known lost: a gap right here.
                        sink.skipped.tcp_gaps += 1;
                        self.lose_sync();
                        self.skip_to((pos + len) as u64);
                    }
                }
                self.drain(key, Some(now), sink);
            } else if let SegData::Bytes(b) = seg.data {
                let at = pos as u64;
                let longer = self.ooo.get(&at).is_none_or(|h| h.data.len() < b.len());
                if longer {
                    let old = self.ooo.insert(
                        at,
                        Held {
                            data: b.to_vec(),
                            time: now,
                        },
                    );
                    self.ooo_bytes += b.len() - old.map_or(0, |h| h.data.len());
                }
                while self.ooo_bytes > limits.max_flow_bytes
                    || self.ooo.len() > limits.max_flow_segments
                {
                    self.gap(key, Some(now), sink);
                }
            }
        }
        if self.fin_at.is_some_and(|f| self.next_pos >= f) {
            self.close(sink);
        }
    }

    /// Moves `next` to `pos` without delivering what lies between.
    fn skip_to(&mut self, pos: u64) {
        let jump = pos.saturating_sub(self.next_pos);
        self.next_seq = self.next_seq.wrapping_add(jump as u32);
        self.next_pos += jump;
    }

    /// Delivers in-order bytes.
    fn advance(
        &mut self,
        key: FlowKey,
        bytes: &[u8],
        seg_start: bool,
        time: SystemTime,
        sink: &mut Sink<'_>,
    ) {
        self.next_pos += bytes.len() as u64;
        self.next_seq = self.next_seq.wrapping_add(bytes.len() as u32);
        self.deliver(key, bytes, seg_start, time, sink);
    }

    /// Delivers held segments that are now in order. `now` is the time of
    /// the frame that filled the hole, or None at the end of the capture
    /// (each segment then keeps its own).
    fn drain(&mut self, key: FlowKey, now: Option<SystemTime>, sink: &mut Sink<'_>) {
        while let Some(entry) = self.ooo.first_entry() {
            let pos = *entry.key();
            if pos > self.next_pos {
                break;
            }
            let held = entry.remove();
            self.ooo_bytes -= held.data.len();
            let end = pos + held.data.len() as u64;
            if end <= self.next_pos {
                sink.skipped.tcp_retransmitted += 1;
                continue;
            }
            let skip = (self.next_pos - pos) as usize;
            let time = now.unwrap_or(held.time);
            self.advance(key, &held.data[skip..], skip == 0, time, sink);
        }
    }

    /// Gives up on the hole before the first held segment.
    fn gap(&mut self, key: FlowKey, now: Option<SystemTime>, sink: &mut Sink<'_>) {
        let Some(&pos) = self.ooo.keys().next() else {
            return;
        };
        sink.skipped.tcp_gaps += 1;
        self.lose_sync();
        self.skip_to(pos);
        self.drain(key, now, sink);
    }

    /// The bytes ahead no longer continue what the framer holds.
    fn lose_sync(&mut self) {
        match self.mode {
            Mode::Synced | Mode::Probe { .. } => {
                self.framer.take_pending();
                self.mode = Mode::Hunting;
            }
            Mode::Hunting | Mode::Ignored | Mode::Closed => {}
        }
    }

    fn deliver(
        &mut self,
        key: FlowKey,
        bytes: &[u8],
        seg_start: bool,
        time: SystemTime,
        sink: &mut Sink<'_>,
    ) {
        if bytes.is_empty() {
            return;
        }
        match self.mode {
            Mode::Ignored | Mode::Closed => {}
            Mode::Hunting if !seg_start => sink.skipped.non_sip += 1,
            Mode::Hunting => {
                self.mode = Mode::Probe {
                    head: Vec::new(),
                    known_start: false,
                };
                self.probe(key, bytes, time, sink);
            }
            Mode::Probe { .. } => self.probe(key, bytes, time, sink),
            Mode::Synced => {
                self.framer.push(bytes);
                self.frame(key, time, sink);
            }
        }
    }

    /// Decides from the first line whether the stream (from here) is SIP.
    fn probe(&mut self, key: FlowKey, bytes: &[u8], time: SystemTime, sink: &mut Sink<'_>) {
        let Mode::Probe { head, known_start } = &mut self.mode else {
            return;
        };
        head.extend_from_slice(bytes);
        if head.iter().all(|b| *b == b'\r' || *b == b'\n') {
            // Keep-alives before the first message.
            head.clear();
            return;
        }
        match sip::start_line(head, false) {
            Start::Yes => {
                let head = std::mem::take(head);
                self.mode = Mode::Synced;
                self.framer.push(&head);
                self.frame(key, time, sink);
            }
            // Only a stream's real start may take its first line from
            // several segments: mid-stream, a body that happens to look like
            // the start of a request line would otherwise glue itself to the
            // message that follows.
            Start::NeedMore if *known_start && head.len() <= sip::MAX_START_LINE => {}
            Start::NeedMore | Start::No => {
                sink.skipped.non_sip += 1;
                self.mode = if *known_start {
                    Mode::Ignored
                } else {
                    Mode::Hunting
                };
            }
        }
    }

    /// Takes every whole message out of the framer.
    fn frame(&mut self, key: FlowKey, time: SystemTime, sink: &mut Sink<'_>) {
        while let Some(next) = self.framer.next_message() {
            match next {
                Ok(raw) if sip::start_line(&raw, true) == Start::Yes => {
                    sink.out.push_back(Packet {
                        time,
                        src: key.src,
                        dst: key.dst,
                        transport: Transport::Tcp,
                        raw,
                    });
                }
                Ok(_) => {
                    sink.skipped.non_sip += 1;
                    self.lose_sync();
                    return;
                }
                Err(_) => {
                    sink.skipped.unframed += 1;
                    // What the framer refused is still a message someone
                    // sent: its head goes on, as the live transport records
                    // it, so that the phone at its end reports the length
                    // (the codec refuses it by the framer's rule).
                    let mut head = self.framer.take_pending();
                    head.truncate(MAX_HEADER_BYTES);
                    if sip::start_line(&head, true) == Start::Yes {
                        sink.out.push_back(Packet {
                            time,
                            src: key.src,
                            dst: key.dst,
                            transport: Transport::Tcp,
                            raw: head,
                        });
                    }
                    self.lose_sync();
                    return;
                }
            }
        }
    }

    /// FIN reached or RST: what is held will never complete.
    fn close(&mut self, sink: &mut Sink<'_>) {
        if self.partial() {
            sink.skipped.tcp_incomplete += 1;
        }
        self.framer.take_pending();
        self.ooo.clear();
        self.ooo_bytes = 0;
        self.mode = Mode::Closed;
    }

    /// The end of the capture: holes are gaps, partial messages incomplete.
    fn finish(&mut self, key: FlowKey, sink: &mut Sink<'_>) {
        while !self.ooo.is_empty() {
            self.gap(key, None, sink);
        }
        if self.partial() {
            sink.skipped.tcp_incomplete += 1;
        }
        self.framer.take_pending();
        self.mode = Mode::Closed;
    }
}

/// Every TCP flow of a capture.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    flows: HashMap<FlowKey, Flow>,
    /// Flows by recency, least recent first.
    lru: BTreeMap<u64, FlowKey>,
    tick: u64,
    /// Bytes held across all flows.
    held: usize,
}

impl Streams {
    pub(crate) fn segment(
        &mut self,
        key: FlowKey,
        seg: Segment<'_>,
        now: SystemTime,
        limits: &Limits,
        sink: &mut Sink<'_>,
    ) {
        self.tick += 1;
        if let Some(flow) = self.flows.get(&key) {
            self.lru.remove(&flow.tick);
        } else {
            while self.flows.len() >= limits.max_flows.max(1) {
                self.evict_oldest(sink);
            }
            self.flows.insert(key, Flow::new());
        }
        self.lru.insert(self.tick, key);
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        flow.tick = self.tick;
        let before = flow.held();
        flow.segment(key, seg, now, limits, sink);
        self.held = self.held.saturating_sub(before) + flow.held();
        while self.held > limits.max_total_bytes && self.lru.len() > 1 {
            self.evict_oldest(sink);
        }
    }

    fn evict_oldest(&mut self, sink: &mut Sink<'_>) {
        let Some((_, key)) = self.lru.pop_first() else {
            return;
        };
        if let Some(flow) = self.flows.remove(&key) {
            self.held = self.held.saturating_sub(flow.held());
            sink.skipped.flows_evicted += 1;
            if flow.partial() {
                sink.skipped.tcp_incomplete += 1;
            }
        }
    }

    /// Flows by recency, least recent first (the order [`Self::finish`]
    /// should see them in).
    pub(crate) fn keys(&self) -> Vec<FlowKey> {
        self.lru.values().copied().collect()
    }

    /// The end of the capture for one flow: it is flushed and forgotten.
    pub(crate) fn finish(&mut self, key: FlowKey, sink: &mut Sink<'_>) {
        if let Some(mut flow) = self.flows.remove(&key) {
            self.lru.remove(&flow.tick);
            self.held = self.held.saturating_sub(flow.held());
            flow.finish(key, sink);
        }
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.flows.len(), self.held)
    }
}
