//! Golden files: `fixtures/golden/<stage>/<channel>.jsonl`, one expected
//! event a line in the canonical JSON form, one file per channel: each
//! party's DN, `monitoring`, and `sca.<DN>` (the SCA wire layer, BroadWorks
//! model) for each shared-line phone. An empty file asserts that the
//! channel receives nothing in that stage; a file holding only
//! `{"unasserted": "why"}` says the reference does not tell, so the channel
//! is not compared. Identifiers (ConnID, PartyID) are written as symbols
//! (`$conn`, `$p60970`) and bound at first sight.

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

/// What a stage expects on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// Exactly these events, in this order (none: an empty file).
    Events(Vec<Expected>),
    /// Not compared, for this reason.
    Unasserted(String),
}

impl Expectation {
    /// How many events a source that sees this much will deliver.
    pub fn count(&self, seen: &crate::observation::Observability) -> usize {
        match self {
            Expectation::Events(e) => e.iter().filter(|e| seen.sees_event(&e.event.name)).count(),
            Expectation::Unasserted(_) => 0,
        }
    }
}

/// The expectations of one stage, channel by channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldenStage {
    pub dir: PathBuf,
    pub channels: Vec<(Channel, Expectation)>,
}

/// The marker that makes an identifier value a symbol.
pub const SYMBOL_PREFIX: char = '$';
/// The key of the one-line "not asserted" marker.
pub const UNASSERTED_KEY: &str = "unasserted";

/// The channels a case with these parties is compared on, in report order.
pub fn channels(parties: &[String], topology: &Topology) -> Vec<Channel> {
    let dns = parties.iter().map(|p| Channel::Dn(p.clone()));
    let wire = parties
        .iter()
        .filter(|p| topology.line_of(p).is_some())
        .map(|p| Channel::Wire(p.clone()));
    dns.chain([Channel::Monitoring]).chain(wire).collect()
}

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
            if path
                .extension()
                .is_some_and(|x| x == "md" || x == crate::bless::PENDING)
            {
                continue; // readings written beside the files; pending goldens
            }
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let known = match Channel::parse(stem) {
                Channel::Monitoring => true,
                Channel::Dn(dn) => topology.knows(&dn),
                Channel::Wire(dn) => topology.line_of(&dn).is_some(),
            };
            if !known || path.extension().is_none_or(|x| x != "jsonl") {
                return Err(InputError::new(
                    &path,
                    None,
                    format!(
                        "not a channel file: expected <DN>.jsonl for one of {}, {}.jsonl, or {}<DN>.jsonl for a shared-line phone",
                        topology.dns().join(", "),
                        Channel::MONITORING,
                        Channel::WIRE_PREFIX
                    ),
                ));
            }
        }
        let mut out = Vec::new();
        for channel in channels(parties, topology) {
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
            out.push((
                channel.clone(),
                parse_channel(&path, &text, &channel, topology)?,
            ));
        }
        Ok(GoldenStage { dir, channels: out })
    }
}

/// Reads one channel file.
pub fn parse_channel(
    path: &Path,
    text: &str,
    channel: &Channel,
    topology: &Topology,
) -> Result<Expectation, InputError> {
    let mut out = Vec::new();
    let mut unasserted: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let err = |m: String| InputError::new(path, Some(n), m);
        if line.trim().is_empty() {
            continue;
        }
        if let Some((first, _)) = &unasserted {
            return Err(err(format!(
                "an \"{UNASSERTED_KEY}\" marker (line {first}) must be the file's only line"
            )));
        }
        let json: serde_json::Value =
            serde_json::from_str(line).map_err(|e| err(format!("not JSON: {e}")))?;
        let obj = json
            .as_object()
            .ok_or_else(|| err("an event must be a JSON object".into()))?;
        if let Some(reason) = obj.get(UNASSERTED_KEY) {
            match (reason.as_str(), obj.len(), out.is_empty()) {
                (Some(r), 1, true) if !r.trim().is_empty() => unasserted = Some((n, r.to_string())),
                (Some(_), 1, false) => return Err(err(format!("an \"{UNASSERTED_KEY}\" marker must be the file's only line"))),
                _ => return Err(err(format!("write the marker as {{\"{UNASSERTED_KEY}\": \"why the reference does not tell\"}}"))),
            }
            continue;
        }
        let (event, _) = Event::from_json(obj, Strictness::Strict, &[]).map_err(err)?;
        let layer = match &event.name {
            crate::model::EventName::Known(k) => k.layer(),
            crate::model::EventName::Other(_) => channel.layer(),
        };
        if layer != channel.layer() {
            return Err(err(format!(
                "{} does not belong on channel {channel}",
                event.name
            )));
        }
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
    Ok(match unasserted {
        Some((_, reason)) => Expectation::Unasserted(reason),
        None => Expectation::Events(out),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Expectation, InputError> {
        parse_channel(
            Path::new("g/60970.jsonl"),
            text,
            &Channel::Dn("60970".into()),
            &Topology::reference(),
        )
    }

    #[test]
    fn reads_events_and_skips_blank_lines() {
        let Expectation::Events(got) = parse("{\"event\": \"EventOffHook\", \"ThisDN\": \"60970\"}\n\n{\"event\": \"EventCallCreated\", \"ConnID\": \"$c\"}\n").unwrap() else {
            panic!("events expected")
        };
        assert_eq!(got.iter().map(|e| e.line).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(parse("").unwrap(), Expectation::Events(Vec::new()));
    }

    #[test]
    fn reads_the_unasserted_marker() {
        assert_eq!(
            parse("{\"unasserted\": \"no column\"}\n").unwrap(),
            Expectation::Unasserted("no column".into())
        );
    }

    #[test]
    fn errors_name_the_line() {
        let bad = [
            ("{\"event\": \"EventOffHook\"}\n{\"event\": \"EventOffHook\", \"ThisDN\": \"60971\"}", 2, "not a known party"),
            ("{\"event\": \"EventCallCreated\", \"ConnID\": \"006e\"}", 1, "must be a symbol"),
            ("{\"event\": \"EventOffHook\",", 1, "not JSON"),
            ("\n\n[1]", 3, "JSON object"),
            ("{\"event\": \"EventOffHook\", \"Cause\": \"Nope\"}", 1, "unknown Cause"),
            ("{\"event\": \"Appearance\", \"Index\": 1}", 1, "does not belong on channel 60970"),
            ("{\"unasserted\": \"x\"}\n{\"event\": \"EventOffHook\"}", 2, "only line"),
            ("{\"event\": \"EventOffHook\"}\n{\"unasserted\": \"x\"}", 2, "only line"),
            ("{\"unasserted\": \"\"}", 1, "write the marker"),
        ];
        for (text, line, want) in bad {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, Some(line), "{e}");
            assert!(e.message.contains(want), "{e}");
        }
    }

    #[test]
    fn wire_channels_take_wire_events_only() {
        let wire = Channel::Wire("60970".into());
        let ok = parse_channel(
            Path::new("g/sca.60970.jsonl"),
            "{\"event\": \"Appearance\", \"Index\": 1, \"AppearanceState\": \"held\"}",
            &wire,
            &Topology::reference(),
        );
        assert!(ok.is_ok(), "{ok:?}");
        let e = parse_channel(
            Path::new("g/sca.60970.jsonl"),
            "{\"event\": \"EventHeld\"}",
            &wire,
            &Topology::reference(),
        )
        .unwrap_err();
        assert!(e.message.contains("does not belong"), "{e}");
    }

    #[test]
    fn a_case_is_compared_on_its_parties_monitoring_and_phones_wire() {
        let parties: Vec<String> = ["60972", "60970", "60970_2"].map(String::from).to_vec();
        let names: Vec<String> = channels(&parties, &Topology::reference())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            [
                "60972",
                "60970",
                "60970_2",
                "monitoring",
                "sca.60970",
                "sca.60970_2"
            ]
        );
    }
}
