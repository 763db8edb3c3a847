//! UDP retransmission for a user agent, sans-IO: what RFC 3261 asks of a
//! UA whose messages may be lost.
//!
//! - A request (not ACK) is sent again at T1, 2·T1, 4·T1... (INVITE, Timer
//!   A) or capped at T2 (others, Timer E) until a response comes back on its
//!   branch: any response for an INVITE, a final one for the others (a
//!   provisional one moves a non-INVITE to T2 at once). It gives up after
//!   64·T1 (Timers B and F, [`timeout`]); a run's wait for an answer over
//!   UDP lasts at least that long, so loss the timers recover from never
//!   ends a wait first.
//! - A final answer to an INVITE is sent again at T1, doubling up to T2,
//!   until the ACK for it arrives, for at most 64·T1: a 2xx by the UAS
//!   core (13.3.1.4), a failure by the server transaction (17.2.1, Timer
//!   G, over UDP only).
//!
//! The caller says what it sent and what it received, with the time; it
//! asks when the next retransmission is due and which ones are. Over TCP
//! a request is not sent again (the transport retransmits), but a 2xx to
//! an INVITE still is ([`Retransmitter::answers_only`]): its
//! retransmission is end to end (13.3.1.4), for an ACK lost beyond the
//! next hop, so it applies on every transport.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Message;

/// RFC 3261's estimate of the round trip, unless a target profile sets
/// its own (`[timers] t1_ms`).
pub const T1: Duration = Duration::from_millis(500);
/// The longest interval between retransmissions of a non-INVITE request
/// or a 2xx.
pub const T2: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Awaits {
    /// A response on this branch to a request of this method.
    Response { branch: String, invite: bool },
    /// The ACK for a 2xx: the INVITE's Call-ID and CSeq number.
    Ack { call_id: String, cseq: u32 },
}

#[derive(Debug, Clone)]
struct Pending<P> {
    awaits: Awaits,
    peer: P,
    bytes: Vec<u8>,
    next: Instant,
    interval: Duration,
    /// Doubling without a cap (INVITE) or capped at T2.
    capped: bool,
    give_up: Instant,
}

/// Timers B and F: how long a transaction retransmits before it gives up,
/// for the T1 in use.
pub fn timeout(t1: Duration) -> Duration {
    t1.saturating_mul(64)
}

/// The messages of one user agent that are sent again until answered,
/// each to its peer (`P`: an address, or whatever else the sender needs to
/// send it again, such as the embedded server's transport and address).
#[derive(Debug)]
pub struct Retransmitter<P = SocketAddr> {
    t1: Duration,
    pending: Vec<Pending<P>>,
    /// Only 2xx answers to INVITEs are retransmitted, no request.
    answers_only: bool,
}

impl<P: Clone> Default for Retransmitter<P> {
    fn default() -> Self {
        Retransmitter::new(T1)
    }
}

impl<P: Clone> Retransmitter<P> {
    /// Retransmits on RFC 3261's timers for this T1.
    pub fn new(t1: Duration) -> Retransmitter<P> {
        Retransmitter {
            t1,
            pending: Vec::new(),
            answers_only: false,
        }
    }

    /// Retransmits only 2xx answers to INVITEs, until their ACK: what a
    /// UA does over a reliable transport, and the embedded server, which
    /// leaves its own requests to a lossless loopback.
    pub fn answers_only(mut self) -> Retransmitter<P> {
        self.answers_only = true;
        self
    }

    /// T2, which caps the interval, is never below T1 (a T1 set above
    /// RFC 3261's 4 s T2 would otherwise shrink every interval after the
    /// first).
    fn t2(&self) -> Duration {
        T2.max(self.t1)
    }

    /// A message went out to `peer`.
    pub fn sent(&mut self, msg: &Message, peer: P, now: Instant) {
        let awaits = if msg.is_request() {
            if self.answers_only {
                return;
            }
            match (msg.is("ACK"), msg.via_branch()) {
                (false, Some(branch)) => Awaits::Response {
                    branch,
                    invite: msg.is("INVITE"),
                },
                _ => return,
            }
        } else {
            // A 2xx end to end on every transport; a failure hop by hop,
            // over UDP only (17.2.1, Timer G), until the ACK.
            let status = msg.status().unwrap_or(0);
            let ok = (200..300).contains(&status) || (status >= 300 && !self.answers_only);
            match msg.cseq() {
                Some((cseq, "INVITE")) if ok => Awaits::Ack {
                    call_id: msg.call_id().to_string(),
                    cseq,
                },
                _ => return,
            }
        };
        // Something sent again by its sender (a 2xx repeated for a
        // retransmitted INVITE) restarts nothing: its timer runs already.
        if self.pending.iter().any(|p| p.awaits == awaits) {
            return;
        }
        let capped = !matches!(awaits, Awaits::Response { invite: true, .. });
        self.pending.push(Pending {
            awaits,
            peer,
            bytes: msg.raw().to_vec(),
            next: now + self.t1,
            interval: self.t1,
            capped,
            give_up: now + timeout(self.t1),
        });
    }

    /// A message came in: it may answer or acknowledge one that is pending.
    pub fn received(&mut self, msg: &Message, now: Instant) {
        if msg.is_request() {
            if msg.is("ACK") {
                let (call_id, cseq) = (msg.call_id(), msg.cseq().map(|(n, _)| n));
                self.pending.retain(|p| {
                    !matches!(&p.awaits, Awaits::Ack { call_id: c, cseq: n }
                        if c == call_id && Some(*n) == cseq)
                });
            }
            return;
        }
        let (Some(branch), Some(status)) = (msg.via_branch(), msg.status()) else {
            return;
        };
        let t2 = self.t2();
        self.pending.retain_mut(|p| {
            let Awaits::Response { branch: b, invite } = &p.awaits else {
                return true;
            };
            if *b != branch {
                return true;
            }
            if *invite || status >= 200 {
                return false;
            }
            // A provisional answer to a non-INVITE: the request arrived;
            // only its final answer may be lost now (17.1.2.2).
            p.interval = t2;
            p.next = now + t2;
            true
        });
    }

    /// When the next retransmission is due, if any is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.next.min(p.give_up)).min()
    }

    /// The retransmissions due at `now` (each to its peer), rescheduled;
    /// those past their last chance are dropped.
    pub fn poll_transmit(&mut self, now: Instant) -> Vec<(P, Vec<u8>)> {
        self.pending.retain(|p| now < p.give_up);
        let t2 = self.t2();
        let mut due = Vec::new();
        for p in self.pending.iter_mut().filter(|p| p.next <= now) {
            due.push((p.peer.clone(), p.bytes.clone()));
            p.interval = if p.capped {
                (p.interval * 2).min(t2)
            } else {
                p.interval * 2
            };
            p.next = now + p.interval;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::build::Builder;

    fn request(method: &str, branch: &str) -> Message {
        let bytes = Builder::request(method, "sip:60970@sca.test")
            .header(
                "Via",
                &format!("SIP/2.0/UDP 127.0.0.1:7001;branch={branch}"),
            )
            .header("From", "<sip:60972@sca.test>;tag=a")
            .header("To", "<sip:60970@sca.test>")
            .header("Call-ID", "c1")
            .header("CSeq", &format!("1 {method}"))
            .build();
        Message::parse(bytes).unwrap()
    }

    fn answer(req: &Message, status: u16) -> Message {
        Message::parse(Builder::response_to(req, status, Some("b")).build()).unwrap()
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:5060".parse().unwrap()
    }

    /// The times, from `t0`, at which retransmissions go out until `end`.
    fn schedule(r: &mut Retransmitter, t0: Instant, end: Duration) -> Vec<Duration> {
        let mut out = Vec::new();
        while let Some(at) = r.poll_timeout() {
            if at > t0 + end {
                break;
            }
            for _ in r.poll_transmit(at) {
                out.push(at - t0);
            }
        }
        out
    }

    #[test]
    fn a_non_invite_request_doubles_up_to_t2_until_answered() {
        let t0 = Instant::now();
        let mut r = Retransmitter::default();
        let sub = request("SUBSCRIBE", "z9hG4bKs");
        r.sent(&sub, peer(), t0);
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            schedule(&mut r, t0, Duration::from_millis(15_500)),
            ms(&[500, 1500, 3500, 7500, 11_500, 15_500])
        );
        r.received(&answer(&sub, 200), t0);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn an_invite_doubles_without_cap_and_any_answer_stops_it() {
        let t0 = Instant::now();
        let mut r = Retransmitter::default();
        let inv = request("INVITE", "z9hG4bKi");
        r.sent(&inv, peer(), t0);
        let got = schedule(&mut r, t0, Duration::from_millis(7_500));
        assert_eq!(got.last(), Some(&Duration::from_millis(7_500)));
        assert_eq!(got.len(), 4); // 0.5, 1.5, 3.5, 7.5 s
                                  // A response on another branch is not this one's.
        r.received(&answer(&request("INVITE", "z9hG4bKother"), 100), t0);
        assert!(r.poll_timeout().is_some());
        r.received(&answer(&inv, 100), t0);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn a_provisional_answer_moves_a_non_invite_to_t2_and_a_final_one_ends_it() {
        let t0 = Instant::now();
        let mut r = Retransmitter::default();
        let bye = request("BYE", "z9hG4bKb");
        r.sent(&bye, peer(), t0);
        r.received(&answer(&bye, 100), t0);
        assert_eq!(r.poll_timeout(), Some(t0 + T2));
        r.received(&answer(&bye, 481), t0);
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn a_2xx_to_an_invite_repeats_until_its_ack_and_ack_is_never_repeated() {
        let t0 = Instant::now();
        let mut r = Retransmitter::default();
        let inv = request("INVITE", "z9hG4bKi");
        let ok = answer(&inv, 200);
        r.sent(&ok, peer(), t0);
        r.sent(&request("ACK", "z9hG4bKa"), peer(), t0);
        r.sent(&answer(&inv, 180), peer(), t0);
        // Only the 2xx is pending; the same 2xx sent again is not twice.
        r.sent(&ok, peer(), t0);
        let due = r.poll_transmit(t0 + T1);
        assert_eq!(due, vec![(peer(), ok.raw().to_vec())]);
        // An ACK of another CSeq is not this one's.
        let mut other = request("ACK", "z9hG4bKa2").raw().to_vec();
        other = String::from_utf8(other)
            .unwrap()
            .replace("1 ACK", "2 ACK")
            .into_bytes();
        r.received(&Message::parse(other).unwrap(), t0);
        assert!(r.poll_timeout().is_some());
        r.received(&request("ACK", "z9hG4bKa"), t0);
        assert_eq!(r.poll_timeout(), None);
    }

    /// A failure to an INVITE goes again until its ACK over UDP (Timer G),
    /// not over a reliable transport.
    #[test]
    fn a_failure_to_an_invite_repeats_until_its_ack_over_udp_only() {
        let t0 = Instant::now();
        let inv = request("INVITE", "z9hG4bKi");
        let busy = answer(&inv, 486);
        let mut udp = Retransmitter::default();
        udp.sent(&busy, peer(), t0);
        assert_eq!(
            udp.poll_transmit(t0 + T1),
            vec![(peer(), busy.raw().to_vec())]
        );
        udp.received(&request("ACK", "z9hG4bKi"), t0 + T1);
        assert_eq!(udp.poll_timeout(), None);
        let mut tcp: Retransmitter = Retransmitter::new(T1).answers_only();
        tcp.sent(&busy, peer(), t0);
        assert_eq!(tcp.poll_timeout(), None);
    }

    /// Over a reliable transport no request is sent again, but a 2xx to
    /// an INVITE is, until its ACK (its retransmission is end to end).
    #[test]
    fn answers_only_retransmits_a_2xx_to_an_invite_and_no_request() {
        let t0 = Instant::now();
        let mut r: Retransmitter<&str> = Retransmitter::new(T1).answers_only();
        let inv = request("INVITE", "z9hG4bKi");
        r.sent(&inv, "tcp", t0);
        r.sent(&request("BYE", "z9hG4bKb"), "tcp", t0);
        assert_eq!(r.poll_timeout(), None, "no request pending");
        let ok = answer(&inv, 200);
        r.sent(&ok, "tcp", t0);
        assert_eq!(r.poll_transmit(t0 + T1), vec![("tcp", ok.raw().to_vec())]);
        r.received(&request("ACK", "z9hG4bKa"), t0 + T1);
        assert_eq!(r.poll_timeout(), None);
    }

    /// Another T1 scales the whole schedule: with T1 = 100 ms an INVITE goes
    /// again at 0.1, 0.3, 0.7, 1.5, 3.1 and 6.3 s, and not after 6.4 s.
    #[test]
    fn the_schedule_follows_the_t1_in_use() {
        let t0 = Instant::now();
        let t1 = Duration::from_millis(100);
        let mut r = Retransmitter::new(t1);
        r.sent(&request("INVITE", "z9hG4bKi"), peer(), t0);
        let ms: Vec<u128> = schedule(&mut r, t0, Duration::from_secs(60))
            .iter()
            .map(Duration::as_millis)
            .collect();
        assert_eq!(ms, [100, 300, 700, 1500, 3100, 6300]);
        assert_eq!(timeout(t1), Duration::from_millis(6400));
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn it_gives_up_after_64_t1() {
        let t0 = Instant::now();
        let mut r = Retransmitter::default();
        r.sent(&request("REGISTER", "z9hG4bKr"), peer(), t0);
        let all = schedule(&mut r, t0, Duration::from_secs(60));
        assert!(all.iter().all(|t| *t < 64 * T1), "{all:?}");
        assert_eq!(r.poll_transmit(t0 + 64 * T1), Vec::new());
        assert_eq!(r.poll_timeout(), None);
    }
}
