//! One case end to end: start the target, start the user agents, set them
//! up, then stage by stage run the steps, wait for the events the golden
//! expects (or a deadline), let late events settle, and compare.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::case::{Action, Step};
use crate::diff::{compare_stage, Bindings};
use crate::golden::GoldenStage;
use crate::model::Channel;
use crate::observe::feed::FeedClient;
use crate::observe::hep::{HepListener, HepView, ServerView};
use crate::observe::sip_tlib::SipTlibDeriver;
use crate::observe::tlib_log::LogFollower;
use crate::observe::wire::WireDeriver;
use crate::observe::{EventLog, Observability, Observation};
use crate::outcome::{settle_verdict, CaseResult, Problem, Verdict};
use crate::reference::{Embedded, Fault};
use crate::sip::transport::{Endpoint, Record, Recorder};
use crate::sip::Transport;
use crate::suite::Prepared;
use crate::target::{Deviation, Profile};
use crate::topology::Topology;
use crate::ua::{AgentConfig, AgentHandle, CallDirection, Phase, Seizure, UaError};

/// The SIP domain of the embedded target.
pub const DOMAIN: &str = "sca.test";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Every wait of a run has one of these deadlines. Each is an upper bound:
/// a wait ends as soon as what it waits for holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Registration and subscription of every user agent.
    pub setup: Duration,
    /// A step's precondition (an INVITE to answer, a call to hang up).
    pub step: Duration,
    /// The events a stage's golden expects.
    pub stage: Duration,
    /// Quiet time after the expected events, to catch extra ones.
    pub settle: Duration,
    /// RFC 3261's T1 for the phones' retransmissions over UDP, which the
    /// waits for an answer follow (see [`Deadlines::answer`]).
    pub t1: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            setup: Duration::from_secs(3),
            step: Duration::from_secs(2),
            stage: Duration::from_secs(2),
            settle: Duration::from_millis(50),
            t1: crate::sip::retransmit::T1,
        }
    }
}

impl Deadlines {
    /// These deadlines with what a target profile's `[timers]` sets.
    pub fn with_timers(self, timers: &crate::target::Timers) -> Deadlines {
        Deadlines {
            setup: timers.setup.unwrap_or(self.setup),
            step: timers.step.unwrap_or(self.step),
            stage: timers.stage.unwrap_or(self.stage),
            settle: self.settle,
            t1: timers.t1.unwrap_or(self.t1),
        }
    }

    /// The deadline of a wait for an answer (`plain`, a setup or step
    /// deadline) over `transport`. Over UDP a lost message is sent again
    /// at T1, 2·T1, 4·T1... until Timer B/F (64·T1) gives up: the wait lasts
    /// at least that long, or loss the timers would recover from ends the
    /// wait first (3 s allow three sends: at 0, 0.5 and 1.5 s). TCP
    /// retransmits below SIP: the plain deadline.
    pub fn answer(&self, plain: Duration, transport: Transport) -> Duration {
        match transport {
            Transport::Udp => plain.max(crate::sip::retransmit::timeout(self.t1)),
            Transport::Tcp => plain,
        }
    }
}

/// What a case runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A fresh embedded reference server per case, possibly with a defect.
    Embedded { fault: Option<Fault> },
    /// A real server described by a profile. Its state is shared, so its
    /// cases run one after the other and each tears down what it set up.
    Remote(Arc<Profile>),
}

impl Target {
    /// A short, stable name (a report table's column).
    pub fn name(&self) -> String {
        match self {
            Target::Embedded { fault: None } => "embedded".into(),
            Target::Embedded { fault: Some(f) } => format!("embedded+{f}"),
            Target::Remote(p) => p.name.clone(),
        }
    }

    /// How the reports name it.
    pub fn describe(&self) -> String {
        match self {
            Target::Embedded { fault: None } => "embedded".into(),
            Target::Embedded { fault: Some(f) } => format!("embedded (fault {f})"),
            Target::Remote(p) => format!("{} at {}", p.name, p.address),
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub target: Target,
    pub transport: Transport,
    pub deadlines: Deadlines,
    /// Where a real target's T-Library events come from.
    pub events: Events,
}

/// The T-Library event source of a real target (the embedded server always
/// has its own feed).
#[derive(Debug, Clone)]
pub enum Events {
    /// Derived from the SIP the phones saw.
    Sip,
    /// Derived from the SIP the server saw, as it mirrored it over HEP.
    Hep(Arc<HepListener>),
    /// A JSON-lines event feed (docs/event-feed.md), e.g. a bridge on the server.
    Feed(std::net::SocketAddr),
    /// A SIP Server / T-Server log the target writes as it runs, followed.
    Log(std::path::PathBuf),
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            target: Target::Embedded { fault: None },
            transport: Transport::Udp,
            deadlines: Deadlines::default(),
            events: Events::Sip,
        }
    }
}

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

/// The live parts of a running case; dropped together at the end.
struct Live {
    _server: Option<Embedded>,
    source: Option<Source>,
    agents: Vec<AgentHandle>,
}

/// A running source of a server's own events.
enum Source {
    Feed(#[allow(dead_code)] FeedClient),
    Log(#[allow(dead_code)] LogFollower),
    Hep(HepView),
}

impl Live {
    /// Before a stage begins: waits for a source that lags the phones (the
    /// server's HEP mirror) to catch up with what they have recorded.
    /// Returns false when it has mirrored nothing at all.
    async fn catch_up(&self, recorder: &Recorder, deadline: Duration) -> bool {
        match &self.source {
            Some(Source::Hep(view)) => view.caught_up(recorder.len(), deadline).await > 0,
            _ => true,
        }
    }

    fn agent(&self, dn: &str) -> Result<&AgentHandle, String> {
        self.agents
            .iter()
            .find(|a| a.dn() == dn)
            .ok_or_else(|| format!("no user agent for {dn}"))
    }
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
fn sip_deriver(p: &Prepared, topology: &Topology, profile: &Profile) -> SipTlibDeriver {
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

/// How long a profile's reset command may take.
const RESET_DEADLINE: Duration = Duration::from_secs(20);

/// Runs the profile's reset command, if it has one: a real server keeps
/// state (appearances, subscriptions) that one case must not leave to the
/// next.
async fn reset(profile: &Profile) -> Result<(), String> {
    let Some((program, args)) = profile.reset.split_first() else {
        return Ok(());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let shown = profile.reset.join(" ");
    let out = tokio::time::timeout(RESET_DEADLINE, cmd.output())
        .await
        .map_err(|_| format!("reset `{shown}` did not finish within {RESET_DEADLINE:?}"))?
        .map_err(|e| format!("reset `{shown}` could not start: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "reset `{shown}` failed ({}): {}",
            out.status,
            stderr.trim()
        ));
    }
    Ok(())
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

/// Starts the target (if it is embedded) and the user agents, registers
/// them and subscribes the shared-line phones to their line's call-info.
async fn start(
    p: &Prepared,
    topology: &Topology,
    opts: &RunOptions,
    recorder: &Recorder,
    log: &EventLog,
) -> Result<Live, String> {
    // The derived layers come from SIP as it is recorded (by the phones,
    // or by the server's HEP mirror), so they land in the same log, in the
    // same order, as a server's own events.
    let members = topology.members_among(&p.case.parties);
    let mut wire = WireDeriver::new(&members);
    let mut tlib = match (&opts.target, &opts.events) {
        (Target::Remote(profile), Events::Sip | Events::Hep(_)) => {
            Some(sip_deriver(p, topology, profile))
        }
        _ => None,
    };
    let derived = log.clone();
    let derive = move |rec: &Record| {
        let tlib_events = tlib.as_mut().map(|t| t.observe(rec)).unwrap_or_default();
        for obs in tlib_events.into_iter().chain(wire.observe(rec)) {
            derived.push(obs);
        }
    };
    let hep = match (&opts.target, &opts.events) {
        (Target::Remote(_), Events::Hep(listener)) => {
            let view = HepView::start(listener, derive);
            // The server's view is attributed by the phones' addresses,
            // each TCP connection's included, learnt as they record.
            let claims = view.claimer();
            recorder.set_tap(move |rec| claims(rec.local, &rec.agent));
            Some(view)
        }
        _ => {
            recorder.set_tap(derive);
            None
        }
    };
    let (server, feed, domain, address, identities) = match &opts.target {
        Target::Embedded { fault } => {
            let server = Embedded::start(LOOPBACK, DOMAIN, topology.clone(), *fault)
                .await
                .map_err(|e| format!("embedded server: {e}"))?;
            let feed = FeedClient::connect(server.feed, opts.deadlines.setup, log.clone()).await?;
            let sip = server.sip;
            (
                Some(server),
                Some(Source::Feed(feed)),
                DOMAIN.to_string(),
                sip,
                None,
            )
        }
        Target::Remote(profile) => {
            let feed = match &opts.events {
                Events::Feed(addr) => Some(Source::Feed(
                    FeedClient::connect(*addr, opts.deadlines.setup, log.clone()).await?,
                )),
                Events::Log(path) => {
                    Some(Source::Log(LogFollower::start(path.clone(), log.clone())))
                }
                Events::Hep(_) => hep.map(Source::Hep),
                Events::Sip => None,
            };
            (
                None,
                feed,
                profile.domain.clone(),
                profile.address,
                Some(profile.identities.clone()),
            )
        }
    };
    // Unique across cases, transports, processes and runs: a shared real
    // server must never see a Call-ID or tag twice.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let nonce = format!(
        "{}-{}-{}-{:x}",
        p.case.id,
        opts.transport,
        std::process::id(),
        started.as_micros()
    );
    let mut agents = Vec::new();
    for dn in &p.case.parties {
        let (endpoint, inbound) = Endpoint::bind(dn, LOOPBACK, recorder.clone())
            .await
            .map_err(|e| format!("{dn}: cannot bind: {e}"))?;
        let user = identities
            .as_ref()
            .and_then(|i| i.get(dn).cloned())
            .unwrap_or_else(|| dn.clone());
        let cfg = AgentConfig {
            dn: dn.clone(),
            user,
            domain: domain.clone(),
            local: endpoint.local_addr(),
            transport: opts.transport,
            server: address,
            nonce: nonce.clone(),
            t1: opts.deadlines.t1,
        };
        agents.push(AgentHandle::start(endpoint, inbound, cfg));
    }
    let live = Live {
        _server: server,
        source: feed,
        agents,
    };
    let setup = |e: UaError| format!("setup: {e}");
    // The phones' REGISTER and SUBSCRIBE are answers to wait for.
    let deadline = opts.deadlines.answer(opts.deadlines.setup, opts.transport);
    for a in &live.agents {
        a.act(|a| a.register()).await.map_err(setup)?;
    }
    for a in &live.agents {
        a.wait_for("its REGISTER to be accepted", deadline, |s| s.registered)
            .await
            .map_err(setup)?;
    }
    for a in &live.agents {
        if let Some(line) = topology.line_of(a.dn()) {
            let number = line.number.clone();
            a.act(move |a| a.subscribe_call_info(&number))
                .await
                .map_err(setup)?;
        }
    }
    for a in live
        .agents
        .iter()
        .filter(|a| topology.line_of(a.dn()).is_some())
    {
        // The 2xx to the SUBSCRIBE is part of the setup: waiting for it too
        // keeps its Subscribed out of the first stage when it comes after
        // the NOTIFY (Kamailio over TCP). One lost every time the phone
        // asked leaves the subscription to its first NOTIFY, which
        // establishes it (RFC 6665 4.1.2.4): the setup goes on without it.
        let settled = a
            .wait_for(
                "its call-info subscription, its 2xx and first NOTIFY",
                deadline,
                |s| s.subscribed && s.notifies > 0 && s.subscribe_answers > 0,
            )
            .await;
        let established = |s: crate::ua::Status| s.subscribed && s.notifies > 0;
        match settled {
            Err(UaError::Timeout { .. }) if established(a.status()) => {}
            other => other.map_err(setup)?,
        }
    }
    Ok(live)
}

/// Carries out one step, first waiting (with a deadline) for the state it
/// needs: a phone can only answer once an INVITE has reached it.
async fn perform(
    live: &Live,
    topology: &Topology,
    step: &Step,
    deadline: Duration,
) -> Result<(), String> {
    use crate::ua::{Agent, ScriptError, Status};
    type Ready = Box<dyn Fn(&Status) -> bool + Send + Sync>;
    type Act = Box<dyn FnOnce(&mut Agent) -> Result<(), ScriptError> + Send>;
    let agent = live.agent(&step.actor)?;
    let line = topology
        .line_of(&step.actor)
        .map(|l| l.number.clone())
        .unwrap_or_default();
    let phase = |p: Phase| -> Ready { Box::new(move |st| st.call(|c| c.phase == p).is_some()) };
    // What the step needs first (with what to call it in a timeout), and
    // what it does.
    let (needs, act): (Option<(&str, Ready)>, Act) = match step.action.clone() {
        Action::Call { to } => (
            // A call after a seizure must know whether it was granted.
            Some((
                "the line-seize answer",
                Box::new(|st| !matches!(st.seizure, Some(Seizure::Pending(_)))),
            )),
            Box::new(move |a| {
                a.invite(&to);
                Ok(())
            }),
        ),
        Action::Answer => (
            Some(("an incoming call to ring", phase(Phase::Ringing))),
            Box::new(|a| a.answer()),
        ),
        Action::Refuse { code } => (
            Some(("an incoming call to ring", phase(Phase::Ringing))),
            Box::new(move |a| a.refuse(code)),
        ),
        Action::Hangup => (
            Some(("an established call", phase(Phase::Confirmed))),
            Box::new(|a| a.hangup()),
        ),
        Action::Cancel => (
            Some((
                "an unanswered outgoing call",
                Box::new(|st| {
                    st.call(|c| {
                        c.direction == CallDirection::Outgoing
                            && matches!(c.phase, Phase::Calling | Phase::Early)
                    })
                    .is_some()
                }),
            )),
            Box::new(|a| a.cancel()),
        ),
        Action::Seize { index, expires } => (
            None,
            Box::new(move |a| {
                a.seize(&line, index, expires);
                Ok(())
            }),
        ),
        Action::Hold { private } => (
            Some(("an established call", phase(Phase::Confirmed))),
            Box::new(move |a| a.hold(private)),
        ),
        Action::Retrieve { index } | Action::Barge { index } => (
            None,
            Box::new(move |a| {
                a.join_appearance(&line, index);
                Ok(())
            }),
        ),
        action @ (Action::Refresh | Action::Unsubscribe) => {
            let expires = if action == Action::Refresh { 3600 } else { 0 };
            (
                Some((
                    "an accepted call-info subscription",
                    Box::new(|st| st.subscribed),
                )),
                Box::new(move |a| a.refresh_call_info(expires)),
            )
        }
    };
    if let Some((what, ready)) = needs {
        agent
            .wait_for(what, deadline, ready)
            .await
            .map_err(|e| e.to_string())?;
    }
    agent
        .act(act)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over UDP a wait for an answer lasts Timer B/F for the T1 in use (at
    /// least); over TCP, or when the plain deadline is longer, the plain one.
    #[test]
    fn waits_for_an_answer_follow_the_transports_timers() {
        let d = Deadlines::default();
        let secs = Duration::from_secs;
        assert_eq!(d.answer(d.setup, Transport::Udp), secs(32));
        assert_eq!(d.answer(d.step, Transport::Udp), secs(32));
        assert_eq!(d.answer(d.setup, Transport::Tcp), secs(3));
        assert_eq!(d.answer(secs(60), Transport::Udp), secs(60));
        let fast = Deadlines {
            t1: Duration::from_millis(100),
            ..d
        };
        assert_eq!(
            fast.answer(fast.setup, Transport::Udp),
            Duration::from_millis(6400)
        );
        // A profile's timers replace only what they set.
        let timers = crate::target::Timers {
            t1: Some(Duration::from_millis(250)),
            step: Some(secs(5)),
            ..Default::default()
        };
        let set = d.with_timers(&timers);
        assert_eq!(
            (set.t1, set.step, set.setup, set.stage),
            (Duration::from_millis(250), secs(5), d.setup, d.stage)
        );
        assert_eq!(set.answer(set.step, Transport::Udp), secs(16));
    }
}
