//! Starting a case's target and phones (registered and subscribed) on its
//! line, and running a profile's line commands: the live parts of a run,
//! dropped together at its end.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::derive::wire::WireDeriver;
use crate::line::Identities;
use crate::observe::feed::FeedClient;
use crate::observe::hep::HepView;
use crate::observe::tlib_log::LogFollower;
use crate::observe::EventLog;
use crate::reference::Embedded;
use crate::sip::record::Record;
use crate::sip::tls::{TlsSettings, TlsUri};
use crate::sip::transport::{Endpoint, Recorder};
use crate::sip::Transport;
use crate::suite::Prepared;
use crate::topology::Topology;
use crate::ua::{AgentConfig, AgentHandle, UaError};

use super::relay::RelayTask;
use super::{sip_deriver, Events, RunOptions, Target, Undriven, DOMAIN};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The live parts of a running case; dropped together at the end.
pub(super) struct Live {
    _server: Option<Embedded>,
    pub(super) source: Option<Source>,
    pub(super) agents: Vec<AgentHandle>,
    /// The line the case runs on: its phones' SIP users.
    pub(super) line: Identities,
    /// What asks the server whether it is still there ([`super::health`]).
    pub(super) probe: super::health::Probe,
    /// The relays of the case's relayed phones, by DN ([`super::relay`]).
    relays: std::sync::Mutex<std::collections::BTreeMap<String, RelayTask>>,
    /// What each relay a reroute stopped had dropped by then, with its
    /// phone: kept for the case's notes, which the current relays alone
    /// would lose.
    retired: std::sync::Mutex<Vec<(String, super::relay::Drops)>>,
    /// The server, as the relays reach it.
    address: std::net::SocketAddr,
}

/// A running source of a server's own events.
pub(super) enum Source {
    Feed(#[allow(dead_code)] FeedClient),
    Log(#[allow(dead_code)] LogFollower),
    Hep(HepView),
}

impl Live {
    /// Before a stage begins: waits for a source that lags the phones (the
    /// server's HEP mirror) to catch up with what they have recorded.
    /// Returns false when it has mirrored nothing at all.
    pub(super) async fn catch_up(&self, recorder: &Recorder, deadline: Duration) -> bool {
        match &self.source {
            Some(Source::Hep(view)) => view.caught_up(recorder.len(), deadline).await > 0,
            _ => true,
        }
    }

    /// Puts phone `dn` behind a new relay and stops the one it had (what
    /// the server sends that one from now on is lost); returns the new
    /// relay's address, where the phone is to send its requests.
    pub(super) async fn reroute(&self, dn: &str) -> Result<std::net::SocketAddr, String> {
        let relay = RelayTask::start(self.address)
            .await
            .map_err(|e| format!("{dn}: cannot start a relay: {e}"))?;
        let addr = relay.addr;
        self.claim(addr, dn);
        let old = self
            .relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dn.to_string(), relay);
        if let (Some(old), Some(Source::Hep(view))) = (&old, &self.source) {
            view.disown(old.addr);
        }
        if let Some(old) = old {
            self.retired
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((dn.to_string(), old.drops()));
        }
        Ok(addr)
    }

    /// A server's own view (HEP) sees a relayed phone at its relay's
    /// address: that address is the phone's.
    fn claim(&self, addr: std::net::SocketAddr, dn: &str) {
        if let Some(Source::Hep(view)) = &self.source {
            view.claimer()(addr, dn);
        }
    }

    fn relay_addrs(&self) -> Vec<(String, std::net::SocketAddr)> {
        self.relays
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(dn, r)| (dn.clone(), r.addr))
            .collect()
    }

    /// What the relays dropped, a line per relay that dropped anything.
    pub(super) fn relay_drops(&self) -> Vec<String> {
        let said = |which: &str, dn: &str, d: super::relay::Drops| {
            d.last.map(|last| {
                format!(
                    "the {which}relay of {dn} dropped {} datagram(s), the last: {last}",
                    d.count
                )
            })
        };
        let retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        let relays = self.relays.lock().unwrap_or_else(|p| p.into_inner());
        retired
            .iter()
            .filter_map(|(dn, d)| said("replaced ", dn, d.clone()))
            .chain(relays.iter().filter_map(|(dn, r)| said("", dn, r.drops())))
            .collect()
    }

    pub(super) fn agent(&self, dn: &str) -> Result<&AgentHandle, String> {
        self.agents
            .iter()
            .find(|a| a.dn() == dn)
            .ok_or_else(|| format!("no user agent for {dn}"))
    }
}

/// How long a profile's line command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(20);

/// Runs one of the profile's line commands (program and arguments) and
/// returns what it printed; a command that cannot start, fails or outlives
/// its deadline is an error naming it.
pub(super) async fn command(argv: &[String]) -> Result<String, Undriven> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(String::new());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let failed = |why: String| Undriven::Command {
        command: argv.join(" "),
        why,
    };
    let out = tokio::time::timeout(COMMAND_DEADLINE, cmd.output())
        .await
        .map_err(|_| failed(format!("did not finish within {COMMAND_DEADLINE:?}")))?
        .map_err(|e| failed(format!("could not start: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(failed(format!(
            "failed ({}): {}",
            out.status,
            stderr.trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts the target (if it is embedded) and the user agents, registers
/// them and subscribes the shared-line phones to their line's call-info.
pub(super) async fn start(
    p: &Prepared,
    topology: &Topology,
    opts: &RunOptions,
    line: &Identities,
    recorder: &Recorder,
    log: &EventLog,
) -> Result<Live, Undriven> {
    // The derived layers come from SIP as it is recorded (by the phones,
    // or by the server's HEP mirror), so they land in the same log, in the
    // same order, as a server's own events.
    let members = topology.members_among(&p.case.parties);
    let mut wire = WireDeriver::new(&members);
    let mut tlib = match (&opts.target, &opts.events) {
        (Target::Remote(_), Events::Sip | Events::Hep(_)) => Some(sip_deriver(p, topology, line)),
        _ => None,
    };
    let derived = log.clone();
    let rename = line.renamer(topology);
    // `own`: the record is one of the case's (a phone's), not the
    // server's mirror of it: its events name it as their message.
    let mut derive = move |rec: &Record, own: bool| {
        let tlib_events = tlib.as_mut().map(|t| t.observe(rec)).unwrap_or_default();
        // The wire layer names the users it was told (OtherDN,
        // AppearanceUri): the golden files' DNs.
        let wire_events = wire.observe(rec).into_iter().map(|mut o| {
            rename(&mut o.event);
            o
        });
        for mut obs in tlib_events.into_iter().chain(wire_events) {
            obs.record = own.then_some(rec.seq);
            derived.push(obs);
        }
    };
    let hep = match (&opts.target, &opts.events) {
        (Target::Remote(_), Events::Hep(listener)) => {
            let view = HepView::start(listener, move |rec: &Record| derive(rec, false));
            // The server's view is attributed by the phones' addresses,
            // each TCP connection's included, learnt as they record.
            let claims = view.claimer();
            recorder.set_tap(move |rec| claims(rec.local, &rec.agent));
            Some(view)
        }
        _ => {
            recorder.set_tap(move |rec: &Record| derive(rec, true));
            None
        }
    };
    let (server, feed, domain, address) = match &opts.target {
        Target::Embedded { fault, profile } => {
            // A challenging server knows the phones' passwords (or the
            // ones its profile says it expects); its nonces are its own.
            let challenger = match profile.as_ref().filter(|p| !p.challenge.is_empty()) {
                None => None,
                Some(p) => {
                    let expected = match p.expects.is_empty() {
                        true => opts.credentials.clone(),
                        false => std::sync::Arc::new(
                            crate::credentials::Keys::resolve(&p.expects)
                                .map_err(|e| Undriven::Start(e.to_string()))?,
                        ),
                    };
                    Some(crate::sip::auth::Challenger::new(
                        DOMAIN,
                        &p.challenge,
                        expected.passwords(line, topology),
                        &format!("{:x}", std::process::id()),
                    ))
                }
            };
            let server = Embedded::start(LOOPBACK, DOMAIN, topology.clone(), *fault, challenger)
                .await
                .map_err(|e| Undriven::Start(format!("embedded server: {e}")))?;
            let feed = FeedClient::connect(server.feed, opts.deadlines.setup, log.clone())
                .await
                .map_err(Undriven::Start)?;
            let sip = server.sip;
            (
                Some(server),
                Some(Source::Feed(feed)),
                DOMAIN.to_string(),
                sip,
            )
        }
        Target::Remote(profile) => {
            // A shared server's own events cover every line, in its SIP
            // users: the case keeps its line's, in DNs.
            let mut local = crate::line::Localizer::new(line, topology);
            let told = log.clone();
            let own = log.mapped(move |obs| {
                let out = local.push(obs);
                if local.dropped == 1 {
                    told.problem(format!(
                        "the server's events: more than {} about calls of no known line; the oldest dropped",
                        crate::line::HELD
                    ));
                }
                out
            });
            let feed = match &opts.events {
                Events::Feed(addr) => Some(Source::Feed(
                    FeedClient::connect(*addr, opts.deadlines.setup, own)
                        .await
                        .map_err(Undriven::Start)?,
                )),
                Events::Log(path) => Some(Source::Log(LogFollower::start(path.clone(), own))),
                Events::Hep(_) => hep.map(Source::Hep),
                Events::Sip => None,
            };
            (None, feed, profile.domain.clone(), profile.address)
        }
    };
    let tls = phones_tls(opts, server.as_ref())?;
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
    let mut relays = std::collections::BTreeMap::new();
    for dn in &p.case.parties {
        let (endpoint, inbound) = Endpoint::bind_with(dn, LOOPBACK, recorder.clone(), tls.clone())
            .await
            .map_err(|e| Undriven::Start(format!("{dn}: cannot bind: {e}")))?;
        if let Some(loss) = opts.loss {
            endpoint.lose(loss, &format!("{}/{dn}", p.case.id));
        }
        let user = line.user(dn).to_string();
        // A relayed phone sends everything to its relay, from its REGISTER on.
        let via = match p.case.relayed.contains(dn) {
            true => {
                let relay = RelayTask::start(address)
                    .await
                    .map_err(|e| Undriven::Start(format!("{dn}: cannot start a relay: {e}")))?;
                let at = relay.addr;
                relays.insert(dn.clone(), relay);
                at
            }
            false => address,
        };
        let cfg = AgentConfig {
            dn: dn.clone(),
            user,
            domain: domain.clone(),
            local: endpoint.local_addr(),
            transport: opts.transport,
            server: via,
            nonce: nonce.clone(),
            t1: opts.deadlines.t1,
            credentials: opts.credentials.for_phone(dn, line),
            tls_uri: tls.as_ref().map(|t| t.uri).unwrap_or_default(),
        };
        agents.push(AgentHandle::start(endpoint, inbound, cfg));
    }
    let live = Live {
        _server: server,
        source: feed,
        agents,
        line: line.clone(),
        probe: super::health::Probe {
            to: address,
            transport: opts.transport,
            tls,
            domain,
        },
        relays: std::sync::Mutex::new(relays),
        retired: Default::default(),
        address,
    };
    for (dn, addr) in live.relay_addrs() {
        live.claim(addr, &dn);
    }
    // A setup that fails says what the phone found wrong on the way (a
    // TLS handshake it could not make, say): the wait alone only timed out.
    fn setup(a: &AgentHandle) -> impl FnOnce(UaError) -> Undriven + '_ {
        move |error| Undriven::Setup {
            error,
            problems: a.status().problems,
        }
    }
    // The phones' REGISTER and SUBSCRIBE are answers to wait for.
    let deadline = opts.deadlines.answer(opts.deadlines.setup, opts.transport);
    for a in &live.agents {
        a.act(|a| a.register()).await.map_err(setup(a))?;
    }
    for a in &live.agents {
        a.wait_for("its REGISTER to be accepted", deadline, |s| s.registered)
            .await
            .map_err(setup(a))?;
    }
    for a in &live.agents {
        if let Some(l) = topology.line_of(a.dn()) {
            let number = line.user(&l.number).to_string();
            a.act(move |a| {
                a.subscribe_call_info(&number);
            })
            .await
            .map_err(setup(a))?;
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
            other => other.map_err(setup(a))?,
        }
    }
    Ok(live)
}

/// The phones' TLS settings for a run over TLS: the profile's (or the
/// ones a test gives), else trust in the CA the embedded server made for
/// itself; none over UDP or TCP.
fn phones_tls(
    opts: &RunOptions,
    server: Option<&Embedded>,
) -> Result<Option<Arc<TlsSettings>>, Undriven> {
    if opts.transport != Transport::Tls {
        return Ok(None);
    }
    match (&opts.tls, server) {
        (Some(tls), _) => Ok(Some(tls.clone())),
        (None, Some(server)) => {
            let pki = &server.pki;
            TlsSettings::new(pki.trust(), DOMAIN, pki.phone_identity(), TlsUri::default())
                .map(|t| Some(Arc::new(t)))
                .map_err(|e| Undriven::Start(format!("TLS: {e}")))
        }
        (None, None) => Err(Undriven::Start(
            "a run over TLS needs the profile's [tls] settings".into(),
        )),
    }
}
