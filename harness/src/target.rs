//! Target profiles (`fixtures/targets/<name>/target.toml`): where a real
//! server listens, how each DN maps to a SIP identity on it, what it claims
//! to support, and the deviations we expect of it, each with its reason.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::input::{line_of, InputError};
use crate::sip::Transport;
use crate::topology::Topology;

/// What a case may need of a server; a case whose needs the target does
/// not claim is skipped.
pub const CAPABILITIES: &[&str] = &[
    "call-info",
    "line-seize",
    "hold",
    "retrieve",
    "private-hold",
    "barge-in",
];

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
}

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
}

impl Profile {
    pub fn load(path: &Path, topology: &Topology) -> Result<Profile, InputError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::new(path, None, format!("cannot read: {e}")))?;
        Profile::parse(path, &text, topology)
    }

    pub fn parse(path: &Path, text: &str, topology: &Topology) -> Result<Profile, InputError> {
        let at = |offset: usize, m: String| InputError::new(path, Some(line_of(text, offset)), m);
        let raw: Raw = toml::from_str(text).map_err(|e| {
            InputError::new(
                path,
                e.span().map(|s| line_of(text, s.start)),
                e.message().to_string(),
            )
        })?;
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
