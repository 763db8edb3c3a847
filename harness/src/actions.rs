//! What each phone of a capture did, in the case step vocabulary, pure:
//! records in (a capture's, with the parties' DNs as agents), steps out,
//! each with the record it was read from and the server message the phone
//! had received just before (its cause). What the phones did that the
//! vocabulary cannot say, or that cannot be read, is listed, never guessed.
//!
//! Not actions: the setup (REGISTER, each phone's first call-info
//! SUBSCRIBE), retransmissions, a request sent again after a digest
//! challenge, answers to NOTIFYs, a 487 after a CANCEL, a 482 to a phone's
//! own forked INVITE, the BYE that ends a forked answer ([`ends_fork`]),
//! taking a call over by Replaces (answered at once, the
//! replaced call ended), and scacheck's marked cleanup. A phone's last
//! unsubscribe in a capture without that mark is an action: nothing tells
//! it from a cleanup, and the server's answer to it is what it did.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::case::{Action, Index};
use crate::line::Identities;
use crate::sip::headers::{ApState, AppearanceIndex};
use crate::sip::record::{Direction, Record};
use crate::sip::sdp::HoldStyle;
use crate::sip::Message;
use crate::topology::Topology;

/// One recovered action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub actor: String,
    pub action: Action,
    /// The index of the record that shows it.
    pub at: usize,
    /// The start line of what the actor received just before, if anything.
    pub cause: Option<String>,
    /// Sent within [`RACE_WINDOW`] of the previous action, another phone's
    /// (and of the first of a group of such actions, by phones all
    /// different), and either the same action (two seizures, two answers)
    /// or by a phone the server had said nothing to since then: the phones
    /// raced, and the replay fires them together. (What the server says in
    /// the instant between two seizures sent at once, the first one's
    /// NOTIFY to the other phone, does not make the second its answer; a
    /// retrieve told `held` is another action, and is.)
    pub concurrent: bool,
    /// Marked by scacheck's phone as a step of a race.
    pub marked: bool,
}

/// How close together two phones' actions must be to be a race: a few
/// milliseconds, well under any phone's reaction to what it is told (an
/// action later than this that nothing caused is the phone's own choice).
pub const RACE_WINDOW: std::time::Duration = std::time::Duration::from_millis(20);

/// The actions of a capture, and what could not be recovered from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    pub actions: Vec<Recovered>,
    pub unrecovered: Vec<String>,
}

/// Reads the actions of `records`: the phones' own requests and answers.
pub fn recover(records: &[Record], topology: &Topology, line: &Identities) -> Recovery {
    let dn_of = line.dn_of_user(topology);
    let mut out = Recovery::default();
    // Messages seen, by a hash of their bytes (with the phone's DN for its
    // own): a copy of every message would double a capture's memory.
    let mut seen: HashSet<u64> = HashSet::new();
    // (agent, Call-ID, method) of requests already read, with the CSeq of
    // the latest: one sent again after its challenge is the same action.
    let mut latest: HashMap<(String, String, String), u32> = HashMap::new();
    let mut challenged: HashSet<(String, u32)> = HashSet::new();
    let mut subscribed: HashSet<String> = HashSet::new();
    // The paths (local and peer address) each phone's requests took: a
    // fresh subscription by a new one over UDP is a move to another edge
    // proxy (a reroute), by a known one a reboot's.
    let mut paths: HashMap<String, HashSet<(std::net::SocketAddr, std::net::SocketAddr)>> =
        HashMap::new();
    let mut incoming: HashSet<(String, String)> = HashSet::new();
    let mut cancelled: HashSet<(String, String)> = HashSet::new();
    let mut answered: HashSet<(String, String)> = HashSet::new();
    // Calls a phone takes over or gives up by itself: an INVITE with
    // Replaces (RFC 3891) is answered at once and the call it names ended
    // with a BYE, as scacheck's phones and real ones do.
    let mut replacing: HashSet<(String, String)> = HashSet::new();
    let mut replaced: HashSet<(String, String)> = HashSet::new();
    // What each phone was last told of each appearance.
    let mut told: HashMap<String, BTreeMap<u32, ApState>> = HashMap::new();
    let mut cause: HashMap<String, String> = HashMap::new();
    // The phones of the latest group of concurrent actions, and those the
    // server has said anything to since it began.
    let mut racing: Vec<String> = Vec::new();
    let mut heard: HashSet<String> = HashSet::new();
    for (at, rec) in records.iter().enumerate() {
        if !topology.knows(&rec.agent) || rec.problem.is_some() {
            continue;
        }
        let Ok(msg) = rec.message() else {
            out.unrecovered
                .push(format!("record #{at} of {}: not a SIP message", rec.agent));
            continue;
        };
        let agent = rec.agent.clone();
        let call_id = msg.call_id().to_string();
        if rec.direction == Direction::Received {
            if !seen.insert(digest(&[&rec.raw])) {
                continue;
            }
            heard.insert(agent.clone());
            if matches!(msg.status(), Some(401 | 407)) {
                if let Some((n, _)) = msg.cseq() {
                    challenged.insert((call_id.clone(), n));
                }
            }
            match msg.method().as_deref() {
                Some("INVITE") if msg.to_tag().is_none() => {
                    incoming.insert((agent.clone(), call_id.clone()));
                    if let Some(old) = msg.header("Replaces").and_then(|r| r.split(';').next()) {
                        replacing.insert((agent.clone(), call_id.clone()));
                        replaced.insert((agent.clone(), old.trim().to_string()));
                    }
                }
                Some("CANCEL") => {
                    cancelled.insert((agent.clone(), call_id.clone()));
                }
                Some("NOTIFY") => {
                    if let Ok(aps) = msg.appearances() {
                        let mine = told.entry(agent.clone()).or_default();
                        for ap in aps {
                            if let (AppearanceIndex::Index(i), Some(state)) = (ap.index, ap.state) {
                                mine.insert(i, state);
                            }
                        }
                    }
                }
                _ => {}
            }
            cause.insert(agent, msg.start_line().to_string());
            continue;
        }
        // Sent by the phone: its own bytes again are a retransmission.
        if !seen.insert(digest(&[agent.as_bytes(), &rec.raw])) {
            continue;
        }
        if crate::ua::agent::is_marked(&rec.raw, crate::ua::agent::TEARDOWN_HEADER) {
            continue;
        }
        // Said, not guessed: an ACK after the 2xx came again is a lost (or
        // withheld) first ACK, which a lose-ack step arms and a capture
        // cannot tell from the network's loss.
        if msg.is("ACK") && acked_late(records, at, msg) {
            out.unrecovered.push(format!(
                "{agent}'s ACK (record {at}) follows its 2xx received again: the first ACK was lost; lose-ack is not recovered from captures"
            ));
        }
        let found = if msg.is_request() {
            let method = msg.method().unwrap_or_default();
            let cseq = msg.cseq().map_or(0, |(n, _)| n);
            let key = (agent.clone(), call_id.clone(), method.clone());
            let again = latest
                .insert(key, cseq)
                .is_some_and(|before| challenged.contains(&(call_id.clone(), before)));
            if again || (method == "BYE" && replaced.contains(&(agent.clone(), call_id.clone()))) {
                continue;
            }
            let taken = paths.entry(agent.clone()).or_default();
            let new_path = takes_new_path(rec, taken.iter().copied());
            taken.insert((rec.local, rec.peer));
            let mut ctx = Context {
                dn_of: &dn_of,
                topology,
                subscribed: &mut subscribed,
                unrecovered: &mut out.unrecovered,
                fork_ended: method == "BYE" && ends_fork(records, at, msg),
                new_path,
            };
            request_action(msg, &agent, told.get(&agent), at, &mut ctx)
        } else {
            let key = (agent.clone(), call_id.clone());
            match (msg.status(), msg.cseq()) {
                (Some(code), Some((_, "INVITE")))
                    if incoming.contains(&key) && code >= 200 && answered.insert(key.clone()) =>
                {
                    match code {
                        200..=299 if replacing.contains(&key) => None,
                        200..=299 => Some(Action::Answer),
                        // The answer to a CANCEL, and a phone refusing its
                        // own INVITE forked back to it, are not choices.
                        487 if cancelled.contains(&key) => None,
                        482 => None,
                        300..=699 => Some(Action::Refuse { code }),
                        _ => None,
                    }
                }
                // Said, not guessed: a refuse-notify step is armed before
                // the step whose NOTIFY it refuses, which a capture shows
                // only after it.
                (Some(481), Some((_, "NOTIFY"))) => {
                    out.unrecovered.push(format!(
                        "{agent} answers a NOTIFY with 481 (record {at}): refuse-notify is not recovered from captures"
                    ));
                    None
                }
                _ => None,
            }
        };
        if let Some(action) = found {
            let previous = out.actions.last();
            let soon = previous.is_some_and(|a: &Recovered| {
                rec.at
                    .duration_since(records[a.at].at)
                    .is_ok_and(|gap| gap <= RACE_WINDOW)
            });
            let same = previous.is_some_and(|a| name(&a.action) == name(&action));
            // scacheck's phones mark a race's steps: so read, whatever
            // the timing of a loaded machine.
            let together = crate::ua::agent::is_marked(&rec.raw, crate::ua::agent::TOGETHER_HEADER);
            let marked_race = together && previous.is_some_and(|a| a.marked);
            let concurrent = !racing.is_empty()
                && !racing.contains(&agent)
                && (marked_race || (soon && (same || !heard.contains(&agent))));
            if !concurrent {
                racing.clear();
                heard.clear();
            }
            racing.push(agent.clone());
            out.actions.push(Recovered {
                actor: agent.clone(),
                action,
                at,
                cause: cause.get(&agent).cloned(),
                concurrent,
                marked: together,
            });
        }
    }
    out
}

/// Does the phone's request `rec` go over UDP by a path (local and peer
/// address) none of its requests took before (`taken`, not empty)? A
/// fresh subscription so sent is a move to another edge proxy: the
/// reroute, whether seen at the phone (a new peer) or at the server (a
/// new source). One rule for recovery and for finding a step.
pub fn takes_new_path(
    rec: &Record,
    taken: impl IntoIterator<Item = (std::net::SocketAddr, std::net::SocketAddr)>,
) -> bool {
    let mut taken = taken.into_iter().peekable();
    rec.transport == crate::sip::Transport::Udp
        && taken.peek().is_some()
        && taken.all(|p| p != (rec.local, rec.peer))
}

/// What reading a phone's request needs beyond the request.
struct Context<'a> {
    dn_of: &'a BTreeMap<String, String>,
    topology: &'a Topology,
    /// The phones whose setup subscription has been read.
    subscribed: &'a mut HashSet<String>,
    unrecovered: &'a mut Vec<String>,
    /// The request is a BYE that ends a forked dialog ([`ends_fork`]).
    fork_ended: bool,
    /// It took a path (local and peer address, over UDP) none of the
    /// phone's requests took before.
    new_path: bool,
}

/// The action a request the phone sent shows, if it shows one.
fn request_action(
    msg: &Message,
    agent: &str,
    told: Option<&BTreeMap<u32, ApState>>,
    at: usize,
    ctx: &mut Context,
) -> Option<Action> {
    let Context {
        dn_of,
        topology,
        subscribed,
        unrecovered,
        fork_ended,
        new_path,
    } = ctx;
    let method = msg.method().unwrap_or_default();
    let initial = msg.to_tag().is_none();
    let index = || {
        msg.appearances().ok().and_then(|aps| {
            aps.iter().find_map(|a| match a.index {
                AppearanceIndex::Index(i) => Some(i),
                AppearanceIndex::All => None,
            })
        })
    };
    let expires = msg
        .header("Expires")
        .and_then(|e| e.trim().parse::<u32>().ok());
    let package = msg
        .header("Event")
        .and_then(crate::sip::headers::EventHeader::parse)
        .map(|e| e.package);
    let not_said = |what: &str| format!("record #{at}: {agent} {what}: no step says it");
    match (method.as_str(), initial) {
        ("REGISTER", _) => None,
        ("INVITE", true) => {
            let to = msg.to().and_then(|t| t.user().map(str::to_string))?;
            let to_dn = dn_of.get(&to).cloned().unwrap_or(to);
            let own_line = topology.line_of(agent).is_some_and(|l| l.number == to_dn);
            if !own_line {
                return Some(Action::Call { to: to_dn });
            }
            // An INVITE to the phone's own line: a retrieve of a held
            // appearance, a barge-in on an active one.
            let Some(i) = index() else {
                unrecovered.push(not_said("invites its own line without an appearance"));
                return None;
            };
            // Told nothing of it: idle, and the INVITE a retrieve of an
            // idle appearance (which a server refuses).
            // Bound to what the line told the phone, not to the number:
            // a server may put the call on another appearance.
            match told.and_then(|t| t.get(&i)).copied() {
                None | Some(ApState::Idle) => Some(Action::Retrieve {
                    index: Index::Number(i),
                }),
                Some(state @ (ApState::Held | ApState::HeldPrivate)) => Some(Action::Retrieve {
                    index: Index::Told(state),
                }),
                Some(state) => Some(Action::Barge {
                    index: Index::Told(state),
                }),
            }
        }
        ("INVITE" | "UPDATE", false) => {
            if let Some(style) = HoldStyle::of(&method, msg.body()) {
                let private = msg
                    .headers("Call-Info")
                    .any(|v| v.to_ascii_lowercase().contains("held-private"));
                Some(Action::Hold { private, style })
            } else {
                unrecovered.push(not_said("resumes its own held call"));
                None
            }
        }
        ("BYE", _) if *fork_ended => None,
        ("BYE", _) => Some(Action::Hangup),
        ("CANCEL", _) => Some(Action::Cancel),
        ("SUBSCRIBE", true) if package.as_deref() == Some("line-seize") => {
            match (index(), expires) {
                (Some(index), Some(e)) if e > 0 => Some(Action::Seize { index, expires: e }),
                (Some(index), None) => Some(Action::Seize {
                    index,
                    expires: crate::case::DEFAULT_SEIZE_EXPIRES,
                }),
                _ => {
                    unrecovered.push(not_said("seizes no numbered appearance"));
                    None
                }
            }
        }
        ("SUBSCRIBE", true) if package.as_deref() == Some("call-info") => {
            if subscribed.insert(agent.to_string()) {
                None // the setup's subscription
            } else if *new_path {
                // The same, by another edge proxy.
                Some(Action::Reroute)
            } else {
                // A new dialog with no unsubscribe first: a reboot's.
                Some(Action::Resubscribe)
            }
        }
        ("SUBSCRIBE", false) if package.as_deref() == Some("call-info") => match expires {
            Some(0) => Some(Action::Unsubscribe),
            _ => Some(Action::Refresh),
        },
        ("SUBSCRIBE", false) if package.as_deref() == Some("line-seize") => {
            if expires == Some(0) {
                Some(Action::Release)
            } else {
                unrecovered.push(not_said("refreshes its seizure"));
                None
            }
        }
        ("ACK", _) | ("PRACK", _) => None,
        (other, _) => {
            unrecovered.push(not_said(&format!("sends {other}")));
            None
        }
    }
}

/// Is the ACK of record `i` its phone's first for a 2xx the phone had
/// received twice or more (the 2xx sent again because no ACK came: the
/// first one was lost, or never sent)?
pub fn acked_late(records: &[Record], i: usize, ack: &Message) -> bool {
    let (agent, call_id, cseq) = (&records[i].agent, ack.call_id(), ack.cseq().map(|(n, _)| n));
    let mut answers = 0;
    for rec in records[..i].iter().rev().filter(|r| &r.agent == agent) {
        let sent_ack = rec.direction == Direction::Sent && rec.raw.starts_with(b"ACK ");
        let got_2xx = rec.direction == Direction::Received && rec.raw.starts_with(b"SIP/2.0 2");
        if !sent_ack && !got_2xx {
            continue;
        }
        let Ok(msg) = rec.message() else { continue };
        // Another dialog's 2xx (a forked answer) is no resend of this one.
        if msg.call_id() != call_id
            || msg.cseq().map(|(n, _)| n) != cseq
            || msg.dialog_tags() != ack.dialog_tags()
        {
            continue;
        }
        if sent_ack {
            return false;
        }
        if msg.cseq().is_some_and(|(_, m)| m == "INVITE") {
            answers += 1;
        }
    }
    answers >= 2
}

/// Is the BYE of record `i` its phone's end of a forked dialog: sent in
/// another dialog of its call than the one the first 2xx to its INVITE
/// established? A caller that two phones answered ACKs the second answer
/// and ends that dialog at once (RFC 3261 13.2.2.4): no choice of its own,
/// and not the hangup of the call. Looks back only to the call's INVITE.
pub fn ends_fork(records: &[Record], i: usize, bye: &Message) -> bool {
    let (agent, call_id) = (&records[i].agent, bye.call_id());
    let mut first = None;
    for rec in records[..i].iter().rev().filter(|r| &r.agent == agent) {
        let invite = rec.direction == Direction::Sent && rec.raw.starts_with(b"INVITE ");
        let answer = rec.direction == Direction::Received && rec.raw.starts_with(b"SIP/2.0 2");
        if !invite && !answer {
            continue;
        }
        let Ok(msg) = rec.message() else { continue };
        if msg.call_id() != call_id {
            continue;
        }
        if invite && msg.to_tag().is_none() {
            break;
        }
        if answer && msg.cseq().is_some_and(|(_, m)| m == "INVITE") {
            // Looking back: the last one found is the first answer.
            first = msg.dialog_tags();
        }
    }
    first.is_some_and(|tags| Some(tags) != bye.dialog_tags())
}

/// The name a step's action has in a case file.
pub fn name(a: &Action) -> &'static str {
    match a {
        Action::Call { .. } => "call",
        Action::Answer => "answer",
        Action::Refuse { .. } => "refuse",
        Action::Hangup => "hangup",
        Action::Cancel => "cancel",
        Action::Seize { .. } => "seize",
        Action::Release => "release",
        Action::Hold { .. } => "hold",
        Action::Retrieve { .. } => "retrieve",
        Action::Barge { .. } => "barge",
        Action::Refresh => "refresh",
        Action::Unsubscribe => "unsubscribe",
        Action::Resubscribe => "resubscribe",
        Action::RefuseNotify => "refuse-notify",
        Action::LoseAck => "lose-ack",
        Action::CloseConnection => "close-connection",
        Action::Reroute => "reroute",
    }
}

/// A hash of byte strings, for telling a retransmission from a new message.
fn digest(parts: &[&[u8]]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}
