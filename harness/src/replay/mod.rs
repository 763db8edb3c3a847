//! A capture made into a case (`scacheck pcap case`): the phones and line
//! found in it ([`crate::check::phones`]), what each phone did
//! ([`actions`]), a case file with one stage per action, and goldens
//! recorded from the capture itself: per stage, the SCA wire layer the
//! captured server told each phone. The T-Library channels are written
//! unasserted, with why: a server's own events include ones SIP cannot show,
//! so goldens read from SIP would fail a server that publishes them (a
//! false fail); `--bless` against such a server records them.
//! The case then runs like any other, and `--bless` and `golden review`
//! work on it as usual. Nothing existing is overwritten.

use crate::actions;

use std::path::{Path, PathBuf};

use crate::case::{Action, Case};
use crate::check::Capture;
use crate::input::InputError;
use crate::line::Identities;
use crate::sip::sdp::HoldStyle;
use crate::suite::Prepared;
use crate::topology::Topology;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("the capture shows no phones: {0}")]
    NoPhones(String),
    #[error("the capture shows no action of a phone that a case step can say{}", unrecovered(.0))]
    NoAction(Vec<String>),
    #[error("{0} exists already: a recorded case never overwrites")]
    Exists(PathBuf),
    #[error("case id {0:?}: use letters, digits and '-' only")]
    BadId(String),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Suite(#[from] crate::suite::SuiteError),
    #[error("reading {path}: {why}")]
    Read { path: PathBuf, why: String },
    #[error("writing {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn unrecovered(what: &[String]) -> String {
    if what.is_empty() {
        String::new()
    } else {
        format!(" (not recovered: {})", what.join("; "))
    }
}

/// The error of an I/O failure on `path`, for `map_err`.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError {
    let path = path.to_path_buf();
    move |source| ReplayError::Io { path, source }
}

/// What [`record_case`] wrote.
#[derive(Debug)]
pub struct Recorded {
    pub case: PathBuf,
    pub golden: Vec<PathBuf>,
    /// The actions, in order, as the case says them.
    pub steps: Vec<String>,
    /// What the phones did that no step says.
    pub unrecovered: Vec<String>,
}

impl std::fmt::Display for Recorded {
    /// What `scacheck pcap case` prints: what it wrote, the steps, and
    /// what it could not recover.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "case: {} ({} steps)",
            self.case.display(),
            self.steps.len()
        )?;
        for s in &self.steps {
            writeln!(f, "  {s}")?;
        }
        writeln!(f, "goldens: {} stage directories", self.golden.len())?;
        for n in &self.unrecovered {
            writeln!(f, "not recovered: {n}")?;
        }
        Ok(())
    }
}

/// A step as a case file writes it.
fn step_toml(actor: &str, a: &Action) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let args = match a {
        Action::Call { to } => format!(", to = {}", q(to)),
        Action::Refuse { code } => format!(", code = {code}"),
        Action::Seize { index, expires } => format!(", index = {index}, expires = {expires}"),
        Action::Hold { private, style } => {
            let private = if *private { ", private = true" } else { "" };
            match style {
                HoldStyle::SendOnly => private.to_string(),
                _ => format!("{private}, style = {}", q(style.name())),
            }
        }
        Action::Retrieve { index } | Action::Barge { index } => {
            format!(", index = {}", index.to_toml())
        }
        _ => String::new(),
    };
    format!(
        "{{ actor = {}, action = {}{args} }}",
        q(actor),
        q(actions::name(a))
    )
}

/// The stages of a recorded case: an action each, or a group of
/// concurrent ones (a race, `together`), each named for its action
/// (`seize-race` for a group).
fn stages(actions: &[actions::Recovered]) -> Vec<(String, Vec<&actions::Recovered>)> {
    let mut out: Vec<(String, Vec<&actions::Recovered>)> = Vec::new();
    for a in actions {
        match out.last_mut() {
            Some((_, group)) if a.concurrent => group.push(a),
            _ => out.push((String::new(), vec![a])),
        }
    }
    for (name, group) in &mut out {
        let first = actions::name(&group[0].action);
        *name = match group.len() {
            1 => first.to_string(),
            _ if group.iter().all(|a| actions::name(&a.action) == first) => format!("{first}-race"),
            _ => "race".to_string(),
        };
    }
    out
}

/// What the case needs of a server for these actions.
fn requires(actions: &[actions::Recovered]) -> Vec<&'static str> {
    let mut out = vec!["call-info"];
    for a in actions {
        let need = match a.action {
            Action::Seize { .. } | Action::Release => "line-seize",
            Action::Hold { private: true, .. } => "private-hold",
            Action::Hold { private: false, .. } => "hold",
            Action::Retrieve { .. } => "retrieve",
            Action::Barge { .. } => "barge-in",
            _ => continue,
        };
        if !out.contains(&need) {
            out.push(need);
        }
    }
    out
}

/// What [`record_case`] wrote: a case per flow, and the flows it could
/// make none of, with why.
#[derive(Debug)]
pub struct Recordings {
    pub cases: Vec<Recorded>,
    pub skipped: Vec<String>,
}

impl std::fmt::Display for Recordings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for r in &self.cases {
            write!(f, "{r}")?;
        }
        for s in &self.skipped {
            writeln!(f, "no case made: {s}")?;
        }
        Ok(())
    }
}

/// The id of a flow's case: `ID`, or `ID-line-N` when the capture holds a
/// flow per line (`ID-line-N-K` for a line's K-th flow).
fn flow_id(id: &str, flow: &crate::check::Split) -> String {
    match flow.key() {
        Some(key) => format!("{id}-{}", key.replace('.', "-")),
        None => id.to_string(),
    }
}

fn read_capture(file: &Path) -> Result<Capture, ReplayError> {
    Capture::read(file).map_err(|e| ReplayError::Read {
        path: file.to_path_buf(),
        why: e.to_string(),
    })
}

/// `scacheck pcap case`: [`record_case`] of the capture in `file`, its
/// phones found by the lines of `target` (`embedded` or a profile).
pub fn record_file(
    file: &Path,
    id: &str,
    dirs: &crate::suite::Dirs,
    target: &str,
    topology: &Topology,
) -> Result<Recordings, ReplayError> {
    let (_, lines, _) = dirs.judged_as(target, topology)?;
    let capture = read_capture(file)?;
    let name = file.display().to_string();
    record_case(&capture, &name, id, dirs, &lines, topology)
}

/// Writes `cases_dir/ID.toml` and its goldens under `golden_root` from
/// `capture` (named `source` in what is written), its phones found by the
/// target's `lines` or by its own signalling; a capture of several lines
/// of the pool gives a case per line, `ID-line-N` (a line whose flow shows
/// no phone's action is skipped, with why).
pub fn record_case(
    capture: &Capture,
    source: &str,
    id: &str,
    dirs: &crate::suite::Dirs,
    lines: &[Identities],
    topology: &Topology,
) -> Result<Recordings, ReplayError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(ReplayError::BadId(id.to_string()));
    }
    let flows = capture.flows(lines);
    // Nothing is written when any flow's case exists already.
    for flow in &flows {
        let path = dirs.cases.join(format!("{}.toml", flow_id(id, flow)));
        if path.exists() {
            return Err(ReplayError::Exists(path));
        }
    }
    let several = flows.len() > 1;
    let mut out = Recordings {
        cases: Vec::new(),
        skipped: Vec::new(),
    };
    for flow in flows {
        let named = flow_id(id, &flow);
        let pool = flow.line.map_or_else(|| lines.to_vec(), |l| vec![l]);
        match record_one(&flow.capture, source, &named, dirs, &pool, topology) {
            Ok(r) => out.cases.push(r),
            Err(e @ (ReplayError::NoPhones(_) | ReplayError::NoAction(_))) if several => {
                out.skipped.push(format!("{named}: {e}"));
            }
            Err(e) => return Err(e),
        }
    }
    if out.cases.is_empty() {
        return Err(ReplayError::NoAction(out.skipped));
    }
    Ok(out)
}

fn record_one(
    capture: &Capture,
    source: &str,
    id: &str,
    dirs: &crate::suite::Dirs,
    lines: &[Identities],
    topology: &Topology,
) -> Result<Recorded, ReplayError> {
    let (cases_dir, golden_root) = (dirs.cases.as_path(), dirs.golden.as_path());
    let (line, who) = crate::check::phones(&capture.packets, lines, topology);
    if who.is_empty() {
        return Err(ReplayError::NoPhones(crate::check::phones_in_words(&who)));
    }
    let records = crate::check::records(&capture.packets, &who);
    let recovery = actions::recover(&records, topology, &line);
    if recovery.actions.is_empty() {
        return Err(ReplayError::NoAction(recovery.unrecovered));
    }
    let parties: Vec<String> = topology
        .dns()
        .into_iter()
        .filter(|dn| who.values().any(|w| w == dn))
        .map(str::to_string)
        .collect();
    let case_path = cases_dir.join(format!("{id}.toml"));
    if case_path.exists() {
        return Err(ReplayError::Exists(case_path));
    }
    let stages = stages(&recovery.actions);
    let golden_of = |n: usize, name: &str| format!("{id}-{n}-{name}");
    for (n, (name, _)) in stages.iter().enumerate() {
        let dir = golden_root.join(golden_of(n + 1, name));
        if dir.exists() {
            return Err(ReplayError::Exists(dir));
        }
    }
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let list = |v: &[&str]| v.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ");
    let mut text = format!(
        "# Recorded from {source} by `scacheck pcap case`: one stage per action a\n\
         # phone took in the capture, its goldens what the captured server did.\n\
         title = {}\nparties = [{}]\nrequires = [{}]\n",
        q(&format!("Recorded from {source}")),
        list(&parties.iter().map(String::as_str).collect::<Vec<_>>()),
        list(&requires(&recovery.actions)),
    );
    // A phone that moved to another edge proxy is put behind scacheck's
    // relay, which speaks UDP.
    let mut rerouted: Vec<&str> = recovery
        .actions
        .iter()
        .filter(|a| a.action == crate::case::Action::Reroute)
        .map(|a| a.actor.as_str())
        .collect();
    rerouted.sort();
    rerouted.dedup();
    if !rerouted.is_empty() {
        text.push_str(&format!(
            "transports = [\"udp\"]\nrelayed = [{}]\n",
            list(&rerouted)
        ));
    }
    if !recovery.unrecovered.is_empty() {
        // In the report of every run of the case, not only in this file.
        text.push_str("notes = [\n");
        for n in &recovery.unrecovered {
            text.push_str(&format!(
                "    {},\n",
                q(&format!("not recovered from the capture: {n}"))
            ));
        }
        text.push_str("]\n");
    }
    let mut steps = Vec::new();
    for (n, (name, group)) in stages.iter().enumerate() {
        let first = group[0];
        let after = first
            .cause
            .as_deref()
            .map(|c| format!(", after {c}"))
            .unwrap_or_default();
        let together = if group.len() > 1 {
            // As far apart as the capture shows them: two answers a few
            // milliseconds apart are that race, not a simultaneous one.
            let gap = records[group[group.len() - 1].at]
                .at
                .duration_since(records[first.at].at)
                .unwrap_or_default()
                .as_millis()
                .min(u128::from(crate::case::MAX_STAGGER_MS));
            let stagger = if gap > 0 {
                format!("stagger-ms = {gap}\n")
            } else {
                String::new()
            };
            format!("# The capture shows these sent before the server could answer the first.\ntogether = true\n{stagger}")
        } else {
            String::new()
        };
        let written: Vec<String> = group
            .iter()
            .map(|a| step_toml(&a.actor, &a.action))
            .collect();
        text.push_str(&format!(
            "\n[[stage]]\nname = {}\ncovers = {}\ngolden = {}\n{together}steps = [\n{}]\n",
            q(&format!("{}-{name}", n + 1)),
            q(&format!("{source}, record #{}{after}", first.at)),
            q(&golden_of(n + 1, name)),
            written
                .iter()
                .map(|w| format!("    {w},\n"))
                .collect::<String>(),
        ));
        steps.extend(written);
    }
    std::fs::create_dir_all(cases_dir).map_err(io_error(cases_dir))?;
    std::fs::write(&case_path, &text).map_err(io_error(&case_path))?;
    let written = write_goldens(
        &case_path,
        golden_root,
        &records,
        &line,
        topology,
        &recovery,
    );
    if written.is_err() {
        // Nothing half-written stays behind.
        let _ = std::fs::remove_file(&case_path);
    }
    Ok(Recorded {
        case: case_path,
        golden: written?,
        steps,
        unrecovered: recovery.unrecovered,
    })
}

/// The goldens of the recorded case: each stage's events as the capture
/// shows them (through the bless path, so they read back as any golden),
/// a channel SIP cannot show unasserted.
fn write_goldens(
    case_path: &Path,
    golden_root: &Path,
    records: &[crate::sip::record::Record],
    line: &Identities,
    topology: &Topology,
    recovery: &actions::Recovery,
) -> Result<Vec<PathBuf>, ReplayError> {
    let case = Case::load(case_path, topology)?;
    let p = Prepared::new_recording(case, golden_root, topology)?;
    let placed = crate::check::Placed {
        starts: stages(&recovery.actions)
            .iter()
            .map(|(_, group)| group[0].at)
            .collect(),
        last_step: recovery.actions.last().map(|a| a.at),
        steps: recovery.actions.iter().map(|a| a.at).collect(),
        actions: None,
    };
    let result = crate::check::check(&p, records.to_vec(), topology, line, &placed, &[]);
    crate::bless::bless(&p, &result, golden_root).map_err(io_error(golden_root))?;
    let pending = crate::bless::selected(golden_root, Some(&p));
    crate::bless::settle(&pending, true).map_err(io_error(golden_root))?;
    let mut dirs = Vec::new();
    for (stage, golden) in p.case.stages.iter().zip(&p.golden) {
        let dir = golden_root.join(&stage.golden);
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        for (channel, _) in &golden.channels {
            // The wire layer is what the capture shows in full. A server's
            // T-Library channels also carry events SIP cannot show (a
            // seizure's EventPrivateInfo, a conference's EventPartyAdded,
            // call monitoring), and SIP's reading of flows the reference
            // does not cover is not the server's: asserted from SIP, they
            // would fail a server that publishes its own events.
            let why = match channel {
                crate::model::Channel::Wire(_) if result.source.sees_channel(channel) => continue,
                crate::model::Channel::Wire(_) => format!(
                    "recorded from a capture: {} does not show {channel}",
                    result.source.source_of(channel)
                ),
                _ => format!(
                    "recorded from a capture: its SIP does not show every T-Library event of \
                     {channel}; to assert it, delete this file and run the case with --bless \
                     against a server that publishes its events"
                ),
            };
            {
                let file = crate::golden::channel_file(&dir, channel);
                let marker = serde_json::json!({ crate::golden::UNASSERTED_KEY: why });
                std::fs::write(&file, format!("{marker}\n")).map_err(io_error(&file))?;
            }
        }
        dirs.push(dir);
    }
    Ok(dirs)
}

/// A capture ready to re-drive a target with (`scacheck pcap replay`): a
/// copy of the suite in a directory of its own, removed when this is
/// dropped, holding the capture made into a case (judged against what the
/// captured server did) beside the reference case the capture's flow is,
/// if it is one (judged against the reference's goldens). A run of
/// [`ReplayTree::cases`] on [`ReplayTree::dirs`] judges the flow both ways.
#[derive(Debug)]
pub struct ReplayTree {
    pub dirs: crate::suite::Dirs,
    root: PathBuf,
    pub recorded: Recordings,
    /// Each flow's recorded case id, with the reference case its flow
    /// is, or why it is none.
    pub flows: Vec<(String, Result<String, String>)>,
}

impl Drop for ReplayTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl ReplayTree {
    /// Reads `file`, copies the suite of `dirs` and records the capture
    /// into the copy as case `replay-<file stem>`, its phones found with
    /// the identities of `captured_on` (`embedded` or a profile path: the
    /// server the capture was made on).
    pub fn make(
        file: &Path,
        dirs: &crate::suite::Dirs,
        captured_on: &str,
        topology: &Topology,
    ) -> Result<ReplayTree, ReplayError> {
        let (_, lines, deviations) = dirs.judged_as(captured_on, topology)?;
        let capture = read_capture(file)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let root =
            std::env::temp_dir().join(format!("scacheck-replay-{}-{stamp:x}", std::process::id()));
        let copy = crate::suite::Dirs {
            cases: root.join("cases"),
            golden: root.join("golden"),
        };
        let copied = copy_tree(&dirs.cases, &copy.cases)
            .and_then(|()| copy_tree(&dirs.golden, &copy.golden))
            .map_err(|source| ReplayError::Io {
                path: root.clone(),
                source,
            });
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&root);
            return Err(e);
        }
        let stem: String = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let id = format!("replay-{stem}");
        let name = file.display().to_string();
        let recorded = match record_case(&capture, &name, &id, &copy, &lines, topology) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(e);
            }
        };
        let suite = dirs.load(topology, None, false).map_err(|e| e.to_string());
        let mut flows = Vec::new();
        for split in capture.flows(&lines) {
            let named = flow_id(&id, &split);
            let (line, flow) = (split.line, split.capture);
            if !recorded
                .cases
                .iter()
                .any(|r| r.case.file_stem().is_some_and(|s| s == named.as_str()))
            {
                continue;
            }
            let pool = line.map_or_else(|| lines.clone(), |l| vec![l]);
            let reference = suite.clone().and_then(|suite| {
                flow.judge(file, &suite, &pool, &deviations, topology)
                    .map(|(p, _)| p.case.id.clone())
                    .map_err(|e| e.to_string())
            });
            flows.push((named, reference));
        }
        Ok(ReplayTree {
            dirs: copy,
            root,
            recorded,
            flows,
        })
    }

    /// The `--cases` pattern of the run: every flow's recorded case and
    /// the reference cases they are, each by its exact id (`seize-race`
    /// is not `seize-race-trials`).
    pub fn cases(&self) -> String {
        let mut ids: Vec<&str> = self.flows.iter().map(|(id, _)| id.as_str()).collect();
        for (_, reference) in &self.flows {
            if let Ok(r) = reference {
                if !ids.contains(&r.as_str()) {
                    ids.push(r);
                }
            }
        }
        let exact: Vec<String> = ids.iter().map(|id| format!("={id}")).collect();
        exact.join(",")
    }
}

impl std::fmt::Display for ReplayTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.recorded)?;
        for (id, reference) in &self.flows {
            writeln!(
                f,
                "replay: case {id} is judged against what the captured server did"
            )?;
            match reference {
                Ok(r) => writeln!(
                    f,
                    "replay: its flow is reference case {r}, judged against its goldens"
                )?,
                Err(why) => writeln!(f, "replay: no reference case to judge it against: {why}")?,
            }
        }
        Ok(())
    }
}

/// Copies a directory tree (the suite: small text files).
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
