//! One case end to end: start the target, start the user agents, set them
//! up, then stage by stage run the steps, wait for the events the golden
//! expects (or a deadline), let late events settle, and compare.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::case::{Action, Case, Step};
use crate::derive::sip_tlib::SipTlibDeriver;
use crate::derive::wire::WireDeriver;
use crate::diff::{compare_stage, Bindings, Divergence, StageResult};
use crate::golden::GoldenStage;
use crate::input::InputError;
use crate::model::Channel;
use crate::observation::{Observability, Observation};
use crate::observe::feed::FeedClient;
use crate::observe::hep::{HepListener, HepView, ServerView};
use crate::observe::tlib_log::LogFollower;
use crate::observe::EventLog;
use crate::pcap::Packet;
use crate::reference::{Embedded, Fault};
use crate::sip::record::Record;
use crate::sip::transport::{Endpoint, Recorder};
use crate::sip::Transport;
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

/// A case with its golden files loaded: everything that can be wrong with
/// the input has been found before anything runs.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub case: Case,
    pub golden: Vec<GoldenStage>,
}

impl Prepared {
    /// For recording: a stage whose golden directory does not exist yet
    /// expects nothing on every channel, so that a run shows (and `--bless`
    /// writes) everything it observes.
    pub fn new_recording(
        case: Case,
        golden_root: &Path,
        topology: &Topology,
    ) -> Result<Prepared, InputError> {
        Prepared::load(case, golden_root, topology, true)
    }

    /// Every case of a cases directory with its golden files, or the first
    /// error in any of them.
    pub fn load_suite(
        cases_dir: &Path,
        golden_root: &Path,
        topology: &Topology,
    ) -> Result<Vec<Prepared>, InputError> {
        Case::load_dir(cases_dir, topology)?
            .into_iter()
            .map(|c| Prepared::new(c, golden_root, topology))
            .collect()
    }

    pub fn new(
        case: Case,
        golden_root: &Path,
        topology: &Topology,
    ) -> Result<Prepared, InputError> {
        Prepared::load(case, golden_root, topology, false)
    }

    fn load(
        case: Case,
        golden_root: &Path,
        topology: &Topology,
        recording: bool,
    ) -> Result<Prepared, InputError> {
        let golden = case
            .stages
            .iter()
            .map(|s| {
                let dir = golden_root.join(&s.golden);
                if recording && !dir.exists() {
                    let channels = crate::golden::channels(&case.parties, topology)
                        .into_iter()
                        .map(|c| (c, crate::golden::Expectation::Events(Vec::new())))
                        .collect();
                    Ok(GoldenStage { dir, channels })
                } else {
                    GoldenStage::load(golden_root, &s.golden, &case.parties, topology)
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Prepared { case, golden })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// Failed, and every difference is a deviation the profile declares.
    Xfail,
    /// A declared deviation did not occur: the profile needs fixing.
    Xpass,
    /// The case needs a capability the target does not claim.
    Skipped,
    /// The target could not be driven through the case.
    Inconclusive,
}

impl Verdict {
    pub const ALL: [Verdict; 6] = [
        Verdict::Pass,
        Verdict::Fail,
        Verdict::Xfail,
        Verdict::Xpass,
        Verdict::Skipped,
        Verdict::Inconclusive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Xfail => "xfail",
            Verdict::Xpass => "xpass",
            Verdict::Skipped => "skipped",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    /// What a green run may contain.
    pub fn expected(self) -> bool {
        matches!(self, Verdict::Pass | Verdict::Xfail | Verdict::Skipped)
    }
}

/// Something wrong that is not an event difference: SIP the server sent
/// that we could not parse or did not expect, an unreadable feed line.
#[derive(Debug, Clone)]
pub struct Problem {
    pub what: String,
    /// The raw message, when there is one.
    pub raw: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    pub title: String,
    pub transport: Transport,
    pub verdict: Verdict,
    pub duration: Duration,
    pub stages: Vec<StageResult>,
    /// Why the case could not be driven to its end.
    pub error: Option<String>,
    pub problems: Vec<Problem>,
    pub records: Vec<Record>,
    /// Events in arrival order, with the stage they were attributed to
    /// (`setup` before the first stage).
    pub events: Vec<(String, Observation)>,
    pub source: Observability,
    /// Why the verdict is xfail, xpass or skipped.
    pub notes: Vec<String>,
    /// The server's own view of the case's SIP, when it mirrored it (HEP).
    pub mirrored: Vec<Packet>,
}

impl CaseResult {
    /// Where the run first left the golden path, preferring a difference
    /// no declared deviation excuses (shown against the golden with the
    /// declared deviations applied).
    pub fn first_divergence(&self) -> Option<&Divergence> {
        let channels = || self.stages.iter().flat_map(|s| s.channels.iter());
        channels()
            .find_map(|c| c.unexcused())
            .or_else(|| channels().find_map(|c| c.divergence.as_ref()))
    }

    /// Every channel the case's golden files name, in order.
    pub fn channels(&self) -> Vec<&Channel> {
        let mut out: Vec<&Channel> = Vec::new();
        for c in self.stages.iter().flat_map(|s| s.channels.iter()) {
            if !out.contains(&&c.channel) {
                out.push(&c.channel);
            }
        }
        out
    }

    /// Where each channel's events came from, one line per source.
    pub fn source_lines(&self) -> Vec<String> {
        self.source
            .sources(self.channels())
            .into_iter()
            .map(|(source, channels)| {
                let names: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
                format!("{}: {source}", names.join(", "))
            })
            .collect()
    }

    /// The first divergence as every output writes it.
    pub fn headline_divergence(&self) -> Option<String> {
        self.first_divergence().map(ToString::to_string)
    }

    /// One line saying why the case did not pass.
    pub fn headline(&self) -> Option<String> {
        if let Some(d) = self.headline_divergence() {
            return Some(d);
        }
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        self.problems.first().map(|p| p.what.clone())
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
    use crate::derive::sip_tlib::WIRE_SOURCE;
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
    let mut result = CaseResult {
        id: p.case.id.clone(),
        title: p.case.title.clone(),
        transport: opts.transport,
        verdict: Verdict::Pass,
        duration: Duration::ZERO,
        stages: Vec::new(),
        error: None,
        problems: Vec::new(),
        records: Vec::new(),
        events: Vec::new(),
        source: source(p, topology, &opts),
        notes: Vec::new(),
        mirrored: Vec::new(),
    };
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

/// Sets a finished run's verdict and notes from its stages (each channel
/// says which declared deviations occurred there). Live runs and capture
/// checks share it.
pub(crate) fn settle_verdict(result: &mut CaseResult) {
    (result.verdict, result.notes) = judge(result);
}

/// The verdict of a run, from what each channel's result says of the
/// deviations declared on it:
/// - fail: a difference no declared deviation excuses, or SIP the server
///   should not have sent;
/// - inconclusive: the case could not be driven to its end;
/// - xpass: a declared deviation did not occur on a channel it is declared
///   on (the golden matched without it);
/// - xfail: every difference is exactly a declared deviation;
/// - pass: no difference at all.
fn judge(r: &CaseResult) -> (Verdict, Vec<String>) {
    use crate::diff::Declared;
    let channels = || {
        r.stages
            .iter()
            .flat_map(|s| s.channels.iter().map(move |c| (s, c)))
    };
    let unexcused = channels().any(|(_, c)| c.unexcused().is_some());
    let mut occurred: Vec<&Declared> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    let mut unobservable: Vec<&Declared> = Vec::new();
    for (s, c) in channels() {
        let Some(d) = &c.deviated else { continue };
        unobservable.extend(&d.unobservable);
        if let Some(found) = &d.occurred {
            occurred.extend(found);
            for x in d.declared.iter().filter(|x| !found.contains(x)) {
                missing.push(format!(
                    "did not occur in stage {:?}, channel {}: {}",
                    s.stage, c.channel, x.label
                ));
            }
        }
    }
    let labels = |mut v: Vec<&Declared>, prefix: &str| -> Vec<String> {
        v.sort_by_key(|x| x.line);
        v.dedup_by_key(|x| x.line);
        v.iter().map(|x| format!("{prefix}{}", x.label)).collect()
    };
    let blind = labels(unobservable, "not observable by this source: ");
    let with_blind = |mut notes: Vec<String>| {
        notes.extend(blind.iter().cloned());
        notes
    };
    let matched = labels(occurred, "");
    // SIP the server should not have sent is never an expected deviation.
    if unexcused || !r.problems.is_empty() {
        return (Verdict::Fail, with_blind(matched));
    }
    if r.error.is_some() {
        return (Verdict::Inconclusive, with_blind(matched));
    }
    if !missing.is_empty() {
        return (Verdict::Xpass, with_blind(missing));
    }
    if matched.is_empty() {
        return (Verdict::Pass, with_blind(Vec::new()));
    }
    (Verdict::Xfail, with_blind(matched))
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
pub(crate) mod tests {
    use super::*;
    use crate::diff::{ChannelResult, StageResult};

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

    /// A case result whose stage/channel pairs `differing` differ (the
    /// report's tests use it too).
    pub(crate) fn result(differing: &[(&str, &str)]) -> CaseResult {
        let stages = differing
            .iter()
            .map(|(stage, channel)| StageResult {
                stage: stage.to_string(),
                channels: vec![ChannelResult {
                    channel: Channel::parse(channel),
                    expected: Vec::new(),
                    observed: Vec::new(),
                    diff: Some("-x".into()),
                    divergence: None,
                    deviated: None,
                }],
                not_observed: Vec::new(),
                unasserted: Vec::new(),
            })
            .collect();
        CaseResult {
            id: "c".into(),
            title: "t".into(),
            transport: Transport::Udp,
            verdict: Verdict::Pass,
            duration: Duration::ZERO,
            stages,
            error: None,
            problems: Vec::new(),
            records: Vec::new(),
            events: Vec::new(),
            source: Observability::everything("test"),
            notes: Vec::new(),
            mirrored: Vec::new(),
        }
    }

    fn ev(line: &str) -> crate::model::Event {
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        crate::model::Event::from_json(&obj, crate::model::Strictness::Strict, &[])
            .unwrap()
            .0
    }

    fn deviation(line: usize, edit: crate::deviation::Edit) -> Deviation {
        Deviation {
            cases: vec!["c".into()],
            stage: "alerting".into(),
            channels: vec![Channel::parse("sca.60970")],
            edit,
            reason: format!("reason {line}"),
            evidence: None,
            line,
            at: Default::default(),
        }
    }

    const OFFERED: &str = r#"{"event": "Offered", "OtherDN": "60972", "Index": 1}"#;
    const BARE: &str = r#"{"event": "Offered", "OtherDN": "60972"}"#;
    const ALERTING: &str = r#"{"event": "Appearance", "Index": 1, "AppearanceState": "alerting"}"#;
    const HELD: &str = r#"{"event": "Appearance", "Index": 1, "AppearanceState": "held"}"#;

    /// Kamailio's two alerting deviations: no Index in the INVITE, no
    /// alerting state.
    fn kamailio() -> Vec<Deviation> {
        use crate::deviation::Edit;
        vec![
            deviation(
                10,
                Edit::Changed {
                    golden: vec![ev(r#"{"event": "Offered"}"#)],
                    without: vec![crate::model::Attr::Index],
                    set: Default::default(),
                },
            ),
            deviation(
                20,
                Edit::Absent(vec![ev(
                    r#"{"event": "Appearance", "AppearanceState": "alerting"}"#,
                )]),
            ),
        ]
    }

    /// The alerting stage of sca.60970 (golden: Offered with Index, then
    /// alerting) judged with `observed` and `deviations`.
    fn judged(observed: &[&str], deviations: &[Deviation]) -> (Verdict, Vec<String>, CaseResult) {
        let golden = vec![(
            Channel::parse("sca.60970"),
            crate::golden::Expectation::Events(
                [OFFERED, ALERTING]
                    .iter()
                    .enumerate()
                    .map(|(i, l)| crate::golden::Expected {
                        event: ev(l),
                        path: "g".into(),
                        line: i + 1,
                    })
                    .collect(),
            ),
        )];
        let observed: Vec<Observation> = observed
            .iter()
            .map(|l| Observation {
                channel: Channel::parse("sca.60970"),
                event: ev(l),
                raw: l.to_string(),
                within: None,
            })
            .collect();
        let refs: Vec<&Deviation> = deviations.iter().collect();
        let stage = compare_stage(
            "alerting",
            &golden,
            &observed,
            &Observability::everything("t"),
            &mut Bindings::default(),
            &refs,
        );
        let mut r = result(&[]);
        r.stages = vec![stage];
        let (v, notes) = judge(&r);
        (v, notes, r)
    }

    #[test]
    fn a_case_is_xfail_only_if_it_is_exactly_the_golden_with_its_deviations() {
        assert_eq!(judged(&[OFFERED, ALERTING], &[]).0, Verdict::Pass);
        assert_eq!(judged(&[BARE], &[]).0, Verdict::Fail);
        let (v, notes, _) = judged(&[BARE], &kamailio());
        assert_eq!(v, Verdict::Xfail);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("profile line 10") && notes[0].contains("reason 10"));
    }

    /// What a deviation does not name is not excused, even on its channel:
    /// `held` where the target is declared to send nothing.
    #[test]
    fn a_difference_beside_a_declared_one_fails_and_the_report_says_which_is_which() {
        for observed in [
            &[BARE, HELD][..],
            &[HELD],
            &[],
            &[BARE, BARE],
            &[r#"{"event": "Offered", "OtherDN": "60970"}"#],
        ] {
            let (v, _, r) = judged(observed, &kamailio());
            assert_eq!(v, Verdict::Fail, "{observed:?}");
            let channel = &r.stages[0].channels[0];
            let d = channel.unexcused().expect("an unexcused divergence");
            // Shown against the golden with the deviations applied.
            assert!(d.expected.is_some() || d.observed.is_some(), "{d}");
            let standing = channel.standing().join("\n");
            assert!(standing.contains("not excused"), "{standing}");
            assert_eq!(r.first_divergence(), Some(d));
        }
        let (_, _, r) = judged(&[BARE, HELD], &kamailio());
        let d = r.stages[0].channels[0].unexcused().unwrap();
        assert_eq!(
            (d.expected.as_deref(), d.observed.as_deref()),
            (None, Some(HELD))
        );
    }

    #[test]
    fn a_declared_deviation_that_did_not_occur_is_an_xpass() {
        // Neither occurred.
        let (v, notes, _) = judged(&[OFFERED, ALERTING], &kamailio());
        assert_eq!(v, Verdict::Xpass);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().all(|n| n.starts_with("did not occur in stage \"alerting\", channel sca.60970: declared deviation (profile line")), "{notes:?}");
        // One occurred (no alerting state), the other did not (the Index is there).
        let (v, notes, r) = judged(&[OFFERED], &kamailio());
        assert_eq!(v, Verdict::Xpass);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("profile line 10"), "{notes:?}");
        let standing = r.stages[0].channels[0].standing();
        assert!(
            standing[0].starts_with("excused:") && standing[0].contains("line 20"),
            "{standing:?}"
        );
        assert!(standing[1].starts_with("did not occur:") && standing[1].contains("line 10"));
    }

    #[test]
    fn a_deviation_the_source_cannot_see_is_neither_excuse_nor_xpass() {
        let mut blind = Observability::everything("t");
        blind.blind_to.push(crate::model::Attr::Index);
        let golden = vec![(
            Channel::parse("sca.60970"),
            crate::golden::Expectation::Events(vec![crate::golden::Expected {
                event: ev(OFFERED),
                path: "g".into(),
                line: 1,
            }]),
        )];
        let observed = vec![Observation {
            channel: Channel::parse("sca.60970"),
            event: ev(BARE),
            raw: String::new(),
            within: None,
        }];
        let devs = kamailio();
        let stage = compare_stage(
            "alerting",
            &golden,
            &observed,
            &blind,
            &mut Bindings::default(),
            &[&devs[0]],
        );
        let mut r = result(&[]);
        r.stages = vec![stage];
        let (v, notes) = judge(&r);
        assert_eq!(v, Verdict::Pass);
        assert!(notes[0].contains("not observable"), "{notes:?}");
    }

    /// Another case's or another stage's deviation does not apply.
    #[test]
    fn a_deviation_applies_only_where_it_is_declared() {
        let mut other = kamailio();
        other[0].stage = "answered".into();
        other[1].channels = vec![Channel::parse("sca.60970_2")];
        assert_eq!(judged(&[BARE], &other).0, Verdict::Fail);
    }

    #[test]
    fn problems_fail_and_undriven_cases_are_inconclusive() {
        let mut r = result(&[]);
        r.problems.push(Problem {
            what: "x".into(),
            raw: None,
        });
        assert_eq!(judge(&r).0, Verdict::Fail);
        let mut r = result(&[]);
        r.error = Some("setup: timed out".into());
        assert_eq!(judge(&r).0, Verdict::Inconclusive);
        assert!(
            Verdict::Xfail.expected()
                && Verdict::Skipped.expected()
                && !Verdict::Xpass.expected()
                && !Verdict::Inconclusive.expected()
        );
    }
}
