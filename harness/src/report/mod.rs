//! What a run writes. On the console, a line per case as it finishes and
//! a summary line ([`console`]); in the report directory ([`write()`]):
//! - `summary.json`, the verdicts for machines ([`summary`]; `--json-lines`
//!   streams the same cases as they finish);
//! - `junit.xml`, for CI test reporters ([`junit`]);
//! - `report.html`, one self-contained page ([`html`]);
//! - `<case>.sip.txt` for every case, with every SIP message and event, and
//!   `<case>.diff` for every case that did not pass, with its findings
//!   ([`text`]);
//! - `<case>.pcap`, the same messages as a capture, for Wireshark (SIP
//!   over TLS in clear, as TCP); with HEP as the event source, the
//!   server's own view as `<case>.hep.pcap` ([`crate::pcap`]);
//! - `<case>.keys` beside it for a case that had TLS sessions: their
//!   secrets in the NSS key log format (`SSLKEYLOGFILE`'s), which
//!   Wireshark decrypts a capture of the encrypted traffic with.
//!
//! Every output names a case by its one key, [`CaseResult::key`]: its id, with
//! `@tcp` over TCP, `@tls` over TLS. [`table()`] reads summary.json back to
//! line up the verdicts of several runs.
//!
//! Each output is a file of its own and takes what outputs share (the key,
//! the totals) from here; the one that uses another is [`junit`], which
//! carries [`text`]'s texts.

pub mod console;
pub mod html;
pub mod junit;
pub mod shown;
pub mod summary;
pub mod table;
pub mod text;

pub use console::{console_line, console_summary, Console};
pub use junit::junit_xml;
pub use summary::{json_line, summary_json};
pub use table::{table, table_html};
pub use text::{case_text, sip_text, WITHIN};

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::outcome::{CaseResult, Verdict};

/// Counts by verdict, every verdict present (zero included).
pub fn totals(results: &[CaseResult]) -> BTreeMap<&'static str, usize> {
    let mut t: BTreeMap<&'static str, usize> =
        Verdict::ALL.iter().map(|v| (v.as_str(), 0)).collect();
    for r in results {
        *t.entry(r.verdict.as_str()).or_default() += 1;
    }
    t
}

/// Writes the report directory.
pub fn write(dir: &Path, name: &str, target: &str, results: &[CaseResult]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("summary.json"),
        summary_json(name, target, results),
    )?;
    let mut junit = std::io::BufWriter::new(std::fs::File::create(dir.join("junit.xml"))?);
    junit::write_junit(&mut junit, name, results)?;
    std::io::Write::flush(&mut junit)?;
    let mut html = std::io::BufWriter::new(std::fs::File::create(dir.join("report.html"))?);
    html::write_report(&mut html, name, target, results)?;
    std::io::Write::flush(&mut html)?;
    for r in results {
        let key = r.key();
        std::fs::write(dir.join(format!("{key}.sip.txt")), sip_text(r))?;
        crate::pcap::write_records(&dir.join(format!("{key}.pcap")), &r.records)?;
        // A directory used before may hold this case's files of an earlier
        // run: what this run does not write is removed, so that a passing
        // case never sits beside an old diff.
        let (keys, mirror, diff) = (
            dir.join(format!("{key}.keys")),
            dir.join(format!("{key}.hep.pcap")),
            dir.join(format!("{key}.diff")),
        );
        // Its TLS sessions' secrets, for a capture of the encrypted traffic.
        if !r.keys.is_empty() {
            let mut text = r.keys.join("\n");
            text.push('\n');
            std::fs::write(&keys, text)?;
        } else {
            remove_stale(&keys)?;
        }
        // The server's own view, as it mirrored it: `pcap check` reads it too.
        if !r.mirrored.is_empty() {
            crate::pcap::write_packets(std::fs::File::create(&mirror)?, &r.mirrored)?;
        } else {
            remove_stale(&mirror)?;
        }
        if r.verdict != Verdict::Pass {
            std::fs::write(&diff, case_text(r))?;
        } else {
            remove_stale(&diff)?;
        }
    }
    Ok(())
}

/// Removes a file an earlier run left, if there is one.
fn remove_stale(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `reports/<UTC timestamp>/`, made unique if a run in the same second
/// The report of one checked case (a capture, a log), and what the
/// console says of it: the case's line and where the report went.
pub fn write_one(dir: &Path, name: &str, described: &str, r: &CaseResult) -> io::Result<String> {
    write_checked(dir, name, described, std::slice::from_ref(r))
}

/// [`write_one`] for the flows of one capture: a report of them all, a
/// console line each.
pub fn write_checked(
    dir: &Path,
    name: &str,
    described: &str,
    results: &[CaseResult],
) -> io::Result<String> {
    write(dir, name, described, results)?;
    let mut said: String = results
        .iter()
        .map(|r| format!("{}\n", console_line(r)))
        .collect();
    said.push_str(&format!("report: {}\n", dir.display()));
    Ok(said)
}

/// The report directory a command was given, else `reports/<UTC timestamp>/`.
pub fn dir_or_default(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| default_dir(Path::new("reports")))
}

/// already took it.
pub fn default_dir(base: &Path) -> PathBuf {
    let stamp = utc_stamp(SystemTime::now());
    let mut dir = base.join(&stamp);
    let mut n = 2;
    while dir.exists() {
        dir = base.join(format!("{stamp}-{n}"));
        n += 1;
    }
    dir
}

/// `YYYYMMDDTHHMMSSZ` for a time (civil-from-days, Howard Hinnant).
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_case_that_passes_now_leaves_no_diff_of_an_earlier_run() {
        let dir = std::env::temp_dir().join(format!("scacheck-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let source = crate::observation::Observability::everything("feed");
        let mut r = CaseResult::new("c", "t", crate::sip::Transport::Udp, source);
        r.verdict = Verdict::Fail;
        r.keys = vec!["CLIENT_RANDOM a b".into()];
        write(&dir, "run", "embedded", std::slice::from_ref(&r)).unwrap();
        assert!(dir.join("c.diff").exists() && dir.join("c.keys").exists());
        r.verdict = Verdict::Pass;
        r.keys.clear();
        write(&dir, "run", "embedded", std::slice::from_ref(&r)).unwrap();
        assert!(!dir.join("c.diff").exists(), "a stale diff beside a pass");
        assert!(!dir.join("c.keys").exists());
        assert!(dir.join("c.sip.txt").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        // 2026-11-25 17:10:50 UTC
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(1_795_626_650)),
            "20261125T171050Z"
        );
        // a leap day
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229T000000Z"
        );
    }
}
