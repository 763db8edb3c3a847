//! Case files (`cases/*.toml`): the parties, and the stages of a flow, each
//! with its steps and the golden events it must cause.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::input::{line_of, InputError};
use crate::sip::sdp::HoldStyle;
use crate::topology::Topology;

/// What a party does in a step.
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// INVITE a DN or a shared line.
    Call { to: String },
    /// Answer the ringing call with 200 OK.
    Answer,
    /// Refuse the ringing call with a failure response.
    Refuse { code: u16 },
    /// BYE the established call.
    Hangup,
    /// CANCEL the unanswered outgoing call.
    Cancel,
    /// Seize an appearance of the actor's line (line-seize SUBSCRIBE).
    Seize { index: u32, expires: u32 },
    /// Release the actor's granted seizure (line-seize SUBSCRIBE, Expires
    /// 0).
    Release,
    /// Put the established call on hold (by default a re-INVITE offering
    /// a=sendonly; `style` names the others); a private hold says
    /// `held-private` in Call-Info.
    Hold { private: bool, style: HoldStyle },
    /// INVITE the actor's own line for a held appearance.
    Retrieve { index: Index },
    /// INVITE the actor's own line for an active appearance.
    Barge { index: Index },
    /// Refresh the call-info subscription.
    Refresh,
    /// End the call-info subscription (Expires 0).
    Unsubscribe,
    /// Subscribe to call-info afresh, in a new dialog with no unsubscribe
    /// first and the phone's own Contact: what a phone sends after a
    /// reboot. A server that takes it so frees the phone's appearances.
    Resubscribe,
    /// Answer the next NOTIFY of the call-info subscription with 481 and
    /// forget the subscription (a phone that lost it). Sends nothing
    /// itself, so it is armed at once: the step after it in the stage
    /// brings the NOTIFY (and a capture shows the 481 after that step).
    RefuseNotify,
    /// Send no ACK for the next 2xx to one of the phone's INVITEs (the
    /// first ACK lost on the way); the 2xx sent again is acknowledged.
    /// Sends nothing itself, so it is armed at once: the step after it
    /// brings the 2xx (and a capture shows the ACK after the 2xx came
    /// twice). Its stage is not over until that ACK went out.
    LoseAck,
    /// Close the phone's TCP or TLS connections and keep its
    /// subscriptions (a phone whose network went away): the server must
    /// reach it on a new connection to its Contact. Over UDP there is no
    /// connection, so a case with this step names its transports. Sends
    /// nothing itself, so it is armed at once: the step after it brings
    /// the NOTIFY (and a capture shows the phone's 200 to it, on a
    /// connection the server opened).
    CloseConnection,
    /// The phone's relay goes away and it subscribes to call-info afresh
    /// through a new one (a new dialog, a new Record-Route, no unsubscribe
    /// first), as a phone back from a reboot behind another edge proxy
    /// does: the server must send its NOTIFYs by the new route. Only a
    /// phone the case relays (`relayed = [...]`) can.
    Reroute,
}

impl Action {
    /// Sends nothing of its own when performed: its message (the 481, the
    /// late ACK, the 200 on a new connection) answers what the next step
    /// of its stage causes.
    pub fn armed(&self) -> bool {
        matches!(
            self,
            Action::RefuseNotify | Action::LoseAck | Action::CloseConnection
        )
    }
}

/// Which appearance a retrieve or barge-in names: a number, or the one the
/// line last told the phone is in a state (`index = "held"`), so that a
/// case recorded from a capture follows whichever appearance the server
/// picks instead of the number that server once picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Index {
    Number(u32),
    Told(crate::model::ApState),
}

impl Index {
    /// How a case file writes it.
    pub fn to_toml(self) -> String {
        match self {
            Index::Number(n) => n.to_string(),
            Index::Told(state) => format!("\"{}\"", state.as_str()),
        }
    }
}

/// A step's `index` as written: a number, or an appearance state.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawIndex {
    Number(u32),
    Told(String),
}

impl Action {
    /// Actions that only a shared-line phone can take.
    fn needs_line(&self) -> bool {
        matches!(
            self,
            Action::Seize { .. }
                | Action::Release
                | Action::Retrieve { .. }
                | Action::Barge { .. }
                | Action::Refresh
                | Action::Unsubscribe
                | Action::Resubscribe
                | Action::Reroute
                | Action::RefuseNotify
        )
    }
}

/// Every action's name and the arguments it takes.
const ACTIONS: &[(&str, &[&str])] = &[
    ("call", &["to"]),
    ("answer", &[]),
    ("refuse", &["code"]),
    ("hangup", &[]),
    ("cancel", &[]),
    ("seize", &["index", "expires"]),
    ("release", &[]),
    ("hold", &["private", "style"]),
    ("retrieve", &["index"]),
    ("barge", &["index"]),
    ("refresh", &[]),
    ("unsubscribe", &[]),
    ("resubscribe", &[]),
    ("refuse-notify", &[]),
    ("lose-ack", &[]),
    ("close-connection", &[]),
    ("reroute", &[]),
];

/// How long a seizure is asked for unless the step says: the BroadWorks
/// phones' 15 seconds.
pub const DEFAULT_SEIZE_EXPIRES: u32 = 15;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub actor: String,
    pub action: Action,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: String,
    /// The reference section this stage covers.
    pub covers: String,
    /// The golden directory (under fixtures/golden) of what it must cause.
    pub golden: String,
    pub steps: Vec<Step>,
    /// Its steps are fired at once, not one after the other (`together =
    /// true`): a race, each step by a different phone.
    pub together: bool,
    /// The steps of a race fired this far apart, one after the other
    /// (`stagger-ms`): two answers a few milliseconds apart, as phones
    /// answered in the field. None: all at once.
    pub stagger: Option<std::time::Duration>,
    pub line: usize,
}

/// The most a race's steps may be staggered (`stagger-ms`): beyond it they
/// are no race, and the server has answered the first before the next.
pub const MAX_STAGGER_MS: u64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub id: String,
    pub path: PathBuf,
    pub title: String,
    pub parties: Vec<String>,
    /// What the case needs of a server (see [`CAPABILITIES`]).
    pub requires: Vec<String>,
    /// The transports the case runs over (`transports = [...]`), in the
    /// order it prefers them; empty: any. A run over another one runs it
    /// over the first the target serves ([`Case::transport_in`]).
    pub transports: Vec<crate::sip::Transport>,
    /// The phones whose requests go through a Record-Routing relay of
    /// scacheck's own (`relayed = [...]`, [`crate::sip::proxy`]), from
    /// their REGISTER on; over UDP only.
    pub relayed: Vec<String>,
    pub stages: Vec<Stage>,
    /// What the report says of the case whatever its verdict (`notes =
    /// [...]`): a case recorded from a capture lists what could not be
    /// recovered from it.
    pub notes: Vec<String>,
}

/// The most trials a case may ask for (`trials = N`): each is a full
/// pass through its stages, and a run waits for each.
pub const MAX_TRIALS: usize = 100;

/// `stages` run `n` times over (`trials = n`): trial k's stages named
/// `<name>-k`, from 1, each trial after the one before, so that a race is
/// fought again and again in one case and every trial judged on its own
/// stages.
fn repeated(stages: &[Stage], n: usize) -> Vec<Stage> {
    (1..=n)
        .flat_map(|k| {
            stages.iter().map(move |s| Stage {
                name: format!("{}-{k}", s.name),
                ..s.clone()
            })
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    title: String,
    parties: Spanned<Vec<String>>,
    #[serde(default)]
    requires: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    transports: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    relayed: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    notes: Vec<String>,
    #[serde(default)]
    trials: Option<Spanned<i64>>,
    stage: Vec<Spanned<RawStage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    name: String,
    covers: String,
    golden: String,
    #[serde(default)]
    steps: Vec<Spanned<RawStep>>,
    #[serde(default)]
    together: bool,
    #[serde(default, rename = "stagger-ms")]
    stagger_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    actor: String,
    action: String,
    to: Option<String>,
    code: Option<u16>,
    index: Option<RawIndex>,
    expires: Option<u32>,
    private: Option<bool>,
    style: Option<String>,
}

impl Case {
    pub fn load(path: &Path, topology: &Topology) -> Result<Case, InputError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| InputError::new(path, None, format!("cannot read: {e}")))?;
        Case::parse(path, &text, topology)
    }

    pub fn parse(path: &Path, text: &str, topology: &Topology) -> Result<Case, InputError> {
        let err = |at: usize, msg: String| InputError::new(path, Some(line_of(text, at)), msg);
        let raw: RawCase =
            toml::from_str(text).map_err(|e| crate::input::toml_error(path, text, &e))?;
        let id = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(InputError::new(
                path,
                None,
                "a case file name must be letters, digits, '-' or '_' (it is the case id)",
            ));
        }
        let parties_at = raw.parties.span().start;
        let parties = raw.parties.into_inner();
        for p in &parties {
            if !topology.knows(p) {
                return Err(err(
                    parties_at,
                    format!("unknown party {p:?} (known: {})", topology.dns().join(", ")),
                ));
            }
        }
        let requires = match raw.requires {
            None => Vec::new(),
            Some(r) => {
                let at = r.span().start;
                let r = r.into_inner();
                if let Some(c) = r.iter().find(|c| !CAPABILITIES.contains(&c.as_str())) {
                    return Err(err(
                        at,
                        format!(
                            "unknown capability {c:?} (known: {})",
                            CAPABILITIES.join(", ")
                        ),
                    ));
                }
                r
            }
        };
        let mut transports = Vec::new();
        if let Some(list) = raw.transports {
            let at = list.span().start;
            for name in list.into_inner() {
                let t = crate::sip::Transport::parse(&name).ok_or_else(|| {
                    err(at, format!("transports: {name:?} is not udp, tcp or tls"))
                })?;
                if !transports.contains(&t) {
                    transports.push(t);
                }
            }
            if transports.is_empty() {
                return Err(err(
                    at,
                    "transports = []: name one or more, or leave it out for any".into(),
                ));
            }
        }
        let mut relayed: Vec<String> = Vec::new();
        if let Some(list) = raw.relayed {
            let at = list.span().start;
            for dn in list.into_inner() {
                if !parties.contains(&dn) {
                    return Err(err(
                        at,
                        format!(
                            "relayed: {dn:?} is not one of the case's parties ({})",
                            parties.join(", ")
                        ),
                    ));
                }
                if !relayed.contains(&dn) {
                    relayed.push(dn);
                }
            }
            if !relayed.is_empty() && transports != [crate::sip::Transport::Udp] {
                return Err(err(
                    at,
                    "relayed: scacheck's relay speaks UDP only: the case needs transports = [\"udp\"]"
                        .into(),
                ));
            }
        }
        if raw.stage.is_empty() {
            return Err(InputError::new(
                path,
                None,
                "a case needs at least one [[stage]]",
            ));
        }
        let mut stages: Vec<Stage> = Vec::new();
        for s in raw.stage {
            let at = s.span().start;
            let s = s.into_inner();
            if stages.iter().any(|o| o.name == s.name) {
                return Err(err(at, format!("stage name {:?} is used twice", s.name)));
            }
            if s.golden.is_empty() || s.golden.contains(['/', '\\']) || s.golden.starts_with('.') {
                return Err(err(
                    at,
                    format!(
                        "golden {:?} must be a directory name under fixtures/golden",
                        s.golden
                    ),
                ));
            }
            let mut steps = Vec::new();
            for step in s.steps {
                let at = step.span().start;
                let step = step.into_inner();
                let step_err = |m: String| err(at, m);
                if !parties.contains(&step.actor) {
                    return Err(step_err(format!(
                        "actor {:?} is not one of the case's parties ({})",
                        step.actor,
                        parties.join(", ")
                    )));
                }
                let known: Vec<&str> = ACTIONS.iter().map(|(name, _)| *name).collect();
                let Some((_, takes)) = ACTIONS.iter().find(|(name, _)| *name == step.action) else {
                    return Err(step_err(format!(
                        "unknown action {:?} (known: {})",
                        step.action,
                        known.join(", ")
                    )));
                };
                let given = [
                    ("to", step.to.is_some()),
                    ("code", step.code.is_some()),
                    ("index", step.index.is_some()),
                    ("expires", step.expires.is_some()),
                    ("private", step.private.is_some()),
                    ("style", step.style.is_some()),
                ];
                if let Some((arg, _)) = given
                    .iter()
                    .find(|(arg, present)| *present && !takes.contains(arg))
                {
                    return Err(step_err(format!(
                        "action {:?} takes no {arg:?}",
                        step.action
                    )));
                }
                let needs = |arg: &str| step_err(format!("action {:?} needs {arg:?}", step.action));
                let index = || match &step.index {
                    Some(RawIndex::Number(i)) if *i > 0 => Ok(*i),
                    _ => Err(needs("index (1 or more)")),
                };
                // A retrieve or barge-in may name the appearance by what
                // the line told the phone of it.
                let joined = || {
                    match &step.index {
                    Some(RawIndex::Told(state)) => crate::model::ApState::parse(state)
                        .filter(|s| *s != crate::model::ApState::Idle)
                        .map(Index::Told)
                        .ok_or_else(|| {
                            step_err(format!(
                                "index {state:?} is neither a number nor an appearance state other than idle"
                            ))
                        }),
                    _ => index().map(Index::Number),
                }
                };
                let action = match step.action.as_str() {
                    "call" => {
                        let to = step.to.clone().ok_or_else(|| needs("to"))?;
                        if !topology.knows(&to) && topology.line(&to).is_none() {
                            return Err(step_err(format!("unknown party {to:?} to call")));
                        }
                        Action::Call { to }
                    }
                    "refuse" => {
                        let code = step.code.ok_or_else(|| needs("code"))?;
                        if !(400..700).contains(&code) {
                            return Err(step_err(format!("refuse code {code} is not 400-699")));
                        }
                        Action::Refuse { code }
                    }
                    "answer" => Action::Answer,
                    "hangup" => Action::Hangup,
                    "cancel" => Action::Cancel,
                    "seize" => Action::Seize {
                        index: index()?,
                        expires: step.expires.unwrap_or(DEFAULT_SEIZE_EXPIRES),
                    },
                    "release" => Action::Release,
                    "hold" => Action::Hold {
                        private: step.private.unwrap_or(false),
                        style: match step.style.as_deref() {
                            None => HoldStyle::default(),
                            Some(name) => HoldStyle::parse(name).ok_or_else(|| {
                                let known: Vec<&str> =
                                    HoldStyle::ALL.iter().map(|s| s.name()).collect();
                                step_err(format!(
                                    "unknown hold style {name:?} (known: {})",
                                    known.join(", ")
                                ))
                            })?,
                        },
                    },
                    "retrieve" => Action::Retrieve { index: joined()? },
                    "barge" => Action::Barge { index: joined()? },
                    "refresh" => Action::Refresh,
                    "resubscribe" => Action::Resubscribe,
                    "refuse-notify" => Action::RefuseNotify,
                    "lose-ack" => Action::LoseAck,
                    "close-connection" => Action::CloseConnection,
                    "reroute" => {
                        if !relayed.contains(&step.actor) {
                            return Err(step_err(format!(
                                "action \"reroute\" moves a relayed phone to a new relay; {} is not in relayed = [...]",
                                step.actor
                            )));
                        }
                        Action::Reroute
                    }
                    _ => Action::Unsubscribe,
                };
                if action.needs_line() && topology.line_of(&step.actor).is_none() {
                    return Err(step_err(format!(
                        "action {:?} is for a shared-line phone; {} is not one",
                        step.action, step.actor
                    )));
                }
                steps.push(Step {
                    actor: step.actor,
                    action,
                    line: line_of(text, at),
                });
            }
            if s.together {
                let mut actors: Vec<&str> = steps.iter().map(|s| s.actor.as_str()).collect();
                actors.sort();
                actors.dedup();
                if steps.len() < 2 || actors.len() < steps.len() {
                    return Err(err(
                        at,
                        format!(
                            "stage {:?} is `together` (a race): it needs two or more steps, each by a different phone",
                            s.name
                        ),
                    ));
                }
            }
            let stagger = match s.stagger_ms {
                None => None,
                Some(ms) if s.together && ms <= MAX_STAGGER_MS => {
                    Some(std::time::Duration::from_millis(ms))
                }
                Some(ms) => {
                    return Err(err(
                        at,
                        format!(
                            "stage {:?}: stagger-ms = {ms} staggers the steps of a `together` stage (a race), by at most {MAX_STAGGER_MS} ms",
                            s.name
                        ),
                    ))
                }
            };
            stages.push(Stage {
                name: s.name,
                covers: s.covers,
                golden: s.golden,
                steps,
                together: s.together,
                stagger,
                line: line_of(text, at),
            });
        }
        let stages = match raw.trials {
            None => stages,
            Some(t) => {
                let at = t.span().start;
                let n = t.into_inner();
                if !(2..=MAX_TRIALS as i64).contains(&n) {
                    return Err(err(
                        at,
                        format!("trials = {n}: a case repeats its stages 2 to {MAX_TRIALS} times (leave it out for once)"),
                    ));
                }
                repeated(&stages, n as usize)
            }
        };
        Ok(Case {
            id,
            path: path.to_path_buf(),
            title: raw.title,
            parties,
            requires,
            transports,
            relayed,
            stages,
            notes: raw.notes,
        })
    }

    /// The transport the case runs over in a run over `run`, at a target
    /// that serves `served`: the run's when the case may use it, else
    /// the first of the case's the target serves; Err says why none.
    pub fn transport_in(
        &self,
        run: crate::sip::Transport,
        served: &[crate::sip::Transport],
    ) -> Result<crate::sip::Transport, String> {
        if self.transports.is_empty() || self.transports.contains(&run) {
            return Ok(run);
        }
        let names = |ts: &[crate::sip::Transport]| {
            ts.iter()
                .map(|t| t.via_token())
                .collect::<Vec<_>>()
                .join(" or ")
        };
        self.transports
            .iter()
            .copied()
            .find(|t| served.contains(t))
            .ok_or_else(|| {
                format!(
                    "the case runs over {} only, and the target serves {} at its address",
                    names(&self.transports),
                    names(served)
                )
            })
    }

    /// Every case file in `dir` (sorted by name), or the first error.
    pub fn load_dir(dir: &Path, topology: &Topology) -> Result<Vec<Case>, InputError> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            InputError::new(dir, None, format!("cannot read the cases directory: {e}"))
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| Case::load(p, topology)).collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_case_over_connections_only_runs_over_one_the_target_serves() {
        use crate::sip::Transport::{Tcp, Tls, Udp};
        let case = |transports: &str| {
            let text = format!(
                "title = \"t\"\nparties = [\"60970\"]\n{transports}\n[[stage]]\nname = \"s\"\ncovers = \"c\"\ngolden = \"g\"\nsteps = [{{ actor = \"60970\", action = \"close-connection\" }}]\n"
            );
            Case::parse(Path::new("c.toml"), &text, &Topology::reference())
        };
        let any = case("").unwrap();
        assert_eq!(any.transport_in(Udp, &[Udp]), Ok(Udp));
        let streams = case("transports = [\"tcp\", \"tls\"]").unwrap();
        assert_eq!(streams.transport_in(Tls, &[Tls]), Ok(Tls));
        assert_eq!(streams.transport_in(Udp, &[Udp, Tcp]), Ok(Tcp));
        let none = streams.transport_in(Udp, &[Udp]).unwrap_err();
        assert!(
            none.contains("TCP or TLS only") && none.contains("serves UDP"),
            "{none}"
        );
        for bad in ["transports = [\"sctp\"]", "transports = []"] {
            let e = case(bad).unwrap_err().to_string();
            assert!(e.contains("c.toml:3"), "{bad}: {e}");
        }
    }

    #[test]
    fn only_a_relayed_phone_reroutes_and_only_over_udp() {
        let case = |head: &str, actor: &str| {
            let text = format!(
                "title = \"t\"\nparties = [\"60970\", \"60970_2\"]\n{head}\n[[stage]]\nname = \"s\"\ncovers = \"c\"\ngolden = \"g\"\nsteps = [{{ actor = \"{actor}\", action = \"reroute\" }}]\n"
            );
            Case::parse(Path::new("c.toml"), &text, &Topology::reference())
        };
        let ok = case("relayed = [\"60970\"]\ntransports = [\"udp\"]", "60970").unwrap();
        assert_eq!(ok.relayed, ["60970"]);
        assert_eq!(ok.stages[0].steps[0].action, Action::Reroute);
        let e = |head: &str, actor: &str| case(head, actor).unwrap_err().to_string();
        let unrelayed = e("relayed = [\"60970\"]\ntransports = [\"udp\"]", "60970_2");
        assert!(
            unrelayed.contains("c.toml:9") && unrelayed.contains("60970_2 is not in relayed"),
            "{unrelayed}"
        );
        let streams = e("relayed = [\"60970\"]\ntransports = [\"tcp\"]", "60970");
        assert!(
            streams.contains("c.toml:3") && streams.contains("UDP only"),
            "{streams}"
        );
        let any = e("relayed = [\"60970\"]", "60970");
        assert!(any.contains("UDP only"), "{any}");
        let stranger = e("relayed = [\"60972\"]\ntransports = [\"udp\"]", "60970");
        assert!(
            stranger.contains("not one of the case's parties"),
            "{stranger}"
        );
    }

    #[test]
    fn a_join_names_its_appearance_by_number_or_by_what_the_line_told() {
        let case = |index: &str| {
            let text = format!(
                "title = \"t\"\nparties = [\"60970\", \"60970_2\"]\n[[stage]]\nname = \"s\"\ncovers = \"c\"\ngolden = \"g\"\nsteps = [{{ actor = \"60970_2\", action = \"retrieve\", index = {index} }}]\n"
            );
            Case::parse(Path::new("c.toml"), &text, &Topology::reference())
        };
        let action = |c: Case| c.stages[0].steps[0].action.clone();
        assert_eq!(
            action(case("2").unwrap()),
            Action::Retrieve {
                index: Index::Number(2)
            }
        );
        assert_eq!(
            action(case("\"held-private\"").unwrap()),
            Action::Retrieve {
                index: Index::Told(crate::model::ApState::HeldPrivate)
            }
        );
        for bad in ["\"idle\"", "\"parked\"", "0"] {
            let e = case(bad).unwrap_err().to_string();
            assert!(e.contains("c.toml:7"), "{bad}: {e}");
        }
    }

    use super::*;

    #[test]
    fn trials_repeat_the_stages_in_order_each_named_by_its_trial() {
        let case = |trials: &str| {
            let text = format!(
                "title = \"t\"\nparties = [\"60970\", \"60970_2\"]\n{trials}\n[[stage]]\nname = \"race\"\ncovers = \"c\"\ngolden = \"g\"\ntogether = true\nsteps = [{{ actor = \"60970\", action = \"seize\", index = 1 }}, {{ actor = \"60970_2\", action = \"seize\", index = 1 }}]\n[[stage]]\nname = \"released\"\ncovers = \"c\"\ngolden = \"h\"\nsteps = [{{ actor = \"60970\", action = \"release\" }}]\n"
            );
            Case::parse(Path::new("c.toml"), &text, &Topology::reference())
        };
        let names = |c: &Case| c.stages.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&case("").unwrap()), ["race", "released"]);
        let three = case("trials = 3").unwrap();
        assert_eq!(
            names(&three),
            [
                "race-1",
                "released-1",
                "race-2",
                "released-2",
                "race-3",
                "released-3"
            ]
        );
        assert!(three
            .stages
            .iter()
            .step_by(2)
            .all(|s| s.together && s.golden == "g"));
        assert!(three
            .stages
            .iter()
            .skip(1)
            .step_by(2)
            .all(|s| !s.together && s.golden == "h"));
        assert!(three.stages.iter().all(|s| s.stagger.is_none()));
        let staggered = |ms: &str| {
            let text = format!(
                "title = \"t\"\nparties = [\"60970\", \"60970_2\"]\n[[stage]]\nname = \"race\"\ncovers = \"c\"\ngolden = \"g\"\ntogether = {}\nstagger-ms = {ms}\nsteps = [{{ actor = \"60970\", action = \"seize\", index = 1 }}, {{ actor = \"60970_2\", action = \"seize\", index = 1 }}]\n",
                ms != "5"
            );
            Case::parse(Path::new("c.toml"), &text, &Topology::reference())
        };
        assert_eq!(
            staggered("30").unwrap().stages[0].stagger,
            Some(std::time::Duration::from_millis(30))
        );
        for bad in ["1001", "5"] {
            let e = staggered(bad).unwrap_err().to_string();
            assert!(
                e.contains("c.toml:3") && e.contains("stagger-ms"),
                "{bad}: {e}"
            );
        }
        for bad in ["trials = 1", "trials = 0", "trials = -2", "trials = 101"] {
            let e = case(bad).unwrap_err().to_string();
            assert!(
                e.contains("c.toml:3") && e.contains("2 to 100"),
                "{bad}: {e}"
            );
        }
    }

    const GOOD: &str = r#"
title = "t"
parties = ["60972", "60970"]

[[stage]]
name = "alerting"
covers = "1.1"
golden = "inbound-alerting"
steps = [
  { actor = "60972", action = "call", to = "60970" },
  { actor = "60970", action = "answer" },
]
"#;

    fn parse(text: &str) -> Result<Case, InputError> {
        Case::parse(Path::new("cases/x.toml"), text, &Topology::reference())
    }

    #[test]
    fn reads_a_case() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.id, "x");
        assert_eq!(
            c.stages[0].steps[0].action,
            Action::Call { to: "60970".into() }
        );
        assert_eq!((c.stages[0].line, c.stages[0].steps[1].line), (5, 11));
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let cases = [
            (
                GOOD.replace("\"answer\"", "\"pickup\""),
                11,
                "unknown action",
            ),
            (
                GOOD.replace("actor = \"60970\"", "actor = \"60970_2\""),
                11,
                "not one of the case's parties",
            ),
            (
                GOOD.replace("[\"60972\", \"60970\"]", "[\"60972\", \"6097\"]"),
                3,
                "unknown party",
            ),
            (
                GOOD.replace("to = \"60970\"", "to = \"1\""),
                10,
                "unknown party",
            ),
            (GOOD.replace("covers", "cover"), 7, "unknown field"),
            (GOOD.replace("title = \"t\"", "title = t"), 2, ""),
        ];
        for (text, line, want) in cases {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, Some(line), "{e}");
            assert!(
                e.to_string().starts_with(&format!("cases/x.toml:{line}: ")),
                "{e}"
            );
            assert!(e.message.contains(want), "{e}");
        }
    }
}
