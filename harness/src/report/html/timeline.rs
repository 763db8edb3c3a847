//! Appearance timelines: for each shared-line phone's wire channel and
//! each appearance it was told of (or should have been), a bar of the
//! states the phone was told over the case's time, and beside it the bar
//! of the states the golden files expected, so that a wrong or missing
//! state shows as the place where the two bars part.
//!
//! Time: an observed state begins at its message's time. An expected state
//! begins where the observed one that matches it (same appearance, same
//! state, same stage) began; one that was never observed begins where its
//! stage ended, which is where its absence became a fact. Every appearance
//! begins idle.
//!
//! DOM contract (the browser test reads it): `svg.timeline` holds a
//! `g.appearance` per channel and index (`data-channel`, `data-index`),
//! each with a `g.observed` and a `g.expected` bar of `rect`s
//! (`data-state`), and a `line.parts` where the bars first part.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use maud::{html, Markup};

use crate::model::{Attr, Channel, KnownEvent, Value};
use crate::outcome::CaseResult;
use crate::report::shown::visible;

const LABEL_W: i64 = 170;
const BAR_W: i64 = 760;
const BAR_H: i64 = 14;
const GROUP_H: i64 = 2 * BAR_H + 16;
const AXIS_H: i64 = 30;

/// A state an appearance took, from when.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    at: Duration,
    state: String,
}

/// One appearance of one phone: what it was told and what it should
/// have been told.
#[derive(Debug, Default)]
struct Appearance {
    observed: Vec<Change>,
    expected: Vec<Change>,
}

/// The timelines of `r`, or nothing when it has no wire channel or no
/// SIP to time them by.
pub fn timelines(r: &CaseResult) -> Option<Markup> {
    let (t0, t1) = (r.records.first()?.at, r.records.last()?.at);
    let span = t1
        .duration_since(t0)
        .unwrap_or_default()
        .max(Duration::from_millis(1));
    let appearances = appearances(r, t0, span);
    if appearances.is_empty() {
        return None;
    }
    let x = |d: Duration| LABEL_W + (d.as_secs_f64() / span.as_secs_f64() * BAR_W as f64) as i64;
    let starts: Vec<(&str, Duration)> = r
        .stage_starts
        .iter()
        .filter_map(|s| Some((s.stage.as_str(), at(r, s.record)?.duration_since(t0).ok()?)))
        .collect();
    let height = AXIS_H + appearances.len() as i64 * GROUP_H + 8;
    let width = LABEL_W + BAR_W + 90;
    // The golden files say nothing of the teardown: the expected bars end
    // where it begins.
    let until = r
        .stage_starts
        .iter()
        .find(|s| s.stage == "teardown")
        .and_then(|s| at(r, s.record))
        .map_or(span, |t| t.duration_since(t0).unwrap_or_default());
    let bar = |changes: &[Change], y: i64, until: Duration| {
        html! {
            @for (k, c) in changes.iter().enumerate().filter(|(_, c)| c.at <= until) {
                @let end = changes.get(k + 1).map_or(until, |n| n.at.min(until));
                rect class=(format!("state s-{}", class_of(&c.state))) data-state=(c.state)
                    x=(x(c.at)) y=(y) width=((x(end) - x(c.at)).max(1)) height=(BAR_H) {
                    title { (visible(&c.state)) " from +" (format!("{:.3}", c.at.as_secs_f64())) " s" }
                }
            }
        }
    };
    Some(html! {
        svg xmlns="http://www.w3.org/2000/svg" class="timeline" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="appearance timelines" {
            @for ((name, at), row) in starts.iter().zip(label_rows(&starts, &x)) {
                g class="tick" data-stage=(name) {
                    title { (visible(name)) " from +" (format!("{:.3}", at.as_secs_f64())) " s" }
                    line x1=(x(*at)) y1=(row.map_or(20, |r| 4 + 12 * r)) x2=(x(*at)) y2=(height) {}
                    @if let Some(r) = row {
                        text x=(x(*at) + 3) y=(12 + 12 * r) { (visible(name)) }
                    }
                }
            }
            @for (k, ((channel, index), a)) in appearances.iter().enumerate() {
                @let y = AXIS_H + k as i64 * GROUP_H;
                g class="appearance" data-channel=(channel) data-index=(index) {
                    text class="who" x="4" y=(y + BAR_H - 2) { (visible(channel)) " #" (index) }
                    text class="which" x=(LABEL_W - 6) y=(y + BAR_H - 3) text-anchor="end" { "observed" }
                    text class="which" x=(LABEL_W - 6) y=(y + 2 * BAR_H - 1) text-anchor="end" { "expected" }
                    g class="observed" { (bar(&a.observed, y, span)) }
                    g class="expected" { (bar(&a.expected, y + BAR_H + 2, until)) }
                    @if let Some(at) = parts(a, until) {
                        line class="parts" x1=(x(at)) y1=(y - 3) x2=(x(at)) y2=(y + 2 * BAR_H + 5) {
                            title { "expected and observed part here (+" (format!("{:.3}", at.as_secs_f64())) " s)" }
                        }
                    }
                }
            }
        }
    })
}

/// Which of two rows above the bars each stage's name is written on so
/// that no two names overlap (None: no room; its tick has a tooltip).
fn label_rows(starts: &[(&str, Duration)], x: &dyn Fn(Duration) -> i64) -> Vec<Option<i64>> {
    let mut free_from = [i64::MIN; 2];
    starts
        .iter()
        .map(|(name, at)| {
            let from = x(*at);
            let row = (0..2).find(|&r| free_from[r] <= from)?;
            // 11px monospace: about 7px a character, and a gap.
            free_from[row] = from + 7 * name.chars().count() as i64 + 10;
            Some(row as i64)
        })
        .collect()
}

/// The time of the record at `index` of `r.records` (past the end: the last).
fn at(r: &CaseResult, index: usize) -> Option<SystemTime> {
    r.records.get(index).or(r.records.last()).map(|x| x.at)
}

/// Every wire channel's appearances, observed and expected, keyed by
/// channel and index.
fn appearances(
    r: &CaseResult,
    t0: SystemTime,
    span: Duration,
) -> BTreeMap<(String, i64), Appearance> {
    let since = |t: SystemTime| t.duration_since(t0).unwrap_or_default();
    let stage_start = |stage: &str| {
        r.stage_starts
            .iter()
            .find(|s| s.stage == stage)
            .and_then(|s| at(r, s.record))
            .map_or(Duration::ZERO, since)
    };
    let stage_end = |stage: &str| {
        let k = r.stage_starts.iter().position(|s| s.stage == stage);
        k.and_then(|k| r.stage_starts.get(k + 1))
            .and_then(|s| at(r, s.record))
            .map_or(span, since)
    };
    let wire: BTreeSet<String> = r
        .channels()
        .into_iter()
        .filter(|c| matches!(c, Channel::Wire(_)))
        .map(|c| c.to_string())
        .collect();
    let mut out: BTreeMap<(String, i64), Appearance> = BTreeMap::new();
    // Observed, with each change's stage (to match expected ones in it).
    let mut seen: Vec<(String, i64, String, Duration, &str)> = Vec::new();
    for (stage, obs) in &r.events {
        let channel = obs.channel.to_string();
        if !wire.contains(&channel) || obs.event.name != KnownEvent::Appearance.into() {
            continue;
        }
        let (Some(Value::Int(index)), Some(state)) = (
            obs.event.get(Attr::Index),
            obs.event.get(Attr::AppearanceState),
        ) else {
            continue;
        };
        let when = obs
            .record
            .and_then(|seq| r.records.iter().find(|x| x.seq == seq))
            .map_or_else(|| stage_start(stage), |x| since(x.at));
        seen.push((channel, *index, state.to_string(), when, stage.as_str()));
    }
    for (channel, index, state, when, _) in &seen {
        out.entry((channel.clone(), *index))
            .or_default()
            .observed
            .push(Change {
                at: *when,
                state: state.clone(),
            });
    }
    let mut used = vec![false; seen.len()];
    for stage in &r.stages {
        for c in stage
            .channels
            .iter()
            .filter(|c| wire.contains(&c.channel.to_string()))
        {
            let channel = c.channel.to_string();
            for line in &c.expected {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let (Some("Appearance"), Some(index), Some(state)) = (
                    v["event"].as_str(),
                    v["Index"].as_i64(),
                    v["AppearanceState"].as_str(),
                ) else {
                    continue;
                };
                let matched = (0..seen.len()).find(|&k| {
                    let (ch, i, s, _, st) = &seen[k];
                    !used[k] && *ch == channel && *i == index && s == state && *st == stage.stage
                });
                let when = match matched {
                    Some(k) => {
                        used[k] = true;
                        seen[k].3
                    }
                    None => stage_end(&stage.stage),
                };
                out.entry((channel.clone(), index))
                    .or_default()
                    .expected
                    .push(Change {
                        at: when,
                        state: state.to_string(),
                    });
            }
        }
    }
    for a in out.values_mut() {
        for changes in [&mut a.observed, &mut a.expected] {
            changes.sort_by_key(|c| c.at);
            changes.insert(
                0,
                Change {
                    at: Duration::ZERO,
                    state: "idle".into(),
                },
            );
        }
    }
    out
}

/// The state a bar shows at `t`.
fn state_at(changes: &[Change], t: Duration) -> &str {
    changes
        .iter()
        .rev()
        .find(|c| c.at <= t)
        .map_or("idle", |c| c.state.as_str())
}

/// The first time up to `until` (the teardown) the two bars show
/// different states, if they ever do.
fn parts(a: &Appearance, until: Duration) -> Option<Duration> {
    let mut times: Vec<Duration> = a
        .observed
        .iter()
        .chain(&a.expected)
        .map(|c| c.at)
        .filter(|t| *t <= until)
        .collect();
    times.sort();
    times.dedup();
    times
        .into_iter()
        .find(|&t| state_at(&a.observed, t) != state_at(&a.expected, t))
}

/// A state's CSS class: its name when it is one of the model's, else
/// `other` (a server may send anything).
fn class_of(state: &str) -> &'static str {
    match state {
        "idle" => "idle",
        "seized" => "seized",
        "progressing" => "progressing",
        "alerting" => "alerting",
        "active" => "active",
        "held" => "held",
        "held-private" => "held-private",
        "bridge-active" => "bridge-active",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(ms: u64, state: &str) -> Change {
        Change {
            at: Duration::from_millis(ms),
            state: state.into(),
        }
    }

    #[test]
    fn bars_part_where_a_state_is_missing_and_not_before() {
        let a = Appearance {
            observed: vec![change(0, "idle"), change(100, "active")],
            expected: vec![
                change(0, "idle"),
                change(100, "active"),
                change(300, "held"),
            ],
        };
        let end = Duration::from_secs(1);
        assert_eq!(parts(&a, end), Some(Duration::from_millis(300)));
        // What differs only from the teardown on is not a parting.
        assert_eq!(parts(&a, Duration::from_millis(299)), None);
        let same = Appearance {
            observed: a.observed.clone(),
            expected: a.observed.clone(),
        };
        assert_eq!(parts(&same, end), None);
    }
}
