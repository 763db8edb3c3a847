//! Golden files: `fixtures/golden/<stage>/<channel>.jsonl`, one expected
//! event a line in the canonical JSON form, one file per channel (each
//! party's DN, and `monitoring`). An empty file asserts that the channel
//! receives nothing in that stage. Identifiers (ConnID, PartyID) are
//! written as symbols (`$conn`, `$p60970`) and bound at first sight.

use std::path::{Path, PathBuf};

use crate::input::InputError;
use crate::model::{Channel, Event, Kind, Strictness, Value};
use crate::topology::Topology;

/// An expected event and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub event: Event,
    pub path: PathBuf,
    pub line: usize,
}

/// The expectations of one stage, channel by channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldenStage {
    pub dir: PathBuf,
    pub channels: Vec<(Channel, Vec<Expected>)>,
}

/// The marker that makes an identifier value a symbol.
pub const SYMBOL_PREFIX: char = '$';

impl GoldenStage {
    /// Loads `root/<name>/` for a case with these parties.
    pub fn load(
        root: &Path,
        name: &str,
        parties: &[String],
        topology: &Topology,
    ) -> Result<GoldenStage, InputError> {
        let dir = root.join(name);
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            InputError::new(&dir, None, format!("cannot read golden directory: {e}"))
        })?;
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            if path.extension().is_some_and(|x| x == "md") {
                continue; // readings written beside the files
            }
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let known = stem == Channel::MONITORING || topology.knows(stem);
            if !known || path.extension().is_none_or(|x| x != "jsonl") {
                return Err(InputError::new(
                    &path,
                    None,
                    format!(
                        "not a channel file: expected <DN>.jsonl for one of {} or {}.jsonl",
                        topology.dns().join(", "),
                        Channel::MONITORING
                    ),
                ));
            }
        }
        let mut channels = Vec::new();
        for channel in parties
            .iter()
            .map(|p| Channel::Dn(p.clone()))
            .chain([Channel::Monitoring])
        {
            let path = dir.join(format!("{channel}.jsonl"));
            let text = std::fs::read_to_string(&path).map_err(|e| {
                InputError::new(
                    &path,
                    None,
                    format!(
                        "cannot read ({e}); an empty file asserts that the channel gets no events"
                    ),
                )
            })?;
            channels.push((channel, parse_lines(&path, &text, topology)?));
        }
        Ok(GoldenStage { dir, channels })
    }
}

/// Reads the events of one channel file.
pub fn parse_lines(
    path: &Path,
    text: &str,
    topology: &Topology,
) -> Result<Vec<Expected>, InputError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let err = |m: String| InputError::new(path, Some(n), m);
        if line.trim().is_empty() {
            continue;
        }
        let json: serde_json::Value =
            serde_json::from_str(line).map_err(|e| err(format!("not JSON: {e}")))?;
        let obj = json
            .as_object()
            .ok_or_else(|| err("an event must be a JSON object".into()))?;
        let (event, _) = Event::from_json(obj, Strictness::Strict, &[]).map_err(err)?;
        for (attr, value) in &event.attrs {
            match (attr.kind(), value) {
                (Kind::Id(_), Value::Id(s)) if !s.starts_with(SYMBOL_PREFIX) || s.len() < 2 => {
                    return Err(err(format!(
                        "{attr} {s:?} must be a symbol such as \"{SYMBOL_PREFIX}conn\": identifiers are bound at first sight, never compared literally"
                    )));
                }
                (Kind::Dn, Value::Dn(d)) if !topology.knows(d) && topology.line(d).is_none() => {
                    return Err(err(format!(
                        "{attr} {d:?} is not a known party ({})",
                        topology.dns().join(", ")
                    )));
                }
                _ => {}
            }
        }
        out.push(Expected {
            event,
            path: path.to_path_buf(),
            line: n,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Expected>, InputError> {
        parse_lines(Path::new("g/60970.jsonl"), text, &Topology::reference())
    }

    #[test]
    fn reads_events_and_skips_blank_lines() {
        let got = parse("{\"event\": \"EventOffHook\", \"ThisDN\": \"60970\"}\n\n{\"event\": \"EventCallCreated\", \"ConnID\": \"$c\"}\n").unwrap();
        assert_eq!(got.iter().map(|e| e.line).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn errors_name_the_line() {
        let bad = [
            ("{\"event\": \"EventOffHook\"}\n{\"event\": \"EventOffHook\", \"ThisDN\": \"60971\"}", 2, "not a known party"),
            ("{\"event\": \"EventCallCreated\", \"ConnID\": \"006e\"}", 1, "must be a symbol"),
            ("{\"event\": \"EventOffHook\",", 1, "not JSON"),
            ("\n\n[1]", 3, "JSON object"),
            ("{\"event\": \"EventOffHook\", \"Cause\": \"Nope\"}", 1, "unknown Cause"),
        ];
        for (text, line, want) in bad {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, Some(line), "{e}");
            assert!(e.message.contains(want), "{e}");
        }
    }
}
