//! Declared deviations: the differences a target profile says a server is
//! known to have, each stated precisely enough that anything else fails.
//!
//! A deviation names one stage of some cases, the channels it is seen on,
//! and one [`Edit`] of the golden events there: an expected event that is
//! absent, an attribute missing or with another value, events that come
//! instead of an expected one, or events that come in addition. The golden
//! with the edit applied is what the target is expected to send.
//!
//! The contract (the diff and the verdict rules rely on it):
//! - A channel is excused only if what was observed is **exactly** its
//!   golden with some of its declared deviations applied; the smallest such
//!   set is the one that occurred. Any other difference is not excused.
//! - A declared deviation that did not occur where it is declared (the
//!   golden matched without it) is reported, and makes the case an xpass.
//! - A deviation whose edit changes nothing the source can observe (an
//!   attribute a SIP-derived source cannot see) is neither: it is listed
//!   as not observable.
//! - Every case, stage, channel and golden event a deviation names must
//!   exist ([`validate`]): a typo is an error with file and line, never a
//!   deviation that silently excuses nothing or everything.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::case::Case;
use crate::golden::{Expectation, GoldenStage};
use crate::input::InputError;
use crate::model::{Attr, Channel, Event, Strictness, Value};

/// A difference a target is known to have, with why and how we know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deviation {
    pub cases: Vec<String>,
    /// The case stage (its `name` in the case file).
    pub stage: String,
    pub channels: Vec<Channel>,
    pub edit: Edit,
    pub reason: String,
    /// What shows it (a capture, a source line), as the profile says.
    pub evidence: Option<String>,
    /// Where it is declared: the profile's line of `[[deviation]]`.
    pub line: usize,
    /// The file that declares it when not the profile's own: a profile
    /// that extends another declares its version's own deviations.
    pub file: Option<std::path::PathBuf>,
    /// The lines of the parts validation may complain about.
    pub at: PartLines,
}

/// The profile lines of a deviation's parts (its cases, stage, channels
/// and edit), for errors that point at the right one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartLines {
    pub cases: Vec<usize>,
    pub stage: usize,
    pub channels: Vec<usize>,
    pub edit: usize,
}

/// How the target's events differ from the golden ones on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// The golden events matching any pattern are not sent.
    Absent(Vec<Event>),
    /// The golden events matching any pattern come without these
    /// attributes, or with these values.
    Changed {
        golden: Vec<Event>,
        without: Vec<Attr>,
        set: BTreeMap<Attr, Value>,
    },
    /// In place of the golden events matching any pattern (at the first
    /// one's place), these events come.
    Instead {
        golden: Vec<Event>,
        observed: Vec<Event>,
    },
    /// These events come in addition: after the last golden event
    /// matching `after`, or at the channel's end.
    Extra {
        observed: Vec<Event>,
        after: Option<Vec<Event>>,
    },
}

/// Does a golden event have every attribute a pattern gives, as given?
pub fn matches(pattern: &Event, e: &Event) -> bool {
    e.name == pattern.name && pattern.attrs.iter().all(|(a, v)| e.attrs.get(a) == Some(v))
}

fn any_match(patterns: &[Event], e: &Event) -> bool {
    patterns.iter().any(|p| matches(p, e))
}

impl Edit {
    /// Calls `f` on every attribute value of the events the edit names
    /// (its patterns and what it puts in their place).
    pub fn for_each_value(&mut self, mut f: impl FnMut(&mut Value)) {
        let mut each = |events: &mut Vec<Event>| {
            for e in events {
                e.attrs.values_mut().for_each(&mut f);
            }
        };
        match self {
            Edit::Absent(golden) => each(golden),
            Edit::Changed { golden, set, .. } => {
                each(golden);
                set.values_mut().for_each(&mut f);
            }
            Edit::Instead { golden, observed } => {
                each(golden);
                each(observed);
            }
            Edit::Extra { observed, after } => {
                each(observed);
                if let Some(after) = after {
                    each(after);
                }
            }
        }
    }

    /// The golden events of a channel with this edit applied.
    pub fn apply(&self, events: &[Event]) -> Vec<Event> {
        match self {
            Edit::Absent(golden) => events
                .iter()
                .filter(|e| !any_match(golden, e))
                .cloned()
                .collect(),
            Edit::Changed {
                golden,
                without,
                set,
            } => events
                .iter()
                .map(|e| {
                    if !any_match(golden, e) {
                        return e.clone();
                    }
                    let mut e = e.clone();
                    for a in without {
                        e.attrs.remove(a);
                    }
                    e.attrs.extend(set.iter().map(|(a, v)| (*a, v.clone())));
                    e
                })
                .collect(),
            Edit::Instead { golden, observed } => {
                let mut out = Vec::with_capacity(events.len() + observed.len());
                let mut placed = false;
                for e in events {
                    if any_match(golden, e) {
                        if !placed {
                            out.extend(observed.iter().cloned());
                            placed = true;
                        }
                    } else {
                        out.push(e.clone());
                    }
                }
                out
            }
            Edit::Extra { observed, after } => {
                let at = match after {
                    None => events.len(),
                    Some(after) => events
                        .iter()
                        .rposition(|e| any_match(after, e))
                        .map_or(events.len(), |i| i + 1),
                };
                let mut out = events.to_vec();
                out.splice(at..at, observed.iter().cloned());
                out
            }
        }
    }

    /// The patterns that must each match a golden event wherever the
    /// deviation applies.
    fn patterns(&self) -> &[Event] {
        match self {
            Edit::Absent(golden) | Edit::Changed { golden, .. } | Edit::Instead { golden, .. } => {
                golden
            }
            Edit::Extra { after, .. } => after.as_deref().unwrap_or(&[]),
        }
    }
}

fn list(events: &[Event]) -> String {
    let v: Vec<String> = events.iter().map(Event::to_json_line).collect();
    v.join(", ")
}

impl fmt::Display for Edit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edit::Absent(g) => write!(f, "absent: {}", list(g)),
            Edit::Changed {
                golden,
                without,
                set,
            } => {
                write!(f, "{}", list(golden))?;
                if !without.is_empty() {
                    let w: Vec<&str> = without.iter().map(|a| a.as_str()).collect();
                    write!(f, " without {}", w.join(", "))?;
                }
                if !set.is_empty() {
                    let s: Vec<String> = set.iter().map(|(a, v)| format!("{a} {v}")).collect();
                    write!(f, " with {}", s.join(", "))?;
                }
                Ok(())
            }
            Edit::Instead { golden, observed } => {
                write!(f, "instead of {}: {}", list(golden), list(observed))
            }
            Edit::Extra { observed, after } => {
                write!(f, "in addition: {}", list(observed))?;
                if let Some(after) = after {
                    write!(f, " after {}", list(after))?;
                }
                Ok(())
            }
        }
    }
}

impl Deviation {
    pub fn applies_to(&self, case: &str) -> bool {
        self.cases.iter().any(|c| c == case)
    }

    pub fn covers(&self, case: &str, stage: &str, channel: &Channel) -> bool {
        self.applies_to(case) && self.stage == stage && self.channels.contains(channel)
    }

    /// How every output names it: the line, the edit and the reason.
    pub fn label(&self) -> String {
        let file = match &self.file {
            Some(f) => f
                .file_name()
                .map_or(String::new(), |n| format!("{} ", n.to_string_lossy())),
            None => "profile ".into(),
        };
        format!(
            "declared deviation ({file}line {}): {}: {}",
            self.line, self.edit, self.reason
        )
    }
}

/// What a profile's TOML says of one deviation, before it is checked.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDeviation {
    cases: Vec<toml::Spanned<String>>,
    stage: toml::Spanned<String>,
    channels: Vec<toml::Spanned<String>>,
    reason: String,
    #[serde(default)]
    evidence: Option<String>,
    #[serde(default)]
    absent: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    changed: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    without: Option<Vec<toml::Spanned<String>>>,
    #[serde(default)]
    set: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    instead_of: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    observed: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    extra: Option<toml::Spanned<toml::Value>>,
    #[serde(default)]
    after: Option<toml::Spanned<toml::Value>>,
}

/// The forms a deviation's edit can take, for error messages.
pub const FORMS: &str = "one of: absent = EVENT; changed = EVENT with without = [ATTR...] and/or set = {ATTR = VALUE}; instead_of = EVENT with observed = EVENT; extra = EVENT with optional after = EVENT (EVENT: a table, or a list of tables, in the golden JSON form: { event = \"Offered\", Index = 1 })";

impl RawDeviation {
    /// Checks the deviation's own form (not yet whether what it names
    /// exists: that needs the suite, see [`validate`]).
    pub(crate) fn check(
        self,
        path: &Path,
        text: &str,
        line: usize,
    ) -> Result<Deviation, InputError> {
        let at = |offset: usize| crate::input::line_of(text, offset);
        let err = |l: usize, m: String| InputError::new(path, Some(l), m);
        if self.reason.trim().is_empty() {
            return Err(err(line, "a deviation needs its reason".into()));
        }
        if self.cases.is_empty() {
            return Err(err(
                line,
                "a deviation needs the cases it applies to".into(),
            ));
        }
        if self.channels.is_empty() {
            return Err(err(
                line,
                "a deviation needs the channels it is seen on".into(),
            ));
        }
        let events =
            |v: &toml::Spanned<toml::Value>, what: &str| -> Result<Vec<Event>, InputError> {
                let l = at(v.span().start);
                let tables: Vec<&toml::Value> = match v.get_ref() {
                    toml::Value::Array(a) => a.iter().collect(),
                    t @ toml::Value::Table(_) => vec![t],
                    other => {
                        return Err(err(
                            l,
                            format!(
                                "{what} must be an event table or a list of them, found {}",
                                other.type_str()
                            ),
                        ))
                    }
                };
                if tables.is_empty() {
                    return Err(err(l, format!("{what} names no event")));
                }
                tables
                    .into_iter()
                    .map(|t| {
                        let json =
                            serde_json::to_value(t).map_err(|e| err(l, format!("{what}: {e}")))?;
                        let obj = json
                            .as_object()
                            .ok_or_else(|| err(l, format!("{what} must be an event table")))?;
                        Event::from_json(obj, Strictness::Strict, &[])
                            .map(|(e, _)| e)
                            .map_err(|m| err(l, format!("{what}: {m}")))
                    })
                    .collect()
            };
        let given: Vec<&str> = [
            ("absent", self.absent.is_some()),
            ("changed", self.changed.is_some()),
            ("instead_of", self.instead_of.is_some()),
            ("extra", self.extra.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, g)| g.then_some(k))
        .collect();
        if given.len() != 1 {
            return Err(err(
                line,
                format!(
                    "a deviation states exactly one difference ({} given); {FORMS}",
                    if given.is_empty() {
                        "none".to_string()
                    } else {
                        given.join(", ")
                    }
                ),
            ));
        }
        let stray = |name: &str, v: bool, allowed: bool| -> Result<(), InputError> {
            if v && !allowed {
                return Err(err(
                    line,
                    format!("`{name}` does not go with `{}`; {FORMS}", given[0]),
                ));
            }
            Ok(())
        };
        let kind = given[0];
        stray("without", self.without.is_some(), kind == "changed")?;
        stray("set", self.set.is_some(), kind == "changed")?;
        stray("observed", self.observed.is_some(), kind == "instead_of")?;
        stray("after", self.after.is_some(), kind == "extra")?;
        let (edit, edit_at) = if let Some(a) = &self.absent {
            (Edit::Absent(events(a, "absent")?), at(a.span().start))
        } else if let Some(c) = &self.changed {
            let l = at(c.span().start);
            let without = self
                .without
                .iter()
                .flatten()
                .map(|a| {
                    Attr::parse(a.get_ref())
                        .filter(|p| p.as_str() == a.get_ref())
                        .ok_or_else(|| {
                            err(
                                at(a.span().start),
                                format!("without: unknown attribute {:?}", a.get_ref()),
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut set = BTreeMap::new();
            if let Some(s) = &self.set {
                let sl = at(s.span().start);
                let toml::Value::Table(t) = s.get_ref() else {
                    return Err(err(sl, "set must be a table of attribute values".into()));
                };
                for (k, v) in t {
                    let attr = Attr::parse(k)
                        .filter(|p| p.as_str() == k)
                        .ok_or_else(|| err(sl, format!("set: unknown attribute {k:?}")))?;
                    let json = serde_json::to_value(v).map_err(|e| err(sl, format!("set: {e}")))?;
                    let value =
                        Value::from_json(attr, &json).map_err(|m| err(sl, format!("set: {m}")))?;
                    set.insert(attr, value);
                }
            }
            if without.is_empty() && set.is_empty() {
                return Err(err(
                    l,
                    "`changed` needs `without` or `set`: what differs in the event".into(),
                ));
            }
            (
                Edit::Changed {
                    golden: events(c, "changed")?,
                    without,
                    set,
                },
                l,
            )
        } else if let Some(i) = &self.instead_of {
            let Some(o) = &self.observed else {
                return Err(err(
                    at(i.span().start),
                    "`instead_of` needs `observed`: what comes instead".into(),
                ));
            };
            (
                Edit::Instead {
                    golden: events(i, "instead_of")?,
                    observed: events(o, "observed")?,
                },
                at(i.span().start),
            )
        } else if let Some(x) = &self.extra {
            (
                Edit::Extra {
                    observed: events(x, "extra")?,
                    after: self
                        .after
                        .as_ref()
                        .map(|a| events(a, "after"))
                        .transpose()?,
                },
                at(x.span().start),
            )
        } else {
            unreachable!("exactly one form was given")
        };
        let lines = PartLines {
            cases: self.cases.iter().map(|c| at(c.span().start)).collect(),
            stage: at(self.stage.span().start),
            channels: self.channels.iter().map(|c| at(c.span().start)).collect(),
            edit: edit_at,
        };
        Ok(Deviation {
            cases: self.cases.into_iter().map(|c| c.into_inner()).collect(),
            stage: self.stage.into_inner(),
            channels: self
                .channels
                .into_iter()
                .map(|c| Channel::parse(c.get_ref()))
                .collect(),
            edit,
            reason: self.reason,
            evidence: self.evidence,
            line,
            file: None,
            at: lines,
        })
    }
}

/// Checks that everything each deviation names exists in the suite: its
/// cases, its stage in each of them, its channels in that stage's golden
/// (asserted, not `unasserted`), and a golden event there for each of its
/// patterns. `suite` is every case with its golden stages, in case order.
pub fn validate(
    path: &Path,
    deviations: &[Deviation],
    suite: &[(&Case, &[GoldenStage])],
) -> Result<(), InputError> {
    for d in deviations {
        let path = d.file.as_deref().unwrap_or(path);
        let err = |line: usize, m: String| InputError::new(path, Some(line), m);
        for (case_id, line) in d.cases.iter().zip(&d.at.cases) {
            let Some((case, golden)) = suite.iter().find(|(c, _)| &c.id == case_id) else {
                let known: Vec<&str> = suite.iter().map(|(c, _)| c.id.as_str()).collect();
                return Err(err(
                    *line,
                    format!("no case {case_id:?} (cases: {})", known.join(", ")),
                ));
            };
            let Some(at) = case.stages.iter().position(|s| s.name == d.stage) else {
                let known: Vec<&str> = case.stages.iter().map(|s| s.name.as_str()).collect();
                return Err(err(
                    d.at.stage,
                    format!(
                        "case {case_id} has no stage {:?} (stages: {})",
                        d.stage,
                        known.join(", ")
                    ),
                ));
            };
            let stage = &golden[at];
            for (channel, line) in d.channels.iter().zip(&d.at.channels) {
                let Some((_, expectation)) = stage.channels.iter().find(|(c, _)| c == channel)
                else {
                    let known: Vec<String> =
                        stage.channels.iter().map(|(c, _)| c.to_string()).collect();
                    return Err(err(
                        *line,
                        format!(
                            "case {case_id}, stage {}: no channel {channel} (channels: {})",
                            d.stage,
                            known.join(", ")
                        ),
                    ));
                };
                let events = match expectation {
                    Expectation::Unasserted(_) => {
                        return Err(err(
                            *line,
                            format!(
                                "case {case_id}, stage {}: channel {channel} is not asserted ({}), so nothing on it can deviate",
                                d.stage,
                                stage.dir.join(format!("{channel}.jsonl")).display()
                            ),
                        ))
                    }
                    Expectation::Events(e) => e,
                };
                for p in d.edit.patterns() {
                    if !events.iter().any(|e| matches(p, &e.event)) {
                        return Err(err(
                            d.at.edit,
                            format!(
                                "case {case_id}, stage {}, channel {channel}: no golden event matches {p} ({})",
                                d.stage,
                                stage.dir.join(format!("{channel}.jsonl")).display()
                            ),
                        ));
                    }
                }
                // An edit that leaves the golden as it is would excuse
                // nothing and could never be found out (`without` an
                // attribute the event does not have, `set` to its value).
                let golden: Vec<Event> = events.iter().map(|e| e.event.clone()).collect();
                if d.edit.apply(&golden) == golden {
                    return Err(err(
                        d.at.edit,
                        format!(
                            "case {case_id}, stage {}, channel {channel}: {} changes nothing in the golden ({})",
                            d.stage,
                            d.edit,
                            stage.dir.join(format!("{channel}.jsonl")).display()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// How many events each observable channel of a stage is expected to
/// receive on this target: the golden with every declared deviation of the
/// stage applied.
pub fn expected_counts(
    golden: &GoldenStage,
    stage: &str,
    deviations: &[&Deviation],
    seen: &crate::observation::Observability,
) -> Vec<(Channel, usize)> {
    use crate::golden::Expectation;
    golden
        .channels
        .iter()
        .filter(|(c, _)| seen.sees_channel(c))
        .map(|(c, e)| {
            let Expectation::Events(events) = e else {
                return (c.clone(), 0);
            };
            let mut events: Vec<Event> = events.iter().map(|e| e.event.clone()).collect();
            for d in deviations
                .iter()
                .filter(|d| d.stage == stage && d.channels.contains(c))
            {
                events = d.edit.apply(&events);
            }
            (
                c.clone(),
                events.iter().filter(|e| seen.sees_event(&e.name)).count(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(line: &str) -> Event {
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        Event::from_json(&obj, Strictness::Strict, &[]).unwrap().0
    }

    const OFFERED: &str = r#"{"event": "Offered", "OtherDN": "60972", "Index": 1}"#;
    const ALERTING: &str = r#"{"event": "Appearance", "Index": 1, "AppearanceState": "alerting", "AppearanceUri": "60972"}"#;

    fn golden() -> Vec<Event> {
        vec![ev(OFFERED), ev(ALERTING)]
    }

    #[test]
    fn each_edit_changes_exactly_what_it_names() {
        let absent = Edit::Absent(vec![ev(
            r#"{"event": "Appearance", "AppearanceState": "alerting"}"#,
        )]);
        assert_eq!(absent.apply(&golden()), vec![ev(OFFERED)]);

        let changed = Edit::Changed {
            golden: vec![ev(r#"{"event": "Offered"}"#)],
            without: vec![Attr::Index],
            set: BTreeMap::from([(Attr::OtherDn, Value::Dn("60970".into()))]),
        };
        assert_eq!(
            changed.apply(&golden()),
            vec![
                ev(r#"{"event": "Offered", "OtherDN": "60970"}"#),
                ev(ALERTING)
            ]
        );

        let held = r#"{"event": "Appearance", "Index": 1, "AppearanceState": "held"}"#;
        let instead = Edit::Instead {
            golden: vec![ev(r#"{"event": "Offered"}"#)],
            observed: vec![ev(held), ev(held)],
        };
        assert_eq!(
            instead.apply(&golden()),
            vec![ev(held), ev(held), ev(ALERTING)]
        );

        let extra = Edit::Extra {
            observed: vec![ev(held)],
            after: Some(vec![ev(r#"{"event": "Offered"}"#)]),
        };
        assert_eq!(
            extra.apply(&golden()),
            vec![ev(OFFERED), ev(held), ev(ALERTING)]
        );
        let at_end = Edit::Extra {
            observed: vec![ev(held)],
            after: None,
        };
        assert_eq!(at_end.apply(&golden())[2], ev(held));
        // A pattern that matches nothing changes nothing.
        let none = Edit::Absent(vec![ev(r#"{"event": "Offered", "Index": 2}"#)]);
        assert_eq!(none.apply(&golden()), golden());
    }

    fn raw(text: &str) -> Result<Deviation, InputError> {
        #[derive(serde::Deserialize)]
        struct P {
            deviation: Vec<toml::Spanned<RawDeviation>>,
        }
        let p: P = toml::from_str(text)
            .map_err(|e| InputError::new(Path::new("t"), None, e.to_string()))?;
        let d = p.deviation.into_iter().next().unwrap();
        let line = crate::input::line_of(text, d.span().start);
        d.into_inner().check(Path::new("t.toml"), text, line)
    }

    const BASE: &str = r#"
[[deviation]]
cases = ["inbound-alerting"]
stage = "alerting"
channels = ["sca.60970"]
reason = "no Call-Info"
"#;

    #[test]
    fn a_deviation_states_exactly_one_difference_in_a_known_form() {
        let d = raw(&format!(
            "{BASE}changed = {{ event = \"Offered\" }}\nwithout = [\"Index\"]\n"
        ))
        .unwrap();
        assert!(matches!(d.edit, Edit::Changed { .. }));
        assert_eq!(d.at.edit, 7);
        for (extra, want) in [
            ("", "exactly one difference (none given)"),
            (
                "absent = { event = \"Offered\" }\nextra = { event = \"Offered\" }\n",
                "(absent, extra given)",
            ),
            (
                "changed = { event = \"Offered\" }\n",
                "needs `without` or `set`",
            ),
            (
                "changed = { event = \"Offered\" }\nwithout = [\"index\"]\n",
                "unknown attribute \"index\"",
            ),
            ("absent = { event = \"Offerd\" }\n", "unknown event name"),
            (
                "absent = { event = \"Offered\" }\nafter = { event = \"Offered\" }\n",
                "`after` does not go with `absent`",
            ),
            ("instead_of = { event = \"Offered\" }\n", "needs `observed`"),
            ("absent = []\n", "names no event"),
            (
                "changed = { event = \"Offered\" }\nset = { Index = \"x\" }\n",
                "Index must be an integer",
            ),
        ] {
            let e = raw(&format!("{BASE}{extra}")).unwrap_err();
            assert!(e.message.contains(want), "{extra:?}: {e}");
            assert!(e.line.is_some(), "{e}");
        }
    }
}
