//! Mutation testing of the suite's golden files: a golden expectation that
//! no target's run can catch when it is wrong checks nothing.
//!
//! Every asserted golden event of every case is mutated (deleted; each of
//! its attributes changed), and each mutant is judged again (`rejudge`)
//! from what a target really sent: the embedded server's live run (all
//! channels, from its event feed) and Kamailio's recorded captures
//! (`fixtures/captures/kamailio/`, judged with its profile). A mutant must
//! be caught (the case no longer passes or xfails) unless the expectation
//! is not observable there: a channel, event or attribute the source
//! cannot see, or an event or attribute a declared deviation of the target
//! says it does not send. Any survivor fails the test, named.

mod common;
use common::suite;

use std::collections::BTreeMap;

use scacheck::check::rejudge;
use scacheck::deviation::{matches, Deviation, Edit};
use scacheck::golden::Expectation;
use scacheck::model::{Attr, Channel, Event, IdSpace, Kind, Value};
use scacheck::outcome::CaseResult;
use scacheck::run::{run_all, RunOptions};
use scacheck::suite::Prepared;

/// One changed golden file: which event, and how.
#[derive(Debug, Clone)]
struct Mutant {
    stage: usize,
    channel: Channel,
    event: usize,
    /// None: the event is deleted; Some: this attribute gets another value.
    attr: Option<Attr>,
}

impl Mutant {
    fn describe(&self, p: &Prepared) -> String {
        let stage = &p.case.stages[self.stage];
        match self.attr {
            None => format!(
                "{} {}/{} event {} deleted",
                p.case.id,
                stage.name,
                self.channel,
                self.event + 1
            ),
            Some(a) => format!(
                "{} {}/{} event {} with another {a}",
                p.case.id,
                stage.name,
                self.channel,
                self.event + 1
            ),
        }
    }
}

/// Another value of the same kind, never equal to `v`. An identifier's
/// other value is another symbol of the case in the same space (a symbol
/// means only which other places it recurs in, so a fresh name would be
/// the same expectation); `symbols` are the case's, by space.
fn other(v: &Value, attr: Attr, symbols: &BTreeMap<IdSpace, Vec<String>>) -> Option<Value> {
    fn next<T: Copy + PartialEq>(all: &[T], v: T) -> T {
        let i = all.iter().position(|x| *x == v).unwrap_or(0);
        all[(i + 1) % all.len()]
    }
    use scacheck::model::{ApState, CallState, CallType, Cause, PartyState, Role};
    Some(match v {
        Value::Id(s) => {
            let Kind::Id(space) = attr.kind() else {
                return None;
            };
            let other = symbols.get(&space)?.iter().find(|o| *o != s)?;
            Value::Id(other.clone())
        }
        Value::Dn(s) => Value::Dn(format!("{s}9")),
        Value::Text(s) => Value::Text(format!("{s} (mutant)")),
        Value::Int(i) => Value::Int(i + 1),
        Value::Role(r) => Value::Role(next(Role::ALL, *r)),
        Value::CallState(c) => Value::CallState(next(CallState::ALL, *c)),
        Value::CallType(c) => Value::CallType(next(CallType::ALL, *c)),
        Value::Cause(c) => Value::Cause(next(Cause::ALL, *c)),
        Value::PartyState(c) => Value::PartyState(next(PartyState::ALL, *c)),
        Value::ApState(c) => Value::ApState(next(ApState::ALL, *c)),
    })
}

/// Every symbol a case's golden files use, by identifier space.
fn symbols(p: &Prepared) -> BTreeMap<IdSpace, Vec<String>> {
    let mut out: BTreeMap<IdSpace, Vec<String>> = BTreeMap::new();
    for g in &p.golden {
        for (_, e) in &g.channels {
            let Expectation::Events(events) = e else {
                continue;
            };
            for (a, v) in events.iter().flat_map(|e| e.event.attrs.iter()) {
                if let (Kind::Id(space), Value::Id(s)) = (a.kind(), v) {
                    let known = out.entry(space).or_default();
                    if !known.contains(s) {
                        known.push(s.clone());
                    }
                }
            }
        }
    }
    out
}

/// Every mutant of a case's asserted golden events (an identifier only
/// where the case has another symbol of its space).
fn mutants(p: &Prepared) -> Vec<Mutant> {
    let symbols = symbols(p);
    let mut out = Vec::new();
    for (stage, golden) in p.golden.iter().enumerate() {
        for (channel, e) in &golden.channels {
            let Expectation::Events(events) = e else {
                continue;
            };
            for (i, e) in events.iter().enumerate() {
                let m = |attr| Mutant {
                    stage,
                    channel: channel.clone(),
                    event: i,
                    attr,
                };
                out.push(m(None));
                out.extend(
                    e.event
                        .attrs
                        .iter()
                        .filter(|(a, v)| other(v, **a, &symbols).is_some())
                        .map(|(a, _)| m(Some(*a))),
                );
            }
        }
    }
    out
}

/// The case with one golden event mutated.
fn apply(p: &Prepared, m: &Mutant) -> Prepared {
    let symbols = symbols(p);
    let mut p = p.clone();
    let (_, e) = p.golden[m.stage]
        .channels
        .iter_mut()
        .find(|(c, _)| *c == m.channel)
        .expect("the mutated channel");
    let Expectation::Events(events) = e else {
        unreachable!("only asserted channels are mutated")
    };
    match m.attr {
        None => {
            events.remove(m.event);
        }
        Some(a) => {
            let ev = &mut events[m.event].event;
            let v = other(&ev.attrs[&a], a, &symbols).expect("mutants have another value");
            ev.attrs.insert(a, v);
        }
    }
    p
}

/// Why a mutant cannot be caught on this target, if it cannot.
fn not_observable(
    p: &Prepared,
    m: &Mutant,
    judged: &CaseResult,
    deviations: &[Deviation],
) -> Option<&'static str> {
    let seen = &judged.source;
    let stage = &p.case.stages[m.stage];
    let golden: &Event = p.golden[m.stage]
        .channels
        .iter()
        .find_map(|(c, e)| match e {
            Expectation::Events(ev) if *c == m.channel => Some(&ev[m.event].event),
            _ => None,
        })
        .expect("the mutated event");
    if !seen.sees_channel(&m.channel) {
        return Some("channel not observed by the source");
    }
    if !seen.sees_event(&golden.name) {
        return Some("event not observed by the source");
    }
    if m.attr.is_some_and(|a| !seen.sees_attr(a)) {
        return Some("attribute not observed by the source");
    }
    for d in deviations
        .iter()
        .filter(|d| d.covers(&p.case.id, &stage.name, &m.channel))
    {
        match &d.edit {
            Edit::Absent(g) | Edit::Instead { golden: g, .. }
                if g.iter().any(|pat| matches(pat, golden)) =>
            {
                return Some("declared absent on this target");
            }
            Edit::Changed {
                golden: g,
                without,
                set,
            } if g.iter().any(|pat| matches(pat, golden))
                && m.attr
                    .is_some_and(|a| without.contains(&a) || set.contains_key(&a)) =>
            {
                return Some("attribute declared different on this target");
            }
            _ => {}
        }
    }
    None
}

#[derive(Default)]
struct Counts {
    mutants: usize,
    caught: usize,
    not_observable: usize,
    survived: Vec<String>,
}

/// Judges every mutant of every case from what the target sent.
fn mutate(target: &str, judged: &[(&Prepared, CaseResult)], deviations: &[Deviation]) -> Counts {
    let mut counts = Counts::default();
    for (p, run) in judged {
        assert!(
            run.verdict.expected(),
            "{target}: {} must pass or xfail before mutation, got {:?}: {:?}",
            p.case.id,
            run.verdict,
            run.headline()
        );
        for m in mutants(p) {
            counts.mutants += 1;
            if not_observable(p, &m, run, deviations).is_some() {
                counts.not_observable += 1;
                continue;
            }
            let r = rejudge(&apply(p, &m), run, deviations);
            if r.verdict.expected() {
                counts
                    .survived
                    .push(format!("{}: {:?}", m.describe(p), r.verdict));
            } else {
                counts.caught += 1;
            }
        }
    }
    println!(
        "{target}: {} mutants, {} caught, {} not observable, {} survived",
        counts.mutants,
        counts.caught,
        counts.not_observable,
        counts.survived.len()
    );
    counts
}

#[test]
fn every_observable_golden_expectation_is_checked_on_the_embedded_server() {
    let (prepared, topology) = suite();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let live = rt.block_on(run_all(&prepared, &topology, RunOptions::default()));
    let judged: Vec<(&Prepared, CaseResult)> = prepared.iter().zip(live).collect();
    let counts = mutate("embedded", &judged, &[]);
    assert!(counts.mutants > 200, "{} mutants", counts.mutants);
    // Everything is observable from the embedded server's feed.
    assert_eq!(counts.not_observable, 0);
    assert!(
        counts.survived.is_empty(),
        "survivors:\n{}",
        counts.survived.join("\n")
    );
}

#[test]
fn every_observable_golden_expectation_is_checked_on_kamailio() {
    let (prepared, topology) = suite();
    let (profile, captures) = common::kamailio_captures(&prepared, &topology);
    let judged: Vec<(&Prepared, CaseResult)> = captures
        .iter()
        .map(|(p, packets)| (p, common::judge_capture(p, packets, &topology, &profile)))
        .collect();
    let counts = mutate("kamailio", &judged, &profile.deviations);
    assert!(counts.caught > 300, "{} caught", counts.caught);
    assert!(
        counts.survived.is_empty(),
        "survivors:\n{}",
        counts.survived.join("\n")
    );
}
