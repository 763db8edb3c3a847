//! The bless workflow, after insta's: a failing run can write what it
//! observed as pending golden files (`<channel>.jsonl.new` beside the
//! golden), which a person reviews as diffs and then accepts or rejects.
//! Nothing is written when `CI` is set: CI judges goldens, it never makes
//! them.

use std::path::{Path, PathBuf};

use similar::TextDiff;

use crate::golden::{channel_file, pending_file, target_of, PENDING, SYMBOL_PREFIX};
use crate::model::{Event, IdSpace, Kind, Strictness, Value};
use crate::outcome::{CaseResult, Verdict};
use crate::suite::Prepared;

/// Is this a CI run (the `CI` environment variable set and not "false")?
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Observed lines (golden form, bound identifiers already shown as their
/// symbols) as golden lines: identifiers never bound get fresh symbols, so
/// the file loads as a golden file.
fn symbolised(lines: &[String]) -> String {
    let mut fresh: Vec<(IdSpace, String, String)> = Vec::new();
    let mut out = String::new();
    for line in lines {
        let parsed = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line)
            .ok()
            .and_then(|obj| Event::from_json(&obj, Strictness::Lenient, &[]).ok());
        let Some((mut event, _)) = parsed else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        for (attr, value) in event.attrs.iter_mut() {
            let (Kind::Id(space), Value::Id(literal)) = (attr.kind(), &*value) else {
                continue;
            };
            if literal.starts_with(SYMBOL_PREFIX) {
                continue;
            }
            let symbol = match fresh.iter().find(|(s, l, _)| *s == space && l == literal) {
                Some((_, _, symbol)) => symbol.clone(),
                None => {
                    let prefix = match space {
                        IdSpace::ConnId => "conn",
                        IdSpace::PartyId => "party",
                    };
                    let symbol = format!(
                        "{SYMBOL_PREFIX}{prefix}{}",
                        fresh.iter().filter(|(s, _, _)| *s == space).count() + 1
                    );
                    fresh.push((space, literal.clone(), symbol.clone()));
                    symbol
                }
            };
            *value = Value::Id(symbol);
        }
        out.push_str(&event.to_json_line());
        out.push('\n');
    }
    out
}

/// Writes pending golden files for a failing case: one per channel that
/// differed, holding what was observed. Returns the files written.
pub fn bless(
    p: &Prepared,
    result: &CaseResult,
    golden_root: &Path,
) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let recording = p
        .case
        .stages
        .iter()
        .any(|s| !golden_root.join(&s.golden).exists());
    if result.verdict != Verdict::Fail && !recording {
        return Ok(written);
    }
    let exchanged = unblessable(p, result);
    for (stage, outcome) in p.case.stages.iter().zip(&result.stages) {
        if exchanged.contains(&stage.name) {
            continue;
        }
        let dir = golden_root.join(&stage.golden);
        // A channel that differed, or one a new stage has no file for yet
        // (recording a new case writes every channel, empty ones too).
        let wanted = outcome
            .channels
            .iter()
            .filter(|c| c.diff.is_some() || !channel_file(&dir, &c.channel).exists());
        for channel in wanted {
            std::fs::create_dir_all(&dir)?;
            let path = pending_file(&dir, &channel.channel);
            std::fs::write(&path, symbolised(&channel.observed))?;
            written.push(path);
        }
    }
    Ok(written)
}

/// The stages of `result` that [`bless`] leaves alone: those read with the
/// racing phones exchanged ([`crate::race`]), whose observed events are
/// the other phone's part.
fn unblessable(p: &Prepared, result: &CaseResult) -> Vec<String> {
    crate::race::exchanged_stages(&p.case.stages, &p.golden, &result.events)
}

/// `--bless` after a run: [`bless`] for every case, in order (an error
/// names the case), unless CI is set. Returns what the console says: the
/// pending files and what to do next, or that CI wrote nothing.
pub fn bless_all(
    suite: &[Prepared],
    results: &[CaseResult],
    golden_root: &Path,
) -> std::io::Result<Vec<String>> {
    if in_ci() {
        return Ok(vec!["--bless: CI is set, no golden file written".into()]);
    }
    let mut said = Vec::new();
    for (p, r) in suite.iter().zip(results) {
        let written = bless(p, r, golden_root)
            .map_err(|e| std::io::Error::new(e.kind(), format!("blessing {}: {e}", r.id)))?;
        said.extend(written.iter().map(|f| format!("pending: {}", f.display())));
        let skipped = unblessable(p, r);
        if !skipped.is_empty() && r.verdict == Verdict::Fail {
            said.push(format!(
                "{}: stage {} not blessed: a race there (or before) was won by another phone than the golden's, so what was observed is not in the golden's roles; bless a run that the golden's winner wins",
                r.id,
                skipped.join(", ")
            ));
        }
    }
    said.push(
        "review with `scacheck golden review`, then `scacheck golden accept` or `reject`".into(),
    );
    Ok(said)
}

/// Why `scacheck golden accept/reject` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum GoldenError {
    #[error("CI is set: golden files are not changed in CI")]
    Ci,
    #[error(transparent)]
    Suite(#[from] crate::suite::SuiteError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `scacheck golden`: with no `settle`, every pending file as a diff (one
/// string); else accept (true) or reject the pending files of one case, or
/// of all. Returns the lines to print.
pub fn command(
    dirs: &crate::suite::Dirs,
    topology: &crate::topology::Topology,
    settle_what: Option<(Option<String>, bool)>,
) -> Result<Vec<String>, GoldenError> {
    let Some((id, accept)) = settle_what else {
        return Ok(vec![review_all(&dirs.golden)
            .trim_end_matches('\n')
            .to_string()]);
    };
    if in_ci() {
        return Err(GoldenError::Ci);
    }
    let case = id.map(|id| dirs.case(&id, topology, true)).transpose()?;
    Ok(settle(&selected(&dirs.golden, case.as_ref()), accept)?)
}

/// Every pending golden file under `golden_root`, sorted.
pub fn pending(golden_root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(golden_root) else {
        return out;
    };
    for dir in dirs
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
    {
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        out.extend(
            files
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == PENDING)),
        );
    }
    out.sort();
    out
}

/// Settles pending golden files: `accept` puts each in place of the golden
/// it would replace, otherwise each is removed. Returns what it did, a line
/// per file, for the console.
pub fn settle(files: &[PathBuf], accept: bool) -> std::io::Result<Vec<String>> {
    let mut done = Vec::with_capacity(files.len());
    for f in files {
        if accept {
            let target = target_of(f);
            std::fs::rename(f, &target).map_err(|e| {
                std::io::Error::new(e.kind(), format!("accepting {}: {e}", f.display()))
            })?;
            done.push(format!("accepted {}", target.display()));
        } else {
            std::fs::remove_file(f).map_err(|e| {
                std::io::Error::new(e.kind(), format!("rejecting {}: {e}", f.display()))
            })?;
            done.push(format!("rejected {}", f.display()));
        }
    }
    Ok(done)
}

/// Every pending file under `golden_root` as a diff, or that there is none.
pub fn review_all(golden_root: &Path) -> String {
    let files = pending(golden_root);
    if files.is_empty() {
        return format!("no pending golden files under {}\n", golden_root.display());
    }
    files.iter().map(|f| review(f)).collect()
}

/// A pending file as a unified diff against the golden it would replace.
pub fn review(pending: &Path) -> String {
    let target = target_of(pending);
    let old = std::fs::read_to_string(&target).unwrap_or_default();
    let new = std::fs::read_to_string(pending).unwrap_or_default();
    TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(
            &target.display().to_string(),
            &pending.display().to_string(),
        )
        .to_string()
}

/// The pending files of the golden directories `case` uses (all, if None).
pub fn selected(golden_root: &Path, case: Option<&Prepared>) -> Vec<PathBuf> {
    pending(golden_root)
        .into_iter()
        .filter(|f| {
            case.is_none_or(|p| {
                p.case
                    .stages
                    .iter()
                    .any(|s| f.parent() == Some(&golden_root.join(&s.golden)))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbound_identifiers_get_fresh_symbols_and_bound_ones_stay() {
        let lines = [
            r#"{"event": "EventCallCreated", "ConnID": "00ab"}"#.to_string(),
            r#"{"event": "EventCallPartyAdded", "ConnID": "00ab", "PartyID": "$p60972"}"#
                .to_string(),
            r#"{"event": "EventCallPartyAdded", "ConnID": "00ab", "PartyID": "7"}"#.to_string(),
        ];
        assert_eq!(
            symbolised(&lines),
            "{\"event\": \"EventCallCreated\", \"ConnID\": \"$conn1\"}\n\
             {\"event\": \"EventCallPartyAdded\", \"ConnID\": \"$conn1\", \"PartyID\": \"$p60972\"}\n\
             {\"event\": \"EventCallPartyAdded\", \"ConnID\": \"$conn1\", \"PartyID\": \"$party1\"}\n"
        );
    }

    #[test]
    fn pending_files_are_found_reviewed_and_map_to_their_golden() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("stage");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("60970.jsonl"), "{\"event\": \"EventOnHook\"}\n").unwrap();
        std::fs::write(
            dir.join("60970.jsonl.new"),
            "{\"event\": \"EventOffHook\"}\n",
        )
        .unwrap();
        let found = pending(root.path());
        assert_eq!(found, vec![dir.join("60970.jsonl.new")]);
        assert_eq!(target_of(&found[0]), dir.join("60970.jsonl"));
        let diff = review(&found[0]);
        assert!(
            diff.contains("-{\"event\": \"EventOnHook\"}")
                && diff.contains("+{\"event\": \"EventOffHook\"}"),
            "{diff}"
        );
    }
}
