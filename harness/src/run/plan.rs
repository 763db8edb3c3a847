//! What the flags of `scacheck run` become: the target, the transport (and
//! over TLS the phones' TLS settings), the event source and the deadlines
//! of every wait, and the name a run's reports and verdict table give it.
//! Parsing here is pure but for binding a HEP listener and reading a
//! profile's CA file (so that a port in use or a bad CA is an error before
//! anything runs).

use std::sync::Arc;
use std::time::Duration;

use crate::observe::hep::HepListener;
use crate::reference::Fault;
use crate::sip::tls::TlsSettings;
use crate::sip::Transport;
use crate::target::{EmbeddedProfile, Loaded, Profile};

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
    /// wait first (3 s allow three sends: at 0, 0.5 and 1.5 s). TCP (and
    /// TLS over it) retransmits below SIP: the plain deadline.
    pub fn answer(&self, plain: Duration, transport: Transport) -> Duration {
        match transport {
            Transport::Udp => plain.max(crate::sip::retransmit::timeout(self.t1)),
            Transport::Tcp | Transport::Tls => plain,
        }
    }
}

/// What a case runs against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A fresh embedded reference server per case, possibly with a defect,
    /// and set up as a profile of it says (one that challenges).
    Embedded {
        fault: Option<Fault>,
        profile: Option<Arc<EmbeddedProfile>>,
    },
    /// A real server described by a profile. Its state is shared, so each
    /// case runs on a line of the profile's pool no other running case
    /// has, tears down what it set up and is checked for leftovers.
    Remote(Arc<Profile>),
}

impl Target {
    /// A short, stable name (a report table's column).
    pub fn name(&self) -> String {
        match self {
            Target::Embedded { fault, profile } => {
                let base = profile.as_ref().map_or("embedded", |p| p.name.as_str());
                match fault {
                    None => base.to_string(),
                    Some(f) => format!("{base}+{f}"),
                }
            }
            Target::Remote(p) => p.name.clone(),
        }
    }

    /// How the reports name it.
    pub fn describe(&self) -> String {
        match self {
            Target::Embedded { fault, profile } => {
                let mut out = String::from("embedded");
                if let Some(p) = profile.as_ref().filter(|p| !p.challenge.is_empty()) {
                    let names: Vec<&str> = p.challenge.iter().map(|a| a.name()).collect();
                    out.push_str(&format!(
                        " ({}: digest challenges, {})",
                        p.name,
                        names.join(", ")
                    ));
                }
                if let Some(f) = fault {
                    out.push_str(&format!(" (fault {f})"));
                }
                out
            }
            Target::Remote(p) => format!("{} at {}", p.name, p.address),
        }
    }

    /// The embedded target as it always was: no defect, no profile.
    pub fn embedded() -> Target {
        Target::Embedded {
            fault: None,
            profile: None,
        }
    }

    /// Where the phones' credentials are, as the target's profile names
    /// them.
    pub fn credentials(&self) -> &[crate::credentials::Rule] {
        match self {
            Target::Embedded { profile, .. } => {
                profile.as_ref().map_or(&[], |p| p.credentials.as_slice())
            }
            Target::Remote(p) => &p.credentials,
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
    /// How many cases run at once (`--jobs`; default: every case on the
    /// embedded target, one per line of a profile's pool).
    pub jobs: Option<usize>,
    /// The phones' credentials, read from the references of the target's
    /// profile when the run started ([`Target::keys`]).
    pub credentials: Arc<crate::credentials::Keys>,
    /// The phones' TLS settings, for a run over TLS: a profile's `[tls]`
    /// ([`RunOptions::with_references`]). Without them the phones of the embedded
    /// server trust the CA it makes for itself.
    pub tls: Option<Arc<TlsSettings>>,
    /// `--loss`: the share of their UDP datagrams the phones drop, and
    /// the seed that picks them ([`crate::sip::loss`]).
    pub loss: Option<crate::sip::loss::Loss>,
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
            target: Target::embedded(),
            transport: Transport::Udp,
            deadlines: Deadlines::default(),
            events: Events::Sip,
            jobs: None,
            credentials: Arc::default(),
            tls: None,
            loss: None,
        }
    }
}

/// Why a run's flags cannot become a plan: bad input or usage (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("--events {spec:?}: {why}")]
    Events { spec: String, why: String },
    #[error("unknown fault {0:?} (known: {known})", known = Fault::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", "))]
    UnknownFault(String),
    #[error("--{0} is for {1}")]
    Misplaced(&'static str, &'static str),
    #[error(transparent)]
    Suite(#[from] crate::suite::SuiteError),
    #[error(transparent)]
    Credentials(#[from] crate::input::InputError),
}

impl Target {
    /// The target `--target` names: `embedded` (with `--fault`), or a
    /// profile's path, loaded (and validated) by `load`, its address
    /// replaced by `--address` when given.
    pub fn from_flags(
        target: &str,
        address: Option<std::net::SocketAddr>,
        fault: Option<&str>,
        load: impl FnOnce(&std::path::Path) -> Result<Loaded, crate::suite::SuiteError>,
    ) -> Result<Target, PlanError> {
        let fault = fault
            .map(|name| Fault::parse(name).ok_or_else(|| PlanError::UnknownFault(name.into())))
            .transpose()?;
        if target == "embedded" {
            if address.is_some() {
                return Err(PlanError::Misplaced(
                    "address",
                    "a target profile, not the embedded server",
                ));
            }
            return Ok(Target::Embedded {
                fault,
                profile: None,
            });
        }
        match load(std::path::Path::new(target))? {
            Loaded::Embedded(p) => {
                if address.is_some() {
                    return Err(PlanError::Misplaced(
                        "address",
                        "a target profile, not the embedded server",
                    ));
                }
                Ok(Target::Embedded {
                    fault,
                    profile: Some(Arc::new(p)),
                })
            }
            Loaded::Remote(_) if fault.is_some() => {
                Err(PlanError::Misplaced("fault", "the embedded server only"))
            }
            Loaded::Remote(mut profile) => {
                if let Some(a) = address {
                    profile.address = a;
                }
                Ok(Target::Remote(Arc::new(*profile)))
            }
        }
    }

    /// Reads the passwords the target's profile names (when the run
    /// starts, never before: `pcap check` reads profiles without them).
    pub fn keys(&self) -> Result<Arc<crate::credentials::Keys>, PlanError> {
        Ok(Arc::new(crate::credentials::Keys::resolve(
            self.credentials(),
        )?))
    }
}

impl Events {
    /// The `--events` source of a run: `sip`, `feed:IP:PORT`,
    /// `tlib-log:PATH` or `hep:IP:PORT`. A HEP listener is bound here, once
    /// for the whole run (`bind` is given the address).
    pub fn parse(
        spec: &str,
        target: &Target,
        bind: impl FnOnce(std::net::SocketAddr) -> std::io::Result<HepListener>,
    ) -> Result<Events, PlanError> {
        const EXPECTED: &str = "expected sip, feed:IP:PORT, tlib-log:PATH or hep:IP:PORT";
        let err = |why: String| PlanError::Events {
            spec: spec.to_string(),
            why,
        };
        if spec == "sip" {
            return Ok(Events::Sip);
        }
        let (kind, value) = spec.split_once(':').ok_or_else(|| err(EXPECTED.into()))?;
        if !["feed", "tlib-log", "hep"].contains(&kind) {
            return Err(err(format!("unknown source {kind:?}, {EXPECTED}")));
        }
        if !matches!(target, Target::Remote(_)) {
            return Err(err(format!(
                "{kind}: is for a target profile; the embedded server has its own feed"
            )));
        }
        let addr = || {
            value
                .parse::<std::net::SocketAddr>()
                .map_err(|_| err(format!("{value:?} is not an IP:PORT")))
        };
        Ok(match kind {
            "feed" => Events::Feed(addr()?),
            "hep" => {
                let at = addr()?;
                let listener =
                    bind(at).map_err(|e| err(format!("cannot listen for HEP on UDP {at}: {e}")))?;
                Events::Hep(Arc::new(listener))
            }
            _ => {
                let path = std::path::PathBuf::from(value);
                // Followed from its end as it grows: a file that is not there
                // would silently give no events at all.
                if !path.is_file() {
                    return Err(err(format!(
                        "{} is not a file (the log must exist when the run starts)",
                        path.display()
                    )));
                }
                Events::Log(path)
            }
        })
    }
}

impl RunOptions {
    /// The run's name in reports and the verdict table: the target, the
    /// event source when it is not the phones' SIP (a table can hold one
    /// target judged from several sources), and `@tcp` as a case over TCP
    /// is keyed.
    pub fn name(&self) -> String {
        let target = self.target.name();
        let name = match &self.events {
            Events::Sip => target,
            Events::Feed(_) => format!("{target}+feed"),
            Events::Log(_) => format!("{target}+tlib-log"),
            Events::Hep(_) => format!("{target}+hep"),
        };
        crate::outcome::keyed(&name, self.transport)
    }

    /// These options with what the target's profile names by reference,
    /// read now, when the run starts (never when a profile is only read,
    /// as `pcap check` does), so that what cannot be read is an error
    /// before anything runs: the phones' credentials ([`Target::keys`]),
    /// and, over TLS against a profile, its `[tls]` settings, CA file
    /// included (a profile without `[tls]` cannot run over TLS).
    pub fn with_references(mut self) -> Result<RunOptions, PlanError> {
        self.credentials = self.target.keys()?;
        if let (Transport::Tls, Target::Remote(profile)) = (self.transport, &self.target) {
            let settings = profile
                .tls_settings()
                .map_err(|e| PlanError::Suite(e.into()))?;
            self.tls = Some(Arc::new(settings));
        }
        Ok(self)
    }

    /// How the reports name what the run was against: the target, and
    /// that the server's certificate went unchecked if it did
    /// ([`crate::sip::tls::INSECURE`]).
    pub fn describe(&self) -> String {
        let mut target = self.target.describe();
        if let Some(loss) = self.loss {
            target.push_str(&format!(" (phones at {loss})"));
        }
        match self.insecure() {
            true => format!("{target}; {}", crate::sip::tls::INSECURE),
            false => target,
        }
    }

    /// Whether the run goes over TLS without checking the server's
    /// certificate.
    pub fn insecure(&self) -> bool {
        self.transport == Transport::Tls && self.tls.as_ref().is_some_and(|t| t.insecure())
    }

    /// The transport a run uses: the one asked for, else a profile's own.
    pub fn transport_for(target: &Target, asked: Option<Transport>) -> Transport {
        match (target, asked) {
            (_, Some(t)) => t,
            (Target::Remote(p), None) => p.transport,
            (Target::Embedded { .. }, None) => Transport::Udp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::target::Timers;

    #[test]
    fn a_run_is_named_for_its_target_source_and_transport() {
        let mut o = RunOptions::default();
        assert_eq!(o.name(), "embedded");
        o.transport = Transport::Tcp;
        assert_eq!(o.name(), "embedded@tcp");
        o.target = Target::Embedded {
            fault: Some(Fault::ALL[0]),
            profile: None,
        };
        assert!(o.name().starts_with("embedded+") && o.name().ends_with("@tcp"));
        for (spec, want) in [
            ("feed", "expected sip"),
            ("smoke:1", "unknown source"),
            ("feed:127.0.0.1:1", "is for a target profile"),
        ] {
            let e = Events::parse(spec, &o.target, |_| unreachable!()).unwrap_err();
            assert!(e.to_string().contains(want), "{spec}: {e}");
        }
        assert!(matches!(
            Events::parse("sip", &o.target, |_| unreachable!()),
            Ok(Events::Sip)
        ));
    }

    /// Over UDP a wait for an answer lasts Timer B/F for the T1 in use (at
    /// least); over TCP, or when the plain deadline is longer, the plain one.
    #[test]
    fn waits_for_an_answer_follow_the_transports_timers() {
        let d = Deadlines::default();
        let secs = Duration::from_secs;
        assert_eq!(d.answer(d.setup, Transport::Udp), secs(32));
        assert_eq!(d.answer(d.step, Transport::Udp), secs(32));
        assert_eq!(d.answer(d.setup, Transport::Tcp), secs(3));
        assert_eq!(d.answer(d.setup, Transport::Tls), secs(3));
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
        let timers = Timers {
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
