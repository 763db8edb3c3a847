//! The text of a case, for people: `<case>.diff`, written for every case
//! that did not pass (its findings: the first divergence, the unified diff
//! of every differing channel with what a phone was last told, what the
//! golden files do not assert and the source cannot observe, problems with
//! their raw messages), and `<case>.sip.txt`, written for every case (every
//! SIP message, raw, in order; then every event with its stage, channel
//! and what it is ordered within). junit.xml carries the same two texts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use crate::model::{Attr, Channel, KnownEvent, Value};
use crate::outcome::CaseResult;
use crate::sip::record::Direction;

/// The full text of a case's findings: divergence, per-channel diffs,
/// what was not observed, problems with their raw messages.
pub fn case_text(r: &CaseResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "case {} ({}): {}",
        r.key(),
        r.title,
        r.verdict.as_str().to_uppercase()
    );
    if let Some(line) = &r.line {
        let _ = writeln!(out, "ran on: {line}");
    }
    for line in r.source_lines() {
        let _ = writeln!(out, "events from: {line}");
    }
    if let Some(stopped) = &r.stopped {
        let _ = writeln!(out, "first divergence: {stopped}");
    } else if let Some(d) = r.first_divergence() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_line_says_what_the_event_is_ordered_within() {
        let mut r = crate::outcome::tests::result(&[]);
        let event = |within: Option<&str>| crate::observation::Observation {
            channel: crate::model::Channel::parse("60972"),
            event: crate::model::Event::new(crate::model::KnownEvent::Released),
            raw: String::new(),
            within: within.map(String::from),
            record: None,
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
}
