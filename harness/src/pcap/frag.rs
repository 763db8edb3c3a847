//! IP fragment reassembly (IPv4, and IPv6 fragment headers), in a pool
//! bounded by datagram count and bytes: the oldest incomplete datagram is
//! dropped (and counted) to make room.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use super::{Limits, Skipped};

/// An IP payload is at most this long (no jumbograms).
const MAX_DATAGRAM: usize = 65_535;

/// Which datagram a fragment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FragKey {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub id: u32,
    pub proto: u8,
}

#[derive(Debug)]
struct Pending {
    data: Vec<u8>,
    /// Byte ranges received, sorted and merged.
    have: Vec<(usize, usize)>,
    /// Length of the whole datagram, once its last fragment came.
    total: Option<usize>,
    tick: u64,
}

impl Pending {
    fn complete(&self) -> bool {
        self.total
            .is_some_and(|t| self.have.first() == Some(&(0, t)) && self.have.len() == 1)
    }

    fn insert(&mut self, start: usize, end: usize) {
        self.have.push((start, end));
        self.have.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.have.len());
        for &(s, e) in &self.have {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.have = merged;
    }
}

/// Datagrams being put back together.
#[derive(Debug, Default)]
pub(crate) struct Defrag {
    pending: HashMap<FragKey, Pending>,
    /// Pending datagrams by age, oldest first.
    order: BTreeMap<u64, FragKey>,
    bytes: usize,
    tick: u64,
}

impl Defrag {
    /// Adds one fragment (`offset` in bytes into the datagram's payload);
    /// returns the whole payload once every fragment is in.
    pub(crate) fn add(
        &mut self,
        key: FragKey,
        offset: usize,
        more: bool,
        payload: &[u8],
        limits: &Limits,
        skipped: &mut Skipped,
    ) -> Option<Vec<u8>> {
        let end = offset + payload.len();
        if end > MAX_DATAGRAM || (more && payload.is_empty()) {
            skipped.malformed += 1;
            self.drop_datagram(&key);
            return None;
        }
        if end > limits.max_fragment_bytes || limits.max_fragment_datagrams == 0 {
            skipped.fragments_incomplete += 1;
            self.drop_datagram(&key);
            return None;
        }
        if !self.pending.contains_key(&key) {
            while !self.order.is_empty()
                && (self.pending.len() >= limits.max_fragment_datagrams
                    || self.bytes + end > limits.max_fragment_bytes)
            {
                self.evict_oldest(skipped);
            }
            self.tick += 1;
            self.order.insert(self.tick, key);
            self.pending.insert(
                key,
                Pending {
                    data: Vec::new(),
                    have: Vec::new(),
                    total: None,
                    tick: self.tick,
                },
            );
        }
        let entry = self.pending.get_mut(&key)?;
        let conflicting_end = match entry.total {
            Some(total) => end > total || (!more && end != total),
            None => !more && entry.have.last().is_some_and(|r| r.1 > end),
        };
        if conflicting_end {
            skipped.malformed += 1;
            self.drop_datagram(&key);
            return None;
        }
        if entry.data.len() < end {
            self.bytes += end - entry.data.len();
            entry.data.resize(end, 0);
        }
        entry.data[offset..end].copy_from_slice(payload);
        entry.insert(offset, end);
        if !more {
            entry.total = Some(end);
        }
        // Growing may take the pool over its byte bound: make room by age,
        // this datagram included.
        while self.bytes > limits.max_fragment_bytes {
            let oldest = self.order.first_key_value().map(|(_, k)| *k);
            self.evict_oldest(skipped);
            if oldest == Some(key) || oldest.is_none() {
                return None;
            }
        }
        let entry = self.pending.get_mut(&key)?;
        if !entry.complete() {
            return None;
        }
        let done = self.pending.remove(&key)?;
        self.order.remove(&done.tick);
        self.bytes -= done.data.len();
        Some(done.data)
    }

    /// The end of the capture: what is still pending never completes.
    pub(crate) fn finish(&mut self, skipped: &mut Skipped) {
        skipped.fragments_incomplete += self.pending.len() as u64;
        *self = Defrag::default();
    }

    fn evict_oldest(&mut self, skipped: &mut Skipped) {
        if let Some((_, key)) = self.order.pop_first() {
            if let Some(p) = self.pending.remove(&key) {
                self.bytes -= p.data.len();
                skipped.fragments_incomplete += 1;
            }
        }
    }

    fn drop_datagram(&mut self, key: &FragKey) {
        if let Some(p) = self.pending.remove(key) {
            self.order.remove(&p.tick);
            self.bytes -= p.data.len();
        }
    }

    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.pending.len(), self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u32) -> FragKey {
        FragKey {
            src: [10, 0, 0, 1].into(),
            dst: [10, 0, 0, 2].into(),
            id,
            proto: 17,
        }
    }

    #[test]
    fn reassembles_in_any_order_with_overlaps() {
        let whole: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let limits = Limits::default();
        let pieces = [(1480, 2960), (8, 1000), (0, 1480), (2960, 3000)];
        let mut s = Skipped::default();
        let mut d = Defrag::default();
        let mut got = None;
        for (a, b) in pieces {
            assert!(got.is_none());
            got = d.add(key(1), a, b != 3000, &whole[a..b], &limits, &mut s);
        }
        assert_eq!(got.as_deref(), Some(&whole[..]));
        assert_eq!(d.held(), (0, 0));
        assert_eq!(s, Skipped::default());
    }

    #[test]
    fn bounded_pool_drops_the_oldest() {
        let limits = Limits {
            max_fragment_datagrams: 2,
            max_fragment_bytes: 10_000,
            ..Limits::default()
        };
        let mut s = Skipped::default();
        let mut d = Defrag::default();
        for id in 0..5 {
            assert_eq!(d.add(key(id), 0, true, &[0; 800], &limits, &mut s), None);
        }
        assert_eq!(d.held(), (2, 1600));
        assert_eq!(s.fragments_incomplete, 3);
        // A datagram larger than the whole pool is refused at once.
        assert_eq!(
            d.add(key(9), 9_000, true, &[0; 1008], &limits, &mut s),
            None
        );
        assert_eq!(s.fragments_incomplete, 4);
        assert_eq!(d.held(), (2, 1600));
        // Growing past the byte bound evicts the oldest others first...
        assert_eq!(d.add(key(4), 800, true, &[0; 8800], &limits, &mut s), None);
        assert_eq!(d.held(), (1, 9600));
        assert_eq!(s.fragments_incomplete, 5);
        // ...and a datagram that alone would not fit is given up.
        assert_eq!(d.add(key(4), 9600, true, &[0; 408], &limits, &mut s), None);
        assert_eq!(d.held(), (0, 0));
        assert_eq!(s.fragments_incomplete, 6);
        d.finish(&mut s);
        assert_eq!(s.fragments_incomplete, 6);
        assert_eq!(d.held(), (0, 0));
    }

    #[test]
    fn inconsistent_fragments_are_malformed() {
        let limits = Limits::default();
        let mut s = Skipped::default();
        let mut d = Defrag::default();
        assert_eq!(
            d.add(key(1), 65_000, false, &[0; 600], &limits, &mut s),
            None
        );
        assert_eq!(d.add(key(2), 0, true, &[0; 800], &limits, &mut s), None);
        assert_eq!(d.add(key(2), 0, false, &[0; 400], &limits, &mut s), None);
        assert_eq!(s.malformed, 2);
        assert_eq!(d.held(), (0, 0));
    }
}
