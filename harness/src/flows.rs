//! A capture split into flows as it is read, so that a busy system's file
//! (a hundred lines, a million messages) is judged flow by flow with only
//! the live flows in memory.
//!
//! The rule, for a target whose pool has several lines:
//! - **By line.** A message belongs to the line of the pool one of whose
//!   SIP users is in its From, To or Request-URI (the first found, in that
//!   order); a message of no line goes nowhere.
//! - **By registration lifetime, within a line.** A line's flow begins
//!   with its first message, and a new one begins at a REGISTER (not an
//!   unregistration) of one of its users once every phone that registered
//!   in the current flow has unregistered (a REGISTER with `Expires: 0`,
//!   or every Contact `expires=0`, from the same address, or for the same
//!   user with the registration's Call-ID: over TCP a phone whose
//!   connection closed unregisters from another port): what a scacheck
//!   run shows as one case (registrations, subscriptions, the calls, the
//!   teardown that ends them and the leak check's probes after it) is one
//!   flow, and the next run on the line is the next. Refreshing a
//!   registration does not begin a flow.
//! - **Closing.** A flow closes when the next one of its line begins, when
//!   its phones have all unregistered and its line has been silent for
//!   [`LINGER`] of capture time (longer than any stage waits), or at the
//!   end of the file. A closed flow is handed over and forgotten.
//! - **One flow in all.** While the capture has shown one line, in one
//!   flow, everything is kept as it came (messages of no line too); if it
//!   ends so, it is one flow of no line, judged whole as a small capture
//!   always was. The first message of a second line, or the second flow of
//!   the first, splits it: the messages of no line are dropped then.
//!
//! - **By call and seizure lifetime, where nothing registers.** A line's
//!   flow in which no phone registers (a field capture: the phones
//!   registered before it began) is busy while a call of the line's or a
//!   seizure is open: an INVITE that opens a dialog until its BYE or a
//!   final failure sent back to whoever sent it; a line-seize SUBSCRIBE
//!   until its release, its refusal, a terminating NOTIFY or its Expires
//!   (a server that never says it expired does not keep the line busy for
//!   ever). Once it has been busy and is idle again, the next dialog
//!   opened (an INVITE or a seizure) begins the line's next flow, and the
//!   one done closes as a registered one does (after [`LINGER`] of
//!   silence, or when the next begins). Each later flow begins with the
//!   line phones' latest call-info SUBSCRIBE (and its 2xx) from before
//!   it, so that their NOTIFYs are read as of their subscription, as the
//!   phones read them: a flow is judged alone.
//!
//! A line with no registration, call or seizure, or whose phones never
//! unregister, is one flow to the end of the file.
//!
//! Only the start line and the From, To, Call-ID, CSeq, Event, Expires,
//! Subscription-State and Contact headers are looked at ([`Peek`]), not a
//! full parse.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::line::Identities;
use crate::pcap::Packet;

/// How long a line whose phones have all unregistered stays silent before
/// its flow is closed (no stage waits longer: see `check::STAGE_WAIT`).
pub const LINGER: Duration = Duration::from_secs(5);

/// What the splitter reads of a message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Peek<'a> {
    pub request_user: Option<&'a str>,
    pub from_user: Option<&'a str>,
    pub to_user: Option<&'a str>,
    /// A REGISTER request: Some(true) if it registers, Some(false) if it
    /// unregisters.
    pub registers: Option<bool>,
    /// The request's method, or None for a response.
    pub method: Option<&'a str>,
    /// The response's status, or None for a request.
    pub status: Option<u16>,
    pub call_id: Option<&'a str>,
    pub cseq_method: Option<&'a str>,
    /// The Event header's package (no parameters).
    pub event: Option<&'a str>,
    pub expires: Option<u32>,
    /// Whether To has a tag (the request is within a dialog).
    pub to_tag: bool,
    /// Subscription-State: terminated.
    pub terminated: bool,
}

/// The user part of the first SIP URI in `value`.
fn uri_user(value: &str) -> Option<&str> {
    let at = value
        .find("sip:")
        .map(|i| i + 4)
        .or_else(|| value.find("sips:").map(|i| i + 5))?;
    let rest = &value[at..];
    let end = rest.find(['@', ';', '>', ' ', '?', ':'])?;
    (rest.as_bytes().get(end) == Some(&b'@') && end > 0).then(|| &rest[..end])
}

impl<'a> Peek<'a> {
    /// Reads the start line and the headers up to the body; None for what
    /// is not text.
    pub fn of(raw: &'a [u8]) -> Option<Peek<'a>> {
        let end = crate::sip::find_crlf_crlf(raw).unwrap_or(raw.len());
        let head = std::str::from_utf8(&raw[..end]).ok()?;
        // The lines between CRLFs (as `head.split("\r\n")`).
        let mut at = 0;
        let mut lines = std::iter::from_fn(|| {
            let rest = head.get(at..)?;
            match crate::sip::find_crlf(rest.as_bytes()) {
                Some(i) => {
                    at += i + 2;
                    Some(&rest[..i])
                }
                None => {
                    at = head.len() + 1;
                    Some(rest)
                }
            }
        });
        let start = lines.next()?;
        let mut peek = Peek::default();
        let register = start.starts_with("REGISTER ");
        if start.starts_with("SIP/") {
            peek.status = start.split(' ').nth(1).and_then(|s| s.parse().ok());
        } else {
            let mut words = start.split(' ');
            peek.method = words.next();
            peek.request_user = words.next().and_then(uri_user);
        }
        let (mut expires_zero, mut contacts, mut contacts_zero) = (false, 0, 0);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            // Compact forms as the codec reads them (one table).
            match crate::sip::codec::known_name(name.trim()) {
                Some("From") => peek.from_user = uri_user(value),
                Some("To") => {
                    peek.to_user = uri_user(value);
                    peek.to_tag = value
                        .split(';')
                        .skip(1)
                        .any(|p| p.trim().to_ascii_lowercase().starts_with("tag="));
                }
                Some("Call-ID") => peek.call_id = Some(value.trim()),
                Some("CSeq") => peek.cseq_method = value.split_whitespace().nth(1),
                Some("Event") => peek.event = value.split(';').next().map(str::trim),
                Some("Subscription-State") => {
                    peek.terminated = value
                        .trim()
                        .get(..10)
                        .is_some_and(|v| v.eq_ignore_ascii_case("terminated"));
                }
                Some("Expires") => {
                    peek.expires = value.trim().parse().ok();
                    expires_zero = value.trim() == "0";
                }
                Some("Contact") if register => {
                    for c in value.split(',') {
                        contacts += 1;
                        let lower = c.to_ascii_lowercase();
                        if lower.trim() == "*" || lower.replace(' ', "").contains(";expires=0") {
                            contacts_zero += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        if register {
            let unregisters = expires_zero || (contacts > 0 && contacts_zero == contacts);
            peek.registers = Some(!unregisters);
        }
        Some(peek)
    }

    /// Whether it opens a call or a seizure (an initial INVITE, or an
    /// initial line-seize SUBSCRIBE that is not a release).
    fn opens(&self) -> bool {
        !self.to_tag
            && match self.method {
                Some("INVITE") => true,
                Some("SUBSCRIBE") => self.event == Some("line-seize") && self.expires != Some(0),
                _ => false,
            }
    }

    fn users(&self) -> impl Iterator<Item = &'a str> {
        [self.from_user, self.to_user, self.request_user]
            .into_iter()
            .flatten()
    }
}

/// A flow handed over.
#[derive(Debug)]
pub enum Flow {
    /// The whole capture, of one line or none: judged as it always was.
    Whole(Vec<Packet>),
    /// Flow `nth` (from 1) of line `line` (an index into the pool).
    Line {
        line: usize,
        nth: usize,
        packets: Vec<Packet>,
    },
}

/// A call or a seizure a flow has open, by Call-ID.
#[derive(Debug)]
enum Open {
    /// An INVITE dialog, opened by `by`.
    Call { by: SocketAddr },
    /// A line-seize subscription of `by`, good until `until` (None: past
    /// any time a capture can name).
    Seize {
        by: SocketAddr,
        until: Option<SystemTime>,
    },
}

/// How long past its Expires a seizure nobody ended is still taken as
/// open: the server's NOTIFY of its end may be a little late.
const SEIZE_SLACK: Duration = Duration::from_secs(2);

/// A seizure's Expires when its SUBSCRIBE gives none.
const SEIZE_DEFAULT: Duration = Duration::from_secs(60);

/// A phone's registration as a flow knows it.
#[derive(Debug, PartialEq, Eq)]
struct Registration {
    src: SocketAddr,
    user: Option<String>,
    call_id: Option<String>,
}

impl Registration {
    fn of(peek: &Peek, p: &Packet) -> Registration {
        Registration {
            src: p.src,
            user: peek.to_user.map(str::to_string),
            call_id: peek.call_id.map(str::to_string),
        }
    }

    /// Does `other` (an unregistration) end this one?
    fn ended_by(&self, other: &Registration) -> bool {
        self.src == other.src
            || (self.user.is_some()
                && self.call_id.is_some()
                && self.user == other.user
                && self.call_id == other.call_id)
    }
}

/// A line's live flow.
#[derive(Default)]
struct Live {
    packets: Vec<Packet>,
    nth: usize,
    /// Who registered in it and has not unregistered: each phone by its
    /// address and its registration (To user, Call-ID).
    registered: Vec<Registration>,
    /// Did anyone register in it?
    had_registration: bool,
    /// Calls and seizures open now.
    open: HashMap<String, Open>,
    /// Has a call or seizure been open in it?
    was_busy: bool,
    last: Option<SystemTime>,
}

impl Live {
    /// Whether it is done: everyone who registered has unregistered, or,
    /// where nobody registered, it has been busy and is idle again.
    fn ended(&mut self, now: SystemTime) -> bool {
        if self.had_registration {
            return self.registered.is_empty();
        }
        self.open.retain(|_, o| match o {
            Open::Seize { until, .. } => until.is_none_or(|u| u > now),
            Open::Call { .. } => true,
        });
        self.was_busy && self.open.is_empty()
    }

    /// Follows the calls and seizures `peek` opens and ends.
    fn track(&mut self, peek: &Peek, p: &Packet) {
        let Some(call_id) = peek.call_id else {
            return;
        };
        if peek.opens() {
            let open = match peek.method {
                Some("INVITE") => Open::Call { by: p.src },
                _ => Open::Seize {
                    by: p.src,
                    // (A capture's time and Expires are any numbers: no
                    // overflow, a seizure that never lapses instead.)
                    until: p.time.checked_add(
                        peek.expires
                            .map_or(SEIZE_DEFAULT, |e| Duration::from_secs(e.into()))
                            + SEIZE_SLACK,
                    ),
                },
            };
            // A forked or proxied copy keeps who sent it first.
            self.open.entry(call_id.to_string()).or_insert(open);
            self.was_busy = true;
            return;
        }
        let seizure = peek.event == Some("line-seize");
        let ends = match (peek.method, peek.status) {
            (Some("BYE"), _) => true,
            (Some("SUBSCRIBE"), _) => seizure && peek.expires == Some(0),
            (Some("NOTIFY"), _) => seizure && peek.terminated,
            // A final failure sent back to whoever opened it.
            (None, Some(status)) if status >= 300 => match self.open.get(call_id) {
                Some(Open::Call { by }) => peek.cseq_method == Some("INVITE") && *by == p.dst,
                Some(Open::Seize { by, .. }) => {
                    peek.cseq_method == Some("SUBSCRIBE") && *by == p.dst
                }
                None => false,
            },
            _ => false,
        };
        if ends {
            self.open.remove(call_id);
        }
    }
}

/// A line phone's call-info subscription as the capture last showed it
/// made: its initial SUBSCRIBE and the 2xx to it.
struct Subscribed {
    call_id: String,
    packets: Vec<Packet>,
}

/// Keeps a line phone's latest call-info subscription: an initial
/// SUBSCRIBE replaces the one before, its 2xx joins it, an unsubscribe
/// forgets it.
fn remember_subscription(subs: &mut HashMap<SocketAddr, Subscribed>, peek: &Peek, p: &Packet) {
    let Some(call_id) = peek.call_id else {
        return;
    };
    match (peek.method, peek.status) {
        (Some("SUBSCRIBE"), _) if peek.event == Some("call-info") => {
            if peek.expires == Some(0) {
                if subs.get(&p.src).is_some_and(|s| s.call_id == call_id) {
                    subs.remove(&p.src);
                }
            } else if !peek.to_tag {
                subs.insert(
                    p.src,
                    Subscribed {
                        call_id: call_id.to_string(),
                        packets: vec![p.clone()],
                    },
                );
            }
        }
        (None, Some(200..=299)) if peek.cseq_method == Some("SUBSCRIBE") => {
            if let Some(s) = subs.get_mut(&p.dst) {
                if s.call_id == call_id && s.packets.len() == 1 {
                    s.packets.push(p.clone());
                }
            }
        }
        _ => {}
    }
}

/// Splits messages into flows as they come ([`Splitter::push`]).
pub struct Splitter {
    owner: HashMap<String, usize>,
    lines: usize,
    live: HashMap<usize, Live>,
    /// Everything so far, while there is one flow in all.
    whole: Option<Vec<Packet>>,
    /// Flows begun per line (closed or live).
    begun: HashMap<usize, usize>,
    /// Per line, each subscriber's (by address) latest call-info
    /// subscription: what a flow begun by a call starts from.
    subscribed: HashMap<usize, HashMap<SocketAddr, Subscribed>>,
    last_sweep: Option<SystemTime>,
}

impl Splitter {
    pub fn new(lines: &[Identities]) -> Splitter {
        let mut owner = HashMap::new();
        for (i, l) in lines.iter().enumerate() {
            for user in l.users.values() {
                owner.entry(user.clone()).or_insert(i);
            }
        }
        Splitter {
            owner,
            lines: lines.len(),
            live: HashMap::new(),
            whole: Some(Vec::new()),
            begun: HashMap::new(),
            subscribed: HashMap::new(),
            last_sweep: None,
        }
    }

    /// How many lines' flows are live now.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// One more message; the flows it closed, if any.
    pub fn push(&mut self, p: Packet) -> Vec<Flow> {
        let mut closed = Vec::new();
        if self.lines < 2 {
            self.whole.get_or_insert_with(Vec::new).push(p);
            return closed;
        }
        let peek = Peek::of(&p.raw);
        let line = peek
            .as_ref()
            .and_then(|peek| peek.users().find_map(|u| self.owner.get(u).copied()));
        let time = p.time;
        if let (Some(i), Some(peek)) = (line, peek) {
            let registers = peek.registers;
            let (registered, called) = match self.live.get_mut(&i) {
                Some(l) => {
                    let ended = l.ended(time);
                    (
                        registers == Some(true) && ended,
                        !l.had_registration && ended && peek.opens(),
                    )
                }
                None => (false, false),
            };
            let begins = registered || called;
            let second_line =
                self.whole.is_some() && !self.live.is_empty() && !self.live.contains_key(&i);
            if self.whole.is_some() && (begins || second_line) {
                self.split_whole();
            }
            if begins {
                if let Some(done) = self.live.remove(&i) {
                    closed.push(Flow::Line {
                        line: i,
                        nth: done.nth,
                        packets: done.packets,
                    });
                }
            }
            let begun = &mut self.begun;
            let live = self.live.entry(i).or_insert_with(|| {
                let n = begun.entry(i).or_default();
                *n += 1;
                Live {
                    nth: *n,
                    ..Live::default()
                }
            });
            if called {
                let mut prelude: Vec<Packet> = self
                    .subscribed
                    .get(&i)
                    .into_iter()
                    .flat_map(|subs| subs.values())
                    .flat_map(|s| s.packets.iter().cloned())
                    .collect();
                prelude.sort_by_key(|p| p.time);
                live.packets = prelude;
            }
            match registers {
                Some(true) => {
                    let r = Registration::of(&peek, &p);
                    // Bounded by the flow's phones: a refresh is no one new.
                    if !live.registered.contains(&r) {
                        live.registered.push(r);
                    }
                    live.had_registration = true;
                }
                Some(false) => {
                    let gone = Registration::of(&peek, &p);
                    live.registered.retain(|r| !r.ended_by(&gone));
                }
                None => {}
            }
            live.track(&peek, &p);
            live.last = Some(time);
            let subs = self.subscribed.entry(i).or_default();
            remember_subscription(subs, &peek, &p);
            match &mut self.whole {
                Some(all) => all.push(p),
                None => live.packets.push(p),
            }
        } else if let Some(all) = &mut self.whole {
            all.push(p);
        }
        // Once a second of capture time: close the lines done and silent.
        if self.whole.is_none()
            && self.last_sweep.is_none_or(|s| {
                time.duration_since(s).unwrap_or_default() >= Duration::from_secs(1)
            })
        {
            self.last_sweep = Some(time);
            let done: Vec<usize> = self
                .live
                .iter_mut()
                .filter_map(|(i, l)| {
                    (l.ended(time)
                        && l.last
                            .is_some_and(|t| time.duration_since(t).unwrap_or_default() >= LINGER))
                    .then_some(*i)
                })
                .collect();
            for i in done {
                if let Some(l) = self.live.remove(&i) {
                    closed.push(Flow::Line {
                        line: i,
                        nth: l.nth,
                        packets: l.packets,
                    });
                }
            }
        }
        closed
    }

    /// The one flow so far becomes its line's, without the messages of no
    /// line.
    fn split_whole(&mut self) {
        let Some(all) = self.whole.take() else {
            return;
        };
        let Some((&i, _)) = self.live.iter().next() else {
            return;
        };
        let owner = &self.owner;
        let kept: Vec<Packet> = all
            .into_iter()
            .filter(|p| {
                Peek::of(&p.raw).is_some_and(|peek| peek.users().any(|u| owner.get(u) == Some(&i)))
            })
            .collect();
        if let Some(l) = self.live.get_mut(&i) {
            l.packets = kept;
        }
    }

    /// The end of the capture: every flow still live, by line and then
    /// flow.
    pub fn finish(mut self) -> Vec<Flow> {
        if let Some(all) = self.whole.take() {
            return vec![Flow::Whole(all)];
        }
        let mut left: Vec<(usize, Live)> = self.live.drain().collect();
        left.sort_by_key(|(i, _)| *i);
        left.into_iter()
            .map(|(line, l)| Flow::Line {
                line,
                nth: l.nth,
                packets: l.packets,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::build::Builder;
    use std::time::UNIX_EPOCH;

    fn line(n: usize) -> Identities {
        Identities {
            number: Some(n),
            users: [
                ("60970", format!("60970-{n}")),
                ("60970_2", format!("60970-{n}")),
                ("60972", format!("60972-{n}")),
            ]
            .into_iter()
            .map(|(d, u)| (d.to_string(), u))
            .collect(),
        }
    }

    fn message(
        method: &str,
        from: &str,
        to: &str,
        src: &str,
        expires: Option<&str>,
        ms: u64,
    ) -> Packet {
        let mut b = Builder::request(method, &format!("sip:{to}@sca.test"))
            .header("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx")
            .header("From", &format!("<sip:{from}@sca.test>;tag=1"))
            .header("To", &format!("<sip:{to}@sca.test>"))
            .header("Call-ID", "c")
            .header("CSeq", &format!("1 {method}"));
        if let Some(e) = expires {
            b = b.header("Expires", e);
        }
        Packet {
            time: UNIX_EPOCH + Duration::from_millis(ms),
            transport: crate::sip::Transport::Udp,
            src: src.parse().unwrap(),
            dst: "127.0.0.1:5060".parse().unwrap(),
            raw: b.build(),
        }
    }

    fn sizes(flows: &[Flow]) -> Vec<(usize, usize, usize)> {
        flows
            .iter()
            .map(|f| match f {
                Flow::Whole(p) => (0, 0, p.len()),
                Flow::Line { line, nth, packets } => (line + 1, *nth, packets.len()),
            })
            .collect()
    }

    #[test]
    fn the_splitter_peeks_at_users_and_registrations() {
        let m = message(
            "REGISTER",
            "60970-3",
            "60970-3",
            "127.0.0.1:1",
            Some("0"),
            0,
        );
        let p = Peek::of(&m.raw).unwrap();
        assert_eq!(p.from_user, Some("60970-3"));
        assert_eq!(p.request_user, Some("60970-3"));
        assert_eq!(p.registers, Some(false));
        let m = message(
            "REGISTER",
            "60970-3",
            "60970-3",
            "127.0.0.1:1",
            Some("3600"),
            0,
        );
        assert_eq!(Peek::of(&m.raw).unwrap().registers, Some(true));
        let m = message("INVITE", "60972-3", "60970-3", "127.0.0.1:1", None, 0);
        assert_eq!(Peek::of(&m.raw).unwrap().registers, None);
        assert_eq!(uri_user("<sip:sca.test>;x"), None);
        assert_eq!(uri_user("\"A\" <sips:bob@h>"), Some("bob"));
    }

    /// Line 1 runs twice (registered, a call, unregistered; registered
    /// again), line 2 once between: three flows, line 1's first handed
    /// over as its second begins, a message of no line dropped.
    #[test]
    fn a_line_is_split_by_its_registration_lifetimes() {
        let (closed, s) = pushed_on_lines_1_and_2([
            reg("60970-1", "10.0.0.1:1", "3600", 0),
            reg("60972-1", "10.0.0.2:1", "3600", 1),
            message("OPTIONS", "stranger", "nobody", "10.9.9.9:1", None, 2),
            message("INVITE", "60972-1", "60970-1", "10.0.0.2:1", None, 3),
            // A refresh is no new flow.
            reg("60970-1", "10.0.0.1:1", "3600", 4),
            reg("60970-2", "10.0.1.1:1", "3600", 5),
            reg("60970-1", "10.0.0.1:1", "0", 6),
            reg("60972-1", "10.0.0.2:1", "0", 7),
            // The leak check's probe after the teardown: still the flow's.
            message(
                "SUBSCRIBE",
                "60970-1",
                "60970-1",
                "10.0.0.1:1",
                Some("3600"),
                8,
            ),
            reg("60970-1", "10.0.0.3:1", "3600", 9),
        ]);
        assert_eq!(sizes(&closed), vec![(1, 1, 7)]);
        assert_eq!(s.live(), 2);
        let rest = s.finish();
        assert_eq!(sizes(&rest), vec![(1, 2, 1), (2, 1, 1)]);
    }

    /// Over TCP a phone whose connection closed unregisters from another
    /// port: its registration's Call-ID (and user) says it is the same
    /// phone, so the line's next registration begins the next flow.
    #[test]
    fn an_unregistration_from_another_port_ends_the_registration() {
        let (closed, _) = pushed_on_lines_1_and_2([
            reg("60970-1", "10.0.0.1:1", "3600", 0),
            reg("60970-2", "10.0.1.1:1", "3600", 1),
            reg("60970-1", "10.0.0.1:2", "0", 2),
            reg("60970-1", "10.0.0.1:3", "3600", 3),
        ]);
        assert_eq!(sizes(&closed), vec![(1, 1, 2)]);
    }

    /// A REGISTER of `user` from `src` with Expires `e`, at `ms`.
    fn reg(user: &str, src: &str, e: &str, ms: u64) -> Packet {
        message("REGISTER", user, user, src, Some(e), ms)
    }

    /// `messages` pushed through a splitter of lines 1 and 2: the flows
    /// closed on the way, and the splitter.
    fn pushed_on_lines_1_and_2(
        messages: impl IntoIterator<Item = Packet>,
    ) -> (Vec<Flow>, Splitter) {
        let mut s = Splitter::new(&[line(1), line(2)]);
        let closed = messages.into_iter().flat_map(|m| s.push(m)).collect();
        (closed, s)
    }

    /// A message from `src` to `dst` at `ms`: `start` line and headers.
    fn raw(start: &str, headers: &[&str], src: &str, dst: &str, ms: u64) -> Packet {
        let mut text = format!("{start}\r\n");
        for h in headers {
            text.push_str(h);
            text.push_str("\r\n");
        }
        text.push_str("Content-Length: 0\r\n\r\n");
        Packet {
            time: UNIX_EPOCH + Duration::from_millis(ms),
            transport: crate::sip::Transport::Udp,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            raw: text.into_bytes(),
        }
    }

    /// Nothing registers on line 1 (a field capture): both phones
    /// subscribe, a call is offered, forked back to one phone (482: not its
    /// end), a second call refused while it rings, the first cancelled
    /// (487 to the caller: its end); a seizure that the
    /// server refuses to one phone while the other's is granted, the
    /// winner's never released but expired; then a second call. Three
    /// flows, the second and third beginning with both phones' call-info
    /// SUBSCRIBEs and their 2xx, a refreshed or released seizure no end
    /// of the flow, line 2 beside them untouched.
    #[test]
    fn a_line_nobody_registers_is_split_by_its_calls_and_seizures() {
        let lines = [line(1), line(2)];
        let mut s = Splitter::new(&lines);
        let (a, b, c, srv) = ("10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1", "10.0.0.9:5060");
        let ua = |u: &str, tag: Option<&str>| match tag {
            Some(t) => format!("<sip:{u}@sca.test>;tag={t}"),
            None => format!("<sip:{u}@sca.test>"),
        };
        let req = |m: &str, from: &str, to: &str, tag: Option<&str>, id: &str, extra: &[&str]| {
            let mut h = vec![
                format!("f: {}", ua(from, Some("x"))),
                format!("t: {}", ua(to, tag)),
                format!("i: {id}"),
                format!("CSeq: 1 {m}"),
            ];
            h.extend(extra.iter().map(|e| e.to_string()));
            (format!("{m} sip:{to}@sca.test SIP/2.0"), h)
        };
        let resp = |status: &str, m: &str, to: &str, id: &str| {
            (
                format!("SIP/2.0 {status}"),
                vec![
                    format!("From: {}", ua(to, Some("x"))),
                    format!("To: {}", ua(to, Some("y"))),
                    format!("Call-ID: {id}"),
                    format!("CSeq: 1 {m}"),
                ],
            )
        };
        let info = ["Event: call-info", "Expires: 3600"];
        let seize = ["o: line-seize", "Expires: 15"];
        let seize_short = ["Event: line-seize", "Expires: 1"];
        type Step<'s> = ((String, Vec<String>), &'s str, &'s str);
        let steps: Vec<Step> = vec![
            (
                req("SUBSCRIBE", "60970-1", "60970-1", None, "sa", &info),
                a,
                srv,
            ),
            (resp("202 Accepted", "SUBSCRIBE", "60970-1", "sa"), srv, a),
            (
                req("SUBSCRIBE", "60970-1", "60970-1", None, "sb", &info),
                b,
                srv,
            ),
            (resp("200 OK", "SUBSCRIBE", "60970-1", "sb"), srv, b),
            (req("INVITE", "60972-1", "60970-1", None, "c1", &[]), c, srv),
            (req("INVITE", "60972-1", "60970-1", None, "c1", &[]), srv, a),
            (req("INVITE", "60972-1", "60970-1", None, "c1", &[]), srv, b),
            (resp("482 Loop Detected", "INVITE", "60970-1", "c1"), srv, b),
            // A second call while the first still rings: the same flow.
            (
                req("INVITE", "60972-1", "60970-1", None, "c1b", &[]),
                c,
                srv,
            ),
            (resp("486 Busy Here", "INVITE", "60970-1", "c1b"), srv, c),
            (
                req("OPTIONS", "60972-2", "60970-2", None, "o2", &[]),
                c,
                srv,
            ),
            (req("CANCEL", "60972-1", "60970-1", None, "c1", &[]), c, srv),
            (
                resp("487 Request Terminated", "INVITE", "60970-1", "c1"),
                srv,
                c,
            ),
            (
                req("SUBSCRIBE", "60970-1", "60970-1", None, "s1", &seize),
                a,
                srv,
            ),
            (
                req("SUBSCRIBE", "60970-1", "60970-1", None, "s2", &seize_short),
                b,
                srv,
            ),
            (resp("200 OK", "SUBSCRIBE", "60970-1", "s2"), srv, b),
            (
                resp("480 Temporarily Unavailable", "SUBSCRIBE", "60970-1", "s1"),
                srv,
                a,
            ),
            // The winner refreshes within its dialog: no new flow.
            (
                req(
                    "SUBSCRIBE",
                    "60970-1",
                    "60970-1",
                    Some("y"),
                    "s2",
                    &seize_short,
                ),
                b,
                srv,
            ),
        ];
        let mut closed = Vec::new();
        for (k, ((start, headers), src, dst)) in steps.into_iter().enumerate() {
            let h: Vec<&str> = headers.iter().map(String::as_str).collect();
            closed.extend(s.push(raw(&start, &h, src, dst, k as u64)));
        }
        // The call's end (487 to the caller; not the 482 of a fork) left
        // the line idle: the seizure began the second flow.
        assert_eq!(sizes(&closed), vec![(1, 1, 12)]);
        // A call while the seizure is granted: the same flow, even after
        // it ended (the refusal ended only the loser's seizure).
        for (id, m, tag, ms) in [("c2", "INVITE", None, 20), ("c2", "BYE", Some("y"), 21)] {
            let (start, headers) = req(m, "60972-1", "60970-1", tag, id, &[]);
            let h: Vec<&str> = headers.iter().map(String::as_str).collect();
            closed.extend(s.push(raw(&start, &h, c, srv, ms)));
        }
        assert_eq!(closed.len(), 1);
        // The seizure expired (Expires 1, with slack) without a word: the
        // next call begins the next flow.
        let (start, headers) = req("INVITE", "60972-1", "60970-1", None, "c3", &[]);
        let h: Vec<&str> = headers.iter().map(String::as_str).collect();
        closed.extend(s.push(raw(&start, &h, c, srv, 10_000)));
        assert_eq!(sizes(&closed), vec![(1, 1, 12), (1, 2, 11)]);
        let Flow::Line { packets, .. } = &closed[1] else {
            panic!("a line's flow")
        };
        let begins: Vec<&str> = packets
            .iter()
            .take(5)
            .map(|p| {
                std::str::from_utf8(&p.raw)
                    .unwrap()
                    .split(' ')
                    .next()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            begins,
            ["SUBSCRIBE", "SIP/2.0", "SUBSCRIBE", "SIP/2.0", "SUBSCRIBE"]
        );
        assert_eq!(sizes(&s.finish()), vec![(1, 3, 5), (2, 1, 1)]);
    }

    /// One line's one flow: everything, as it came, messages of no line
    /// included; a second line splits it by line.
    #[test]
    fn one_flow_in_all_is_the_whole_capture() {
        let lines = [line(1), line(2)];
        let one = [
            message("INVITE", "60972-1", "60970-1", "10.0.0.2:1", None, 0),
            message("OPTIONS", "stranger", "nobody", "10.9.9.9:1", None, 1),
        ];
        let mut s = Splitter::new(&lines);
        for m in one.clone() {
            assert!(s.push(m).is_empty());
        }
        assert_eq!(sizes(&s.finish()), vec![(0, 0, 2)]);
        let mut s = Splitter::new(&lines);
        for m in one {
            s.push(m);
        }
        s.push(message(
            "INVITE",
            "60972-2",
            "60970-2",
            "10.0.1.2:1",
            None,
            2,
        ));
        assert_eq!(sizes(&s.finish()), vec![(1, 1, 1), (2, 1, 1)]);
    }

    /// A line done (all unregistered) and silent for LINGER is handed
    /// over while others go on.
    #[test]
    fn a_finished_silent_line_is_closed() {
        let lines = [line(1), line(2)];
        let mut s = Splitter::new(&lines);
        let reg = |u: &str, e: &str, ms| message("REGISTER", u, u, "10.0.0.1:1", Some(e), ms);
        s.push(reg("60970-1", "3600", 0));
        s.push(reg("60970-2", "3600", 0));
        s.push(reg("60970-1", "0", 10));
        let mut closed = Vec::new();
        for k in 1..8 {
            closed.extend(s.push(message(
                "OPTIONS",
                "60972-2",
                "60970-2",
                "10.0.1.1:1",
                None,
                k * 1000,
            )));
        }
        assert_eq!(sizes(&closed), vec![(1, 1, 2)]);
    }
}
