//! One case end to end: start the target, start the user agents, set them
//! up, then stage by stage run the steps, wait for the events the golden
//! expects (or a deadline), let late events settle, and compare.

mod health;
mod leak;
mod live;
mod perform;
pub mod plan;
mod pool;
mod relay;

pub use plan::{Deadlines, Events, PlanError, RunOptions, Target};

/// Why a case could not be driven to its end (its verdict is then
/// inconclusive unless what was compared already failed), and where.
#[derive(Debug, thiserror::Error)]
pub enum Undriven {
    /// A profile's line command (clean, state) did not do its job.
    #[error("`{command}` {why}")]
    Command { command: String, why: String },
    /// The target or a phone could not be started.
    #[error("{0}")]
    Start(String),
    /// A phone's registration or subscription did not complete, and what
    /// the phone found wrong on the way (a failed send, a refusal).
    #[error("setup: {error}{}", because(problems))]
    Setup {
        error: crate::ua::UaError,
        problems: Vec<String>,
    },
    #[error("stage {stage:?}, step at {file}:{line}: {why}")]
    Step {
        stage: String,
        file: String,
        line: usize,
        why: String,
    },
}

/// What a setup error adds after the wait that failed: the phone's own
/// problems, which say why.
fn because(problems: &[String]) -> String {
    match problems.is_empty() {
        true => String::new(),
        false => format!(" ({})", problems.join("; ")),
    }
}

use std::time::Instant;

use live::{command, start, Source};
use perform::{acks_due, finish, perform, perform_together};

use crate::derive::sip_tlib::SipTlibDeriver;
use crate::diff::{compare_stage, Bindings};
use crate::line::Identities;
use crate::observation::{Observability, Observation};
use crate::observe::hep::ServerView;
use crate::observe::EventLog;
use crate::outcome::{settle_verdict, CaseResult, Problem, Verdict};
use crate::sip::transport::Recorder;
use crate::suite::Prepared;
use crate::target::Deviation;

use crate::topology::Topology;

/// How long a stage waits, after the events it expects, for the ones the
/// target is declared not to send (a quiet time: each arrival restarts it).
pub const GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// The SIP domain of the embedded target.
pub const DOMAIN: &str = "sca.test";

/// Runs every case and returns the results in input order: concurrently,
/// up to `opts.jobs` at once, each on a line of the target's pool that no
/// other running case has (the embedded target starts a server per case).
pub async fn run_all(cases: &[Prepared], topology: &Topology, opts: RunOptions) -> Vec<CaseResult> {
    run_all_reporting(cases, topology, opts, |_| {}).await
}

/// [`run_all`], telling `progress` of each case as it starts and as it
/// finishes (in finishing order), for a stream of results and a status line.
pub async fn run_all_reporting(
    cases: &[Prepared],
    topology: &Topology,
    opts: RunOptions,
    mut progress: impl FnMut(crate::outcome::Progress),
) -> Vec<CaseResult> {
    let lines = match &opts.target {
        Target::Remote(profile) => pool::Lines::new(profile.clone()),
        // Every case has a server of its own: one line each, all alike.
        Target::Embedded { .. } => pool::Lines::per_case(Identities::own(topology)),
    };
    let jobs = opts
        .jobs
        .unwrap_or(lines.size().unwrap_or(cases.len()))
        .clamp(1, cases.len().max(1));
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(jobs));
    // Once the target has stopped (or was not running), no case starts:
    // each is inconclusive with why.
    let down: std::sync::Arc<std::sync::Mutex<Option<String>>> =
        std::sync::Arc::new(std::sync::Mutex::new(not_running(&opts)));
    let mut set = tokio::task::JoinSet::new();
    let mut out: Vec<Option<CaseResult>> = vec![None; cases.len()];
    let mut finished =
        |joined: Result<(usize, CaseResult), tokio::task::JoinError>,
         progress: &mut dyn FnMut(crate::outcome::Progress)| match joined {
            Ok((i, r)) => {
                progress(crate::outcome::Progress::Finished(&cases[i].case.id, &r));
                out[i] = Some(r);
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
    for (i, p) in cases.iter().enumerate() {
        let (p, topology, opts) = (p.clone(), topology.clone(), opts.clone());
        let (lines, down) = (lines.clone(), down.clone());
        // Cases start in their order (a slot taken here, not in the task),
        // so that the one after a case that stopped the server is not run;
        // what finishes meanwhile is reported at once.
        let slot = loop {
            tokio::select! {
                slot = slots.clone().acquire_owned() => break slot,
                Some(joined) = set.join_next() => finished(joined, &mut progress),
            }
        };
        progress(crate::outcome::Progress::Started(&p.case.id));
        set.spawn(async move {
            let _slot = slot;
            let gone = down.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let taken = match gone {
                Some(why) => Err(format!("not run: {why}")),
                None => lines.take(i).await,
            };
            let result = match taken {
                Ok(line) => {
                    let r = run_case_on(&p, &topology, opts, &line).await;
                    match &r.stopped {
                        // Its line cannot be cleaned: nobody answers.
                        Some(_) => {
                            let mut down = down.lock().unwrap_or_else(|e| e.into_inner());
                            down.get_or_insert(format!(
                                "the server stopped during case {}",
                                r.key()
                            ));
                        }
                        None => lines.give_back(line, &r, &topology).await,
                    }
                    r
                }
                Err(why) => {
                    let mut r = CaseResult::new(
                        &p.case.id,
                        &p.case.title,
                        opts.transport,
                        source(&p, &topology, &opts, &Identities::own(&topology)),
                    );
                    r.verdict = Verdict::Inconclusive;
                    r.error = Some(why);
                    r
                }
            };
            (i, result)
        });
    }
    while let Some(joined) = set.join_next().await {
        finished(joined, &mut progress);
    }
    out.into_iter().flatten().collect()
}

/// How a run tells that its target stopped: the profile's `[liveness]`;
/// the embedded server is always probed. (A PID file that cannot be named
/// was reported when the run began.)
fn watch(opts: &RunOptions) -> health::Watch {
    match &opts.target {
        Target::Remote(profile) => health::Watch {
            pid_file: profile.pid_file().ok().flatten(),
            probe: profile.liveness.as_ref().is_some_and(|l| l.probe),
        },
        Target::Embedded { .. } => health::Watch {
            pid_file: None,
            probe: true,
        },
    }
}

/// Where a stage began: its name, and how many events and SIP records
/// the case had by then (two counts: a message can give no event, or
/// several).
#[derive(Debug, Clone)]
pub(super) struct Mark {
    pub stage: String,
    pub event: usize,
    pub record: usize,
}

impl Default for Mark {
    /// The setup, from the case's start.
    fn default() -> Mark {
        Mark {
            stage: "setup".into(),
            event: 0,
            record: 0,
        }
    }
}

/// Asks whether the server has stopped; if it has, that is the case's
/// finding ([`CaseResult::stopped`]), and what the case was waiting for
/// when it did is a consequence, kept as a note.
async fn health_check(
    result: &mut CaseResult,
    opts: &RunOptions,
    probe: &health::Probe,
    recorder: &Recorder,
    marks: &[Mark],
) {
    if let Some(why) = health::stopped(&watch(opts), probe).await {
        let after = health::last_act(&recorder.snapshot(), marks);
        result.stopped = Some(format!("the server stopped answering after {after}: {why}"));
        if let Some(e) = result.error.take() {
            result
                .notes
                .push(format!("where the case stood when it stopped: {e}"));
        }
    }
}

/// The probe of a remote target outside a live case (one that could not
/// start); an embedded server that could not start was never there.
fn remote_probe(opts: &RunOptions) -> Option<health::Probe> {
    let Target::Remote(profile) = &opts.target else {
        return None;
    };
    Some(health::Probe {
        to: profile.address,
        transport: opts.transport,
        tls: opts.tls.clone(),
        domain: profile.domain.clone(),
    })
}

/// Why no case can run: the profile's PID file names no running server.
fn not_running(opts: &RunOptions) -> Option<String> {
    let Target::Remote(profile) = &opts.target else {
        return None;
    };
    match profile.pid_file() {
        Err(e) => Some(e.to_string()),
        Ok(Some(path)) => health::running(&path).err(),
        Ok(None) => None,
    }
}

/// What the events of a run come from, and so what it can observe.
fn source(
    p: &Prepared,
    topology: &Topology,
    opts: &RunOptions,
    line: &Identities,
) -> Observability {
    use crate::derive::sip_tlib::WIRE_SOURCE;
    let feed = |s: String| Observability::everything(&s).with_wire_source(WIRE_SOURCE);
    match (&opts.target, &opts.events) {
        (Target::Embedded { .. }, _) => feed("the embedded server's event feed".into()),
        (Target::Remote(_), Events::Feed(addr)) => feed(format!("the event feed at {addr}")),
        (Target::Remote(_), Events::Log(path)) => {
            feed(format!("the server log {}", path.display()))
        }
        (Target::Remote(_), Events::Sip) => sip_deriver(p, topology, line).observability(),
        (Target::Remote(_), Events::Hep(listener)) => {
            let view = format!(
                "derived from the SIP the server mirrored over HEP to {}",
                listener.local_addr()
            );
            Observability {
                source: format!("T-Library events {view}"),
                wire_source: format!("SCA wire layer {view}"),
                ..sip_deriver(p, topology, line).observability()
            }
        }
    }
}

/// The deriver of T-Library events from the phones' SIP, for a target with
/// no event feed.
pub(super) fn sip_deriver(p: &Prepared, topology: &Topology, line: &Identities) -> SipTlibDeriver {
    SipTlibDeriver::for_case(&p.case.parties, topology, &line.dn_of_user(topology))
}

/// One case on the target's first line (the embedded target: its own
/// server).
pub async fn run_case(p: &Prepared, topology: &Topology, opts: RunOptions) -> CaseResult {
    let line = match &opts.target {
        Target::Remote(profile) => profile.lines[0].clone(),
        Target::Embedded { .. } => Identities::own(topology),
    };
    run_case_on(p, topology, opts, &line).await
}

/// One case on `line`: cleaned first where the profile can, driven stage
/// by stage, torn down and checked for leftovers.
pub async fn run_case_on(
    p: &Prepared,
    topology: &Topology,
    mut opts: RunOptions,
    line: &Identities,
) -> CaseResult {
    let started = Instant::now();
    // A case that runs only over a connection runs over one the target
    // serves, whatever the run's transport.
    let transport = p.case.transport_in(opts.transport, &served(&opts));
    let switched = transport
        .as_ref()
        .ok()
        .filter(|t| **t != opts.transport)
        .map(|t| {
            format!(
                "run over {}: the case runs over {} only (this run is {})",
                t.via_token(),
                p.case
                    .transports
                    .iter()
                    .map(|t| t.via_token())
                    .collect::<Vec<_>>()
                    .join(" or "),
                opts.transport.via_token()
            )
        });
    if let Ok(t) = transport {
        opts.transport = t;
    }
    // A profile that knows its server's timing says so.
    if let Target::Remote(profile) = &opts.target {
        opts.deadlines = opts.deadlines.with_timers(&profile.timers);
    }
    // At --loss, what the server sends may come a retransmission or five
    // later: a stage waits for its events as long as the server may
    // still send them again (Timer F, 64 T1), as an answer is waited for.
    if opts.loss.is_some() {
        let again = crate::sip::retransmit::timeout(opts.deadlines.t1);
        opts.deadlines.stage = opts.deadlines.stage.max(again);
        opts.deadlines.step = opts.deadlines.step.max(again);
    }
    let mut result = CaseResult::new(
        &p.case.id,
        &p.case.title,
        opts.transport,
        source(p, topology, &opts, line),
    );
    result.line = line.describe(topology);
    result.notes.extend(p.case.notes.iter().cloned());
    result.notes.extend(switched);
    if let Some(why) = transport
        .err()
        .or_else(|| unclaimed(p, &opts.target))
        .or_else(|| unraced(p, &opts))
    {
        result.verdict = Verdict::Skipped;
        result.notes.push(why);
        return result;
    }
    let profile = match &opts.target {
        Target::Remote(profile) => Some(profile.clone()),
        Target::Embedded { .. } => None,
    };
    // The line is brought to a known state by what the server offers for
    // it, never by a restart: other cases are using the server.
    if let Some((aor, clean)) = profile
        .as_ref()
        .and_then(|p| p.line_command(|c| &c.clean, line, topology))
    {
        if let Err(e) = command(&clean).await {
            result.verdict = Verdict::Inconclusive;
            result.error = Some(format!("cleaning {aor} before the case: {e}"));
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
    let recorder = Recorder::default();
    let log = EventLog::default();
    let mut marks: Vec<Mark> = vec![Mark::default()];
    let mut server_view: Option<ServerView> = None;
    // What the event source says about itself, for the report.
    let mut source_notes: Vec<String> = Vec::new();
    match start(p, topology, &opts, line, &recorder, &log).await {
        Err(e) => result.error = Some(e.to_string()),
        Ok(live) => {
            let run = Driving {
                p,
                topology,
                opts: &opts,
                recorder: &recorder,
                log: &log,
                deviations: deviations.iter().collect(),
            };
            if let Err(e) = run.stages(&live, &mut result, &mut marks).await {
                result.error = Some(e.to_string());
            }
            // A server that stopped is this case's finding, not a timeout.
            health_check(&mut result, &opts, &live.probe, &recorder, &marks).await;
            // What the phones objected to in the case's stages. The
            // teardown's are not findings: two phones hanging up at once
            // cross a server's BYE, and what a teardown leaves is the leak
            // check's to judge (a capture is read the same way).
            for agent in &live.agents {
                let status = agent.status();
                for problem in status.problems {
                    result.problems.push(Problem {
                        what: format!("{}: {problem}", agent.dn()),
                        raw: None,
                    });
                }
                if let Some(first) = &status.strays.first {
                    result.notes.push(format!(
                        "{}: {} request(s) for another SIP identity reached its address (a contact the server still holds from an earlier phone there), answered 481, first: {first}",
                        agent.dn(),
                        status.strays.count
                    ));
                }
                if let Some(first) = &status.forks.first {
                    result.notes.push(format!(
                        "{}: {} answer(s) to its INVITE from a second dialog (the call forked to phones that both answered), each ACKed and ended with BYE (RFC 3261 13.2.2.4), first: {first}",
                        agent.dn(),
                        status.forks.count
                    ));
                }
            }
            result.notes.extend(live.relay_drops());
            // Nothing to tear down or check on a server that stopped.
            if result.stopped.is_none() {
                // Every target, the embedded one too: what a case leaves behind
                // is a finding of that case. The leak check's own SIP stays in
                // the teardown's events: none of it is compared, and where the
                // one ends and the other begins is only timing.
                run.tear_down(&live, &mut marks).await;
                let deadline = opts.deadlines.answer(opts.deadlines.setup, opts.transport);
                let left =
                    leak::probe(&live, topology, profile.as_deref(), &recorder, deadline).await;
                let server_state = profile
                    .as_ref()
                    .is_some_and(|p| !p.line_commands.state.is_empty());
                let golden = crate::leak::golden(&p.case, topology, server_state);
                result.stages.push(compare_stage(
                    crate::leak::STAGE,
                    &golden.channels,
                    &left.observed,
                    &left.seen,
                    &mut Bindings::default(),
                    &run.deviations,
                ));
                for e in left.errors {
                    if result.error.is_none() {
                        result.error = Some(e);
                    } else {
                        result.problems.push(Problem { what: e, raw: None });
                    }
                }
                // Challenges are not events; the report says they were answered.
                let answered: Vec<String> = live
                    .agents
                    .iter()
                    .map(|a| (a.dn().to_string(), a.status().challenges))
                    .filter(|(_, n)| *n > 0)
                    .map(|(dn, n)| format!("{dn} {n}"))
                    .collect();
                if !answered.is_empty() {
                    result.notes.push(format!(
                        "digest challenges answered (not events; in the SIP transcript): {}",
                        answered.join(", ")
                    ));
                }
                // The terminating NOTIFYs of the leak check's subscriptions,
                // and the server's mirror of the teardown and the leak check.
                log.settle(opts.deadlines.settle, opts.deadlines.stage)
                    .await;
                live.catch_up(&recorder, opts.deadlines.stage).await;
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
    }
    // A case that could not start, or whose teardown or leak check could
    // not finish, asks too: the server may have stopped meanwhile.
    if result.error.is_some() && result.stopped.is_none() {
        if let Some(probe) = remote_probe(&opts) {
            health_check(&mut result, &opts, &probe, &recorder, &marks).await;
        }
    }
    collect(&mut result, &recorder, &log, &marks);
    if let Some(loss) = opts.loss {
        result
            .notes
            .push(dropped_note(loss, &recorder, started_at(&result)));
    }
    result.keys = recorder.key_log().lines();
    if opts.transport == crate::sip::Transport::Tls {
        result.notes.push(crate::sip::tls::captured(&result.key()));
    }
    if opts.insecure() {
        result.notes.push(crate::sip::tls::INSECURE.to_string());
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
    // What the run itself noted (grace windows, stray requests) stays
    // beside what the verdict's judgement notes.
    let run_notes = std::mem::take(&mut result.notes);
    settle_verdict(&mut result);
    result.notes.extend(run_notes);
    result.notes.extend(source_notes);
    result.duration = started.elapsed();
    result
}

/// Why a case cannot be judged at `--loss`: a race (`together`) is two
/// requests at once, and one dropped reaches the server a retransmission
/// later, after the other was answered, maybe after the winner released:
/// what follows would be the network's doing, not the server's.
fn unraced(p: &Prepared, opts: &RunOptions) -> Option<String> {
    let race = p.case.stages.iter().find(|s| s.together)?;
    let loss = opts.loss?;
    Some(format!(
        "skipped at --loss ({loss}): stage {} is a race, and a race is not fought over a lossy network (a dropped request reaches the server one retransmission late)",
        race.name
    ))
}

/// How many dropped datagrams a case's note names one by one.
const DROPPED_NAMED: usize = 20;

/// When the case's first message crossed the wire (its records' clock).
fn started_at(result: &CaseResult) -> Option<std::time::SystemTime> {
    result.records.first().map(|r| r.at)
}

/// What `--loss` did in a case: how many datagrams the phones dropped,
/// and the first of them by time, phone, direction and start line.
fn dropped_note(
    loss: crate::sip::loss::Loss,
    recorder: &crate::sip::transport::Recorder,
    t0: Option<std::time::SystemTime>,
) -> String {
    let (kept, count) = recorder.dropped();
    let mut note = format!("--loss: {loss}: the phones dropped {count} datagrams");
    if count == 0 {
        return note;
    }
    let named: Vec<String> = kept
        .iter()
        .take(DROPPED_NAMED)
        .map(|r| {
            let at = t0
                .and_then(|t| r.at.duration_since(t).ok())
                .map_or(String::new(), |d| format!("+{:.3}s ", d.as_secs_f64()));
            let line = r
                .raw
                .split(|b| *b == b'\r' || *b == b'\n')
                .next()
                .unwrap_or_default();
            let way = match r.direction {
                crate::sip::record::Direction::Sent => "sent to",
                crate::sip::record::Direction::Received => "received from",
            };
            // Whatever bytes a server sent, shown as visible escapes.
            format!("{at}{} {way} {}: {}", r.agent, r.peer, line.escape_ascii())
        })
        .collect();
    note.push_str(": ");
    note.push_str(&named.join("; "));
    if count > named.len() {
        note.push_str(&format!("; and {} more", count - named.len()));
    }
    note
}

/// Why a target cannot run the case: the capabilities it needs that the
/// profile does not claim.
/// The transports the target serves at its address: the run's, and a
/// profile's `transports`; the embedded server serves UDP and TCP on one
/// port (TLS when the run is over TLS).
fn served(opts: &RunOptions) -> Vec<crate::sip::Transport> {
    use crate::sip::Transport;
    let mut out = vec![opts.transport];
    let more = match &opts.target {
        // What the profile serves at its address; a run over a transport
        // it does not list there is at another address (a TLS port given
        // with --address), which serves that one alone.
        Target::Remote(profile) if profile.transports.contains(&opts.transport) => {
            profile.transports.clone()
        }
        Target::Remote(_) => Vec::new(),
        Target::Embedded { .. } => vec![Transport::Udp, Transport::Tcp],
    };
    for t in more {
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

fn unclaimed(p: &Prepared, target: &Target) -> Option<String> {
    let Target::Remote(profile) = target else {
        return None;
    };
    let missing: Vec<&str> = p
        .case
        .requires
        .iter()
        .filter(|c| !profile.capabilities.contains(*c))
        .map(String::as_str)
        .collect();
    (!missing.is_empty()).then(|| format!("{} does not claim {}", profile.name, missing.join(", ")))
}

/// One case being driven through its stages.
struct Driving<'a> {
    p: &'a Prepared,
    topology: &'a Topology,
    opts: &'a RunOptions,
    recorder: &'a Recorder,
    log: &'a EventLog,
    deviations: Vec<&'a Deviation>,
}

impl Driving<'_> {
    /// Stage by stage: the steps, then the wait for what the target is
    /// expected to send, a quiet settle, and the comparison. A step that
    /// cannot be carried out ends the case after its stage is compared.
    async fn stages(
        &self,
        live: &live::Live,
        result: &mut CaseResult,
        marks: &mut Vec<Mark>,
    ) -> Result<(), Undriven> {
        let mut graced: Vec<String> = Vec::new();
        let mut races = Vec::new();
        let driven = self
            .each_stage(live, result, marks, &mut graced, &mut races)
            .await;
        result.notes.extend(crate::race::notes(&races));
        if !graced.is_empty() {
            result.notes.push(format!(
                "events declared absent were waited for {GRACE:?} after the expected ones (a late one would be an xpass), in stage {}",
                graced.join(", ")
            ));
        }
        driven
    }

    /// [`Driving::stages`], saying in `graced` which stages waited a grace
    /// for events declared absent, and how many, and collecting in `races`
    /// what each race stage showed.
    async fn each_stage(
        &self,
        live: &live::Live,
        result: &mut CaseResult,
        marks: &mut Vec<Mark>,
        graced: &mut Vec<String>,
        races: &mut Vec<crate::race::Race>,
    ) -> Result<(), Undriven> {
        let (opts, log) = (self.opts, self.log);
        let mut bindings = Bindings::default();
        let mut roles = crate::race::Roles::default();
        for (stage, golden) in self.p.case.stages.iter().zip(&self.p.golden) {
            if !live.catch_up(self.recorder, opts.deadlines.stage).await {
                // The server mirrors nothing: no stage can be judged
                // (finishing says why).
                return Ok(());
            }
            let mark = log.len();
            marks.push(Mark {
                stage: stage.name.clone(),
                event: mark,
                record: self.recorder.len(),
            });
            let mut failed = None;
            let deadline = opts.deadlines.answer(opts.deadlines.step, opts.transport);
            let undriven = |step: &crate::case::Step, why| Undriven::Step {
                stage: stage.name.clone(),
                file: self.p.case.path.display().to_string(),
                line: step.line,
                why,
            };
            let steps = roles.steps(&stage.steps);
            if stage.together {
                let stagger = stage.stagger;
                if let Err((n, why)) =
                    perform_together(live, self.topology, &steps, stagger, deadline).await
                {
                    failed = Some(undriven(&steps[n], why));
                }
            } else {
                for step in &steps {
                    if let Err(why) = perform(live, self.topology, step, deadline).await {
                        failed = Some(undriven(step, why));
                        break;
                    }
                }
            }
            if failed.is_none() {
                match finish(live, &steps, stage.together, opts.deadlines.stage).await {
                    Ok(problems) => result
                        .problems
                        .extend(problems.into_iter().map(|p| Problem {
                            what: format!("stage {}: {p}", stage.name),
                            raw: None,
                        })),
                    Err((n, why)) => failed = Some(undriven(&steps[n], why)),
                }
            }
            // Wait for what the target is expected to send: the golden
            // with its declared deviations applied, never for what it is
            // declared not to send.
            // A race's golden is read for its winner as soon as the
            // events name it ([`crate::race`]).
            let want = |obs: &[Observation]| {
                let read = roles.read(stage, golden, &self.deviations, obs);
                crate::deviation::expected_counts(
                    &read.golden,
                    &stage.name,
                    &read.deviations(),
                    &result.source,
                )
            };
            let arrived = |obs: &[Observation]| {
                want(obs)
                    .iter()
                    .all(|(c, n)| obs.iter().filter(|o| &o.channel == c).count() >= *n)
            };
            log.wait_for(mark, opts.deadlines.stage, arrived).await;
            // After the expected events, not before: a 2xx the steps'
            // requests cause further on (the retrieve's INVITE reaching
            // the caller) has been sent by then, and its ACK is awaited.
            result.notes.extend(
                acks_due(live, opts.deadlines.stage)
                    .await
                    .into_iter()
                    .map(|n| format!("stage {}: {n}", stage.name)),
            );
            // What is declared absent gets a short grace, not the stage
            // deadline: long enough for a late one to show (an xpass).
            let read = roles.read(stage, golden, &self.deviations, &log.since(mark));
            let golden_counts =
                crate::deviation::expected_counts(&read.golden, &stage.name, &[], &result.source);
            let absent: usize = golden_counts
                .iter()
                .zip(&want(&log.since(mark)))
                .map(|((_, all), (_, left))| all.saturating_sub(*left))
                .sum();
            let quiet = if absent > 0 {
                graced.push(format!("{} ({absent})", stage.name));
                GRACE.max(opts.deadlines.settle)
            } else {
                opts.deadlines.settle
            };
            log.settle(quiet, opts.deadlines.stage).await;
            let (compared, race) = roles.compare(
                stage,
                golden,
                &log.since(mark),
                &result.source,
                &mut bindings,
                &self.deviations,
            );
            result.stages.push(compared);
            races.extend(race);
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Leaves a shared server as the case found it: every phone ends what
    /// it has going, and the wait is for the server's answers to that (its
    /// calls ended, its subscription gone), then a quiet settle, so that
    /// the leak check after it reads the state the teardown left.
    ///
    /// First the calls, one phone after the other, each once what the
    /// ones before it ended has reached it and its own BYEs are answered;
    /// then, with no call left, every phone's seizure, subscription and
    /// registration. The calls one after the other: both ends of a call hanging up at once cross their
    /// BYEs, which no phone of a real line does and which a server may
    /// mishandle (Kamailio's sca was seen telling a fresh subscription the
    /// appearance was still active), so the leak check would judge the
    /// teardown, not the case. The line's phones go first: the appearances
    /// are theirs, and a phone put down ends its own call. (A call the
    /// caller ends is a case's to test: Kamailio's sca, after a retrieve
    /// by Replaces, keeps the appearance busy when the caller hangs up.)
    async fn tear_down(&self, live: &live::Live, marks: &mut Vec<Mark>) {
        let deadlines = &self.opts.deadlines;
        live.catch_up(self.recorder, deadlines.stage).await;
        marks.push(Mark {
            stage: "teardown".into(),
            event: self.log.len(),
            record: self.recorder.len(),
        });
        let deadline = deadlines.answer(deadlines.step, self.opts.transport);
        let calls_ended = |s: &crate::ua::Status| {
            s.calls
                .iter()
                .all(|c| matches!(c.phase, crate::ua::Phase::Ended(_)))
        };
        let calls_answered = |s: &crate::ua::Status| calls_ended(s) && s.byes_unanswered.is_empty();
        let (outside, line): (Vec<_>, Vec<_>) = live
            .agents
            .iter()
            .partition(|a| self.topology.line_of(a.dn()).is_none());
        for (n, agent) in line.iter().chain(&outside).enumerate() {
            if n > 0 {
                // The server's BYEs for what the phones before ended: a
                // proxy relays one before its 200, a B2BUA sends it as it
                // answers. A call that outlives them (a barge-in's bridge
                // after the caller left) is this phone's to end.
                let _ = agent
                    .wait_for(
                        "the calls the phones before it ended",
                        RELAYED_BYE,
                        calls_ended,
                    )
                    .await;
            }
            let _ = agent.act(|a| a.end_calls()).await;
            // A server that does not answer is the leak check's to find.
            let _ = agent
                .wait_for("its BYEs to be answered", deadline, calls_answered)
                .await;
        }
        // Only then the subscriptions: a server tells a call's end to the
        // line's subscribers (Kamailio's sca handles a BYE one way with
        // call-info subscribers and another without them), and a phone
        // unsubscribing while its BYE is on the way made the teardown a
        // race between the two.
        for agent in line.iter().chain(&outside) {
            let _ = agent.act(|a| a.release()).await;
        }
        for agent in line.iter().chain(&outside) {
            let _ = agent
                .wait_for(
                    "its unsubscribe and unregistration to be answered",
                    deadline,
                    |s| !s.subscribed && (s.unregistered || !s.registered),
                )
                .await;
        }
        self.log.settle(deadlines.settle, deadlines.stage).await;
    }
}

/// How long the teardown gives a server to pass the BYE of a phone outside
/// the line on to the line's phones before they end what they still have
/// (a barge-in's bridge outlives the caller, so this is no deadline to
/// fail by, only a bound on the wait).
const RELAYED_BYE: std::time::Duration = std::time::Duration::from_millis(250);

/// What a finished case keeps: every SIP message (a message a phone could
/// not use is a problem, with its bytes), the event source's problems, and
/// every event with the stage it was attributed to.
fn collect(result: &mut CaseResult, recorder: &Recorder, log: &EventLog, marks: &[Mark]) {
    for r in recorder.snapshot() {
        if let Some(why) = &r.problem {
            let verb = match r.direction {
                crate::sip::record::Direction::Received => "received from",
                crate::sip::record::Direction::Sent => "sent to",
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
            .find(|m| m.event <= i)
            .map(|m| m.stage.clone())
            .unwrap_or_default();
        result.events.push((stage, obs));
    }
    result.stage_starts = marks
        .iter()
        .map(|m| crate::outcome::StageStart {
            stage: m.stage.clone(),
            record: m.record,
        })
        .collect();
}
