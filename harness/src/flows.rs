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
//!   or every Contact `expires=0`, from the same address): what a scacheck
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
//! A line whose phones never register in the capture (a field capture)
//! or never unregister is one flow to the end of the file, however long:
//! what bounds memory here is the registration lifetime.
//!
//! Only the start line and the From, To, Expires and Contact headers are
//! looked at ([`Peek`]), not a full parse.

use std::collections::{HashMap, HashSet};
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
        if !start.starts_with("SIP/") {
            peek.request_user = start.split(' ').nth(1).and_then(uri_user);
        }
        let (mut expires_zero, mut contacts, mut contacts_zero) = (false, 0, 0);
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim();
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("From") || is("f") {
                peek.from_user = uri_user(value);
            } else if is("To") || is("t") {
                peek.to_user = uri_user(value);
            } else if register && is("Expires") {
                expires_zero = value.trim() == "0";
            } else if register && (is("Contact") || is("m")) {
                for c in value.split(',') {
                    contacts += 1;
                    let lower = c.to_ascii_lowercase();
                    if lower.trim() == "*" || lower.replace(' ', "").contains(";expires=0") {
                        contacts_zero += 1;
                    }
                }
            }
        }
        if register {
            let unregisters = expires_zero || (contacts > 0 && contacts_zero == contacts);
            peek.registers = Some(!unregisters);
        }
        Some(peek)
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

/// A line's live flow.
#[derive(Default)]
struct Live {
    packets: Vec<Packet>,
    nth: usize,
    /// Who registered in it and has not unregistered.
    registered: HashSet<SocketAddr>,
    /// Did anyone register in it?
    had_registration: bool,
    last: Option<SystemTime>,
}

impl Live {
    fn ended(&self) -> bool {
        self.had_registration && self.registered.is_empty()
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
            last_sweep: None,
        }
    }

    /// How many lines' flows are live now.
    pub fn live(&self) -> usize {
        self.live.len()
    }

    /// The line a message is about, by its users.
    fn line_of(&self, raw: &[u8]) -> (Option<usize>, Option<bool>) {
        match Peek::of(raw) {
            Some(peek) => (
                peek.users().find_map(|u| self.owner.get(u).copied()),
                peek.registers,
            ),
            None => (None, None),
        }
    }

    /// One more message; the flows it closed, if any.
    pub fn push(&mut self, p: Packet) -> Vec<Flow> {
        let mut closed = Vec::new();
        if self.lines < 2 {
            self.whole.get_or_insert_with(Vec::new).push(p);
            return closed;
        }
        let (line, registers) = self.line_of(&p.raw);
        let time = p.time;
        if let Some(i) = line {
            let begins = registers == Some(true) && self.live.get(&i).is_some_and(Live::ended);
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
            match registers {
                Some(true) => {
                    live.registered.insert(p.src);
                    live.had_registration = true;
                }
                Some(false) => {
                    live.registered.remove(&p.src);
                }
                None => {}
            }
            live.last = Some(time);
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
                .iter()
                .filter(|(_, l)| {
                    l.ended()
                        && l.last
                            .is_some_and(|t| time.duration_since(t).unwrap_or_default() >= LINGER)
                })
                .map(|(i, _)| *i)
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
        let lines = [line(1), line(2)];
        let mut s = Splitter::new(&lines);
        let mut closed = Vec::new();
        let reg = |u: &str, src: &str, e: &str, ms| message("REGISTER", u, u, src, Some(e), ms);
        for m in [
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
        ] {
            closed.extend(s.push(m));
        }
        assert_eq!(sizes(&closed), vec![(1, 1, 7)]);
        assert_eq!(s.live(), 2);
        let rest = s.finish();
        assert_eq!(sizes(&rest), vec![(1, 2, 1), (2, 1, 1)]);
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
