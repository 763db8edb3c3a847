//! One case end to end: start the target, start the user agents, set them
//! up, then stage by stage run the steps, wait for the events the golden
//! expects (or a deadline), let late events settle, and compare.

mod live;
mod perform;
pub mod plan;

pub use plan::{Deadlines, Events, PlanError, RunOptions, Target};

use std::time::{Duration, Instant};

use live::{reset, start, Source};
use perform::perform;

use crate::diff::{compare_stage, Bindings};
use crate::golden::GoldenStage;
use crate::model::Channel;
use crate::observe::hep::ServerView;
use crate::observe::sip_tlib::SipTlibDeriver;
use crate::observe::{EventLog, Observability, Observation};
use crate::outcome::{settle_verdict, CaseResult, Problem, Verdict};
use crate::sip::transport::Recorder;
use crate::suite::Prepared;
use crate::target::{Deviation, Profile};
use crate::topology::Topology;

/// The SIP domain of the embedded target.
pub const DOMAIN: &str = "sca.test";

/// Runs every case concurrently (each has its own target and agents) and
/// returns the results in input order.
pub async fn run_all(cases: &[Prepared], topology: &Topology, opts: RunOptions) -> Vec<CaseResult> {
    run_all_reporting(cases, topology, opts, |_| {}).await
}

/// [`run_all`], calling `done` with each case as it finishes (in finishing
/// order), for a stream of results.
pub async fn run_all_reporting(
    cases: &[Prepared],
    topology: &Topology,
    opts: RunOptions,
    mut done: impl FnMut(&CaseResult),
) -> Vec<CaseResult> {
    if let Target::Remote(_) = opts.target {
        let mut out = Vec::with_capacity(cases.len());
        for p in cases {
            let r = run_case(p, topology, opts.clone()).await;
            done(&r);
            out.push(r);
        }
        return out;
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, p) in cases.iter().enumerate() {
        let (p, topology, opts) = (p.clone(), topology.clone(), opts.clone());
        set.spawn(async move { (i, run_case(&p, &topology, opts).await) });
    }
    let mut out: Vec<Option<CaseResult>> = vec![None; cases.len()];
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, r)) => {
                done(&r);
                out[i] = Some(r);
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out.into_iter().flatten().collect()
}

/// What the events of a run come from, and so what it can observe.
fn source(p: &Prepared, topology: &Topology, opts: &RunOptions) -> Observability {
    use crate::observe::sip_tlib::WIRE_SOURCE;
    let feed = |s: String| Observability::everything(&s).with_wire_source(WIRE_SOURCE);
    match (&opts.target, &opts.events) {
        (Target::Embedded { .. }, _) => feed("the embedded server's event feed".into()),
        (Target::Remote(_), Events::Feed(addr)) => feed(format!("the event feed at {addr}")),
        (Target::Remote(_), Events::Log(path)) => {
            feed(format!("the server log {}", path.display()))
        }
        (Target::Remote(profile), Events::Sip) => sip_deriver(p, topology, profile).observability(),
        (Target::Remote(profile), Events::Hep(listener)) => {
            let view = format!(
                "derived from the SIP the server mirrored over HEP to {}",
                listener.local_addr()
            );
            Observability {
                source: format!("T-Library events {view}"),
                wire_source: format!("SCA wire layer {view}"),
                ..sip_deriver(p, topology, profile).observability()
            }
        }
    }
}

/// The deriver of T-Library events from the phones' SIP, for a target with
/// no event feed.
pub(super) fn sip_deriver(p: &Prepared, topology: &Topology, profile: &Profile) -> SipTlibDeriver {
    SipTlibDeriver::for_case(&p.case.parties, topology, &profile.dn_of_user(topology))
}

pub async fn run_case(p: &Prepared, topology: &Topology, mut opts: RunOptions) -> CaseResult {
    let started = Instant::now();
    // A profile that knows its server's timing says so.
    if let Target::Remote(profile) = &opts.target {
        opts.deadlines = opts.deadlines.with_timers(&profile.timers);
    }
    let recorder = Recorder::default();
    let log = EventLog::default();
    let mut result = CaseResult::new(
        &p.case.id,
        &p.case.title,
        opts.transport,
        source(p, topology, &opts),
    );
    if let Target::Remote(profile) = &opts.target {
        let missing: Vec<&String> = p
            .case
            .requires
            .iter()
            .filter(|c| !profile.capabilities.contains(*c))
            .collect();
        if !missing.is_empty() {
            result.verdict = Verdict::Skipped;
            let missing: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            result.notes.push(format!(
                "{} does not claim {}",
                profile.name,
                missing.join(", ")
            ));
            return result;
        }
    }
    if let Target::Remote(profile) = &opts.target {
        if let Err(e) = reset(profile).await {
            result.verdict = Verdict::Inconclusive;
            result.error = Some(e);
            result.duration = started.elapsed();
            return result;
        }
    }
    let deviations: Vec<Deviation> = match &opts.target {
        Target::Remote(profile) => profile
            .deviations
            .iter()
            .filter(|d| d.applies_to(&p.case.id))
            .cloned()
            .collect(),
        Target::Embedded { .. } => Vec::new(),
    };
    let deviation_refs: Vec<&Deviation> = deviations.iter().collect();
    let mut marks: Vec<(String, usize)> = vec![("setup".into(), 0)];
    let mut server_view: Option<ServerView> = None;
    // What the event source says about itself, for the report.
    let mut source_notes: Vec<String> = Vec::new();
    match start(p, topology, &opts, &recorder, &log).await {
        Err(e) => result.error = Some(e),
        Ok(live) => {
            let mut bindings = Bindings::default();
            for (stage, golden) in p.case.stages.iter().zip(&p.golden) {
                if !live.catch_up(&recorder, opts.deadlines.stage).await {
                    // The server mirrors nothing: no stage can be judged
                    // (finishing below says why).
                    break;
                }
                let mark = log.len();
                marks.push((stage.name.clone(), mark));
                let mut failed_step = None;
                for step in &stage.steps {
                    let deadline = opts.deadlines.answer(opts.deadlines.step, opts.transport);
                    if let Err(e) = perform(&live, topology, step, deadline).await {
                        failed_step = Some(format!(
                            "stage {:?}, step at {}:{}: {e}",
                            stage.name,
                            p.case.path.display(),
                            step.line
                        ));
                        break;
                    }
                }
                // Wait for what the target is expected to send: the golden
                // with its declared deviations applied, never for what it
                // is declared not to send.
                let want = expected_counts(golden, &stage.name, &deviation_refs, &result.source);
                let arrived = |obs: &[Observation]| {
                    want.iter()
                        .all(|(c, n)| obs.iter().filter(|o| &o.channel == c).count() >= *n)
                };
                log.wait_for(mark, opts.deadlines.stage, arrived).await;
                log.settle(opts.deadlines.settle, opts.deadlines.stage)
                    .await;
                let observed = log.since(mark);
                result.stages.push(compare_stage(
                    &stage.name,
                    &golden.channels,
                    &observed,
                    &result.source,
                    &mut bindings,
                    &deviation_refs,
                ));
                if failed_step.is_some() {
                    result.error = failed_step;
                    break;
                }
            }
            for agent in &live.agents {
                for problem in agent.status().problems {
                    result.problems.push(Problem {
                        what: format!("{}: {problem}", agent.dn()),
                        raw: None,
                    });
                }
            }
            if let Target::Remote(_) = opts.target {
                live.catch_up(&recorder, opts.deadlines.stage).await;
                marks.push(("teardown".into(), log.len()));
                for agent in &live.agents {
                    let _ = agent.act(|a| a.tear_down()).await;
                }
                // Let the server finish with what the teardown sent before
                // the next case uses the same DNs.
                log.settle(Duration::from_millis(200), Duration::from_secs(2))
                    .await;
            }
            match live.source {
                Some(Source::Hep(view)) => server_view = Some(view.finish().await),
                Some(Source::Log(follower)) => {
                    let skipped = follower.skipped();
                    if !skipped.is_empty() {
                        source_notes.push(format!("server log: {skipped}"));
                    }
                }
                _ => {}
            }
        }
    }
    for r in recorder.snapshot() {
        if let Some(why) = &r.problem {
            let verb = match r.direction {
                crate::sip::transport::Direction::Received => "received from",
                crate::sip::transport::Direction::Sent => "sent to",
            };
            result.problems.push(Problem {
                what: format!("{} {verb} {} ({}): {why}", r.agent, r.peer, r.transport),
                raw: Some(r.raw.clone()),
            });
        }
        result.records.push(r);
    }
    result.problems.extend(
        log.problems()
            .into_iter()
            .map(|what| Problem { what, raw: None }),
    );
    for (i, obs) in log.since(0).into_iter().enumerate() {
        let stage = marks
            .iter()
            .rev()
            .find(|(_, m)| *m <= i)
            .map(|(s, _)| s.clone())
            .unwrap_or_default();
        result.events.push((stage, obs));
    }
    // A server that mirrored nothing stopped the case before its first
    // stage (see `Live::catch_up`): with no stage compared, the error makes
    // it inconclusive.
    if let (Some(view), Events::Hep(listener)) = (server_view, &opts.events) {
        match view.compare(&result.records, listener.local_addr()) {
            Ok(notes) => source_notes.extend(notes),
            Err(e) => {
                result.error.get_or_insert(e);
            }
        }
        result.mirrored = view.packets;
    }
    settle_verdict(&mut result);
    result.notes.extend(source_notes);
    result.duration = started.elapsed();
    result
}

/// How many events each observable channel of a stage is expected to
/// receive on this target: the golden with every declared deviation of the
/// stage applied.
fn expected_counts(
    golden: &GoldenStage,
    stage: &str,
    deviations: &[&Deviation],
    seen: &Observability,
) -> Vec<(Channel, usize)> {
    use crate::golden::Expectation;
    golden
        .channels
        .iter()
        .filter(|(c, _)| seen.sees_channel(c))
        .map(|(c, e)| {
            let Expectation::Events(events) = e else {
                return (c.clone(), 0);
            };
            let mut events: Vec<crate::model::Event> =
                events.iter().map(|e| e.event.clone()).collect();
            for d in deviations
                .iter()
                .filter(|d| d.stage == stage && d.channels.contains(c))
            {
                events = d.edit.apply(&events);
            }
            (
                c.clone(),
                events.iter().filter(|e| seen.sees_event(&e.name)).count(),
            )
        })
        .collect()
}
