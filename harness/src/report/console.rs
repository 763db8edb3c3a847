//! The console: a line per case as it finishes (its verdict, its key and
//! how long it took; for a failure or an inconclusive case, its headline:
//! the first divergence, else why it could not complete, else its first
//! problem; for an xfail, an xpass or a skipped case, its notes), and at
//! the end the summary line, every verdict with its count (zero included).

use std::fmt::Write as _;

use super::{case_key, totals};
use crate::outcome::{CaseResult, Verdict};

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

/// The summary line: how many cases, and how many of each verdict.
pub fn console_summary(results: &[CaseResult]) -> String {
    let t = totals(results);
    let parts: Vec<String> = Verdict::ALL
        .iter()
        .map(|v| format!("{} {}", t[v.as_str()], v.as_str()))
        .collect();
    format!("{} cases: {}", results.len(), parts.join(", "))
}
