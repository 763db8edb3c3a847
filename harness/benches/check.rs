//! `pcap check` at production scale: `cargo bench --bench check`. Makes
//! (once; `SCACHECK_BENCH_REGENERATE=1` again) a capture of a busy SCA
//! system ([`gen`]: 100 lines of the Kamailio pool, each going through the
//! recorded Kamailio flows (16 now) one after another, UDP and TCP, about a
//! million SIP messages; `SCACHECK_BENCH_MESSAGES` and
//! `SCACHECK_BENCH_LINES` change that) and the Kamailio profile of that
//! pool beside it, then runs `scacheck pcap check`'s logic on it in a
//! child process, report included, and prints: messages, file size, time,
//! messages per second, peak memory (the child's VmHWM), report size, flows
//! judged by verdict; with tshark or sngrep installed, their time on the
//! same file and the ratios. Aim: a million messages per second, under
//! 64 MiB, memory not growing with the file. Measured (2 cores shared with
//! other work): 1 004 752 messages, 533 MiB, 12 548 flows judged (2 514
//! pass, 10 034 xfail). The first streaming version: 51.6 s = 19 500
//! messages/s, peak 54 MiB. Each message parsed once per flow (not about
//! six times), From/To read once, flows judged on a thread per core while
//! the file is read, junit.xml and report.html streamed to their files:
//! 21.2 s = 47 300 messages/s (34.9 s of CPU, 1.6 cores busy), peak 53 MiB
//! (48 MiB for a 30 000-message file: it does not grow with the file),
//! report 568 files, 42 MiB
//! (200 flows + flows.txt), byte for byte the one before. tshark (`-z
//! sip,stat`) took 36 s on the file, sngrep keeping every dialog 48 s.
//! rsipstack's parse alone was then ~20% of the CPU (some 6 us a
//! message), the diff of each flow's stages ~12%.
//!
//! Each message parsed once per flow (its two readings, the REGISTER scans
//! and the recovered actions share one parse, where each parsed again),
//! the codec's one-pass index in place of rsipstack's SipMessage, Call-Info
//! read once a message, byte scans (memchr) for CRLFs and structure: on
//! today's file (1 004 979 messages, 534 MiB, 16 recorded flows, 12 488
//! flows judged: 3 102 pass, 9 386 xfail), main's binary and this one
//! run back to back on it: 25.6 s = 39 300 messages/s (47.4 s of CPU,
//! 1.9 cores busy) before, 15.9 s = 63 200 messages/s (28.6 s of CPU, 1.8
//! cores busy, 35 000 messages per CPU second) after, peak 52 and 51 MiB;
//! with the other work on the machine holding about one core, 40.5 s
//! (41.0 s of CPU) before and 23.8 s (24.4 s of CPU) after. The report
//! (572 files, 41.7 MiB) is byte for byte main's. In one bench run
//! (scacheck 26.4 s, the machine busier) tshark took 31.3 s (scacheck
//! 0.84x its time), sngrep 40.7 s (0.65x). Where the CPU goes now (perf, 200 000
//! messages): malloc and free ~26% of it all; building each flow's records
//! ~18% (the parse ~14% of it: copying the bytes, the Content-Length rule,
//! the start line's URI); each flow's diff (compare_stages) ~11%;
//! detection ~10% (recovering actions ~9%); the report ~10% (a fixed cost,
//! less at a million); the derivers ~16%; reading the file ~6%; the
//! splitter ~5%. Still some 16 times short of the aim.
//!
//! Since the ids scacheck's phones make were named by DN (stop 25), the
//! generator read no line from the templates' Call-IDs and left every
//! episode on the line it was recorded on: 16 of the 100 lines, episodes
//! overlapping on them, 2 017 episodes judged as 368 flows (9 no case, 4
//! false fails), and a figure of 197 000 messages/s that measured the
//! wrong thing. The line is now read from the first REGISTER's To user,
//! and a case bound to a transport (a UDP relay, a TCP reconnect) keeps
//! its own. On 2026-12-03 (30 templates, 2 cores): 1 007 760 messages,
//! 532 MiB, 10 124 episodes judged as 10 124 flows (1 971 pass, 8 153
//! xfail, none without a case): 9.96 s = 101 000 messages/s (17.3 s of
//! CPU, 58 300 messages per CPU second), peak 58 MiB; tshark 12.06 s
//! (scacheck 0.83x its time), sngrep 23.0 s (0.43x). Where the CPU goes
//! (perf, 200 000 messages): the judging threads 68% (deriving events
//! 15%, of it Call-Info read into appearances 7%; parsing 12%; detection
//! 11%, recovering actions 8%; stage diffs 9%; the phones' reading 5%),
//! the reader's thread 30% (the splitter 8%, the reader 6%, the report
//! 11%); malloc and free about 25% of all. Still 10 times short of the
//! aim.

mod gen;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// The CPU time this process used, user and system, in seconds (the
/// clock ticks of /proc/self/stat, 100 a second on Linux).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command's closing parenthesis: utime is the
    // 12th of them, stime the 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: f64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn dir_size(dir: &Path) -> (u64, usize) {
    let mut total = (0, 0);
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        total.0 += e.metadata().map(|m| m.len()).unwrap_or(0);
        total.1 += 1;
    }
    total
}

/// The checking side, in its own process so that its peak memory is its
/// own: `--check FILE PROFILE REPORT`.
fn check(file: &Path, profile: &Path, report: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dirs = scacheck::suite::Dirs {
        cases: root.join("cases"),
        golden: root.join("fixtures/golden"),
    };
    let topology = scacheck::topology::Topology::reference();
    let start = Instant::now();
    let checked =
        scacheck::check::check_file(file, None, &dirs, &profile.display().to_string(), &topology)
            .expect("check the capture");
    let judged = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(report);
    checked.write_report(report).expect("write the report");
    let secs = start.elapsed().as_secs_f64();
    let mut verdicts: std::collections::BTreeMap<&str, usize> = Default::default();
    for counts in checked.tally.by_case.values() {
        for (v, n) in counts {
            *verdicts.entry(v).or_default() += n;
        }
    }
    *verdicts.entry("no-case").or_default() += checked.tally.no_case;
    let verdicts: Vec<String> = verdicts.iter().map(|(v, n)| format!("{v}={n}")).collect();
    println!(
        "{secs} {judged} {} {} {}",
        peak_rss_mib(),
        cpu_secs(),
        verdicts.join(",")
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--check") {
        let at = |k: usize| PathBuf::from(&args[i + k]);
        return check(&at(1), &at(2), &at(3));
    }
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let messages = env("SCACHECK_BENCH_MESSAGES", 1_000_000);
    let lines = env("SCACHECK_BENCH_LINES", 100) as usize;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target");
    let path = target.join(format!("bench-busy-{lines}x{messages}.pcap"));
    let profile = target.join(format!("bench-busy-{lines}.toml"));
    let report = target.join("bench-busy-report");
    gen::profile(root, lines, &profile);
    if !path.exists() || std::env::var_os("SCACHECK_BENCH_REGENERATE").is_some() {
        let made = Instant::now();
        let templates = gen::templates(&root.join("fixtures/captures/kamailio"));
        let m = gen::write(&path, &templates, lines, messages.div_ceil(lines as u64));
        println!(
            "generated: {} SIP messages, {} episodes of {} recorded flows on {lines} lines, in {:.1} s",
            m.messages,
            m.episodes,
            templates.len(),
            made.elapsed().as_secs_f64()
        );
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    // How many messages the file holds, by the reader alone.
    let mut reader = scacheck::pcap::Reader::open(&path).expect("open the capture");
    let read = Instant::now();
    let mut count = 0u64;
    while let Ok(Some(_)) = reader.next_packet() {
        count += 1;
    }
    let read_secs = read.elapsed().as_secs_f64();
    println!(
        "capture: {count} SIP messages, {:.0} MiB, {lines} lines, {}",
        size as f64 / 1048576.0,
        path.display()
    );
    println!(
        "reader alone: {read_secs:.2} s = {:.0} messages/s",
        count as f64 / read_secs
    );
    let out = Command::new(std::env::current_exe().expect("this bench"))
        .arg("--check")
        .arg(&path)
        .arg(&profile)
        .arg(&report)
        .output()
        .expect("run the check");
    if !out.status.success() {
        println!(
            "check failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let mut f = line.split_whitespace();
    let mut num = || {
        f.next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (secs, judged, rss, cpu) = (num(), num(), num(), num());
    let verdicts = line.split_whitespace().nth(4).unwrap_or("none").to_string();
    let (report_bytes, report_files) = dir_size(&report);
    println!(
        "scacheck pcap check: {secs:.2} s ({judged:.2} s judging, the rest the report) = {:.0} messages/s, peak memory {rss:.0} MiB",
        count as f64 / secs
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "CPU time {cpu:.2} s on {cores} cores ({:.1} cores busy; {:.0} messages per CPU second)",
        cpu / secs,
        count as f64 / cpu
    );
    println!(
        "report: {report_files} files, {:.1} MiB; flows by verdict: {verdicts}",
        report_bytes as f64 / 1048576.0
    );
    for (tool, args) in [
        ("tshark", vec!["-q", "-z", "sip,stat", "-r"]),
        // No interface, quiet, every dialog kept: past its default limit
        // (20 000 dialogs; this file holds some 75 000) sngrep stops storing
        // new ones, and would be timed on less than the file.
        ("sngrep", vec!["-N", "-q", "-l", "100000000", "-I"]),
    ] {
        let installed = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            println!("{tool}: not installed, no comparison");
            continue;
        }
        let t = Instant::now();
        let ran = Command::new(tool).args(&args).arg(&path).output();
        let took = t.elapsed().as_secs_f64();
        match ran {
            Ok(o) if o.status.success() => println!(
                "{tool} {}: {took:.2} s; scacheck pcap check takes {:.2}x its time",
                args.join(" "),
                secs / took
            ),
            _ => println!("{tool}: did not run on the file"),
        }
    }
}
