//! The leak check that follows every case's teardown: its line must be as
//! idle as it was found. It is judged like a stage, `leak-check`, whose
//! golden is empty on every channel it asserts:
//!
//! - `sca.<DN>` for each shared-line phone of the case: the appearances a
//!   fresh call-info SUBSCRIBE is told are busy (the first NOTIFY of a new
//!   subscription carries the line's full state);
//! - `server`, when the profile names a `[line_commands] state` command:
//!   what the server's own state still holds for the line, one JSON event
//!   per line of the command's output.
//!
//! So a leftover is an unexcused extra event (a fail), and a profile can
//! declare exactly one it knows of as an `extra` deviation of this stage
//! (an xfail), as for any other stage. Pure: the live probe is in
//! `run::leak`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::case::{Case, Stage};
use crate::golden::{Expectation, GoldenStage};
use crate::line::Identities;
use crate::model::{Attr, Channel, Event, KnownEvent, Strictness, Value};
use crate::observation::Observation;
use crate::sip::headers::{ApState, AppearanceIndex};
use crate::sip::record::{Direction, Record};
use crate::sip::Message;
use crate::topology::Topology;

/// The stage every case ends with.
pub const STAGE: &str = "leak-check";
/// The channel of what the server's own state shows.
pub const SERVER: &str = "server";

/// The channels the leak check asserts for a case: its shared-line phones'
/// wire channels, and the server's state when it can be read.
pub fn channels(case: &Case, topology: &Topology, server_state: bool) -> Vec<Channel> {
    let mut out: Vec<Channel> = topology
        .members_among(&case.parties)
        .into_iter()
        .map(Channel::Wire)
        .collect();
    if server_state {
        out.push(Channel::Dn(SERVER.into()));
    }
    out
}

/// The leak check's golden: nothing left on any of its channels.
pub fn golden(case: &Case, topology: &Topology, server_state: bool) -> GoldenStage {
    GoldenStage {
        dir: PathBuf::from(format!("(the leak check after {})", case.id)),
        channels: channels(case, topology, server_state)
            .into_iter()
            .map(|c| (c, Expectation::Events(Vec::new())))
            .collect(),
    }
}

/// A case with its leak check as its last stage, for validating a
/// profile's deviations of it like any other stage's.
pub fn with_stage(
    case: &Case,
    topology: &Topology,
    golden: &[GoldenStage],
    server_state: bool,
) -> (Case, Vec<GoldenStage>) {
    let mut case = case.clone();
    case.stages.push(Stage {
        name: STAGE.into(),
        covers: "every case: the line is left idle".into(),
        golden: String::new(),
        steps: Vec::new(),
        together: false,
        stagger: None,
        line: 0,
    });
    let mut stages = golden.to_vec();
    stages.push(self::golden(&case, topology, server_state));
    (case, stages)
}

/// The busy appearances a call-info NOTIFY tells `dn`, as wire events
/// (AppearanceUri in DNs), or why it cannot be read.
pub fn busy(
    dn: &str,
    notify: &Message,
    raw: &str,
    dn_of_user: &BTreeMap<String, String>,
) -> Result<Vec<Observation>, String> {
    let told = crate::ua::reading::call_info(notify)?;
    let mut out = Vec::new();
    for ap in told {
        let Some(state) = ap.state.filter(|s| *s != ApState::Idle) else {
            continue;
        };
        let index = match ap.index {
            AppearanceIndex::Index(i) => Some(Value::Int(i.into())),
            AppearanceIndex::All => None,
        };
        let uri = ap
            .uri
            .as_deref()
            .and_then(crate::sip::NameAddr::parse)
            .and_then(|u| u.user().map(str::to_string))
            .map(|u| Value::Dn(dn_of_user.get(&u).cloned().unwrap_or(u)));
        out.push(Observation {
            channel: Channel::Wire(dn.to_string()),
            event: Event::new(KnownEvent::Appearance)
                .with_opt(Attr::Index, index)
                .with(Attr::AppearanceState, Value::ApState(state))
                .with_opt(Attr::AppearanceUri, uri),
            raw: raw.to_string(),
            within: None,
            record: None,
        });
    }
    Ok(out)
}

/// The Call-ID of the leak check's probe, if `rec` is one `dn` sent: a
/// fresh call-info SUBSCRIBE (no To-tag, not an unsubscribe).
pub fn probe_sent(rec: &Record, dn: &str) -> Option<String> {
    if rec.agent != dn || rec.direction != Direction::Sent || !rec.raw.starts_with(b"SUBSCRIBE ") {
        return None;
    }
    let m = rec.message().ok()?;
    let fresh = m.to_tag().is_none()
        && m.header("Event").is_some_and(|e| e.trim() == "call-info")
        && m.header("Expires").is_none_or(|e| e.trim() != "0");
    fresh.then(|| m.call_id().to_string())
}

/// `rec` parsed, if it is a NOTIFY `dn` received in the probe
/// subscription `call_id`. Only a record that can be one is parsed: a
/// server may send many others meanwhile.
pub fn probe_notify(rec: &Record, dn: &str, call_id: &str) -> Option<Message> {
    let candidate = rec.agent == dn
        && rec.direction == Direction::Received
        && rec.raw.starts_with(b"NOTIFY ")
        && rec
            .raw
            .windows(call_id.len())
            .any(|w| w == call_id.as_bytes());
    let msg = candidate.then(|| rec.message().ok().cloned()).flatten()?;
    (msg.call_id() == call_id).then_some(msg)
}

/// What a `[line_commands] state` command printed, as events on the
/// `server` channel: one JSON object per non-empty line, in the event
/// syntax of the golden files, read leniently (an event name scacheck does
/// not know, such as `Subscription`, is kept), DN-valued attributes in SIP
/// users translated to DNs. A line that is not such an object is an error
/// naming it: a state that cannot be read must not pass as idle.
pub fn server_state(
    output: &str,
    line: &Identities,
    topology: &Topology,
) -> Result<Vec<Observation>, String> {
    let rename = line.renamer(topology);
    let mut out = Vec::new();
    for (i, text) in output.lines().enumerate() {
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let bad = |why: String| {
            format!(
                "line {} of the state command's output ({text:?}): {why}",
                i + 1
            )
        };
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let obj = json
            .as_object()
            .ok_or_else(|| bad("not a JSON object".into()))?;
        let (mut event, _) = Event::from_json(obj, Strictness::Lenient, &[]).map_err(bad)?;
        rename(&mut event);
        out.push(Observation {
            channel: Channel::Dn(SERVER.into()),
            event,
            raw: text.to_string(),
            within: None,
            record: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line::line3;

    #[test]
    fn a_fresh_notify_tells_only_busy_appearances() {
        let raw = "NOTIFY sip:60970-3@127.0.0.1:6000 SIP/2.0\r\n\
            Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1\r\n\
            From: <sip:60970-3@sca.test>;tag=a\r\nTo: <sip:60970-3@sca.test>;tag=b\r\n\
            Call-ID: probe\r\nCSeq: 1 NOTIFY\r\nEvent: call-info\r\n\
            Subscription-State: active;expires=3600\r\n\
            Call-Info: <sip:sca.test>;appearance-index=1;appearance-state=active;appearance-uri=\"<sip:60972-3@sca.test>\", \
            <sip:sca.test>;appearance-index=2;appearance-state=idle\r\n\
            Content-Length: 0\r\n\r\n";
        let msg = Message::parse(raw.as_bytes().to_vec()).unwrap();
        let dns = line3().reported_dn(&Topology::reference());
        let got = busy("60970", &msg, raw, &dns).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].channel, Channel::parse("sca.60970"));
        assert_eq!(
            got[0].event.to_json_line(),
            r#"{"event": "Appearance", "Index": 1, "AppearanceState": "active", "AppearanceUri": "60972"}"#
        );
    }

    #[test]
    fn server_state_lines_are_events_and_garbage_is_an_error() {
        let t = Topology::reference();
        let out = "\n{\"event\": \"Appearance\", \"Index\": 1, \"AppearanceState\": \"seized\", \"AppearanceUri\": \"60970-3\"}\n\
                   {\"event\": \"Subscription\", \"Package\": \"call-info\"}\n";
        let got = server_state(out, &line3(), &t).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].channel, Channel::Dn(SERVER.into()));
        assert_eq!(
            got[0].event.get(Attr::AppearanceUri),
            Some(&Value::Dn("60970".into()))
        );
        assert_eq!(got[1].event.name.to_string(), "Subscription");
        assert!(server_state("", &line3(), &t).unwrap().is_empty());
        let e = server_state("appearance 1 active", &line3(), &t).unwrap_err();
        assert!(e.contains("line 1") && e.contains("not JSON"), "{e}");
    }
}
