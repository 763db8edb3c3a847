//! The sans-IO core of the embedded reference SCA server: a registrar, a
//! call-info notifier and line-seize arbiter for each shared line, and a
//! B2BUA. It follows the Genesys page for the events it reports and the
//! BroadWorks model for what it says on the wire.
//!
//! It takes parsed messages and the time, and yields messages to send,
//! events to publish and when it next wants to be woken; the edge in
//! [`super::run`] owns the sockets and the clock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::fault::Fault;
use crate::model::{
    Attr, CallState, CallType, Cause, Channel, Event, KnownEvent as E, PartyState, Role, Value,
};
use crate::sip::build::{sdp, Builder};
use crate::sip::dialog::Dialog;
use crate::sip::headers::{appearances, ApState, Appearance, AppearanceIndex, EventHeader, Reason};
use crate::sip::record::Inbound;
use crate::sip::retransmit::Retransmitter;
use crate::sip::sdp::HoldStyle;
use crate::sip::{Message, Transport};
use crate::topology::Topology;

/// Bytes to send, how and where.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub transport: Transport,
    pub to: SocketAddr,
    /// Over TCP or TLS, where to open a connection when none is open to
    /// `to` (see [`crate::sip::transport::Endpoint::send_or`]).
    pub reconnect: Option<SocketAddr>,
    pub bytes: Vec<u8>,
}

/// Where a peer is reached: the transport and source address its requests
/// came from (connection reuse for TCP, rport-style for UDP), and over
/// TCP or TLS the address its Contact names, where a new connection goes
/// once that one is closed (RFC 3261 18.1.1: the request's target).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Via {
    transport: Transport,
    addr: SocketAddr,
    reconnect: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
struct Binding {
    via: Via,
    contact: String,
}

/// A subscription we notify (call-info) or arbitrate (line-seize).
#[derive(Debug)]
struct Subscription {
    line: String,
    subscriber: String,
    dialog: Dialog,
    via: Via,
    expires: u32,
}

#[derive(Debug)]
struct Seizure {
    sub: Subscription,
    index: u32,
    until: Instant,
    /// The call that took this appearance, once the phone dialled.
    taken: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegState {
    /// INVITE sent (or received) and not answered.
    Offered,
    Answered,
    /// Cancelled by us; waiting for its 487.
    Cancelled,
    Gone,
}

/// One party of a call and our dialog with its phone.
#[derive(Debug)]
struct Leg {
    dn: String,
    party: u32,
    dialog: Dialog,
    via: Via,
    /// The INVITE the phone sent us, when we are its UAS.
    uas: Option<Message>,
    /// Our INVITE's branch, when we are its UAC (for CANCEL and ACK).
    branch: String,
    state: LegState,
    /// On hold, and whether privately.
    held: Option<bool>,
    /// Its phone hung up and was told so; the party stays in the call
    /// until the call's end reports the deletions.
    released: bool,
}

impl Leg {
    fn live(&self) -> bool {
        matches!(self.state, LegState::Offered | LegState::Answered)
    }
}

#[derive(Debug)]
struct Call {
    conn_id: String,
    /// What the originator (legs[0]) dialled.
    dialled: String,
    line: Option<String>,
    appearance: Option<u32>,
    legs: Vec<Leg>,
    answered: bool,
    /// A provisional response came back for an outbound call.
    progressing: bool,
    /// Taken over by the other phone of the line (a retrieve).
    retrieved: bool,
    next_party: u32,
}

impl Call {
    fn conference(&self) -> bool {
        self.legs
            .iter()
            .filter(|l| l.state == LegState::Answered)
            .count()
            > 2
    }

    /// The DN a leg's events name as the other party.
    fn other_dn(&self, leg: usize) -> String {
        if leg == 0 {
            self.dialled.clone()
        } else {
            self.legs[0].dn.clone()
        }
    }

    fn take_party(&mut self) -> u32 {
        let p = self.next_party;
        self.next_party += 1;
        p
    }
}

/// The embedded reference server.
#[derive(Debug)]
pub struct Server {
    /// Fault::StopsOnReboot has struck: it answers nothing any more.
    stopped: bool,
    domain: String,
    local: SocketAddr,
    topology: Topology,
    fault: Option<Fault>,
    counter: u64,
    conn_ids: u64,
    bindings: HashMap<String, Binding>,
    call_info: Vec<Subscription>,
    seizures: Vec<Seizure>,
    calls: Vec<Call>,
    /// What each line's subscribers were last told.
    told: HashMap<String, BTreeMap<u32, (ApState, Option<String>)>>,
    /// Fault::KeepsAppearance: the appearances of ended calls that the
    /// line's state never freed (a fresh subscription is told them).
    kept: HashMap<String, BTreeMap<u32, (ApState, Option<String>)>>,
    /// Fault::CancelledStaysAlerting, Fault::RejectedStaysProgressing: the
    /// appearances of ended calls the faulty server never frees, told to
    /// every subscriber as they were.
    stuck: HashMap<String, BTreeMap<u32, (ApState, Option<String>)>>,
    out: VecDeque<Outgoing>,
    events: VecDeque<(Channel, Event)>,
    /// The final answers to the latest non-INVITE requests, by top Via
    /// branch and method: a retransmission (a phone over UDP whose answer
    /// was late) gets the same answer and changes nothing (RFC 3261
    /// 17.2.2), instead of, say, seizing again a seizure that lapsed.
    answered: VecDeque<((String, String), Vec<u8>)>,
    /// Digest checks, when the server challenges.
    auth: Option<crate::sip::auth::Challenger>,
    /// Its 2xx answers to INVITEs, sent again until their ACK comes (RFC
    /// 3261 13.3.1.4, on every transport): a caller whose ACK was lost
    /// gets the 200 again and acknowledges that.
    resend: Retransmitter<Via>,
    /// Its requests over UDP (NOTIFYs, INVITEs, BYEs, CANCELs), sent again
    /// on RFC 3261's timers until answered: phones that lose datagrams
    /// (`--loss`) still get them.
    resend_requests: Retransmitter<Via>,
    /// The time of the message or timeout being handled.
    now: Instant,
}

/// How many answered non-INVITE transactions the server remembers: far
/// more than a case has in flight, so memory stays bounded.
const ANSWERED: usize = 512;

/// A message's transaction: its top Via branch and its CSeq method.
fn transaction(m: &Message) -> Option<(String, String)> {
    Some((m.via_branch()?, m.cseq()?.1.to_string()))
}

fn id(s: &str) -> Value {
    Value::Id(s.to_string())
}

fn dn(s: &str) -> Value {
    Value::Dn(s.to_string())
}

fn role(r: Role) -> Value {
    Value::Role(r)
}

fn state(s: CallState) -> Value {
    Value::CallState(s)
}

/// The longest seizure we grant, as Kamailio and BroadWorks phones use.
const MAX_SEIZE: u32 = 15;

impl Server {
    pub fn new(
        domain: &str,
        local: SocketAddr,
        topology: Topology,
        fault: Option<Fault>,
    ) -> Server {
        Server {
            stopped: false,
            domain: domain.to_string(),
            local,
            topology,
            fault,
            counter: 0,
            // T-Server ConnIDs are 16 hex digits; start where real ones look.
            conn_ids: 0x006e_025a_6c4e_1000,
            bindings: HashMap::new(),
            call_info: Vec::new(),
            seizures: Vec::new(),
            calls: Vec::new(),
            told: HashMap::new(),
            kept: HashMap::new(),
            stuck: HashMap::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
            answered: VecDeque::new(),
            auth: None,
            resend: Retransmitter::new(crate::sip::retransmit::T1).answers_only(),
            resend_requests: Retransmitter::new(crate::sip::retransmit::T1),
            now: Instant::now(),
        }
    }

    /// The server challenges REGISTER and SUBSCRIBE as a registrar and
    /// notifier does (401), INVITE, re-INVITE and BYE as a proxy does
    /// (407), and lets through only what `challenger` verifies.
    pub fn challenging(mut self, challenger: crate::sip::auth::Challenger) -> Server {
        self.auth = Some(challenger);
        self
    }

    /// Whether `req` may go on; if not, its challenge has been sent.
    fn authorized(&mut self, req: &Message, from: &Via) -> bool {
        use crate::sip::auth::{Gate, Kind};
        let kind = match req.method().as_deref() {
            Some("REGISTER" | "SUBSCRIBE") => Kind::Www,
            Some("INVITE" | "BYE") => Kind::Proxy,
            _ => return true,
        };
        let Some(gate) = self.auth.as_mut().map(|a| a.check(req, kind)) else {
            return true;
        };
        match gate {
            Gate::Pass => true,
            Gate::Challenge { status, headers } => {
                let b = headers
                    .iter()
                    .fold(Builder::response_to(req, status, None), |b, (n, v)| {
                        b.header(n, v)
                    });
                self.send(from, b.build());
                false
            }
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    /// It has stopped answering (Fault::StopsOnReboot), as a crashed
    /// server does: its edge stops it.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    pub fn poll_event(&mut self) -> Option<(Channel, Event)> {
        self.events.pop_front()
    }

    /// When the server next needs [`Server::handle_timeout`]: a seizure
    /// expiring, a 2xx or a request due again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let expiry = self
            .seizures
            .iter()
            .map(|s| s.until)
            .min()
            .filter(|_| !self.has(Fault::SeizeNeverExpires));
        [
            expiry,
            self.resend.poll_timeout(),
            self.resend_requests.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        self.now = now;
        let mut again = self.resend_requests.poll_transmit(now);
        again.extend(self.resend.poll_transmit(now));
        for (via, bytes) in again {
            // The fault: a 2xx sent again (its ACK did not come) frees
            // the call's appearance.
            if self.has(Fault::LostAckFreesAppearance) && bytes.starts_with(b"SIP/2.0 2") {
                let call_id = Message::parse(bytes.clone()).map(|m| m.call_id().to_string());
                if let Some((c, _)) = call_id.ok().and_then(|id| self.find_leg(&id)) {
                    self.calls[c].appearance = None;
                }
            }
            self.out.push_back(self.outgoing(&via, bytes));
        }
        if self.has(Fault::SeizeNeverExpires) {
            return self.notify_changes();
        }
        while let Some(i) = self.seizures.iter().position(|s| s.until <= now) {
            let s = self.seizures.remove(i);
            let reason = if s.taken { "noresource" } else { "timeout" };
            self.end_seizure(s, reason);
        }
        self.notify_changes();
    }

    fn has(&self, f: Fault) -> bool {
        self.fault == Some(f)
    }

    fn unique(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("{what}{}-ref", self.counter)
    }

    fn emit(&mut self, who: &str, event: Event) {
        self.events.push_back((Channel::Dn(who.to_string()), event));
    }

    fn monitor(&mut self, event: Event) {
        self.events.push_back((Channel::Monitoring, event));
    }

    fn send(&mut self, via: &Via, bytes: Vec<u8>) {
        if !bytes.starts_with(b"SIP/2.0 ") {
            if via.transport == Transport::Udp {
                if let Ok(m) = Message::parse(bytes.clone()) {
                    self.resend_requests.sent(&m, via.clone(), self.now);
                }
            }
        } else {
            // The answer a retransmitted request gets again (RFC 3261
            // 17.2): a non-INVITE's final one, an INVITE's latest.
            let answer = Message::parse(bytes.clone()).ok().filter(|m| {
                let invite = m.cseq().is_some_and(|(_, method)| method == "INVITE");
                m.status().is_some_and(|s| s >= 200 || invite)
            });
            // Over UDP a failure to an INVITE is sent again until its ACK
            // too (17.2.1), a 2xx on every transport.
            match &answer {
                Some(m) if via.transport == Transport::Udp => {
                    self.resend_requests.sent(m, via.clone(), self.now)
                }
                Some(m) => self.resend.sent(m, via.clone(), self.now),
                None => {}
            }
            if let Some(key) = answer.as_ref().and_then(transaction) {
                if self.answered.len() == ANSWERED {
                    self.answered.pop_front();
                }
                self.answered.push_back((key, bytes.clone()));
            }
        }
        let out = self.outgoing(via, bytes);
        self.out.push_back(out);
    }

    /// What goes to `via`: over the connection it names, else (the
    /// fault: never) to its Contact.
    fn outgoing(&self, via: &Via, bytes: Vec<u8>) -> Outgoing {
        Outgoing {
            transport: via.transport,
            to: via.addr,
            reconnect: via.reconnect.filter(|_| !self.has(Fault::NoReconnect)),
            bytes,
        }
    }

    fn respond(&mut self, req: &Message, from: &Via, code: u16, to_tag: Option<&str>) {
        let bytes = Builder::response_to(req, code, to_tag).build();
        self.send(from, bytes);
    }

    fn via_header(&mut self, transport: Transport) -> (String, String) {
        let branch = self.unique("z9hG4bK");
        (self.via_with(transport, &branch), branch)
    }

    /// Our Via with a given branch (a CANCEL or a failure's ACK reuses the
    /// INVITE's, RFC 3261 9.1 and 17.1.1.3).
    fn via_with(&self, transport: Transport, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch}",
            transport.via_token(),
            self.local
        )
    }

    fn contact(&self, transport: Transport) -> String {
        match transport {
            Transport::Udp => format!("<sip:b2bua@{}>", self.local),
            other => format!("<sip:b2bua@{};transport={other}>", self.local),
        }
    }

    fn aor(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.domain)
    }

    fn appearance(
        &self,
        index: AppearanceIndex,
        state: Option<ApState>,
        uri: Option<String>,
    ) -> String {
        Appearance {
            target: format!("sip:{}", self.domain),
            index,
            state,
            uri,
        }
        .to_header()
    }

    fn our_sdp(&self, direction: &str) -> Vec<u8> {
        sdp(
            "b2bua",
            self.local.ip(),
            self.local.port().wrapping_add(2),
            direction,
        )
    }

    /// Sends an in-dialog request on a leg or subscription.
    fn request_in(
        &mut self,
        dialog: &mut Dialog,
        via: &Via,
        method: &str,
        extra: &[(&str, String)],
    ) {
        let (v, _) = self.via_header(via.transport);
        let (mut b, _) = dialog.request(method, &v);
        for (name, value) in extra {
            b = b.header(name, value);
        }
        self.send(via, b.build());
    }

    // ---- dispatch -------------------------------------------------------------

    pub fn handle(&mut self, inbound: &Inbound, now: Instant) {
        if self.stopped {
            return;
        }
        self.now = now;
        let from = Via {
            transport: inbound.transport,
            addr: inbound.peer,
            reconnect: Some(inbound.transport)
                .filter(|t| *t != Transport::Udp)
                .and_then(|_| inbound.msg.contact_addr()),
        };
        let msg = &inbound.msg;
        self.resend_requests.received(msg, now);
        if msg.is_request() {
            self.resend.received(msg, now);
            if let Some(answer) = transaction(msg).and_then(|key| {
                self.answered
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == key)
                    .map(|(_, a)| a.clone())
            }) {
                return self.send(&from, answer);
            }
            if !self.authorized(msg, &from) {
                return;
            }
            let method = msg.method().unwrap_or_default();
            match method.as_str() {
                "REGISTER" => self.register(msg, from),
                "SUBSCRIBE" => self.subscribe(msg, from, now),
                "INVITE" if msg.to_tag().is_none() => self.invite(msg, from),
                "INVITE" | "UPDATE" => self.reinvite(msg, from),
                "ACK" => {}
                "CANCEL" => self.cancel(msg, from),
                "BYE" => self.bye(msg, from),
                "OPTIONS" | "NOTIFY" => self.respond(msg, &from, 200, None),
                _ => self.respond(msg, &from, 501, None),
            }
        } else {
            self.handle_response(msg);
        }
        self.notify_changes();
    }

    fn user_of(addr: Option<crate::sip::NameAddr>) -> String {
        addr.and_then(|a| a.user().map(str::to_string))
            .unwrap_or_default()
    }

    fn register(&mut self, req: &Message, from: Via) {
        let user = Self::user_of(req.to());
        if user.is_empty() {
            return self.respond(req, &from, 400, None);
        }
        if !self.topology.knows(&user) {
            return self.respond(req, &from, 404, None);
        }
        let contact = req.contact_uri().unwrap_or_default();
        let tag = self.unique("t");
        let bytes = Builder::response_to(req, 200, Some(&tag))
            .header("Contact", &format!("<{contact}>;expires=3600"))
            .build();
        self.send(&from, bytes);
        self.bindings.insert(user, Binding { via: from, contact });
    }

    // ---- subscriptions --------------------------------------------------------

    fn subscribe(&mut self, req: &Message, from: Via, now: Instant) {
        let package = req
            .header("Event")
            .and_then(EventHeader::parse)
            .map(|e| e.package)
            .unwrap_or_default();
        let line = Self::user_of(req.to());
        let subscriber = Self::user_of(req.from());
        let member = self
            .topology
            .line(&line)
            .is_some_and(|l| l.members.contains(&subscriber));
        match package.as_str() {
            "call-info" | "line-seize" if !member => self.respond(req, &from, 403, None),
            "call-info" => self.subscribe_call_info(req, from, line, subscriber),
            "line-seize" => self.subscribe_line_seize(req, from, line, subscriber, now),
            _ => self.respond(req, &from, 489, None),
        }
    }

    /// The dialog of a new subscription, from our (notifier's) side.
    fn subscription_dialog(&mut self, req: &Message, line: &str, subscriber: &str) -> Dialog {
        Dialog {
            call_id: req.call_id().to_string(),
            local: format!("<{}>", self.aor(line)),
            local_tag: self.unique("t"),
            remote: format!("<{}>", self.aor(subscriber)),
            remote_tag: req.from_tag(),
            remote_target: req.contact_uri().unwrap_or_else(|| self.aor(subscriber)),
            route: Dialog::route_set(req, false),
            next_cseq: 1,
        }
    }

    fn accept_subscription(
        &mut self,
        req: &Message,
        from: &Via,
        code: u16,
        tag: &str,
        expires: u32,
    ) {
        let bytes = Builder::response_to(req, code, Some(tag))
            .header("Contact", &self.contact(from.transport))
            .header("Expires", &expires.to_string())
            .build();
        self.send(from, bytes);
    }

    fn subscribe_call_info(&mut self, req: &Message, from: Via, line: String, subscriber: String) {
        let expires = req
            .header("Expires")
            .and_then(|e| e.trim().parse().ok())
            .unwrap_or(3600u32);
        let known = self
            .call_info
            .iter()
            .position(|s| s.dialog.call_id == req.call_id());
        let fresh = known.is_none();
        let rebooted = |s: &Self| {
            req.contact_uri()
                .is_some_and(|contact| s.owns_appearance(&line, &contact))
        };
        if fresh && expires > 0 && self.has(Fault::StopsOnReboot) && rebooted(self) {
            self.stopped = true;
            self.out.clear();
            return;
        }
        if fresh && expires > 0 && !self.has(Fault::RebootKeepsAppearance) {
            if let Some(contact) = req.contact_uri() {
                self.release_owned(&line, &contact);
            }
        }
        let i = match known {
            Some(i) => i,
            None => {
                let dialog = self.subscription_dialog(req, &line, &subscriber);
                self.call_info.push(Subscription {
                    line,
                    subscriber,
                    dialog,
                    via: from.clone(),
                    expires,
                });
                self.call_info.len() - 1
            }
        };
        self.call_info[i].expires = expires;
        let tag = self.call_info[i].dialog.local_tag.clone();
        self.accept_subscription(req, &from, 202, &tag, expires);
        if expires == 0 {
            let sub = self.call_info.remove(i);
            if !self.has(Fault::NoTerminatedNotify) {
                self.notify_call_info(sub, "terminated;reason=timeout".into());
            }
        } else {
            // RFC 6665: a (re)subscription is answered with the full state.
            let state = format!("active;expires={expires}");
            let sub = self.call_info.remove(i);
            let mut sub = self.notify_call_info_of(sub, state, fresh);
            if fresh && self.has(Fault::StaleRoute) {
                // The phone's subscription before this one (its Contact,
                // its line) lends the new one its route from now on.
                if let Some(old) = self.call_info.iter().find(|o| {
                    o.line == sub.line && o.dialog.remote_target == sub.dialog.remote_target
                }) {
                    sub.via = old.via.clone();
                    sub.dialog.route = old.dialog.route.clone();
                }
            }
            self.call_info.insert(i, sub);
        }
    }

    fn subscribe_line_seize(
        &mut self,
        req: &Message,
        from: Via,
        line: String,
        subscriber: String,
        now: Instant,
    ) {
        let expires = req
            .header("Expires")
            .and_then(|e| e.trim().parse().ok())
            .unwrap_or(MAX_SEIZE)
            .min(MAX_SEIZE);
        if let Some(i) = self
            .seizures
            .iter()
            .position(|s| s.sub.dialog.call_id == req.call_id())
        {
            // A refresh, or an unseize with Expires 0.
            let tag = self.seizures[i].sub.dialog.local_tag.clone();
            self.accept_subscription(req, &from, 200, &tag, expires);
            if expires == 0 {
                // Released by the phone: nothing lapsed, so no reason
                // (RFC 6665 names none for an unsubscribe; `timeout` says
                // it was not refreshed).
                let s = self.seizures.remove(i);
                self.end_seizure(s, None);
            } else {
                self.seizures[i].until = now + Duration::from_secs(expires.into());
            }
            return;
        }
        let wanted = appearances(req.headers("Call-Info")).ok().and_then(|a| {
            a.iter().find_map(|a| match a.index {
                AppearanceIndex::Index(i) => Some(i),
                AppearanceIndex::All => None,
            })
        });
        let Some(index) = wanted else {
            return self.respond(req, &from, 400, None);
        };
        if expires == 0 {
            return self.respond(req, &from, 400, None);
        }
        if self.busy(&line).contains_key(&index) && !self.has(Fault::DoubleSeize) {
            let bytes = Builder::response_to(req, 480, None)
                .header("Retry-After", "5")
                .build();
            return self.send(&from, bytes);
        }
        let dialog = self.subscription_dialog(req, &line, &subscriber);
        let tag = dialog.local_tag.clone();
        self.accept_subscription(req, &from, 200, &tag, expires);
        let mut sub = Subscription {
            line,
            subscriber: subscriber.clone(),
            dialog,
            via: from,
            expires,
        };
        let info = self.appearance(AppearanceIndex::Index(index), None, None);
        let via = sub.via.clone();
        self.request_in(
            &mut sub.dialog,
            &via,
            "NOTIFY",
            &[
                ("Event", "line-seize".into()),
                ("Subscription-State", format!("active;expires={expires}")),
                ("Call-Info", info),
            ],
        );
        self.seizures.push(Seizure {
            sub,
            index,
            until: now + Duration::from_secs(expires.into()),
            taken: false,
        });
        // Reference 4 (3): the seizure reaches T-Library as private info.
        if !self.has(Fault::NoPrivateInfo) {
            self.emit(
                &subscriber,
                Event::new(E::PrivateInfo)
                    .with(Attr::ServiceId, Value::Int(4026))
                    .with(Attr::ThisDn, dn(&subscriber))
                    .with(Attr::AppearanceIndex, Value::Int(index.into())),
            );
        }
    }

    fn end_seizure<'a>(&mut self, mut s: Seizure, reason: impl Into<Option<&'a str>>) {
        let via = s.sub.via.clone();
        let state = match reason.into() {
            Some(reason) => format!("terminated;reason={reason}"),
            None => "terminated".to_string(),
        };
        self.request_in(
            &mut s.sub.dialog,
            &via,
            "NOTIFY",
            &[
                ("Event", "line-seize".into()),
                ("Subscription-State", state),
            ],
        );
    }

    /// The appearances of a line that are not idle, and what each holds.
    fn busy(&self, line: &str) -> BTreeMap<u32, (ApState, Option<String>)> {
        let mut busy = BTreeMap::new();
        for s in self
            .seizures
            .iter()
            .filter(|s| s.sub.line == line && !s.taken)
        {
            busy.insert(s.index, (ApState::Seized, None));
        }
        for call in self
            .calls
            .iter()
            .filter(|c| c.line.as_deref() == Some(line))
        {
            let Some(index) = call.appearance else {
                continue;
            };
            let members = self
                .topology
                .line(line)
                .map(|l| l.members.clone())
                .unwrap_or_default();
            let outbound = members.contains(&call.legs[0].dn);
            // The appearance-uri names the party outside the line.
            let remote = call
                .legs
                .iter()
                .find(|l| !members.contains(&l.dn))
                .map(|l| format!("<{}>", self.aor(&l.dn)));
            let held = call
                .legs
                .iter()
                .filter(|l| l.state == LegState::Answered)
                .find_map(|l| l.held);
            // Until the far end answers with a provisional response, an
            // outbound call's appearance is what the seizure made it.
            let remote = if outbound && !call.progressing {
                None
            } else {
                remote
            };
            let state = match held {
                _ if call.conference() => ApState::BridgeActive,
                Some(_) if self.has(Fault::HoldNotNotified) => ApState::Active,
                Some(true) => ApState::HeldPrivate,
                Some(false) => ApState::Held,
                None if call.answered => ApState::Active,
                None if outbound && call.progressing => ApState::Progressing,
                None if outbound => ApState::Seized,
                None => ApState::Alerting,
            };
            busy.insert(index, (state, remote));
        }
        for (i, stuck) in self.stuck.get(line).into_iter().flatten() {
            busy.entry(*i).or_insert_with(|| stuck.clone());
        }
        busy
    }

    /// RFC 6665 4.2.2: a NOTIFY answered 481 (or with any other failure
    /// but a challenge, which asks for credentials, not for an end) ends
    /// its subscription; the subscriber is not notified again.
    fn notify_answered(&mut self, resp: &Message) {
        let code = resp.status().unwrap_or(0);
        if code < 300 || code == 401 || code == 407 || self.has(Fault::RefusedStillNotified) {
            return;
        }
        // The answer's From is our NOTIFY's: the notifier's tag.
        let ours = resp.from_tag();
        self.call_info.retain(|s| {
            s.dialog.call_id != resp.call_id()
                || ours.as_deref() != Some(s.dialog.local_tag.as_str())
        });
    }

    /// A fresh call-info SUBSCRIBE from `contact` (a new dialog, no
    /// unsubscribe first) is what a phone sends after a reboot: the
    /// appearances of `line` whose calls that contact is in no longer
    /// have a phone, so they are freed (BroadWorks; Kamailio's sca does
    /// the same, sca_appearance_owner_release_all). The calls stay up to
    /// their other ends; only the line's state forgets them, and every
    /// subscriber is told so (notify_changes after this message).
    /// Does the phone at `contact` own a busy appearance of `line`?
    fn owns_appearance(&self, line: &str, contact: &str) -> bool {
        self.calls
            .iter()
            .filter(|c| c.line.as_deref() == Some(line) && c.appearance.is_some())
            .any(|c| {
                c.legs
                    .iter()
                    .any(|l| l.live() && l.dialog.remote_target == contact)
            })
    }

    fn release_owned(&mut self, line: &str, contact: &str) {
        for call in self
            .calls
            .iter_mut()
            .filter(|c| c.line.as_deref() == Some(line) && c.appearance.is_some())
        {
            let owned = call
                .legs
                .iter()
                .any(|l| l.live() && l.dialog.remote_target == contact);
            if owned {
                call.appearance = None;
            }
        }
    }

    /// Call `c`'s line, appearance and what the line says of it now.
    fn appearance_now(&self, c: usize) -> Option<(String, u32, (ApState, Option<String>))> {
        let (line, index) = (self.calls[c].line.clone()?, self.calls[c].appearance?);
        let now = self.busy(&line).get(&index).cloned()?;
        Some((line, index, now))
    }

    /// The Call-Info of a NOTIFY to `line`'s subscribers; `fresh`: the
    /// first of a new subscription (which reads the line's stored state).
    fn call_info_header(&self, line: &str, fresh: bool) -> String {
        let mut busy = self.busy(line);
        if fresh {
            for (i, kept) in self.kept.get(line).into_iter().flatten() {
                busy.entry(*i).or_insert_with(|| kept.clone());
            }
        }
        let mut elements: Vec<String> = busy
            .into_iter()
            .map(|(index, (state, uri))| {
                self.appearance(AppearanceIndex::Index(index), Some(state), uri)
            })
            .collect();
        elements.push(self.appearance(AppearanceIndex::All, Some(ApState::Idle), None));
        elements.join(",")
    }

    fn notify_call_info(&mut self, sub: Subscription, state: String) -> Subscription {
        self.notify_call_info_of(sub, state, false)
    }

    fn notify_call_info_of(
        &mut self,
        mut sub: Subscription,
        state: String,
        fresh: bool,
    ) -> Subscription {
        let mut cseq_header = None;
        if self.has(Fault::MalformedNotify) && sub.dialog.next_cseq > 1 {
            cseq_header = Some(format!("NOTIFY {}", sub.dialog.next_cseq));
        }
        let info = self.call_info_header(&sub.line, fresh);
        let contact = self.contact(sub.via.transport);
        let (v, _) = self.via_header(sub.via.transport);
        let (mut b, _) = sub.dialog.request("NOTIFY", &v);
        b = b
            .header("Contact", &contact)
            .header("Event", "call-info")
            .header("Subscription-State", &state)
            .header("Call-Info", &info);
        let mut bytes = b.build();
        if let Some(bad) = cseq_header {
            let text = String::from_utf8_lossy(&bytes).replacen(
                &format!("CSeq: {} NOTIFY", sub.dialog.next_cseq - 1),
                &format!("CSeq: {bad}"),
                1,
            );
            bytes = text.into_bytes();
        }
        let via = sub.via.clone();
        self.send(&via, bytes);
        sub
    }

    /// NOTIFYs every subscriber of every line whose appearances changed.
    fn notify_changes(&mut self) {
        for line in self
            .topology
            .lines
            .iter()
            .map(|l| l.number.clone())
            .collect::<Vec<_>>()
        {
            let now = self.busy(&line);
            if self.told.get(&line) == Some(&now) {
                continue;
            }
            self.told.insert(line.clone(), now);
            let subs = std::mem::take(&mut self.call_info);
            let mut kept = Vec::with_capacity(subs.len());
            for sub in subs {
                if sub.line == line {
                    let state = format!("active;expires={}", sub.expires);
                    kept.push(self.notify_call_info(sub, state));
                } else {
                    kept.push(sub);
                }
            }
            self.call_info = kept;
        }
    }

    // ---- calls ----------------------------------------------------------------

    fn find_leg(&self, call_id: &str) -> Option<(usize, usize)> {
        self.calls.iter().enumerate().find_map(|(c, call)| {
            call.legs
                .iter()
                .position(|l| l.dialog.call_id == call_id)
                .map(|l| (c, l))
        })
    }

    fn appearance_in(req: &Message) -> Option<(u32, Option<ApState>)> {
        appearances(req.headers("Call-Info"))
            .ok()?
            .into_iter()
            .find_map(|a| match a.index {
                AppearanceIndex::Index(i) => Some((i, a.state)),
                AppearanceIndex::All => None,
            })
    }

    /// The leg for a phone that sent us an INVITE.
    fn uas_leg(&mut self, req: &Message, from: Via, party: u32) -> Leg {
        let caller = Self::user_of(req.from());
        Leg {
            dn: caller.clone(),
            party,
            dialog: Dialog {
                call_id: req.call_id().to_string(),
                local: req.to().map(|t| format!("<{}>", t.uri)).unwrap_or_default(),
                local_tag: self.unique("t"),
                remote: req
                    .from()
                    .map(|f| format!("<{}>", f.uri))
                    .unwrap_or_default(),
                remote_tag: req.from_tag(),
                remote_target: req.contact_uri().unwrap_or_else(|| self.aor(&caller)),
                route: Dialog::route_set(req, false),
                next_cseq: 1,
            },
            via: from,
            uas: Some(req.clone()),
            branch: String::new(),
            state: LegState::Offered,
            held: None,
            released: false,
        }
    }

    fn invite(&mut self, req: &Message, from: Via) {
        if self.find_leg(req.call_id()).is_some() {
            return; // a retransmission; the 100 already went out
        }
        let caller = Self::user_of(req.from());
        let dialled = Self::user_of(req.to());
        if !self.bindings.contains_key(&caller) {
            return self.respond(req, &from, 403, None);
        }
        let own_line = self
            .topology
            .line_of(&caller)
            .filter(|l| l.number == dialled)
            .map(|l| l.number.clone());
        match own_line {
            Some(line) => self.join(req, from, &line),
            None => self.new_call(req, from, caller, dialled),
        }
    }

    fn new_call(&mut self, req: &Message, from: Via, caller: String, dialled: String) {
        let target_line = self.topology.line(&dialled).cloned();
        let own_line = self.topology.line_of(&caller).cloned();
        let targets: Vec<String> = match &target_line {
            Some(l) => l
                .members
                .iter()
                .filter(|m| self.bindings.contains_key(*m))
                .cloned()
                .collect(),
            None => self
                .bindings
                .contains_key(&dialled)
                .then(|| dialled.clone())
                .into_iter()
                .collect(),
        };
        if targets.is_empty() {
            return self.respond(req, &from, 480, None);
        }
        // The appearance: the caller's seizure on an outbound call from the
        // line, else the first idle one of the line called.
        let (line, appearance) = match (&own_line, &target_line) {
            (Some(own), _) => {
                let wanted = Self::appearance_in(req).map(|(i, _)| i);
                let seized = self.seizures.iter_mut().find(|s| {
                    s.sub.subscriber == caller && !s.taken && wanted.is_none_or(|w| w == s.index)
                });
                let index = match seized {
                    Some(s) => {
                        s.taken = true;
                        s.index
                    }
                    None => wanted.unwrap_or_else(|| first_idle(&self.busy(&own.number))),
                };
                (Some(own.number.clone()), Some(index))
            }
            (None, Some(called)) => {
                let index = first_idle(&self.busy(&called.number));
                let index = if self.has(Fault::WrongAppearanceIndex) {
                    index + 1
                } else if self.has(Fault::SecondCallOnFirst) {
                    1
                } else {
                    index
                };
                (Some(called.number.clone()), Some(index))
            }
            (None, None) => (None, None),
        };
        self.respond(req, &from, 100, None);
        self.conn_ids += 1;
        let conn_id = format!("{:016x}", self.conn_ids);
        let mut call = Call {
            conn_id: conn_id.clone(),
            dialled: dialled.clone(),
            line,
            appearance,
            legs: Vec::new(),
            answered: false,
            progressing: false,
            retrieved: false,
            next_party: 1,
        };
        let party = call.take_party();
        call.legs.push(self.uas_leg(req, from, party));
        let ai = |e: Event, member: bool| match (member, appearance) {
            (true, Some(i)) => e.with(Attr::AppearanceIndex, Value::Int(i.into())),
            _ => e,
        };

        // Reference 1.1 and 4 (11, 12): the caller goes off hook and dials;
        // monitoring sees the call created with the caller connected and
        // dialling.
        let caller_member = own_line.is_some();
        self.emit(
            &caller,
            off_hook(&caller, appearance.filter(|_| caller_member)),
        );
        self.emit(
            &caller,
            ai(
                between(
                    E::Dialing,
                    &conn_id,
                    (&caller, Role::Origination),
                    (&dialled, Role::Destination),
                )
                .with(Attr::CallState, state(CallState::Ok)),
                caller_member,
            ),
        );
        self.monitor(Event::new(E::CallCreated).with(Attr::ConnId, id(&conn_id)));
        self.monitor(party_added(&conn_id, &caller, party, PartyState::Initiated));
        self.monitor(party_state(&conn_id, party, PartyState::ConnectedDialing));

        // The call is offered to every phone at once: the server reports
        // each alerting when it offers it, in member order, which keeps the
        // monitoring stream's order independent of the phones' timing.
        let covered = if target_line.is_some() && !self.has(Fault::CoveredAsOk) {
            CallState::Covered
        } else {
            CallState::Ok
        };
        for (n, target) in targets.iter().enumerate() {
            let party = call.take_party();
            let member = target_line.is_some();
            let leg = self.offer(&call, target, party, req.body(), member);
            let ringing = ai(
                between(
                    E::Ringing,
                    &conn_id,
                    (target, Role::Destination),
                    (&caller, Role::Origination),
                )
                .with(Attr::CallState, state(covered))
                .with(Attr::CallType, Value::CallType(CallType::Internal)),
                member,
            );
            if self.has(Fault::DuplicateRinging) && n == 1 {
                self.emit(target, ringing.clone());
            }
            self.emit(target, ringing);
            self.monitor(party_added(&conn_id, target, party, PartyState::Alerting));
            call.legs.push(leg);
        }
        self.calls.push(call);
    }

    /// Sends the INVITE that offers the call to one phone.
    fn offer(
        &mut self,
        call: &Call,
        target: &str,
        party: u32,
        body: &[u8],
        with_appearance: bool,
    ) -> Leg {
        let binding = self.bindings[target].clone();
        let (via, branch) = self.via_header(binding.via.transport);
        let mut dialog = Dialog {
            call_id: self.unique("b2b"),
            local: format!("<{}>", self.aor(&call.legs[0].dn)),
            local_tag: self.unique("t"),
            remote: format!("<{}>", self.aor(&call.dialled)),
            remote_tag: None,
            remote_target: binding.contact.clone(),
            route: Vec::new(),
            next_cseq: 1,
        };
        let (mut b, _) = dialog.request("INVITE", &via);
        b = b.header("Contact", &self.contact(binding.via.transport));
        if let (true, Some(index)) = (with_appearance, call.appearance) {
            b = b.header(
                "Call-Info",
                &self.appearance(AppearanceIndex::Index(index), None, None),
            );
        }
        let body = if body.is_empty() {
            self.our_sdp("sendrecv")
        } else {
            body.to_vec()
        };
        self.send(&binding.via, b.body("application/sdp", &body).build());
        Leg {
            dn: target.to_string(),
            party,
            dialog,
            via: binding.via,
            uas: None,
            branch,
            state: LegState::Offered,
            held: None,
            released: false,
        }
    }

    fn handle_response(&mut self, resp: &Message) {
        if let Some((_, "NOTIFY")) = resp.cseq() {
            return self.notify_answered(resp);
        }
        let Some((cseq, "INVITE")) = resp.cseq() else {
            return;
        };
        let code = resp.status().unwrap_or(0);
        let Some((c, l)) = self.find_leg(resp.call_id()) else {
            return;
        };
        if self.calls[c].legs[l].uas.is_some() {
            return;
        }
        match code {
            100 => {}
            101..=199 => self.progress(c),
            200..=299 => {
                let leg = &mut self.calls[c].legs[l];
                if leg.dialog.remote_tag.is_none() {
                    leg.dialog.remote_tag = resp.to_tag();
                }
                if let Some(t) = resp.contact_uri() {
                    leg.dialog.remote_target = t;
                }
                let (v, _) = self.via_header(self.calls[c].legs[l].via.transport);
                let ack = self.calls[c].legs[l].dialog.ack(cseq, &v).build();
                let via = self.calls[c].legs[l].via.clone();
                self.send(&via, ack);
                match self.calls[c].legs[l].state {
                    LegState::Offered if !self.calls[c].answered => {
                        self.answered(c, l, resp.body())
                    }
                    // The 200 crossed our CANCEL: the phone answered a call
                    // that is taken; end its dialog.
                    LegState::Cancelled if self.has(Fault::GlareLeavesLoser) => {}
                    LegState::Cancelled => {
                        let mut leg_dialog = self.calls[c].legs[l].dialog.clone();
                        self.request_in(&mut leg_dialog, &via, "BYE", &[]);
                    }
                    _ => {}
                }
            }
            _ => {
                // The ACK of a failure is hop-by-hop: the INVITE's branch.
                let leg = &self.calls[c].legs[l];
                let v = self.via_with(leg.via.transport, &leg.branch);
                let mut d = leg.dialog.clone();
                d.remote_tag = resp.to_tag();
                let ack = d.ack(cseq, &v).build();
                let via = leg.via.clone();
                self.send(&via, ack);
                let was_offered = self.calls[c].legs[l].state == LegState::Offered;
                self.calls[c].legs[l].state = LegState::Gone;
                let call = &self.calls[c];
                if was_offered && !call.answered && call.legs[1..].iter().all(|l| !l.live()) {
                    self.unanswerable(c, code);
                }
            }
        }
    }

    /// The first provisional response of a call: ring back the caller, and
    /// for an outbound call from the line, end the seizure (the appearance
    /// is now progressing).
    fn progress(&mut self, c: usize) {
        let call = &mut self.calls[c];
        if call.progressing {
            return;
        }
        call.progressing = true;
        let caller = call.legs[0].dn.clone();
        let (invite, tag, via) = (
            call.legs[0].uas.clone(),
            call.legs[0].dialog.local_tag.clone(),
            call.legs[0].via.clone(),
        );
        if let Some(invite) = invite {
            let bytes = Builder::response_to(&invite, 180, Some(&tag))
                .header("Contact", &self.contact(via.transport))
                .build();
            self.send(&via, bytes);
        }
        if !self.has(Fault::SeizeNotTerminated) {
            if let Some(i) = self
                .seizures
                .iter()
                .position(|s| s.sub.subscriber == caller && s.taken)
            {
                let s = self.seizures.remove(i);
                self.end_seizure(s, "noresource");
            }
        }
    }

    /// Reference 1.2 and 4 (24): one phone answered. The others are
    /// cancelled ("call completed elsewhere") and reported Redirected; the
    /// call is established at the caller and the answering phone.
    fn answered(&mut self, c: usize, winner: usize, body: &[u8]) {
        self.calls[c].answered = true;
        self.calls[c].progressing = true;
        self.calls[c].legs[winner].state = LegState::Answered;
        self.calls[c].legs[0].state = LegState::Answered;
        let losers: Vec<usize> = (1..self.calls[c].legs.len())
            .filter(|&l| l != winner && self.calls[c].legs[l].state == LegState::Offered)
            .collect();
        let conn_id = self.calls[c].conn_id.clone();
        let caller = self.calls[c].legs[0].dn.clone();
        for l in losers {
            if self.has(Fault::NoCancelToLoser) {
                continue;
            }
            self.cancel_leg(c, l, true);
            let (loser, party) = (
                self.calls[c].legs[l].dn.clone(),
                self.calls[c].legs[l].party,
            );
            self.emit(
                &loser,
                between(
                    E::Released,
                    &conn_id,
                    (&loser, Role::Destination),
                    (&caller, Role::Origination),
                )
                .with(Attr::CallState, state(CallState::Redirected)),
            );
            if !self.has(Fault::DropLoserPartyDeleted) {
                self.monitor(party_deleted(&conn_id, party));
            }
        }
        let call = &self.calls[c];
        let members = call
            .line
            .as_ref()
            .and_then(|l| self.topology.line(l))
            .map(|l| l.members.clone())
            .unwrap_or_default();
        let ai = |e: Event, who: &str| match (members.iter().any(|m| m == who), call.appearance) {
            (true, Some(i)) => e.with(Attr::AppearanceIndex, Value::Int(i.into())),
            _ => e,
        };
        let (phone, party, dialled) = (
            call.legs[winner].dn.clone(),
            call.legs[winner].party,
            call.dialled.clone(),
        );
        let caller_established = ai(
            between(
                E::Established,
                &conn_id,
                (&caller, Role::Origination),
                (&dialled, Role::Destination),
            ),
            &caller,
        );
        let phone_established = ai(
            between(
                E::Established,
                &conn_id,
                (&phone, Role::Destination),
                (&caller, Role::Origination),
            ),
            &phone,
        );
        self.emit(&caller, caller_established);
        self.emit(&phone, phone_established);
        self.monitor(party_state(&conn_id, party, PartyState::Connected));
        let leg = &self.calls[c].legs[0];
        if let Some(invite) = leg.uas.clone() {
            let body = if body.is_empty() {
                self.our_sdp("sendrecv")
            } else {
                body.to_vec()
            };
            let bytes = Builder::response_to(&invite, 200, Some(&leg.dialog.local_tag))
                .header("Contact", &self.contact(leg.via.transport))
                .body("application/sdp", &body)
                .build();
            let via = leg.via.clone();
            self.send(&via, bytes);
        }
    }

    /// CANCELs an offered leg (RFC 3261 9.1: the INVITE's branch, Call-ID,
    /// From, To and CSeq number).
    fn cancel_leg(&mut self, c: usize, l: usize, elsewhere: bool) {
        let leg = &self.calls[c].legs[l];
        let via = self.via_with(leg.via.transport, &leg.branch);
        let mut d = leg.dialog.clone();
        d.remote_tag = None;
        d.next_cseq = 1;
        let (mut b, _) = d.request("CANCEL", &via);
        if elsewhere {
            let reason = Reason {
                protocol: "SIP".into(),
                cause: Some(200),
                text: Some("Call completed elsewhere".into()),
            };
            b = b.header("Reason", &reason.to_string());
        }
        let to = leg.via.clone();
        self.send(&to, b.build());
        self.calls[c].legs[l].state = LegState::Cancelled;
    }

    /// Every offered phone refused: the call fails back to the caller.
    fn unanswerable(&mut self, c: usize, code: u16) {
        if self.has(Fault::RejectedStaysProgressing) {
            self.stick(c, ApState::Progressing);
        }
        let call = &self.calls[c];
        if let Some(invite) = call.legs[0].uas.clone() {
            let bytes =
                Builder::response_to(&invite, code.max(400), Some(&call.legs[0].dialog.local_tag))
                    .build();
            let via = call.legs[0].via.clone();
            self.send(&via, bytes);
        }
        self.end_call(c);
    }

    /// A faulty server's call `c` whose appearance, if it is `when`, is
    /// never freed.
    fn stick(&mut self, c: usize, when: ApState) {
        if let Some((line, index, now)) = self.appearance_now(c) {
            if now.0 == when {
                self.stuck.entry(line).or_default().insert(index, now);
            }
        }
    }

    fn cancel(&mut self, req: &Message, from: Via) {
        let Some((c, 0)) = self
            .find_leg(req.call_id())
            .filter(|(c, _)| !self.calls[*c].answered)
        else {
            return self.respond(req, &from, 481, None);
        };
        self.respond(req, &from, 200, None);
        if self.has(Fault::CancelledStaysAlerting) {
            self.stick(c, ApState::Alerting);
        }
        let leg = &self.calls[c].legs[0];
        if let Some(invite) = leg.uas.clone() {
            let bytes = Builder::response_to(&invite, 487, Some(&leg.dialog.local_tag)).build();
            let via = leg.via.clone();
            self.send(&via, bytes);
        }
        // Release the offered phones before cancelling them, so end_call
        // does not skip them as no longer live.
        for l in 1..self.calls[c].legs.len() {
            if self.calls[c].legs[l].state == LegState::Offered {
                self.release_leg(c, l);
                self.cancel_leg(c, l, false);
            }
        }
        let caller = self.calls[c].legs[0].dn.clone();
        if let Some(i) = self
            .seizures
            .iter()
            .position(|s| s.sub.subscriber == caller && s.taken)
        {
            let s = self.seizures.remove(i);
            self.end_seizure(s, "noresource");
        }
        self.end_call(c);
    }

    fn bye(&mut self, req: &Message, from: Via) {
        let Some((c, l)) = self
            .find_leg(req.call_id())
            .filter(|(c, l)| self.calls[*c].legs[*l].state == LegState::Answered)
        else {
            return self.respond(req, &from, 481, None);
        };
        self.respond(req, &from, 200, None);
        if self.calls[c].conference() {
            // A party leaves a conference; the others stay.
            self.calls[c].legs[l].state = LegState::Gone;
            let call = &self.calls[c];
            let (conn_id, who, other, party) = (
                call.conn_id.clone(),
                call.legs[l].dn.clone(),
                call.other_dn(l),
                call.legs[l].party,
            );
            self.release(&conn_id, &who, &other, CallState::Ok, None);
            self.monitor(party_deleted(&conn_id, party));
            return;
        }
        self.release_leg(c, l);
        self.end_call(c);
    }

    fn release(
        &mut self,
        conn_id: &str,
        who: &str,
        other: &str,
        call_state: CallState,
        cause: Option<Cause>,
    ) {
        let mut e = Event::new(E::Released)
            .with(Attr::ConnId, id(conn_id))
            .with(Attr::ThisDn, dn(who))
            .with(Attr::OtherDn, dn(other))
            .with(Attr::CallState, state(call_state));
        if let Some(cause) = cause {
            e = e.with(Attr::Cause, Value::Cause(cause));
        }
        self.emit(who, e);
    }

    /// Tells a leg's phone its part of the call is over: released, and on
    /// hook if it was talking on a shared line (the phone of a held call is
    /// on hook already).
    fn release_leg(&mut self, c: usize, l: usize) {
        let call = &self.calls[c];
        let leg = &call.legs[l];
        let (conn_id, who, other) = (call.conn_id.clone(), leg.dn.clone(), call.other_dn(l));
        let on_hook = leg.state == LegState::Answered
            && self.topology.line_of(&who).is_some()
            && (leg.held.is_none() || self.has(Fault::OnHookWhileHeld));
        self.release(&conn_id, &who, &other, CallState::Ok, None);
        if on_hook && !self.has(Fault::NoOnHook) {
            self.emit(&who, Event::new(E::OnHook).with(Attr::ThisDn, dn(&who)));
        }
        self.calls[c].legs[l].released = true;
    }

    /// Reference 1.3, 4a, 5a: the call is over. Every party still in it is
    /// released, BYEs go to the phones still talking, then monitoring
    /// deletes the connected parties, last joined first, and the call.
    fn end_call(&mut self, c: usize) {
        if self.has(Fault::RetrievedStaysActive) && self.calls[c].retrieved {
            self.stick(c, ApState::Active);
        }
        if self.has(Fault::KeepsAppearance) {
            // What the appearance was while the call was up stays in the
            // line's state; the call's subscribers are still told idle.
            if let Some((line, index, held)) = self.appearance_now(c) {
                self.kept.entry(line).or_default().insert(index, held);
            }
        }
        for l in 0..self.calls[c].legs.len() {
            let leg = &self.calls[c].legs[l];
            if leg.released || !leg.live() {
                continue;
            }
            let talking = leg.state == LegState::Answered;
            self.release_leg(c, l);
            if talking {
                let leg = &mut self.calls[c].legs[l];
                let (via, mut d) = (leg.via.clone(), leg.dialog.clone());
                self.request_in(&mut d, &via, "BYE", &[]);
            }
        }
        let call = self.calls.remove(c);
        // The originator is connected from its first dialling; the others
        // once they answered.
        let connected = call.legs.iter().enumerate().filter(|(i, l)| {
            l.state == LegState::Answered || (*i == 0 && l.state == LegState::Offered)
        });
        let parties: Vec<u32> = connected.map(|(_, l)| l.party).collect();
        for party in parties.into_iter().rev() {
            self.monitor(party_deleted(&call.conn_id, party));
        }
        self.monitor(Event::new(E::CallDeleted).with(Attr::ConnId, id(&call.conn_id)));
    }

    // ---- hold, retrieve, barge-in -------------------------------------------

    fn reinvite(&mut self, req: &Message, from: Via) {
        let Some((c, l)) = self
            .find_leg(req.call_id())
            .filter(|(c, l)| self.calls[*c].legs[*l].state == LegState::Answered)
        else {
            return self.respond(req, &from, 481, None);
        };
        let method = req.method().unwrap_or_default();
        let holding = match HoldStyle::of(&method, req.body()) {
            Some(HoldStyle::Inactive) if self.has(Fault::InactiveNotHeld) => false,
            Some(HoldStyle::Rfc2543) if self.has(Fault::Rfc2543NotHeld) => false,
            Some(HoldStyle::Update) if self.has(Fault::UpdateNotHeld) => false,
            style => style.is_some(),
        };
        let private =
            Self::appearance_in(req).is_some_and(|(_, s)| s == Some(ApState::HeldPrivate));
        let answer = self.our_sdp(if holding { "recvonly" } else { "sendrecv" });
        let (was, tag) = (
            self.calls[c].legs[l].held,
            self.calls[c].legs[l].dialog.local_tag.clone(),
        );
        let bytes = Builder::response_to(req, 200, Some(&tag))
            .header("Contact", &self.contact(from.transport))
            .body("application/sdp", &answer)
            .build();
        self.send(&from, bytes);
        let now = holding.then_some(private);
        if was.is_some() == now.is_some() {
            self.calls[c].legs[l].held = now;
            return;
        }
        self.calls[c].legs[l].held = now;
        let call = &self.calls[c];
        let (conn_id, who, other, party) = (
            call.conn_id.clone(),
            call.legs[l].dn.clone(),
            call.other_dn(l),
            call.legs[l].party,
        );
        let (name, ps) = if holding {
            (E::Held, PartyState::Held)
        } else {
            (E::Retrieved, PartyState::Connected)
        };
        self.emit(
            &who,
            Event::new(name)
                .with(Attr::ConnId, id(&conn_id))
                .with(Attr::ThisDn, dn(&who))
                .with(Attr::OtherDn, dn(&other)),
        );
        self.monitor(party_state(&conn_id, party, ps));
    }

    /// A phone of the line INVITEs the line itself for an appearance: a
    /// retrieve if the appearance is held, a barge-in if it is active.
    fn join(&mut self, req: &Message, from: Via, line: &str) {
        let Some((index, _)) = Self::appearance_in(req) else {
            return self.respond(req, &from, 400, None);
        };
        let found = self.calls.iter().position(|c| {
            c.line.as_deref() == Some(line) && c.appearance == Some(index) && c.answered
        });
        let Some(c) = found else {
            let code = if self.has(Fault::IdleRetrieveWrongCode) {
                480
            } else {
                404
            };
            return self.respond(req, &from, code, None);
        };
        let holder = self.calls[c]
            .legs
            .iter()
            .position(|l| l.state == LegState::Answered && l.held.is_some());
        match holder.map(|h| (h, self.calls[c].legs[h].held == Some(true))) {
            Some((_, true)) if !self.has(Fault::PrivateRetrievable) => {
                let bytes = Builder::response_to(req, 403, None).build();
                self.send(&from, bytes);
            }
            Some((h, _)) => self.retrieve(c, h, req, from),
            None if self.has(Fault::BargeRefused) => self.respond(req, &from, 486, None),
            None => self.barge(c, req, from),
        }
    }

    /// Accepts a joining phone's INVITE and returns its new leg's index.
    fn admit(&mut self, c: usize, req: &Message, from: Via) -> usize {
        let party = self.calls[c].take_party();
        let mut leg = self.uas_leg(req, from, party);
        leg.state = LegState::Answered;
        let bytes = Builder::response_to(req, 200, Some(&leg.dialog.local_tag))
            .header("Contact", &self.contact(leg.via.transport))
            .body("application/sdp", &self.our_sdp("sendrecv"))
            .build();
        let via = leg.via.clone();
        self.send(&via, bytes);
        self.calls[c].legs.push(leg);
        self.calls[c].legs.len() - 1
    }

    /// Reference 5: the other phone takes the held call, reported as a
    /// one-step transfer from the holder on the same ConnID.
    fn retrieve(&mut self, c: usize, holder: usize, req: &Message, from: Via) {
        let taker = self.admit(c, req, from);
        let call = &self.calls[c];
        let (conn_id, index) = (call.conn_id.clone(), call.appearance.unwrap_or(1));
        let (held_dn, held_party, other) = (
            call.legs[holder].dn.clone(),
            call.legs[holder].party,
            call.other_dn(holder),
        );
        let (new_dn, new_party) = (call.legs[taker].dn.clone(), call.legs[taker].party);
        let ai = Value::Int(index.into());
        let (released_state, cause) = if self.has(Fault::RetrieveNotTransfer) {
            (CallState::Ok, None)
        } else {
            (CallState::Transferred, Some(Cause::OneStepTransfer))
        };
        self.release(&conn_id, &held_dn, &other, released_state, cause);
        self.emit(&new_dn, off_hook(&new_dn, Some(index)));
        self.emit(
            &new_dn,
            Event::new(E::Ringing)
                .with(Attr::ConnId, id(&conn_id))
                .with(Attr::ThisDn, dn(&new_dn))
                .with(Attr::OtherDn, dn(&other))
                .with(Attr::CallState, state(CallState::Transferred))
                .with(Attr::AppearanceIndex, ai.clone()),
        );
        self.emit(
            &new_dn,
            Event::new(E::Established)
                .with(Attr::ConnId, id(&conn_id))
                .with(Attr::ThisDn, dn(&new_dn))
                .with(Attr::OtherDn, dn(&other))
                .with(Attr::CallState, state(CallState::Ok))
                .with(Attr::AppearanceIndex, ai),
        );
        self.monitor(party_deleted(&conn_id, held_party));
        self.monitor(party_added(
            &conn_id,
            &new_dn,
            new_party,
            PartyState::Alerting,
        ));
        self.monitor(party_state(&conn_id, new_party, PartyState::Connected));
        self.calls[c].retrieved = true;
        let leg = &mut self.calls[c].legs[holder];
        leg.state = LegState::Gone;
        let (via, mut d) = (leg.via.clone(), leg.dialog.clone());
        self.request_in(&mut d, &via, "BYE", &[]);
    }

    /// Reference 6: the phone joins the active call as a conference member.
    fn barge(&mut self, c: usize, req: &Message, from: Via) {
        let joiner = self.admit(c, req, from);
        let call = &self.calls[c];
        let (conn_id, index) = (call.conn_id.clone(), call.appearance.unwrap_or(1));
        let (new_dn, new_party) = (call.legs[joiner].dn.clone(), call.legs[joiner].party);
        let others: Vec<String> = call.legs[..joiner]
            .iter()
            .filter(|l| l.state == LegState::Answered)
            .map(|l| l.dn.clone())
            .collect();
        let ai = Value::Int(index.into());
        for other in &others {
            self.emit(
                other,
                Event::new(E::PartyAdded)
                    .with(Attr::ConnId, id(&conn_id))
                    .with(Attr::ThisDn, dn(other))
                    .with(Attr::OtherDn, dn(&new_dn))
                    .with(Attr::OtherDnRole, role(Role::NewParty))
                    .with(Attr::ThirdPartyDn, dn(&new_dn))
                    .with(Attr::ThirdPartyDnRole, role(Role::AddedBy))
                    .with(Attr::CallState, state(CallState::Conferenced)),
            );
        }
        self.emit(
            &new_dn,
            Event::new(E::Ringing)
                .with(Attr::ConnId, id(&conn_id))
                .with(Attr::ThisDn, dn(&new_dn))
                .with(Attr::ThisDnRole, role(Role::ConferenceMember))
                .with(Attr::CallState, state(CallState::Ok))
                .with(Attr::AppearanceIndex, ai.clone()),
        );
        self.emit(&new_dn, off_hook(&new_dn, Some(index)));
        self.emit(
            &new_dn,
            Event::new(E::Established)
                .with(Attr::ConnId, id(&conn_id))
                .with(Attr::ThisDn, dn(&new_dn))
                .with(Attr::CallState, state(CallState::Conferenced))
                .with(Attr::AppearanceIndex, ai),
        );
        self.monitor(party_added(
            &conn_id,
            &new_dn,
            new_party,
            PartyState::Alerting,
        ));
        self.monitor(party_state(&conn_id, new_party, PartyState::Connected));
    }
}

fn first_idle(busy: &BTreeMap<u32, (ApState, Option<String>)>) -> u32 {
    (1..).find(|i| !busy.contains_key(i)).unwrap_or(1)
}

/// A phone goes off hook, on an appearance if it is a shared-line phone.
fn off_hook(who: &str, appearance: Option<u32>) -> Event {
    let e = Event::new(E::OffHook).with(Attr::ThisDn, dn(who));
    match appearance {
        Some(i) => e.with(Attr::AppearanceIndex, Value::Int(i.into())),
        None => e,
    }
}

/// An event of one of the two parties of a call, towards the other, each
/// with its role.
fn between(
    name: E,
    conn_id: &str,
    (this, this_role): (&str, Role),
    (other, other_role): (&str, Role),
) -> Event {
    Event::new(name)
        .with(Attr::ConnId, id(conn_id))
        .with(Attr::ThisDn, dn(this))
        .with(Attr::ThisDnRole, role(this_role))
        .with(Attr::OtherDn, dn(other))
        .with(Attr::OtherDnRole, role(other_role))
}

fn party_added(conn_id: &str, who: &str, party: u32, s: PartyState) -> Event {
    Event::new(E::CallPartyAdded)
        .with(Attr::ConnId, id(conn_id))
        .with(Attr::Dn, dn(who))
        .with(Attr::PartyId, id(&party.to_string()))
        .with(Attr::State, Value::PartyState(s))
}

fn party_state(conn_id: &str, party: u32, s: PartyState) -> Event {
    Event::new(E::CallPartyState)
        .with(Attr::ConnId, id(conn_id))
        .with(Attr::PartyId, id(&party.to_string()))
        .with(Attr::State, Value::PartyState(s))
}

fn party_deleted(conn_id: &str, party: u32) -> Event {
    Event::new(E::CallPartyDeleted)
        .with(Attr::ConnId, id(conn_id))
        .with(Attr::PartyId, id(&party.to_string()))
}
