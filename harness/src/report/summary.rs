//! `summary.json` and the JSON-lines stream (`--json-lines`): the
//! machine-readable verdicts. Both state a case the same way: its key,
//! title, transport, the line it ran on, verdict, duration, first divergence, error, problems,
//! notes, the source of each channel's events, and what became of the
//! target's declared deviations channel by channel. summary.json adds the
//! run's name (its column in `scacheck table`), the target, and the totals
//! of every verdict (zero included).

use std::collections::BTreeMap;

use serde::Serialize;

use super::totals;
use crate::outcome::{CaseResult, Verdict};

#[derive(Serialize)]
struct SummaryCase<'a> {
    id: String,
    title: &'a str,
    transport: String,
    /// The line of the target's pool the case ran on.
    line: Option<&'a str>,
    verdict: Verdict,
    duration_ms: u128,
    first_divergence: Option<String>,
    error: Option<&'a str>,
    problems: Vec<&'a str>,
    notes: &'a [String],
    /// Where each channel's events came from.
    sources: BTreeMap<String, &'a str>,
    /// Every channel the target declares deviations on, and what became
    /// of them: which occurred (excused the difference), which did not,
    /// and whether a difference is left that none of them excuses.
    deviations: Vec<ChannelDeviations>,
}

#[derive(Serialize)]
struct ChannelDeviations {
    stage: String,
    channel: String,
    /// Profile lines of the deviations that occurred here.
    occurred: Vec<usize>,
    /// Profile lines of those declared here that did not occur.
    did_not_occur: Vec<usize>,
    /// Profile lines of those this source cannot observe.
    not_observable: Vec<usize>,
    /// A difference no declared deviation excuses (the first line of it).
    unexcused: Option<String>,
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
            id: r.key(),
            title: &r.title,
            transport: r.transport.to_string(),
            line: r.line.as_deref(),
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
            deviations: r
                .stages
                .iter()
                .flat_map(|s| s.channels.iter().map(move |c| (s, c)))
                .filter_map(|(s, c)| {
                    let d = c.deviated.as_ref()?;
                    let lines = |v: &[crate::diff::Declared]| v.iter().map(|x| x.line).collect();
                    let occurred: Vec<usize> = d.occurred.as_deref().map(lines).unwrap_or_default();
                    Some(ChannelDeviations {
                        stage: s.stage.clone(),
                        channel: c.channel.to_string(),
                        did_not_occur: d.did_not_occur().iter().map(|x| x.line).collect(),
                        occurred,
                        not_observable: lines(&d.unobservable),
                        unexcused: c.unexcused().map(ToString::to_string),
                    })
                })
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
