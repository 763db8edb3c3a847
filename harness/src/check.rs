//! Checking a capture: the SIP messages of a pcap become the records a live
//! run would have made, the same derivers turn them into events, the case's
//! steps mark where each stage began, and the same diff and verdict follow.
//!
//! What a capture cannot say, the rules here decide, and the README repeats:
//! - **Who is who.** Each phone is known by the endpoints it used: the
//!   source address of its REGISTER and the address in its Contact. A SIP
//!   user shared by several DNs (the two phones of a Kamailio line) goes to
//!   the DN its User-Agent names (scacheck's phones say `scacheck (DN)`),
//!   else to those DNs in topology order, first to register first. A
//!   capture whose REGISTERs find no line phone (a field capture, whose
//!   phones registered before it began) is read by its SCA signalling
//!   instead ([`crate::discover`]): who subscribes to the line, who calls
//!   it or is called from it.
//! - **Where a stage begins.** At the message its first step sends (an
//!   INVITE for `call`, the 2xx for `answer`, a line-seize SUBSCRIBE for
//!   `seize`...). A stage without steps begins as the live run ends the
//!   stage before it: once that stage has every event the target is
//!   expected to send (within the live stage deadline), at the first
//!   message after a quiet time as long as the live settle window; when
//!   they never all come, at the first request after such a quiet (a
//!   response belongs to its request's stage, however late it comes).
//! - **Teardown.** What a run sends to leave a shared server clean (the
//!   phones' unregistrations and what precedes them) is not part of the
//!   last stage.
//! - **What a phone objects to.** The case's phones read their messages by
//!   the live agent's rules (`ua::reading`): what a live phone would report
//!   (a NOTIFY of a dialog it does not have, Call-Info it cannot read) is a
//!   problem here too, with the message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::case::{Action, Step};
use crate::derive::sip_tlib::SipTlibDeriver;
use crate::derive::wire::WireDeriver;
use crate::diff::{compare_stage, Bindings};
use crate::line::Identities;
use crate::observation::{Observability, Observation};
use crate::outcome::CaseResult;
use crate::pcap::Packet;
use crate::sip::headers::EventHeader;
use crate::sip::record::{Direction, Parsed, Record};
use crate::sip::sdp::HoldStyle;
use crate::sip::{Message, Transport};
use crate::suite::Prepared;
use crate::target::Deviation;
use crate::topology::Topology;
use crate::ua::reading::CapturedPhones;

/// The quiet time that ends a stage without steps (the live settle window).
pub const QUIET: Duration = Duration::from_millis(50);
/// How long the live run waits for a stage's expected events (its default
/// stage deadline): no later event completes a stage in a capture either.
pub const STAGE_WAIT: Duration = Duration::from_secs(2);

/// The line of a target's pool a capture shows: the one most of whose SIP
/// users it registers (the first, when it registers none of any).
pub fn line_of(messages: &[Packet], lines: &[Identities], topology: &Topology) -> Identities {
    line_of_parsed(messages, &unparsed(messages), lines, topology)
}

/// A fresh parse of each message, made when first asked for ([`Parsed`]):
/// what one flow's readings share, so that each message is parsed once.
fn unparsed(messages: &[Packet]) -> Vec<Parsed> {
    messages.iter().map(|_| Parsed::default()).collect()
}

/// The REGISTERs of `messages` (`parsed`: theirs, one each), parsed.
fn registers<'a>(
    messages: &'a [Packet],
    parsed: &'a [Parsed],
) -> impl Iterator<Item = (&'a Packet, &'a Message)> + 'a {
    messages
        .iter()
        .zip(parsed)
        .filter(|(m, _)| m.raw.starts_with(b"REGISTER "))
        .filter_map(|(m, p)| Some((m, p.message(&m.raw).ok()?)))
}

fn line_of_parsed(
    messages: &[Packet],
    parsed: &[Parsed],
    lines: &[Identities],
    topology: &Topology,
) -> Identities {
    let registered: std::collections::BTreeSet<String> = registers(messages, parsed)
        .map(|(_, msg)| msg)
        .filter(|msg| msg.is("REGISTER"))
        .filter_map(|msg| msg.to().and_then(|t| t.user().map(str::to_string)))
        .collect();
    let score = |l: &Identities| l.users.values().filter(|u| registered.contains(*u)).count();
    lines
        .iter()
        .fold(None::<&Identities>, |best, l| match best {
            Some(b) if score(b) >= score(l) => Some(b),
            _ => Some(l),
        })
        .cloned()
        .unwrap_or_else(|| Identities::own(topology))
}

/// Which DN each endpoint of the capture belongs to.
pub fn endpoints(
    messages: &[Packet],
    topology: &Topology,
    identities: &BTreeMap<String, String>,
) -> BTreeMap<SocketAddr, String> {
    endpoints_parsed(messages, &unparsed(messages), topology, identities)
}

fn endpoints_parsed(
    messages: &[Packet],
    parsed: &[Parsed],
    topology: &Topology,
    identities: &BTreeMap<String, String>,
) -> BTreeMap<SocketAddr, String> {
    let mut map: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for (m, msg) in registers(messages, parsed) {
        if !msg.is("REGISTER") || map.contains_key(&m.src) {
            continue;
        }
        let Some(user) = msg.to().and_then(|t| t.user().map(str::to_string)) else {
            continue;
        };
        let taken: Vec<&String> = map.values().collect();
        let free = |dn: &&str| {
            identities.get(*dn).map_or(*dn == user, |u| *u == user)
                && !taken.contains(&&dn.to_string())
        };
        // scacheck's own phones say who they are; other phones sharing a
        // user get the DNs in topology order, first to register first.
        let named = msg
            .header("User-Agent")
            .and_then(crate::ua::agent::dn_in_user_agent)
            .filter(|dn| free(dn))
            .map(str::to_string);
        let Some(dn) = named.or_else(|| topology.dns().into_iter().find(free).map(str::to_string))
        else {
            continue;
        };
        let dn = dn.as_str();
        map.insert(m.src, dn.to_string());
        if let Some(contact) = msg.contact_addr() {
            map.entry(contact).or_insert_with(|| dn.to_string());
        }
    }
    // A phone whose connection closed opens another, from a new port, and
    // a phone behind an edge proxy that moves to another one reaches the
    // server from the new proxy: either way its requests to the server
    // (where the REGISTERs went) name its Contact, which its REGISTER
    // gave. A request from the server names a phone's Contact too (the
    // caller's, in an INVITE it forwards), so only requests to it count.
    let servers: std::collections::BTreeSet<SocketAddr> = registers(messages, parsed)
        .filter(|(_, msg)| msg.is("REGISTER"))
        .map(|(m, _)| m.dst)
        .collect();
    for (m, p) in messages.iter().zip(parsed) {
        if m.raw.starts_with(b"SIP/2.0 ") || map.contains_key(&m.src) || !servers.contains(&m.dst) {
            continue;
        }
        let Ok(msg) = p.message(&m.raw) else {
            continue;
        };
        if let Some(dn) = msg.contact_addr().and_then(|c| map.get(&c)).cloned() {
            map.insert(m.src, dn);
        }
    }
    map
}

/// The line a capture shows and who each of its endpoints is: by the
/// REGISTERs of the target's SIP users ([`line_of`], [`endpoints`]) when
/// they find a line phone, else by the SCA signalling itself
/// ([`crate::discover`]), where a target's line (of `lines`) that names
/// every party found as the capture does gives its identities (and its
/// number). Neither: the REGISTERs' (empty) answer.
pub fn phones(
    messages: &[Packet],
    lines: &[Identities],
    topology: &Topology,
) -> (Identities, BTreeMap<SocketAddr, String>) {
    phones_parsed(messages, &unparsed(messages), lines, topology)
}

fn phones_parsed(
    messages: &[Packet],
    parsed: &[Parsed],
    lines: &[Identities],
    topology: &Topology,
) -> (Identities, BTreeMap<SocketAddr, String>) {
    let line = line_of_parsed(messages, parsed, lines, topology);
    let who = endpoints_parsed(messages, parsed, topology, &line.users);
    if who.values().any(|dn| topology.line_of(dn).is_some()) {
        return (line, who);
    }
    match crate::discover::discover(messages, topology) {
        Some(found) => {
            let line = lines
                .iter()
                .find(|l| found.fits(l, topology))
                .cloned()
                .unwrap_or(found.identities);
            (line, found.who)
        }
        None => (line, who),
    }
}

/// The records a live run's user agents would have made of these messages.
pub fn records(messages: &[Packet], who: &BTreeMap<SocketAddr, String>) -> Vec<Record> {
    records_parsed(messages, &unparsed(messages), who)
}

fn records_parsed(
    messages: &[Packet],
    parsed: &[Parsed],
    who: &BTreeMap<SocketAddr, String>,
) -> Vec<Record> {
    let mut out = Vec::new();
    for (m, parsed) in messages.iter().zip(parsed) {
        let more = m.records_parsed(who, out.len() as u64, parsed);
        out.extend(more);
    }
    out
}

/// Does record `i` carry what `step` sends?
fn triggers(
    step: &Step,
    records: &[Record],
    i: usize,
    lines: &Topology,
    line: &Identities,
) -> bool {
    let rec = &records[i];
    if rec.agent != step.actor || rec.direction != Direction::Sent {
        return false;
    }
    // What the step sends starts so; nothing else is parsed.
    let start: &[u8] = match &step.action {
        Action::Hold {
            style: HoldStyle::Update,
            ..
        } => b"UPDATE ",
        Action::Call { .. }
        | Action::Hold { .. }
        | Action::Retrieve { .. }
        | Action::Barge { .. } => b"INVITE ",
        Action::Answer | Action::Refuse { .. } => b"SIP/2.0 ",
        Action::Hangup => b"BYE ",
        Action::Cancel => b"CANCEL ",
        Action::Seize { .. }
        | Action::Release
        | Action::Refresh
        | Action::Unsubscribe
        | Action::Resubscribe
        | Action::Reroute => b"SUBSCRIBE ",
        Action::RefuseNotify => b"SIP/2.0 481",
        Action::LoseAck => b"ACK ",
        Action::CloseConnection => b"SIP/2.0 2",
    };
    if !rec.raw.starts_with(start) {
        return false;
    }
    let Ok(msg) = rec.message() else {
        return false;
    };
    let invite_response = |ok: bool| {
        msg.cseq().is_some_and(|(_, m)| m == "INVITE")
            && msg.status().is_some_and(|s| {
                if ok {
                    (200..300).contains(&s)
                } else {
                    s >= 300
                }
            })
    };
    let package = || {
        msg.header("Event")
            .and_then(EventHeader::parse)
            .map(|e| e.package)
    };
    let fresh_call_info = || {
        msg.is("SUBSCRIBE")
            && msg.to_tag().is_none()
            && package().as_deref() == Some("call-info")
            && msg.header("Expires").is_none_or(|e| e.trim() != "0")
    };
    // The line's AoR on the target: its number's SIP user.
    let own_line = lines
        .line_of(&step.actor)
        .map(|l| line.user(&l.number).to_string());
    let to_own_line = || msg.to().and_then(|t| t.user().map(str::to_string)) == own_line;
    match &step.action {
        Action::Call { .. } => msg.is("INVITE") && msg.to_tag().is_none() && !to_own_line(),
        Action::Answer => invite_response(true),
        Action::Refuse { .. } => invite_response(false),
        Action::Hangup => msg.is("BYE") && !crate::actions::ends_fork(records, i, msg),
        Action::Cancel => msg.is("CANCEL"),
        Action::Seize { .. } => {
            msg.is("SUBSCRIBE")
                && msg.to_tag().is_none()
                && package().as_deref() == Some("line-seize")
        }
        Action::Release => {
            msg.is("SUBSCRIBE")
                && msg.to_tag().is_some()
                && package().as_deref() == Some("line-seize")
                && msg.header("Expires").is_some_and(|e| e.trim() == "0")
        }
        Action::Hold { private, style } => {
            let says_private = msg.headers("Call-Info").any(|c| c.contains("held-private"));
            let method = msg.method().unwrap_or_default();
            msg.to_tag().is_some()
                && HoldStyle::of(&method, msg.body()) == Some(*style)
                && says_private == *private
        }
        Action::Retrieve { .. } | Action::Barge { .. } => {
            msg.is("INVITE") && msg.to_tag().is_none() && to_own_line()
        }
        Action::Refresh => {
            msg.is("SUBSCRIBE")
                && msg.to_tag().is_some()
                && package().as_deref() == Some("call-info")
                && msg.header("Expires").is_none_or(|e| e.trim() != "0")
        }
        // A response names no package: any NOTIFY's 481 by the phone.
        Action::RefuseNotify => msg.cseq().is_some_and(|(_, m)| m == "NOTIFY"),
        Action::LoseAck => msg.is("ACK") && crate::actions::acked_late(records, i, msg),
        // Nothing on the wire says a connection closed: the step shows
        // as the answer to the NOTIFY that reached the phone after it.
        Action::CloseConnection => {
            rec.transport != crate::sip::Transport::Udp
                && msg.cseq().is_some_and(|(_, m)| m == "NOTIFY")
        }
        Action::Resubscribe => fresh_call_info(),
        // A reroute's SUBSCRIBE is a fresh one like a reboot's, over UDP
        // (the relay's one transport), by a path none of the phone's
        // requests took before: to its new relay (seen at the phone), or
        // from it (seen at the server, HEP).
        Action::Reroute => {
            let earlier = records[..i]
                .iter()
                .filter(|r| {
                    r.agent == rec.agent
                        && r.direction == Direction::Sent
                        && !r.raw.starts_with(b"SIP/2.0 ")
                })
                .map(|r| (r.local, r.peer));
            fresh_call_info() && crate::actions::takes_new_path(rec, earlier)
        }
        Action::Unsubscribe => {
            msg.is("SUBSCRIBE")
                && msg.to_tag().is_some()
                && package().as_deref() == Some("call-info")
                && msg.header("Expires").is_some_and(|e| e.trim() == "0")
        }
    }
}

/// Where each stage of the case begins (a record index), or None if the
/// capture does not contain the case's flow.
pub fn stage_starts(
    p: &Prepared,
    records: &[Record],
    topology: &Topology,
    line: &Identities,
) -> Option<Placed> {
    // What a run sends to clean up is no step of its flow: an outbound
    // call's teardown BYE is not the `hangup` of a longer case. (A stage
    // without steps may still begin there: it then saw nothing.)
    stage_starts_before(p, records, topology, line, teardown_start(records, 0), true)
}

/// [`stage_starts`] given where the teardown begins (found once for every
/// candidate case of a capture). `named`: the case is the one to judge
/// (not one of the candidates detection weighs), so a step the wire may
/// not show ([`Action::CloseConnection`]) need not show.
fn stage_starts_before(
    p: &Prepared,
    records: &[Record],
    topology: &Topology,
    line: &Identities,
    steps_end: usize,
    named: bool,
) -> Option<Placed> {
    let mut starts = Vec::new();
    let mut last_step = None;
    let mut steps = Vec::new();
    let mut from = 0;
    // The phones of the latest race: a step after it that the case gives
    // one of them may be the other's, whichever won ([`crate::race`]).
    let mut racing: Vec<String> = Vec::new();
    let fits = |step: &Step, racing: &[String], i: usize| {
        let rec = &records[i];
        if racing.contains(&step.actor) && racing.contains(&rec.agent) {
            let as_sent = Step {
                actor: rec.agent.clone(),
                ..step.clone()
            };
            return triggers(&as_sent, records, i, topology, line);
        }
        triggers(step, records, i, topology, line)
    };
    for stage in &p.case.stages {
        if stage.together {
            // Fired at once: the capture shows them in either order, each
            // by its own phone; the stage begins at the first of them.
            let at: Vec<usize> = stage
                .steps
                .iter()
                .map(|step| (from..steps_end).find(|&i| triggers(step, records, i, topology, line)))
                .collect::<Option<_>>()?;
            let (first, last) = (*at.iter().min()?, *at.iter().max()?);
            // A race only if the capture shows one: the steps within
            // [`crate::actions::RACE_WINDOW`] of each other.
            // (scacheck's phones mark a race's steps, so a loaded
            // machine's run is still read as one.)
            let gap = records[last].at.duration_since(records[first].at);
            let marked = at.iter().all(|&i| {
                crate::ua::agent::is_marked(&records[i].raw, crate::ua::agent::TOGETHER_HEADER)
            });
            if !marked && gap.map_or(true, |g| g > crate::actions::RACE_WINDOW) {
                return None;
            }
            starts.push(first);
            steps.extend(&at);
            from = last + 1;
            last_step = Some(last);
            racing = stage.steps.iter().map(|s| s.actor.clone()).collect();
            continue;
        }
        let ordered = capture_order(&stage.steps);
        let start = match ordered.first().copied() {
            Some(first) => (from..steps_end).find(|&i| fits(first, &racing, i))?,
            // A response belongs to its request's stage, however late it
            // comes (a loaded server may answer the previous stage's last
            // request after more than the quiet time).
            None => (from.max(1)..records.len())
                .find(|&i| quiet_before(records, i) && !is_response(&records[i]))?,
        };
        // Every later step of the stage must be there too, in order.
        let mut at = start;
        if !stage.steps.is_empty() {
            steps.push(start);
        }
        for step in ordered.iter().skip(1).copied() {
            let found = (at..steps_end).find(|&i| fits(step, &racing, i));
            at = match found {
                Some(i) => i,
                // A closed connection leaves nothing on the wire: the
                // phone's answer to the NOTIFY that found it again shows
                // the step, and a server that never found it leaves no
                // answer, which the stage then judges (when the case is
                // named: detection wants to see the step).
                None if named && step.action == Action::CloseConnection => at,
                None => return None,
            };
            steps.push(at);
        }
        if !stage.steps.is_empty() {
            last_step = Some(at);
        }
        starts.push(start);
        from = start + 1;
    }
    Some(Placed {
        starts,
        last_step,
        steps,
        actions: None,
    })
}

/// A stage's steps in the order a capture shows their messages: an armed
/// step ([`Action::armed`]) after the step that follows it, whose
/// consequence its message answers.
fn capture_order(steps: &[Step]) -> Vec<&Step> {
    let mut ordered = Vec::with_capacity(steps.len());
    let mut armed = Vec::new();
    for step in steps {
        if step.action.armed() {
            armed.push(step);
        } else {
            ordered.push(step);
            ordered.append(&mut armed);
        }
    }
    ordered.append(&mut armed);
    ordered
}

/// Where a case's flow lies in a capture's records: where each stage
/// begins, the record of its last step (None: it has none), and the
/// record of each step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub starts: Vec<usize>,
    pub last_step: Option<usize>,
    pub steps: Vec<usize>,
    /// What [`crate::actions::recover`] reads of the same records (with
    /// the same line and topology), when already read ([`detect`] does):
    /// judging the flow then does not read them again.
    pub actions: Option<Vec<crate::actions::Recovered>>,
}

impl Placed {
    /// Does the case account for every action the phones took from its
    /// first step to its last (`acted`: the records of the actions
    /// [`crate::actions::recover`] reads)? A flow with an action between
    /// that no step takes is another flow, however many steps it shares.
    fn accounts_for(&self, acted: &[usize]) -> bool {
        let (Some(first), Some(last)) = (self.steps.iter().min(), self.last_step) else {
            return true;
        };
        acted
            .iter()
            .filter(|a| (*first..=last).contains(*a))
            .all(|a| self.steps.contains(a))
    }
}

/// Does a quiet time as long as the live settle window come before
/// record `i` (> 0)?
fn quiet_before(records: &[Record], i: usize) -> bool {
    records[i]
        .at
        .duration_since(records[i - 1].at)
        .unwrap_or_default()
        >= QUIET
}

fn is_response(r: &Record) -> bool {
    r.raw.starts_with(b"SIP/2.0 ")
}

/// Where each stage begins, a stage without steps placed as the live run
/// ends the stage before it: once that stage has received every event the
/// target is expected to send there (the golden with its deviations
/// applied, within [`STAGE_WAIT`]), at the first message after a quiet
/// time ([`QUIET`]). A loaded
/// server may answer or notify later than the quiet time; the answer still
/// belongs to the stage that caused it. When the expected events never all
/// come (the stage differs), the quiet rule of [`stage_starts`] stands.
fn settled_starts(
    p: &Prepared,
    records: &[Record],
    starts: &[usize],
    derived: &[Vec<Observation>],
    seen: &Observability,
    deviations: &[Deviation],
) -> Vec<usize> {
    let deviations: Vec<&Deviation> = deviations
        .iter()
        .filter(|d| d.applies_to(&p.case.id))
        .collect();
    let mut out = starts.to_vec();
    for k in 1..out.len() {
        if !p.case.stages[k].steps.is_empty() {
            continue;
        }
        let (before, golden) = (&p.case.stages[k - 1], &p.golden[k - 1]);
        let want = crate::deviation::expected_counts(golden, &before.name, &deviations, seen);
        let mut got: BTreeMap<crate::model::Channel, usize> = BTreeMap::new();
        let mut complete = None;
        let began = records[out[k - 1]].at;
        for (i, found) in derived.iter().enumerate().skip(out[k - 1]) {
            if records[i].at.duration_since(began).unwrap_or_default() > STAGE_WAIT {
                break;
            }
            for o in found {
                *got.entry(o.channel.clone()).or_default() += 1;
            }
            if want
                .iter()
                .all(|(c, n)| got.get(c).copied().unwrap_or(0) >= *n)
            {
                complete = Some(i);
                break;
            }
        }
        let Some(complete) = complete else { continue };
        let next_limit = out.get(k + 1).copied().unwrap_or(records.len());
        if let Some(start) = (complete + 1..next_limit).find(|&i| quiet_before(records, i)) {
            out[k] = start;
        }
    }
    out
}

/// The phones a capture showed, for people: `60970 at 127.0.0.1:25081,
/// 60972 at 127.0.0.1:25085`, or `none` and why.
pub fn phones_in_words(who: &BTreeMap<SocketAddr, String>) -> String {
    if who.is_empty() {
        return format!("none: {NO_PHONES}");
    }
    who.iter()
        .map(|(addr, dn)| format!("{dn} at {addr}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a capture shows no phones, in words.
pub const NO_PHONES: &str = "no REGISTER names one of the target's SIP users, \
and no call-info or line-seize SUBSCRIBE shows a shared line's phones";

/// Why a capture could not be given a case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Detection {
    #[error("the capture shows no case's flow (phones found: {phones})")]
    NoFlow { phones: String },
    #[error(
        "the capture fits {} equally well (each shows every step of its flow, in order, and as many steps); name the flow with --case {}",
        .cases.join(" and "),
        .cases.join(" or --case ")
    )]
    Ambiguous { cases: Vec<String> },
}

/// How specific a case's flow is: its steps and stages.
fn weight(p: &Prepared) -> usize {
    p.case
        .stages
        .iter()
        .map(|s| s.steps.len() + 1)
        .sum::<usize>()
}

/// [`detect`] with the line's two phones as `who` names them, and, when
/// nothing in the capture says which is which (no REGISTER whose
/// User-Agent names a DN, as scacheck's phones' do), also the other way
/// round: two phones of one line are labels the capture does not fix, and
/// the flow is the more specific of the two readings (the first, of
/// equals). Returns the case, where its flow lies, and the records made
/// with the reading chosen.
fn detect_either_way<'a>(
    messages: &[Packet],
    parsed: &[Parsed],
    suite: &'a [Prepared],
    who: BTreeMap<SocketAddr, String>,
    topology: &Topology,
    line: &Identities,
) -> Result<(&'a Prepared, Placed, Vec<Record>), Detection> {
    let mut readings = vec![who];
    if let (Some([a, b]), false) = (
        topology.lines.first().map(|l| l.members.as_slice()),
        named_by_user_agent(messages, parsed),
    ) {
        let other: BTreeMap<SocketAddr, String> = readings[0]
            .iter()
            .map(|(addr, dn)| {
                let dn = if dn == a {
                    b.clone()
                } else if dn == b {
                    a.clone()
                } else {
                    dn.clone()
                };
                (*addr, dn)
            })
            .collect();
        if other != readings[0] {
            readings.push(other);
        }
    }
    let mut best: Option<(&Prepared, Placed, Vec<Record>)> = None;
    let mut first_error = None;
    for who in &readings {
        let recs = records_parsed(messages, parsed, who);
        match detect(suite, &recs, who, topology, line) {
            Ok((p, placed)) if best.as_ref().is_none_or(|(b, _, _)| weight(p) > weight(b)) => {
                best = Some((p, placed, recs));
            }
            Ok(_) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    best.ok_or_else(|| {
        first_error.unwrap_or_else(|| Detection::NoFlow {
            phones: phones_in_words(&readings[0]),
        })
    })
}

/// Does a REGISTER of the capture name its phone's DN in its User-Agent
/// (scacheck's phones do)?
fn named_by_user_agent(messages: &[Packet], parsed: &[Parsed]) -> bool {
    registers(messages, parsed).any(|(_, msg)| {
        msg.header("User-Agent")
            .and_then(crate::ua::agent::dn_in_user_agent)
            .is_some()
    })
}

/// The case a capture shows, chosen by its structure alone: among the
/// cases whose parties are all among the capture's phones and whose every
/// step appears in it, in order, the one with the most steps and stages
/// (the most specific flow). A verdict never enters into it; two equally
/// specific candidates are ambiguous.
pub fn detect<'a>(
    suite: &'a [Prepared],
    records: &[Record],
    who: &BTreeMap<SocketAddr, String>,
    topology: &Topology,
    line: &Identities,
) -> Result<(&'a Prepared, Placed), Detection> {
    let steps_end = teardown_start(records, 0);
    let recovered = crate::actions::recover(records, topology, line).actions;
    let acted: Vec<usize> = recovered.iter().map(|a| a.at).collect();
    let mut candidates: Vec<(&Prepared, Placed)> = suite
        .iter()
        .filter(|p| p.case.parties.iter().all(|d| who.values().any(|w| w == d)))
        .filter_map(|p| {
            stage_starts_before(p, records, topology, line, steps_end, false).map(|s| (p, s))
        })
        .filter(|(_, placed)| placed.accounts_for(&acted))
        .collect();
    let Some(best) = candidates.iter().map(|(p, _)| weight(p)).max() else {
        return Err(Detection::NoFlow {
            phones: phones_in_words(who),
        });
    };
    candidates.retain(|(p, _)| weight(p) == best);
    if candidates.len() > 1 {
        return Err(Detection::Ambiguous {
            cases: candidates.iter().map(|(p, _)| p.case.id.clone()).collect(),
        });
    }
    let (p, mut placed) = candidates.remove(0);
    placed.actions = Some(recovered);
    Ok((p, placed))
}

/// Where a run's teardown begins: the first message marked as cleanup
/// (`X-Scacheck: teardown`), or else the burst of messages, without a quiet
/// time as long as the settle window, that holds the first unregistration
/// (the live run starts its teardown once the last stage has settled).
fn teardown_start(records: &[Record], after: usize) -> usize {
    teardown_marked(records, after).unwrap_or_else(|| teardown_by_unregistration(records, after))
}

/// Where the teardown of a capture judged as a case begins: as
/// [`teardown_start`] says, or, in a capture that does not mark it (a
/// field capture), earlier if a phone acts after the case's last step
/// (`placed.last_step`; its actions those detection read, if it did) in a way no step of it says: the first such action
/// ([`crate::actions::recover`]: hanging up the call the flow left up,
/// ending its subscriptions) is the flow's own teardown, not part of its
/// last stage. Then also what the report notes of it: what was cut off is
/// not compared, and it says so.
fn flow_end(
    records: &[Record],
    after: usize,
    placed: &Placed,
    topology: &Topology,
    line: &Identities,
) -> (usize, Option<String>) {
    if let Some(marked) = teardown_marked(records, after) {
        return (marked, None);
    }
    let unregistered = teardown_by_unregistration(records, after);
    let Some(last) = placed.last_step else {
        return (unregistered, None);
    };
    let recovered;
    let actions = match &placed.actions {
        Some(actions) => actions,
        None => {
            recovered = crate::actions::recover(records, topology, line).actions;
            &recovered
        }
    };
    let later: Vec<&crate::actions::Recovered> = actions
        .iter()
        .filter(|a| a.at > last && a.at >= after && a.at < unregistered)
        .collect();
    let Some(first) = later.first() else {
        return (unregistered, None);
    };
    let note = format!(
        "the capture goes on after the case's last step: from record #{} ({} {}) on, {} action{} of the phones that no step of the case takes {} read as the flow's own teardown, and not compared",
        first.at,
        first.actor,
        crate::actions::name(&first.action),
        later.len(),
        if later.len() == 1 { "" } else { "s" },
        if later.len() == 1 { "is" } else { "are" },
    );
    (first.at, Some(note))
}

/// The first record of a marked teardown (`X-Scacheck: teardown`).
fn teardown_marked(records: &[Record], after: usize) -> Option<usize> {
    // Only a message naming the header is parsed to see if it is marked.
    let marked = |r: &Record| {
        names_header(&r.raw, b"x-scacheck")
            && r.message().is_ok_and(|m| {
                m.header("X-Scacheck")
                    .is_some_and(|v| v.trim() == "teardown")
            })
    };
    (after..records.len()).find(|&i| marked(&records[i]))
}

/// The burst of messages, without a quiet time as long as the settle
/// window, that holds the first unregistration; the end if none.
fn teardown_by_unregistration(records: &[Record], after: usize) -> usize {
    // Only a REGISTER is parsed to see if it unregisters.
    let unregister = |r: &Record| {
        r.direction == Direction::Sent
            && r.raw.starts_with(b"REGISTER")
            && r.message().is_ok_and(|m| {
                m.is("REGISTER") && m.header("Expires").is_some_and(|e| e.trim() == "0")
            })
    };
    let Some(mut start) = (after..records.len()).find(|&i| unregister(&records[i])) else {
        return records.len();
    };
    while start > after && !quiet_before(records, start) {
        start -= 1;
    }
    start
}

/// Do the bytes hold `name` (lower case) in any case? Never false for a
/// message that has the header.
fn names_header(raw: &[u8], name: &[u8]) -> bool {
    let Some(&first) = name.first() else {
        return true;
    };
    memchr::memchr2_iter(first.to_ascii_lowercase(), first.to_ascii_uppercase(), raw).any(|i| {
        raw.get(i..i + name.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(name))
    })
}

/// Derives, attributes and compares: the verdict of a capture for a case.
pub fn check(
    p: &Prepared,
    records: Vec<Record>,
    topology: &Topology,
    line: &Identities,
    placed: &Placed,
    deviations: &[Deviation],
) -> CaseResult {
    let members = topology.members_among(&p.case.parties);
    let mut tlib = SipTlibDeriver::for_case(&p.case.parties, topology, &line.dn_of_user(topology));
    let source: Observability = tlib.observability();
    let mut wire = WireDeriver::new(&members);
    // Every record's events, derived once; a stage without steps is then
    // placed as the live run ends the stage before it.
    let rename = line.renamer(topology);
    let derived: Vec<Vec<Observation>> = records
        .iter()
        .map(|rec| {
            // The wire layer names the users it was told: in DNs, as live.
            let wire_events = wire.observe(rec).into_iter().map(|mut o| {
                rename(&mut o.event);
                o
            });
            let mut found: Vec<Observation> =
                tlib.observe(rec).into_iter().chain(wire_events).collect();
            for o in &mut found {
                o.record = Some(rec.seq);
            }
            found
        })
        .collect();
    let starts = &settled_starts(p, &records, &placed.starts, &derived, &source, deviations);
    let (end, cut) = flow_end(
        &records,
        starts.last().copied().unwrap_or(0),
        placed,
        topology,
        line,
    );
    let stage_of = |i: usize| -> String {
        if i >= end {
            return "teardown".into();
        }
        match starts.iter().rposition(|s| *s <= i) {
            Some(k) => p.case.stages[k].name.clone(),
            None => "setup".into(),
        }
    };
    // The case's phones read their messages as live phones do, and object
    // to the same things (a NOTIFY of a dialog they do not have, Call-Info
    // they cannot read), as a live run's phones report them.
    let mut phones = CapturedPhones::default();
    let mut objections = Vec::new();
    let mut events: Vec<(String, Observation)> = Vec::new();
    for (i, (rec, found)) in records.iter().zip(derived).enumerate() {
        for obs in found {
            events.push((stage_of(i), obs));
        }
        if p.case.parties.contains(&rec.agent) {
            // Read to the end, but what a phone objects to in the teardown
            // is not a finding, as live.
            let objected = phones.observe(rec);
            if i >= end {
                continue;
            }
            objections.extend(objected.into_iter().map(|why| crate::outcome::Problem {
                what: format!("{}: {why}", rec.agent),
                raw: Some(rec.raw.clone()),
            }));
        }
    }
    let (stages, races) = compare_stages(p, &events, &source, deviations);
    let problems = objections
        .into_iter()
        .chain(records.iter().filter_map(|r| {
            r.problem.as_ref().map(|why| crate::outcome::Problem {
                what: format!("{} ({}): {why}", r.agent, r.peer),
                raw: Some(r.raw.clone()),
            })
        }))
        .collect();
    let transport = records
        .first()
        .map(|r| r.transport)
        .unwrap_or(Transport::Udp);
    let mut stages = stages;
    let mut problems = problems;
    stages.extend(leak_check(
        p,
        &records,
        end,
        topology,
        line,
        deviations,
        &mut problems,
    ));
    let mut result = CaseResult::new(&p.case.id, &p.case.title, transport, source);
    result.stages = stages;
    result.problems = problems;
    result.stage_starts = std::iter::once(("setup".to_string(), 0))
        .chain(
            p.case
                .stages
                .iter()
                .map(|s| s.name.clone())
                .zip(starts.iter().copied()),
        )
        .chain((end < records.len()).then(|| ("teardown".to_string(), end)))
        .map(|(stage, record)| crate::outcome::StageStart { stage, record })
        .collect();
    result.records = records;
    result.events = events;
    crate::outcome::settle_verdict(&mut result);
    // Beside what the verdict's judgement notes, as a live run's.
    result.notes.extend(p.case.notes.iter().cloned());
    result.notes.extend(crate::race::notes(&races));
    result.notes.extend(cut);
    result
}

/// The leak check a capture of a live run holds ([`crate::leak`]): after
/// the teardown each line phone's fresh call-info SUBSCRIBE (a new dialog,
/// not an unsubscribe) and the first NOTIFY of it, judged as live. Only
/// the phones that probed are observed; a capture with no probe (one
/// scacheck did not make) has no leak check. The server's own state is not
/// in a capture.
fn leak_check(
    p: &Prepared,
    records: &[Record],
    end: usize,
    topology: &Topology,
    line: &Identities,
    deviations: &[Deviation],
    problems: &mut Vec<crate::outcome::Problem>,
) -> Option<crate::diff::StageResult> {
    let dns = line.reported_dn(topology);
    let mut observed = Vec::new();
    let mut channels = Vec::new();
    for dn in topology.members_among(&p.case.parties) {
        // The last probe: the live check reads the line again while
        // something is held, and judges the last reading.
        let after = &records[end.min(records.len())..];
        let Some(call_id) = after
            .iter()
            .rev()
            .find_map(|r| crate::leak::probe_sent(r, &dn))
        else {
            continue;
        };
        let Some((msg, r)) = after
            .iter()
            .find_map(|r| crate::leak::probe_notify(r, &dn, &call_id).map(|m| (m, r)))
        else {
            continue;
        };
        let raw = String::from_utf8_lossy(&r.raw).into_owned();
        match crate::leak::busy(&dn, &msg, &raw, &dns) {
            Ok(busy) => {
                observed.extend(busy);
                channels.push(crate::model::Channel::Wire(dn.clone()));
            }
            // Unreadable, so not observed: said, as live.
            Err(e) => problems.push(crate::outcome::Problem {
                what: format!("leak check: {dn}: {e}"),
                raw: Some(r.raw.clone()),
            }),
        }
    }
    if channels.is_empty() {
        return None;
    }
    let golden = crate::leak::golden(&p.case, topology, false);
    let mut seen =
        Observability::everything("the leak check's fresh call-info SUBSCRIBEs in the capture");
    seen.channels = Some(channels);
    let deviations: Vec<&Deviation> = deviations
        .iter()
        .filter(|d| d.applies_to(&p.case.id))
        .collect();
    Some(crate::diff::compare_stage(
        crate::leak::STAGE,
        &golden.channels,
        &observed,
        &seen,
        &mut crate::diff::Bindings::default(),
        &deviations,
    ))
}

/// A capture file read through: its SIP messages, what the reader passed
/// over, and where the file broke off, if it did (never fatal: what came
/// before is judged).
#[derive(Debug)]
pub struct Capture {
    pub packets: Vec<Packet>,
    pub skipped: crate::pcap::Skipped,
    pub broken: Option<String>,
}

impl Capture {
    /// What the console says of it: how many messages, what was skipped,
    /// and where it broke off.
    pub fn summary(&self) -> String {
        summary(self.packets.len(), &self.skipped, self.broken.as_deref())
    }

    /// Its flows, split as `pcap check` splits a capture as it reads it
    /// ([`crate::flows`]: by line of the pool, then by registration
    /// lifetime), each with its line alone as what its phones are found
    /// by; or itself whole (one line or none).
    pub fn flows(&self, lines: &[Identities]) -> Vec<Split> {
        let mut splitter = crate::flows::Splitter::new(lines);
        let mut flows = Vec::new();
        for p in &self.packets {
            flows.extend(splitter.push(p.clone()));
        }
        flows.extend(splitter.finish());
        flows
            .into_iter()
            .map(|flow| match flow {
                crate::flows::Flow::Whole(packets) => Split {
                    line: None,
                    nth: 1,
                    capture: Capture {
                        packets,
                        skipped: self.skipped.clone(),
                        broken: self.broken.clone(),
                    },
                },
                crate::flows::Flow::Line { line, nth, packets } => Split {
                    line: Some(lines[line].clone()),
                    nth,
                    capture: Capture {
                        packets,
                        skipped: Default::default(),
                        broken: None,
                    },
                },
            })
            .collect()
    }

    pub fn read(path: &std::path::Path) -> Result<Capture, crate::pcap::PcapError> {
        let mut reader = crate::pcap::Reader::open(path)?;
        let mut packets = Vec::new();
        let mut broken = None;
        loop {
            match reader.next_packet() {
                Ok(Some(p)) => packets.push(p),
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e.to_string());
                    break;
                }
            }
        }
        Ok(Capture {
            packets,
            skipped: reader.skipped().clone(),
            broken,
        })
    }

    /// A capture judged as a run: the phones found by the identities of the
    /// target's line the capture registers (of `lines`), else by its SCA
    /// signalling ([`phones`]), the flow detected among `suite` by its structure (give a
    /// suite of one case to name it), events derived from the phones' SIP
    /// and compared with the target's declared deviations. `name` is the
    /// file, for the report's sources.
    pub fn judge<'a>(
        &self,
        name: &std::path::Path,
        suite: &'a [Prepared],
        lines: &[Identities],
        deviations: &[Deviation],
        topology: &Topology,
    ) -> Result<(&'a Prepared, CaseResult), Detection> {
        // Each message parsed once, for every reading of the flow.
        let parsed = unparsed(&self.packets);
        let (line, who) = phones_parsed(&self.packets, &parsed, lines, topology);
        let (p, placed, recs) =
            detect_either_way(&self.packets, &parsed, suite, who, topology, &line)?;
        let mut result = check(p, recs, topology, &line, &placed, deviations);
        result.line = line.describe(topology);
        let from = format!("derived from the SIP in {}", name.display());
        result.source.source = format!("T-Library events {from}");
        result.source.wire_source = format!("SCA wire layer {from}");
        if result
            .records
            .iter()
            .any(|r| r.message().is_ok_and(crate::sip::tls::message_says_tls))
        {
            // Keyed as the run over TLS was (`<case>@tls`), so that a
            // capture of it lines up with it in a table or a comparison.
            result.transport = Transport::Tls;
            result.notes.push(crate::sip::tls::READ_AS_TCP.to_string());
        }
        Ok((p, result))
    }
}

/// What the console says of a capture read: how many messages, what was
/// skipped, and where it broke off.
fn summary(messages: usize, skipped: &crate::pcap::Skipped, broken: Option<&str>) -> String {
    let mut out = format!("capture: {messages} SIP messages; {skipped}\n");
    if let Some(e) = broken {
        out.push_str(&format!("capture ends early: {e}\n"));
    }
    out
}

/// One flow of a capture ([`Capture::flows`]).
#[derive(Debug)]
pub struct Split {
    /// Its line of the pool (None: the capture whole).
    pub line: Option<Identities>,
    /// Which of its line's flows it is, from 1.
    pub nth: usize,
    pub capture: Capture,
}

impl Split {
    /// Its short name in a report key or a case id: `line-3`, `line-3.2`
    /// for the line's second flow; None for a capture judged whole.
    pub fn key(&self) -> Option<String> {
        self.line.as_ref().map(|l| flow_key(l, self.nth))
    }
}

/// A flow's short name: `line-3`, or `line-3.2` for its line's second.
pub fn flow_key(line: &Identities, nth: usize) -> String {
    match nth {
        1 => line_key(line),
        n => format!("{}.{n}", line_key(line)),
    }
}

/// What `scacheck pcap check` found: what it says before the report (what
/// the capture held, the case it detected), the name and description the
/// report gives the check, and the judged case.
#[derive(Debug)]
pub struct Checked {
    pub said: String,
    pub name: String,
    pub described: String,
    /// One per flow kept for the report: a capture of several lines holds
    /// a flow per line and per registration lifetime ([`crate::flows`]);
    /// at most [`KEPT`], those with an unexpected verdict first.
    pub results: Vec<CaseResult>,
    /// Every flow judged, kept or not.
    pub tally: Tally,
}

/// How many judged flows a report holds in full (its files each); the
/// others are counted in [`Tally`] only.
pub const KEPT: usize = 200;
/// How many flows the console names one by one.
pub const SAID: usize = 50;

/// Every flow of a capture judged: counts by case and verdict, the flows
/// no case fitted, and how many the report left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub flows: usize,
    pub by_case: BTreeMap<String, BTreeMap<&'static str, usize>>,
    pub no_case: usize,
    pub left_out: usize,
    pub unexpected: usize,
}

impl Tally {
    fn count(&mut self, r: &CaseResult, case: &str) {
        self.flows += 1;
        *self
            .by_case
            .entry(case.to_string())
            .or_default()
            .entry(r.verdict.as_str())
            .or_default() += 1;
        if !r.verdict.expected() {
            self.unexpected += 1;
        }
    }

    /// For people: a line per case, its verdicts counted.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{} flows judged ({} in the report, {} counted only), {} with no case\n",
            self.flows,
            self.flows - self.left_out,
            self.left_out,
            self.no_case
        );
        for (case, verdicts) in &self.by_case {
            let counts: Vec<String> = verdicts.iter().map(|(v, n)| format!("{v} {n}")).collect();
            out.push_str(&format!("{case}: {}\n", counts.join(", ")));
        }
        out
    }
}

impl Checked {
    /// One judged case (a log's), as a report of one.
    pub fn one(name: &str, described: &str, result: CaseResult) -> Checked {
        let mut tally = Tally::default();
        tally.count(&result, &result.id.clone());
        Checked {
            said: String::new(),
            name: name.into(),
            described: described.into(),
            results: vec![result],
            tally,
        }
    }

    /// Were all the flows' verdicts expected ones (those left out of the
    /// report too)?
    pub fn expected(&self) -> bool {
        self.tally.unexpected == 0 && self.results.iter().all(|r| r.verdict.expected())
    }

    /// The report ([`crate::report::write_checked`]) of the flows kept, and
    /// `flows.txt`, the tally of them all, when there were several; what the
    /// console says of it.
    pub fn write_report(&self, dir: &std::path::Path) -> std::io::Result<String> {
        let mut said =
            crate::report::write_checked(dir, &self.name, &self.described, &self.results)?;
        if self.tally.flows > 1 {
            std::fs::write(dir.join("flows.txt"), self.tally.text())?;
            let first = self
                .tally
                .text()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            said.push_str(&format!("{first}: {}\n", dir.join("flows.txt").display()));
        }
        Ok(said)
    }
}

/// Why `scacheck pcap check` judged nothing.
#[derive(Debug, thiserror::Error)]
pub enum CheckFileError {
    #[error(transparent)]
    Suite(#[from] crate::suite::SuiteError),
    // The source is the error's cause: said once, after the context.
    #[error("reading {path}")]
    Read {
        path: std::path::PathBuf,
        source: crate::pcap::PcapError,
    },
    #[error("{context}")]
    Detect { context: String, source: Detection },
    /// A log that cannot be read as one.
    #[error("reading {path}: {why}")]
    Log {
        path: std::path::PathBuf,
        why: String,
    },
}

/// `scacheck log check`: the server log in `file` judged as case
/// `case_id` of the suite in `dirs` ([`judge_log`]).
pub fn check_log_file(
    file: &std::path::Path,
    case_id: &str,
    dirs: &crate::suite::Dirs,
    topology: &Topology,
) -> Result<Checked, CheckFileError> {
    let failed = |why: String| CheckFileError::Log {
        path: file.to_path_buf(),
        why,
    };
    let bytes = std::fs::read(file).map_err(|e| failed(e.to_string()))?;
    let p = dirs.case(case_id, topology, false)?;
    let (result, events, skipped) = judge_log(&String::from_utf8_lossy(&bytes), file, &p, topology)
        .map_err(|e| failed(e.to_string()))?;
    let described = format!("log {}", file.display());
    let mut checked = Checked::one("log", &described, result);
    checked.said = format!("log: {events} events; {skipped}\n");
    Ok(checked)
}

/// What every flow of a capture is judged against: shared, read only, by
/// the threads that judge ([`check_file`]).
struct Judge<'a> {
    file: &'a std::path::Path,
    suite: &'a [Prepared],
    lines: &'a [Identities],
    deviations: &'a [Deviation],
    topology: &'a Topology,
}

/// A flow judged, not yet counted: its case and result, or why no case.
enum Judged<'a> {
    /// The capture judged whole (one line, or none).
    Whole(Result<(&'a Prepared, CaseResult), Detection>),
    /// Flow `nth` of line `line` of the pool.
    Line {
        line: usize,
        nth: usize,
        found: Result<(&'a Prepared, CaseResult), Detection>,
    },
}

impl<'a> Judge<'a> {
    /// Judges one flow (`whole`: the capture, for a [`crate::flows::Flow::Whole`]).
    fn judge(&self, flow: crate::flows::Flow, whole: Option<Capture>) -> Judged<'a> {
        // A judged flow's messages are held as bytes only: parsed, they
        // would hold a report's flows several times over in memory.
        let unparsed = |found: Result<(&'a Prepared, CaseResult), Detection>| {
            found.map(|(p, mut r)| {
                for rec in &mut r.records {
                    rec.parsed = Default::default();
                }
                (p, r)
            })
        };
        match flow {
            crate::flows::Flow::Whole(_) => {
                let capture = whole.expect("the whole capture");
                Judged::Whole(unparsed(capture.judge(
                    self.file,
                    self.suite,
                    self.lines,
                    self.deviations,
                    self.topology,
                )))
            }
            crate::flows::Flow::Line { line, nth, packets } => {
                let one = Capture {
                    packets,
                    skipped: Default::default(),
                    broken: None,
                };
                let found = one.judge(
                    self.file,
                    self.suite,
                    std::slice::from_ref(&self.lines[line]),
                    self.deviations,
                    self.topology,
                );
                Judged::Line {
                    line,
                    nth,
                    found: unparsed(found),
                }
            }
        }
    }
}

/// The flows judged so far, counted in the order they closed, as few kept
/// as the report holds.
struct Judging<'a> {
    lines: &'a [Identities],
    topology: &'a Topology,
    case_id: Option<&'a str>,
    /// By (line, flow of the line), for the report's order.
    kept: Vec<((usize, usize), CaseResult)>,
    tally: Tally,
    said: Vec<String>,
    lines_seen: std::collections::BTreeSet<usize>,
}

impl Judging<'_> {
    fn say(&mut self, what: String) {
        if self.said.len() < SAID {
            self.said.push(what);
        }
    }

    /// Keeps `r` if the report has room, or if its verdict is unexpected
    /// and an expected one can make room.
    fn keep(&mut self, at: (usize, usize), r: CaseResult) {
        if self.kept.len() >= KEPT {
            let evict = (!r.verdict.expected())
                .then(|| self.kept.iter().rposition(|(_, k)| k.verdict.expected()))
                .flatten();
            match evict {
                Some(i) => {
                    self.kept.remove(i);
                }
                None => {
                    self.tally.left_out += 1;
                    return;
                }
            }
            self.tally.left_out += 1;
        }
        self.kept.push((at, r));
    }

    /// Counts a judged flow; a capture judged whole that shows no case is
    /// the check's error.
    fn count(&mut self, judged: Judged) -> Result<(), Detection> {
        let (line, nth, found) = match judged {
            Judged::Whole(found) => {
                let (p, result) = found?;
                if self.case_id.is_none() {
                    self.say(format!("detected case: {}", p.case.id));
                }
                self.tally.count(&result, &p.case.id);
                self.keep((0, 0), result);
                return Ok(());
            }
            Judged::Line { line, nth, found } => (line, nth, found),
        };
        self.lines_seen.insert(line);
        let l = &self.lines[line];
        let named = l.describe(self.topology).unwrap_or_default();
        match found {
            Ok((p, mut result)) => {
                let flow = if nth > 1 {
                    format!(" flow {nth}")
                } else {
                    String::new()
                };
                self.say(format!("{named}{flow}: detected case {}", p.case.id));
                // Two flows of one case each keep their own files.
                result.id = format!("{}@{}", p.case.id, flow_key(l, nth));
                self.tally.count(&result, &p.case.id);
                self.keep((line, nth), result);
            }
            Err(e) => {
                self.tally.no_case += 1;
                self.say(format!("{named}: no case: {e}"));
            }
        }
        Ok(())
    }
}

/// How many flows may wait to be judged, per judging thread: what bounds
/// the memory of a capture read faster than it is judged.
const QUEUED_PER_THREAD: usize = 2;

/// Flows judged on threads of their own while the capture is read on,
/// counted in the order they closed (so that the report, the console and
/// the tally are those of judging them one by one). At most
/// [`QUEUED_PER_THREAD`] flows per thread wait, and as many are judged at
/// once as there are threads: memory stays bounded by the live flows.
struct Pipeline<'a> {
    jobs: Option<std::sync::mpsc::SyncSender<(u64, crate::flows::Flow, Option<Capture>)>>,
    done: std::sync::mpsc::Receiver<(u64, Judged<'a>)>,
    /// Judged ahead of a flow that closed before them.
    waiting: BTreeMap<u64, Judged<'a>>,
    sent: u64,
    counted: u64,
    failed: Option<Detection>,
}

impl<'a> Pipeline<'a> {
    /// `threads` threads of `scope` judging with `judge`.
    fn start<'s>(
        scope: &'s std::thread::Scope<'s, '_>,
        judge: &'s Judge<'a>,
        threads: usize,
    ) -> Pipeline<'a>
    where
        'a: 's,
    {
        let (jobs, queue) = std::sync::mpsc::sync_channel(threads * QUEUED_PER_THREAD);
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        let (finished, done) = std::sync::mpsc::channel();
        for _ in 0..threads {
            let (queue, finished) = (queue.clone(), finished.clone());
            scope.spawn(move || loop {
                let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok((seq, flow, whole)) = job else { break };
                if finished.send((seq, judge.judge(flow, whole))).is_err() {
                    break;
                }
            });
        }
        Pipeline {
            jobs: Some(jobs),
            done,
            waiting: BTreeMap::new(),
            sent: 0,
            counted: 0,
            failed: None,
        }
    }

    /// Hands a closed flow to the judging threads (waiting while they are
    /// [`QUEUED_PER_THREAD`] behind), and counts what they finished.
    fn push(&mut self, judging: &mut Judging, flow: crate::flows::Flow, whole: Option<Capture>) {
        if self.failed.is_some() {
            return;
        }
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send((self.sent, flow, whole)).is_ok());
        if !sent {
            // Every thread is gone (one panicked): the scope says why.
            self.jobs = None;
            return;
        }
        self.sent += 1;
        while let Ok((seq, judged)) = self.done.try_recv() {
            self.arrived(judging, seq, judged);
        }
    }

    fn arrived(&mut self, judging: &mut Judging, seq: u64, judged: Judged<'a>) {
        self.waiting.insert(seq, judged);
        while let Some(judged) = self.waiting.remove(&self.counted) {
            self.counted += 1;
            if self.failed.is_none() {
                if let Err(e) = judging.count(judged) {
                    self.failed = Some(e);
                }
            }
        }
    }

    /// Waits for every flow handed over, and counts them: the first error
    /// of a capture judged whole, if one was.
    fn finish(mut self, judging: &mut Judging) -> Result<(), Detection> {
        self.jobs = None;
        while let Ok((seq, judged)) = self.done.recv() {
            self.arrived(judging, seq, judged);
        }
        match self.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// `scacheck pcap check`: reads `file`, judges it as case `case_id` (or
/// the case its structure shows, never chosen by its verdict) of the suite
/// in `dirs`, its phones and deviations those of `target`. Read as a
/// stream, split into flows as it goes ([`crate::flows`]), each judged as
/// it closes and forgotten but for its verdict ([`Tally`]) and, up to
/// [`KEPT`] of them, its result.
pub fn check_file(
    file: &std::path::Path,
    case_id: Option<&str>,
    dirs: &crate::suite::Dirs,
    target: &str,
    topology: &Topology,
) -> Result<Checked, CheckFileError> {
    let (name, lines, deviations) = dirs.judged_as(target, topology)?;
    let read_error = |source| CheckFileError::Read {
        path: file.to_path_buf(),
        source,
    };
    let mut reader = crate::pcap::Reader::open(file).map_err(read_error)?;
    let suite = match case_id {
        Some(id) => vec![dirs.case(id, topology, false)?],
        None => dirs.load(topology, None, false)?,
    };
    let detect = |source| CheckFileError::Detect {
        context: case_id.map_or("detecting the flow".into(), |c| format!("case {c}")),
        source,
    };
    let judge = Judge {
        file,
        suite: &suite,
        lines: &lines,
        deviations: &deviations,
        topology,
    };
    let mut judging = Judging {
        lines: &lines,
        topology,
        case_id,
        kept: Vec::new(),
        tally: Tally::default(),
        said: Vec::new(),
        lines_seen: Default::default(),
    };
    // The capture is read and split here while its closed flows are
    // judged on other threads, as many as there are cores.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut splitter = crate::flows::Splitter::new(&lines);
    let mut count = 0usize;
    let mut broken = None;
    let (skipped, judged) = std::thread::scope(|scope| {
        let mut pipeline = Pipeline::start(scope, &judge, threads);
        loop {
            match reader.next_packet() {
                Ok(Some(p)) => {
                    count += 1;
                    for flow in splitter.push(p) {
                        pipeline.push(&mut judging, flow, None);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e.to_string());
                    break;
                }
            }
        }
        let skipped = reader.skipped().clone();
        for flow in splitter.finish() {
            match flow {
                crate::flows::Flow::Whole(packets) => {
                    let whole = Capture {
                        packets,
                        skipped: skipped.clone(),
                        broken: broken.clone(),
                    };
                    let flow = crate::flows::Flow::Whole(Vec::new());
                    pipeline.push(&mut judging, flow, Some(whole));
                }
                line => pipeline.push(&mut judging, line, None),
            }
        }
        (skipped, pipeline.finish(&mut judging))
    });
    judged.map_err(detect)?;
    let mut said = summary(count, &skipped, broken.as_deref());
    let Judging {
        mut kept,
        tally,
        said: lines_said,
        lines_seen,
        ..
    } = judging;
    if tally.flows + tally.no_case > 1 {
        let flows = tally.flows + tally.no_case;
        said.push_str(&match flows == lines_seen.len() {
            true => format!("{flows} flows, one per line\n"),
            false => format!(
                "{flows} flows on {} lines, by line and registration\n",
                lines_seen.len()
            ),
        });
    }
    for line in &lines_said {
        said.push_str(line);
        said.push('\n');
    }
    if lines_said.len() >= SAID {
        said.push_str("(the console names the first flows only; flows.txt counts them all)\n");
    }
    if kept.is_empty() {
        return Err(detect(Detection::NoFlow {
            phones: "none in any line's flow".into(),
        }));
    }
    kept.sort_by_key(|(at, _)| *at);
    Ok(Checked {
        said,
        name,
        described: format!("capture {}", file.display()),
        results: kept.into_iter().map(|(_, r)| r).collect(),
        tally,
    })
}

/// A line's short name in a report key: `line-3`.
fn line_key(line: &Identities) -> String {
    line.number.map_or("line".into(), |n| format!("line-{n}"))
}

/// A server log judged against a case: its T-Library channels (a log
/// holds no SIP wire layer), every stage in order ([`check_events`]), what
/// the reader passed over noted. Also returns how many events it read and
/// what it skipped, for the console.
pub fn judge_log(
    text: &str,
    name: &std::path::Path,
    p: &Prepared,
    topology: &Topology,
) -> Result<(CaseResult, usize, crate::observe::tlib_log::Skipped), crate::observe::tlib_log::NotALog>
{
    let (events, skipped) = crate::observe::tlib_log::read(text)?;
    let count = events.len();
    let mut source = Observability::everything(&format!("T-Library events in {}", name.display()));
    source.channels = Some(
        crate::golden::channels(&p.case.parties, topology)
            .into_iter()
            .filter(|c| !matches!(c, crate::model::Channel::Wire(_)))
            .collect(),
    );
    let mut result = check_events(p, events, source);
    if !skipped.is_empty() {
        result
            .notes
            .push(format!("log {}: {skipped}", name.display()));
    }
    Ok((result, count, skipped))
}

/// Compares events already attributed to stages (a capture's, or a run's
/// `CaseResult::events`) with the case's golden stages, given the
/// deviations the target declares (those of other cases are ignored), and
/// the races its `together` stages showed ([`crate::race`]).
pub fn compare_stages(
    p: &Prepared,
    events: &[(String, Observation)],
    source: &Observability,
    deviations: &[Deviation],
) -> (Vec<crate::diff::StageResult>, Vec<crate::race::Race>) {
    let deviations: Vec<&Deviation> = deviations
        .iter()
        .filter(|d| d.applies_to(&p.case.id))
        .collect();
    let mut bindings = Bindings::default();
    let mut roles = crate::race::Roles::default();
    let mut races = Vec::new();
    let stages = p
        .case
        .stages
        .iter()
        .zip(&p.golden)
        .map(|(stage, golden)| {
            let observed: Vec<Observation> = events
                .iter()
                .filter(|(s, _)| *s == stage.name)
                .map(|(_, o)| o.clone())
                .collect();
            let (compared, race) =
                roles.compare(stage, golden, &observed, source, &mut bindings, &deviations);
            races.extend(race);
            compared
        })
        .collect();
    (stages, races)
}

/// A finished case judged again against other golden stages (`p`'s) from
/// what it observed: the same events, problems and errors, a new diff and
/// verdict. What a mutation test of the goldens runs per mutant.
pub fn rejudge(p: &Prepared, judged: &CaseResult, deviations: &[Deviation]) -> CaseResult {
    let mut r = judged.clone();
    // The races were noted when it was first judged.
    (r.stages, _) = compare_stages(p, &r.events, &r.source, deviations);
    crate::outcome::settle_verdict(&mut r);
    r
}

/// Compares a whole run's events, with no stage boundaries (a server log
/// says when, not why): each channel's expectations of every stage, in
/// order, against everything the channel received. A channel some stage
/// leaves unasserted is not compared.
pub fn check_events(p: &Prepared, observed: Vec<Observation>, source: Observability) -> CaseResult {
    use crate::golden::Expectation;
    let mut channels: Vec<(crate::model::Channel, Expectation)> = Vec::new();
    for golden in &p.golden {
        for (channel, expectation) in &golden.channels {
            let at = match channels.iter().position(|(c, _)| c == channel) {
                Some(i) => i,
                None => {
                    channels.push((channel.clone(), Expectation::Events(Vec::new())));
                    channels.len() - 1
                }
            };
            match (&mut channels[at].1, expectation) {
                (Expectation::Unasserted(_), _) => {}
                (slot, Expectation::Unasserted(why)) => {
                    *slot = Expectation::Unasserted(why.clone())
                }
                (Expectation::Events(all), Expectation::Events(more)) => {
                    all.extend(more.iter().cloned())
                }
            }
        }
    }
    let stage = compare_stage(
        "log",
        &channels,
        &observed,
        &source,
        &mut Bindings::default(),
        &[],
    );
    let mut result = CaseResult::new(&p.case.id, &p.case.title, Transport::Udp, source);
    result.stages = vec![stage];
    result.events = observed
        .into_iter()
        .map(|o| ("log".to_string(), o))
        .collect();
    crate::outcome::settle_verdict(&mut result);
    result
}

#[cfg(test)]
mod tests {
    /// An armed step is looked for after the step that follows it, whose
    /// NOTIFY its 481 answers; the others keep their order.
    #[test]
    fn an_armed_step_is_found_after_the_step_that_brings_its_notify() {
        use super::{capture_order, Action, Step};
        let step = |actor: &str, action| Step {
            actor: actor.into(),
            action,
            line: 0,
        };
        let steps = [
            step("60970", Action::RefuseNotify),
            step(
                "60970_2",
                Action::Seize {
                    index: 1,
                    expires: 15,
                },
            ),
            step("60970_2", Action::Release),
        ];
        let order: Vec<&str> = capture_order(&steps)
            .iter()
            .map(|s| crate::actions::name(&s.action))
            .collect();
        assert_eq!(order, ["seize", "refuse-notify", "release"]);
        // Last in its stage, it stays last.
        let order: Vec<&str> = capture_order(&[
            step("60970_2", Action::Release),
            step("60970", Action::RefuseNotify),
        ])
        .iter()
        .map(|s| crate::actions::name(&s.action))
        .collect();
        assert_eq!(order, ["release", "refuse-notify"]);
    }

    #[test]
    fn a_capture_is_split_by_the_line_its_messages_are_about() {
        let line = |n: usize| Identities {
            number: Some(n),
            users: [
                ("60970", format!("60970-{n}")),
                ("60970_2", format!("60970-{n}")),
                ("60972", format!("60972-{n}")),
            ]
            .into_iter()
            .map(|(d, u)| (d.to_string(), u))
            .collect(),
        };
        let packet = |from: &str, to: &str| Packet {
            time: std::time::SystemTime::UNIX_EPOCH,
            transport: crate::sip::Transport::Udp,
            src: "127.0.0.1:5070".parse().unwrap(),
            dst: "127.0.0.1:5060".parse().unwrap(),
            raw: crate::sip::build::Builder::request("OPTIONS", &format!("sip:{to}@sca.test"))
                .header("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx")
                .header("From", &format!("<sip:{from}@sca.test>;tag=1"))
                .header("To", &format!("<sip:{to}@sca.test>"))
                .header("Call-ID", "c")
                .header("CSeq", "1 OPTIONS")
                .build(),
        };
        let lines = [line(1), line(2)];
        let messages = [
            packet("60972-1", "60970-1"),
            packet("60972-2", "60970-2"),
            packet("stranger", "nobody"),
            packet("60970-1", "60972-1"),
        ];
        let capture = |messages: &[Packet]| Capture {
            packets: messages.to_vec(),
            skipped: Default::default(),
            broken: None,
        };
        let flows = capture(&messages).flows(&lines);
        let sizes: Vec<(Option<String>, usize)> = flows
            .iter()
            .map(|f| (f.key(), f.capture.packets.len()))
            .collect();
        assert_eq!(
            sizes,
            vec![(Some("line-1".into()), 2), (Some("line-2".into()), 1)]
        );
        // One line in the capture, or one in the pool: one flow, whole.
        let whole = capture(&messages[..1]).flows(&lines);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].key(), None);
        let whole = capture(&messages).flows(&lines[..1]);
        assert_eq!((whole.len(), whole[0].capture.packets.len()), (1, 4));
    }

    #[test]
    fn phones_are_listed_in_words() {
        let mut who = BTreeMap::new();
        assert!(super::phones_in_words(&who).starts_with("none: no REGISTER"));
        who.insert("127.0.0.1:25081".parse().unwrap(), "60970".to_string());
        who.insert("127.0.0.1:25085".parse().unwrap(), "60972".to_string());
        assert_eq!(
            super::phones_in_words(&who),
            "60970 at 127.0.0.1:25081, 60972 at 127.0.0.1:25085"
        );
    }

    use super::*;
    use crate::outcome::Verdict;
    use crate::sip::build::Builder;
    use std::time::UNIX_EPOCH;

    fn register(from: &str, user: &str, agent: Option<&str>) -> Packet {
        let src: SocketAddr = from.parse().unwrap();
        let mut b = Builder::request("REGISTER", "sip:sca.test")
            .header("Via", &format!("SIP/2.0/UDP {src};branch=z9hG4bK{from}"))
            .header("From", &format!("<sip:{user}@sca.test>;tag=1"))
            .header("To", &format!("<sip:{user}@sca.test>"))
            .header("Call-ID", from)
            .header("CSeq", "1 REGISTER")
            .header("Contact", &format!("<sip:{user}@{src}>"));
        if let Some(a) = agent {
            b = b.header("User-Agent", a);
        }
        Packet {
            time: UNIX_EPOCH,
            src,
            dst: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
            raw: b.build(),
        }
    }

    /// A phone's new connection, or its new edge proxy, is the phone's by
    /// the Contact its requests to the server name; the server's own
    /// requests, naming the same Contact (an INVITE it forwards), leave
    /// the server's address nobody's.
    #[test]
    fn a_phones_new_path_to_the_server_is_found_by_its_contact() {
        let topology = Topology::reference();
        let line = Identities::own(&topology);
        let invite = |src: &str, dst: &str, vias: &[&str]| {
            let mut b = Builder::request("INVITE", "sip:60970@sca.test");
            for v in vias {
                b = b.header("Via", v);
            }
            Packet {
                time: UNIX_EPOCH,
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                transport: Transport::Tcp,
                raw: b
                    .header("From", "<sip:60972@sca.test>;tag=1")
                    .header("To", "<sip:60970@sca.test>")
                    .header("Call-ID", "i")
                    .header("CSeq", "1 INVITE")
                    .header("Contact", "<sip:60972@127.0.0.1:5072;transport=tcp>")
                    .build(),
            }
        };
        let phone = "SIP/2.0/TCP 127.0.0.1:5072;branch=z9hG4bKa";
        let proxy = "SIP/2.0/UDP 127.0.0.1:43000;branch=z9hG4bKb";
        let server = "SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bKc";
        let packets = [
            register("127.0.0.1:5072", "60972", None),
            invite("127.0.0.1:41000", "127.0.0.1:5060", &[phone]),
            invite("127.0.0.1:43000", "127.0.0.1:5060", &[proxy, phone]),
            invite("127.0.0.1:5060", "127.0.0.1:5080", &[server, phone]),
        ];
        let who = endpoints(&packets, &topology, &line.users);
        let at = |a: &str| who.get(&a.parse().unwrap()).map(String::as_str);
        assert_eq!(at("127.0.0.1:41000"), Some("60972"));
        assert_eq!(at("127.0.0.1:43000"), Some("60972"));
        assert_eq!(at("127.0.0.1:5060"), None);
    }

    /// The packets of a passing live run of case `id` on the embedded
    /// server, as its capture holds them.
    fn captured(id: &str) -> (Prepared, Topology, Vec<Packet>) {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let topology = Topology::reference();
        let case =
            crate::case::Case::load(&root.join(format!("cases/{id}.toml")), &topology).unwrap();
        let p = Prepared::new(case, &root.join("fixtures/golden"), &topology).unwrap();
        let run = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(crate::run::run_case(&p, &topology, Default::default()));
        assert_eq!(run.verdict, Verdict::Pass, "{:?}", run.problems);
        let packets = crate::pcap::packets_from_records(&run.records);
        (p, topology, packets)
    }

    /// `pcap check` of those packets, as main does it.
    fn checked(p: &Prepared, topology: &Topology, packets: &[Packet]) -> CaseResult {
        let line = Identities::own(topology);
        let who = endpoints(packets, topology, &line.users);
        let recs = records(packets, &who);
        let starts = stage_starts(p, &recs, topology, &line).expect("the case's steps");
        check(p, recs, topology, &line, &starts, &[])
    }

    /// The leak check of a live run is in its capture and judged the same:
    /// idle after a passing run, the forgotten appearance after a server
    /// that keeps one.
    #[test]
    fn a_capture_holds_its_runs_leak_check() {
        let (p, topology, packets) = captured("inbound-answered");
        let clean = checked(&p, &topology, &packets);
        assert!(clean
            .stages
            .iter()
            .any(|s| s.stage == crate::leak::STAGE && s.passed()));
        let opts = crate::run::RunOptions {
            target: crate::run::Target::Embedded {
                fault: Some(crate::reference::Fault::KeepsAppearance),
                profile: None,
            },
            ..Default::default()
        };
        let run = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(crate::run::run_case(&p, &topology, opts));
        let leaky = checked(
            &p,
            &topology,
            &crate::pcap::packets_from_records(&run.records),
        );
        for r in [&run, &leaky] {
            assert_eq!(r.verdict, Verdict::Fail);
            let d = r.headline_divergence().unwrap_or_default();
            assert!(
                d.contains("leak-check") && d.contains("\"AppearanceState\": \"active\""),
                "{d}"
            );
        }
    }

    /// What a live phone objects to, a capture's phone objects to: one
    /// NOTIFY of a passing run spoiled (another dialog, a state outside
    /// the model, an index that is not a number, a Content-Length no number
    /// holds) fails the check with the problem a live run reports.
    #[test]
    fn a_capture_is_read_as_strictly_as_a_live_phone_reads() {
        let (p, topology, packets) = captured("inbound-alerting");
        let clean = checked(&p, &topology, &packets);
        assert_eq!(clean.verdict, Verdict::Pass, "{:?}", clean.problems);
        assert!(clean.problems.is_empty());
        let alerting = packets
            .iter()
            .position(|m| {
                let text = String::from_utf8_lossy(&m.raw);
                text.starts_with("NOTIFY sip:60970@") && text.contains("appearance-state=alerting")
            })
            .expect("60970 is told the call alerts");
        for (from, to, says) in [
            (
                "Call-ID: ",
                "Call-ID: x",
                "60970: NOTIFY outside our subscriptions",
            ),
            (
                "appearance-state=alerting",
                "appearance-state=ringing",
                "60970: NOTIFY with unreadable Call-Info: appearance-state \"ringing\"",
            ),
            (
                "appearance-index=1",
                "appearance-index=one",
                "60970: NOTIFY with unreadable Call-Info: appearance-index \"one\" is not a number",
            ),
            // Twenty digits before the real length.
            (
                "Content-Length: ",
                "Content-Length: 99999999999999999999",
                "unreadable Content-Length",
            ),
        ] {
            let mut spoiled = packets.clone();
            let text = String::from_utf8_lossy(&spoiled[alerting].raw).replacen(from, to, 1);
            spoiled[alerting].raw = text.into_bytes();
            let r = checked(&p, &topology, &spoiled);
            assert_eq!(r.verdict, Verdict::Fail, "{to}");
            assert!(
                r.problems.iter().any(|pr| pr.what.contains(says)
                    && pr.raw.as_deref() == Some(&spoiled[alerting].raw[..])),
                "{to}: {:#?}",
                r.problems.iter().map(|pr| &pr.what).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn phones_sharing_a_user_are_told_apart_by_user_agent_else_by_order() {
        let topology = Topology::reference();
        let kamailio: BTreeMap<String, String> =
            [("60972", "60972"), ("60970", "60970"), ("60970_2", "60970")]
                .map(|(d, u)| (d.to_string(), u.to_string()))
                .into();
        // The second phone registered first, and says so.
        let named = [
            register("127.0.0.1:7002", "60970", Some("scacheck (60970_2)")),
            register("127.0.0.1:7001", "60970", Some("scacheck (60970)")),
        ];
        let who = endpoints(&named, &topology, &kamailio);
        assert_eq!(who[&"127.0.0.1:7002".parse().unwrap()], "60970_2");
        assert_eq!(who[&"127.0.0.1:7001".parse().unwrap()], "60970");
        // Foreign phones: first to register is the first DN.
        let plain = [
            register("127.0.0.1:7002", "60970", None),
            register("127.0.0.1:7001", "60970", Some("Polycom")),
        ];
        let who = endpoints(&plain, &topology, &kamailio);
        assert_eq!(who[&"127.0.0.1:7002".parse().unwrap()], "60970");
        assert_eq!(who[&"127.0.0.1:7001".parse().unwrap()], "60970_2");
    }

    /// A loaded server may answer the last request of a stage, and send
    /// the NOTIFY it causes, later than the quiet time that begins a stage
    /// without steps: both still belong to the stage that caused them (CI
    /// saw seize-expiry's line-seize NOTIFY and 200 begin the "expired"
    /// stage over TCP).
    #[test]
    fn a_late_answer_does_not_begin_a_stage_without_steps() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let topology = Topology::reference();
        let case =
            crate::case::Case::load(&root.join("cases/seize-expiry.toml"), &topology).unwrap();
        let p = Prepared::new(case, &root.join("fixtures/golden"), &topology).unwrap();
        let run = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(crate::run::run_case(&p, &topology, Default::default()));
        assert_eq!(run.verdict, Verdict::Pass, "{:?}", run.headline());
        let mut recs = run.records.clone();
        let seize = recs
            .iter()
            .position(|r| {
                r.direction == Direction::Sent
                    && String::from_utf8_lossy(&r.raw).contains("Event: line-seize")
                    && r.raw.starts_with(b"SUBSCRIBE")
            })
            .expect("the seize");
        let answer = (seize + 1..recs.len())
            .find(|&i| recs[i].raw.starts_with(b"SIP/2.0 200") && recs[i].agent == "60970")
            .expect("its answer");
        // Everything from the answer on comes 80 ms later, and the
        // seizure's NOTIFY overtakes the answer (as CI saw over TCP): a
        // late request of the stage does not begin the next one either.
        let notify = (answer + 1..recs.len())
            .find(|&i| {
                recs[i].raw.starts_with(b"NOTIFY")
                    && String::from_utf8_lossy(&recs[i].raw).contains("Event: line-seize")
            })
            .expect("the seizure's NOTIFY");
        let overtaking = recs.remove(notify);
        recs.insert(answer, overtaking);
        for r in &mut recs[answer..] {
            r.at += Duration::from_millis(80);
        }
        let starts = stage_starts(&p, &recs, &topology, &Identities::own(&topology))
            .expect("the case's steps");
        let r = check(
            &p,
            recs,
            &topology,
            &Identities::own(&topology),
            &starts,
            &[],
        );
        assert_eq!(r.verdict, Verdict::Pass, "{:?}", r.headline());
    }
}
