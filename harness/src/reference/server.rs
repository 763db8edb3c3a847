//! The sans-IO core of the embedded reference SCA server: a registrar, a
//! call-info notifier for each shared line, and a B2BUA that forks calls to
//! the line's phones, following the Genesys page for the events it reports
//! and the BroadWorks model for what it says on the wire.
//!
//! It takes parsed messages and yields messages to send and events to
//! publish; the edge in [`super::run`] owns the sockets.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;

use super::fault::Fault;
use crate::model::{
    Attr, CallState, CallType, Channel, Event, KnownEvent as E, PartyState, Role, Value,
};
use crate::sip::build::{sdp, Builder};
use crate::sip::headers::{Appearance, AppearanceIndex, AppearanceState, EventHeader, Reason};
use crate::sip::transport::Inbound;
use crate::sip::{Message, Transport};
use crate::topology::Topology;

/// Bytes to send, how and where.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub transport: Transport,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Where a registered phone is reached.
#[derive(Debug, Clone)]
struct Binding {
    transport: Transport,
    addr: SocketAddr,
    contact: String,
}

/// A call-info subscription to a shared line (we are the notifier).
#[derive(Debug)]
struct Subscription {
    line: String,
    subscriber: String,
    call_id: String,
    their_tag: String,
    our_tag: String,
    next_cseq: u32,
    expires: u32,
    via: Binding,
}

/// The caller's side of a call: we are its UAS.
#[derive(Debug)]
struct ALeg {
    dn: String,
    invite: Message,
    via: Binding,
    our_tag: String,
    ringing_sent: bool,
    answered: bool,
    remote_target: String,
    next_cseq: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BState {
    Offered,
    Answered,
    Cancelled,
    Ended,
}

/// A phone's side of a call: we are its UAC.
#[derive(Debug)]
struct BLeg {
    dn: String,
    party: u32,
    call_id: String,
    our_tag: String,
    their_tag: Option<String>,
    branch: String,
    target: String,
    via: Binding,
    next_cseq: u32,
    state: BState,
}

#[derive(Debug)]
struct Call {
    conn_id: String,
    /// The DN the caller dialled.
    dialled: String,
    line: Option<String>,
    appearance: Option<u32>,
    a: ALeg,
    a_party: u32,
    b: Vec<BLeg>,
}

impl Call {
    fn winner(&self) -> Option<usize> {
        self.b.iter().position(|l| l.state == BState::Answered)
    }
}

/// The embedded reference server.
#[derive(Debug)]
pub struct Server {
    domain: String,
    local: SocketAddr,
    topology: Topology,
    fault: Option<Fault>,
    counter: u64,
    conn_ids: u64,
    bindings: HashMap<String, Binding>,
    subscriptions: Vec<Subscription>,
    calls: Vec<Call>,
    out: VecDeque<Outgoing>,
    events: VecDeque<(Channel, Event)>,
}

fn id(s: &str) -> Value {
    Value::Id(s.to_string())
}

fn dn(s: &str) -> Value {
    Value::Dn(s.to_string())
}

impl Server {
    pub fn new(
        domain: &str,
        local: SocketAddr,
        topology: Topology,
        fault: Option<Fault>,
    ) -> Server {
        Server {
            domain: domain.to_string(),
            local,
            topology,
            fault,
            counter: 0,
            // T-Server ConnIDs are 16 hex digits; start where real ones look.
            conn_ids: 0x006e_025a_6c4e_1000,
            bindings: HashMap::new(),
            subscriptions: Vec::new(),
            calls: Vec::new(),
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<(Channel, Event)> {
        self.events.pop_front()
    }

    fn has(&self, f: Fault) -> bool {
        self.fault == Some(f)
    }

    fn unique(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("{what}{}-ref", self.counter)
    }

    fn emit(&mut self, channel: Channel, event: Event) {
        self.events.push_back((channel, event));
    }

    fn emit_dn(&mut self, who: &str, event: Event) {
        self.emit(Channel::Dn(who.to_string()), event);
    }

    fn monitor(&mut self, event: Event) {
        self.emit(Channel::Monitoring, event);
    }

    fn send(&mut self, via: &Binding, bytes: Vec<u8>) {
        self.out.push_back(Outgoing {
            transport: via.transport,
            to: via.addr,
            bytes,
        });
    }

    fn respond(&mut self, req: &Message, from: &Binding, code: u16, to_tag: Option<&str>) {
        let bytes = Builder::response_to(req, code, to_tag).build();
        self.send(from, bytes);
    }

    fn via_header(&mut self, transport: Transport) -> (String, String) {
        let branch = self.unique("z9hG4bK");
        (
            format!(
                "SIP/2.0/{} {};branch={branch}",
                transport.via_token(),
                self.local
            ),
            branch,
        )
    }

    fn contact(&self, transport: Transport) -> String {
        match transport {
            Transport::Udp => format!("<sip:b2bua@{}>", self.local),
            Transport::Tcp => format!("<sip:b2bua@{};transport=tcp>", self.local),
        }
    }

    fn aor(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.domain)
    }

    fn appearance_target(&self) -> String {
        format!("sip:{}", self.domain)
    }

    // ---- dispatch -------------------------------------------------------------

    pub fn handle(&mut self, inbound: &Inbound) {
        let from = Binding {
            transport: inbound.transport,
            addr: inbound.peer,
            contact: String::new(),
        };
        let msg = &inbound.msg;
        if !msg.is_request() {
            self.handle_response(msg);
            return;
        }
        let method = msg.method().unwrap_or_default();
        match method.as_str() {
            "REGISTER" => self.register(msg, from),
            "SUBSCRIBE" => self.subscribe(msg, from),
            "INVITE" if msg.to_tag().is_none() => self.invite(msg, from),
            "INVITE" => self.respond(msg, &from, 488, None),
            "ACK" => {}
            "CANCEL" => self.cancel(msg, from),
            "BYE" => self.bye(msg, from),
            "OPTIONS" => self.respond(msg, &from, 200, None),
            _ => self.respond(msg, &from, 501, None),
        }
    }

    fn register(&mut self, req: &Message, from: Binding) {
        let Some(user) = req.to().and_then(|t| t.user().map(str::to_string)) else {
            return self.respond(req, &from, 400, None);
        };
        if !self.topology.knows(&user) {
            return self.respond(req, &from, 404, None);
        }
        let contact = req.contact_uri().unwrap_or_default();
        let tag = self.unique("t");
        let bytes = Builder::response_to(req, 200, Some(&tag))
            .header("Contact", &format!("<{contact}>;expires=3600"))
            .build();
        self.send(&from, bytes);
        self.bindings.insert(user, Binding { contact, ..from });
    }

    fn subscribe(&mut self, req: &Message, from: Binding) {
        let package = req
            .header("Event")
            .and_then(EventHeader::parse)
            .map(|e| e.package);
        if package.as_deref() != Some("call-info") {
            return self.respond(req, &from, 489, None);
        }
        let line = req
            .to()
            .and_then(|t| t.user().map(str::to_string))
            .unwrap_or_default();
        let subscriber = req
            .from()
            .and_then(|f| f.user().map(str::to_string))
            .unwrap_or_default();
        let member = self
            .topology
            .line(&line)
            .is_some_and(|l| l.members.contains(&subscriber));
        if !member {
            return self.respond(req, &from, 403, None);
        }
        let expires: u32 = req
            .header("Expires")
            .and_then(|e| e.trim().parse().ok())
            .unwrap_or(3600);
        let existing = self
            .subscriptions
            .iter()
            .position(|s| s.call_id == req.call_id());
        let our_tag = match existing {
            Some(i) => self.subscriptions[i].our_tag.clone(),
            None => self.unique("t"),
        };
        let via = Binding {
            contact: req.contact_uri().unwrap_or_default(),
            ..from.clone()
        };
        let bytes = Builder::response_to(req, 202, Some(&our_tag))
            .header("Contact", &self.contact(from.transport))
            .header("Expires", &expires.to_string())
            .build();
        self.send(&from, bytes);
        let i = match existing {
            Some(i) => {
                self.subscriptions[i].expires = expires;
                i
            }
            None => {
                self.subscriptions.push(Subscription {
                    line: line.clone(),
                    subscriber,
                    call_id: req.call_id().to_string(),
                    their_tag: req.from_tag().unwrap_or_default(),
                    our_tag,
                    next_cseq: 1,
                    expires,
                    via,
                });
                self.subscriptions.len() - 1
            }
        };
        self.notify_one(i);
        if expires == 0 {
            self.subscriptions.remove(i);
        }
    }

    /// The appearances of a line that are not idle.
    fn line_state(&self, line: &str) -> BTreeMap<u32, (AppearanceState, String)> {
        let mut busy = BTreeMap::new();
        for call in self
            .calls
            .iter()
            .filter(|c| c.line.as_deref() == Some(line))
        {
            if let Some(index) = call.appearance {
                let state = if call.a.answered {
                    AppearanceState::Active
                } else {
                    AppearanceState::Alerting
                };
                busy.insert(index, (state, format!("<{}>", self.aor(&call.a.dn))));
            }
        }
        busy
    }

    fn notify_one(&mut self, i: usize) {
        let busy = self.line_state(&self.subscriptions[i].line);
        let target = self.appearance_target();
        let mut elements: Vec<String> = busy
            .into_iter()
            .map(|(index, (state, uri))| {
                Appearance {
                    target: target.clone(),
                    index: AppearanceIndex::Index(index),
                    state: Some(state),
                    uri: Some(uri),
                }
                .to_header()
            })
            .collect();
        elements.push(
            Appearance {
                target,
                index: AppearanceIndex::All,
                state: Some(AppearanceState::Idle),
                uri: None,
            }
            .to_header(),
        );
        let (via, _) = self.via_header(self.subscriptions[i].via.transport);
        let contact = self.contact(self.subscriptions[i].via.transport);
        let line_aor = self.aor(&self.subscriptions[i].line);
        let s = &mut self.subscriptions[i];
        let state = if s.expires == 0 {
            "terminated;reason=timeout".to_string()
        } else {
            format!("active;expires={}", s.expires)
        };
        let bytes = Builder::request("NOTIFY", &s.via.contact)
            .header("Via", &via)
            .header("From", &format!("<{line_aor}>;tag={}", s.our_tag))
            .header(
                "To",
                &format!("<sip:{}@{}>;tag={}", s.subscriber, self.domain, s.their_tag),
            )
            .header("Call-ID", &s.call_id)
            .header(
                "CSeq",
                &if self.fault == Some(Fault::MalformedNotify) && s.next_cseq > 1 {
                    format!("NOTIFY {}", s.next_cseq)
                } else {
                    format!("{} NOTIFY", s.next_cseq)
                },
            )
            .header("Contact", &contact)
            .header("Event", "call-info")
            .header("Subscription-State", &state)
            .header("Call-Info", &elements.join(","))
            .build();
        s.next_cseq += 1;
        let to = s.via.clone();
        self.send(&to, bytes);
    }

    fn notify_line(&mut self, line: &str) {
        for i in 0..self.subscriptions.len() {
            if self.subscriptions[i].line == line {
                self.notify_one(i);
            }
        }
    }

    // ---- calls ----------------------------------------------------------------

    fn invite(&mut self, req: &Message, from: Binding) {
        if self
            .calls
            .iter()
            .any(|c| c.a.invite.call_id() == req.call_id())
        {
            return; // a retransmission; the 100 already went out
        }
        let caller = req
            .from()
            .and_then(|f| f.user().map(str::to_string))
            .unwrap_or_default();
        let dialled = req
            .to()
            .and_then(|t| t.user().map(str::to_string))
            .unwrap_or_default();
        if !self.bindings.contains_key(&caller) {
            return self.respond(req, &from, 403, None);
        }
        let line = self.topology.line(&dialled).cloned();
        let targets: Vec<String> = match &line {
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
        self.respond(req, &from, 100, None);
        self.conn_ids += 1;
        let conn_id = format!("{:016x}", self.conn_ids);
        let appearance = line.as_ref().map(|l| {
            let busy = self.line_state(&l.number);
            let first_free = (1..).find(|i| !busy.contains_key(i)).unwrap_or(1);
            if self.has(Fault::WrongAppearanceIndex) {
                first_free + 1
            } else {
                first_free
            }
        });
        let our_tag = self.unique("t");
        let a = ALeg {
            dn: caller.clone(),
            invite: req.clone(),
            via: from,
            our_tag,
            ringing_sent: false,
            answered: false,
            remote_target: req.contact_uri().unwrap_or_else(|| self.aor(&caller)),
            next_cseq: 1,
        };

        // Reference 1.1: the caller goes off hook and dials; monitoring sees
        // the call created with the caller connected and dialling.
        self.emit_dn(
            &caller,
            Event::new(E::OffHook).with(Attr::ThisDn, dn(&caller)),
        );
        self.emit_dn(
            &caller,
            Event::new(E::Dialing)
                .with(Attr::ConnId, id(&conn_id))
                .with(Attr::ThisDn, dn(&caller))
                .with(Attr::OtherDn, dn(&dialled))
                .with(Attr::CallState, Value::CallState(CallState::Ok)),
        );
        self.monitor(Event::new(E::CallCreated).with(Attr::ConnId, id(&conn_id)));
        self.monitor(party_added(&conn_id, &caller, 1, PartyState::Initiated));
        self.monitor(
            Event::new(E::CallPartyState)
                .with(Attr::ConnId, id(&conn_id))
                .with(Attr::PartyId, id("1"))
                .with(Attr::State, Value::PartyState(PartyState::ConnectedDialing)),
        );

        let mut call = Call {
            conn_id: conn_id.clone(),
            dialled: dialled.clone(),
            line: line.as_ref().map(|l| l.number.clone()),
            appearance,
            a,
            a_party: 1,
            b: Vec::new(),
        };
        // The call is offered to every phone at once: the server reports each
        // appearance alerting when it offers it, in member order, which keeps
        // the monitoring stream's order independent of the phones' timing.
        for (n, target) in targets.iter().enumerate() {
            let party = 2 + n as u32;
            let leg = self.offer(&call, target, party, req.body());
            let covered = if call.line.is_some() && !self.has(Fault::CoveredAsOk) {
                CallState::Covered
            } else {
                CallState::Ok
            };
            let mut ringing = Event::new(E::Ringing)
                .with(Attr::ConnId, id(&conn_id))
                .with(Attr::ThisDn, dn(target))
                .with(Attr::ThisDnRole, Value::Role(Role::Destination))
                .with(Attr::OtherDn, dn(&caller))
                .with(Attr::OtherDnRole, Value::Role(Role::Origination))
                .with(Attr::CallState, Value::CallState(covered))
                .with(Attr::CallType, Value::CallType(CallType::Internal));
            if let Some(index) = appearance {
                ringing = ringing.with(Attr::AppearanceIndex, Value::Int(index.into()));
            }
            let twice = self.has(Fault::DuplicateRinging) && n == 1;
            self.emit_dn(target, ringing.clone());
            if twice {
                self.emit_dn(target, ringing);
            }
            self.monitor(party_added(&conn_id, target, party, PartyState::Alerting));
            call.b.push(leg);
        }
        self.calls.push(call);
        if let Some(l) = line {
            self.notify_line(&l.number);
        }
    }

    /// Sends the INVITE that offers the call to one phone.
    fn offer(&mut self, call: &Call, target: &str, party: u32, body: &[u8]) -> BLeg {
        let binding = self.bindings[target].clone();
        let (via, branch) = self.via_header(binding.transport);
        let call_id = self.unique("b2b");
        let our_tag = self.unique("t");
        let mut b = Builder::request("INVITE", &binding.contact)
            .header("Via", &via)
            .header("From", &format!("<{}>;tag={our_tag}", self.aor(&call.a.dn)))
            .header("To", &format!("<{}>", self.aor(&call.dialled)))
            .header("Call-ID", &call_id)
            .header("CSeq", "1 INVITE")
            .header("Contact", &self.contact(binding.transport));
        if let Some(index) = call.appearance {
            b = b.header(
                "Call-Info",
                &format!("<{}>;appearance-index={index}", self.appearance_target()),
            );
        }
        let body = if body.is_empty() {
            sdp(
                "b2bua",
                self.local.ip(),
                self.local.port().wrapping_add(2),
                "sendrecv",
            )
        } else {
            body.to_vec()
        };
        let bytes = b.body("application/sdp", &body).build();
        self.send(&binding, bytes);
        BLeg {
            dn: target.to_string(),
            party,
            call_id,
            our_tag,
            their_tag: None,
            branch,
            target: binding.contact.clone(),
            via: binding,
            next_cseq: 2,
            state: BState::Offered,
        }
    }

    fn handle_response(&mut self, resp: &Message) {
        let Some((_, "INVITE")) = resp.cseq() else {
            return;
        };
        let code = resp.status().unwrap_or(0);
        let Some((c, l)) = self.find_b_leg(resp.call_id()) else {
            return;
        };
        match code {
            101..=199 => {
                if !self.calls[c].a.ringing_sent {
                    self.calls[c].a.ringing_sent = true;
                    let a = &self.calls[c].a;
                    let bytes = Builder::response_to(&a.invite, 180, Some(&a.our_tag))
                        .header("Contact", &self.contact(a.via.transport))
                        .build();
                    let via = a.via.clone();
                    self.send(&via, bytes);
                }
            }
            200..=299 => {
                let leg = &mut self.calls[c].b[l];
                leg.their_tag = resp.to_tag();
                if let Some(t) = resp.contact_uri() {
                    leg.target = t;
                }
                self.ack_2xx(c, l);
                if self.calls[c].b[l].state == BState::Offered && self.calls[c].winner().is_none() {
                    self.calls[c].b[l].state = BState::Answered;
                    self.answered(c, l, resp.body());
                }
            }
            _ => {
                self.ack_failure(c, l, resp);
                let leg = &mut self.calls[c].b[l];
                if leg.state == BState::Offered {
                    leg.state = BState::Ended;
                    if self.calls[c].b.iter().all(|l| l.state == BState::Ended) {
                        self.unanswerable(c, code);
                    }
                } else {
                    leg.state = BState::Ended;
                }
            }
        }
    }

    fn find_b_leg(&self, call_id: &str) -> Option<(usize, usize)> {
        self.calls.iter().enumerate().find_map(|(c, call)| {
            call.b
                .iter()
                .position(|l| l.call_id == call_id)
                .map(|l| (c, l))
        })
    }

    fn ack_2xx(&mut self, c: usize, l: usize) {
        let (via, _) = self.via_header(self.calls[c].b[l].via.transport);
        let call = &self.calls[c];
        let leg = &call.b[l];
        let bytes = Builder::request("ACK", &leg.target)
            .header("Via", &via)
            .header(
                "From",
                &format!("<{}>;tag={}", self.aor(&call.a.dn), leg.our_tag),
            )
            .header(
                "To",
                &format!(
                    "<{}>;tag={}",
                    self.aor(&call.dialled),
                    leg.their_tag.clone().unwrap_or_default()
                ),
            )
            .header("Call-ID", &leg.call_id)
            .header("CSeq", "1 ACK")
            .build();
        let binding = leg.via.clone();
        self.send(&binding, bytes);
    }

    fn ack_failure(&mut self, c: usize, l: usize, resp: &Message) {
        let call = &self.calls[c];
        let leg = &call.b[l];
        let via = format!(
            "SIP/2.0/{} {};branch={}",
            leg.via.transport.via_token(),
            self.local,
            leg.branch
        );
        let bytes = Builder::request("ACK", &leg.via.contact)
            .header("Via", &via)
            .header(
                "From",
                &format!("<{}>;tag={}", self.aor(&call.a.dn), leg.our_tag),
            )
            .header("To", resp.header("To").unwrap_or_default())
            .header("Call-ID", &leg.call_id)
            .header("CSeq", "1 ACK")
            .build();
        let binding = leg.via.clone();
        self.send(&binding, bytes);
    }

    /// Reference 1.2: one phone answered. The others are cancelled ("call
    /// completed elsewhere") and reported Redirected; then the call is
    /// established at the caller and the answering phone.
    fn answered(&mut self, c: usize, winner: usize, body: &[u8]) {
        let losers: Vec<usize> = (0..self.calls[c].b.len())
            .filter(|&i| i != winner && self.calls[c].b[i].state == BState::Offered)
            .collect();
        for l in losers {
            if self.has(Fault::NoCancelToLoser) {
                continue;
            }
            let (binding, bytes) = self.cancel_request(&self.calls[c], l, true);
            self.send(&binding, bytes);
            self.calls[c].b[l].state = BState::Cancelled;
            let call = &self.calls[c];
            let (conn_id, loser, caller, party) = (
                call.conn_id.clone(),
                call.b[l].dn.clone(),
                call.a.dn.clone(),
                call.b[l].party,
            );
            self.emit_dn(
                &loser,
                Event::new(E::Released)
                    .with(Attr::ConnId, id(&conn_id))
                    .with(Attr::ThisDn, dn(&loser))
                    .with(Attr::ThisDnRole, Value::Role(Role::Destination))
                    .with(Attr::OtherDn, dn(&caller))
                    .with(Attr::OtherDnRole, Value::Role(Role::Origination))
                    .with(Attr::CallState, Value::CallState(CallState::Redirected)),
            );
            if !self.has(Fault::DropLoserPartyDeleted) {
                self.monitor(party_deleted(&conn_id, party));
            }
        }
        let call = &mut self.calls[c];
        call.a.answered = true;
        let (conn_id, caller, dialled, phone, party, appearance) = (
            call.conn_id.clone(),
            call.a.dn.clone(),
            call.dialled.clone(),
            call.b[winner].dn.clone(),
            call.b[winner].party,
            call.appearance,
        );
        self.emit_dn(
            &caller,
            Event::new(E::Established)
                .with(Attr::ConnId, id(&conn_id))
                .with(Attr::ThisDn, dn(&caller))
                .with(Attr::ThisDnRole, Value::Role(Role::Origination))
                .with(Attr::OtherDn, dn(&dialled))
                .with(Attr::OtherDnRole, Value::Role(Role::Destination)),
        );
        let mut established = Event::new(E::Established)
            .with(Attr::ConnId, id(&conn_id))
            .with(Attr::ThisDn, dn(&phone))
            .with(Attr::ThisDnRole, Value::Role(Role::Destination))
            .with(Attr::OtherDn, dn(&caller))
            .with(Attr::OtherDnRole, Value::Role(Role::Origination));
        if let Some(index) = appearance {
            established = established.with(Attr::AppearanceIndex, Value::Int(index.into()));
        }
        self.emit_dn(&phone, established);
        self.monitor(
            Event::new(E::CallPartyState)
                .with(Attr::ConnId, id(&conn_id))
                .with(Attr::PartyId, id(&party.to_string()))
                .with(Attr::State, Value::PartyState(PartyState::Connected)),
        );
        let a = &self.calls[c].a;
        let body = if body.is_empty() {
            sdp(
                "b2bua",
                self.local.ip(),
                self.local.port().wrapping_add(2),
                "sendrecv",
            )
        } else {
            body.to_vec()
        };
        let bytes = Builder::response_to(&a.invite, 200, Some(&a.our_tag))
            .header("Contact", &self.contact(a.via.transport))
            .body("application/sdp", &body)
            .build();
        let via = a.via.clone();
        self.send(&via, bytes);
        if let Some(line) = self.calls[c].line.clone() {
            self.notify_line(&line);
        }
    }

    /// The CANCEL for an offered leg (RFC 3261 9.1: the INVITE's branch,
    /// Call-ID, From, To and CSeq number).
    fn cancel_request(&self, call: &Call, l: usize, elsewhere: bool) -> (Binding, Vec<u8>) {
        let leg = &call.b[l];
        let via = format!(
            "SIP/2.0/{} {};branch={}",
            leg.via.transport.via_token(),
            self.local,
            leg.branch
        );
        let mut b = Builder::request("CANCEL", &leg.via.contact)
            .header("Via", &via)
            .header(
                "From",
                &format!("<{}>;tag={}", self.aor(&call.a.dn), leg.our_tag),
            )
            .header("To", &format!("<{}>", self.aor(&call.dialled)))
            .header("Call-ID", &leg.call_id)
            .header("CSeq", "1 CANCEL");
        if elsewhere {
            let reason = Reason {
                protocol: "SIP".into(),
                cause: Some(200),
                text: Some("Call completed elsewhere".into()),
            };
            b = b.header("Reason", &reason.to_string());
        }
        (leg.via.clone(), b.build())
    }

    /// Every offered phone refused: the call fails back to the caller.
    fn unanswerable(&mut self, c: usize, code: u16) {
        let call = self.calls.remove(c);
        let bytes =
            Builder::response_to(&call.a.invite, code.max(400), Some(&call.a.our_tag)).build();
        self.send(&call.a.via, bytes);
        self.released_everywhere(&call);
        if let Some(line) = call.line {
            self.notify_line(&line);
        }
    }

    fn cancel(&mut self, req: &Message, from: Binding) {
        let Some(c) = self
            .calls
            .iter()
            .position(|c| c.a.invite.call_id() == req.call_id() && !c.a.answered)
        else {
            return self.respond(req, &from, 481, None);
        };
        self.respond(req, &from, 200, None);
        let a = &self.calls[c].a;
        let bytes = Builder::response_to(&a.invite, 487, Some(&a.our_tag)).build();
        let via = a.via.clone();
        self.send(&via, bytes);
        let call = self.calls.remove(c);
        self.released_everywhere(&call);
        for l in 0..call.b.len() {
            if call.b[l].state == BState::Offered {
                let (binding, bytes) = self.cancel_request(&call, l, false);
                self.send(&binding, bytes);
            }
        }
        if let Some(line) = call.line {
            self.notify_line(&line);
        }
    }

    fn bye(&mut self, req: &Message, from: Binding) {
        // From the caller?
        if let Some(c) = self
            .calls
            .iter()
            .position(|c| c.a.invite.call_id() == req.call_id() && c.a.answered)
        {
            self.respond(req, &from, 200, None);
            let call = self.calls.remove(c);
            if let Some(w) = call.winner() {
                self.send_bye_b(&call, w);
            }
            self.released_everywhere(&call);
            if let Some(line) = call.line {
                self.notify_line(&line);
            }
            return;
        }
        // From the phone that answered?
        if let Some((c, l)) = self.find_b_leg(req.call_id()) {
            if self.calls[c].b[l].state == BState::Answered {
                self.respond(req, &from, 200, None);
                let call = self.calls.remove(c);
                self.send_bye_a(&call);
                self.released_everywhere(&call);
                if let Some(line) = call.line {
                    self.notify_line(&line);
                }
                return;
            }
        }
        self.respond(req, &from, 481, None);
    }

    fn send_bye_b(&mut self, call: &Call, l: usize) {
        let leg = &call.b[l];
        let (via, _) = self.via_header(leg.via.transport);
        let bytes = Builder::request("BYE", &leg.target)
            .header("Via", &via)
            .header(
                "From",
                &format!("<{}>;tag={}", self.aor(&call.a.dn), leg.our_tag),
            )
            .header(
                "To",
                &format!(
                    "<{}>;tag={}",
                    self.aor(&call.dialled),
                    leg.their_tag.clone().unwrap_or_default()
                ),
            )
            .header("Call-ID", &leg.call_id)
            .header("CSeq", &format!("{} BYE", leg.next_cseq))
            .build();
        self.send(&leg.via, bytes);
    }

    fn send_bye_a(&mut self, call: &Call) {
        let a = &call.a;
        let (via, _) = self.via_header(a.via.transport);
        let bytes = Builder::request("BYE", &a.remote_target)
            .header("Via", &via)
            .header(
                "From",
                &format!(
                    "{};tag={}",
                    a.invite.header("To").unwrap_or_default(),
                    a.our_tag
                ),
            )
            .header("To", a.invite.header("From").unwrap_or_default())
            .header("Call-ID", a.invite.call_id())
            .header("CSeq", &format!("{} BYE", a.next_cseq))
            .build();
        self.send(&a.via, bytes);
    }

    /// Reference 1.3: the call is over. Every party still in it is released
    /// (the phone that answered also goes on hook), then monitoring deletes
    /// the parties, the phones first, and the call. Phones already released
    /// (cancelled when another answered) are not released again.
    fn released_everywhere(&mut self, call: &Call) {
        let conn_id = &call.conn_id;
        let caller = &call.a.dn;
        self.emit_dn(
            caller,
            Event::new(E::Released)
                .with(Attr::ConnId, id(conn_id))
                .with(Attr::ThisDn, dn(caller))
                .with(Attr::OtherDn, dn(&call.dialled)),
        );
        let live: Vec<&BLeg> = call
            .b
            .iter()
            .filter(|l| matches!(l.state, BState::Offered | BState::Answered))
            .collect();
        for leg in &live {
            self.emit_dn(
                &leg.dn,
                Event::new(E::Released)
                    .with(Attr::ConnId, id(conn_id))
                    .with(Attr::ThisDn, dn(&leg.dn))
                    .with(Attr::OtherDn, dn(caller))
                    .with(Attr::CallState, Value::CallState(CallState::Ok)),
            );
            if leg.state == BState::Answered && !self.has(Fault::NoOnHook) {
                self.emit_dn(
                    &leg.dn,
                    Event::new(E::OnHook).with(Attr::ThisDn, dn(&leg.dn)),
                );
            }
        }
        for leg in &live {
            self.monitor(party_deleted(conn_id, leg.party));
        }
        self.monitor(party_deleted(conn_id, call.a_party));
        self.monitor(Event::new(E::CallDeleted).with(Attr::ConnId, id(conn_id)));
    }
}

fn party_added(conn_id: &str, who: &str, party: u32, state: PartyState) -> Event {
    Event::new(E::CallPartyAdded)
        .with(Attr::ConnId, id(conn_id))
        .with(Attr::Dn, dn(who))
        .with(Attr::PartyId, id(&party.to_string()))
        .with(Attr::State, Value::PartyState(state))
}

fn party_deleted(conn_id: &str, party: u32) -> Event {
    Event::new(E::CallPartyDeleted)
        .with(Attr::ConnId, id(conn_id))
        .with(Attr::PartyId, id(&party.to_string()))
}
