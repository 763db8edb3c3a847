//! `junit.xml`, for CI test reporters: one suite, `scacheck <name>`, with a
//! test case per case, named by its key. A pass and an xfail succeed, a
//! skipped case is skipped; a failure, an xpass or an inconclusive case
//! fails, with its headline (an xpass: its notes) as the message and the
//! text of `<case>.diff` as the description. Every case's system-out is
//! its notes and the text of `<case>.sip.txt`.

use std::fmt::Write as _;

use super::text::{case_text, sip_text};
use crate::outcome::{CaseResult, Verdict};

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
        case.set_system_out(out);
        suite.add_test_case(case);
    }
    let mut report = Report::new("scacheck");
    report.add_test_suite(suite);
    report.serialize(w).map_err(std::io::Error::other)
}
