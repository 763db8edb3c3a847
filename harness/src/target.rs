//! Target profiles (`fixtures/targets/<name>/target.toml`): where a real
//! server listens, how each DN maps to a SIP identity on it, what it claims
//! to support, and the deviations we expect of it, each with its reason.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::input::{line_of, InputError};
use crate::sip::Transport;
use crate::topology::Topology;

pub use crate::case::CAPABILITIES;

pub use crate::deviation::Deviation;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub path: PathBuf,
    pub address: SocketAddr,
    pub transport: Transport,
    pub domain: String,
    /// DN -> SIP user part.
    pub identities: BTreeMap<String, String>,
    pub capabilities: BTreeSet<String>,
    pub deviations: Vec<Deviation>,
    /// A command run before every case to bring the server back to a clean
    /// state (program and arguments; relative paths are from the profile's
    /// directory's repository root, i.e. the working directory).
    pub reset: Vec<String>,
    pub timers: Timers,
}

/// The profile's optional `[timers]`: RFC 3261's T1 for the phones'
/// retransmissions over UDP (which a wait for an answer follows) and the
/// run's deadlines, for a server slower than the defaults allow or a lossy
/// path. What the table leaves out keeps its default (`run::Deadlines`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timers {
    /// `t1_ms`.
    pub t1: Option<Duration>,
    /// `setup_s`: registration and subscription.
    pub setup: Option<Duration>,
    /// `step_s`: a step's precondition.
    pub step: Option<Duration>,
    /// `stage_s`: the events a stage expects.
    pub stage: Option<Duration>,
}

/// The largest T1 a profile may set, in ms: a round trip of a minute is a
/// typo, and Timer B/F (64·T1) must stay a finite wait.
const MAX_T1_MS: u64 = 60_000;
/// The largest deadline a profile may set, in seconds.
const MAX_DEADLINE_S: u64 = 3_600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    name: String,
    address: Spanned<String>,
    #[serde(default)]
    transport: Option<Spanned<String>>,
    domain: String,
    identities: Spanned<BTreeMap<String, String>>,
    capabilities: Spanned<Vec<String>>,
    #[serde(default)]
    deviation: Vec<Spanned<crate::deviation::RawDeviation>>,
    #[serde(default)]
    reset: Vec<String>,
    #[serde(default)]
    timers: Option<RawTimers>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimers {
    t1_ms: Option<Spanned<u64>>,
    setup_s: Option<Spanned<u64>>,
    step_s: Option<Spanned<u64>>,
    stage_s: Option<Spanned<u64>>,
}

impl Profile {
    pub fn load(path: &Path, topology: &Topology) -> Result<Profile, InputError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::new(path, None, format!("cannot read: {e}")))?;
        Profile::parse(path, &text, topology)
    }

    pub fn parse(path: &Path, text: &str, topology: &Topology) -> Result<Profile, InputError> {
        let at = |offset: usize, m: String| InputError::new(path, Some(line_of(text, offset)), m);
        let raw: Raw =
            toml::from_str(text).map_err(|e| crate::input::toml_error(path, text, &e))?;
        let address = raw.address.get_ref().parse().map_err(|_| {
            at(
                raw.address.span().start,
                format!("address {:?} is not IP:port", raw.address.get_ref()),
            )
        })?;
        let transport = match &raw.transport {
            None => Transport::Udp,
            Some(t) => Transport::parse(t.get_ref()).ok_or_else(|| {
                at(
                    t.span().start,
                    format!("transport {:?} is not udp or tcp", t.get_ref()),
                )
            })?,
        };
        let identities_at = raw.identities.span().start;
        let identities = raw.identities.into_inner();
        for dn in topology.dns() {
            if !identities.contains_key(dn) {
                return Err(at(
                    identities_at,
                    format!("identities has no SIP user for DN {dn}"),
                ));
            }
        }
        if let Some(dn) = identities.keys().find(|dn| !topology.knows(dn)) {
            return Err(at(
                identities_at,
                format!("identities names unknown DN {dn:?}"),
            ));
        }
        let caps_at = raw.capabilities.span().start;
        let capabilities: BTreeSet<String> = raw.capabilities.into_inner().into_iter().collect();
        if let Some(c) = capabilities
            .iter()
            .find(|c| !CAPABILITIES.contains(&c.as_str()))
        {
            return Err(at(
                caps_at,
                format!(
                    "unknown capability {c:?} (known: {})",
                    CAPABILITIES.join(", ")
                ),
            ));
        }
        let deviations = raw
            .deviation
            .into_iter()
            .map(|d| {
                let line = line_of(text, d.span().start);
                d.into_inner().check(path, text, line)
            })
            .collect::<Result<_, _>>()?;
        let timers = match raw.timers {
            None => Timers::default(),
            Some(t) => {
                // Each value within 1..=max, or an error at its line.
                let within = |v: Option<Spanned<u64>>, name: &str, max: u64| match v {
                    Some(v) if !(1..=max).contains(v.get_ref()) => Err(at(
                        v.span().start,
                        format!("{name} = {} is not between 1 and {max}", v.get_ref()),
                    )),
                    v => Ok(v.map(Spanned::into_inner)),
                };
                Timers {
                    t1: within(t.t1_ms, "t1_ms", MAX_T1_MS)?.map(Duration::from_millis),
                    setup: within(t.setup_s, "setup_s", MAX_DEADLINE_S)?.map(Duration::from_secs),
                    step: within(t.step_s, "step_s", MAX_DEADLINE_S)?.map(Duration::from_secs),
                    stage: within(t.stage_s, "stage_s", MAX_DEADLINE_S)?.map(Duration::from_secs),
                }
            }
        };
        Ok(Profile {
            name: raw.name,
            path: path.to_path_buf(),
            address,
            transport,
            domain: raw.domain,
            identities,
            capabilities,
            deviations,
            reset: raw.reset,
            timers,
        })
    }

    /// Checks that every case, stage, channel and golden event the
    /// deviations name exists in the suite (see [`crate::deviation::validate`]).
    pub fn validate(
        &self,
        suite: &[(&crate::case::Case, &[crate::golden::GoldenStage])],
    ) -> Result<(), InputError> {
        crate::deviation::validate(&self.path, &self.deviations, suite)
    }

    /// The DN each SIP user stands for in the golden files.
    pub fn dn_of_user(&self, topology: &Topology) -> BTreeMap<String, String> {
        dn_of_user(&self.identities, topology)
    }
}

/// The DN each SIP user stands for in the golden files: on a server where
/// the phones of a line share an AoR, their user is the line's number.
pub fn dn_of_user(
    identities: &BTreeMap<String, String>,
    topology: &Topology,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (dn, user) in identities {
        let name = topology
            .line_of(dn)
            .map(|l| l.number.clone())
            .unwrap_or_else(|| dn.clone());
        out.entry(user.clone()).or_insert(name);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "k"
address = "127.0.0.1:5070"
domain = "sca.test"
capabilities = ["call-info", "hold"]

[identities]
"60972" = "60972"
"60970" = "60970"
"60970_2" = "60970"

[[deviation]]
cases = ["barge-in"]
stage = "barged"
channels = ["sca.60970", "60970"]
absent = { event = "Appearance", AppearanceState = "bridge-active" }
reason = "no barge-in"
"#;

    fn parse(text: &str) -> Result<Profile, InputError> {
        Profile::parse(Path::new("t.toml"), text, &Topology::reference())
    }

    #[test]
    fn reads_a_profile() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.address, "127.0.0.1:5070".parse().unwrap());
        assert_eq!(p.identities["60970_2"], "60970");
        assert_eq!(p.deviations[0].line, 12);
        let covers = |case, stage, channel| {
            p.deviations[0].covers(case, stage, &crate::model::Channel::parse(channel))
        };
        assert!(covers("barge-in", "barged", "sca.60970"));
        assert!(!covers("barge-in", "barged", "sca.60970_2"));
        assert!(!covers("barge-in", "answered", "sca.60970"));
        assert!(!covers("hold-retrieve", "barged", "sca.60970"));
        assert_eq!(p.dn_of_user(&Topology::reference())["60970"], "60970");
    }

    #[test]
    fn timers_are_optional_and_read_from_their_table() {
        assert_eq!(parse(GOOD).unwrap().timers, Timers::default());
        let p = parse(&format!("{GOOD}\n[timers]\nt1_ms = 250\nsetup_s = 40\n")).unwrap();
        assert_eq!(
            p.timers,
            Timers {
                t1: Some(Duration::from_millis(250)),
                setup: Some(Duration::from_secs(40)),
                step: None,
                stage: None,
            }
        );
    }

    #[test]
    fn bad_timers_name_the_line() {
        let last = GOOD.lines().count();
        for (table, line, want) in [
            ("t1_ms = 0", 2, "t1_ms = 0 is not between 1 and 60000"),
            (
                "step_s = 1\nstage_s = 86400",
                3,
                "stage_s = 86400 is not between 1 and 3600",
            ),
            ("t2_ms = 4000", 2, "unknown field `t2_ms`"),
            ("setup_s = -3", 2, "invalid value"),
            ("setup_s = \"3\"", 2, "invalid type"),
        ] {
            let e = parse(&format!("{GOOD}[timers]\n{table}\n")).unwrap_err();
            assert_eq!(e.line, Some(last + line), "{table}: {e}");
            assert!(e.message.contains(want), "{table}: {e}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        for (text, line, want) in [
            (
                GOOD.replace("127.0.0.1:5070", "localhost"),
                3,
                "not IP:port",
            ),
            (
                GOOD.replace("\"hold\"", "\"telepathy\""),
                5,
                "unknown capability",
            ),
            (
                GOOD.replace("\"60970_2\" = \"60970\"\n", ""),
                7,
                "no SIP user for DN 60970_2",
            ),
            (GOOD.replace("no barge-in", " "), 12, "needs its reason"),
            (
                GOOD.replace("absent = ", "gone = "),
                16,
                "unknown field `gone`",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, Some(line), "{e}");
            assert!(e.message.contains(want), "{e}");
        }
    }
}
