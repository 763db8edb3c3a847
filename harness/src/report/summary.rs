//! `summary.json` and the JSON-lines stream (`--json-lines`): the
//! machine-readable verdicts. Both state a case the same way: its key,
//! title, transport, verdict, duration, first divergence, error, problems,
//! notes and the source of each channel's events. summary.json adds the
//! run's name (its column in `scacheck table`), the target, and the totals
//! of every verdict (zero included).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{case_key, totals};
use crate::outcome::{CaseResult, Verdict};

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
