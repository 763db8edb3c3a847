//! How a phone reads what the server sends it: the rules by which the live
//! [`Agent`](super::Agent) objects to a request, and [`CapturedPhones`],
//! which applies the same rules to the records of a capture, so that
//! `scacheck pcap check` reports the problems a live run would have.
//!
//! A phone answers what it objects to and carries on; the objection is a
//! problem, which fails the verdict. It objects to:
//! - a NOTIFY outside its subscriptions: another Call-ID, a To-tag other
//!   than the tag its SUBSCRIBE gave, or a From-tag other than the
//!   notifier's once that is known (from the 2xx, or from the first NOTIFY
//!   when that comes first or the 2xx was lost: RFC 6665 4.1.2.4);
//! - Call-Info it cannot read in an INVITE offered to it or in a call-info
//!   NOTIFY: an appearance-index that is not a number, an appearance-state
//!   outside the model's vocabulary;
//! - a call-info NOTIFY without a readable Subscription-State.
//!
//! Pure, like the agent: messages in, problems out.

use std::collections::{HashMap, HashSet};

use crate::sip::dialog::Dialog;
use crate::sip::headers::{Appearance, EventHeader, SubState, SubscriptionState};
use crate::sip::record::{Direction, Record};
use crate::sip::Message;

/// The appearances in a request's Call-Info, or the problem a phone
/// reports when they cannot be read.
pub fn call_info(req: &Message) -> Result<Vec<Appearance>, String> {
    req.appearances().map(<[Appearance]>::to_vec).map_err(|e| {
        format!(
            "{} with unreadable Call-Info: {e}",
            req.method().unwrap_or_default()
        )
    })
}

/// Whether a NOTIFY ends its subscription, or the problem a phone reports
/// when its Subscription-State cannot be read.
pub fn terminates(notify: &Message) -> Result<bool, String> {
    notify
        .header("Subscription-State")
        .and_then(SubscriptionState::parse)
        .map(|s| s.state == SubState::Terminated)
        .ok_or_else(|| "NOTIFY without a readable Subscription-State".to_string())
}

/// The problem of a NOTIFY that belongs to none of a phone's subscriptions.
pub fn outside_subscriptions(notify: &Message) -> String {
    format!(
        "NOTIFY outside our subscriptions (Call-ID {})",
        notify.call_id()
    )
}

/// A request of a dialog a phone does not have that is addressed to
/// another SIP identity than the phone's `own` user (its Request-URI's
/// user): traffic for a contact an earlier phone had at this address,
/// which the server still holds (Kamailio notifies terminated
/// subscriptions until its purge). Says what it was; `None` for a request
/// addressed to the phone, whose unknown dialog is a problem.
pub fn stray(req: &Message, own: &str) -> Option<String> {
    let uri = req.request_uri().unwrap_or_default();
    let user = crate::sip::NameAddr::parse(uri)?.user()?.to_string();
    (!user.is_empty() && user != own)
        .then(|| format!("{} {uri} (for {user})", req.method().unwrap_or_default()))
}

/// A subscription as its subscriber knows it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub dialog: Dialog,
    /// The subscriber's Contact (`<sip:...>`): its refreshes and its
    /// unsubscribe carry the same one, so that they never move the
    /// subscription to another subscriber.
    pub contact: String,
    /// The notifier's side is known (its tag, route and target).
    pub confirmed: bool,
    /// The highest CSeq of the NOTIFYs read in it (0: none yet).
    pub notify_cseq: u32,
}

impl Subscription {
    /// The subscription a SUBSCRIBE with Contact `contact` opens, not
    /// yet confirmed.
    pub fn new(dialog: Dialog, contact: String) -> Subscription {
        Subscription {
            dialog,
            contact,
            confirmed: false,
            notify_cseq: 0,
        }
    }

    /// Whether a NOTIFY belongs to this subscription: its Call-ID, the
    /// subscriber's tag as its To-tag, and the notifier's tag as its
    /// From-tag once that is known.
    pub fn holds(&self, notify: &Message) -> bool {
        let d = &self.dialog;
        d.call_id == notify.call_id()
            && notify.to_tag().as_deref() == Some(d.local_tag.as_str())
            && (!self.confirmed || notify.from_tag() == d.remote_tag)
    }

    /// A 2xx to the SUBSCRIBE establishes the dialog with the notifier's
    /// tag (the first one does; refreshes change nothing).
    pub fn answered(&mut self, ok: &Message) {
        if !self.confirmed {
            self.establish(ok.to_tag(), Dialog::route_set(ok, true), ok);
        }
    }

    /// A NOTIFY the subscription [holds](Self::holds) establishes it when no
    /// 2xx has (RFC 6665 4.1.2.4: the NOTIFY may come first, and over UDP the
    /// 2xx may be lost). Returns whether this one did.
    /// Whether a NOTIFY comes in order: a CSeq above every one read in the
    /// subscription so far, which it then is. One below is out of order
    /// (RFC 3261 12.2.2: the phone answers 500 and reads nothing of it): a
    /// NOTIFY sent again after a loss, overtaken by a later one.
    pub fn in_order(&mut self, notify: &Message) -> bool {
        let cseq = notify.cseq().map_or(0, |(n, _)| n);
        if cseq != 0 && cseq < self.notify_cseq {
            return false;
        }
        self.notify_cseq = self.notify_cseq.max(cseq);
        true
    }

    pub fn notified(&mut self, notify: &Message) -> bool {
        if self.confirmed {
            return false;
        }
        // The subscriber is the NOTIFY's UAS: its route set is the NOTIFY's
        // Record-Route in order.
        self.establish(notify.from_tag(), Dialog::route_set(notify, false), notify);
        true
    }

    fn establish(&mut self, remote_tag: Option<String>, route: Vec<String>, msg: &Message) {
        self.dialog.remote_tag = remote_tag;
        self.dialog.route = route;
        if let Some(target) = msg.contact_uri() {
            self.dialog.remote_target = target;
        }
        self.confirmed = true;
    }
}

/// The phones of a capture, each reading its records by the rules above as
/// the live agent reads its messages. Feed it every record in recording
/// order.
#[derive(Debug, Default)]
pub struct CapturedPhones {
    phones: HashMap<String, Captured>,
}

/// What one phone of a capture has done so far.
#[derive(Debug, Default)]
struct Captured {
    /// Its latest subscription of each event package (the agent keeps one
    /// call-info and one line-seize subscription).
    subscriptions: HashMap<String, Subscription>,
    /// The ones a later SUBSCRIBE of the package replaced (the leak
    /// check's fresh subscription after the teardown's unsubscribe): their
    /// late NOTIFYs (a terminating one) are still theirs, and read no more.
    replaced: Vec<Subscription>,
    /// Calls it sent or was offered: only a call's first INVITE is read.
    calls: HashSet<String>,
    /// NOTIFYs read: a retransmission (the same bytes) is answered from
    /// memory, not read again, as the agent does.
    notifies: HashSet<Vec<u8>>,
    /// Its SIP user, as its own requests give it (From).
    user: Option<String>,
}

impl CapturedPhones {
    /// What the phone of this record objects to in it.
    pub fn observe(&mut self, rec: &Record) -> Vec<String> {
        // A record already flagged says its own problem.
        if rec.problem.is_some() {
            return Vec::new();
        }
        let Ok(msg) = rec.message() else {
            return Vec::new();
        };
        let phone = self.phones.entry(rec.agent.clone()).or_default();
        match (rec.direction, msg.method().as_deref()) {
            (Direction::Sent, Some(method)) => {
                phone.sent(msg, method);
                Vec::new()
            }
            (Direction::Received, Some("INVITE")) => phone.offered(msg),
            (Direction::Received, Some("NOTIFY")) => phone.notify(msg),
            (Direction::Received, None) => {
                phone.answer(msg);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }
}

impl Captured {
    fn sent(&mut self, msg: &Message, method: &str) {
        if self.user.is_none() {
            self.user = msg.from().and_then(|f| f.user().map(str::to_string));
        }
        if msg.to_tag().is_some() {
            return;
        }
        match method {
            "INVITE" => {
                self.calls.insert(msg.call_id().to_string());
            }
            "SUBSCRIBE" => {
                let package = msg.header("Event").and_then(EventHeader::parse);
                if let (Some(package), Some(dialog)) = (package, opened(msg)) {
                    if let Some(old) = self
                        .subscriptions
                        .insert(package.package, Subscription::new(dialog, contact_of(msg)))
                    {
                        self.replaced.push(old);
                    }
                }
            }
            _ => {}
        }
    }

    fn offered(&mut self, invite: &Message) -> Vec<String> {
        if invite.to_tag().is_some() || !self.calls.insert(invite.call_id().to_string()) {
            return Vec::new();
        }
        call_info(invite).err().into_iter().collect()
    }

    fn answer(&mut self, resp: &Message) {
        let ok = resp.status().is_some_and(|s| (200..300).contains(&s));
        if !ok || resp.cseq().map(|(_, m)| m) != Some("SUBSCRIBE") {
            return;
        }
        if let Some(sub) = self
            .subscriptions
            .values_mut()
            .find(|s| s.dialog.call_id == resp.call_id())
        {
            sub.answered(resp);
        }
    }

    fn notify(&mut self, notify: &Message) -> Vec<String> {
        if !self.notifies.insert(notify.raw().to_vec()) {
            return Vec::new();
        }
        let Some((package, sub)) = self.subscriptions.iter_mut().find(|(_, s)| s.holds(notify))
        else {
            let stray = self.user.as_deref().and_then(|own| stray(notify, own));
            if stray.is_some() || self.replaced.iter().any(|s| s.holds(notify)) {
                return Vec::new();
            }
            return vec![outside_subscriptions(notify)];
        };
        sub.notified(notify);
        if package != "call-info" {
            return Vec::new();
        }
        let mut problems: Vec<String> = call_info(notify).err().into_iter().collect();
        problems.extend(terminates(notify).err());
        problems
    }
}

/// The Contact a phone's request gives, as a header value.
fn contact_of(req: &Message) -> String {
    req.contact_uri()
        .map(|u| format!("<{u}>"))
        .unwrap_or_default()
}

/// The dialog a phone's initial request opens, as the phone knows it.
fn opened(req: &Message) -> Option<Dialog> {
    let (from, to) = (req.from()?, req.to()?);
    Some(Dialog {
        call_id: req.call_id().to_string(),
        local: format!("<{}>", from.uri),
        local_tag: from.param("tag")?.to_string(),
        remote: format!("<{}>", to.uri),
        remote_tag: None,
        remote_target: req.request_uri()?.to_string(),
        route: Vec::new(),
        next_cseq: req.cseq()?.0.saturating_add(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::derive::test_record as record;
    use crate::sip::build::Builder;

    const PHONE: &str = "60970";

    /// The phone's SUBSCRIBE of `package`, Call-ID `call_id`, tag `t1`.
    fn subscribe(package: &str, call_id: &str) -> Message {
        let raw = Builder::request("SUBSCRIBE", "sip:60970@sca.test")
            .header("Via", "SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKsub")
            .header("From", "<sip:60970@sca.test>;tag=t1")
            .header("To", "<sip:60970@sca.test>")
            .header("Call-ID", call_id)
            .header("CSeq", "1 SUBSCRIBE")
            .header("Event", package)
            .build();
        Message::parse(raw).unwrap()
    }

    /// A NOTIFY of `package` from tag `from_tag` to tag `to_tag`.
    fn notify(package: &str, call_id: &str, from_tag: &str, to_tag: &str, info: &str) -> Vec<u8> {
        Builder::request("NOTIFY", "sip:60970@127.0.0.1:6000")
            .header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKn")
            .header("From", &format!("<sip:60970@sca.test>;tag={from_tag}"))
            .header("To", &format!("<sip:60970@sca.test>;tag={to_tag}"))
            .header("Call-ID", call_id)
            .header("CSeq", "2 NOTIFY")
            .header("Event", package)
            .header("Subscription-State", "active")
            .header("Call-Info", info)
            .build()
    }

    const IDLE: &str = "<sip:sca.test>;appearance-index=*;appearance-state=idle";

    /// What the phone objects to in each record, in order.
    fn read(phones: &mut CapturedPhones, records: Vec<(Direction, Vec<u8>)>) -> Vec<String> {
        records
            .into_iter()
            .flat_map(|(dir, raw)| phones.observe(&record(PHONE, dir, raw)))
            .collect()
    }

    fn rx(raw: Vec<u8>) -> (Direction, Vec<u8>) {
        (Direction::Received, raw)
    }

    fn tx(msg: &Message) -> (Direction, Vec<u8>) {
        (Direction::Sent, msg.raw().to_vec())
    }

    #[test]
    fn a_notify_outside_the_phones_subscriptions_is_a_problem() {
        let sub = subscribe("call-info", "ci");
        let mut phones = CapturedPhones::default();
        let problems = read(
            &mut phones,
            vec![
                // Before any SUBSCRIBE: no subscription at all.
                rx(notify("call-info", "ci", "srv", "t1", IDLE)),
                tx(&sub),
                rx(Builder::response_to(&sub, 202, Some("srv")).build()),
                rx(notify("call-info", "other", "srv", "t1", IDLE)),
                rx(notify("call-info", "ci", "srv", "not-mine", IDLE)),
                rx(notify("call-info", "ci", "impostor", "t1", IDLE)),
            ],
        );
        assert_eq!(
            problems,
            [
                "NOTIFY outside our subscriptions (Call-ID ci)",
                "NOTIFY outside our subscriptions (Call-ID other)",
                "NOTIFY outside our subscriptions (Call-ID ci)",
                "NOTIFY outside our subscriptions (Call-ID ci)",
            ]
        );
        // The subscription's own NOTIFY is fine.
        assert!(read(
            &mut phones,
            vec![rx(notify("call-info", "ci", "srv", "t1", IDLE))]
        )
        .is_empty());
    }

    /// Without the 2xx, the first NOTIFY establishes the subscription: its
    /// From-tag is the notifier's from then on.
    #[test]
    fn the_first_notify_establishes_a_subscription_whose_2xx_is_missing() {
        let sub = subscribe("call-info", "ci");
        let mut phones = CapturedPhones::default();
        let problems = read(
            &mut phones,
            vec![
                tx(&sub),
                rx(notify("call-info", "ci", "ntf", "t1", IDLE)),
                rx(Builder::response_to(&sub, 200, Some("ntf")).build()),
                rx(notify("call-info", "ci", "other", "t1", IDLE)),
            ],
        );
        assert_eq!(problems, ["NOTIFY outside our subscriptions (Call-ID ci)"]);
    }

    #[test]
    fn unreadable_call_info_is_a_problem_once_per_message() {
        let sub = subscribe("call-info", "ci");
        let seize = subscribe("line-seize", "ls");
        let bad_state = notify(
            "call-info",
            "ci",
            "srv",
            "t1",
            "<sip:sca.test>;appearance-index=1;appearance-state=ringing",
        );
        let bad_index = notify(
            "call-info",
            "ci",
            "srv",
            "t1",
            "<sip:sca.test>;appearance-index=one;appearance-state=idle",
        );
        let offer = |call_id: &str| {
            Builder::request("INVITE", "sip:60970@127.0.0.1:6000")
                .header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKi")
                .header("From", "<sip:60972@sca.test>;tag=a")
                .header("To", "<sip:60970@sca.test>")
                .header("Call-ID", call_id)
                .header("CSeq", "1 INVITE")
                .header("Call-Info", "<sip:sca.test>;appearance-index=1x")
                .build()
        };
        let mut phones = CapturedPhones::default();
        let problems = read(
            &mut phones,
            vec![
                tx(&sub),
                tx(&seize),
                rx(bad_state.clone()),
                // A retransmission is answered, not read again.
                rx(bad_state),
                rx(bad_index),
                // A line-seize NOTIFY carries no appearances to read.
                rx(notify(
                    "line-seize",
                    "ls",
                    "srv",
                    "t1",
                    "<sip:x>;appearance-index=?",
                )),
                rx(offer("call")),
                rx(offer("call")),
            ],
        );
        assert_eq!(
            problems,
            [
                "NOTIFY with unreadable Call-Info: appearance-state \"ringing\" is not a state of the SCA model",
                "NOTIFY with unreadable Call-Info: appearance-index \"one\" is not a number",
                "INVITE with unreadable Call-Info: appearance-index \"1x\" is not a number",
            ]
        );
    }

    #[test]
    fn a_call_info_notify_without_subscription_state_is_a_problem() {
        let sub = subscribe("call-info", "ci");
        let stateless = String::from_utf8(notify("call-info", "ci", "srv", "t1", IDLE))
            .unwrap()
            .replace("Subscription-State: active\r\n", "")
            .into_bytes();
        let mut phones = CapturedPhones::default();
        assert_eq!(
            read(&mut phones, vec![tx(&sub), rx(stateless)]),
            ["NOTIFY without a readable Subscription-State"]
        );
    }

    #[test]
    fn flagged_records_and_garbage_are_not_read_again() {
        let mut phones = CapturedPhones::default();
        let mut flagged = record(
            PHONE,
            Direction::Received,
            notify("call-info", "ci", "srv", "t1", IDLE),
        );
        flagged.problem = Some("unparseable".into());
        assert!(phones.observe(&flagged).is_empty());
        for raw in crate::derive::GARBAGE {
            assert!(phones
                .observe(&record(PHONE, Direction::Received, raw.to_vec()))
                .is_empty());
        }
    }
}
