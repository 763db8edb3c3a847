//! What a run writes: a line per case and a summary on the console,
//! `summary.json`, a `<case>.diff` for every case that did not pass, a
//! `<case>.sip.txt` with every SIP message of every case, and the same
//! messages as a capture, `<case>.pcap`, for Wireshark; with HEP as the
//! event source, the server's own view as `<case>.hep.pcap`.

pub mod console;
pub mod html;
pub mod junit;
pub mod summary;
pub mod text;

pub use console::{console_line, console_summary};
pub use junit::junit_xml;
pub use summary::{json_line, summary_json};
pub use text::{case_text, sip_text, WITHIN};

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::run::{CaseResult, Verdict};

/// The file-name form of a case's id with its transport (UDP is the
/// default and keeps the bare id).
pub fn case_key(r: &CaseResult) -> String {
    match r.transport {
        crate::sip::Transport::Udp => r.id.clone(),
        other => format!("{}@{other}", r.id),
    }
}

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
    std::fs::write(dir.join("junit.xml"), junit_xml(name, results))?;
    std::fs::write(dir.join("report.html"), html::report(name, target, results))?;
    for r in results {
        let key = case_key(r);
        std::fs::write(dir.join(format!("{key}.sip.txt")), sip_text(r))?;
        crate::pcap::write_records(&dir.join(format!("{key}.pcap")), &r.records)?;
        // The server's own view, as it mirrored it: `pcap check` reads it too.
        if !r.mirrored.is_empty() {
            crate::pcap::write_packets(
                std::fs::File::create(dir.join(format!("{key}.hep.pcap")))?,
                &r.mirrored,
            )?;
        }
        if r.verdict != Verdict::Pass {
            std::fs::write(dir.join(format!("{key}.diff")), case_text(r))?;
        }
    }
    Ok(())
}

/// A Markdown table of verdicts, one row per case and one column per report
/// directory (named by its target), from each directory's summary.json. A
/// run over TCP keys its cases `<case>@tcp` and names itself `<name>@tcp`:
/// its column lines up with the others on the bare case id.
pub fn table(reports: &[PathBuf]) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let mut columns: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    for dir in reports {
        let path = dir.join("summary.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let name = json["name"]
            .as_str()
            .or(json["target"].as_str())
            .unwrap_or("?")
            .to_string();
        let cases = json["cases"]
            .as_array()
            .with_context(|| format!("{} has no cases", path.display()))?;
        let verdicts = cases
            .iter()
            .filter_map(|c| {
                let id = c["id"].as_str()?;
                let case = id.split_once('@').map_or(id, |(case, _)| case);
                Some((case.to_string(), c["verdict"].as_str()?.to_string()))
            })
            .collect();
        columns.push((name, verdicts));
    }
    let mut ids: Vec<&String> = columns.iter().flat_map(|(_, v)| v.keys()).collect();
    ids.sort();
    ids.dedup();
    let mut out = format!(
        "| case | {} |\n|---|{}\n",
        columns
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(columns.len())
    );
    for id in ids {
        let cells: Vec<&str> = columns
            .iter()
            .map(|(_, v)| v.get(id).map(String::as_str).unwrap_or("-"))
            .collect();
        out.push_str(&format!("| `{id}` | {} |\n", cells.join(" | ")));
    }
    Ok(out)
}

/// `reports/<UTC timestamp>/`, made unique if a run in the same second
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
    fn a_tcp_run_lines_up_with_the_others_in_the_table() {
        let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
        let summary = |name: &str, key: &str, verdict: &str| {
            format!(r#"{{"name": "{name}", "cases": [{{"id": "{key}", "verdict": "{verdict}"}}]}}"#)
        };
        std::fs::write(
            dirs[0].path().join("summary.json"),
            summary("kamailio", "hold-retrieve", "xfail"),
        )
        .unwrap();
        std::fs::write(
            dirs[1].path().join("summary.json"),
            summary("kamailio@tcp", "hold-retrieve@tcp", "fail"),
        )
        .unwrap();
        let paths: Vec<PathBuf> = dirs.iter().map(|d| d.path().to_path_buf()).collect();
        assert_eq!(
            table(&paths).unwrap(),
            "| case | kamailio | kamailio@tcp |\n|---|---|---|\n| `hold-retrieve` | xfail | fail |\n"
        );
        let missing = tempfile::tempdir().unwrap();
        let err = table(&[missing.path().to_path_buf()]).unwrap_err();
        assert!(format!("{err:#}").contains("summary.json"), "{err:#}");
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
