//! T-Library events derived from SIP, for a target that has no event feed:
//! what each party's DN channel would report (the Genesys SIP Server events
//! of the model), read from the messages its user agent sent and received.
//! Pure: it reads recorded messages in recording order and keeps per-party
//! dialog state, so the same capture always derives the same events. Server
//! input may be anything; what cannot be read derives nothing.
//!
//! Only what SIP shows is derived: the DNs of a call and the appearance it
//! is on. Connection IDs, roles, call states and causes are the server's
//! own, and [`SipTlibDeriver::observability`] says so.

use std::collections::{HashMap, HashSet};

use super::{message_of, on_channel, provenance, Found};
use crate::model::{Attr, Channel, Event, KnownEvent, Value};
use crate::observation::{Observability, Observation};
use crate::sip::headers::first_index;
use crate::sip::record::{Direction, Record};
use crate::sip::{uri_user, Message};

/// How the source is named in reports.
pub const SOURCE: &str = "T-Library events derived from the SIP the phones saw";

/// Where the SCA wire layer comes from for every source but a server's
/// HEP mirror (`derive::wire` on the phones' SIP).
pub const WIRE_SOURCE: &str = "SCA wire layer derived from the SIP the phones saw";

/// The attributes SIP shows on a DN channel.
const SEEN: [Attr; 3] = [Attr::ThisDn, Attr::OtherDn, Attr::AppearanceIndex];

/// The wire layer's attributes: its channels come from `derive::wire`,
/// which sees them, so this source is not blind to them.
const WIRE: [Attr; 6] = [
    Attr::Index,
    Attr::AppearanceState,
    Attr::AppearanceUri,
    Attr::Status,
    Attr::Expires,
    Attr::Reason,
];

/// T-Library events that no SIP message of the parties reveals (besides the
/// monitoring stream's `EventCall*`).
const BLIND: [KnownEvent; 8] = [
    KnownEvent::PrivateInfo,
    KnownEvent::PartyAdded,
    KnownEvent::PartyChanged,
    KnownEvent::PartyDeleted,
    KnownEvent::Diverted,
    KnownEvent::NetworkReached,
    KnownEvent::DestinationBusy,
    KnownEvent::Abandoned,
];

/// Derives DN-channel T-Library events for the parties of one case.
#[derive(Debug)]
pub struct SipTlibDeriver {
    /// The case's DNs, in case order (for the channel list).
    parties: Vec<String>,
    agents: HashMap<String, Agent>,
    /// SIP user part -> the DN golden files use.
    dn_of_user: HashMap<String, String>,
}

impl SipTlibDeriver {
    /// `parties`: the case's DNs; only their records count (`record.agent`
    /// is the DN). `dn_of_user`: a SIP user part seen in From, To or the
    /// Request-URI -> the DN golden files use; unknown users stand for
    /// themselves. `lines`: each shared-line phone's DN -> its line number.
    pub fn new(
        parties: &[String],
        dn_of_user: HashMap<String, String>,
        lines: HashMap<String, String>,
    ) -> SipTlibDeriver {
        let agents = parties
            .iter()
            .map(|dn| {
                let agent = Agent {
                    dn: dn.clone(),
                    line: lines.get(dn).cloned(),
                    dialogs: HashMap::new(),
                    told: HashMap::new(),
                };
                (dn.clone(), agent)
            })
            .collect();
        SipTlibDeriver {
            parties: parties.to_vec(),
            agents,
            dn_of_user,
        }
    }

    /// The deriver for a case's parties on a topology, with `dn_of_user`
    /// from the target (see [`crate::line::Identities::dn_of_user`]).
    pub fn for_case(
        parties: &[String],
        topology: &crate::topology::Topology,
        dn_of_user: &std::collections::BTreeMap<String, String>,
    ) -> SipTlibDeriver {
        SipTlibDeriver::new(
            parties,
            dn_of_user.clone().into_iter().collect(),
            topology.lines_of(parties),
        )
    }

    /// Takes one record (in recording order) and returns the T-Library
    /// events it causes, each on `Channel::Dn(record.agent)`.
    pub fn observe(&mut self, rec: &Record) -> Vec<Observation> {
        let Some(agent) = self.agents.get_mut(&rec.agent) else {
            return Vec::new();
        };
        let Some(msg) = message_of(rec) else {
            return Vec::new();
        };
        let users = &self.dn_of_user;
        let initial = msg.to_tag().is_none();
        let found = match (rec.direction, msg.method().as_deref()) {
            (Direction::Sent, Some("INVITE")) if initial => agent.dial(msg, users),
            (Direction::Sent, Some("INVITE" | "UPDATE")) => {
                agent.reinvite_sent(msg);
                Vec::new()
            }
            (Direction::Received, Some("INVITE")) if initial => agent.offered(msg, users),
            (Direction::Received, Some("NOTIFY")) => {
                agent.told(msg, users);
                Vec::new()
            }
            (Direction::Received, Some("ACK")) => agent.acked(msg),
            (Direction::Received, Some("CANCEL")) => agent.cancelled(msg),
            (Direction::Sent, Some("CANCEL")) => agent.cancel_sent(msg),
            (_, Some("BYE")) => agent.bye(msg),
            (Direction::Received, None) => agent.response_received(msg),
            (Direction::Sent, None) => agent.response_sent(msg),
            _ => Vec::new(),
        };
        // A party's T-Library events of one call are ordered by that call's
        // dialog; two calls' events are not ordered against each other.
        on_channel(&Channel::Dn(rec.agent.clone()), msg.call_id(), found)
    }

    /// The parties' DN channels and, for each shared-line phone among them,
    /// its wire channel (derived by `derive::wire`, not here); never the
    /// monitoring stream.
    pub fn observability(&self) -> Observability {
        let mut channels: Vec<Channel> = Vec::new();
        let dns = self.parties.iter().map(|dn| Channel::Dn(dn.clone()));
        let wires = self
            .parties
            .iter()
            .filter(|dn| self.agents.get(*dn).is_some_and(|a| a.line.is_some()))
            .map(|dn| Channel::Wire(dn.clone()));
        for channel in dns.chain(wires) {
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        Observability {
            source: SOURCE.to_string(),
            wire_source: WIRE_SOURCE.to_string(),
            channels: Some(channels),
            blind_to: Attr::ALL
                .iter()
                .copied()
                .filter(|a| !SEEN.contains(a) && !WIRE.contains(a))
                .collect(),
            blind_events: KnownEvent::ALL
                .iter()
                .copied()
                .filter(|k| BLIND.contains(k) || k.as_str().starts_with("EventCall"))
                .collect(),
        }
    }
}

/// One party: its DN, its line if it is a shared-line phone, and its
/// INVITE dialogs by Call-ID.
#[derive(Debug)]
struct Agent {
    dn: String,
    line: Option<String>,
    dialogs: HashMap<String, Dialog>,
    /// What the line's call-info NOTIFYs last told the phone of each busy
    /// appearance: its state and the other party (appearance-uri), mapped
    /// to a DN. A join of the phone's own line learns its meaning from it.
    told: HashMap<u32, (String, Option<String>)>,
}

/// One call as one party saw it.
#[derive(Debug, Default)]
struct Dialog {
    /// The party sent the initial INVITE (else it received it).
    outgoing: bool,
    /// The other party's DN; none for a join of the party's own line (a
    /// retrieve or barge-in), whose other party SIP does not name.
    other: Option<String>,
    /// The numeric appearance-index of the initial INVITE's Call-Info.
    index: Option<u32>,
    /// An INVITE of the party's own line (a retrieve or barge-in).
    join: bool,
    /// A join of an active appearance: a barge-in, whose events the
    /// reference orders differently from a retrieve's.
    barge: bool,
    /// CSeq numbers of the initial INVITE (a retry after a challenge takes
    /// a new one).
    initial_cseqs: HashSet<u32>,
    cancelled: bool,
    /// The party (called) answered 2xx and has not had its ACK yet: a
    /// CANCEL that crossed the answer still releases it (rule 5).
    answered: bool,
    confirmed: bool,
    released: bool,
    /// The From- and To-tags (in sorted order) of the dialog that answered
    /// the call: a BYE in another dialog of the same Call-ID (a forked
    /// branch that answered too, ended by the caller) does not end it.
    tags: Option<(String, String)>,
    /// Held by this party's own re-INVITE.
    held: bool,
    /// The party's own re-INVITEs by CSeq.
    reinvites: HashMap<u32, Reinvite>,
}

#[derive(Debug, Clone, Copy)]
struct Reinvite {
    /// `Some(true)`: its SDP offers hold; `None`: no offer at all.
    hold: Option<bool>,
    answered: bool,
}

impl Agent {
    /// An event on this party's channel, with ThisDN.
    fn event(&self, name: KnownEvent) -> Event {
        Event::new(name).with(Attr::ThisDn, Value::Dn(self.dn.clone()))
    }

    /// Rule 1: a new call placed by the party (or a join of its own line).
    fn dial(&mut self, msg: &Message, users: &HashMap<String, String>) -> Vec<Found> {
        let Some((cseq, _)) = msg.cseq() else {
            return Vec::new();
        };
        if let Some(d) = self.dialogs.get_mut(msg.call_id()) {
            // A retransmission, or a retry of the same call.
            if d.outgoing && !d.confirmed && !d.released {
                d.initial_cseqs.insert(cseq);
            }
            return Vec::new();
        }
        let to = msg
            .to()
            .and_then(|to| to.user().map(str::to_string))
            .or_else(|| msg.request_uri().and_then(uri_user).map(str::to_string))
            .map(|user| dn_of(users, &user));
        let join = to.is_some() && to == self.line;
        let index = first_index(msg);
        // A join's other party and meaning come from what the line told
        // the phone of that appearance: held means a retrieve, active a
        // barge-in.
        let told = index.and_then(|i| self.told.get(&i)).cloned();
        let barge = join
            && told
                .as_ref()
                .is_some_and(|(state, _)| state == "active" || state.starts_with("bridge"));
        let dialog = Dialog {
            outgoing: true,
            other: if join {
                told.and_then(|(_, other)| other)
            } else {
                to
            },
            index,
            join,
            barge,
            initial_cseqs: HashSet::from([cseq]),
            ..Dialog::default()
        };
        let raw = provenance(msg, "Call-Info");
        let mut found = Vec::new();
        // A barge-in goes off hook once it is joined (reference 1.6).
        if !barge {
            found.push((
                self.event(KnownEvent::OffHook)
                    .with_opt(Attr::AppearanceIndex, index.map(int)),
                raw.clone(),
            ));
        }
        if !join {
            let dialing = self
                .event(KnownEvent::Dialing)
                .with_opt(Attr::OtherDn, dialog.other.clone().map(Value::Dn))
                .with_opt(Attr::AppearanceIndex, index.map(int));
            found.push((dialing, raw));
        }
        self.dialogs.insert(msg.call_id().to_string(), dialog);
        found
    }

    /// Remembers what a call-info NOTIFY told the phone.
    fn told(&mut self, msg: &Message, users: &HashMap<String, String>) {
        use crate::sip::headers::{ApState, AppearanceIndex, EventHeader};
        let package = msg
            .header("Event")
            .and_then(EventHeader::parse)
            .map(|e| e.package);
        if package.as_deref() != Some("call-info") {
            return;
        }
        let Ok(all) = msg.appearances() else {
            return;
        };
        self.told = all
            .iter()
            .filter_map(|a| match (a.index, a.state) {
                (AppearanceIndex::Index(i), Some(state)) if state != ApState::Idle => {
                    let other = a
                        .uri
                        .as_deref()
                        .and_then(crate::sip::NameAddr::parse)
                        .and_then(|n| n.user().map(|u| dn_of(users, u)));
                    Some((i, (state.to_string(), other)))
                }
                _ => None,
            })
            .collect();
    }

    /// Rule 2: a new call offered to the party.
    fn offered(&mut self, msg: &Message, users: &HashMap<String, String>) -> Vec<Found> {
        let Some((cseq, _)) = msg.cseq() else {
            return Vec::new();
        };
        if let Some(d) = self.dialogs.get_mut(msg.call_id()) {
            if !d.outgoing && !d.confirmed && !d.released {
                d.initial_cseqs.insert(cseq);
            }
            return Vec::new();
        }
        let from = msg
            .from()
            .and_then(|from| from.user().map(|user| dn_of(users, user)));
        let index = first_index(msg);
        let ringing = self
            .event(KnownEvent::Ringing)
            .with_opt(Attr::OtherDn, from.clone().map(Value::Dn))
            .with_opt(Attr::AppearanceIndex, index.map(int));
        self.dialogs.insert(
            msg.call_id().to_string(),
            Dialog {
                other: from,
                index,
                initial_cseqs: HashSet::from([cseq]),
                ..Dialog::default()
            },
        );
        vec![(ringing, provenance(msg, "Call-Info"))]
    }

    /// Rule 5: the caller gave up before the party answered.
    fn cancelled(&mut self, msg: &Message) -> Vec<Found> {
        match self.dialogs.get(msg.call_id()) {
            Some(d) if !d.outgoing && !d.confirmed && !d.released => self.release(msg),
            _ => Vec::new(),
        }
    }

    /// Rule 6: the party gave up before it was answered. The 487 that
    /// follows says nothing more.
    fn cancel_sent(&mut self, msg: &Message) -> Vec<Found> {
        match self.dialogs.get_mut(msg.call_id()) {
            Some(d) if d.outgoing && !d.confirmed && !d.released => {
                d.cancelled = true;
                self.release(msg)
            }
            _ => Vec::new(),
        }
    }

    /// Rule 8: the end of a confirmed call, whoever ended it. A shared-line
    /// phone then hangs up, unless it had put the call on hold (it is on
    /// hook already); a plain phone reports no EventOnHook. Only a BYE of
    /// the call's own dialog ends it; one that comes to an answered call
    /// before its ACK (lost) confirms it first.
    fn bye(&mut self, msg: &Message) -> Vec<Found> {
        let mut found = Vec::new();
        let held = match self.dialogs.get(msg.call_id()) {
            Some(d) if d.released || other_dialog(&d.tags, msg) => return found,
            Some(d) if d.answered && !d.confirmed => {
                found = self.acked(msg);
                false
            }
            Some(d) if d.confirmed => d.held,
            _ => return found,
        };
        found.extend(self.release(msg));
        if self.line.is_some() && !held {
            found.push((self.event(KnownEvent::OnHook), provenance(msg, "Call-ID")));
        }
        found
    }

    /// Rule 9, first half: remembers what the party's re-INVITE offers.
    fn reinvite_sent(&mut self, msg: &Message) {
        let (Some(d), Some((cseq, _))) = (self.dialogs.get_mut(msg.call_id()), msg.cseq()) else {
            return;
        };
        d.reinvites.entry(cseq).or_insert(Reinvite {
            hold: crate::sip::sdp::holds(msg.body()),
            answered: false,
        });
    }

    /// Rules 3 and 7 (answers to the party's initial INVITE) and the second
    /// half of rule 9 (answers to its re-INVITEs and UPDATEs).
    fn response_received(&mut self, msg: &Message) -> Vec<Found> {
        let (Some(status), Some((cseq, method @ ("INVITE" | "UPDATE")))) =
            (msg.status(), msg.cseq())
        else {
            return Vec::new();
        };
        let Some(d) = self.dialogs.get_mut(msg.call_id()) else {
            return Vec::new();
        };
        if d.released {
            return Vec::new();
        }
        if let Some(re) = d.reinvites.get_mut(&cseq) {
            if !(200..=299).contains(&status) || re.answered {
                return Vec::new();
            }
            re.answered = true;
            let name = match re.hold {
                Some(true) if !d.held => KnownEvent::Held,
                Some(false) if d.held => KnownEvent::Retrieved,
                _ => return Vec::new(),
            };
            d.held = name == KnownEvent::Held;
            let other = d.other.clone();
            let event = self
                .event(name)
                .with_opt(Attr::OtherDn, other.map(Value::Dn));
            return vec![(event, provenance(msg, "CSeq"))];
        }
        if method != "INVITE" || !d.outgoing || !d.initial_cseqs.contains(&cseq) || d.confirmed {
            return Vec::new();
        }
        match status {
            200..=299 => {
                d.confirmed = true;
                d.tags = msg.dialog_tags();
                let mut found = Vec::new();
                let (join, barge, other, index) = (d.join, d.barge, d.other.clone(), d.index);
                if join {
                    // A join that is answered took the call over: in the
                    // reference's model the phone rang and was connected (a
                    // one-step transfer), or, for a barge-in, rang, went off
                    // hook and was conferenced.
                    let ringing = self
                        .event(KnownEvent::Ringing)
                        .with_opt(
                            Attr::OtherDn,
                            other.clone().filter(|_| !barge).map(Value::Dn),
                        )
                        .with_opt(Attr::AppearanceIndex, index.map(int));
                    found.push((ringing, provenance(msg, "CSeq")));
                    if barge {
                        let off_hook = self
                            .event(KnownEvent::OffHook)
                            .with_opt(Attr::AppearanceIndex, index.map(int));
                        found.push((off_hook, provenance(msg, "CSeq")));
                    }
                }
                let other = other.filter(|_| !barge);
                let event = self
                    .event(KnownEvent::Established)
                    .with_opt(Attr::OtherDn, other.map(Value::Dn))
                    .with_opt(Attr::AppearanceIndex, index.map(int));
                found.push((event, provenance(msg, "CSeq")));
                found
            }
            // A challenge is answered by a new INVITE on the same call.
            401 | 407 => Vec::new(),
            300.. if !d.cancelled => self.release(msg),
            _ => Vec::new(),
        }
    }

    /// Rule 4, first half: the party answered a call offered to it. The
    /// call is established when the answer is acknowledged ([`Agent::acked`]):
    /// a CANCEL that crossed the answer (two phones answering at once, the
    /// server taking the other) releases the party instead, as the model
    /// releases the phone it did not connect.
    fn response_sent(&mut self, msg: &Message) -> Vec<Found> {
        let (Some(status), Some((cseq, "INVITE"))) = (msg.status(), msg.cseq()) else {
            return Vec::new();
        };
        let Some(d) = self.dialogs.get_mut(msg.call_id()) else {
            return Vec::new();
        };
        if !(200..=299).contains(&status)
            || d.outgoing
            || d.answered
            || d.confirmed
            || d.released
            || !d.initial_cseqs.contains(&cseq)
        {
            return Vec::new();
        }
        d.answered = true;
        d.tags = msg.dialog_tags();
        Vec::new()
    }

    /// Rule 4, second half: the party's answer acknowledged, the call is
    /// established.
    fn acked(&mut self, msg: &Message) -> Vec<Found> {
        let Some(d) = self.dialogs.get_mut(msg.call_id()) else {
            return Vec::new();
        };
        if !d.answered || d.confirmed || d.released || other_dialog(&d.tags, msg) {
            return Vec::new();
        }
        d.confirmed = true;
        let (other, index) = (d.other.clone(), d.index);
        let event = self
            .event(KnownEvent::Established)
            .with_opt(Attr::OtherDn, other.map(Value::Dn))
            .with_opt(Attr::AppearanceIndex, index.map(int));
        vec![(event, provenance(msg, "CSeq"))]
    }

    /// EventReleased for the dialog of `msg`, once.
    fn release(&mut self, msg: &Message) -> Vec<Found> {
        let Some(d) = self.dialogs.get_mut(msg.call_id()) else {
            return Vec::new();
        };
        if d.released {
            return Vec::new();
        }
        d.released = true;
        let other = d.other.clone();
        let event = self
            .event(KnownEvent::Released)
            .with_opt(Attr::OtherDn, other.map(Value::Dn));
        let header = if msg.is_request() { "Call-ID" } else { "CSeq" };
        vec![(event, provenance(msg, header))]
    }
}

/// Is `msg` in another dialog than the call's (whose tags are known)?
fn other_dialog(call: &Option<(String, String)>, msg: &Message) -> bool {
    call.is_some() && *call != msg.dialog_tags()
}

fn int(n: impl Into<i64>) -> Value {
    Value::Int(n.into())
}

/// The DN golden files use for a SIP user part.
fn dn_of(users: &HashMap<String, String>, user: &str) -> String {
    users.get(user).cloned().unwrap_or_else(|| user.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::build::{sdp, Builder};

    const CALLER: &str = "60972";
    const LINE: &str = "60970";
    const SECOND: &str = "60970_2";
    const TARGET: &str = "<sip:sca.test>";

    fn deriver() -> SipTlibDeriver {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        SipTlibDeriver::new(
            &[CALLER, LINE, SECOND].map(String::from),
            map(&[(CALLER, CALLER), (LINE, LINE), ("+1555060972", CALLER)]),
            map(&[(LINE, LINE), (SECOND, LINE)]),
        )
    }

    use crate::derive::test_record as record;

    /// One INVITE dialog: its Call-ID and the users of From and To.
    #[derive(Clone, Copy)]
    struct Call {
        id: &'static str,
        from: &'static str,
        to: &'static str,
    }

    impl Call {
        /// A request of the call; `to_tag` empty for an initial request.
        fn request(&self, method: &str, cseq: u32, to_tag: &str) -> Builder {
            let (id, from, to) = (self.id, self.from, self.to);
            let to_header = if to_tag.is_empty() {
                format!("<sip:{to}@sca.test>")
            } else {
                format!("<sip:{to}@sca.test>;tag={to_tag}")
            };
            Builder::request(method, &format!("sip:{to}@sca.test"))
                .header(
                    "Via",
                    &format!("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{id}{cseq}{method}"),
                )
                .header("From", &format!("<sip:{from}@sca.test>;tag=f{id}"))
                .header("To", &to_header)
                .header("Call-ID", id)
                .header("CSeq", &format!("{cseq} {method}"))
        }

        /// The initial INVITE, with an appearance when `index` is given.
        fn invite(&self, index: Option<&str>) -> Message {
            let b = self.request("INVITE", 1, "");
            let b = match index {
                Some(i) => b.header("Call-Info", &format!("{TARGET};appearance-index={i}")),
                None => b,
            };
            parse(b.build())
        }

        fn cancel(&self) -> Vec<u8> {
            self.request("CANCEL", 1, "").build()
        }

        /// An in-dialog request (To-tag `t`).
        fn in_dialog(&self, method: &str, cseq: u32) -> Message {
            parse(self.request(method, cseq, "t").build())
        }

        /// A re-INVITE whose SDP has this direction (empty: no SDP).
        fn reinvite(&self, cseq: u32, direction: &str) -> Message {
            let b = self.request("INVITE", cseq, "t");
            let b = if direction.is_empty() {
                b
            } else {
                let ip = "127.0.0.1".parse().unwrap();
                b.body("application/sdp", &sdp("u", ip, 4000, direction))
            };
            parse(b.build())
        }
    }

    fn parse(raw: Vec<u8>) -> Message {
        Message::parse(raw).unwrap()
    }

    fn response(req: &Message, code: u16) -> Vec<u8> {
        Builder::response_to(req, code, Some("t")).build()
    }

    /// Feeds records and returns the events as `channel golden-line`.
    fn feed(d: &mut SipTlibDeriver, records: Vec<(&str, Direction, Vec<u8>)>) -> Vec<String> {
        records
            .into_iter()
            .flat_map(|(agent, dir, raw)| d.observe(&record(agent, dir, raw)))
            .map(|o| format!("{} {}", o.channel, o.event.to_json_line()))
            .collect()
    }

    fn tx(agent: &str, raw: impl Into<Vec<u8>>) -> (&str, Direction, Vec<u8>) {
        (agent, Direction::Sent, raw.into())
    }

    fn rx(agent: &str, raw: impl Into<Vec<u8>>) -> (&str, Direction, Vec<u8>) {
        (agent, Direction::Received, raw.into())
    }

    fn bytes(msg: &Message) -> Vec<u8> {
        msg.raw().to_vec()
    }

    /// The caller's leg and the server's legs to the two phones of an
    /// inbound call; the server offers the line's user to both.
    const OUT: Call = Call {
        id: "c0",
        from: CALLER,
        to: LINE,
    };
    const TO_LINE: Call = Call {
        id: "c1",
        from: CALLER,
        to: LINE,
    };
    const TO_SECOND: Call = Call {
        id: "c2",
        from: CALLER,
        to: LINE,
    };

    /// Rings both phones and answers at the first: the events so far.
    fn answered_inbound(d: &mut SipTlibDeriver) -> Vec<String> {
        let out = OUT.invite(None);
        let line = TO_LINE.invite(Some("1"));
        let second = TO_SECOND.invite(Some("1"));
        feed(
            d,
            vec![
                tx(CALLER, bytes(&out)),
                rx(LINE, bytes(&line)),
                rx(SECOND, bytes(&second)),
                rx(CALLER, response(&out, 100)),
                tx(LINE, response(&line, 180)),
                tx(SECOND, response(&second, 180)),
                rx(CALLER, response(&out, 180)),
                tx(LINE, response(&line, 200)),
                rx(LINE, bytes(&TO_LINE.in_dialog("ACK", 1))),
                rx(CALLER, response(&out, 200)),
                rx(SECOND, TO_SECOND.cancel()),
                tx(SECOND, response(&parse(TO_SECOND.cancel()), 200)),
                tx(SECOND, response(&second, 487)),
            ],
        )
    }

    #[test]
    fn inbound_call_rings_both_phones_and_releases_the_one_not_answering() {
        let mut d = deriver();
        assert_eq!(
            answered_inbound(&mut d),
            vec![
                r#"60972 {"event": "EventOffHook", "ThisDN": "60972"}"#,
                r#"60972 {"event": "EventDialing", "ThisDN": "60972", "OtherDN": "60970"}"#,
                r#"60970 {"event": "EventRinging", "ThisDN": "60970", "OtherDN": "60972", "Extensions": {"AppearanceIndex": 1}}"#,
                r#"60970_2 {"event": "EventRinging", "ThisDN": "60970_2", "OtherDN": "60972", "Extensions": {"AppearanceIndex": 1}}"#,
                r#"60970 {"event": "EventEstablished", "ThisDN": "60970", "OtherDN": "60972", "Extensions": {"AppearanceIndex": 1}}"#,
                r#"60972 {"event": "EventEstablished", "ThisDN": "60972", "OtherDN": "60970"}"#,
                r#"60970_2 {"event": "EventReleased", "ThisDN": "60970_2", "OtherDN": "60972"}"#,
            ]
        );
    }

    #[test]
    fn events_carry_their_provenance() {
        let mut d = deriver();
        let invite = TO_LINE.invite(Some("1"));
        let obs = d.observe(&record(LINE, Direction::Received, bytes(&invite)));
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0].channel, Channel::Dn(LINE.into()));
        assert_eq!(
            obs[0].raw,
            "INVITE sip:60970@sca.test SIP/2.0 | Call-Info: <sip:sca.test>;appearance-index=1"
        );
        // Established once the answer is acknowledged.
        let obs = d.observe(&record(LINE, Direction::Sent, response(&invite, 200)));
        assert!(obs.is_empty(), "{obs:?}");
        let ack = TO_LINE.in_dialog("ACK", 1);
        let obs = d.observe(&record(LINE, Direction::Received, bytes(&ack)));
        assert_eq!(obs[0].raw, "ACK sip:60970@sca.test SIP/2.0 | CSeq: 1 ACK");
        let bye = TO_LINE.in_dialog("BYE", 2);
        let obs = d.observe(&record(LINE, Direction::Received, bytes(&bye)));
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0].raw, "BYE sip:60970@sca.test SIP/2.0 | Call-ID: c1");
        // Ordered within the call, for the diff (two calls are not ordered).
        assert_eq!(obs[0].within.as_deref(), Some("c1"));
    }

    #[test]
    fn outbound_call_carries_the_appearance_of_its_call_info() {
        let call = Call {
            id: "o1",
            from: LINE,
            to: CALLER,
        };
        let invite = call.invite(Some("1"));
        let mut d = deriver();
        assert_eq!(
            feed(
                &mut d,
                vec![
                    tx(LINE, bytes(&invite)),
                    rx(LINE, response(&invite, 100)),
                    rx(LINE, response(&invite, 180)),
                    rx(LINE, response(&invite, 200)),
                    rx(LINE, response(&invite, 200)),
                    tx(LINE, bytes(&call.in_dialog("ACK", 1))),
                ]
            ),
            vec![
                r#"60970 {"event": "EventOffHook", "ThisDN": "60970", "Extensions": {"AppearanceIndex": 1}}"#,
                r#"60970 {"event": "EventDialing", "ThisDN": "60970", "OtherDN": "60972", "Extensions": {"AppearanceIndex": 1}}"#,
                r#"60970 {"event": "EventEstablished", "ThisDN": "60970", "OtherDN": "60972", "Extensions": {"AppearanceIndex": 1}}"#,
            ]
        );
    }

    #[test]
    fn a_star_or_unreadable_index_is_omitted_and_users_are_mapped() {
        let star = Call {
            id: "o1",
            from: LINE,
            to: "+1555060972",
        }
        .invite(Some("*"));
        let broken = Call {
            id: "o2",
            from: LINE,
            to: "5555",
        }
        .invite(Some("one"));
        let mut d = deriver();
        assert_eq!(
            feed(
                &mut d,
                vec![tx(LINE, bytes(&star)), tx(LINE, bytes(&broken))]
            ),
            vec![
                r#"60970 {"event": "EventOffHook", "ThisDN": "60970"}"#,
                r#"60970 {"event": "EventDialing", "ThisDN": "60970", "OtherDN": "60972"}"#,
                r#"60970 {"event": "EventOffHook", "ThisDN": "60970"}"#,
                r#"60970 {"event": "EventDialing", "ThisDN": "60970", "OtherDN": "5555"}"#,
            ]
        );
    }

    #[test]
    fn an_answered_join_rings_then_is_established_without_other_dn() {
        let join = Call {
            id: "j1",
            from: SECOND,
            to: LINE,
        };
        let invite = join.invite(Some("1"));
        let mut d = deriver();
        assert_eq!(
            feed(
                &mut d,
                vec![
                    tx(SECOND, bytes(&invite)),
                    rx(SECOND, response(&invite, 180)),
                    rx(SECOND, response(&invite, 200)),
                    rx(SECOND, bytes(&join.in_dialog("BYE", 1))),
                ]
            ),
            vec![
                r#"60970_2 {"event": "EventOffHook", "ThisDN": "60970_2", "Extensions": {"AppearanceIndex": 1}}"#,
                r#"60970_2 {"event": "EventRinging", "ThisDN": "60970_2", "Extensions": {"AppearanceIndex": 1}}"#,
                r#"60970_2 {"event": "EventEstablished", "ThisDN": "60970_2", "Extensions": {"AppearanceIndex": 1}}"#,
                r#"60970_2 {"event": "EventReleased", "ThisDN": "60970_2"}"#,
                r#"60970_2 {"event": "EventOnHook", "ThisDN": "60970_2"}"#,
            ]
        );
    }

    #[test]
    fn a_refused_join_is_released_without_other_dn() {
        let join = Call {
            id: "j1",
            from: LINE,
            to: LINE,
        };
        let invite = join.invite(Some("1"));
        let mut d = deriver();
        assert_eq!(
            feed(
                &mut d,
                vec![
                    tx(LINE, bytes(&invite)),
                    rx(LINE, response(&invite, 403)),
                    rx(LINE, response(&invite, 403)),
                ]
            ),
            vec![
                r#"60970 {"event": "EventOffHook", "ThisDN": "60970", "Extensions": {"AppearanceIndex": 1}}"#,
                r#"60970 {"event": "EventReleased", "ThisDN": "60970"}"#,
            ]
        );
    }

    #[test]
    fn hold_then_bye_by_the_holder_gives_no_on_hook() {
        let mut d = deriver();
        answered_inbound(&mut d);
        // The callee's own requests: From and To swapped, its own CSeq.
        let back = Call {
            id: TO_LINE.id,
            from: LINE,
            to: CALLER,
        };
        let hold = back.reinvite(1, "sendonly");
        assert_eq!(
            feed(
                &mut d,
                vec![
                    tx(LINE, bytes(&hold)),
                    rx(LINE, response(&hold, 100)),
                    rx(LINE, response(&hold, 200)),
                    rx(LINE, response(&hold, 200)),
                    tx(LINE, bytes(&back.in_dialog("ACK", 1))),
                    tx(LINE, bytes(&back.in_dialog("BYE", 2))),
                    rx(LINE, response(&back.in_dialog("BYE", 2), 200)),
                ]
            ),
            vec![
                r#"60970 {"event": "EventHeld", "ThisDN": "60970", "OtherDN": "60972"}"#,
                r#"60970 {"event": "EventReleased", "ThisDN": "60970", "OtherDN": "60972"}"#,
            ]
        );
    }

    #[test]
    fn hold_and_retrieve_by_re_invite_and_received_re_invites_say_nothing() {
        let call = Call {
            id: "o1",
            from: LINE,
            to: CALLER,
        };
        let invite = call.invite(None);
        let inactive = call.reinvite(2, "inactive");
        let again = call.reinvite(3, "sendonly");
        let offerless = call.reinvite(4, "");
        let resume = call.reinvite(5, "sendrecv");
        let refused = call.reinvite(6, "sendonly");
        let theirs = Call {
            id: "o1",
            from: CALLER,
            to: LINE,
        }
        .reinvite(1, "sendonly");
        let mut d = deriver();
        let events = feed(
            &mut d,
            vec![
                tx(LINE, bytes(&invite)),
                rx(LINE, response(&invite, 200)),
                rx(LINE, bytes(&theirs)),
                tx(LINE, response(&theirs, 200)),
                tx(LINE, bytes(&inactive)),
                rx(LINE, response(&inactive, 200)),
                tx(LINE, bytes(&again)),
                rx(LINE, response(&again, 200)),
                tx(LINE, bytes(&offerless)),
                rx(LINE, response(&offerless, 200)),
                tx(LINE, bytes(&resume)),
                rx(LINE, response(&resume, 200)),
                rx(LINE, response(&resume, 200)),
                tx(LINE, bytes(&refused)),
                rx(LINE, response(&refused, 491)),
                // A BYE of a talking shared-line phone: it goes on hook.
                tx(LINE, bytes(&call.in_dialog("BYE", 7))),
            ],
        );
        assert_eq!(
            events,
            vec![
                r#"60970 {"event": "EventOffHook", "ThisDN": "60970"}"#,
                r#"60970 {"event": "EventDialing", "ThisDN": "60970", "OtherDN": "60972"}"#,
                r#"60970 {"event": "EventEstablished", "ThisDN": "60970", "OtherDN": "60972"}"#,
                r#"60970 {"event": "EventHeld", "ThisDN": "60970", "OtherDN": "60972"}"#,
                r#"60970 {"event": "EventRetrieved", "ThisDN": "60970", "OtherDN": "60972"}"#,
                r#"60970 {"event": "EventReleased", "ThisDN": "60970", "OtherDN": "60972"}"#,
                r#"60970 {"event": "EventOnHook", "ThisDN": "60970"}"#,
            ]
        );
    }

    #[test]
    fn bye_from_the_far_end_puts_a_talking_shared_line_phone_on_hook() {
        let mut d = deriver();
        answered_inbound(&mut d);
        let bye = TO_LINE.in_dialog("BYE", 2);
        assert_eq!(
            feed(
                &mut d,
                vec![
                    rx(LINE, bytes(&bye)),
                    rx(LINE, bytes(&bye)),
                    tx(LINE, response(&bye, 200)),
                ]
            ),
            vec![
                r#"60970 {"event": "EventReleased", "ThisDN": "60970", "OtherDN": "60972"}"#,
                r#"60970 {"event": "EventOnHook", "ThisDN": "60970"}"#,
            ]
        );
    }

    #[test]
    fn a_plain_phone_is_released_without_on_hook() {
        let mut d = deriver();
        answered_inbound(&mut d);
        let bye = OUT.in_dialog("BYE", 2);
        assert_eq!(
            feed(
                &mut d,
                vec![
                    tx(CALLER, bytes(&bye)),
                    tx(CALLER, bytes(&bye)),
                    rx(CALLER, response(&bye, 200)),
                ]
            ),
            vec![r#"60972 {"event": "EventReleased", "ThisDN": "60972", "OtherDN": "60970"}"#]
        );
    }

    #[test]
    fn retransmissions_are_deduplicated() {
        let out = OUT.invite(None);
        let line = TO_LINE.invite(Some("1"));
        let cancel = TO_LINE.cancel();
        let mut d = deriver();
        assert_eq!(
            feed(
                &mut d,
                vec![
                    tx(CALLER, bytes(&out)),
                    tx(CALLER, bytes(&out)),
                    rx(LINE, bytes(&line)),
                    rx(LINE, bytes(&line)),
                    rx(CALLER, response(&out, 200)),
                    rx(CALLER, response(&out, 200)),
                    rx(LINE, cancel.clone()),
                    rx(LINE, cancel),
                    // Too late: the call is gone.
                    tx(LINE, response(&line, 200)),
                ]
            ),
            vec![
                r#"60972 {"event": "EventOffHook", "ThisDN": "60972"}"#,
                r#"60972 {"event": "EventDialing", "ThisDN": "60972", "OtherDN": "60970"}"#,
                r#"60970 {"event": "EventRinging", "ThisDN": "60970", "OtherDN": "60972", "Extensions": {"AppearanceIndex": 1}}"#,
                r#"60972 {"event": "EventEstablished", "ThisDN": "60972", "OtherDN": "60970"}"#,
                r#"60970 {"event": "EventReleased", "ThisDN": "60970", "OtherDN": "60972"}"#,
            ]
        );
    }

    #[test]
    fn cancel_sent_releases_once_and_the_487_says_nothing() {
        let call = Call {
            id: "o1",
            from: LINE,
            to: CALLER,
        };
        let invite = call.invite(Some("1"));
        let mut d = deriver();
        let events = feed(
            &mut d,
            vec![
                tx(LINE, bytes(&invite)),
                rx(LINE, response(&invite, 180)),
                tx(LINE, call.cancel()),
                tx(LINE, call.cancel()),
                rx(LINE, response(&parse(call.cancel()), 200)),
                rx(LINE, response(&invite, 487)),
                // A late 2xx (CANCEL crossed it) and its BYE add nothing.
                rx(LINE, response(&invite, 200)),
                tx(LINE, bytes(&call.in_dialog("BYE", 2))),
            ],
        );
        assert_eq!(
            events[2..],
            [r#"60970 {"event": "EventReleased", "ThisDN": "60970", "OtherDN": "60972"}"#]
        );
    }

    #[test]
    fn a_refused_call_is_released_but_a_challenge_is_not() {
        let busy = Call {
            id: "o1",
            from: CALLER,
            to: LINE,
        };
        let challenged = Call {
            id: "o2",
            from: CALLER,
            to: LINE,
        };
        let invite = busy.invite(None);
        let first = challenged.invite(None);
        let retry = parse(challenged.request("INVITE", 2, "").build());
        let mut d = deriver();
        let events = feed(
            &mut d,
            vec![
                tx(CALLER, bytes(&invite)),
                rx(CALLER, response(&invite, 486)),
                rx(CALLER, response(&invite, 486)),
                tx(CALLER, bytes(&first)),
                rx(CALLER, response(&first, 407)),
                tx(CALLER, bytes(&retry)),
                rx(CALLER, response(&retry, 200)),
            ],
        );
        assert_eq!(
            events,
            vec![
                r#"60972 {"event": "EventOffHook", "ThisDN": "60972"}"#,
                r#"60972 {"event": "EventDialing", "ThisDN": "60972", "OtherDN": "60970"}"#,
                r#"60972 {"event": "EventReleased", "ThisDN": "60972", "OtherDN": "60970"}"#,
                r#"60972 {"event": "EventOffHook", "ThisDN": "60972"}"#,
                r#"60972 {"event": "EventDialing", "ThisDN": "60972", "OtherDN": "60970"}"#,
                r#"60972 {"event": "EventEstablished", "ThisDN": "60972", "OtherDN": "60970"}"#,
            ]
        );
    }

    #[test]
    fn messages_outside_a_known_dialog_say_nothing() {
        let stray = Call {
            id: "x",
            from: CALLER,
            to: LINE,
        };
        let invite = stray.invite(None);
        let mut d = deriver();
        assert!(feed(
            &mut d,
            vec![
                rx(LINE, bytes(&stray.in_dialog("BYE", 2))),
                rx(LINE, stray.cancel()),
                tx(LINE, stray.cancel()),
                rx(LINE, response(&invite, 200)),
                tx(LINE, response(&invite, 200)),
                tx(LINE, bytes(&stray.reinvite(3, "sendonly"))),
                rx(LINE, bytes(&stray.in_dialog("NOTIFY", 4))),
            ]
        )
        .is_empty());
        // A ringing call is ended by CANCEL, not by BYE, nor by an answer
        // to some other request.
        let ringing = feed(
            &mut d,
            vec![
                rx(LINE, bytes(&invite)),
                rx(LINE, bytes(&stray.in_dialog("BYE", 2))),
                tx(LINE, response(&stray.in_dialog("INFO", 1), 200)),
                tx(LINE, response(&invite, 500)),
            ],
        );
        assert_eq!(ringing.len(), 1);
    }

    #[test]
    fn ignores_strangers_problems_and_garbage() {
        let mut d = deriver();
        let offer = bytes(&TO_LINE.invite(Some("1")));
        assert!(d
            .observe(&record("60973", Direction::Received, offer.clone()))
            .is_empty());
        let mut flagged = record(LINE, Direction::Received, offer.clone());
        flagged.problem = Some("truncated".into());
        assert!(d.observe(&flagged).is_empty());
        let cut: &[u8] = &offer[..offer.len() / 2];
        for raw in crate::derive::GARBAGE.into_iter().chain([cut]) {
            for dir in [Direction::Sent, Direction::Received] {
                assert!(d.observe(&record(LINE, dir, raw.to_vec())).is_empty());
            }
        }
        // Nothing above was taken for the offer.
        assert_eq!(feed(&mut d, vec![rx(LINE, offer)]).len(), 1);
    }

    #[test]
    fn cut_or_corrupted_messages_never_panic() {
        let call = Call {
            id: "o1",
            from: LINE,
            to: CALLER,
        };
        let invite = call.invite(Some("1"));
        let hold = call.reinvite(2, "sendonly");
        let goods = [
            bytes(&invite),
            response(&invite, 200),
            bytes(&hold),
            response(&hold, 200),
            bytes(&call.in_dialog("BYE", 3)),
        ];
        let mut d = deriver();
        for good in &goods {
            for dir in [Direction::Sent, Direction::Received] {
                for cut in 0..good.len() {
                    d.observe(&record(LINE, dir, good[..cut].to_vec()));
                }
                for at in 0..good.len() {
                    for byte in [b'"', b'<', b'>', b';', b',', b'=', b'*', b' ', 0xff] {
                        let mut bad = good.clone();
                        bad[at] = byte;
                        d.observe(&record(LINE, dir, bad));
                    }
                }
            }
        }
    }

    #[test]
    fn observability_lists_party_and_wire_channels_and_what_sip_cannot_show() {
        let o = deriver().observability();
        assert_eq!(o.source, SOURCE);
        assert_eq!(
            o.channels,
            Some(vec![
                Channel::Dn(CALLER.into()),
                Channel::Dn(LINE.into()),
                Channel::Dn(SECOND.into()),
                Channel::Wire(LINE.into()),
                Channel::Wire(SECOND.into()),
            ])
        );
        assert!(!o.sees_channel(&Channel::Monitoring));
        assert!(!o.sees_channel(&Channel::Wire(CALLER.into())));
        for attr in [Attr::ThisDn, Attr::OtherDn, Attr::AppearanceIndex] {
            assert!(o.sees_attr(attr), "{attr}");
        }
        for attr in WIRE {
            assert!(o.sees_attr(attr), "{attr}");
        }
        for attr in [
            Attr::ConnId,
            Attr::ThisDnRole,
            Attr::OtherDnRole,
            Attr::ThirdPartyDn,
            Attr::ThirdPartyDnRole,
            Attr::Dn,
            Attr::PartyId,
            Attr::State,
            Attr::CallState,
            Attr::CallType,
            Attr::Cause,
            Attr::ServiceId,
        ] {
            assert!(!o.sees_attr(attr), "{attr}");
        }
        let blind = [
            KnownEvent::PartyAdded,
            KnownEvent::PartyChanged,
            KnownEvent::PartyDeleted,
            KnownEvent::PrivateInfo,
            KnownEvent::Abandoned,
            KnownEvent::Diverted,
            KnownEvent::NetworkReached,
            KnownEvent::DestinationBusy,
            KnownEvent::CallCreated,
            KnownEvent::CallDeleted,
            KnownEvent::CallPartyAdded,
            KnownEvent::CallPartyState,
            KnownEvent::CallPartyDeleted,
            KnownEvent::CallPartyMoved,
            KnownEvent::CallDataChanged,
        ];
        assert_eq!(o.blind_events, blind);
        for seen in [
            KnownEvent::OffHook,
            KnownEvent::OnHook,
            KnownEvent::Dialing,
            KnownEvent::Ringing,
            KnownEvent::Established,
            KnownEvent::Released,
            KnownEvent::Held,
            KnownEvent::Retrieved,
            KnownEvent::Offered,
            KnownEvent::Appearance,
        ] {
            assert!(o.sees_event(&seen.into()), "{seen}");
        }
    }

    #[test]
    fn a_cancel_that_crossed_the_answer_releases_the_phone_either_way() {
        // Both phones answered; the server took the first and cancelled
        // the other, whose 200 had crossed the CANCEL. The caller's ACK and
        // BYE of that second dialog (or none, from a B2BUA) change nothing.
        for tail in [true, false] {
            let mut d = deriver();
            let second = TO_SECOND.invite(Some("1"));
            let mut records = vec![
                rx(SECOND, bytes(&second)),
                tx(SECOND, response(&second, 180)),
                tx(SECOND, response(&second, 200)),
                rx(SECOND, TO_SECOND.cancel()),
                tx(SECOND, response(&parse(TO_SECOND.cancel()), 200)),
            ];
            if tail {
                records.push(rx(SECOND, bytes(&TO_SECOND.in_dialog("ACK", 1))));
                records.push(rx(SECOND, bytes(&TO_SECOND.in_dialog("BYE", 2))));
            }
            let events = feed(&mut d, records);
            assert_eq!(
                events[1..],
                [r#"60970_2 {"event": "EventReleased", "ThisDN": "60970_2", "OtherDN": "60972"}"#],
                "{tail}"
            );
        }
        // Not crossed: acknowledged first, the CANCEL comes too late.
        let mut d = deriver();
        let second = TO_SECOND.invite(Some("1"));
        let events = feed(
            &mut d,
            vec![
                rx(SECOND, bytes(&second)),
                tx(SECOND, response(&second, 200)),
                rx(SECOND, bytes(&TO_SECOND.in_dialog("ACK", 1))),
                rx(SECOND, TO_SECOND.cancel()),
            ],
        );
        assert!(
            events[1].contains("EventEstablished") && events.len() == 2,
            "{events:?}"
        );
    }

    #[test]
    fn a_bye_of_a_forked_dialog_does_not_release_the_call() {
        // The caller's INVITE answered by two phones (a forking proxy):
        // it ACKs the second answer and ends that dialog; its call stays up.
        let mut d = deriver();
        let out = OUT.invite(None);
        let fork = Builder::response_to(&out, 200, Some("u")).build();
        let fork_bye = String::from_utf8(bytes(&OUT.in_dialog("BYE", 2)))
            .unwrap()
            .replace("tag=t", "tag=u");
        let events = feed(
            &mut d,
            vec![
                tx(CALLER, bytes(&out)),
                rx(CALLER, response(&out, 200)),
                rx(CALLER, fork),
                tx(CALLER, fork_bye),
            ],
        );
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events[2].contains("EventEstablished"));
        // Its own dialog's BYE does.
        let bye = feed(&mut d, vec![tx(CALLER, bytes(&OUT.in_dialog("BYE", 3)))]);
        assert!(bye[0].contains("EventReleased"), "{bye:?}");
    }

    #[test]
    fn state_is_kept_per_party() {
        let mut d = deriver();
        let invite = TO_LINE.invite(Some("1"));
        let a = d.observe(&record(LINE, Direction::Received, bytes(&invite)));
        let b = d.observe(&record(SECOND, Direction::Received, bytes(&invite)));
        assert_eq!((a.len(), b.len()), (1, 1));
        assert_eq!(b[0].channel, Channel::Dn(SECOND.into()));
        // Answered at one phone only: the other still rings.
        assert_eq!(
            feed(
                &mut d,
                vec![
                    tx(LINE, response(&invite, 200)),
                    rx(LINE, bytes(&TO_LINE.in_dialog("ACK", 1)))
                ]
            )
            .len(),
            1
        );
        assert_eq!(
            feed(&mut d, vec![rx(SECOND, TO_LINE.cancel())]),
            vec![r#"60970_2 {"event": "EventReleased", "ThisDN": "60970_2", "OtherDN": "60972"}"#]
        );
    }
}
