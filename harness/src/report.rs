//! What a run writes: a line per case and a summary on the console,
//! `summary.json`, a `<case>.diff` for every case that did not pass, a
//! `<case>.sip.txt` with every SIP message of every case, and the same
//! messages as a capture, `<case>.pcap`, for Wireshark; with HEP as the
//! event source, the server's own view as `<case>.hep.pcap`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::model::{Attr, Channel, KnownEvent, Value};
use crate::run::{CaseResult, Verdict};
use crate::sip::record::Direction;

/// The file-name form of a case's id with its transport (UDP is the
/// default and keeps the bare id).
pub fn case_key(r: &CaseResult) -> String {
    match r.transport {
        crate::sip::Transport::Udp => r.id.clone(),
        other => format!("{}@{other}", r.id),
    }
}

/// The console line of a case.
pub fn console_line(r: &CaseResult) -> String {
    let mut line = format!(
        "{:<13} {:<40} {:>6} ms",
        r.verdict.as_str().to_uppercase(),
        case_key(r),
        r.duration.as_millis()
    );
    match r.verdict {
        Verdict::Pass => {}
        Verdict::Fail | Verdict::Inconclusive => {
            if let Some(h) = r.headline() {
                let _ = write!(line, "\n    {h}");
            }
        }
        Verdict::Xfail | Verdict::Xpass | Verdict::Skipped => {
            for note in &r.notes {
                let _ = write!(line, "\n    {note}");
            }
        }
    }
    line
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

pub fn console_summary(results: &[CaseResult]) -> String {
    let t = totals(results);
    let parts: Vec<String> = Verdict::ALL
        .iter()
        .map(|v| format!("{} {}", t[v.as_str()], v.as_str()))
        .collect();
    format!("{} cases: {}", results.len(), parts.join(", "))
}

#[derive(Serialize)]
struct SummaryCase<'a> {
    id: String,
    title: &'a str,
    transport: String,
    verdict: Verdict,
    duration_ms: u128,
    first_divergence: Option<String>,
    error: Option<&'a str>,
    problems: Vec<&'a str>,
    notes: &'a [String],
    /// Where each channel's events came from.
    sources: BTreeMap<String, &'a str>,
}

#[derive(Serialize)]
struct Summary<'a> {
    /// The target's short name (a table column).
    name: &'a str,
    target: &'a str,
    cases: Vec<SummaryCase<'a>>,
    totals: BTreeMap<&'static str, usize>,
}

impl<'a> SummaryCase<'a> {
    /// A case as every machine-readable output states it.
    fn of(r: &'a CaseResult) -> SummaryCase<'a> {
        SummaryCase {
            id: case_key(r),
            title: &r.title,
            transport: r.transport.to_string(),
            verdict: r.verdict,
            duration_ms: r.duration.as_millis(),
            first_divergence: r.headline_divergence(),
            error: r.error.as_deref(),
            problems: r.problems.iter().map(|p| p.what.as_str()).collect(),
            notes: &r.notes,
            sources: r
                .channels()
                .into_iter()
                .map(|c| (c.to_string(), r.source.source_of(c)))
                .collect(),
        }
    }
}

/// The `summary.json` document.
pub fn summary_json(name: &str, target: &str, results: &[CaseResult]) -> String {
    let s = Summary {
        name,
        target,
        cases: results.iter().map(SummaryCase::of).collect(),
        totals: totals(results),
    };
    serde_json::to_string_pretty(&s).unwrap_or_default() + "\n"
}

/// One line of the JSON-lines stream (`--json-lines`): a finished case, with
/// the same fields as in summary.json.
pub fn json_line(r: &CaseResult) -> String {
    serde_json::to_string(&SummaryCase::of(r)).unwrap_or_default() + "\n"
}

/// JUnit XML: one test case per case; the first divergence (or why it could
/// not run) is the failure message, the full findings its text, every SIP
/// message of the case its system-out. An xfail passes, with its reasons in
/// system-out; a skipped case is skipped.
pub fn junit_xml(name: &str, results: &[CaseResult]) -> String {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
    let mut suite = TestSuite::new(format!("scacheck {name}"));
    for r in results {
        let status = match r.verdict {
            Verdict::Pass | Verdict::Xfail => TestCaseStatus::success(),
            Verdict::Skipped => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(r.notes.join("; "));
                s
            }
            Verdict::Fail | Verdict::Xpass | Verdict::Inconclusive => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let message = match r.verdict {
                    Verdict::Xpass => r.notes.join("; "),
                    _ => r.headline().unwrap_or_default(),
                };
                s.set_message(message)
                    .set_type(r.verdict.as_str())
                    .set_description(case_text(r));
                s
            }
        };
        let mut case = TestCase::new(case_key(r), status);
        case.set_classname(format!("scacheck.{name}"))
            .set_time(r.duration);
        let mut out = String::new();
        for note in &r.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out.push_str(&sip_text(r));
        case.set_system_out(out);
        suite.add_test_case(case);
    }
    let mut report = Report::new("scacheck");
    report.add_test_suite(suite);
    report.to_string().unwrap_or_default()
}

/// The full text of a case's findings: divergence, per-channel diffs,
/// what was not observed, problems with their raw messages.
pub fn case_text(r: &CaseResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "case {} ({}): {}",
        case_key(r),
        r.title,
        r.verdict.as_str().to_uppercase()
    );
    for line in r.source_lines() {
        let _ = writeln!(out, "events from: {line}");
    }
    if let Some(d) = r.first_divergence() {
        let _ = writeln!(out, "first divergence: {d}");
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "could not complete: {e}");
    }
    for note in &r.notes {
        let _ = writeln!(out, "note: {note}");
    }
    for s in &r.stages {
        let _ = writeln!(out, "\n== stage {} ==", s.stage);
        if s.passed() {
            let _ = writeln!(out, "all channels match");
        }
        for c in s.channels.iter() {
            if let Some(diff) = &c.diff {
                out.push_str(diff);
                if !diff.ends_with('\n') {
                    out.push('\n');
                }
                for line in c.standing() {
                    let _ = writeln!(out, "{line}");
                }
                if let Some(told) = last_told(r, &s.stage, &c.channel) {
                    let _ = writeln!(out, "{} was last told: {told}", c.channel);
                }
            }
        }
        if !s.unasserted.is_empty() {
            let _ = writeln!(
                out,
                "not asserted by the golden files: {}",
                s.unasserted.join("; ")
            );
        }
        if !s.not_observed.is_empty() {
            let _ = writeln!(
                out,
                "not observed by this source: {}",
                s.not_observed.join("; ")
            );
        }
    }
    if !r.problems.is_empty() {
        let _ = writeln!(out, "\n== problems ==");
        for p in &r.problems {
            let _ = writeln!(out, "- {}", p.what);
            if let Some(raw) = &p.raw {
                for line in String::from_utf8_lossy(raw).lines() {
                    let _ = writeln!(out, "    | {line}");
                }
            }
        }
    }
    out
}

/// What a phone's wire channel had been told of each appearance by the end
/// of `stage`: the context a missing state change needs ("held expected"
/// means little until you see "still active").
fn last_told(r: &CaseResult, stage: &str, channel: &Channel) -> Option<String> {
    if !matches!(channel, Channel::Wire(_)) {
        return None;
    }
    let upto = r.stages.iter().position(|s| s.stage == stage)?;
    let order = |name: &str| r.stages.iter().position(|s| s.stage == name);
    let mut state: BTreeMap<i64, String> = BTreeMap::new();
    for (at, obs) in &r.events {
        let in_time = at == "setup" || order(at).is_some_and(|i| i <= upto);
        if !in_time || &obs.channel != channel || obs.event.name != KnownEvent::Appearance.into() {
            continue;
        }
        let Some(Value::Int(index)) = obs.event.get(Attr::Index) else {
            continue;
        };
        let what = obs
            .event
            .get(Attr::AppearanceState)
            .map(ToString::to_string)
            .unwrap_or_default();
        let uri = obs
            .event
            .get(Attr::AppearanceUri)
            .map(|u| format!(" ({u})"))
            .unwrap_or_default();
        state.insert(*index, format!("{what}{uri}"));
    }
    let told: Vec<String> = state
        .iter()
        .map(|(i, s)| format!("appearance {i} {s}"))
        .collect();
    Some(if told.is_empty() {
        "every appearance idle".into()
    } else {
        told.join(", ")
    })
}

/// What follows an event line of `<case>.sip.txt` when its source orders
/// it only within a sequence (a SIP dialog); `compare-reports.sh` reads it.
pub const WITHIN: &str = " (ordered within ";

/// Every SIP message of a case, in order, raw; then every event, with its
/// stage and channel and what it is ordered within.
pub fn sip_text(r: &CaseResult) -> String {
    let mut out = String::new();
    let t0 = r.records.first().map(|x| x.at).unwrap_or(UNIX_EPOCH);
    for rec in &r.records {
        let dt = rec.at.duration_since(t0).unwrap_or_default();
        let (arrow, verb) = match rec.direction {
            Direction::Sent => ("->", "sent to"),
            Direction::Received => ("<-", "received from"),
        };
        let _ = writeln!(
            out,
            "#{} +{:.3}s {} {arrow} {} {verb} {} ({}){}",
            rec.seq,
            dt.as_secs_f64(),
            rec.agent,
            rec.first_line(),
            rec.peer,
            rec.transport,
            rec.problem
                .as_ref()
                .map(|p| format!(" [{p}]"))
                .unwrap_or_default()
        );
        for line in String::from_utf8_lossy(&rec.raw).split("\r\n") {
            let _ = writeln!(out, "    {line}");
        }
    }
    if !r.events.is_empty() {
        let _ = writeln!(out, "\n== events ==");
        for line in r.source_lines() {
            let _ = writeln!(out, "from: {line}");
        }
        for (stage, obs) in &r.events {
            let _ = write!(out, "[{stage}] {} {}", obs.channel, obs.event);
            // What the event is ordered against, as the diff compares it.
            if let Some(within) = &obs.within {
                let _ = write!(out, "{WITHIN}{within})");
            }
            out.push('\n');
        }
    }
    out
}

/// Writes the report directory.
pub fn write(dir: &Path, name: &str, target: &str, results: &[CaseResult]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("summary.json"),
        summary_json(name, target, results),
    )?;
    std::fs::write(dir.join("junit.xml"), junit_xml(name, results))?;
    std::fs::write(
        dir.join("report.html"),
        crate::html::report(name, target, results),
    )?;
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
    fn an_event_line_says_what_the_event_is_ordered_within() {
        let mut r = crate::run::tests::result(&[]);
        let event = |within: Option<&str>| crate::observation::Observation {
            channel: crate::model::Channel::parse("60972"),
            event: crate::model::Event::new(crate::model::KnownEvent::Released),
            raw: String::new(),
            within: within.map(String::from),
        };
        r.events = vec![
            ("retrieved".into(), event(Some("c1@h"))),
            ("retrieved".into(), event(None)),
        ];
        let text = sip_text(&r);
        let events: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
        assert_eq!(
            events,
            [
                r#"[retrieved] 60972 {"event": "EventReleased"} (ordered within c1@h)"#,
                r#"[retrieved] 60972 {"event": "EventReleased"}"#,
            ]
        );
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
