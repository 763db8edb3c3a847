//! `junit.xml`, for CI test reporters: one suite, `scacheck <name>`, with a
//! test case per case, named by its key. A pass and an xfail succeed, a
//! skipped case is skipped; a failure, an xpass or an inconclusive case
//! fails, with its headline (an xpass: its notes) as the message and the
//! text of `<case>.diff` as the description. Every case's system-out is
//! its notes and the text of `<case>.sip.txt`.

use std::fmt::Write as _;

use super::text::{case_text, sip_text};
use crate::outcome::{CaseResult, Verdict};

/// The most of a case's system-out junit.xml carries: a flood of messages
/// is cut in its middle, and the whole text is `<case>.sip.txt`'s.
const SYSTEM_OUT: usize = 1024 * 1024;

/// `text` fit for XML and bounded: control characters as visible escapes
/// (XML 1.0 allows none of them but tab and line feed), at most about
/// [`SYSTEM_OUT`] bytes, its start and its end kept.
fn bounded(text: String, key: &str) -> String {
    let text = super::shown::visible(&text).into_owned();
    if text.len() <= SYSTEM_OUT {
        return text;
    }
    let (head, _) = super::shown::folded(&text, SYSTEM_OUT * 3 / 4);
    let mut tail_from = text.len() - SYSTEM_OUT / 4;
    while !text.is_char_boundary(tail_from) {
        tail_from += 1;
    }
    let left = tail_from - head.len();
    format!(
        "{head}\n… {left} bytes left out here; the whole text is in {key}.sip.txt\n{}",
        &text[tail_from..]
    )
}

/// JUnit XML: one test case per case; the first divergence (or why it could
/// not run) is the failure message, the full findings its text, every SIP
/// message of the case its system-out. An xfail passes, with its reasons in
/// system-out; a skipped case is skipped.
pub fn junit_xml(name: &str, results: &[CaseResult]) -> String {
    let mut out = Vec::new();
    let _ = write_junit(&mut out, name, results);
    String::from_utf8(out).unwrap_or_default()
}

/// [`junit_xml`] written to `w` as it is serialized (a report of a busy
/// capture's flows is megabytes: not held twice).
pub fn write_junit(
    w: impl std::io::Write,
    name: &str,
    results: &[CaseResult],
) -> std::io::Result<()> {
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
        let mut case = TestCase::new(r.key(), status);
        case.set_classname(format!("scacheck.{name}"))
            .set_time(r.duration);
        let mut out = String::new();
        if let Some(line) = &r.line {
            let _ = writeln!(out, "ran on: {line}");
        }
        for note in &r.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out.push_str(&sip_text(r));
        case.set_system_out(bounded(out, &r.key()));
        suite.add_test_case(case);
    }
    let mut report = Report::new("scacheck");
    report.add_test_suite(suite);
    report.serialize(w).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_out_is_bounded_and_without_control_characters() {
        let flood = format!("start\u{1b}[2J\n{}end", "NOTIFY\n".repeat(300_000));
        let out = bounded(flood, "c");
        assert!(out.len() < SYSTEM_OUT + 200, "{}", out.len());
        assert!(out.starts_with("start\\x1b[2J\n"), "{}", &out[..20]);
        assert!(out.ends_with("NOTIFY\nend"));
        assert!(out.contains("bytes left out here; the whole text is in c.sip.txt"));
        assert_eq!(bounded("short\r\n".into(), "c"), "short\n");
    }
}
