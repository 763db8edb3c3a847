//! The sans-IO core of a scripted user agent: it takes parsed messages and
//! script commands, and yields bytes to send. No sockets, no clocks, so
//! every behaviour is unit-tested by feeding it messages.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::sip::auth::{self, Credentials, Keyring};
use crate::sip::build::{sdp, Builder};
use crate::sip::dialog::Dialog;
use crate::sip::headers::{ApState, Appearance, AppearanceIndex};
use crate::sip::record::Inbound;
use crate::sip::sdp::HoldStyle;
use crate::sip::tls::TlsUri;
use crate::sip::{Message, Transport};

use super::reading::{self, Subscription};

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
    /// RFC 3261's T1, for its retransmissions over UDP (the driver's).
    pub t1: std::time::Duration,
    /// What it answers a 401 or 407 with; none: a challenge ends its
    /// script (`Status::auth_failed`).
    pub credentials: Option<Credentials>,
    /// Over TLS: `transport=tls` in its Contact, or `sips:` URIs.
    pub tls_uri: TlsUri,
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
    /// The appearance this call is on, as far as the phone knows.
    pub appearance: Option<u32>,
    /// Our hold re-INVITE was accepted.
    pub held: bool,
    /// We answered a re-INVITE in this dialog with 2xx and its ACK has
    /// not come yet (an initial INVITE's is [`Phase::Connecting`]).
    pub reinvite_unacked: bool,
}

impl CallView {
    /// A 2xx of ours to an INVITE of this call waits for its ACK.
    pub fn ack_due(&self) -> bool {
        self.phase == Phase::Connecting || (self.phase == Phase::Confirmed && self.reinvite_unacked)
    }
}

/// The phone's line-seize subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seizure {
    Pending(u32),
    Granted(u32),
    Refused(u16),
    Ended,
}

/// What the agent exposes for synchronisation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub registered: bool,
    /// The call-info subscription is established (by its 2xx, or by a
    /// NOTIFY in its dialog when that came first or the 2xx was lost: RFC
    /// 6665 4.1.2.4) and not terminated.
    pub subscribed: bool,
    /// 2xx answers to call-info SUBSCRIBEs (first and refreshes).
    pub subscribe_answers: usize,
    /// call-info NOTIFYs received.
    pub notifies: usize,
    /// The Call-ID of the subscription the latest call-info NOTIFY it
    /// handled belongs to (the leak check waits for its probe's).
    pub notified_in: Option<String>,
    pub seizure: Option<Seizure>,
    pub calls: Vec<CallView>,
    /// Things the server did that a correct peer would not: unknown
    /// dialogs, refused requests, unparseable headers. Reported, not fatal.
    pub problems: Vec<String>,
    /// Requests for another SIP identity that reached this phone's
    /// address.
    pub strays: Tally,
    /// 2xx answers to its INVITE from a second dialog (a proxy that forked
    /// the call to phones that both answered): each ACKed and ended with
    /// BYE, as RFC 3261 13.2.2.4 asks.
    pub forks: Tally,
    /// Challenges answered by sending the request again with credentials.
    pub challenges: usize,
    /// What the line's latest call-info NOTIFY told it: each numbered
    /// appearance with its state.
    pub told: Vec<(u32, ApState)>,
    /// A challenge the phone could not answer ("authentication failed for
    /// 60970 (user 60970-3): 401 after credentials"): every wait on the
    /// phone ends with it, so the case is inconclusive, not hung.
    pub auth_failed: Option<String>,
    /// The Call-IDs of the calls whose BYE the phone sent and has had no
    /// final answer to: until it has one, the server may not have ended
    /// the call (the teardown waits for it before it unsubscribes).
    pub byes_unanswered: Vec<String>,
    /// Where a lost ACK stands ([`Agent::lose_ack`]).
    pub lost_ack: Option<LostAck>,
    /// Its unregistration (REGISTER, Expires 0) has been answered 2xx: the
    /// server has let go of the phone's binding.
    pub unregistered: bool,
    /// How many TCP or TLS connections its endpoint closed when asked to
    /// ([`Agent::close_connections`]); None until it has.
    pub closed_connections: Option<usize>,
}

/// How many times something happened, and the first time, in words.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: usize,
    pub first: Option<String>,
}

impl Tally {
    pub fn add(&mut self, what: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(what());
        }
    }
}

/// A phone's lost ACK ([`Agent::lose_ack`]): armed, dropped (the 2xx it
/// answered not acknowledged), made good (the 2xx came again and was
/// acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostAck {
    Armed,
    Dropped,
    Resent,
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
    dialog: Dialog,
    invite_cseq: u32,
    invite_branch: String,
    /// The incoming INVITE and where it came from, to answer it.
    invite: Option<(Message, SocketAddr)>,
    /// The last response we sent to the INVITE, for retransmissions.
    last_response: Option<Vec<u8>>,
    /// A hold or resume re-INVITE in progress: CSeq, branch, holding?
    reinvite: Option<(u32, String, bool)>,
    /// The dialogs of 2xx answers after the first (a forking proxy's other
    /// branches), ACKed and ended; at most [`MAX_FORKS`] kept, to ACK
    /// their 2xx again when it is retransmitted.
    forks: Vec<Dialog>,
    /// The To-tag of the 2xx that answered our INVITE, once one has.
    answered_tag: Option<String>,
}

/// How many forked dialogs of one call a phone remembers: a server that
/// answers with ever new dialogs has each ACKed and ended all the same,
/// but memory stays bounded.
const MAX_FORKS: usize = 16;

/// A scripted user agent.
#[derive(Debug)]
pub struct Agent {
    cfg: AgentConfig,
    counter: u64,
    register_call_id: String,
    call_info: Option<Subscription>,
    line_seize: Option<Subscription>,
    calls: Vec<Call>,
    /// The appearances the last call-info NOTIFY listed.
    told: Vec<Appearance>,
    /// The appearance index of the latest line-seize SUBSCRIBE.
    seized: Option<u32>,
    /// The call-info subscription the leak check's replaced.
    replaced: Option<Subscription>,
    /// The next NOTIFY of the call-info subscription is to be answered
    /// 481 ([`Agent::refuse_notifies`]).
    refusing: bool,
    /// The call-info subscription whose NOTIFY the phone answered 481:
    /// every later one on it gets 481 too.
    refused: Option<Subscription>,
    /// The current call-info subscription was unsubscribed (Expires 0).
    unsubscribed: bool,
    status: Status,
    out: VecDeque<Transmit>,
    /// The latest non-INVITE requests with their answers.
    answered: VecDeque<(Vec<u8>, Vec<u8>)>,
    /// The CSeq number of its latest REGISTER (one Call-ID for them all).
    register_cseq: u32,
    /// The CSeq of the phone's unregistration, once sent.
    unregister_cseq: Option<u32>,
    /// Its digest state, with credentials.
    keyring: Option<Keyring>,
    /// The latest requests sent to the server that it may challenge.
    sent: VecDeque<Sent>,
    /// Challenged transactions (Call-ID, CSeq) with the ACK of an INVITE's,
    /// to answer a retransmitted challenge without a second request.
    challenged: VecDeque<(String, u32, Option<Vec<u8>>)>,
    /// What it sends now is its cleanup ([`Agent::tear_down`]).
    /// The mark what it sends now carries ([`TEARDOWN_HEADER`],
    /// [`TOGETHER_HEADER`]), if any.
    marking: Option<&'static str>,
    /// A race's step was taken ([`Agent::together`]).
    step_taken: bool,
    /// Its endpoint is to close its connections ([`Agent::close_connections`]).
    closing: bool,
}

/// A request the server may challenge, as sent.
#[derive(Debug)]
struct Sent {
    call_id: String,
    cseq: u32,
    method: String,
    raw: Vec<u8>,
    /// It answered a challenge to the request before it: another challenge
    /// that is not `stale` means the credentials are wrong.
    answering: bool,
    /// How many stale challenges its chain has had.
    stale: u8,
}

/// How many stale challenges in a row a request survives: a server that
/// says every fresh nonce is stale is not authenticating anyone.
const STALE_RETRIES: u8 = 3;

/// How many answered requests a phone remembers: far more than can be in
/// flight (a retransmission comes within Timer F, 32 s, of the original).
const ANSWERED: usize = 64;

impl Agent {
    pub fn new(cfg: AgentConfig) -> Agent {
        // Named by DN, not SIP user: on a target where the phones of a
        // shared line register one SIP user, names made from the user would
        // be the same for both phones (one REGISTER dialog, one call-info
        // subscription, one To-tag for two answers).
        let register_call_id = format!("reg-{}-{}@scacheck", cfg.dn, cfg.nonce);
        let cfg_keyring = cfg.credentials.clone().map(Keyring::new);
        Agent {
            cfg,
            counter: 0,
            register_call_id,
            call_info: None,
            line_seize: None,
            calls: Vec::new(),
            told: Vec::new(),
            seized: None,
            replaced: None,
            refusing: false,
            refused: None,
            unsubscribed: false,
            status: Status::default(),
            out: VecDeque::new(),
            answered: VecDeque::new(),
            register_cseq: 0,
            unregister_cseq: None,
            keyring: cfg_keyring,
            sent: VecDeque::new(),
            challenged: VecDeque::new(),
            marking: None,
            step_taken: false,
            closing: false,
        }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    pub fn status(&self) -> Status {
        let mut s = self.status.clone();
        s.calls = self.calls.iter().map(|c| c.view.clone()).collect();
        s.told = self
            .told
            .iter()
            .filter_map(|a| match (a.index, a.state) {
                (AppearanceIndex::Index(i), Some(state)) => Some((i, state)),
                _ => None,
            })
            .collect();
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

    /// A Call-ID, tag or branch no other phone makes: by DN, as the
    /// REGISTER Call-ID is (two phones of a line may share a SIP user).
    fn unique(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("{what}{}-{}-{}", self.counter, self.cfg.dn, self.cfg.nonce)
    }

    /// `sips` over TLS when the profile asks for sips URIs, else `sip`.
    fn scheme(&self) -> &'static str {
        match (self.cfg.transport, self.cfg.tls_uri) {
            (Transport::Tls, TlsUri::Sips) => "sips",
            _ => "sip",
        }
    }

    fn aor(&self, user: &str) -> String {
        format!("{}:{user}@{}", self.scheme(), self.cfg.domain)
    }

    fn via_with(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            self.cfg.transport.via_token(),
            self.cfg.local
        )
    }

    fn via(&mut self) -> (String, String) {
        let branch = self.unique("z9hG4bK");
        (self.via_with(&branch), branch)
    }

    fn contact(&self) -> String {
        self.contact_as(&self.cfg.user)
    }

    /// The phone's Contact with another user part: the same socket, to
    /// the server another subscriber.
    fn contact_as(&self, user: &str) -> String {
        let local = self.cfg.local;
        match (self.cfg.transport, self.scheme()) {
            (Transport::Udp, _) => format!("<sip:{user}@{local}>"),
            // sips: implies TLS (RFC 3261 19.1): no transport parameter.
            (Transport::Tls, "sips") => format!("<sips:{user}@{local}>"),
            (other, _) => format!("<sip:{user}@{local};transport={other}>"),
        }
    }

    /// Sends a request to the server: with the credentials of the
    /// challenges the phone holds (RFC 3261 22.3: a phone answers later
    /// requests to the same realm with them), and remembered, so that a
    /// challenge to it is answered by sending it again.
    fn send_to_server(&mut self, bytes: Vec<u8>) {
        self.send_request(bytes, false, 0);
    }

    fn send_request(&mut self, bytes: Vec<u8>, answering: bool, stale: u8) {
        let to = self.cfg.server;
        let Ok(msg) = Message::parse(bytes.clone()) else {
            self.out.push_back(Transmit { to, bytes });
            return;
        };
        let method = msg.method().unwrap_or_default();
        // ACK and CANCEL are never challenged (RFC 3261 22.1): they cannot
        // be sent again.
        if method == "ACK" || method == "CANCEL" {
            self.out.push_back(Transmit { to, bytes });
            return;
        }
        let bytes = match self.marking {
            Some(mark) if !is_marked(&bytes, mark) => with_header(&bytes, mark),
            _ => bytes,
        };
        let bytes = match self.keyring.as_mut() {
            Some(keys) => {
                let uri = msg.request_uri().unwrap_or_default();
                let creds = keys.authorize(&method, uri, msg.body());
                if creds.is_empty() {
                    bytes
                } else {
                    auth::resend(&bytes, None, &creds)
                }
            }
            None => bytes,
        };
        if self.sent.len() == ANSWERED {
            self.sent.pop_front();
        }
        self.sent.push_back(Sent {
            call_id: msg.call_id().to_string(),
            cseq: msg.cseq().map_or(0, |(n, _)| n),
            method,
            raw: bytes.clone(),
            answering,
            stale,
        });
        self.out.push_back(Transmit { to, bytes });
    }

    /// The dialog of a Call-ID the phone has: a call's or a subscription's.
    fn dialog_mut(&mut self, call_id: &str) -> Option<&mut Dialog> {
        if let Some(i) = self.find_call(call_id) {
            return Some(&mut self.calls[i].dialog);
        }
        [
            &mut self.call_info,
            &mut self.line_seize,
            &mut self.replaced,
        ]
        .into_iter()
        .flatten()
        .map(|s| &mut s.dialog)
        .find(|d| d.call_id == call_id)
    }

    /// A 401 or 407: the challenged request is sent again with
    /// credentials in a new transaction (new branch, next CSeq), and the
    /// challenge of an INVITE is ACKed. Says whether the response was a
    /// challenge to one of its requests (and so is nothing more).
    fn challenge(&mut self, resp: &Message, code: u16) -> bool {
        let Some((cseq, method)) = resp.cseq() else {
            return false;
        };
        let call_id = resp.call_id().to_string();
        if let Some((_, _, ack)) = self
            .challenged
            .iter()
            .find(|(c, n, _)| *c == call_id && *n == cseq)
        {
            // The challenge again (our ACK was lost): ACK it again.
            if let Some(bytes) = ack.clone() {
                self.send_to_server(bytes);
            }
            return true;
        }
        let Some(at) = self
            .sent
            .iter()
            .position(|s| s.call_id == call_id && s.cseq == cseq && s.method == method)
        else {
            return false;
        };
        let Some(sent) = self.sent.remove(at) else {
            return false;
        };
        let call = self.find_call(&call_id);
        let ack = match (method, call) {
            ("INVITE", Some(i)) => {
                let branch = Message::parse(sent.raw.clone())
                    .ok()
                    .and_then(|m| m.via_branch())
                    .unwrap_or_default();
                Some(self.failure_ack(i, resp, cseq, &branch))
            }
            _ => None,
        };
        if self.challenged.len() == ANSWERED {
            self.challenged.pop_front();
        }
        self.challenged
            .push_back((call_id.clone(), cseq, ack.clone()));
        if let Some(bytes) = ack {
            self.send_to_server(bytes);
        }
        // A call the script gave up on meanwhile is not started again.
        if let Some(i) = call {
            let c = &self.calls[i];
            let initial = c.view.direction == CallDirection::Outgoing && c.invite_cseq == cseq;
            if method == "INVITE" && initial && matches!(c.view.phase, Phase::Ended(_)) {
                return true;
            }
        }
        let answer = match self.keyring.as_mut() {
            None => Err(format!("{code} and no credentials to answer it")),
            Some(keys) => keys.challenged(resp).and_then(|c| {
                if sent.answering && !c.stale {
                    Err(format!("{code} after credentials"))
                } else if c.stale && sent.stale >= STALE_RETRIES {
                    Err(format!("{code} stale after {STALE_RETRIES} fresh nonces"))
                } else {
                    Ok(c)
                }
            }),
        };
        let challenged = match answer {
            Ok(c) => c,
            Err(why) => {
                self.auth_failed(why, method, &call_id, cseq, code);
                return true;
            }
        };
        let branch = self.unique("z9hG4bK");
        let next = if method == "REGISTER" {
            self.register_cseq += 1;
            self.register_cseq
        } else {
            match self.dialog_mut(&call_id) {
                Some(d) => {
                    d.next_cseq += 1;
                    d.next_cseq - 1
                }
                None => cseq + 1,
            }
        };
        if let Some(i) = call.filter(|_| method == "INVITE") {
            let c = &mut self.calls[i];
            if c.view.direction == CallDirection::Outgoing && c.invite_cseq == cseq {
                c.invite_cseq = next;
                c.invite_branch = branch.clone();
            }
            if let Some(re) = c.reinvite.as_mut().filter(|re| re.0 == cseq) {
                re.0 = next;
                re.1 = branch.clone();
            }
        }
        self.status.challenges += 1;
        let bytes = auth::resend(&sent.raw, Some((&branch, next)), &[]);
        self.send_request(bytes, true, sent.stale + u8::from(challenged.stale));
        true
    }

    /// A challenge the phone cannot answer: said once, and what waited on
    /// the request ends as a failure would end it.
    fn auth_failed(&mut self, why: String, method: &str, call_id: &str, cseq: u32, code: u16) {
        let who = match self.keyring.as_ref() {
            Some(k) if k.user() != self.cfg.dn => format!("{} (user {})", self.cfg.dn, k.user()),
            _ => self.cfg.dn.clone(),
        };
        self.status
            .auth_failed
            .get_or_insert(format!("authentication failed for {who}: {why}"));
        match method {
            "REGISTER" => self.status.registered = false,
            "INVITE" => {
                if let Some(i) = self.find_call(call_id) {
                    let c = &mut self.calls[i];
                    if c.invite_cseq == cseq && !matches!(c.view.phase, Phase::Ended(_)) {
                        c.view.phase = Phase::Ended(End::Failed(code));
                    }
                    if c.reinvite.as_ref().is_some_and(|re| re.0 == cseq) {
                        c.reinvite = None;
                    }
                }
            }
            _ => {}
        }
    }

    /// The ACK of a failure response to call `i`'s INVITE with CSeq `cseq`
    /// and Via branch `branch`: it belongs to the INVITE's transaction
    /// (same branch, the response's To) and follows the INVITE's path.
    fn failure_ack(&self, i: usize, resp: &Message, cseq: u32, branch: &str) -> Vec<u8> {
        let via = self.via_with(branch);
        let mut d = self.calls[i].dialog.clone();
        d.remote_tag = resp.to_tag();
        d.route.clear();
        d.ack(cseq, &via).build()
    }

    fn offer(&self, direction: &str) -> Vec<u8> {
        sdp(
            &self.cfg.user,
            self.cfg.local.ip(),
            self.cfg.local.port().wrapping_add(2),
            direction,
        )
    }

    fn appearance_header(&self, index: u32, state: Option<ApState>) -> String {
        Appearance {
            target: format!("sip:{}", self.cfg.domain),
            index: AppearanceIndex::Index(index),
            state,
            uri: None,
        }
        .to_header()
    }

    /// The appearance the line told us is busy with `peer` (its
    /// appearance-uri's user).
    fn told_appearance(&self, peer: &str) -> Option<u32> {
        self.told.iter().find_map(|a| match a.index {
            AppearanceIndex::Index(i)
                if a.uri
                    .as_deref()
                    .and_then(crate::sip::NameAddr::parse)
                    .is_some_and(|u| u.user() == Some(peer)) =>
            {
                Some(i)
            }
            _ => None,
        })
    }

    /// A new dialog we start as UAC towards `to_user`.
    fn new_dialog(&mut self, to_user: &str, kind: &str) -> Dialog {
        Dialog {
            call_id: self.unique(kind),
            local: format!("<{}>", self.aor(&self.cfg.user)),
            local_tag: self.unique("t"),
            remote: format!("<{}>", self.aor(to_user)),
            remote_tag: None,
            remote_target: self.aor(to_user),
            route: Vec::new(),
            next_cseq: 1,
        }
    }

    fn error(&self, action: &'static str, why: impl Into<String>) -> ScriptError {
        ScriptError {
            dn: self.cfg.dn.clone(),
            action,
            why: why.into(),
        }
    }

    // ---- script commands -------------------------------------------------

    /// REGISTER the agent's own AoR.
    pub fn register(&mut self) {
        self.registration(3600);
    }

    /// Removes the agent's registration (Expires 0), at the end of a case.
    pub fn unregister(&mut self) {
        self.registration(0);
        self.unregister_cseq = Some(self.register_cseq);
    }

    fn registration(&mut self, expires: u32) {
        self.register_cseq += 1;
        let cseq = self.register_cseq;
        let (via, _) = self.via();
        let aor = self.aor(&self.cfg.user);
        let tag = self.unique("t");
        let bytes = Builder::request(
            "REGISTER",
            &format!("{}:{}", self.scheme(), self.cfg.domain),
        )
        .header("Via", &via)
        .header("From", &format!("<{aor}>;tag={tag}"))
        .header("To", &format!("<{aor}>"))
        .header("Call-ID", &self.register_call_id)
        .header("CSeq", &format!("{cseq} REGISTER"))
        .header("Contact", &self.contact())
        .header("Expires", &expires.to_string())
        .header("User-Agent", &user_agent(&self.cfg.dn))
        .build();
        self.send_to_server(bytes);
    }

    /// Releases a granted seizure (line-seize SUBSCRIBE with Expires 0).
    pub fn unseize(&mut self) {
        let (via, _) = self.via();
        // The appearance it seized, as every line-seize SUBSCRIBE names it
        // (Kamailio refuses an unsubscribe without it, 400, and keeps the
        // seizure).
        let seized = self.seized.map(|i| self.appearance_header(i, None));
        if let Some(sub) = self.line_seize.as_mut().filter(|s| s.confirmed) {
            let (mut b, _) = sub.dialog.request("SUBSCRIBE", &via);
            b = b
                .header("Contact", &sub.contact)
                .header("Event", "line-seize")
                .header("Expires", "0");
            if let Some(info) = &seized {
                b = b.header("Call-Info", info);
            }
            let bytes = b.build();
            self.send_to_server(bytes);
        }
        self.status.seizure = None;
    }

    /// Ends whatever the agent still has going, as a phone put down at the
    /// end of a test would: unanswered calls cancelled, ringing ones
    /// refused, established ones hung up, seizure released, subscription
    /// ended, registration removed. On a shared real server this keeps one
    /// case's state from leaking into the next.
    ///
    /// In two halves, [`Agent::end_calls`] then [`Agent::release`]: a
    /// teardown that ends the calls of every phone before any phone
    /// unsubscribes gives the server the calls' ends as a deployment
    /// does, with the line's subscribers there to be told.
    pub fn tear_down(&mut self) {
        self.end_calls();
        self.release();
    }

    /// The first half of the teardown: unanswered calls cancelled,
    /// ringing ones refused, established ones hung up.
    pub fn end_calls(&mut self) {
        // Marked, so that a capture of the run tells the cleanup from the
        // last stage whatever the timing.
        self.marked(|a| {
            while a.cancel().is_ok() {}
            while a.refuse(486).is_ok() {}
            while a.hangup().is_ok() {}
        })
    }

    /// The second half of the teardown: seizure released, subscription
    /// ended, registration removed.
    pub fn release(&mut self) {
        self.marked(|a| {
            a.unseize();
            let _ = a.refresh_call_info(0);
            a.unregister();
        })
    }

    /// The leak check after the teardown: a fresh call-info SUBSCRIBE to
    /// `line` (a new dialog, as a phone that just booted sends), marked as
    /// teardown like the rest of the cleanup. Returns its Call-ID, whose
    /// first NOTIFY tells the line's full state.
    ///
    /// It subscribes with a Contact of its own (`<user>-probe` at the
    /// phone's address), so that it owns nothing: a server that takes an
    /// out-of-dialog SUBSCRIBE from a phone for a reboot releases that
    /// phone's appearances (Kamailio's sca does, and so should any server
    /// that handles `reboot-resubscribe`), and a probe with the phone's
    /// own Contact would release the very leak it is there to find.
    pub fn probe_call_info(&mut self, line: &str) -> String {
        let contact = self.contact_as(&format!("{}-probe", self.cfg.user));
        self.marked(|a| a.subscribe_anew(line, contact))
    }

    /// A fresh call-info SUBSCRIBE to `line` with the phone's own Contact,
    /// in a new dialog and with no unsubscribe first, as a phone that lost
    /// power sends when it is back. The subscription it replaces is still
    /// the phone's to answer (its NOTIFYs get 200 and say nothing of now),
    /// as the server has no way to know it is gone. Returns the new
    /// subscription's Call-ID.
    pub fn resubscribe(&mut self, line: &str) -> String {
        let contact = self.contact();
        self.subscribe_anew(line, contact)
    }

    /// From now on the phone sends every request to `server` (its new
    /// edge proxy), and subscribes to call-info afresh through it, as
    /// [`Agent::resubscribe`]: a phone back from a reboot behind another
    /// proxy. Returns the new subscription's Call-ID.
    pub fn reroute(&mut self, server: SocketAddr, line: &str) -> String {
        self.cfg.server = server;
        self.resubscribe(line)
    }

    /// A call-info subscription in a new dialog that takes the place of
    /// the current one (the probe's, a reboot's): the one it replaces is
    /// still answered (it may send its terminating NOTIFY), and the phone
    /// is subscribed again only once the new one is accepted.
    fn subscribe_anew(&mut self, line: &str, contact: String) -> String {
        self.replaced = self.call_info.take();
        self.status.subscribed = false;
        self.subscribe_call_info_from(line, contact)
    }

    /// From now on, the phone answers the next NOTIFY of its call-info
    /// subscription with 481 and forgets the subscription, as a phone
    /// that lost its state does (RFC 6665 4.2.2: the notifier must then
    /// end it); later NOTIFYs on it get 481 too. Sends nothing itself.
    pub fn refuse_notifies(&mut self) {
        self.refusing = true;
    }

    /// Closes every TCP or TLS connection the phone has, as a phone whose
    /// network went away (or whose NAT forgot it) does, and keeps its
    /// subscriptions: the server must reach it next on a connection it
    /// opens to the phone's Contact. Sends nothing itself; its edge does
    /// the closing ([`Agent::take_closing`]) and says how many it closed
    /// ([`Agent::connections_closed`]).
    pub fn close_connections(&mut self) {
        self.closing = true;
        self.status.closed_connections = None;
    }

    /// Whether the edge is to close the phone's connections now.
    pub fn take_closing(&mut self) -> bool {
        std::mem::take(&mut self.closing)
    }

    /// The edge closed `n` connections.
    pub fn connections_closed(&mut self, n: usize) {
        self.status.closed_connections = Some(n);
    }

    /// From now on, the phone sends no ACK for the next 2xx to one of its
    /// INVITEs (as if it were lost on the way); the 2xx sent again is
    /// acknowledged as always. Sends nothing itself.
    pub fn lose_ack(&mut self) {
        self.status.lost_ack = Some(LostAck::Armed);
    }

    /// Ends the leak check's subscription, marked as teardown; says whether
    /// there was an established one to end.
    pub fn end_probe(&mut self) -> bool {
        self.marked(|a| a.refresh_call_info(0).is_ok())
    }

    /// Does `f`, marking what it sends as teardown (see [`Agent::tear_down`]).
    fn marked<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        self.marked_as(TEARDOWN_HEADER, f)
    }

    /// Does `f`, one of a race's steps fired together, marking what it
    /// sends so (a capture of the run then says it was a race, however
    /// far apart a loaded machine sent them).
    pub fn together<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        self.step_taken = true;
        self.marked_as(TOGETHER_HEADER, f)
    }

    /// Whether a race's step was taken since the last call: the driver
    /// then lets the phone read again ([`crate::ua::AgentHandle::hold_reading`]).
    pub fn take_step_taken(&mut self) -> bool {
        std::mem::take(&mut self.step_taken)
    }

    fn marked_as<T>(&mut self, mark: &'static str, f: impl FnOnce(&mut Self) -> T) -> T {
        let before = self.out.len();
        // Requests are marked as they are sent, so that one sent again
        // after a challenge is still marked; responses here.
        self.marking = Some(mark);
        let value = f(self);
        self.marking = None;
        for t in self.out.iter_mut().skip(before) {
            if !is_marked(&t.bytes, mark) {
                t.bytes = with_header(&t.bytes, mark);
            }
        }
        value
    }

    /// SUBSCRIBE to the call-info package of the shared line `line`;
    /// returns the subscription's Call-ID.
    pub fn subscribe_call_info(&mut self, line: &str) -> String {
        let contact = self.contact();
        self.subscribe_call_info_from(line, contact)
    }

    /// [`Agent::subscribe_call_info`] with Contact `contact`.
    fn subscribe_call_info_from(&mut self, line: &str, contact: String) -> String {
        let mut dialog = self.new_dialog(line, "sub");
        let (via, _) = self.via();
        let (b, _) = dialog.request("SUBSCRIBE", &via);
        let bytes = b
            .header("Contact", &contact)
            .header("Event", "call-info")
            .header("Accept", "application/x-broadworks-call-info")
            .header("Expires", "3600")
            .build();
        let call_id = dialog.call_id.clone();
        self.call_info = Some(Subscription::new(dialog, contact));
        self.unsubscribed = false;
        self.send_to_server(bytes);
        call_id
    }

    /// Refreshes the call-info subscription in its dialog; `expires` 0
    /// unsubscribes.
    pub fn refresh_call_info(&mut self, expires: u32) -> Result<(), ScriptError> {
        let action = if expires == 0 {
            "unsubscribe"
        } else {
            "refresh the subscription"
        };
        let (via, _) = self.via();
        if self.unsubscribed {
            return Err(self.error(action, "the call-info subscription was ended"));
        }
        let Some(sub) = self.call_info.as_mut().filter(|s| s.confirmed) else {
            return Err(self.error(action, "no accepted call-info subscription"));
        };
        let (b, _) = sub.dialog.request("SUBSCRIBE", &via);
        let bytes = b
            .header("Contact", &sub.contact)
            .header("Event", "call-info")
            .header("Expires", &expires.to_string())
            .build();
        // Ended once: the teardown does not unsubscribe it again.
        self.unsubscribed = expires == 0;
        self.send_to_server(bytes);
        Ok(())
    }

    /// Seizes appearance `index` of `line` with a line-seize SUBSCRIBE.
    pub fn seize(&mut self, line: &str, index: u32, expires: u32) {
        let mut dialog = self.new_dialog(line, "seize");
        let (via, _) = self.via();
        let (b, _) = dialog.request("SUBSCRIBE", &via);
        let contact = self.contact();
        let bytes = b
            .header("Contact", &contact)
            .header("Event", "line-seize")
            .header("Expires", &expires.to_string())
            .header("Call-Info", &self.appearance_header(index, None))
            .build();
        self.line_seize = Some(Subscription::new(dialog, contact));
        self.seized = Some(index);
        self.status.seizure = Some(Seizure::Pending(index));
        self.send_to_server(bytes);
    }

    /// INVITE `to`. After a granted seizure the INVITE names the seized
    /// appearance in Call-Info, as the BroadWorks model has it.
    pub fn invite(&mut self, to: &str) -> String {
        let appearance = match self.status.seizure {
            Some(Seizure::Granted(i)) => Some(i),
            _ => None,
        };
        self.start_call(to, appearance)
    }

    /// INVITE the shared line itself for appearance `index`: a retrieve if
    /// the appearance is held, a barge-in if it is active.
    pub fn join_appearance(&mut self, line: &str, index: u32) -> String {
        self.start_call(line, Some(index))
    }

    fn start_call(&mut self, to: &str, appearance: Option<u32>) -> String {
        let mut dialog = self.new_dialog(to, "call");
        let (via, branch) = self.via();
        let (mut b, cseq) = dialog.request("INVITE", &via);
        b = b.header("Contact", &self.contact());
        if let Some(i) = appearance {
            b = b.header("Call-Info", &self.appearance_header(i, None));
        }
        let bytes = b.body("application/sdp", &self.offer("sendrecv")).build();
        let call_id = dialog.call_id.clone();
        self.calls.push(Call {
            view: CallView {
                call_id: call_id.clone(),
                direction: CallDirection::Outgoing,
                phase: Phase::Calling,
                remote_user: to.to_string(),
                call_info: Vec::new(),
                appearance,
                held: false,
                reinvite_unacked: false,
            },
            dialog,
            invite_cseq: cseq,
            invite_branch: branch,
            invite: None,
            last_response: None,
            reinvite: None,
            forks: Vec::new(),
            answered_tag: None,
        });
        self.send_to_server(bytes);
        call_id
    }

    fn ringing_call(&mut self, action: &'static str) -> Result<usize, ScriptError> {
        self.calls
            .iter()
            .rposition(|c| c.view.phase == Phase::Ringing)
            .ok_or_else(|| self.error(action, "no incoming call is ringing"))
    }

    fn confirmed_call(&self, action: &'static str) -> Result<usize, ScriptError> {
        self.calls
            .iter()
            .rposition(|c| c.view.phase == Phase::Confirmed)
            .ok_or_else(|| self.error(action, "no call is established"))
    }

    /// Answer the ringing call with 200 OK.
    pub fn answer(&mut self) -> Result<(), ScriptError> {
        self.final_response("answer", 200)
    }

    /// Refuse the ringing call with a final response `code` (4xx-6xx).
    pub fn refuse(&mut self, code: u16) -> Result<(), ScriptError> {
        if !(400..700).contains(&code) {
            return Err(self.error("refuse", format!("{code} is not a failure code")));
        }
        self.final_response("refuse", code)
    }

    fn final_response(&mut self, action: &'static str, code: u16) -> Result<(), ScriptError> {
        let i = self.ringing_call(action)?;
        let body = self.offer("sendrecv");
        let contact = self.contact();
        let call = &mut self.calls[i];
        let Some((invite, peer)) = call.invite.clone() else {
            return Err(self.error(action, "the ringing call has no INVITE"));
        };
        let mut b = Builder::response_to(&invite, code, Some(&call.dialog.local_tag));
        if code < 300 {
            b = b.header("Contact", &contact).body("application/sdp", &body);
            call.view.phase = Phase::Connecting;
        } else {
            call.view.phase = Phase::Ended(End::Refused(code));
        }
        let bytes = b.build();
        call.last_response = Some(bytes.clone());
        self.out.push_back(Transmit { to: peer, bytes });
        Ok(())
    }

    /// BYE the established call.
    pub fn hangup(&mut self) -> Result<(), ScriptError> {
        let i = self.confirmed_call("hang up")?;
        self.bye(i);
        Ok(())
    }

    fn bye(&mut self, i: usize) {
        let (via, _) = self.via();
        let (b, _) = self.calls[i].dialog.request("BYE", &via);
        self.calls[i].view.phase = Phase::Ended(End::ByeUs);
        let call_id = self.calls[i].view.call_id.clone();
        if !self.status.byes_unanswered.contains(&call_id) {
            self.status.byes_unanswered.push(call_id);
        }
        self.send_to_server(b.build());
    }

    /// Puts the established call on hold in `style` (a re-INVITE offering
    /// a=sendonly, a=inactive or RFC 2543's 0.0.0.0, or an UPDATE); a
    /// private hold also says `appearance-state=held-private` in Call-Info.
    pub fn hold(&mut self, private: bool, style: HoldStyle) -> Result<(), ScriptError> {
        let i = self.confirmed_call("hold")?;
        let (via, branch) = self.via();
        let contact = self.contact();
        let body = style.offer(
            &self.cfg.user,
            self.cfg.local.ip(),
            self.cfg.local.port().wrapping_add(2),
        );
        // BroadWorks phones name the call's appearance in every INVITE they
        // send; a server that gave none in its INVITE told it in call-info
        // NOTIFYs (the active appearance whose appearance-uri is the peer).
        let remote = self.calls[i].view.remote_user.clone();
        let index = self.calls[i]
            .view
            .appearance
            .or_else(|| self.told_appearance(&remote))
            .unwrap_or(1);
        let info = self.appearance_header(index, private.then_some(ApState::HeldPrivate));
        let call = &mut self.calls[i];
        let (mut b, cseq) = call.dialog.request(style.method(), &via);
        b = b.header("Contact", &contact).header("Call-Info", &info);
        call.reinvite = Some((cseq, branch, true));
        let bytes = b.body("application/sdp", &body).build();
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
        // CANCEL repeats the INVITE's Via branch, Call-ID, From, To and CSeq
        // number (RFC 3261 9.1), without the To-tag.
        let call = &self.calls[i];
        let mut d = call.dialog.clone();
        d.remote_tag = None;
        d.next_cseq = call.invite_cseq;
        let via = self.via_with(&call.invite_branch);
        let (b, _) = d.request("CANCEL", &via);
        self.calls[i].view.phase = Phase::Ended(End::CancelledByUs);
        self.send_to_server(b.build());
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
        if retransmittable(req) {
            if self.answered.len() == ANSWERED {
                self.answered.pop_front();
            }
            self.answered.push_back((req.raw().to_vec(), bytes.clone()));
        }
        self.out.push_back(Transmit { to: peer, bytes });
    }

    /// A request in a dialog the phone does not have: answered 481, and a
    /// problem, unless it is addressed to another SIP identity
    /// ([`reading::stray`]): a contact an earlier case's phone had at this
    /// address, which the server still holds. That is counted, not judged.
    fn unknown_dialog(&mut self, req: &Message, peer: SocketAddr, problem: String) {
        match reading::stray(req, &self.cfg.user) {
            Some(stray) => self.status.strays.add(|| stray),
            None => self.status.problems.push(problem),
        }
        self.respond(req, peer, 481, None);
    }

    fn find_call(&self, call_id: &str) -> Option<usize> {
        self.calls.iter().position(|c| c.view.call_id == call_id)
    }

    fn handle_request(&mut self, req: &Message, peer: SocketAddr) {
        // A retransmitted non-INVITE request (its answer was lost or slow,
        // over UDP) gets the same answer again and changes nothing: a BYE
        // repeated after its 200 is not a BYE for no call. A retransmission
        // is the same bytes (RFC 3261 17.1.2.2); a different request that
        // reuses a branch and CSeq is the server's mistake, and is handled
        // as a new request so that what it does shows.
        if retransmittable(req) {
            if let Some((_, bytes)) = self.answered.iter().find(|(r, _)| r == req.raw()) {
                let bytes = bytes.clone();
                self.out.push_back(Transmit { to: peer, bytes });
                return;
            }
        }
        let method = req.method().unwrap_or_default();
        let known = self.find_call(req.call_id());
        match (method.as_str(), known) {
            ("INVITE", None) if req.to_tag().is_none() => self.incoming_invite(req, peer),
            ("INVITE", Some(i))
                if req.to_tag().is_none()
                    && self.calls[i].view.direction == CallDirection::Outgoing =>
            {
                // Our own INVITE, forked back to us (a phone calling its own
                // line's AoR): a loop, refused as RFC 3261 8.2.2.2 says, so
                // the server is not left waiting on this branch.
                self.respond(req, peer, 482, None);
            }
            ("INVITE", Some(i)) if req.to_tag().is_none() => {
                // A retransmission: repeat what we said.
                if let Some(bytes) = self.calls[i].last_response.clone() {
                    self.out.push_back(Transmit { to: peer, bytes });
                }
            }
            ("INVITE" | "UPDATE", Some(i)) => {
                // re-INVITE or UPDATE (hold, resume): accept, mirroring the
                // direction.
                let body = self.offer(mirror_direction(req.body()));
                let contact = self.contact();
                let tag = self.calls[i].dialog.local_tag.clone();
                let bytes = Builder::response_to(req, 200, Some(&tag))
                    .header("Contact", &contact)
                    .body("application/sdp", &body)
                    .build();
                if method == "INVITE" {
                    self.calls[i].view.reinvite_unacked = true;
                }
                self.out.push_back(Transmit { to: peer, bytes });
            }
            ("ACK", Some(i)) => {
                let view = &mut self.calls[i].view;
                if view.phase == Phase::Connecting {
                    view.phase = Phase::Confirmed;
                }
                view.reinvite_unacked = false;
            }
            ("ACK", None) => {}
            ("CANCEL", Some(i)) if self.calls[i].view.phase == Phase::Ringing => {
                self.respond(req, peer, 200, None);
                let reason = req.header("Reason").map(str::to_string);
                let call = &mut self.calls[i];
                call.view.phase = Phase::Ended(End::CancelledByPeer(reason));
                if let Some((invite, invite_peer)) = call.invite.clone() {
                    let bytes =
                        Builder::response_to(&invite, 487, Some(&call.dialog.local_tag)).build();
                    call.last_response = Some(bytes.clone());
                    self.out.push_back(Transmit {
                        to: invite_peer,
                        bytes,
                    });
                }
            }
            // A CANCEL after our final answer has no effect (RFC 3261
            // 9.2): it crossed the answer, as when two phones answer at
            // once and the server cancels the one it did not take.
            ("CANCEL", Some(i)) if self.calls[i].view.direction == CallDirection::Incoming => {
                self.respond(req, peer, 200, None);
            }
            ("CANCEL", _) => {
                let problem = format!("CANCEL for no ringing call (Call-ID {})", req.call_id());
                self.unknown_dialog(req, peer, problem);
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
                let problem = format!("BYE for no established call (Call-ID {})", req.call_id());
                self.unknown_dialog(req, peer, problem);
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
        let call_info = reading::call_info(req).unwrap_or_else(|e| {
            self.status.problems.push(e);
            Vec::new()
        });
        let appearance = call_info.iter().find_map(|a| match a.index {
            AppearanceIndex::Index(i) => Some(i),
            AppearanceIndex::All => None,
        });
        let from = req.from();
        let remote_user = from
            .as_ref()
            .and_then(|f| f.user())
            .unwrap_or_default()
            .to_string();
        // An INVITE that replaces one of our established calls (RFC 3891:
        // a proxy's way to let the other phone take a held call) is
        // accepted at once, and the replaced call ends.
        let replaced = req
            .header("Replaces")
            .and_then(|r| r.split(';').next())
            .and_then(|id| {
                self.calls
                    .iter()
                    .position(|c| c.view.call_id == id.trim() && c.view.phase == Phase::Confirmed)
            });
        let (first, phase) = match replaced {
            Some(_) => (
                Builder::response_to(req, 200, Some(&local_tag))
                    .header("Contact", &self.contact())
                    .body("application/sdp", &self.offer("sendrecv"))
                    .build(),
                Phase::Connecting,
            ),
            None => (
                Builder::response_to(req, 180, Some(&local_tag))
                    .header("Contact", &self.contact())
                    .build(),
                Phase::Ringing,
            ),
        };
        let ringing = first;
        self.calls.push(Call {
            view: CallView {
                call_id: req.call_id().to_string(),
                direction: CallDirection::Incoming,
                phase,
                remote_user,
                call_info,
                appearance,
                held: false,
                reinvite_unacked: false,
            },
            dialog: Dialog {
                call_id: req.call_id().to_string(),
                local: req.to().map(|t| format!("<{}>", t.uri)).unwrap_or_default(),
                local_tag,
                remote: from.map(|f| format!("<{}>", f.uri)).unwrap_or_default(),
                remote_tag: req.from_tag(),
                remote_target: req.contact_uri().unwrap_or_else(|| self.aor("unknown")),
                route: Dialog::route_set(req, false),
                next_cseq: 1,
            },
            invite_cseq: req.cseq().map(|(n, _)| n).unwrap_or(1),
            invite_branch: req.via_branch().unwrap_or_default(),
            invite: Some((req.clone(), peer)),
            last_response: Some(ringing.clone()),
            reinvite: None,
            forks: Vec::new(),
            answered_tag: None,
        });
        self.out.push_back(Transmit {
            to: peer,
            bytes: ringing,
        });
        if let Some(j) = replaced {
            self.bye(j);
        }
    }

    fn notify(&mut self, req: &Message, peer: SocketAddr) {
        let terminated = reading::terminates(req);
        if let Some(sub) = self.line_seize.as_mut().filter(|s| s.holds(req)) {
            sub.notified(req);
            self.respond(req, peer, 200, None);
            if terminated == Ok(true) {
                self.status.seizure = Some(Seizure::Ended);
            }
            return;
        }
        if self.replaced.as_ref().is_some_and(|s| s.holds(req)) {
            self.respond(req, peer, 200, None);
            return;
        }
        // A server that keeps notifying after a 481 is the case's to find
        // (the NOTIFY is in the capture), not a problem of the phone's.
        if self.refused.as_ref().is_some_and(|s| s.holds(req)) {
            self.respond(req, peer, 481, None);
            return;
        }
        if self.refusing && self.call_info.as_ref().is_some_and(|s| s.holds(req)) {
            self.refusing = false;
            self.refused = self.call_info.take();
            self.status.subscribed = false;
            self.respond(req, peer, 481, None);
            return;
        }
        let Some(sub) = self.call_info.as_mut().filter(|s| s.holds(req)) else {
            self.unknown_dialog(req, peer, reading::outside_subscriptions(req));
            return;
        };
        if !sub.in_order(req) {
            return self.respond(req, peer, 500, None);
        }
        // A NOTIFY before the 2xx (or instead of one that was lost)
        // establishes the subscription.
        let established = sub.notified(req);
        self.respond(req, peer, 200, None);
        self.status.notifies += 1;
        self.status.notified_in = Some(req.call_id().to_string());
        match reading::call_info(req) {
            Ok(told) => self.told = told,
            Err(e) => self.status.problems.push(e),
        }
        match terminated {
            Ok(true) => self.status.subscribed = false,
            Ok(false) if established => self.status.subscribed = true,
            Ok(false) => {}
            Err(e) => self.status.problems.push(e),
        }
    }

    fn handle_response(&mut self, resp: &Message) {
        let code = resp.status().unwrap_or(0);
        let Some((_, method)) = resp.cseq() else {
            return;
        };
        if auth::Kind::of_status(code).is_some() && self.challenge(resp, code) {
            return;
        }
        let ours = |s: &Option<Subscription>| {
            s.as_ref()
                .is_some_and(|s| s.dialog.call_id == resp.call_id())
        };
        match method {
            "REGISTER" if resp.call_id() == self.register_call_id && code >= 200 => {
                self.status.registered = (200..300).contains(&code);
                // Its answer, or the answer to it sent again with
                // credentials (a later CSeq).
                let unregistering = matches!(
                    (resp.cseq(), self.unregister_cseq),
                    (Some((n, _)), Some(sent)) if n >= sent
                );
                if unregistering && (200..300).contains(&code) {
                    self.status.unregistered = true;
                    self.status.registered = false;
                }
                if code >= 300 {
                    self.status
                        .problems
                        .push(format!("REGISTER refused with {code}"));
                }
            }
            "SUBSCRIBE" if ours(&self.call_info) => {
                if (200..300).contains(&code) {
                    if let Some(sub) = self.call_info.as_mut() {
                        sub.answered(resp);
                    }
                    self.status.subscribed = resp.header("Expires").is_none_or(|e| e.trim() != "0");
                    self.status.subscribe_answers += 1;
                } else if code >= 300 {
                    self.status
                        .problems
                        .push(format!("call-info SUBSCRIBE refused with {code}"));
                }
            }
            "SUBSCRIBE" if ours(&self.line_seize) => {
                if (200..300).contains(&code) {
                    if let Some(sub) = self.line_seize.as_mut() {
                        sub.answered(resp);
                    }
                    if let Some(Seizure::Pending(i)) = self.status.seizure {
                        self.status.seizure = Some(Seizure::Granted(i));
                    }
                } else if code >= 300 {
                    self.status.seizure = Some(Seizure::Refused(code));
                }
            }
            "INVITE" => self.invite_response(resp, code),
            "UPDATE" => self.update_response(resp, code),
            // The BYE of a forked dialog is not the call's.
            "BYE" if code >= 200 && !self.fork_of(resp) => {
                self.status.byes_unanswered.retain(|c| c != resp.call_id())
            }
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
        let cseq = resp.cseq().map(|(n, _)| n).unwrap_or(0);
        let call = &mut self.calls[i];
        let reinvite = call.reinvite.clone().filter(|(n, _, _)| *n == cseq);
        let initial = call.view.direction == CallDirection::Outgoing && cseq == call.invite_cseq;
        if code < 200 {
            if initial && code > 100 && call.view.phase == Phase::Calling && resp.to_tag().is_some()
            {
                call.dialog.remote_tag = resp.to_tag();
                call.dialog.route = Dialog::route_set(resp, true);
                call.view.phase = Phase::Early;
            }
            return;
        }
        if (200..300).contains(&code) {
            // A 2xx of the first INVITE from another dialog than the one
            // that answered first: a forking proxy's other branch answered
            // too (two phones of a line at once).
            let tag = resp.to_tag();
            if initial && call.answered_tag.is_some() && call.answered_tag != tag {
                return self.forked(i, resp, cseq);
            }
            if initial
                && call.answered_tag.is_none()
                && matches!(
                    call.view.phase,
                    Phase::Calling | Phase::Early | Phase::Ended(End::CancelledByUs)
                )
            {
                call.answered_tag = tag.clone();
                call.dialog.remote_tag = tag;
                call.dialog.route = Dialog::route_set(resp, true);
                if let Some(target) = resp.contact_uri() {
                    call.dialog.remote_target = target;
                }
                call.view.phase = Phase::Confirmed;
            }
            if let Some((_, _, holding)) = reinvite {
                call.view.held = holding;
                call.reinvite = None;
            }
            // ACK every 2xx, retransmissions included (RFC 3261 13.2.2.4),
            // but the first one when its ACK is to be lost.
            match self.status.lost_ack {
                Some(LostAck::Armed) => {
                    self.status.lost_ack = Some(LostAck::Dropped);
                    return;
                }
                Some(LostAck::Dropped) => self.status.lost_ack = Some(LostAck::Resent),
                _ => {}
            }
            let (via, _) = self.via();
            let bytes = self.calls[i].dialog.ack(cseq, &via).build();
            self.send_to_server(bytes);
            return;
        }
        let branch = match (&reinvite, initial) {
            (Some((_, b, _)), _) => b.clone(),
            (None, true) => {
                if !matches!(call.view.phase, Phase::Ended(_)) {
                    call.view.phase = Phase::Ended(End::Failed(code));
                }
                call.invite_branch.clone()
            }
            (None, false) => return,
        };
        call.reinvite = None;
        let bytes = self.failure_ack(i, resp, cseq, &branch);
        self.send_to_server(bytes);
    }

    /// A 2xx from a second dialog of call `i`'s INVITE: ACKed, and the
    /// dialog ended with BYE at once (RFC 3261 13.2.2.4), counted; its 2xx
    /// sent again is ACKed again.
    fn forked(&mut self, i: usize, resp: &Message, cseq: u32) {
        let tag = resp.to_tag();
        let (via, _) = self.via();
        if let Some(d) = self.calls[i].forks.iter().find(|d| d.remote_tag == tag) {
            let bytes = d.ack(cseq, &via).build();
            return self.send_to_server(bytes);
        }
        let mut d = self.calls[i].dialog.clone();
        d.remote_tag = tag.clone();
        d.route = Dialog::route_set(resp, true);
        if let Some(target) = resp.contact_uri() {
            d.remote_target = target;
        }
        d.next_cseq = cseq + 1;
        self.send_to_server(d.ack(cseq, &via).build());
        let (via, _) = self.via();
        let (bye, _) = d.request("BYE", &via);
        self.send_to_server(bye.build());
        let call_id = d.call_id.clone();
        self.status.forks.add(|| {
            format!(
                "Call-ID {call_id}, To-tag {}",
                tag.as_deref().unwrap_or("(none)")
            )
        });
        if self.calls[i].forks.len() < MAX_FORKS {
            self.calls[i].forks.push(d);
        }
    }

    /// Is `resp` an answer in one of the forked dialogs the phone ended?
    fn fork_of(&self, resp: &Message) -> bool {
        let tag = resp.to_tag();
        self.calls.iter().any(|c| {
            c.view.call_id == resp.call_id() && c.forks.iter().any(|d| d.remote_tag == tag)
        })
    }

    /// The answer to our UPDATE (a hold, RFC 3311): no ACK; a 2xx holds.
    fn update_response(&mut self, resp: &Message, code: u16) {
        let (Some(i), Some((cseq, _))) = (self.find_call(resp.call_id()), resp.cseq()) else {
            return;
        };
        let call = &mut self.calls[i];
        let Some((_, _, holding)) = call.reinvite.clone().filter(|(n, _, _)| *n == cseq) else {
            return;
        };
        if code < 200 {
            return;
        }
        if code < 300 {
            call.view.held = holding;
        }
        call.reinvite = None;
    }
}

/// The header that marks what a phone sends to clean up after a case.
pub const TEARDOWN_HEADER: &str = "X-Scacheck: teardown";

/// The header that marks what a phone sends as a step of a race.
pub const TOGETHER_HEADER: &str = "X-Scacheck: together";

/// Does the message carry `mark`?
pub fn is_marked(bytes: &[u8], mark: &str) -> bool {
    memchr::memmem::find(bytes, mark.as_bytes()).is_some()
}

/// A message with one more header line after its start line.
fn with_header(bytes: &[u8], header: &str) -> Vec<u8> {
    match bytes.windows(2).position(|w| w == b"\r\n") {
        Some(end) => [
            &bytes[..end + 2],
            header.as_bytes(),
            b"\r\n",
            &bytes[end + 2..],
        ]
        .concat(),
        None => bytes.to_vec(),
    }
}

/// Names the phone's DN, so that a capture tells apart the phones of a
/// line that share one SIP user (`scacheck pcap check` reads it).
pub fn user_agent(dn: &str) -> String {
    format!("scacheck ({dn})")
}

/// The DN a User-Agent written by [`user_agent`] names.
pub fn dn_in_user_agent(value: &str) -> Option<&str> {
    value.trim().strip_prefix("scacheck (")?.strip_suffix(')')
}

/// The SDP direction that answers an offer's.
/// Whether a request's answer is repeated when it is retransmitted: any
/// but INVITE (a call remembers its last answer) and ACK (never answered).
fn retransmittable(req: &Message) -> bool {
    !(req.is("INVITE") || req.is("ACK"))
}

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
