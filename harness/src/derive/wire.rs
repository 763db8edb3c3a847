//! The SCA wire layer derived from SIP: what each shared-line phone was told
//! on the wire, as events of the BroadWorks model (offers, cancels,
//! appearance states, seizes, subscriptions). Pure: it reads recorded
//! messages in recording order and keeps per-phone state, so the same
//! capture always derives the same events. Server input may be anything;
//! what cannot be read derives nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{message_of, on_channel, provenance, Found};
use crate::model::{ApState, Attr, Channel, Event, KnownEvent, Value};
use crate::observation::Observation;
use crate::sip::headers::{
    first_index, AppearanceIndex, EventHeader, Reason, SubState, SubscriptionState,
};
use crate::sip::record::{Direction, Record};
use crate::sip::{split_list, Message, NameAddr};

/// An appearance as the phone last heard it: its state and the user part
/// of its appearance-uri (the other party).
type Line = (ApState, Option<String>);

const IDLE: Line = (ApState::Idle, None);

/// Derives wire-layer events for the members of one shared line.
#[derive(Debug)]
pub struct WireDeriver {
    phones: HashMap<String, Phone>,
}

impl WireDeriver {
    /// `members`: DNs of the shared-line phones; only their records count.
    pub fn new(members: &[String]) -> WireDeriver {
        WireDeriver {
            phones: members
                .iter()
                .map(|dn| (dn.clone(), Phone::default()))
                .collect(),
        }
    }

    /// Takes one record (in recording order) and returns the wire events it
    /// causes, each on `Channel::Wire(record.agent)`.
    pub fn observe(&mut self, rec: &Record) -> Vec<Observation> {
        let Some(phone) = self.phones.get_mut(&rec.agent) else {
            return Vec::new();
        };
        let Some(msg) = message_of(rec) else {
            return Vec::new();
        };
        let found = match (rec.direction, msg.method().as_deref()) {
            (Direction::Sent, Some("SUBSCRIBE")) => {
                phone.subscribe_sent(msg);
                Vec::new()
            }
            (Direction::Received, Some("INVITE")) => phone.invite(msg),
            (Direction::Received, Some("CANCEL")) => phone.cancel(msg),
            (Direction::Received, Some("NOTIFY")) => phone.notify(msg),
            (Direction::Received, None) => phone.response(msg),
            _ => Vec::new(),
        };
        on_channel(&Channel::Wire(rec.agent.clone()), &sequence(msg), found)
    }
}

/// The sequence a message's wire events are ordered within: its SIP
/// dialog, and in a subscription one of the dialog's two streams, the
/// server's NOTIFYs or the answers to the phone's SUBSCRIBEs, because a
/// NOTIFY may reach the subscriber before the 2xx to the SUBSCRIBE that
/// caused it (RFC 6665 4.1.2.4: Kamailio over TCP sends the answer on the
/// phone's connection and the NOTIFY on another).
fn sequence(msg: &Message) -> String {
    let call_id = msg.call_id();
    match (msg.method().as_deref(), msg.cseq()) {
        (Some("NOTIFY"), _) => format!("{call_id} NOTIFY"),
        (None, Some((_, "SUBSCRIBE"))) => format!("{call_id} SUBSCRIBE answers"),
        _ => call_id.to_string(),
    }
}

/// What one phone has been told so far.
#[derive(Debug, Default)]
struct Phone {
    /// Non-idle appearances only: an absent index is idle.
    lines: BTreeMap<u32, Line>,
    /// line-seize dialogs the phone opened: Call-ID -> requested index.
    seizes: HashMap<String, Option<u32>>,
    /// call-info dialogs the phone opened: Call-ID -> CSeq -> requested
    /// Expires, because a 2xx may leave Expires out.
    subscriptions: HashMap<String, HashMap<u32, Option<u32>>>,
    /// Facts already reported (event, Call-ID, discriminator), so that
    /// retransmissions add nothing.
    seen: HashSet<(KnownEvent, String, String)>,
    /// The highest CSeq of the call-info NOTIFYs read in each dialog: one
    /// below it came out of order (sent again after a loss, overtaken by a
    /// later one) and tells the phone nothing (it answers 500, RFC 3261
    /// 12.2.2).
    notified: HashMap<String, u32>,
}

impl Phone {
    /// True the first time a fact is seen.
    fn first(&mut self, event: KnownEvent, call_id: &str, part: impl ToString) -> bool {
        self.seen
            .insert((event, call_id.to_string(), part.to_string()))
    }

    fn subscribe_sent(&mut self, msg: &Message) {
        let call_id = msg.call_id().to_string();
        match package(msg).as_deref() {
            // Refreshes and the unseize reuse the Call-ID; the first request
            // is the one that asked for the appearance.
            Some("line-seize") => {
                self.seizes
                    .entry(call_id)
                    .or_insert_with(|| first_index(msg));
            }
            Some("call-info") => {
                let Some((cseq, _)) = msg.cseq() else { return };
                let expires = msg.header("Expires").and_then(|v| v.trim().parse().ok());
                self.subscriptions
                    .entry(call_id)
                    .or_default()
                    .insert(cseq, expires);
            }
            _ => {}
        }
    }

    /// Only an initial INVITE (no To-tag) offers a call; a re-INVITE does not.
    fn invite(&mut self, msg: &Message) -> Vec<Found> {
        let branch = msg.via_branch().unwrap_or_default();
        if msg.to_tag().is_some() || !self.first(KnownEvent::Offered, msg.call_id(), branch) {
            return Vec::new();
        }
        let other = msg.from().and_then(|f| f.user().map(str::to_string));
        let event = Event::new(KnownEvent::Offered)
            .with_opt(Attr::Index, first_index(msg).map(int))
            .with_opt(Attr::OtherDn, other.map(Value::Dn));
        vec![(event, provenance(msg, "Call-Info"))]
    }

    fn cancel(&mut self, msg: &Message) -> Vec<Found> {
        if !self.first(KnownEvent::Cancelled, msg.call_id(), "") {
            return Vec::new();
        }
        let event = Event::new(KnownEvent::Cancelled)
            .with_opt(Attr::Reason, reason_text(msg).map(Value::Text));
        vec![(event, provenance(msg, "Reason"))]
    }

    fn notify(&mut self, msg: &Message) -> Vec<Found> {
        let (mut found, ended) = match package(msg).as_deref() {
            Some("call-info") => (self.call_info(msg), KnownEvent::SubscriptionEnded),
            Some("line-seize") => (Vec::new(), KnownEvent::SeizeEnded),
            _ => return Vec::new(),
        };
        found.extend(self.terminated(msg, ended));
        found
    }

    /// Compares the appearances this NOTIFY tells with the last known ones
    /// and reports only what changed, so a state told twice counts once.
    fn call_info(&mut self, msg: &Message) -> Vec<Found> {
        let cseq = msg.cseq().map_or(0, |(n, _)| n);
        let highest = self.notified.entry(msg.call_id().to_string()).or_default();
        if cseq != 0 && cseq < *highest {
            return Vec::new();
        }
        *highest = cseq.max(*highest);
        let Ok(told) = msg.appearances() else {
            return Vec::new();
        };
        let mut listed = BTreeMap::new();
        let mut others = None;
        for ap in told {
            // An element without a state says nothing we can compare.
            let Some(state) = ap.state else {
                continue;
            };
            let line = (state, ap.uri.as_deref().and_then(uri_user));
            match ap.index {
                AppearanceIndex::Index(i) => {
                    listed.insert(i, line);
                }
                AppearanceIndex::All => others = Some(line),
            }
        }
        let indices: BTreeSet<u32> = self.lines.keys().chain(listed.keys()).copied().collect();
        let raw = provenance(msg, "Call-Info");
        let mut found = Vec::new();
        for i in indices {
            let old = self.lines.remove(&i).unwrap_or(IDLE);
            let new = listed
                .get(&i)
                .or(others.as_ref())
                .cloned()
                .unwrap_or_else(|| old.clone());
            let busy = new.0 != ApState::Idle;
            if new.0 != old.0 || (busy && new.1 != old.1) {
                let uri = new.1.clone().filter(|_| busy).map(Value::Dn);
                let event = Event::new(KnownEvent::Appearance)
                    .with(Attr::Index, int(i))
                    .with(Attr::AppearanceState, Value::ApState(new.0))
                    .with_opt(Attr::AppearanceUri, uri);
                found.push((event, raw.clone()));
            }
            if busy {
                self.lines.insert(i, new);
            }
        }
        found
    }

    /// The end of a subscription, reported once per NOTIFY transaction.
    fn terminated(&mut self, msg: &Message, ended: KnownEvent) -> Vec<Found> {
        let Some(state) = msg
            .header("Subscription-State")
            .and_then(SubscriptionState::parse)
        else {
            return Vec::new();
        };
        let cseq = msg.cseq().map_or(0, |(n, _)| n);
        if state.state != SubState::Terminated || !self.first(ended, msg.call_id(), cseq) {
            return Vec::new();
        }
        let event = Event::new(ended).with_opt(Attr::Reason, state.reason.map(Value::Text));
        vec![(event, provenance(msg, "Subscription-State"))]
    }

    fn response(&mut self, msg: &Message) -> Vec<Found> {
        let (Some(status), Some((cseq, method))) = (msg.status(), msg.cseq()) else {
            return Vec::new();
        };
        // A digest challenge is answered by the same request again in a
        // new transaction; it refuses nothing (issue 14: challenges are not
        // events).
        if crate::sip::auth::Kind::of_status(status).is_some() {
            return Vec::new();
        }
        let mut found = Vec::new();
        match method {
            "SUBSCRIBE" => {
                found.extend(self.seize_outcome(msg, status, cseq));
                found.extend(self.subscribed(msg, status, cseq));
            }
            // A transaction has one final answer: after its 2xx, a failure
            // (to a retransmission the server handled again) refuses
            // nothing.
            "INVITE" if (200..300).contains(&status) => {
                self.first(KnownEvent::InviteRefused, msg.call_id(), cseq);
            }
            // 487 only confirms the phone's own CANCEL.
            "INVITE"
                if status >= 300
                    && status != 487
                    && self.first(KnownEvent::InviteRefused, msg.call_id(), cseq) =>
            {
                let event = Event::new(KnownEvent::InviteRefused).with(Attr::Status, int(status));
                found.push((event, provenance(msg, "CSeq")));
            }
            _ => {}
        }
        found
    }

    fn seize_outcome(&mut self, msg: &Message, status: u16, cseq: u32) -> Option<Found> {
        let call_id = msg.call_id();
        let index = *self.seizes.get(call_id)?;
        let event = match status {
            // Later 2xx on the dialog answer refreshes and the unseize.
            200..=299 if self.first(KnownEvent::SeizeGranted, call_id, "") => {
                Event::new(KnownEvent::SeizeGranted).with_opt(Attr::Index, index.map(int))
            }
            300.. if self.first(KnownEvent::SeizeRefused, call_id, cseq) => {
                Event::new(KnownEvent::SeizeRefused).with(Attr::Status, int(status))
            }
            _ => return None,
        };
        Some((event, provenance(msg, "CSeq")))
    }

    fn subscribed(&mut self, msg: &Message, status: u16, cseq: u32) -> Option<Found> {
        let call_id = msg.call_id();
        let asked = *self.subscriptions.get(call_id)?.get(&cseq).unwrap_or(&None);
        if !(200..=299).contains(&status) || !self.first(KnownEvent::Subscribed, call_id, cseq) {
            return None;
        }
        let expires = msg
            .header("Expires")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .or(asked);
        let event = Event::new(KnownEvent::Subscribed).with_opt(Attr::Expires, expires.map(int));
        Some((event, provenance(msg, "CSeq")))
    }
}

fn int(n: impl Into<i64>) -> Value {
    Value::Int(n.into())
}

fn package(msg: &Message) -> Option<String> {
    Some(EventHeader::parse(msg.header("Event")?)?.package)
}

/// The user part of an appearance-uri, which may be a name-addr or a bare
/// addr-spec.
fn uri_user(value: &str) -> Option<String> {
    NameAddr::parse(value)?.user().map(str::to_string)
}

/// The first `text` of the Reason values that can be read (one header may
/// list several); an unreadable value gives none.
fn reason_text(msg: &Message) -> Option<String> {
    msg.headers("Reason")
        .flat_map(split_list)
        .find_map(|r| Reason::parse(&r)?.text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::build::Builder;

    const PHONE: &str = "60970";
    const TARGET: &str = "<sip:sca.test>";

    fn deriver() -> WireDeriver {
        WireDeriver::new(&[PHONE.to_string(), "60971".to_string()])
    }

    use crate::derive::test_record as record;

    /// A request in dialog `call_id`; `to_tag` empty for an initial request.
    fn request(method: &str, call_id: &str, cseq: u32, to_tag: &str) -> Builder {
        let to = if to_tag.is_empty() {
            format!("<sip:{PHONE}@sca.test>")
        } else {
            format!("<sip:{PHONE}@sca.test>;tag={to_tag}")
        };
        Builder::request(method, &format!("sip:{PHONE}@127.0.0.1:6000"))
            .header(
                "Via",
                &format!("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{call_id}{cseq}"),
            )
            .header("From", "\"Bob\" <sip:60972@sca.test>;tag=srv")
            .header("To", &to)
            .header("Call-ID", call_id)
            .header("CSeq", &format!("{cseq} {method}"))
    }

    fn notify(package: &str, cseq: u32, sub_state: &str, call_info: &[&str]) -> Vec<u8> {
        call_info
            .iter()
            .fold(
                request("NOTIFY", &format!("{package}-dlg"), cseq, "p")
                    .header("Event", package)
                    .header("Subscription-State", sub_state),
                |b, v| b.header("Call-Info", v),
            )
            .build()
    }

    fn subscribe(package: &str, call_id: &str, cseq: u32, extra: &[(&str, &str)]) -> Message {
        let b = request("SUBSCRIBE", call_id, cseq, "").header("Event", package);
        let b = extra.iter().fold(b, |b, (k, v)| b.header(k, v));
        Message::parse(b.build()).unwrap()
    }

    fn response(req: &Message, code: u16, extra: &[(&str, &str)]) -> Vec<u8> {
        let b = Builder::response_to(req, code, Some("srv"));
        extra.iter().fold(b, |b, (k, v)| b.header(k, v)).build()
    }

    /// Feeds the phone's records and returns the events as golden lines.
    fn feed(d: &mut WireDeriver, records: Vec<(Direction, Vec<u8>)>) -> Vec<String> {
        records
            .into_iter()
            .flat_map(|(dir, raw)| d.observe(&record(PHONE, dir, raw)))
            .map(|o| o.event.to_json_line())
            .collect()
    }

    fn rx(raw: Vec<u8>) -> (Direction, Vec<u8>) {
        (Direction::Received, raw)
    }

    fn tx(msg: &Message) -> (Direction, Vec<u8>) {
        (Direction::Sent, msg.raw().to_vec())
    }

    fn ap(index: &str, state: &str) -> String {
        format!("{TARGET};appearance-index={index};appearance-state={state}")
    }

    fn ap_uri(index: u32, state: &str, uri: &str) -> String {
        format!(
            "{};appearance-uri={}",
            ap(&index.to_string(), state),
            crate::sip::quote(uri)
        )
    }

    #[test]
    fn offer_reports_index_and_caller_once_per_transaction() {
        let invite = request("INVITE", "c1", 1, "")
            .header("Call-Info", &format!("{TARGET};appearance-index=2"))
            .build();
        let mut d = deriver();
        let obs = d.observe(&record(PHONE, Direction::Received, invite.clone()));
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0].channel, Channel::Wire(PHONE.into()));
        assert_eq!(
            obs[0].event.to_json_line(),
            r#"{"event": "Offered", "OtherDN": "60972", "Index": 2}"#
        );
        assert_eq!(
            obs[0].raw,
            "INVITE sip:60970@127.0.0.1:6000 SIP/2.0 | Call-Info: <sip:sca.test>;appearance-index=2"
        );
        // A retransmission is the same offer.
        assert!(feed(&mut d, vec![rx(invite)]).is_empty());
    }

    /// Each event names the sequence the diff orders it within: its call,
    /// or its subscription's NOTIFYs, or that subscription's SUBSCRIBE
    /// answers.
    #[test]
    fn each_event_names_its_dialog_and_a_subscriptions_stream() {
        let mut d = deriver();
        let sub = subscribe("call-info", "ci", 1, &[("Expires", "3600")]);
        let invite = request("INVITE", "c1", 1, "").build();
        let within: Vec<Option<String>> = [
            tx(&sub),
            rx(response(&sub, 202, &[])),
            rx(notify("call-info", 1, "active", &[&ap("1", "alerting")])),
            rx(invite),
        ]
        .into_iter()
        .flat_map(|(dir, raw)| d.observe(&record(PHONE, dir, raw)))
        .map(|o| o.within)
        .collect();
        let within: Vec<Option<&str>> = within.iter().map(Option::as_deref).collect();
        assert_eq!(
            within,
            [
                Some("ci SUBSCRIBE answers"),
                Some("call-info-dlg NOTIFY"),
                Some("c1")
            ]
        );
    }

    #[test]
    fn offer_without_a_numeric_index_omits_it_and_reinvite_is_no_offer() {
        let star = request("INVITE", "c2", 1, "")
            .header("Call-Info", &format!("{TARGET};appearance-index=*"))
            .build();
        let bare = request("INVITE", "c3", 1, "").build();
        let reinvite = request("INVITE", "c3", 2, "x").build();
        let sent = request("INVITE", "c4", 1, "").build();
        let mut d = deriver();
        assert_eq!(
            feed(
                &mut d,
                vec![rx(star), rx(bare), rx(reinvite), (Direction::Sent, sent)]
            ),
            vec![
                r#"{"event": "Offered", "OtherDN": "60972"}"#,
                r#"{"event": "Offered", "OtherDN": "60972"}"#,
            ]
        );
    }

    #[test]
    fn cancel_reports_reason_text_once_per_call() {
        let elsewhere = request("CANCEL", "c1", 1, "")
            .header("Reason", r#"SIP;cause=200;text="Call completed elsewhere""#)
            .build();
        let plain = request("CANCEL", "c2", 1, "").build();
        let no_text = request("CANCEL", "c3", 1, "")
            .header("Reason", "SIP;cause=487")
            .build();
        let mut d = deriver();
        assert_eq!(
            feed(
                &mut d,
                vec![rx(elsewhere.clone()), rx(elsewhere), rx(plain), rx(no_text)]
            ),
            vec![
                r#"{"event": "Cancelled", "Reason": "Call completed elsewhere"}"#,
                r#"{"event": "Cancelled"}"#,
                r#"{"event": "Cancelled"}"#,
            ]
        );
    }

    /// What was observed is a CANCEL: a Reason that cannot be read leaves
    /// only the Reason out, never the event, and is never half read (an
    /// unterminated text is no text).
    #[test]
    fn cancel_with_an_unreadable_reason_is_cancelled_without_one() {
        let unreadable = [
            r#"SIP;cause=200;text="Call completed elsewhere"#,
            r#"SIP;cause=200;text="Call completed elsewhere\""#,
            "SIP;cause=200;text=elsewhere",
            r#"SIP;cause=twohundred;text="Call completed elsewhere""#,
            r#";text="Call completed elsewhere""#,
        ];
        let mut d = deriver();
        let cancels = unreadable
            .iter()
            .enumerate()
            .map(|(i, reason)| {
                rx(request("CANCEL", &format!("c{i}"), 1, "")
                    .header("Reason", reason)
                    .build())
            })
            .collect();
        assert_eq!(
            feed(&mut d, cancels),
            vec![r#"{"event": "Cancelled"}"#; unreadable.len()]
        );
        // Of several reasons, the first readable one's text.
        let second = request("CANCEL", "c9", 1, "")
            .header("Reason", "SIP;text=broken")
            .header("Reason", r#"SIP;cause=200;text="Call completed elsewhere""#)
            .build();
        assert_eq!(
            feed(&mut d, vec![rx(second)]),
            vec![r#"{"event": "Cancelled", "Reason": "Call completed elsewhere"}"#]
        );
    }

    #[test]
    fn call_info_told_twice_counts_once() {
        let alerting = notify(
            "call-info",
            1,
            "active;expires=3600",
            &[&ap_uri(1, "alerting", r#""Bob" <sip:60972@sca.test>"#)],
        );
        let mut d = deriver();
        let obs = d.observe(&record(PHONE, Direction::Received, alerting.clone()));
        assert_eq!(obs.len(), 1);
        assert_eq!(
            obs[0].event.to_json_line(),
            r#"{"event": "Appearance", "Index": 1, "AppearanceState": "alerting", "AppearanceUri": "60972"}"#
        );
        assert!(obs[0].raw.starts_with("NOTIFY sip:60970@127.0.0.1:6000 SIP/2.0 | Call-Info: <sip:sca.test>;appearance-index=1"));
        assert!(feed(&mut d, vec![rx(alerting)]).is_empty());
    }

    #[test]
    fn star_sets_every_unlisted_index() {
        let mut d = deriver();
        let two = notify(
            "call-info",
            1,
            "active",
            &[&ap("1", "active"), &ap("2", "held"), &ap("*", "idle")],
        );
        // Index 1 is still listed, 2 falls under `*`, 3 was never busy.
        let one = notify(
            "call-info",
            2,
            "active",
            &[&ap("1", "active"), &ap("*", "idle")],
        );
        assert_eq!(
            feed(&mut d, vec![rx(two), rx(one)]),
            vec![
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "active"}"#,
                r#"{"event": "Appearance", "Index": 2, "AppearanceState": "held"}"#,
                r#"{"event": "Appearance", "Index": 2, "AppearanceState": "idle"}"#,
            ]
        );
    }

    #[test]
    fn without_star_unlisted_indices_keep_their_state() {
        let mut d = deriver();
        let both = notify(
            "call-info",
            1,
            "active",
            &[&ap("1", "active"), &ap("2", "held")],
        );
        let only_two = notify("call-info", 2, "active", &[&ap("2", "active")]);
        let idle_one = notify("call-info", 3, "active", &[&ap("1", "idle")]);
        assert_eq!(
            feed(&mut d, vec![rx(both), rx(only_two), rx(idle_one)]),
            vec![
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "active"}"#,
                r#"{"event": "Appearance", "Index": 2, "AppearanceState": "held"}"#,
                r#"{"event": "Appearance", "Index": 2, "AppearanceState": "active"}"#,
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "idle"}"#,
            ]
        );
    }

    #[test]
    fn changes_come_out_in_index_order() {
        let mut d = deriver();
        let unordered = notify(
            "call-info",
            1,
            "active",
            &[&ap("3", "seized"), &ap("1", "alerting")],
        );
        assert_eq!(
            feed(&mut d, vec![rx(unordered)]),
            vec![
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "alerting"}"#,
                r#"{"event": "Appearance", "Index": 3, "AppearanceState": "seized"}"#,
            ]
        );
    }

    /// A NOTIFY sent again after a loss may arrive after a later one: its
    /// lower CSeq says it is out of order, and it changes nothing.
    #[test]
    fn a_notify_overtaken_by_a_later_one_tells_nothing() {
        let mut d = deriver();
        let told = |cseq, state: &str| {
            notify(
                "call-info",
                cseq,
                "active",
                &[&ap_uri(1, state, "<sip:60972@sca.test>")],
            )
        };
        assert_eq!(
            feed(&mut d, vec![rx(told(3, "active")), rx(told(2, "alerting"))]),
            vec![
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "active", "AppearanceUri": "60972"}"#,
            ]
        );
    }

    #[test]
    fn appearance_uri_forms_give_the_user_and_a_new_user_is_a_change() {
        let mut d = deriver();
        let told =
            |cseq, uri: &str| notify("call-info", cseq, "active", &[&ap_uri(1, "active", uri)]);
        assert_eq!(
            feed(
                &mut d,
                vec![
                    rx(told(1, r#""Bob" <sip:60972@sca.test>"#)),
                    rx(told(2, "<sip:60972@sca.test>")),
                    rx(told(3, "sip:60972@h")),
                    rx(told(4, "<sip:60973@sca.test;user=phone>")),
                    rx(told(5, "not a uri <")),
                ]
            ),
            vec![
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "active", "AppearanceUri": "60972"}"#,
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "active", "AppearanceUri": "60973"}"#,
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "active"}"#,
            ]
        );
    }

    #[test]
    fn idle_carries_no_uri_and_a_stateless_element_says_nothing() {
        let mut d = deriver();
        let busy = notify(
            "call-info",
            1,
            "active",
            &[&ap_uri(1, "held", "<sip:60972@h>")],
        );
        let idle = notify(
            "call-info",
            2,
            "active",
            &[&ap_uri(1, "idle", "<sip:60972@h>")],
        );
        let stateless = notify(
            "call-info",
            3,
            "active",
            &[&format!("{TARGET};appearance-index=3")],
        );
        assert_eq!(
            feed(&mut d, vec![rx(busy), rx(idle), rx(stateless)]),
            vec![
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "held", "AppearanceUri": "60972"}"#,
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "idle"}"#,
            ]
        );
    }

    /// A state outside the vocabulary makes the NOTIFY unreadable (the
    /// phone reports it): it is not skipped, which would leave its index to
    /// `*` and read it as idle.
    #[test]
    fn an_unknown_state_is_never_read_as_idle() {
        let mut d = deriver();
        let busy = notify("call-info", 1, "active", &[&ap("1", "active")]);
        let odd = notify(
            "call-info",
            2,
            "active",
            &[&ap("1", "ringing"), &ap("*", "idle")],
        );
        let idle = notify("call-info", 3, "active", &[&ap("*", "idle")]);
        assert_eq!(
            feed(&mut d, vec![rx(busy), rx(odd), rx(idle)]),
            vec![
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "active"}"#,
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "idle"}"#,
            ]
        );
    }

    #[test]
    fn terminated_call_info_gives_idle_then_subscription_ended() {
        let mut d = deriver();
        let busy = notify("call-info", 1, "active", &[&ap("1", "active")]);
        let end = notify(
            "call-info",
            2,
            "terminated;reason=timeout",
            &[&ap("*", "idle")],
        );
        assert_eq!(
            feed(&mut d, vec![rx(busy), rx(end.clone()), rx(end)]),
            vec![
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "active"}"#,
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "idle"}"#,
                r#"{"event": "SubscriptionEnded", "Reason": "timeout"}"#,
            ]
        );
    }

    #[test]
    fn unreadable_call_info_gives_no_appearances_but_still_ends() {
        let mut d = deriver();
        let busy = notify("call-info", 1, "active", &[&ap("1", "active")]);
        let broken = notify(
            "call-info",
            2,
            "terminated",
            &[&format!("{TARGET};appearance-index=one")],
        );
        assert_eq!(
            feed(&mut d, vec![rx(busy), rx(broken)]),
            vec![
                r#"{"event": "Appearance", "Index": 1, "AppearanceState": "active"}"#,
                r#"{"event": "SubscriptionEnded"}"#,
            ]
        );
    }

    #[test]
    fn line_seize_notify_reports_only_its_end() {
        let mut d = deriver();
        assert_eq!(
            feed(
                &mut d,
                vec![
                    rx(notify("line-seize", 1, "active;expires=15", &[])),
                    rx(notify("line-seize", 2, "terminated;reason=noresource", &[])),
                    rx(notify("line-seize", 3, "terminated", &[])),
                    rx(notify("dialog", 1, "terminated", &[])),
                ]
            ),
            vec![
                r#"{"event": "SeizeEnded", "Reason": "noresource"}"#,
                r#"{"event": "SeizeEnded"}"#,
            ]
        );
    }

    #[test]
    fn seize_granted_once_then_refreshes_are_silent() {
        let mut d = deriver();
        let seize = subscribe(
            "line-seize",
            "s1",
            1,
            &[("Call-Info", &format!("{TARGET};appearance-index=1"))],
        );
        let refresh = subscribe("line-seize", "s1", 2, &[("Expires", "0")]);
        assert_eq!(
            feed(
                &mut d,
                vec![
                    tx(&seize),
                    rx(response(&seize, 100, &[])),
                    rx(response(&seize, 200, &[])),
                    rx(response(&seize, 200, &[])),
                    tx(&refresh),
                    rx(response(&refresh, 200, &[])),
                ]
            ),
            vec![r#"{"event": "SeizeGranted", "Index": 1}"#]
        );
    }

    #[test]
    fn seize_refused_reports_status_and_unknown_index_is_omitted() {
        let mut d = deriver();
        let busy = subscribe(
            "line-seize",
            "s1",
            1,
            &[("Call-Info", &format!("{TARGET};appearance-index=1"))],
        );
        let any = subscribe("line-seize", "s2", 1, &[]);
        let stranger = subscribe("line-seize", "s3", 1, &[]);
        assert_eq!(
            feed(
                &mut d,
                vec![
                    tx(&busy),
                    rx(response(&busy, 403, &[])),
                    rx(response(&busy, 403, &[])),
                    tx(&any),
                    rx(response(&any, 202, &[])),
                    // Not sent by this phone: not its seize.
                    rx(response(&stranger, 200, &[])),
                ]
            ),
            vec![
                r#"{"event": "SeizeRefused", "Status": 403}"#,
                r#"{"event": "SeizeGranted"}"#,
            ]
        );
    }

    #[test]
    fn subscribed_takes_expires_from_response_then_request() {
        let mut d = deriver();
        let first = subscribe("call-info", "ci", 1, &[("Expires", "3600")]);
        let refresh = subscribe("call-info", "ci", 2, &[("Expires", "1800")]);
        let bare = subscribe("call-info", "ci", 3, &[]);
        assert_eq!(
            feed(
                &mut d,
                vec![
                    tx(&first),
                    rx(response(&first, 200, &[("Expires", "600")])),
                    rx(response(&first, 200, &[("Expires", "600")])),
                    tx(&refresh),
                    rx(response(&refresh, 200, &[("Expires", "soon")])),
                    tx(&bare),
                    rx(response(&bare, 489, &[])),
                    rx(response(&bare, 200, &[])),
                ]
            ),
            vec![
                r#"{"event": "Subscribed", "Expires": 600}"#,
                r#"{"event": "Subscribed", "Expires": 1800}"#,
                r#"{"event": "Subscribed"}"#,
            ]
        );
    }

    #[test]
    fn invite_refusals_other_than_487_are_reported_once() {
        let mut d = deriver();
        let call = Message::parse(request("INVITE", "out", 1, "").build()).unwrap();
        let cancelled = Message::parse(request("INVITE", "out2", 1, "").build()).unwrap();
        let obs: Vec<Observation> = [
            response(&call, 180, &[]),
            response(&call, 486, &[]),
            response(&call, 486, &[]),
            response(&cancelled, 487, &[]),
        ]
        .into_iter()
        .flat_map(|raw| d.observe(&record(PHONE, Direction::Received, raw)))
        .collect();
        assert_eq!(obs.len(), 1);
        assert_eq!(
            obs[0].event.to_json_line(),
            r#"{"event": "InviteRefused", "Status": 486}"#
        );
        assert_eq!(obs[0].raw, "SIP/2.0 486 Busy Here | CSeq: 1 INVITE");
    }

    /// A 401 or 407 asks for credentials: the seizure, the subscription
    /// and the call are decided by the answer to the request sent again.
    #[test]
    fn challenges_refuse_nothing() {
        let mut d = deriver();
        let seize = subscribe(
            "line-seize",
            "s1",
            1,
            &[("Call-Info", &format!("{TARGET};appearance-index=1"))],
        );
        let seize_again = subscribe(
            "line-seize",
            "s1",
            2,
            &[("Call-Info", &format!("{TARGET};appearance-index=1"))],
        );
        let sub = subscribe("call-info", "ci", 1, &[("Expires", "3600")]);
        let sub_again = subscribe("call-info", "ci", 2, &[("Expires", "3600")]);
        let call = Message::parse(request("INVITE", "out", 1, "").build()).unwrap();
        let call_again = Message::parse(request("INVITE", "out", 2, "").build()).unwrap();
        assert_eq!(
            feed(
                &mut d,
                vec![
                    tx(&seize),
                    rx(response(&seize, 407, &[])),
                    tx(&seize_again),
                    rx(response(&seize_again, 200, &[])),
                    tx(&sub),
                    rx(response(&sub, 401, &[])),
                    tx(&sub_again),
                    rx(response(&sub_again, 200, &[])),
                    rx(response(&call, 407, &[])),
                    rx(response(&call_again, 486, &[])),
                ]
            ),
            vec![
                r#"{"event": "SeizeGranted", "Index": 1}"#,
                r#"{"event": "Subscribed", "Expires": 3600}"#,
                r#"{"event": "InviteRefused", "Status": 486}"#,
            ]
        );
    }

    /// A re-INVITE answered 200 and then, its retransmission handled again
    /// after the call ended, 481: the transaction's answer was the 200.
    #[test]
    fn a_failure_after_the_2xx_of_the_same_invite_refuses_nothing() {
        let mut d = deriver();
        let hold = Message::parse(request("INVITE", "call", 2, "").build()).unwrap();
        let obs: Vec<Observation> = [response(&hold, 200, &[]), response(&hold, 481, &[])]
            .into_iter()
            .flat_map(|raw| d.observe(&record(PHONE, Direction::Received, raw)))
            .collect();
        assert!(obs.is_empty(), "{obs:?}");
    }

    #[test]
    fn state_is_kept_per_phone() {
        let mut d = deriver();
        let busy = notify("call-info", 1, "active", &[&ap("1", "active")]);
        let a = d.observe(&record(PHONE, Direction::Received, busy.clone()));
        let b = d.observe(&record("60971", Direction::Received, busy));
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!(b[0].channel, Channel::Wire("60971".into()));
    }

    #[test]
    fn ignores_strangers_problems_and_garbage() {
        let mut d = deriver();
        let offer = request("INVITE", "c1", 1, "").build();
        assert!(d
            .observe(&record("60972", Direction::Received, offer.clone()))
            .is_empty());
        let mut flagged = record(PHONE, Direction::Received, offer.clone());
        flagged.problem = Some("truncated".into());
        assert!(d.observe(&flagged).is_empty());
        let cut: &[u8] = &offer[..offer.len() / 2];
        for raw in crate::derive::GARBAGE.into_iter().chain([cut]) {
            assert!(d
                .observe(&record(PHONE, Direction::Received, raw.to_vec()))
                .is_empty());
        }
        // Nothing above was taken for the offer.
        assert_eq!(feed(&mut d, vec![rx(offer)]).len(), 1);
    }

    #[test]
    fn cut_or_corrupted_messages_never_panic() {
        let busy = ap_uri(1, "alerting", r#""Bob" <sip:60972@sca.test>"#);
        let good = notify(
            "call-info",
            1,
            "terminated;reason=x",
            &[&busy, &ap("*", "idle")],
        );
        let mut d = deriver();
        for cut in 0..good.len() {
            d.observe(&record(PHONE, Direction::Received, good[..cut].to_vec()));
        }
        for at in 0..good.len() {
            for byte in [b'"', b'<', b'>', b';', b',', b'=', b'*', 0xff] {
                let mut bad = good.clone();
                bad[at] = byte;
                d.observe(&record(PHONE, Direction::Received, bad));
            }
        }
    }
}
