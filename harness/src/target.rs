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
use crate::line::Identities;
use crate::sip::tls::{TestPki, TlsSettings, TlsUri, Trust};
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
    /// Every transport the server serves at `address` (`transports =
    /// [...]`; `transport` is always one): a case that runs only over a
    /// connection (`transports` of the case) runs over TCP in a UDP run
    /// when the server serves TCP there too.
    pub transports: Vec<Transport>,
    pub domain: String,
    /// The pool of independent shared lines, each with every DN's SIP
    /// user on it (at least one line; a case runs on one line at a time).
    pub lines: Vec<Identities>,
    pub capabilities: BTreeSet<String>,
    pub deviations: Vec<Deviation>,
    /// What the server offers to read and to clean one line's state
    /// (`[line_commands]`): never a restart, other cases use the server.
    pub line_commands: LineCommands,
    pub timers: Timers,
    /// What the phones answer challenges with (`[[credentials]]`), by
    /// reference; read when a run starts ([`crate::credentials::Keys`]).
    pub credentials: Vec<crate::credentials::Rule>,
    /// How the phones speak TLS to the server (`[tls]`), needed by a run
    /// over TLS.
    pub tls: Option<TlsProfile>,
    /// How to tell the server has stopped (`[liveness]`); none: a case
    /// that the server stops answering times out as any other.
    pub liveness: Option<Liveness>,
}

/// The profile's optional `[liveness]`: how a run tells that the server
/// stopped, once a case has gone wrong (a timeout, a missing event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    /// A file holding the server's process ID (`pid_file`), as written:
    /// `${VAR}` is expanded, relative to the profile's directory, when it
    /// is read (a start script's state directory need not exist for `pcap
    /// check` to read the profile). The server has stopped when the file
    /// names no running process.
    pub pid_file: Option<String>,
    /// `probe = "options"`: the server has stopped when an OPTIONS to its
    /// address gets no answer at all (any status is an answer).
    pub probe: bool,
    /// The table's line, for what is found wrong when it is used.
    pub line: usize,
}

/// The profile's optional `[tls]`: how the phones check the server's
/// certificate, how they write their URIs, and the name they check it
/// against and send as SNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsProfile {
    pub trust: TlsTrust,
    /// `uri`: `transport-param` (default) or `sips`.
    pub uri: TlsUri,
    /// `server_name`, else the profile's domain.
    pub server_name: String,
    /// The table's line, for what is found wrong when it is used.
    pub line: usize,
}

/// `ca_file` or `insecure = true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// The CA certificates (PEM) the server's certificate is checked
    /// against, as written: `${VAR}` is expanded, relative to the profile's
    /// directory, only when a run over TLS starts (a start script's state
    /// directory need not exist for `pcap check` to read the profile).
    CaFile(String),
    /// No check at all (a lab server); every report says so.
    Insecure,
}

/// A profile of the embedded server itself (`embedded = { ... }` instead
/// of an address): the reference server, started per case as always, set
/// up as a deployment would be. Today: it challenges with digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedProfile {
    pub name: String,
    pub path: PathBuf,
    /// The algorithms it challenges with, one header each, strongest first.
    pub challenge: Vec<crate::sip::auth::Algorithm>,
    pub credentials: Vec<crate::credentials::Rule>,
    /// The passwords the server expects (`embedded.expects`, the same form
    /// as a `[[credentials]]` entry); none: the phones' own. A different
    /// one is how a wrong password is tested.
    pub expects: Vec<crate::credentials::Rule>,
}

/// What a `--target` file describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    Remote(Box<Profile>),
    Embedded(EmbeddedProfile),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbeddedProfile {
    name: String,
    embedded: RawEmbedded,
    #[serde(default)]
    credentials: Vec<Spanned<crate::credentials::RawCredentials>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbedded {
    challenge: Spanned<Vec<String>>,
    #[serde(default)]
    expects: Option<Spanned<crate::credentials::RawCredentials>>,
}

impl EmbeddedProfile {
    fn parse(path: &Path, text: &str, topology: &Topology) -> Result<EmbeddedProfile, InputError> {
        let raw: RawEmbeddedProfile =
            toml::from_str(text).map_err(|e| crate::input::toml_error(path, text, &e))?;
        let at = |offset: usize, m: String| InputError::new(path, Some(line_of(text, offset)), m);
        let span = raw.embedded.challenge.span().start;
        let challenge = raw
            .embedded
            .challenge
            .into_inner()
            .iter()
            .map(|a| {
                crate::sip::auth::Algorithm::parse(a).ok_or_else(|| {
                    at(
                        span,
                        format!("challenge algorithm {a:?} is not MD5 or SHA-256"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let credentials = crate::credentials::read(path, text, raw.credentials, topology)?;
        let expects = crate::credentials::read(
            path,
            text,
            raw.embedded.expects.into_iter().collect(),
            topology,
        )?;
        if !challenge.is_empty() && credentials.is_empty() {
            return Err(at(
                span,
                "a challenging server needs [[credentials]] for the phones".into(),
            ));
        }
        Ok(EmbeddedProfile {
            name: raw.name,
            path: path.to_path_buf(),
            challenge,
            credentials,
            expects,
        })
    }
}

impl Loaded {
    /// Reads a `--target` file: a profile of the embedded server when it
    /// has an `embedded` table, of a real server otherwise.
    pub fn load(path: &Path, topology: &Topology) -> Result<Loaded, InputError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::new(path, None, format!("cannot read: {e}")))?;
        let embedded = toml::from_str::<toml::Table>(&text)
            .map(|t| t.contains_key("embedded"))
            .unwrap_or(false);
        if embedded {
            EmbeddedProfile::parse(path, &text, topology).map(Loaded::Embedded)
        } else {
            Profile::parse(path, &text, topology).map(|p| Loaded::Remote(Box::new(p)))
        }
    }
}

/// The profile's optional `[line_commands]`: programs and arguments, with
/// `{aor}` replaced by the line's AoR (`sip:60970-3@sca.test`), run from
/// the working directory. Empty: the server offers none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineCommands {
    /// Prints what the server still holds for the line, one JSON event per
    /// line of output (see README "Lines and leak checks"), nothing when
    /// the line is idle.
    pub state: Vec<String>,
    /// Brings the line to a known idle state before a case uses it.
    pub clean: Vec<String>,
}

impl LineCommands {
    /// `command` for the line whose AoR is `aor`.
    pub fn for_line(command: &[String], aor: &str) -> Vec<String> {
        command.iter().map(|a| a.replace("{aor}", aor)).collect()
    }
}

impl Profile {
    /// One of its line commands (`pick` chooses which) for `line`: the
    /// line's AoR and the program and arguments to run, or `None` when the
    /// profile names no such command.
    pub fn line_command(
        &self,
        pick: impl Fn(&LineCommands) -> &Vec<String>,
        line: &Identities,
        topology: &Topology,
    ) -> Option<(String, Vec<String>)> {
        let command = pick(&self.line_commands);
        if command.is_empty() {
            return None;
        }
        let aor = line.line_aor(topology, &self.domain);
        Some((aor.clone(), LineCommands::for_line(command, &aor)))
    }
}

/// The most lines a profile may describe: each is a case's parties on the
/// server, and a pool this large is a typo.
pub const MAX_LINES: usize = 1000;

pub use crate::line::LINE_PLACEHOLDER;

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
    #[serde(default)]
    transports: Option<Spanned<Vec<String>>>,
    domain: String,
    /// One line's identities, or every line's as templates over
    /// `{line}` with `lines`.
    #[serde(default)]
    identities: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    lines: Option<Spanned<usize>>,
    /// An explicit list of lines (`[[line]]`), each DN -> SIP user.
    #[serde(default)]
    line: Vec<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    line_commands: Option<RawLineCommands>,
    capabilities: Spanned<Vec<String>>,
    #[serde(default)]
    deviation: Vec<Spanned<crate::deviation::RawDeviation>>,
    /// Gone: a run never restarts a server other cases use. Read only to
    /// say so.
    #[serde(default)]
    reset: Option<Spanned<toml::Value>>,
    #[serde(default)]
    timers: Option<RawTimers>,
    #[serde(default)]
    credentials: Vec<Spanned<crate::credentials::RawCredentials>>,
    /// Only in a profile of the embedded server: read to say so.
    #[serde(default)]
    embedded: Option<Spanned<toml::Value>>,
    #[serde(default)]
    tls: Option<Spanned<RawTls>>,
    #[serde(default)]
    liveness: Option<Spanned<RawLiveness>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLiveness {
    pid_file: Option<String>,
    probe: Option<Spanned<String>>,
}

/// A profile that is another's under a new name (`extends`): another
/// version of the same server. Where this version behaves otherwise, and
/// only there, it says so: `[[without]]` takes cases out of the base's
/// deviations at one stage (each must take something, with its reason),
/// and its own `[[deviation]]`s are added. Nothing else may differ: a
/// server that differs in its lines, identities or commands has a profile
/// of its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExtends {
    name: String,
    extends: Spanned<String>,
    #[serde(default)]
    without: Vec<Spanned<RawWithout>>,
    #[serde(default)]
    deviation: Vec<Spanned<crate::deviation::RawDeviation>>,
}

/// `[[without]]`: the base's deviation at `stage` on exactly `channels`
/// no longer applies to `cases` on this version.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWithout {
    cases: Vec<String>,
    stage: String,
    channels: Vec<String>,
    reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<Spanned<String>>,
    insecure: Option<Spanned<bool>>,
    uri: Option<Spanned<String>>,
    server_name: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLineCommands {
    #[serde(default)]
    state: Vec<String>,
    #[serde(default)]
    clean: Vec<String>,
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
        let extends = toml::from_str::<toml::Table>(text)
            .map(|t| t.contains_key("extends"))
            .unwrap_or(false);
        if extends {
            return Profile::extended(path, text, topology);
        }
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
                    format!("transport {:?} is not udp, tcp or tls", t.get_ref()),
                )
            })?,
        };
        let mut transports = vec![transport];
        if let Some(list) = &raw.transports {
            for name in list.get_ref() {
                let t = Transport::parse(name).ok_or_else(|| {
                    at(
                        list.span().start,
                        format!("transports: {name:?} is not udp, tcp or tls"),
                    )
                })?;
                if !transports.contains(&t) {
                    transports.push(t);
                }
            }
        }
        let tls = match raw.tls {
            None => None,
            Some(t) => Some(read_tls(t, &raw.domain, &at, text)?),
        };
        if let (Transport::Tls, None, Some(t)) = (transport, &tls, &raw.transport) {
            return Err(at(
                t.span().start,
                format!("transport tls needs a [tls] table ({TLS_NEEDS})"),
            ));
        }
        if let Some(e) = &raw.embedded {
            return Err(at(
                e.span().start,
                "a profile of the embedded server has no address, identities or deviations; \
                 it is a --target of `scacheck run`"
                    .into(),
            ));
        }
        if let Some(reset) = &raw.reset {
            return Err(at(
                reset.span().start,
                "reset is not supported: a run must never restart a server other cases use; \
                 give the profile lines and [line_commands] clean instead"
                    .into(),
            ));
        }
        let lines = read_lines(&raw.identities, &raw.lines, &raw.line, topology, &at)?;
        let line_commands = raw
            .line_commands
            .map(|c| LineCommands {
                state: c.state,
                clean: c.clean,
            })
            .unwrap_or_default();
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
        let liveness = match raw.liveness {
            None => None,
            Some(l) => {
                let line = line_of(text, l.span().start);
                let l = l.into_inner();
                let probe = match &l.probe {
                    None => false,
                    Some(p) if p.get_ref() == "options" => true,
                    Some(p) => {
                        return Err(at(
                            p.span().start,
                            format!(
                                "[liveness] probe = {:?}: the one probe is \"options\"",
                                p.get_ref()
                            ),
                        ))
                    }
                };
                if l.pid_file.is_none() && !probe {
                    return Err(InputError::new(
                        path,
                        Some(line),
                        "[liveness] needs pid_file = \"PATH\" or probe = \"options\" (or both)",
                    ));
                }
                Some(Liveness {
                    pid_file: l.pid_file,
                    probe,
                    line,
                })
            }
        };
        let credentials = crate::credentials::read(path, text, raw.credentials, topology)?;
        Ok(Profile {
            liveness,
            credentials,
            name: raw.name,
            path: path.to_path_buf(),
            address,
            transport,
            transports,
            domain: raw.domain,
            lines,
            capabilities,
            deviations,
            line_commands,
            timers,
            tls,
        })
    }

    /// `name` and `extends = "FILE"` (relative to this profile's
    /// directory): FILE's profile under this name. Everything else is
    /// FILE's, read as FILE: its path, so that its errors, its deviations'
    /// lines and its relative paths are FILE's. FILE extends nothing.
    fn extended(path: &Path, text: &str, topology: &Topology) -> Result<Profile, InputError> {
        let raw: RawExtends =
            toml::from_str(text).map_err(|e| crate::input::toml_error(path, text, &e))?;
        let at =
            |m: String| InputError::new(path, Some(line_of(text, raw.extends.span().start)), m);
        let base = path
            .parent()
            .unwrap_or(Path::new(""))
            .join(raw.extends.get_ref());
        let base_text = std::fs::read_to_string(&base)
            .map_err(|e| at(format!("extends {}: cannot read: {e}", base.display())))?;
        if toml::from_str::<toml::Table>(&base_text).is_ok_and(|t| t.contains_key("extends")) {
            return Err(at(format!(
                "extends {}, which extends another: extend that one",
                base.display()
            )));
        }
        let mut profile = Profile::parse(&base, &base_text, topology)?;
        for w in raw.without {
            let line = line_of(text, w.span().start);
            let w = w.into_inner();
            let err = |m: String| InputError::new(path, Some(line), m);
            if w.reason.trim().is_empty() {
                return Err(err("a [[without]] needs its reason".into()));
            }
            let channels: Vec<crate::model::Channel> = w
                .channels
                .iter()
                .map(|c| crate::model::Channel::parse(c))
                .collect();
            for case in &w.cases {
                let mut found = profile
                    .deviations
                    .iter_mut()
                    .filter(|d| d.stage == w.stage && d.channels == channels && d.applies_to(case));
                let (Some(d), None) = (found.next(), found.next()) else {
                    return Err(err(format!(
                        "[[without]]: {} declares no single deviation of case {case:?} at stage {:?} on channels {} to take out",
                        base.display(),
                        w.stage,
                        w.channels.join(", ")
                    )));
                };
                d.cases.retain(|c| c != case);
            }
            profile.deviations.retain(|d| !d.cases.is_empty());
        }
        for d in raw.deviation {
            let line = line_of(text, d.span().start);
            let mut d = d.into_inner().check(path, text, line)?;
            d.file = Some(path.to_path_buf());
            profile.deviations.push(d);
        }
        Ok(Profile {
            name: raw.name,
            ..profile
        })
    }

    /// The file `[liveness] pid_file` names, expanded (an unset variable
    /// is an error at the table's line).
    pub fn pid_file(&self) -> Result<Option<PathBuf>, InputError> {
        let Some(l) = &self.liveness else {
            return Ok(None);
        };
        let Some(value) = &l.pid_file else {
            return Ok(None);
        };
        let dir = self.path.parent().unwrap_or(Path::new(""));
        crate::input::expand_path(value, dir)
            .map(Some)
            .map_err(|e| {
                InputError::new(&self.path, Some(l.line), format!("[liveness] pid_file {e}"))
            })
    }

    /// The phones' TLS settings for a run over TLS: the `[tls]` table's
    /// trust (its CA file read now: one that cannot be read or holds no
    /// certificate is an error at the table's line), URIs and server name,
    /// and a throwaway phone certificate. A profile without `[tls]` cannot
    /// run over TLS.
    pub fn tls_settings(&self) -> Result<TlsSettings, InputError> {
        let Some(tls) = &self.tls else {
            return Err(InputError::new(
                &self.path,
                None,
                format!("a run over TLS needs a [tls] table in the profile ({TLS_NEEDS})"),
            ));
        };
        let at = |e: crate::sip::tls::TlsError| {
            InputError::new(&self.path, Some(tls.line), format!("[tls] {e}"))
        };
        let trust = match &tls.trust {
            TlsTrust::CaFile(value) => {
                let dir = self.path.parent().unwrap_or(Path::new(""));
                let file = crate::input::expand_path(value, dir).map_err(|e| {
                    InputError::new(&self.path, Some(tls.line), format!("[tls] ca_file {e}"))
                })?;
                Trust::ca_file(&file).map_err(at)?
            }
            TlsTrust::Insecure => Trust::Insecure,
        };
        let phones = TestPki::generate(&self.domain).map_err(at)?;
        TlsSettings::new(trust, &tls.server_name, phones.phone_identity(), tls.uri).map_err(at)
    }

    /// Checks that every case, stage, channel and golden event the
    /// deviations name exists in the suite (see [`crate::deviation::validate`]).
    /// Every case ends with its leak check ([`crate::leak`]), a stage a
    /// deviation may name too.
    pub fn validate(
        &self,
        suite: &[(&crate::case::Case, &[crate::golden::GoldenStage])],
        topology: &Topology,
    ) -> Result<(), InputError> {
        let state = !self.line_commands.state.is_empty();
        let checked: Vec<_> = suite
            .iter()
            .map(|(c, g)| crate::leak::with_stage(c, topology, g, state))
            .collect();
        let named: Vec<(&crate::case::Case, &[crate::golden::GoldenStage])> =
            checked.iter().map(|(c, g)| (c, g.as_slice())).collect();
        crate::deviation::validate(&self.path, &self.deviations, &named)
    }
}

/// What a `[tls]` table must give.
const TLS_NEEDS: &str =
    "ca_file = \"PATH\", the CA that signed the server's certificate, or insecure = true";

/// Reads `[tls]`: exactly one of `ca_file` and `insecure = true`; `uri`
/// and `server_name` checked; every error at its line.
fn read_tls(
    raw: Spanned<RawTls>,
    domain: &str,
    at: &impl Fn(usize, String) -> InputError,
    text: &str,
) -> Result<TlsProfile, InputError> {
    let table = raw.span().start;
    let raw = raw.into_inner();
    let insecure = raw.insecure.as_ref().filter(|i| *i.get_ref());
    let trust = match (&raw.ca_file, insecure) {
        (Some(_), Some(i)) => {
            return Err(at(
                i.span().start,
                "[tls] gives both ca_file and insecure = true: one or the other".into(),
            ))
        }
        (None, None) => return Err(at(table, format!("[tls] needs {TLS_NEEDS}"))),
        (None, Some(_)) => TlsTrust::Insecure,
        (Some(f), None) => TlsTrust::CaFile(f.get_ref().clone()),
    };
    let uri = match &raw.uri {
        None => TlsUri::default(),
        Some(u) => TlsUri::parse(u.get_ref()).ok_or_else(|| {
            at(
                u.span().start,
                format!("[tls] uri {:?} is not transport-param or sips", u.get_ref()),
            )
        })?,
    };
    let server_name = match &raw.server_name {
        None => domain.to_string(),
        Some(n) => {
            crate::sip::tls::check_server_name(n.get_ref())
                .map_err(|e| at(n.span().start, format!("[tls] {e}")))?;
            n.get_ref().clone()
        }
    };
    Ok(TlsProfile {
        trust,
        uri,
        server_name,
        line: line_of(text, table),
    })
}

/// Reads the pool of lines: `[identities]` alone is one line; with
/// `lines = N` its users are templates over `{line}` (1..=N); `[[line]]`
/// lists each line's identities. Every line must name a user for every DN
/// and no two lines may share a user.
fn read_lines(
    identities: &Option<Spanned<BTreeMap<String, String>>>,
    count: &Option<Spanned<usize>>,
    listed: &[Spanned<BTreeMap<String, String>>],
    topology: &Topology,
    at: &impl Fn(usize, String) -> InputError,
) -> Result<Vec<Identities>, InputError> {
    let check = |map: &BTreeMap<String, String>, offset: usize, what: &str| {
        for dn in topology.dns() {
            if !map.contains_key(dn) {
                return Err(at(offset, format!("{what} has no SIP user for DN {dn}")));
            }
        }
        if let Some(dn) = map.keys().find(|dn| !topology.knows(dn)) {
            return Err(at(offset, format!("{what} names unknown DN {dn:?}")));
        }
        Ok(())
    };
    let lines: Vec<(Identities, usize)> = match (identities, count, listed) {
        (Some(_), _, [first, ..]) => {
            return Err(at(
                first.span().start,
                "give either [identities] or [[line]], not both".into(),
            ))
        }
        (None, Some(n), _) if listed.is_empty() => {
            return Err(at(
                n.span().start,
                "lines needs [identities] templates over {line}".into(),
            ))
        }
        (None, None, []) => {
            return Err(at(
                0,
                "the profile has no [identities] and no [[line]]".into(),
            ))
        }
        (Some(ids), n, []) => {
            let offset = ids.span().start;
            let templated = ids.get_ref().values().any(|u| u.contains(LINE_PLACEHOLDER));
            check(ids.get_ref(), offset, "identities")?;
            match n {
                None if templated => {
                    return Err(at(
                        offset,
                        format!("identities use {LINE_PLACEHOLDER} but the profile gives no `lines = N`"),
                    ))
                }
                None => vec![(
                    Identities {
                        number: None,
                        users: ids.get_ref().clone(),
                    },
                    offset,
                )],
                Some(n) if !(1..=MAX_LINES).contains(n.get_ref()) => {
                    return Err(at(
                        n.span().start,
                        format!("lines = {} is not between 1 and {MAX_LINES}", n.get_ref()),
                    ))
                }
                Some(n) if *n.get_ref() > 1 && !templated => {
                    return Err(at(
                        n.span().start,
                        format!(
                            "lines = {} but no identity uses {LINE_PLACEHOLDER}: every line would be the same parties",
                            n.get_ref()
                        ),
                    ))
                }
                Some(n) => (1..=*n.get_ref())
                    .map(|i| {
                        let users = ids
                            .get_ref()
                            .iter()
                            .map(|(dn, u)| (dn.clone(), u.replace(LINE_PLACEHOLDER, &i.to_string())))
                            .collect();
                        (
                            Identities {
                                number: Some(i),
                                users,
                            },
                            offset,
                        )
                    })
                    .collect(),
            }
        }
        (None, _, listed) => {
            if listed.len() > MAX_LINES {
                return Err(at(
                    listed[MAX_LINES].span().start,
                    format!("more than {MAX_LINES} lines"),
                ));
            }
            let mut out = Vec::new();
            for (i, l) in listed.iter().enumerate() {
                check(l.get_ref(), l.span().start, &format!("line {}", i + 1))?;
                out.push((
                    Identities {
                        number: Some(i + 1),
                        users: l.get_ref().clone(),
                    },
                    l.span().start,
                ));
            }
            out
        }
    };
    for (i, (a, _)) in lines.iter().enumerate() {
        for (b, offset) in &lines[i + 1..] {
            if let Some(user) = crate::line::shared_user(a, b) {
                return Err(at(
                    *offset,
                    format!(
                        "lines {} and {} share the SIP user {user:?}: a case on one would see the other's traffic",
                        a.number.unwrap_or(1),
                        b.number.unwrap_or(1)
                    ),
                ));
            }
        }
    }
    Ok(lines.into_iter().map(|(l, _)| l).collect())
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
        assert_eq!(p.lines.len(), 1);
        assert_eq!(p.lines[0].users["60970_2"], "60970");
        assert_eq!(p.deviations[0].line, 12);
        let covers = |case, stage, channel| {
            p.deviations[0].covers(case, stage, &crate::model::Channel::parse(channel))
        };
        assert!(covers("barge-in", "barged", "sca.60970"));
        assert!(!covers("barge-in", "barged", "sca.60970_2"));
        assert!(!covers("barge-in", "answered", "sca.60970"));
        assert!(!covers("hold-retrieve", "barged", "sca.60970"));
        assert_eq!(
            p.lines[0].dn_of_user(&Topology::reference())["60970"],
            "60970"
        );
    }

    #[test]
    fn lines_are_templates_over_the_line_number_or_a_list() {
        let pool = GOOD
            .replace("capabilities =", "lines = 3\ncapabilities =")
            .replace("\"60972\" = \"60972\"", "\"60972\" = \"60972-{line}\"")
            .replace(
                "\"60970\" = \"60970\"\n\"60970_2\" = \"60970\"",
                "\"60970\" = \"60970-{line}\"\n\"60970_2\" = \"60970-{line}\"",
            );
        let p = parse(&pool).unwrap();
        assert_eq!(p.lines.len(), 3);
        assert_eq!(p.lines[2].number, Some(3));
        assert_eq!(p.lines[2].users["60970_2"], "60970-3");
        assert_eq!(p.lines[0].users["60972"], "60972-1");
        let listed = GOOD.replace(
            "[identities]\n\"60972\" = \"60972\"\n\"60970\" = \"60970\"\n\"60970_2\" = \"60970\"\n",
            "[[line]]\n\"60972\" = \"a\"\n\"60970\" = \"b\"\n\"60970_2\" = \"b\"\n\
             [[line]]\n\"60972\" = \"c\"\n\"60970\" = \"d\"\n\"60970_2\" = \"d\"\n",
        );
        let p = parse(&listed).unwrap();
        assert_eq!(p.lines.len(), 2);
        assert_eq!(p.lines[1].users["60970"], "d");
        for (text, want) in [
            (pool.replace("lines = 3\n", ""), "no `lines = N`"),
            (
                pool.replace("lines = 3", "lines = 0"),
                "not between 1 and 1000",
            ),
            (
                GOOD.replace("capabilities =", "lines = 2\ncapabilities ="),
                "every line would be the same parties",
            ),
            (listed.replace("\"c\"", "\"a\""), "share the SIP user \"a\""),
            (
                GOOD.replace("capabilities =", "reset = [\"x\"]\ncapabilities ="),
                "never restart a server",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.message.contains(want), "{e}");
            assert!(e.line.is_some(), "{e}");
        }
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
    fn tls_is_read_from_its_table() {
        assert_eq!(parse(GOOD).unwrap().tls, None);
        std::env::set_var("SCACHECK_TEST_TLS_STATE", "/state");
        let p = parse(&format!(
            "{GOOD}\n[tls]\nca_file = \"${{SCACHECK_TEST_TLS_STATE}}/ca.pem\"\nuri = \"sips\"\n"
        ))
        .unwrap();
        let tls = p.tls.unwrap();
        assert_eq!(
            tls.trust,
            TlsTrust::CaFile("${SCACHECK_TEST_TLS_STATE}/ca.pem".into())
        );
        // Read only when a run over TLS starts: an unset variable is an
        // error then, naming it, and not when the profile is read.
        let later = parse(&format!(
            "{GOOD}\n[tls]\nca_file = \"${{SCACHECK_TEST_TLS_UNSET}}/ca.pem\"\n"
        ))
        .unwrap();
        let e = later.tls_settings().unwrap_err().to_string();
        assert!(
            e.contains("SCACHECK_TEST_TLS_UNSET") && e.contains("not set"),
            "{e}"
        );
        assert_eq!(
            (tls.uri, tls.server_name.as_str()),
            (TlsUri::Sips, "sca.test")
        );
        assert_eq!(tls.line, GOOD.lines().count() + 2);
        // Relative to the profile; the server name may be given.
        let p = Profile::parse(
            Path::new("profiles/k/target.toml"),
            &format!("{GOOD}[tls]\nca_file = \"ca.pem\"\nserver_name = \"127.0.0.1\"\n"),
            &Topology::reference(),
        )
        .unwrap();
        let tls = p.tls.clone().unwrap();
        assert_eq!(tls.trust, TlsTrust::CaFile("ca.pem".into()));
        let e = p.tls_settings().unwrap_err().to_string();
        assert!(e.contains("profiles/k/ca.pem"), "{e}");
        assert_eq!(
            (tls.uri, tls.server_name.as_str()),
            (TlsUri::TransportParam, "127.0.0.1")
        );
        let p = parse(&format!(
            "transport = \"tls\"\n{GOOD}[tls]\ninsecure = true\n"
        ))
        .unwrap();
        assert_eq!(p.transport, Transport::Tls);
        assert_eq!(p.tls.unwrap().trust, TlsTrust::Insecure);
    }

    #[test]
    fn bad_tls_tables_name_the_line() {
        let last = GOOD.lines().count();
        for (table, line, want) in [
            ("", 1, "[tls] needs ca_file = \"PATH\""),
            ("insecure = false", 1, "[tls] needs ca_file"),
            (
                "ca_file = \"ca.pem\"\ninsecure = true",
                3,
                "both ca_file and insecure = true",
            ),
            (
                "insecure = true\nuri = \"tls\"",
                3,
                "uri \"tls\" is not transport-param or sips",
            ),
            (
                "insecure = true\nverify = false",
                3,
                "unknown field `verify`",
            ),
            (
                "insecure = true\nserver_name = \"a b\"",
                3,
                "server name \"a b\"",
            ),
            ("insecure = \"yes\"", 2, "invalid type"),
        ] {
            let e = parse(&format!("{GOOD}[tls]\n{table}\n")).unwrap_err();
            assert_eq!(e.line, Some(last + line), "{table}: {e}");
            assert!(e.message.contains(want), "{table}: {e}");
        }
        let e = parse(&format!("transport = \"tls\"\n{GOOD}")).unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        assert!(
            e.message.contains("transport tls needs a [tls] table"),
            "{e}"
        );
        let e =
            parse(&GOOD.replace("name = \"k\"", "name = \"k\"\ntransport = \"sctp\"")).unwrap_err();
        assert!(e.message.contains("is not udp, tcp or tls"), "{e}");
    }

    #[test]
    fn tls_settings_read_the_ca_file_when_a_run_needs_them() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("target.toml");
        let text = format!("{GOOD}[tls]\nca_file = \"ca.pem\"\n");
        let p = Profile::parse(&profile, &text, &Topology::reference()).unwrap();
        // Parsed without the file; the run needs it.
        let e = p.tls_settings().unwrap_err();
        assert_eq!(e.line, Some(GOOD.lines().count() + 1), "{e}");
        assert!(
            e.message.contains("ca.pem") && e.message.contains("cannot read"),
            "{e}"
        );
        std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
        let e = p.tls_settings().unwrap_err().to_string();
        assert!(e.contains("no certificate in it"), "{e}");
        TestPki::generate("sca.test")
            .unwrap()
            .write_ca(&dir.path().join("ca.pem"))
            .unwrap();
        let settings = p.tls_settings().unwrap();
        assert!(!settings.insecure());
        let e = parse(GOOD).unwrap().tls_settings().unwrap_err();
        assert!(e.message.contains("needs a [tls] table"), "{e}");
    }

    #[test]
    fn a_profile_extends_another_under_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("target.toml");
        std::fs::write(&base, GOOD).unwrap();
        let child = dir.path().join("target-2.toml");
        let load = |text: &str| {
            std::fs::write(&child, text).unwrap();
            Profile::load(&child, &Topology::reference())
        };
        let p = load("# the same\nname = \"t2\"\nextends = \"target.toml\"\n").unwrap();
        assert_eq!((p.name.as_str(), p.path.as_path()), ("t2", base.as_path()));
        let want = Profile::load(&base, &Topology::reference()).unwrap();
        assert_eq!(
            Profile {
                name: want.name.clone(),
                ..p
            },
            want
        );
        // Nothing but a name: a server that differs has its own profile.
        let e = load("name = \"t2\"\nextends = \"target.toml\"\nlines = 2\n").unwrap_err();
        assert_eq!((e.path.clone(), e.line), (child.clone(), Some(3)), "{e}");
        assert!(e.message.contains("unknown field `lines`"), "{e}");
        let e = load("name = \"t2\"\nextends = \"nothing.toml\"\n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("cannot read"), "{e}");
        // The base's errors are the base's, at its line.
        std::fs::write(&base, GOOD.replace("\"hold\"", "\"telepathy\"")).unwrap();
        let e = load("name = \"t2\"\nextends = \"target.toml\"\n").unwrap_err();
        assert_eq!((e.path.clone(), e.line), (base.clone(), Some(5)), "{e}");
        // Where this version differs: a deviation taken out, one of its own.
        std::fs::write(&base, GOOD).unwrap();
        let p = load(
            "name = \"t2\"\nextends = \"target.toml\"\n[[without]]\ncases = [\"barge-in\"]\nstage = \"barged\"\nchannels = [\"sca.60970\", \"60970\"]\nreason = \"fixed\"\n[[deviation]]\ncases = [\"seize-busy\"]\nstage = \"refused\"\nchannels = [\"sca.60970_2\"]\nabsent = { event = \"SeizeRefused\" }\nreason = \"new\"\n",
        )
        .unwrap();
        assert_eq!(p.deviations.len(), 1, "{:?}", p.deviations);
        let d = &p.deviations[0];
        assert_eq!(
            (d.cases.as_slice(), d.line),
            (&["seize-busy".to_string()][..], 8)
        );
        assert_eq!(d.file.as_deref(), Some(child.as_path()));
        assert!(
            d.label()
                .starts_with("declared deviation (target-2.toml line 8)"),
            "{}",
            d.label()
        );
        // Taking out what the base does not declare is a mistake, said.
        let e = load("name = \"t2\"\nextends = \"target.toml\"\n[[without]]\ncases = [\"barge-in\"]\nstage = \"barged\"\nchannels = [\"sca.60970\"]\nreason = \"fixed\"\n")
            .unwrap_err();
        assert_eq!((e.path.clone(), e.line), (child.clone(), Some(3)), "{e}");
        assert!(e.message.contains("no single deviation of case \"barge-in\" at stage \"barged\" on channels sca.60970"), "{e}");
        // One level only.
        std::fs::write(&base, "name = \"t\"\nextends = \"target-2.toml\"\n").unwrap();
        let e = load("name = \"t2\"\nextends = \"target.toml\"\n").unwrap_err();
        assert!(e.message.contains("extends another"), "{e}");
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
