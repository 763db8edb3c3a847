//! The sans-IO core of a scripted user agent: it takes parsed messages and
//! script commands, and yields bytes to send. No sockets, no clocks, so
//! every behaviour is unit-tested by feeding it messages.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::sip::build::{sdp, Builder};
use crate::sip::headers::{appearances, Appearance, SubState, SubscriptionState};
use crate::sip::transport::Inbound;
use crate::sip::{Message, Transport};

/// Who a user agent is and where it talks.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The DN the case calls it by (60970_2).
    pub dn: String,
    /// Its SIP user part (on the embedded target, the DN itself).
    pub user: String,
    pub domain: String,
    pub local: SocketAddr,
    pub transport: Transport,
    /// The server every request goes to (outbound proxy).
    pub server: SocketAddr,
    /// Makes Call-IDs, tags and branches unique across cases and runs.
    pub nonce: String,
}

/// Where a call is, as the script sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Outgoing INVITE sent, no provisional response with a tag yet.
    Calling,
    /// Outgoing, a provisional response received.
    Early,
    /// Incoming INVITE answered with 180; waiting for the script.
    Ringing,
    /// Incoming, 200 sent; waiting for the ACK.
    Connecting,
    Confirmed,
    Ended(End),
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Our INVITE got this final failure response.
    Failed(u16),
    /// We refused an incoming INVITE with this code.
    Refused(u16),
    /// The other side cancelled; the CANCEL's Reason, if any.
    CancelledByPeer(Option<String>),
    /// We cancelled our INVITE.
    CancelledByUs,
    /// The other side sent BYE.
    ByePeer,
    /// We sent BYE.
    ByeUs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDirection {
    Outgoing,
    Incoming,
}

/// A call as the script and the report see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallView {
    pub call_id: String,
    pub direction: CallDirection,
    pub phase: Phase,
    /// The other party's user part (caller for incoming, callee for outgoing).
    pub remote_user: String,
    /// Appearances in the Call-Info of the incoming INVITE.
    pub call_info: Vec<Appearance>,
}

/// What the agent exposes for synchronisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub registered: bool,
    /// The call-info subscription is accepted (2xx).
    pub subscribed: bool,
    /// call-info NOTIFYs received.
    pub notifies: usize,
    pub calls: Vec<CallView>,
    /// Things the server did that a correct peer would not: unknown
    /// dialogs, refused requests, unparseable headers. Reported, not fatal.
    pub problems: Vec<String>,
}

impl Status {
    pub fn call(&self, pred: impl Fn(&CallView) -> bool) -> Option<&CallView> {
        self.calls.iter().rev().find(|c| pred(c))
    }
}

/// A script command the agent cannot carry out in its current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{dn} cannot {action}: {why}")]
pub struct ScriptError {
    pub dn: String,
    pub action: &'static str,
    pub why: String,
}

/// Bytes to send and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

#[derive(Debug)]
struct Call {
    view: CallView,
    local_tag: String,
    remote_tag: Option<String>,
    /// From and To as we put them in requests of this dialog.
    local_addr: String,
    remote_addr: String,
    remote_target: String,
    next_cseq: u32,
    invite_cseq: u32,
    invite_branch: String,
    /// The incoming INVITE and where it came from, to answer it.
    invite: Option<(Message, SocketAddr)>,
    /// The last response we sent to the INVITE, for retransmissions.
    last_response: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Subscription {
    call_id: String,
    local_tag: String,
    line: String,
}

/// A scripted user agent.
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
    counter: u64,
    register_call_id: String,
    subscription: Option<Subscription>,
    calls: Vec<Call>,
    status: Status,
    out: VecDeque<Transmit>,
}

impl Agent {
    pub fn new(cfg: AgentConfig) -> Agent {
        let register_call_id = format!("reg-{}-{}@scacheck", cfg.user, cfg.nonce);
        Agent {
            cfg,
            counter: 0,
            register_call_id,
            subscription: None,
            calls: Vec::new(),
            status: Status::default(),
            out: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    pub fn status(&self) -> Status {
        let mut s = self.status.clone();
        s.calls = self.calls.iter().map(|c| c.view.clone()).collect();
        s
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// Records a problem found outside the agent (a failed send).
    pub fn note(&mut self, problem: String) {
        self.status.problems.push(problem);
    }

    fn unique(&mut self, what: &str) -> String {
        self.counter += 1;
        format!(
            "{what}{}-{}-{}",
            self.counter, self.cfg.user, self.cfg.nonce
        )
    }

    fn aor(&self, user: &str) -> String {
        format!("sip:{user}@{}", self.cfg.domain)
    }

    fn via(&mut self) -> (String, String) {
        let branch = self.unique("z9hG4bK");
        let via = format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.cfg.transport.via_token(),
            self.cfg.local
        );
        (via, branch)
    }

    fn contact(&self) -> String {
        match self.cfg.transport {
            Transport::Udp => format!("<sip:{}@{}>", self.cfg.user, self.cfg.local),
            Transport::Tcp => format!("<sip:{}@{};transport=tcp>", self.cfg.user, self.cfg.local),
        }
    }

    fn send_to_server(&mut self, bytes: Vec<u8>) {
        self.out.push_back(Transmit {
            to: self.cfg.server,
            bytes,
        });
    }

    fn offer(&self, direction: &str) -> Vec<u8> {
        sdp(
            &self.cfg.user,
            self.cfg.local.ip(),
            self.cfg.local.port().wrapping_add(2),
            direction,
        )
    }

    // ---- script commands -------------------------------------------------

    /// REGISTER the agent's own AoR.
    pub fn register(&mut self) {
        let (via, _) = self.via();
        let aor = self.aor(&self.cfg.user);
        let tag = self.unique("t");
        let bytes = Builder::request("REGISTER", &format!("sip:{}", self.cfg.domain))
            .header("Via", &via)
            .header("From", &format!("<{aor}>;tag={tag}"))
            .header("To", &format!("<{aor}>"))
            .header("Call-ID", &self.register_call_id)
            .header("CSeq", "1 REGISTER")
            .header("Contact", &self.contact())
            .header("Expires", "3600")
            .build();
        self.send_to_server(bytes);
    }

    /// SUBSCRIBE to the call-info package of the shared line `line`.
    pub fn subscribe_call_info(&mut self, line: &str) {
        let (via, _) = self.via();
        let call_id = self.unique("sub");
        let local_tag = self.unique("t");
        let bytes = Builder::request("SUBSCRIBE", &self.aor(line))
            .header("Via", &via)
            .header(
                "From",
                &format!("<{}>;tag={local_tag}", self.aor(&self.cfg.user)),
            )
            .header("To", &format!("<{}>", self.aor(line)))
            .header("Call-ID", &call_id)
            .header("CSeq", "1 SUBSCRIBE")
            .header("Contact", &self.contact())
            .header("Event", "call-info")
            .header("Accept", "application/x-broadworks-call-info")
            .header("Expires", "3600")
            .build();
        self.subscription = Some(Subscription {
            call_id,
            local_tag,
            line: line.to_string(),
        });
        self.send_to_server(bytes);
    }

    /// INVITE `to` (a user part in the agent's domain).
    pub fn invite(&mut self, to: &str) -> String {
        let (via, branch) = self.via();
        let call_id = self.unique("call");
        let local_tag = self.unique("t");
        let local_addr = format!("<{}>", self.aor(&self.cfg.user));
        let remote_addr = format!("<{}>", self.aor(to));
        let bytes = Builder::request("INVITE", &self.aor(to))
            .header("Via", &via)
            .header("From", &format!("{local_addr};tag={local_tag}"))
            .header("To", &remote_addr)
            .header("Call-ID", &call_id)
            .header("CSeq", "1 INVITE")
            .header("Contact", &self.contact())
            .body("application/sdp", &self.offer("sendrecv"))
            .build();
        self.calls.push(Call {
            view: CallView {
                call_id: call_id.clone(),
                direction: CallDirection::Outgoing,
                phase: Phase::Calling,
                remote_user: to.to_string(),
                call_info: Vec::new(),
            },
            local_tag,
            remote_tag: None,
            local_addr,
            remote_addr,
            remote_target: self.aor(to),
            next_cseq: 2,
            invite_cseq: 1,
            invite_branch: branch,
            invite: None,
            last_response: None,
        });
        self.send_to_server(bytes);
        call_id
    }

    fn error(&self, action: &'static str, why: impl Into<String>) -> ScriptError {
        ScriptError {
            dn: self.cfg.dn.clone(),
            action,
            why: why.into(),
        }
    }

    fn ringing_call(&mut self, action: &'static str) -> Result<usize, ScriptError> {
        self.calls
            .iter()
            .rposition(|c| c.view.phase == Phase::Ringing)
            .ok_or_else(|| self.error(action, "no incoming call is ringing"))
    }

    /// Answer the ringing call with 200 OK.
    pub fn answer(&mut self) -> Result<(), ScriptError> {
        let i = self.ringing_call("answer")?;
        let body = self.offer("sendrecv");
        let contact = self.contact();
        let call = &mut self.calls[i];
        let Some((invite, peer)) = call.invite.clone() else {
            return Err(self.error("answer", "the ringing call has no INVITE"));
        };
        let bytes = Builder::response_to(&invite, 200, Some(&call.local_tag))
            .header("Contact", &contact)
            .body("application/sdp", &body)
            .build();
        call.view.phase = Phase::Connecting;
        call.last_response = Some(bytes.clone());
        self.out.push_back(Transmit { to: peer, bytes });
        Ok(())
    }

    /// Refuse the ringing call with a final response `code` (4xx-6xx).
    pub fn refuse(&mut self, code: u16) -> Result<(), ScriptError> {
        if !(400..700).contains(&code) {
            return Err(self.error("refuse", format!("{code} is not a failure code")));
        }
        let i = self.ringing_call("refuse")?;
        let call = &mut self.calls[i];
        let Some((invite, peer)) = call.invite.clone() else {
            return Err(self.error("refuse", "the ringing call has no INVITE"));
        };
        let bytes = Builder::response_to(&invite, code, Some(&call.local_tag)).build();
        call.view.phase = Phase::Ended(End::Refused(code));
        call.last_response = Some(bytes.clone());
        self.out.push_back(Transmit { to: peer, bytes });
        Ok(())
    }

    /// BYE the confirmed call.
    pub fn hangup(&mut self) -> Result<(), ScriptError> {
        let i = self
            .calls
            .iter()
            .rposition(|c| c.view.phase == Phase::Confirmed)
            .ok_or_else(|| self.error("hang up", "no call is established"))?;
        let (via, _) = self.via();
        let call = &mut self.calls[i];
        let cseq = call.next_cseq;
        call.next_cseq += 1;
        let bytes = Builder::request("BYE", &call.remote_target)
            .header("Via", &via)
            .header(
                "From",
                &format!("{};tag={}", call.local_addr, call.local_tag),
            )
            .header(
                "To",
                &with_tag(&call.remote_addr, call.remote_tag.as_deref()),
            )
            .header("Call-ID", &call.view.call_id)
            .header("CSeq", &format!("{cseq} BYE"))
            .build();
        call.view.phase = Phase::Ended(End::ByeUs);
        self.send_to_server(bytes);
        Ok(())
    }

    /// CANCEL our unanswered INVITE.
    pub fn cancel(&mut self) -> Result<(), ScriptError> {
        let i = self
            .calls
            .iter()
            .rposition(|c| matches!(c.view.phase, Phase::Calling | Phase::Early))
            .ok_or_else(|| self.error("cancel", "no outgoing call is unanswered"))?;
        let call = &mut self.calls[i];
        // CANCEL repeats the INVITE's Via branch, Call-ID, From, To, CSeq
        // number (RFC 3261 9.1).
        let via = format!(
            "SIP/2.0/{} {};branch={};rport",
            self.cfg.transport.via_token(),
            self.cfg.local,
            call.invite_branch
        );
        let bytes = Builder::request("CANCEL", &call.remote_target)
            .header("Via", &via)
            .header(
                "From",
                &format!("{};tag={}", call.local_addr, call.local_tag),
            )
            .header("To", &call.remote_addr)
            .header("Call-ID", &call.view.call_id)
            .header("CSeq", &format!("{} CANCEL", call.invite_cseq))
            .build();
        call.view.phase = Phase::Ended(End::CancelledByUs);
        self.send_to_server(bytes);
        Ok(())
    }

    // ---- incoming ---------------------------------------------------------

    /// Takes one message that arrived.
    pub fn handle(&mut self, inbound: &Inbound) {
        let msg = &inbound.msg;
        if msg.is_request() {
            self.handle_request(msg, inbound.peer);
        } else {
            self.handle_response(msg);
        }
    }

    fn respond(&mut self, req: &Message, peer: SocketAddr, code: u16, to_tag: Option<&str>) {
        let bytes = Builder::response_to(req, code, to_tag).build();
        self.out.push_back(Transmit { to: peer, bytes });
    }

    fn find_call(&self, call_id: &str) -> Option<usize> {
        self.calls.iter().position(|c| c.view.call_id == call_id)
    }

    fn handle_request(&mut self, req: &Message, peer: SocketAddr) {
        let method = req.method().unwrap_or_default();
        let known = self.find_call(req.call_id());
        match (method.as_str(), known) {
            ("INVITE", None) if req.to_tag().is_none() => self.incoming_invite(req, peer),
            ("INVITE", Some(i)) if req.to_tag().is_none() => {
                // A retransmission: repeat what we said.
                if let Some(bytes) = self.calls[i].last_response.clone() {
                    self.out.push_back(Transmit { to: peer, bytes });
                }
            }
            ("INVITE", Some(i)) => {
                // re-INVITE (hold, resume): accept, mirroring the direction.
                let dir = mirror_direction(req.body());
                let body = self.offer(dir);
                let contact = self.contact();
                let tag = self.calls[i].local_tag.clone();
                let bytes = Builder::response_to(req, 200, Some(&tag))
                    .header("Contact", &contact)
                    .body("application/sdp", &body)
                    .build();
                self.out.push_back(Transmit { to: peer, bytes });
            }
            ("ACK", Some(i)) => {
                if self.calls[i].view.phase == Phase::Connecting {
                    self.calls[i].view.phase = Phase::Confirmed;
                }
            }
            ("ACK", None) => {}
            ("CANCEL", Some(i)) if self.calls[i].view.phase == Phase::Ringing => {
                self.respond(req, peer, 200, None);
                let reason = req.header("Reason").map(str::to_string);
                let call = &mut self.calls[i];
                call.view.phase = Phase::Ended(End::CancelledByPeer(reason));
                if let Some((invite, invite_peer)) = call.invite.clone() {
                    let tag = call.local_tag.clone();
                    let bytes = Builder::response_to(&invite, 487, Some(&tag)).build();
                    self.calls[i].last_response = Some(bytes.clone());
                    self.out.push_back(Transmit {
                        to: invite_peer,
                        bytes,
                    });
                }
            }
            ("CANCEL", _) => {
                self.status.problems.push(format!(
                    "CANCEL for no ringing call (Call-ID {})",
                    req.call_id()
                ));
                self.respond(req, peer, 481, None);
            }
            ("BYE", Some(i))
                if matches!(
                    self.calls[i].view.phase,
                    Phase::Confirmed | Phase::Connecting
                ) =>
            {
                self.calls[i].view.phase = Phase::Ended(End::ByePeer);
                self.respond(req, peer, 200, None);
            }
            ("BYE", _) => {
                self.status.problems.push(format!(
                    "BYE for no established call (Call-ID {})",
                    req.call_id()
                ));
                self.respond(req, peer, 481, None);
            }
            ("NOTIFY", _) => self.notify(req, peer),
            ("OPTIONS", _) => self.respond(req, peer, 200, None),
            (other, _) => {
                self.status
                    .problems
                    .push(format!("unexpected {other} request"));
                self.respond(req, peer, 501, None);
            }
        }
    }

    fn incoming_invite(&mut self, req: &Message, peer: SocketAddr) {
        let local_tag = self.unique("t");
        let call_info = match appearances(req.headers("Call-Info")) {
            Ok(a) => a,
            Err(e) => {
                self.status
                    .problems
                    .push(format!("INVITE with unreadable Call-Info: {e}"));
                Vec::new()
            }
        };
        let from = req.from();
        let remote_user = from
            .as_ref()
            .and_then(|f| f.user())
            .unwrap_or_default()
            .to_string();
        let ringing = Builder::response_to(req, 180, Some(&local_tag))
            .header("Contact", &self.contact())
            .build();
        self.calls.push(Call {
            view: CallView {
                call_id: req.call_id().to_string(),
                direction: CallDirection::Incoming,
                phase: Phase::Ringing,
                remote_user,
                call_info,
            },
            local_addr: req.header("To").unwrap_or_default().to_string(),
            remote_addr: from.map(|f| format!("<{}>", f.uri)).unwrap_or_default(),
            remote_tag: req.from_tag(),
            remote_target: req.contact_uri().unwrap_or_else(|| self.aor("unknown")),
            local_tag,
            next_cseq: 1,
            invite_cseq: req.cseq().map(|(n, _)| n).unwrap_or(1),
            invite_branch: req.via_branch().unwrap_or_default(),
            invite: Some((req.clone(), peer)),
            last_response: Some(ringing.clone()),
        });
        self.out.push_back(Transmit {
            to: peer,
            bytes: ringing,
        });
    }

    fn notify(&mut self, req: &Message, peer: SocketAddr) {
        let ours = self.subscription.as_ref().is_some_and(|s| {
            s.call_id == req.call_id() && req.to_tag().as_deref() == Some(s.local_tag.as_str())
        });
        if !ours {
            self.status.problems.push(format!(
                "NOTIFY outside our subscription (Call-ID {})",
                req.call_id()
            ));
            self.respond(req, peer, 481, None);
            return;
        }
        self.respond(req, peer, 200, None);
        self.status.notifies += 1;
        if let Err(e) = appearances(req.headers("Call-Info")) {
            self.status
                .problems
                .push(format!("NOTIFY with unreadable Call-Info: {e}"));
        }
        let state = req
            .header("Subscription-State")
            .and_then(SubscriptionState::parse);
        match state {
            Some(s) if s.state == SubState::Terminated => self.status.subscribed = false,
            Some(_) => {}
            None => self
                .status
                .problems
                .push("NOTIFY without a readable Subscription-State".into()),
        }
    }

    fn handle_response(&mut self, resp: &Message) {
        let code = resp.status().unwrap_or(0);
        let Some((_, method)) = resp.cseq() else {
            return;
        };
        match method {
            "REGISTER" if resp.call_id() == self.register_call_id && code >= 200 => {
                self.status.registered = (200..300).contains(&code);
                if code >= 300 {
                    self.status
                        .problems
                        .push(format!("REGISTER refused with {code}"));
                }
            }
            "SUBSCRIBE"
                if self
                    .subscription
                    .as_ref()
                    .is_some_and(|s| s.call_id == resp.call_id()) =>
            {
                if (200..300).contains(&code) {
                    self.status.subscribed = true;
                } else if code >= 300 {
                    let line = self
                        .subscription
                        .as_ref()
                        .map(|s| s.line.clone())
                        .unwrap_or_default();
                    self.status
                        .problems
                        .push(format!("call-info SUBSCRIBE to {line} refused with {code}"));
                }
            }
            "INVITE" => self.invite_response(resp, code),
            _ => {}
        }
    }

    fn invite_response(&mut self, resp: &Message, code: u16) {
        let Some(i) = self.find_call(resp.call_id()) else {
            self.status.problems.push(format!(
                "INVITE response for an unknown call (Call-ID {})",
                resp.call_id()
            ));
            return;
        };
        if self.calls[i].view.direction != CallDirection::Outgoing {
            return;
        }
        let tag = resp.to_tag();
        let call = &mut self.calls[i];
        match code {
            100 => {}
            101..=199 => {
                if call.view.phase == Phase::Calling && tag.is_some() {
                    call.remote_tag = tag;
                    call.view.phase = Phase::Early;
                }
            }
            200..=299 => {
                if matches!(
                    call.view.phase,
                    Phase::Calling | Phase::Early | Phase::Ended(End::CancelledByUs)
                ) {
                    call.remote_tag = tag;
                    if let Some(target) = resp.contact_uri() {
                        call.remote_target = target;
                    }
                    call.view.phase = Phase::Confirmed;
                }
                // ACK every 2xx, retransmissions included (RFC 3261 13.2.2.4).
                let (via, _) = self.via();
                let call = &self.calls[i];
                let bytes = Builder::request("ACK", &call.remote_target)
                    .header("Via", &via)
                    .header(
                        "From",
                        &format!("{};tag={}", call.local_addr, call.local_tag),
                    )
                    .header("To", resp.header("To").unwrap_or_default())
                    .header("Call-ID", &call.view.call_id)
                    .header("CSeq", &format!("{} ACK", call.invite_cseq))
                    .build();
                self.send_to_server(bytes);
            }
            _ => {
                if !matches!(call.view.phase, Phase::Ended(_)) {
                    call.view.phase = Phase::Ended(End::Failed(code));
                }
                // ACK for a failure is hop-by-hop, in the INVITE's transaction.
                let via = format!(
                    "SIP/2.0/{} {};branch={};rport",
                    self.cfg.transport.via_token(),
                    self.cfg.local,
                    call.invite_branch
                );
                let call = &self.calls[i];
                let bytes = Builder::request("ACK", &self.aor(&call.view.remote_user))
                    .header("Via", &via)
                    .header(
                        "From",
                        &format!("{};tag={}", call.local_addr, call.local_tag),
                    )
                    .header("To", resp.header("To").unwrap_or_default())
                    .header("Call-ID", &call.view.call_id)
                    .header("CSeq", &format!("{} ACK", call.invite_cseq))
                    .build();
                self.send_to_server(bytes);
            }
        }
    }
}

fn with_tag(addr: &str, tag: Option<&str>) -> String {
    match tag {
        Some(t) => format!("{addr};tag={t}"),
        None => addr.to_string(),
    }
}

/// The SDP direction that answers an offer's.
fn mirror_direction(offer: &[u8]) -> &'static str {
    let offer = String::from_utf8_lossy(offer);
    if offer.contains("a=sendonly") {
        "recvonly"
    } else if offer.contains("a=inactive") {
        "inactive"
    } else if offer.contains("a=recvonly") {
        "sendonly"
    } else {
        "sendrecv"
    }
}
