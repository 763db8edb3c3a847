//! Matching observed events against golden ones.
//!
//! Within a channel events are compared in the order their source gives
//! them (events derived from SIP, within each SIP dialog: see `fit_order`);
//! across channels only by stage. Identifiers are bound symbolically: the
//! first time a golden symbol (`$conn`) meets a literal (`006e025a6c4e1001`)
//! they are bound, one to one, for the whole case; afterwards the literal
//! must recur where the symbol does. Only the attributes a golden event
//! names are compared, and only those the source can observe.
//!
//! The result is rendered as text (golden symbols substituted into the
//! observed events) and diffed line by line, so what a person reads in the
//! unified diff is exactly what decided the verdict.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use similar::{ChangeTag, TextDiff};

use crate::deviation::Deviation;
use crate::golden::{Expectation, Expected};
use crate::model::{Attr, Channel, Event, IdSpace, Kind, Value};
use crate::observation::{Observability, Observation};

/// Symbol-to-literal bindings of one case, one to one per identifier space.
#[derive(Debug, Default, Clone)]
pub struct Bindings {
    by_symbol: HashMap<(IdSpace, String), String>,
    by_literal: HashMap<(IdSpace, String), String>,
}

impl Bindings {
    /// Could `symbol` stand for `literal` without breaking a binding?
    pub fn compatible(&self, space: IdSpace, symbol: &str, literal: &str) -> bool {
        let s = self.by_symbol.get(&(space, symbol.to_string()));
        let l = self.by_literal.get(&(space, literal.to_string()));
        match (s, l) {
            (None, None) => true,
            (Some(bound), Some(sym)) => bound == literal && sym == symbol,
            _ => false,
        }
    }

    /// Binds if compatible; returns whether it was.
    pub fn bind(&mut self, space: IdSpace, symbol: &str, literal: &str) -> bool {
        if !self.compatible(space, symbol, literal) {
            return false;
        }
        self.by_symbol
            .insert((space, symbol.to_string()), literal.to_string());
        self.by_literal
            .insert((space, literal.to_string()), symbol.to_string());
        true
    }

    pub fn symbol_for(&self, space: IdSpace, literal: &str) -> Option<&str> {
        self.by_literal
            .get(&(space, literal.to_string()))
            .map(String::as_str)
    }
}

/// Where the observed run first left the golden path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Divergence {
    pub stage: String,
    pub channel: String,
    /// The golden event that was not seen as written (None: an extra event).
    pub expected: Option<String>,
    /// What was seen instead (None: nothing).
    pub observed: Option<String>,
    /// The seq of the record whose message brought `observed`, when a SIP
    /// deriver found it there.
    pub record: Option<u64>,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stage {:?}, channel {}: ", self.stage, self.channel)?;
        match (&self.expected, &self.observed) {
            (Some(e), Some(o)) => write!(f, "expected {e}, observed {o}"),
            (Some(e), None) => write!(f, "expected {e}, observed nothing"),
            (None, Some(o)) => write!(f, "unexpected {o}"),
            (None, None) => write!(f, "differs"),
        }
    }
}

/// One channel of one stage.
#[derive(Debug, Clone)]
pub struct ChannelResult {
    pub channel: Channel,
    /// The golden events (as the source can see them) and the observed
    /// ones, rendered for the diff.
    pub expected: Vec<String>,
    pub observed: Vec<String>,
    /// The unified diff against the golden, when the channel differs.
    pub diff: Option<String>,
    pub divergence: Option<Divergence>,
    /// What became of the deviations the target declares on this channel
    /// (None: it declares none here).
    pub deviated: Option<Deviated>,
}

/// A declared deviation as a channel's result names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// The profile line that declares it.
    pub line: usize,
    /// How every output names it ([`Deviation::label`]).
    pub label: String,
}

/// The deviations declared on one channel, and which of them occurred.
#[derive(Debug, Clone)]
pub struct Deviated {
    /// Declared here and observable by the source.
    pub declared: Vec<Declared>,
    /// Declared here, but changing nothing this source can observe.
    pub unobservable: Vec<Declared>,
    /// The declared deviations that occurred: the observed events are
    /// exactly the golden with these applied (none: the golden itself
    /// matched). None: no combination of them gives what was observed.
    pub occurred: Option<Vec<Declared>>,
    /// When none does: the comparison against the golden with every
    /// declared deviation applied, i.e. what the deviations do not excuse.
    pub unexcused: Option<Comparison>,
}

/// One comparison of expected and observed events on a channel.
#[derive(Debug, Clone)]
pub struct Comparison {
    pub expected: Vec<String>,
    pub observed: Vec<String>,
    pub diff: String,
    pub divergence: Divergence,
}

impl Deviated {
    /// The declared deviations that did not occur: the observed events are
    /// exactly the golden without them (none when nothing explains what
    /// was observed: then none is known not to have occurred).
    pub fn did_not_occur(&self) -> Vec<&Declared> {
        match &self.occurred {
            Some(found) => self
                .declared
                .iter()
                .filter(|x| !found.contains(x))
                .collect(),
            None => Vec::new(),
        }
    }
}

impl ChannelResult {
    /// Where the channel differs in a way no declared deviation excuses.
    pub fn unexcused(&self) -> Option<&Divergence> {
        self.diff.as_ref()?;
        match &self.deviated {
            Some(Deviated {
                occurred: Some(_), ..
            }) => None,
            Some(Deviated {
                unexcused: Some(c), ..
            }) => Some(&c.divergence),
            _ => self.divergence.as_ref(),
        }
    }

    /// The channel differs from the golden, exactly as declared deviations say.
    pub fn excused(&self) -> bool {
        self.diff.is_some() && self.unexcused().is_none()
    }

    /// What the declared deviations of this channel come to, in lines every
    /// report prints under the channel's diff: which excuse the difference,
    /// which did not occur, and what is left unexcused (as a unified diff
    /// against the golden with every declared deviation applied).
    pub fn standing(&self) -> Vec<String> {
        let Some(d) = &self.deviated else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match &d.occurred {
            Some(found) => {
                for x in found {
                    out.push(format!("excused: {}", x.label));
                }
                for x in d.did_not_occur() {
                    out.push(format!("did not occur: {}", x.label));
                }
            }
            None => {
                for x in &d.declared {
                    out.push(format!(
                        "declared here, but it does not explain what was observed: {}",
                        x.label
                    ));
                }
                if let Some(c) = &d.unexcused {
                    out.push(format!(
                        "not excused (against the golden with every declared deviation applied):\n{}",
                        c.diff.trim_end()
                    ));
                }
            }
        }
        for x in &d.unobservable {
            out.push(format!("not observable by this source: {}", x.label));
        }
        out
    }
}

/// One stage of a case.
#[derive(Debug, Clone)]
pub struct StageResult {
    pub stage: String,
    pub channels: Vec<ChannelResult>,
    /// What the golden expects that the source cannot observe.
    pub not_observed: Vec<String>,
    /// Channels the golden does not assert in this stage, with why.
    pub unasserted: Vec<String>,
}

impl StageResult {
    pub fn passed(&self) -> bool {
        self.channels.iter().all(|c| c.diff.is_none())
    }

    pub fn first_divergence(&self) -> Option<&Divergence> {
        self.channels.iter().find_map(|c| c.divergence.as_ref())
    }
}

/// Compares one stage. `expected` is in channel order; channels observed
/// but not expected are compared against nothing. `deviations` are the
/// target's declared deviations for this case; those of this stage apply
/// to their channels (see [`crate::deviation`] for the rules).
pub fn compare_stage(
    stage: &str,
    expected: &[(Channel, Expectation)],
    observed: &[Observation],
    seen: &Observability,
    bindings: &mut Bindings,
    deviations: &[&Deviation],
) -> StageResult {
    let mut result = StageResult {
        stage: stage.to_string(),
        channels: Vec::new(),
        not_observed: Vec::new(),
        unasserted: Vec::new(),
    };
    let mut channels: Vec<(Channel, Vec<Event>)> = Vec::new();
    for (channel, expectation) in expected {
        let events = match expectation {
            Expectation::Unasserted(why) => {
                result.unasserted.push(format!("{channel}: {why}"));
                continue;
            }
            Expectation::Events(events) => events,
        };
        if !seen.sees_channel(channel) {
            if !events.is_empty() {
                result
                    .not_observed
                    .push(format!("channel {channel} ({} events)", events.len()));
            }
            continue;
        }
        let events: Vec<Event> = events.iter().map(|e: &Expected| e.event.clone()).collect();
        visible(&events, seen, Some((&mut result.not_observed, channel)));
        channels.push((channel.clone(), events));
    }
    let mut extra: Vec<Channel> = observed
        .iter()
        .map(|o| o.channel.clone())
        .filter(|c| !expected.iter().any(|(e, _)| e == c) && seen.sees_channel(c))
        .collect();
    extra.sort();
    extra.dedup();
    channels.extend(extra.into_iter().map(|c| (c, Vec::new())));

    for (channel, golden) in channels {
        let obs: Vec<&Observation> = observed.iter().filter(|o| o.channel == channel).collect();
        let declared: Vec<&Deviation> = deviations
            .iter()
            .copied()
            .filter(|d| d.stage == stage && d.channels.contains(&channel))
            .collect();
        result.channels.push(compare_deviated(
            stage, channel, &golden, &obs, &declared, seen, bindings,
        ));
    }
    result.not_observed.sort();
    result.not_observed.dedup();
    result
}

/// The golden events a source can see, projected onto the attributes it
/// can see; with `notes`, what it cannot see is listed there.
fn visible(
    events: &[Event],
    seen: &Observability,
    mut notes: Option<(&mut Vec<String>, &Channel)>,
) -> Vec<Event> {
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        if seen.sees_event(&e.name) {
            let mut p = Event::new(e.name.clone());
            for (a, v) in &e.attrs {
                if seen.sees_attr(*a) {
                    p.attrs.insert(*a, v.clone());
                } else if let Some((notes, channel)) = notes.as_mut() {
                    notes.push(format!("{a} on channel {channel}"));
                }
            }
            out.push(p);
        } else if let Some((notes, channel)) = notes.as_mut() {
            notes.push(format!("{} on channel {channel}", e.name));
        }
    }
    out
}

/// At most this many deviations on one channel are tried in every
/// combination; beyond it, only none and all (a profile never needs more).
const COMBINED: usize = 8;

/// Compares one channel against its golden and, where the target declares
/// deviations on it, against the golden with the smallest set of them
/// applied that gives exactly what was observed.
fn compare_deviated(
    stage: &str,
    channel: Channel,
    golden: &[Event],
    obs: &[&Observation],
    declared: &[&Deviation],
    seen: &Observability,
    bindings: &mut Bindings,
) -> ChannelResult {
    let against = |exp: &[Event], bindings: &mut Bindings| {
        let order = fit_order(exp, obs, bindings);
        let fitted: Vec<Event> = order.iter().map(|&j| obs[j].event.clone()).collect();
        let records: Vec<Option<u64>> = order.iter().map(|&j| obs[j].record).collect();
        let observed = Fitted {
            events: &fitted,
            records: &records,
        };
        compare_channel(stage, channel.clone(), exp, observed, seen, bindings)
    };
    let base = visible(golden, seen, None);
    let mut tried = bindings.clone();
    let mut reference = against(&base, &mut tried);
    if declared.is_empty() {
        *bindings = tried;
        return reference;
    }
    let name = |d: &Deviation| Declared {
        line: d.line,
        label: d.label(),
    };
    let (observable, unobservable): (Vec<&Deviation>, Vec<&Deviation>) = declared
        .iter()
        .partition(|d| visible(&d.edit.apply(golden), seen, None) != base);
    // The golden with some of the observable deviations applied, in the
    // profile's order.
    let with = |chosen: &[usize]| -> Vec<Event> {
        let mut events = golden.to_vec();
        for &i in chosen {
            events = observable[i].edit.apply(&events);
        }
        visible(&events, seen, None)
    };
    let mut deviated = Deviated {
        declared: observable.iter().map(|d| name(d)).collect(),
        unobservable: unobservable.iter().map(|d| name(d)).collect(),
        occurred: None,
        unexcused: None,
    };
    let all: Vec<usize> = (0..observable.len()).collect();
    if reference.diff.is_none() {
        deviated.occurred = Some(Vec::new());
        *bindings = tried;
        reference.deviated = Some(deviated);
        return reference;
    }
    // The smallest set that gives exactly what was observed occurred.
    for chosen in subsets(all.len()) {
        let mut trial = bindings.clone();
        if against(&with(&chosen), &mut trial).diff.is_none() {
            deviated.occurred = Some(chosen.iter().map(|&i| name(observable[i])).collect());
            *bindings = trial;
            reference.deviated = Some(deviated);
            return reference;
        }
    }
    // Nothing declared explains it: what is left unexcused is the
    // difference from the golden with every declared deviation applied.
    let mut trial = bindings.clone();
    let target = against(&with(&all), &mut trial);
    *bindings = trial;
    if let (Some(diff), Some(divergence)) = (target.diff, target.divergence) {
        deviated.unexcused = Some(Comparison {
            expected: target.expected,
            observed: target.observed,
            diff,
            divergence,
        });
    }
    reference.deviated = Some(deviated);
    reference
}

/// The non-empty subsets of `0..k`, smallest first (each in increasing
/// order). Beyond [`COMBINED`] deviations on one channel only the whole
/// set is tried, so the search stays bounded whatever a profile declares.
fn subsets(k: usize) -> Vec<Vec<usize>> {
    if k > COMBINED {
        return vec![(0..k).collect()];
    }
    let mut out: Vec<Vec<usize>> = (1u32..(1 << k))
        .map(|mask| (0..k).filter(|i| mask & (1 << i) != 0).collect())
        .collect();
    out.sort_by_key(Vec::len);
    out
}

/// The observed events in the order that best fits the golden one, moving
/// events only where their source leaves the order open: an event keeps
/// its place among the events of its own sequence
/// ([`Observation::within`]: one SIP dialog, or the whole channel for a
/// feed or a log) and is free against any other sequence's. So a phone may
/// hear of two dialogs in either order, and a source that orders all of a
/// channel's events is compared as it delivered them.
///
/// Greedy: each golden event in turn takes the earliest observed event
/// that matches it and has nothing left before it in its sequence; what is
/// left follows in the order observed, for the diff to show. (Identical
/// events heading two sequences are taken in the order observed.)
/// Returns the observed events' indexes in that order.
fn fit_order(exp: &[Event], obs: &[&Observation], bindings: &Bindings) -> Vec<usize> {
    // Bindings made here only choose the order; the comparison makes its own.
    let mut bindings = bindings.clone();
    // Each sequence's events, in order: only a sequence's first event not
    // yet placed may be placed next (a flood of one dialog stays linear).
    let mut index: HashMap<Option<&str>, usize> = HashMap::new();
    let mut queues: Vec<std::collections::VecDeque<usize>> = Vec::new();
    for (j, o) in obs.iter().enumerate() {
        let q = *index.entry(o.within.as_deref()).or_insert_with(|| {
            queues.push(Default::default());
            queues.len() - 1
        });
        queues[q].push_back(j);
    }
    let mut placed = vec![false; obs.len()];
    let mut out = Vec::with_capacity(obs.len());
    for e in exp {
        let best = queues
            .iter()
            .enumerate()
            .filter_map(|(q, dq)| dq.front().map(|&j| (j, q)))
            .filter(|&(j, _)| shape_match(e, &obs[j].event, &bindings))
            .min();
        if let Some((j, q)) = best {
            bind_pair(e, &obs[j].event, &mut bindings);
            placed[j] = true;
            queues[q].pop_front();
            out.push(j);
        }
    }
    out.extend((0..obs.len()).filter(|&j| !placed[j]));
    out
}

/// Same name, and every non-identifier attribute the golden names is equal;
/// identifiers need only be present and bindable.
fn shape_match(e: &Event, o: &Event, bindings: &Bindings) -> bool {
    e.name == o.name
        && e.attrs
            .iter()
            .all(|(a, v)| match (a.kind(), v, o.attrs.get(a)) {
                (Kind::Id(space), Value::Id(sym), Some(Value::Id(lit))) => {
                    bindings.compatible(space, sym, lit)
                }
                (_, _, Some(ov)) => ov == v,
                (_, _, None) => false,
            })
}

/// Binds every identifier of a pair that can be bound.
fn bind_pair(e: &Event, o: &Event, bindings: &mut Bindings) {
    for (a, v) in &e.attrs {
        if let (Kind::Id(space), Value::Id(sym), Some(Value::Id(lit))) =
            (a.kind(), v, o.attrs.get(a))
        {
            bindings.bind(space, sym, lit);
        }
    }
}

/// An observed event as text: only `keys` (when paired with a golden
/// event), identifiers replaced by the symbols they are bound to.
fn render_observed(
    o: &Event,
    keys: Option<&BTreeSet<Attr>>,
    seen: &Observability,
    bindings: &Bindings,
) -> String {
    let mut out = Event::new(o.name.clone());
    for (a, v) in &o.attrs {
        if keys.is_some_and(|k| !k.contains(a)) || !seen.sees_attr(*a) {
            continue;
        }
        let v = match (a.kind(), v) {
            (Kind::Id(space), Value::Id(lit)) => {
                Value::Id(bindings.symbol_for(space, lit).unwrap_or(lit).to_string())
            }
            _ => v.clone(),
        };
        out.attrs.insert(*a, v);
    }
    out.to_json_line()
}

/// A channel's observed events in the order they are compared, each with
/// the record it came from ([`Observation::record`]).
#[derive(Clone, Copy)]
struct Fitted<'a> {
    events: &'a [Event],
    records: &'a [Option<u64>],
}

fn compare_channel(
    stage: &str,
    channel: Channel,
    exp: &[Event],
    observed: Fitted,
    seen: &Observability,
    bindings: &mut Bindings,
) -> ChannelResult {
    let Fitted {
        events: obs,
        records,
    } = observed;
    // Longest common subsequence on shape; the inputs are a handful of
    // events, so the quadratic table is nothing.
    let (n, m) = (exp.len(), obs.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if shape_match(&exp[i], &obs[j], bindings) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // pairs[j] = the golden event observed event j is rendered against.
    let mut pairs: Vec<Option<usize>> = vec![None; m];
    let (mut i, mut j) = (0, 0);
    let (mut unmatched_e, mut unmatched_o) = (Vec::new(), Vec::new());
    let flush = |ue: &mut Vec<usize>,
                 uo: &mut Vec<usize>,
                 pairs: &mut Vec<Option<usize>>,
                 bindings: &mut Bindings| {
        // Within a run of differences, pair events of the same name in
        // order, so a wrong attribute shows as one changed line.
        let mut used = vec![false; ue.len()];
        for &oj in uo.iter() {
            if let Some(k) = (0..ue.len()).find(|&k| !used[k] && exp[ue[k]].name == obs[oj].name) {
                used[k] = true;
                pairs[oj] = Some(ue[k]);
                bind_pair(&exp[ue[k]], &obs[oj], bindings);
            }
        }
        ue.clear();
        uo.clear();
    };
    while i < n || j < m {
        if i < n
            && j < m
            && shape_match(&exp[i], &obs[j], bindings)
            && lcs[i][j] == lcs[i + 1][j + 1] + 1
        {
            flush(&mut unmatched_e, &mut unmatched_o, &mut pairs, bindings);
            bind_pair(&exp[i], &obs[j], bindings);
            pairs[j] = Some(i);
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            unmatched_o.push(j);
            j += 1;
        } else {
            unmatched_e.push(i);
            i += 1;
        }
    }
    flush(&mut unmatched_e, &mut unmatched_o, &mut pairs, bindings);

    let expected: Vec<String> = exp.iter().map(Event::to_json_line).collect();
    let observed: Vec<String> = obs
        .iter()
        .zip(&pairs)
        .map(|(o, p)| {
            let keys: Option<BTreeSet<Attr>> = p.map(|i| exp[i].attrs.keys().copied().collect());
            render_observed(o, keys.as_ref(), seen, bindings)
        })
        .collect();
    let (diff, divergence) = if expected == observed {
        (None, None)
    } else {
        let (e_text, o_text) = (lines(&expected), lines(&observed));
        let td = TextDiff::from_lines(&e_text, &o_text);
        let unified = td
            .unified_diff()
            .context_radius(3)
            .header(
                &format!("expected {stage}/{channel}"),
                &format!("observed {stage}/{channel}"),
            )
            .to_string();
        let mut first_del = None;
        let mut first_ins = None;
        let mut record = None;
        for op in td.ops() {
            let changes: Vec<_> = td.iter_changes(op).collect();
            if changes.iter().all(|c| c.tag() == ChangeTag::Equal) {
                continue;
            }
            first_del = changes
                .iter()
                .find(|c| c.tag() == ChangeTag::Delete)
                .map(|c| c.value().trim_end().to_string());
            let inserted = changes.iter().find(|c| c.tag() == ChangeTag::Insert);
            first_ins = inserted.map(|c| c.value().trim_end().to_string());
            record = inserted
                .and_then(|c| c.new_index())
                .and_then(|k| records.get(k).copied().flatten());
            break;
        }
        let divergence = Divergence {
            stage: stage.to_string(),
            channel: channel.to_string(),
            expected: first_del,
            observed: first_ins,
            record,
        };
        (Some(unified), Some(divergence))
    };
    ChannelResult {
        channel,
        expected,
        observed,
        diff,
        divergence,
        deviated: None,
    }
}

fn lines(v: &[String]) -> String {
    v.iter().map(|l| format!("{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Strictness;
    use std::path::PathBuf;

    fn ev(line: &str) -> Event {
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        Event::from_json(&obj, Strictness::Lenient, &[]).unwrap().0
    }

    fn golden(channel: &str, lines: &[&str]) -> (Channel, Expectation) {
        let events = lines
            .iter()
            .enumerate()
            .map(|(i, l)| Expected {
                event: ev(l),
                path: PathBuf::from("g"),
                line: i + 1,
            })
            .collect();
        (Channel::parse(channel), Expectation::Events(events))
    }

    /// Events as a feed delivers them: one sequence for the channel.
    fn seen(channel: &str, lines: &[&str]) -> Vec<Observation> {
        let lines: Vec<(&str, &str)> = lines.iter().map(|l| ("", *l)).collect();
        seen_in(channel, &lines)
    }

    /// Events as SIP derives them: each in its sequence (a dialog; `""`
    /// stands for a source that orders the whole channel).
    fn seen_in(channel: &str, lines: &[(&str, &str)]) -> Vec<Observation> {
        lines
            .iter()
            .map(|(within, l)| Observation {
                channel: Channel::parse(channel),
                event: ev(l),
                raw: l.to_string(),
                within: Some(within.to_string()).filter(|w| !w.is_empty()),
                record: None,
            })
            .collect()
    }

    fn all() -> Observability {
        Observability::everything("test")
    }

    #[test]
    fn binds_identifiers_at_first_sight_and_holds_them() {
        let exp = [golden(
            "monitoring",
            &[
                r#"{"event": "EventCallCreated", "ConnID": "$c"}"#,
                r#"{"event": "EventCallPartyAdded", "ConnID": "$c", "PartyID": "$p1"}"#,
                r#"{"event": "EventCallPartyAdded", "ConnID": "$c", "PartyID": "$p2"}"#,
            ],
        )];
        let good = seen(
            "monitoring",
            &[
                r#"{"event": "EventCallCreated", "ConnID": "00aa"}"#,
                r#"{"event": "EventCallPartyAdded", "ConnID": "00aa", "PartyID": 7, "State": "Initiated"}"#,
                r#"{"event": "EventCallPartyAdded", "ConnID": "00aa", "PartyID": 9}"#,
            ],
        );
        let r = compare_stage("s", &exp, &good, &all(), &mut Bindings::default(), &[]);
        assert!(r.passed(), "{:?}", r.channels[0].diff);

        // The same PartyID twice cannot stand for two symbols.
        let reused = seen(
            "monitoring",
            &[
                r#"{"event": "EventCallCreated", "ConnID": "00aa"}"#,
                r#"{"event": "EventCallPartyAdded", "ConnID": "00aa", "PartyID": 7}"#,
                r#"{"event": "EventCallPartyAdded", "ConnID": "00aa", "PartyID": 7}"#,
            ],
        );
        let r = compare_stage("s", &exp, &reused, &all(), &mut Bindings::default(), &[]);
        assert!(!r.passed());
        let d = r.first_divergence().unwrap();
        assert!(
            d.expected.as_deref().unwrap().contains("$p2")
                && d.observed.as_deref().unwrap().contains("$p1"),
            "{d}"
        );
    }

    const CANCELLED: &str = r#"{"event": "Cancelled", "Reason": "Call completed elsewhere"}"#;
    const ACTIVE: &str = r#"{"event": "Appearance", "Index": 1, "AppearanceState": "active"}"#;
    const HELD: &str = r#"{"event": "Appearance", "Index": 1, "AppearanceState": "held"}"#;

    #[test]
    fn wire_order_is_compared_within_a_dialog_not_across() {
        let exp = [golden("sca.60970_2", &[CANCELLED, ACTIVE, HELD])];
        let across = seen_in(
            "sca.60970_2",
            &[
                ("sub NOTIFY", ACTIVE),
                ("call", CANCELLED),
                ("sub NOTIFY", HELD),
            ],
        );
        assert!(compare_stage("s", &exp, &across, &all(), &mut Bindings::default(), &[]).passed());
        let within = seen_in(
            "sca.60970_2",
            &[
                ("call", CANCELLED),
                ("sub NOTIFY", HELD),
                ("sub NOTIFY", ACTIVE),
            ],
        );
        let r = compare_stage("s", &exp, &within, &all(), &mut Bindings::default(), &[]);
        assert!(!r.passed());
        // The diff shows the dialog's order as observed.
        assert!(r.channels[0]
            .diff
            .as_deref()
            .unwrap()
            .contains(&format!("+{HELD}")));
    }

    /// RFC 6665 4.1.2.4: a NOTIFY may arrive before the 2xx to the
    /// SUBSCRIBE that caused it (Kamailio over TCP does this on unsubscribe).
    #[test]
    fn a_notify_may_overtake_the_answer_to_its_subscribe_but_not_another_notify() {
        let subscribed = r#"{"event": "Subscribed", "Expires": 0}"#;
        let idle = r#"{"event": "Appearance", "Index": 1, "AppearanceState": "idle"}"#;
        let ended = r#"{"event": "SubscriptionEnded"}"#;
        let exp = [golden("sca.60970", &[subscribed, idle, ended])];
        let (answers, notifies) = ("sub SUBSCRIBE answers", "sub NOTIFY");
        let overtaken = seen_in(
            "sca.60970",
            &[(notifies, idle), (notifies, ended), (answers, subscribed)],
        );
        assert!(
            compare_stage("s", &exp, &overtaken, &all(), &mut Bindings::default(), &[]).passed()
        );
        let reordered = seen_in(
            "sca.60970",
            &[(answers, subscribed), (notifies, ended), (notifies, idle)],
        );
        assert!(
            !compare_stage("s", &exp, &reordered, &all(), &mut Bindings::default(), &[]).passed()
        );
    }

    /// What CI saw on Kamailio's HEP mirror: the called phone's 200 on the
    /// new dialog of a retrieve and its BYE of the replaced one were
    /// mirrored in the other order than the phone sent them.
    #[test]
    fn a_party_channel_from_sip_is_ordered_within_each_call_and_a_feed_as_delivered() {
        let established = r#"{"event": "EventEstablished", "ThisDN": "60972"}"#;
        let released = r#"{"event": "EventReleased", "ThisDN": "60972"}"#;
        let ringing = r#"{"event": "EventRinging", "ThisDN": "60972"}"#;
        let exp = [golden("60972", &[ringing, established, released])];
        let mirrored = seen_in(
            "60972",
            &[("new", ringing), ("old", released), ("new", established)],
        );
        assert!(
            compare_stage("s", &exp, &mirrored, &all(), &mut Bindings::default(), &[]).passed()
        );
        // Within one call the order still counts.
        let swapped = seen_in(
            "60972",
            &[("new", established), ("new", ringing), ("old", released)],
        );
        assert!(
            !compare_stage("s", &exp, &swapped, &all(), &mut Bindings::default(), &[]).passed()
        );
        // A feed orders the whole channel: the same order is a difference.
        let fed = seen("60972", &[ringing, released, established]);
        let r = compare_stage("s", &exp, &fed, &all(), &mut Bindings::default(), &[]);
        assert!(!r.passed());
        assert_eq!(r.channels[0].observed, [ringing, released, established]);
    }

    /// An event that matches nothing stays where its sequence puts it, and
    /// the rest of the channel is still fitted around it.
    #[test]
    fn an_unmatched_event_is_shown_in_the_order_observed() {
        let exp = [golden("sca.60970", &[CANCELLED, ACTIVE])];
        let obs = seen_in(
            "sca.60970",
            &[
                ("sub NOTIFY", HELD),
                ("sub NOTIFY", ACTIVE),
                ("call", CANCELLED),
            ],
        );
        let r = compare_stage("s", &exp, &obs, &all(), &mut Bindings::default(), &[]);
        assert_eq!(r.channels[0].observed, [CANCELLED, HELD, ACTIVE]);
        let d = r.first_divergence().unwrap();
        assert_eq!(
            (d.expected.as_deref(), d.observed.as_deref()),
            (None, Some(HELD))
        );
    }

    #[test]
    fn bindings_carry_across_stages() {
        let mut b = Bindings::default();
        let exp = [golden(
            "60970",
            &[r#"{"event": "EventRinging", "ConnID": "$c"}"#],
        )];
        assert!(compare_stage(
            "a",
            &exp,
            &seen("60970", &[r#"{"event": "EventRinging", "ConnID": "1"}"#]),
            &all(),
            &mut b,
            &[]
        )
        .passed());
        let r = compare_stage(
            "b",
            &exp,
            &seen("60970", &[r#"{"event": "EventRinging", "ConnID": "2"}"#]),
            &all(),
            &mut b,
            &[],
        );
        assert!(!r.passed());
        assert!(r.channels[0]
            .diff
            .as_deref()
            .unwrap()
            .contains(r#"+{"event": "EventRinging", "ConnID": "2"}"#));
    }

    #[test]
    fn wrong_value_missing_and_extra_events_are_named() {
        let exp = [
            golden(
                "60970",
                &[
                    r#"{"event": "EventRinging", "ThisDN": "60970", "CallState": "Covered"}"#,
                    r#"{"event": "EventEstablished", "ThisDN": "60970"}"#,
                ],
            ),
            golden("60970_2", &[]),
        ];
        let obs: Vec<Observation> = [
            seen("60970", &[r#"{"event": "EventRinging", "ThisDN": "60970", "CallState": "Ok", "CallType": "Internal"}"#]),
            seen("60970_2", &[r#"{"event": "EventRinging", "ThisDN": "60970_2"}"#]),
            seen("60971", &[r#"{"event": "EventOffHook", "ThisDN": "60971"}"#]),
        ]
        .concat();
        let r = compare_stage("s", &exp, &obs, &all(), &mut Bindings::default(), &[]);
        let ch: Vec<_> = r
            .channels
            .iter()
            .map(|c| (c.channel.to_string(), c.diff.is_some()))
            .collect();
        assert_eq!(
            ch,
            vec![
                ("60970".into(), true),
                ("60970_2".into(), true),
                ("60971".into(), true)
            ]
        );
        let d = r.first_divergence().unwrap();
        assert_eq!(d.channel, "60970");
        // The changed attribute is shown on one line, projected onto the
        // golden's attributes (CallType, not in the golden, is not shown).
        assert_eq!(
            d.observed.as_deref(),
            Some(r#"{"event": "EventRinging", "ThisDN": "60970", "CallState": "Ok"}"#)
        );
        let diff = r.channels[0].diff.as_deref().unwrap();
        assert!(
            diff.contains(r#"-{"event": "EventEstablished", "ThisDN": "60970"}"#),
            "{diff}"
        );
        assert_eq!(r.channels[1].divergence.as_ref().unwrap().expected, None);
    }

    #[test]
    fn unobservable_attributes_and_channels_are_not_compared_but_listed() {
        let exp = [
            golden(
                "60970",
                &[r#"{"event": "EventRinging", "ThisDN": "60970", "ThisDNRole": "Destination"}"#],
            ),
            golden(
                "monitoring",
                &[r#"{"event": "EventCallCreated", "ConnID": "$c"}"#],
            ),
        ];
        let sip = Observability {
            source: "sip".into(),
            wire_source: "sip".into(),
            channels: Some(vec![Channel::parse("60970")]),
            blind_to: vec![Attr::ThisDnRole],
            blind_events: Vec::new(),
        };
        let r = compare_stage(
            "s",
            &exp,
            &seen(
                "60970",
                &[r#"{"event": "EventRinging", "ThisDN": "60970"}"#],
            ),
            &sip,
            &mut Bindings::default(),
            &[],
        );
        assert!(r.passed());
        assert_eq!(
            r.not_observed,
            vec![
                "ThisDNRole on channel 60970".to_string(),
                "channel monitoring (1 events)".to_string()
            ]
        );
    }

    /// Smallest sets first; a channel with more deviations than can be
    /// combined is tried with all of them (no overflow, however many).
    #[test]
    fn deviation_sets_are_tried_smallest_first_and_stay_bounded() {
        assert_eq!(
            subsets(3),
            vec![
                vec![0],
                vec![1],
                vec![2],
                vec![0, 1],
                vec![0, 2],
                vec![1, 2],
                vec![0, 1, 2]
            ]
        );
        assert_eq!(subsets(COMBINED).len(), (1 << COMBINED) - 1);
        assert_eq!(subsets(40), vec![(0..40).collect::<Vec<_>>()]);
    }
}
