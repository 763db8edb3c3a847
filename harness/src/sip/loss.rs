//! Datagram loss on purpose (`scacheck run --loss PERCENT --seed N`), sans-IO:
//! which of a phone's UDP datagrams are dropped, decided by a seeded
//! generator so that a run can be repeated.
//!
//! Each phone has two streams of decisions, one for what it sends and one
//! for what it receives, each seeded from the run's seed and the phone's
//! name within its case (`<case>/<DN>`): the k-th datagram a phone sends in
//! a case is dropped or not whatever the other cases and phones do. What
//! the k-th datagram is depends on the server's timing, so two runs with
//! one seed drop the same share at the same places of each phone's
//! sequence, not always the same messages: the report names those it
//! dropped. The generator is ChaCha8, whose output for a seed is fixed
//! across platforms and releases.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The share of datagrams a run's phones drop, and the seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loss {
    /// 0 to 100.
    pub percent: f64,
    pub seed: u64,
}

impl Loss {
    /// A share of 0 to 100 percent (a fraction of a percent allowed).
    pub fn new(percent: f64, seed: u64) -> Result<Loss, String> {
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!("--loss {percent}: a share of 0 to 100 percent"));
        }
        Ok(Loss { percent, seed })
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}% loss, seed {}", self.percent, self.seed)
    }
}

/// One stream of drop decisions.
#[derive(Debug, Clone)]
pub struct Dropper {
    rng: ChaCha8Rng,
    /// A draw below this (out of 2^32) drops.
    below: u64,
}

impl Dropper {
    /// The stream `stream` ("sent", "received") of the phone named `name`.
    pub fn new(loss: Loss, name: &str, stream: &str) -> Dropper {
        // FNV-1a of the names, mixed into the seed: stable, unlike std's
        // hasher, whose output is not promised across releases.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes().chain([0]).chain(stream.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Dropper {
            rng: ChaCha8Rng::seed_from_u64(loss.seed ^ h),
            // 100% is every draw (u32::MAX + 1 is above them all).
            below: ((loss.percent / 100.0) * (f64::from(u32::MAX) + 1.0)).round() as u64,
        }
    }

    /// Whether the next datagram is dropped.
    pub fn drops(&mut self) -> bool {
        u64::from(self.rng.next_u32()) < self.below
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(loss: Loss, name: &str, n: usize) -> usize {
        let mut d = Dropper::new(loss, name, "sent");
        (0..n).filter(|_| d.drops()).count()
    }

    #[test]
    fn none_all_and_about_the_share_asked() {
        let at = |p| Loss::new(p, 7).unwrap();
        assert_eq!(count(at(0.0), "c/60970", 10_000), 0);
        assert_eq!(count(at(100.0), "c/60970", 10_000), 10_000);
        let ten = count(at(10.0), "c/60970", 10_000);
        assert!((900..1100).contains(&ten), "{ten}");
        assert!(Loss::new(100.5, 1).is_err() && Loss::new(-1.0, 1).is_err());
    }

    #[test]
    fn a_seed_and_a_name_give_the_same_decisions_and_others_differ() {
        let seq = |seed, name: &str, stream: &str| {
            let mut d = Dropper::new(Loss::new(30.0, seed).unwrap(), name, stream);
            (0..64).map(|_| d.drops()).collect::<Vec<_>>()
        };
        assert_eq!(seq(1, "c/60970", "sent"), seq(1, "c/60970", "sent"));
        assert_ne!(seq(1, "c/60970", "sent"), seq(2, "c/60970", "sent"));
        assert_ne!(seq(1, "c/60970", "sent"), seq(1, "c/60970_2", "sent"));
        assert_ne!(seq(1, "c/60970", "sent"), seq(1, "c/60970", "received"));
    }
}
