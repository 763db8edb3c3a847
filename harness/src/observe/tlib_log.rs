//! Genesys SIP Server / T-Server text logs as an event source.
//!
//! A logged event is a header line, `@HH:MM:SS.ffff [0] <version>
//! <function>: message EventName`, then one attribute a line (TAB,
//! `AttributeXxx`, TAB, value): strings and DNs in single quotes, ConnIDs as
//! bare hex, enumerations as numbers (or names), key-value lists such as
//! Extensions as `AttributeExtensions\t[24] 00 01 ..` followed by one
//! `\t\t'Key'\tvalue` line per entry. `distribute call/party event` (and
//! any EventCall*) is call monitoring; other events go to ThisDN's channel.
//!
//! The reader is lenient: what it does not know (trace lines, attributes
//! outside the model, garbled values) is counted and reported, never fatal.
//! Text without a single event header line is no such log at all
//! ([`read`] says so), not a log of nothing.

use std::collections::BTreeMap;

use crate::model::{
    Attr, CallState, CallType, Cause, Channel, Event, EventName, Kind, KnownEvent, Role, Value,
};
use crate::observation::Observation;

/// What the reader passed over.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Lines that are neither an event header nor one of its attributes.
    pub lines: usize,
    /// Attributes outside the model, by name, with how often.
    pub attributes: BTreeMap<String, usize>,
    /// Attribute values that could not be read, as `Name: value`.
    pub values: Vec<String>,
    /// Events without ThisDN (so with no channel) and not call monitoring.
    pub unrouted: usize,
}

impl Skipped {
    pub fn is_empty(&self) -> bool {
        *self == Skipped::default()
    }
}

/// One line for a console or a report note.
impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "skipped {} lines, {} unrouted events",
            self.lines, self.unrouted
        )?;
        if !self.attributes.is_empty() {
            let names: Vec<String> = self
                .attributes
                .iter()
                .map(|(name, n)| format!("{name} x{n}"))
                .collect();
            write!(f, "; attributes outside the model: {}", names.join(", "))?;
        }
        if !self.values.is_empty() {
            write!(f, "; unreadable values: {}", self.values.join(", "))?;
        }
        Ok(())
    }
}

/// Text in which no line is an event header: random bytes, an empty file,
/// some other log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a SIP Server/T-Server log: {} (an event header is `@HH:MM:SS.ffff ... message EventName`)",
    if *.lines == 0 { "it is empty".to_string() } else { format!("none of its {} lines is an event header", .lines) }
)]
pub struct NotALog {
    /// Its lines that are not blank.
    pub lines: usize,
}

/// Reads a whole log ([`parse`]), or says that the text is none.
pub fn read(text: &str) -> Result<(Vec<Observation>, Skipped), NotALog> {
    if !text.lines().any(|l| header(l).is_some()) {
        return Err(NotALog {
            lines: text.lines().filter(|l| !l.trim().is_empty()).count(),
        });
    }
    Ok(parse(text))
}

/// Reads every event of a log, in order (a log still being written may
/// hold none yet).
pub fn parse(text: &str) -> (Vec<Observation>, Skipped) {
    let mut skipped = Skipped::default();
    let mut out = Vec::new();
    let mut current: Option<(Event, bool, String)> = None;
    let mut in_extensions = false;
    let finish = |current: Option<(Event, bool, String)>,
                  out: &mut Vec<Observation>,
                  skipped: &mut Skipped| {
        let Some((event, monitoring, raw)) = current else {
            return;
        };
        let channel = if monitoring {
            Some(Channel::Monitoring)
        } else {
            match event.get(Attr::ThisDn) {
                Some(Value::Dn(dn)) => Some(Channel::Dn(dn.clone())),
                _ => None,
            }
        };
        match channel {
            Some(channel) => out.push(Observation {
                channel,
                event,
                raw,
                within: None,
                record: None,
            }),
            None => skipped.unrouted += 1,
        }
    };
    for line in text.lines() {
        if let Some((name, monitoring)) = header(line) {
            finish(current.take(), &mut out, &mut skipped);
            let name = KnownEvent::parse(&name)
                .map(EventName::Known)
                .unwrap_or(EventName::Other(name));
            let monitoring = monitoring || name.as_str().starts_with("EventCall");
            current = Some((Event::new(name), monitoring, line.to_string()));
            in_extensions = false;
            continue;
        }
        let Some((event, _, raw)) = current.as_mut() else {
            skipped.lines += usize::from(!line.trim().is_empty());
            continue;
        };
        if let Some(rest) = line.strip_prefix("\t\t") {
            // A key-value list entry: 'Key' TAB value.
            if in_extensions {
                let mut parts = rest.splitn(2, '\t');
                let key = unquote(parts.next().unwrap_or_default());
                let value = parts.next().unwrap_or_default().trim();
                put(event, &key, value, &mut skipped);
                raw.push('\n');
                raw.push_str(line);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix('\t') {
            let mut parts = rest.splitn(2, '\t');
            let name = parts.next().unwrap_or_default().trim();
            let value = parts.next().unwrap_or_default().trim();
            let Some(attr) = name.strip_prefix("Attribute") else {
                skipped.lines += 1;
                continue;
            };
            raw.push('\n');
            raw.push_str(line);
            in_extensions = attr == "Extensions";
            if !in_extensions {
                put(event, attr, value, &mut skipped);
            }
            continue;
        }
        // Anything else (trace lines, other log records) ends the event.
        finish(current.take(), &mut out, &mut skipped);
        skipped.lines += usize::from(!line.trim().is_empty());
    }
    finish(current, &mut out, &mut skipped);
    (out, skipped)
}

/// `@12:34:56.7890 [0] 8.1.101.57 distribute_event: message EventRinging`
/// -> the event name and whether it is call monitoring.
fn header(line: &str) -> Option<(String, bool)> {
    if !line.starts_with('@') {
        return None;
    }
    let (function, name) = line.rsplit_once(": message ")?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    Some((name.to_string(), function.contains("call/party event")))
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .unwrap_or(s)
        .to_string()
}

/// Log attribute names that differ from the model's.
fn attr_named(name: &str) -> Option<Attr> {
    match name {
        "ServiceID" => Some(Attr::ServiceId),
        "PartyState" => Some(Attr::State),
        other => Attr::parse(other),
    }
}

/// Sets one attribute from its log text, or counts why not.
fn put(event: &mut Event, name: &str, text: &str, skipped: &mut Skipped) {
    let Some(attr) = attr_named(name) else {
        *skipped.attributes.entry(name.to_string()).or_default() += 1;
        return;
    };
    match value(attr, text) {
        Some(v) => {
            event.attrs.insert(attr, v);
        }
        None => skipped.values.push(format!("{name}: {text}")),
    }
}

/// An attribute's value from its log text: a quoted string, a bare word, or
/// an enumeration's number (TCallState, TDNRole, TCallType, Cause of the
/// T-Library header).
fn value(attr: Attr, text: &str) -> Option<Value> {
    let word = unquote(text);
    let number: Option<i64> = word.parse().ok();
    let json = serde_json::Value::String(word.clone());
    match (attr.kind(), number) {
        (Kind::Role, Some(n)) => Role::ALL
            .get(usize::try_from(n).ok()?)
            .map(|r| Value::Role(*r)),
        (Kind::CallState, Some(n)) => Some(Value::CallState(match n {
            0 => CallState::Ok,
            1 => CallState::Transferred,
            2 => CallState::Conferenced,
            3 => CallState::GeneralError,
            31 => CallState::Bridged,
            50 => CallState::Held,
            _ => return None,
        })),
        (Kind::CallType, Some(n)) => CallType::ALL
            .get(usize::try_from(n).ok()?)
            .map(|t| Value::CallType(*t)),
        (Kind::Cause, Some(n)) => Some(Value::Cause(match n {
            1 => Cause::Acd,
            2 => Cause::Busy,
            3 => Cause::NoAnswer,
            4 => Cause::Reject,
            5 => Cause::Route,
            6 => Cause::Coverage,
            7 => Cause::ConverseOn,
            8 => Cause::Forward,
            9 => Cause::Redirect,
            10 => Cause::Transfer,
            11 => Cause::OneStepTransfer,
            12 => Cause::Conference,
            _ => return None,
        })),
        _ => Value::from_json(attr, &json).ok(),
    }
}

/// Writes events in the log format the reader reads: for constructed test
/// logs (never passed off as captured ones).
pub fn write(events: &[(Channel, Event)]) -> String {
    let mut out = String::new();
    for (i, (channel, event)) in events.iter().enumerate() {
        let function = match channel {
            Channel::Monitoring => "distribute call/party event",
            _ => "distribute_event",
        };
        let secs = i as u64;
        out.push_str(&format!(
            "@{:02}:{:02}:{:02}.{:04} [0] 8.1.101.57 {function}: message {}\n",
            12 + secs / 3600,
            secs / 60 % 60,
            secs % 60,
            i % 10_000,
            event.name
        ));
        out.push_str(&format!("\tAttributeEventSequenceNumber\t{:016x}\n", i + 1));
        let mut extensions = Vec::new();
        for (attr, value) in &event.attrs {
            if attr.is_extension() {
                extensions.push((attr, value));
                continue;
            }
            let text = match value {
                Value::Id(s) => s.clone(),
                Value::Int(n) => n.to_string(),
                Value::Role(r) => (Role::ALL.iter().position(|x| x == r).unwrap_or(0)).to_string(),
                other => format!("'{other}'"),
            };
            out.push_str(&format!("\tAttribute{}\t{text}\n", attr.as_str()));
        }
        if !extensions.is_empty() {
            out.push_str(&format!(
                "\tAttributeExtensions\t[{}] 00 01 00 00..\n",
                12 * extensions.len()
            ));
            for (attr, value) in extensions {
                out.push_str(&format!("\t\t'{}'\t{value}\n", attr.as_str()));
            }
        }
        out.push_str(&format!(
            "Trc 04542 {} sent to [628] (00000004 scacheck 127.0.0.1:4000)\n",
            event.name
        ));
    }
    out
}

/// The part of a growing log whose events are complete: whole lines, up to
/// the last line that is not an attribute line, and before it if that line
/// opens an event (its attributes may still be being written).
fn closed_part(text: &str) -> &str {
    let whole = text.rfind('\n').map_or("", |end| &text[..end + 1]);
    let mut end = 0;
    let mut at = 0;
    for line in whole.split_inclusive('\n') {
        if !line.starts_with('\t') {
            end = if header(line.trim_end()).is_some() {
                at
            } else {
                at + line.len()
            };
        }
        at += line.len();
    }
    &whole[..end]
}

/// Follows a log file a server writes as it runs, appending its events to
/// `log` as whole events appear; dropping it stops following.
pub struct LogFollower {
    task: tokio::task::AbortHandle,
    skipped: std::sync::Arc<std::sync::Mutex<Skipped>>,
}

impl Drop for LogFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How often a followed log is read again.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

impl LogFollower {
    /// Starts following `path` from its current end: what the server logged
    /// before the case is not the case's.
    pub fn start(path: std::path::PathBuf, log: super::EventLog) -> LogFollower {
        let skipped: std::sync::Arc<std::sync::Mutex<Skipped>> = Default::default();
        let counted = skipped.clone();
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncSeekExt};
            // Only what is appended from now on is read: a server log can
            // be large, and its past is not the case's.
            let mut file = None;
            let mut text = Vec::new();
            let mut delivered = 0;
            loop {
                if file.is_none() {
                    if let Ok(mut f) = tokio::fs::File::open(&path).await {
                        if f.seek(std::io::SeekFrom::End(0)).await.is_ok() {
                            file = Some(f);
                        }
                    }
                }
                if let Some(f) = file.as_mut() {
                    if f.read_to_end(&mut text).await.is_ok() {
                        // What the reader skips is counted, never fatal.
                        let (events, passed_over) =
                            parse(closed_part(&String::from_utf8_lossy(&text)));
                        *counted.lock().unwrap_or_else(|p| p.into_inner()) = passed_over;
                        for obs in events.into_iter().skip(delivered) {
                            delivered += 1;
                            log.push(obs);
                        }
                    }
                }
                tokio::time::sleep(FOLLOW_EVERY).await;
            }
        });
        LogFollower {
            task: task.abort_handle(),
            skipped,
        }
    }

    /// What the log's lines since the start held that is not an event.
    pub fn skipped(&self) -> Skipped {
        self.skipped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Constructed, not captured: the format of public log parsers
    /// (grep4error/logger, logbrowser), with an unknown attribute, a trace
    /// line, a garbled line and numeric enumerations.
    const LOG: &str = "\
@12:00:00.0001 [0] 8.1.101.57 distribute_event: message EventRinging
\tAttributeEventSequenceNumber\t0000000000000012
\tAttributeConnID\t006e025a6c4e1001
\tAttributeThisDN\t'60970'
\tAttributeThisDNRole\t2
\tAttributeOtherDN\t'60972'
\tAttributeOtherDNRole\t1
\tAttributeCallState\t'Covered'
\tAttributeCallType\t1
\tAttributeCustomerID\t'Resources'
\tAttributeExtensions\t[24] 00 01 01 00..
\t\t'AppearanceIndex'\t1
Trc 04542 EventRinging sent to [628] (00000004 agent 10.0.0.1:4000)
this line is garbage
@12:00:00.0002 [0] 8.1.101.57 distribute call/party event: message EventCallPartyAdded
\tAttributeConnID\t006e025a6c4e1001
\tAttributeDN\t'60970'
\tAttributePartyID\t2
\tAttributeState\t'Alerting'
@12:00:00.0003 [0] 8.1.101.57 distribute_event: message EventReleased
\tAttributeConnID\t006e025a6c4e1001
\tAttributeThisDN\t'60970'
\tAttributeCallState\t1
\tAttributeCause\t11
\tAttributeThisDNRole\t99
";

    #[test]
    fn reads_events_and_counts_what_it_skipped() {
        let (events, skipped) = parse(LOG);
        let lines: Vec<String> = events
            .iter()
            .map(|o| format!("{} {}", o.channel, o.event))
            .collect();
        assert_eq!(
            lines,
            vec![
                r#"60970 {"event": "EventRinging", "ConnID": "006e025a6c4e1001", "ThisDN": "60970", "ThisDNRole": "Destination", "OtherDN": "60972", "OtherDNRole": "Origination", "CallState": "Covered", "CallType": "Internal", "Extensions": {"AppearanceIndex": 1}}"#,
                r#"monitoring {"event": "EventCallPartyAdded", "ConnID": "006e025a6c4e1001", "DN": "60970", "PartyID": "2", "State": "Alerting"}"#,
                r#"60970 {"event": "EventReleased", "ConnID": "006e025a6c4e1001", "ThisDN": "60970", "CallState": "Transferred", "Cause": "1stepTransfer"}"#,
            ]
        );
        assert_eq!(skipped.lines, 2, "the trace line and the garbage");
        assert_eq!(
            skipped.attributes.keys().collect::<Vec<_>>(),
            vec!["CustomerID", "EventSequenceNumber"]
        );
        assert_eq!(skipped.values, vec!["ThisDNRole: 99".to_string()]);
    }

    #[test]
    fn what_it_writes_it_reads() {
        let (events, _) = parse(LOG);
        let pairs: Vec<(Channel, Event)> = events
            .iter()
            .map(|o| (o.channel.clone(), o.event.clone()))
            .collect();
        let (again, skipped) = parse(&write(&pairs));
        assert_eq!(
            again
                .iter()
                .map(|o| (o.channel.clone(), o.event.clone()))
                .collect::<Vec<_>>(),
            pairs
        );
        assert_eq!(skipped.lines, 3, "one trace line per event");
    }

    #[test]
    fn a_growing_log_gives_only_complete_events() {
        let done = "@1 x: message EventOffHook\n\tAttributeThisDN\t'60970'\nTrc 1\n";
        assert_eq!(closed_part(done), done);
        let open = format!("{done}@2 x: message EventOnHook\n\tAttributeThisDN\t'60970'\n");
        assert_eq!(closed_part(&open), done, "the last event may still grow");
        assert_eq!(
            closed_part(&format!("{done}Trc 2 partial")),
            done,
            "half a line waits"
        );
    }

    #[test]
    fn text_without_an_event_header_is_not_a_log() {
        assert_eq!(read("").unwrap_err(), NotALog { lines: 0 });
        assert_eq!(read("\n  \n").unwrap_err(), NotALog { lines: 0 });
        let noise = "\u{fffd}\u{fffd}PK\u{3}\u{4}\nTrc 04542 something\n@ but no message\n";
        let e = read(noise).unwrap_err();
        assert_eq!(e.lines, 3);
        assert!(
            e.to_string().starts_with(
                "not a SIP Server/T-Server log: none of its 3 lines is an event header"
            ),
            "{e}"
        );
        // One header is a log, even with no routable event in it.
        let (events, skipped) = read("@1 x: message EventRinging\n").unwrap();
        assert_eq!((events.len(), skipped.unrouted), (0, 1));
        assert_eq!(read(LOG).unwrap().0.len(), 3);
    }

    #[test]
    fn garbage_never_panics() {
        for text in [
            "",
            "@",
            "@ : message ",
            "\t\t'x'",
            "\tAttributeThisDN",
            "@x: message EventRinging\n\tAttributeThisDN\t'",
            "@x: message EventRinging\n\t\t\t\t",
        ] {
            let _ = parse(text);
        }
    }
}
