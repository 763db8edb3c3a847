//! One case end to end: start the target, start the user agents, set them
//! up, then stage by stage run the steps, wait for the events the golden
//! expects (or a deadline), let late events settle, and compare.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::case::{Action, Case, Step};
use crate::diff::{compare_stage, Bindings, Divergence, StageResult};
use crate::golden::GoldenStage;
use crate::input::InputError;
use crate::observe::feed::FeedClient;
use crate::observe::wire::WireDeriver;
use crate::observe::{EventLog, Observability, Observation};
use crate::reference::{Embedded, Fault};
use crate::sip::transport::{Endpoint, Record, Recorder};
use crate::sip::Transport;
use crate::topology::Topology;
use crate::ua::{AgentConfig, AgentHandle, CallDirection, Phase, Seizure, UaError};

/// The SIP domain of the embedded target.
pub const DOMAIN: &str = "sca.test";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Every wait of a run has one of these deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Registration and subscription of every user agent.
    pub setup: Duration,
    /// A step's precondition (an INVITE to answer, a call to hang up).
    pub step: Duration,
    /// The events a stage's golden expects.
    pub stage: Duration,
    /// Quiet time after the expected events, to catch extra ones.
    pub settle: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            setup: Duration::from_secs(3),
            step: Duration::from_secs(2),
            stage: Duration::from_secs(2),
            settle: Duration::from_millis(50),
        }
    }
}

/// What a case runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A fresh embedded reference server per case, possibly with a defect.
    Embedded { fault: Option<Fault> },
}

#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub target: Target,
    pub transport: Transport,
    pub deadlines: Deadlines,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            target: Target::Embedded { fault: None },
            transport: Transport::Udp,
            deadlines: Deadlines::default(),
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
    pub fn new(
        case: Case,
        golden_root: &Path,
        topology: &Topology,
    ) -> Result<Prepared, InputError> {
        let golden = case
            .stages
            .iter()
            .map(|s| GoldenStage::load(golden_root, &s.golden, &case.parties, topology))
            .collect::<Result<_, _>>()?;
        Ok(Prepared { case, golden })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// The target could not be driven through the case.
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
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
}

impl CaseResult {
    pub fn first_divergence(&self) -> Option<&Divergence> {
        self.stages.iter().find_map(StageResult::first_divergence)
    }

    /// One line saying why the case did not pass.
    pub fn headline(&self) -> Option<String> {
        if let Some(d) = self.first_divergence() {
            return Some(d.to_string());
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
    let mut set = tokio::task::JoinSet::new();
    for (i, p) in cases.iter().enumerate() {
        let (p, topology) = (p.clone(), topology.clone());
        set.spawn(async move { (i, run_case(&p, &topology, opts).await) });
    }
    let mut out: Vec<Option<CaseResult>> = vec![None; cases.len()];
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((i, r)) => out[i] = Some(r),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out.into_iter().flatten().collect()
}

/// The live parts of a running case; dropped together at the end.
struct Live {
    _server: Embedded,
    _feed: FeedClient,
    agents: Vec<AgentHandle>,
}

impl Live {
    fn agent(&self, dn: &str) -> Result<&AgentHandle, String> {
        self.agents
            .iter()
            .find(|a| a.dn() == dn)
            .ok_or_else(|| format!("no user agent for {dn}"))
    }
}

pub async fn run_case(p: &Prepared, topology: &Topology, opts: RunOptions) -> CaseResult {
    let started = Instant::now();
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
        source: Observability::everything(
            "embedded server event feed; SCA wire layer from the SIP the phones saw",
        ),
    };
    let mut marks: Vec<(String, usize)> = vec![("setup".into(), 0)];
    match start(p, topology, opts, &recorder, &log).await {
        Err(e) => result.error = Some(e),
        Ok(live) => {
            let mut bindings = Bindings::default();
            for (stage, golden) in p.case.stages.iter().zip(&p.golden) {
                let mark = log.len();
                marks.push((stage.name.clone(), mark));
                let mut failed_step = None;
                for step in &stage.steps {
                    if let Err(e) = perform(&live, topology, step, opts.deadlines.step).await {
                        failed_step = Some(format!(
                            "stage {:?}, step at {}:{}: {e}",
                            stage.name,
                            p.case.path.display(),
                            step.line
                        ));
                        break;
                    }
                }
                let want: Vec<_> = golden
                    .channels
                    .iter()
                    .filter(|(c, _)| result.source.sees_channel(c))
                    .map(|(c, e)| (c.clone(), e.count()))
                    .collect();
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
    let all = log.since(0);
    for (i, obs) in all.into_iter().enumerate() {
        let stage = marks
            .iter()
            .rev()
            .find(|(_, m)| *m <= i)
            .map(|(s, _)| s.clone())
            .unwrap_or_default();
        result.events.push((stage, obs));
    }
    result.verdict = if result.stages.iter().any(|s| !s.passed()) {
        Verdict::Fail
    } else if result.error.is_some() {
        Verdict::Inconclusive
    } else if !result.problems.is_empty() {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    result.duration = started.elapsed();
    result
}

/// Starts the target and the user agents, registers them and subscribes
/// the shared-line phones to their line's call-info.
async fn start(
    p: &Prepared,
    topology: &Topology,
    opts: RunOptions,
    recorder: &Recorder,
    log: &EventLog,
) -> Result<Live, String> {
    let Target::Embedded { fault } = opts.target;
    let server = Embedded::start(LOOPBACK, DOMAIN, topology.clone(), fault)
        .await
        .map_err(|e| format!("embedded server: {e}"))?;
    let feed = FeedClient::connect(server.feed, opts.deadlines.setup, log.clone()).await?;
    // The wire layer is derived as the phones' messages are recorded, so it
    // lands in the same log, in the same order, as the server's events.
    let members: Vec<String> = p
        .case
        .parties
        .iter()
        .filter(|d| topology.line_of(d).is_some())
        .cloned()
        .collect();
    let mut deriver = WireDeriver::new(&members);
    let wire_log = log.clone();
    recorder.set_tap(move |rec| {
        for obs in deriver.observe(rec) {
            wire_log.push(obs);
        }
    });
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
        let cfg = AgentConfig {
            dn: dn.clone(),
            user: dn.clone(),
            domain: DOMAIN.into(),
            local: endpoint.local_addr(),
            transport: opts.transport,
            server: server.sip,
            nonce: nonce.clone(),
        };
        agents.push(AgentHandle::start(endpoint, inbound, cfg));
    }
    let live = Live {
        _server: server,
        _feed: feed,
        agents,
    };
    let setup = |e: UaError| format!("setup: {e}");
    for a in &live.agents {
        a.act(|a| a.register()).await.map_err(setup)?;
    }
    for a in &live.agents {
        a.wait_for("its REGISTER to be accepted", opts.deadlines.setup, |s| {
            s.registered
        })
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
        a.wait_for(
            "its call-info subscription and first NOTIFY",
            opts.deadlines.setup,
            |s| s.subscribed && s.notifies > 0,
        )
        .await
        .map_err(setup)?;
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
    let agent = live.agent(&step.actor)?;
    let s = |e: UaError| e.to_string();
    let script = |e: crate::ua::ScriptError| e.to_string();
    let line = topology
        .line_of(&step.actor)
        .map(|l| l.number.clone())
        .unwrap_or_default();
    let ringing = |st: &crate::ua::Status| st.call(|c| c.phase == Phase::Ringing).is_some();
    let confirmed = |st: &crate::ua::Status| st.call(|c| c.phase == Phase::Confirmed).is_some();
    match step.action.clone() {
        Action::Call { to } => {
            // A call after a seizure must know whether it was granted.
            agent
                .wait_for("the line-seize answer", deadline, |st| {
                    !matches!(st.seizure, Some(Seizure::Pending(_)))
                })
                .await
                .map_err(s)?;
            agent.act(move |a| a.invite(&to)).await.map_err(s)?;
        }
        Action::Answer => {
            agent
                .wait_for("an incoming call to ring", deadline, ringing)
                .await
                .map_err(s)?;
            agent
                .act(|a| a.answer())
                .await
                .map_err(s)?
                .map_err(script)?;
        }
        Action::Refuse { code } => {
            agent
                .wait_for("an incoming call to ring", deadline, ringing)
                .await
                .map_err(s)?;
            agent
                .act(move |a| a.refuse(code))
                .await
                .map_err(s)?
                .map_err(script)?;
        }
        Action::Hangup => {
            agent
                .wait_for("an established call", deadline, confirmed)
                .await
                .map_err(s)?;
            agent
                .act(|a| a.hangup())
                .await
                .map_err(s)?
                .map_err(script)?;
        }
        Action::Cancel => {
            let unanswered = |c: &crate::ua::CallView| {
                c.direction == CallDirection::Outgoing
                    && matches!(c.phase, Phase::Calling | Phase::Early)
            };
            agent
                .wait_for("an unanswered outgoing call", deadline, |st| {
                    st.call(unanswered).is_some()
                })
                .await
                .map_err(s)?;
            agent
                .act(|a| a.cancel())
                .await
                .map_err(s)?
                .map_err(script)?;
        }
        Action::Seize { index, expires } => agent
            .act(move |a| a.seize(&line, index, expires))
            .await
            .map_err(s)?,
        Action::Hold { private } => {
            agent
                .wait_for("an established call", deadline, confirmed)
                .await
                .map_err(s)?;
            agent
                .act(move |a| a.hold(private))
                .await
                .map_err(s)?
                .map_err(script)?;
        }
        Action::Retrieve { index } | Action::Barge { index } => {
            agent
                .act(move |a| a.join_appearance(&line, index))
                .await
                .map_err(s)?;
        }
        Action::Refresh | Action::Unsubscribe => {
            let expires = if step.action == Action::Refresh {
                3600
            } else {
                0
            };
            agent
                .wait_for("an accepted call-info subscription", deadline, |st| {
                    st.subscribed
                })
                .await
                .map_err(s)?;
            agent
                .act(move |a| a.refresh_call_info(expires))
                .await
                .map_err(s)?
                .map_err(script)?;
        }
    }
    Ok(())
}
