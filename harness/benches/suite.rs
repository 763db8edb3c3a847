//! Wall time of the whole suite on the embedded target: `cargo bench`.
//! Prints figures; it asserts nothing (targets live here, not in tests).
//! Aim: the three inbound cases together well under one second.

use std::time::{Duration, Instant};

use scacheck::outcome::Verdict;
use scacheck::run::{run_all, RunOptions};
use scacheck::sip::Transport;

// The suite loader the integration tests share.
#[path = "../tests/common/mod.rs"]
mod common;

const ROUNDS: usize = 20;

fn main() {
    let (prepared, topology) = common::suite();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!(
        "suite: {} cases on the embedded target, {ROUNDS} rounds per transport",
        prepared.len()
    );
    for transport in [Transport::Udp, Transport::Tcp] {
        let opts = RunOptions {
            transport,
            ..RunOptions::default()
        };
        let mut times: Vec<Duration> = Vec::with_capacity(ROUNDS);
        let mut not_passed = 0;
        for _ in 0..ROUNDS {
            let t = Instant::now();
            let results = rt.block_on(run_all(&prepared, &topology, opts.clone()));
            times.push(t.elapsed());
            not_passed += results
                .iter()
                .filter(|r| r.verdict != Verdict::Pass)
                .count();
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{transport}: suite wall time min {:.1} ms, median {:.1} ms, max {:.1} ms ({not_passed} case runs did not pass)",
            ms(times[0]),
            ms(times[ROUNDS / 2]),
            ms(times[ROUNDS - 1])
        );
    }
}
