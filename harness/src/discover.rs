//! The phones of a capture scacheck did not make, found from the SCA
//! signalling itself: a field capture's phones registered hours before it
//! began, and say nothing of who they are in their User-Agent.
//!
//! - **The line and its phones.** A call-info or line-seize SUBSCRIBE is
//!   sent by a shared-line phone (its source address, and its Contact) to
//!   the line (the To user, else the Request-URI's: the line's SIP user).
//!   The line most phones subscribe to is the topology's (first) line; its
//!   phones are its members in the order they first subscribe, each with
//!   its From user as its own SIP user. Where the SUBSCRIBEs go is the
//!   server.
//! - **The party outside the line.** An initial INVITE towards the line's
//!   user from a user that is none of the line's names its caller (at its
//!   source, unless that is the server or a line phone, and at its
//!   Contact; an INVITE with two Vias or more was relayed, and comes from
//!   a server); an initial INVITE the server sends on to an address that is
//!   no line phone, To a user that is none of the line's, names the callee
//!   a line phone called (at that address). They are the topology's plain
//!   DNs, in the order they first appear.
//!
//! Nothing is kept of the capture but these few addresses and users; at
//! most [`MOST`] of each are tracked, whatever the capture holds.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::line::Identities;
use crate::pcap::Packet;
use crate::sip::headers::EventHeader;
use crate::sip::Message;
use crate::topology::Topology;

/// How many lines, phones per line, servers and outside parties are
/// tracked at most (a hostile capture may name millions).
pub const MOST: usize = 64;

/// What the SCA signalling of a capture says of its parties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Each endpoint's DN.
    pub who: BTreeMap<SocketAddr, String>,
    /// The line's DN -> SIP user map (unnumbered), every DN of the
    /// topology covered (one not seen is its own user).
    pub identities: Identities,
    /// The line's SIP user (its AoR's user part).
    pub line_user: String,
}

impl Found {
    /// Does a target's line (a profile's) name every party found as the
    /// capture does? Then it is that line, and its identities win.
    pub fn fits(&self, line: &Identities, topology: &Topology) -> bool {
        let number = topology.lines.first().map_or("", |l| l.number.as_str());
        line.user(number) == self.line_user
            && self
                .who
                .values()
                .all(|dn| line.user(dn) == self.identities.user(dn))
    }
}

/// One phone subscribing to a line: where it sends from, its Contact,
/// its own user.
struct Phone {
    src: SocketAddr,
    contact: Option<SocketAddr>,
    user: String,
}

fn user_of(name: Option<crate::sip::NameAddr>) -> Option<String> {
    name.and_then(|n| n.user().map(str::to_string))
}

/// The parties of a capture by its SCA signalling, or `None` when no
/// phone subscribes to a line (call-info or line-seize) in it.
pub fn discover(packets: &[Packet], topology: &Topology) -> Option<Found> {
    let line = topology.lines.first()?;
    // Pass 1: the lines and the phones that subscribe to them, in order.
    let mut lines: Vec<(String, Vec<Phone>)> = Vec::new();
    let mut servers: Vec<SocketAddr> = Vec::new();
    for m in packets {
        let Ok(msg) = Message::parse(m.raw.clone()) else {
            continue;
        };
        if !msg.is("SUBSCRIBE") {
            continue;
        }
        let package = msg
            .header("Event")
            .and_then(EventHeader::parse)
            .map(|e| e.package);
        if !matches!(package.as_deref(), Some("call-info" | "line-seize")) {
            continue;
        }
        let Some(aor) = user_of(msg.to()).or_else(|| {
            msg.request_uri()
                .and_then(crate::sip::uri_user)
                .map(str::to_string)
        }) else {
            continue;
        };
        if !servers.contains(&m.dst) && servers.len() < MOST {
            servers.push(m.dst);
        }
        let at = match lines.iter().position(|(u, _)| *u == aor) {
            Some(i) => i,
            None if lines.len() < MOST => {
                lines.push((aor.clone(), Vec::new()));
                lines.len() - 1
            }
            None => continue,
        };
        let phones = &mut lines[at].1;
        if phones.iter().any(|p| p.src == m.src) || phones.len() >= MOST {
            continue;
        }
        phones.push(Phone {
            src: m.src,
            contact: msg.contact_addr(),
            user: user_of(msg.from()).unwrap_or_else(|| aor.clone()),
        });
    }
    // The line most phones subscribe to (the first, of equals).
    let (line_user, phones) = lines
        .into_iter()
        .fold(None::<(String, Vec<Phone>)>, |best, l| match best {
            Some(b) if b.1.len() >= l.1.len() => Some(b),
            _ => Some(l),
        })?;
    let mut who = BTreeMap::new();
    let mut users: BTreeMap<String, String> = topology.own_identities();
    for (dn, phone) in line.members.iter().zip(&phones) {
        who.insert(phone.src, dn.clone());
        if let Some(c) = phone.contact.filter(|c| !servers.contains(c)) {
            who.entry(c).or_insert_with(|| dn.clone());
        }
        users.insert(dn.clone(), phone.user.clone());
    }
    users.insert(line.number.clone(), line_user.clone());
    let line_users: Vec<String> = phones
        .iter()
        .map(|p| p.user.clone())
        .chain([line_user.clone()])
        .collect();
    let is_phone = |a: &SocketAddr| phones.iter().any(|p| p.src == *a || p.contact == Some(*a));
    let outside = |a: &SocketAddr| !servers.contains(a) && !is_phone(a);
    // Pass 2: the parties outside the line, from the calls' INVITEs.
    let mut callers: Vec<String> = Vec::new();
    for m in packets {
        let Ok(msg) = Message::parse(m.raw.clone()) else {
            continue;
        };
        if !msg.is("INVITE") || msg.to_tag().is_some() {
            continue;
        }
        let (Some(from), Some(to)) = (user_of(msg.from()), user_of(msg.to())) else {
            continue;
        };
        // A proxy adds its Via: an INVITE with two or more was relayed,
        // its source a server, whatever port it sends from (over TCP a
        // server opens connections to phones from ports of its own).
        let vias: usize = msg.headers("Via").map(|v| v.split(',').count()).sum();
        let relayed = vias >= 2 || servers.contains(&m.src);
        let (user, at) = if to == line_user && !line_users.contains(&from) && !relayed {
            // A call to the line: its caller, where it sends from.
            let contact = msg.contact_addr();
            let at = [Some(m.src), contact].into_iter().flatten().filter(outside);
            (from, at.collect::<Vec<_>>())
        } else if !line_users.contains(&to) && relayed && outside(&m.dst) {
            // A line phone's call, sent on to its callee.
            (to, vec![m.dst])
        } else {
            continue;
        };
        if !callers.contains(&user) {
            if callers.len() >= topology.plain.len().min(MOST) {
                continue;
            }
            callers.push(user.clone());
        }
        let i = callers.iter().position(|u| *u == user).unwrap_or(0);
        let Some(dn) = topology.plain.get(i) else {
            continue;
        };
        users.insert(dn.clone(), user);
        for a in at {
            who.entry(a).or_insert_with(|| dn.clone());
        }
    }
    Some(Found {
        who,
        identities: Identities {
            number: None,
            users,
        },
        line_user,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::build::Builder;
    use crate::sip::Transport;
    use std::time::UNIX_EPOCH;

    const SERVER: &str = "10.0.0.1:5060";

    /// A request from `src` to `dst`: `method uri`, From and To users,
    /// the Event package, a Contact at `src`, a To-tag or not.
    fn request(src: &str, dst: &str, method: &str, from: &str, to: &str, event: &str) -> Packet {
        let src: SocketAddr = src.parse().unwrap();
        let mut b = Builder::request(method, &format!("sip:{to}@sca.test"))
            .header(
                "Via",
                &format!("SIP/2.0/UDP {src};branch=z9hG4bK{method}{src}"),
            )
            .header("From", &format!("<sip:{from}@sca.test>;tag=f"))
            .header("To", &format!("<sip:{to}@sca.test>"))
            .header("Call-ID", &format!("{method}{src}"))
            .header("CSeq", &format!("1 {method}"))
            .header("Contact", &format!("<sip:{from}@{src}>"));
        if !event.is_empty() {
            b = b.header("Event", event);
        }
        Packet {
            time: UNIX_EPOCH,
            src,
            dst: dst.parse().unwrap(),
            transport: Transport::Udp,
            raw: b.build(),
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn no_subscription_no_parties() {
        let topology = Topology::reference();
        assert_eq!(discover(&[], &topology), None);
        let calls = [
            request("10.0.0.3:5060", SERVER, "INVITE", "60972-1", "60970-1", ""),
            request(
                "10.0.0.3:5060",
                SERVER,
                "SUBSCRIBE",
                "60972-1",
                "60970-1",
                "presence",
            ),
        ];
        assert_eq!(discover(&calls, &topology), None);
        // Nothing that is SIP either.
        let mut junk = calls[0].clone();
        junk.raw = b"\x00\xffnot SIP at all".to_vec();
        assert_eq!(discover(&[junk], &topology), None);
    }

    #[test]
    fn two_phones_subscribing_to_one_line_are_its_two_phones_in_order() {
        let topology = Topology::reference();
        let packets = [
            // A line-seize first counts as a subscription too; the second
            // phone subscribes first, so it is the first DN.
            request(
                "10.0.0.22:5062",
                SERVER,
                "SUBSCRIBE",
                "60970-3",
                "60970-3",
                "line-seize",
            ),
            request(
                "10.0.0.21:5061",
                SERVER,
                "SUBSCRIBE",
                "60970-3",
                "60970-3",
                "call-info",
            ),
            request(
                "10.0.0.22:5062",
                SERVER,
                "SUBSCRIBE",
                "60970-3",
                "60970-3",
                "call-info",
            ),
            // Another line, with fewer phones, is not the case's.
            request(
                "10.0.0.9:5069",
                SERVER,
                "SUBSCRIBE",
                "70000",
                "70000",
                "call-info",
            ),
        ];
        let found = discover(&packets, &topology).unwrap();
        assert_eq!(found.line_user, "60970-3");
        assert_eq!(found.who[&addr("10.0.0.22:5062")], "60970");
        assert_eq!(found.who[&addr("10.0.0.21:5061")], "60970_2");
        assert_eq!(found.who.len(), 2, "{:?}", found.who);
        for dn in ["60970", "60970_2"] {
            assert_eq!(found.identities.user(dn), "60970-3");
        }
        assert_eq!(found.identities.user("60972"), "60972");
        assert_eq!(found.identities.number, None);
    }

    #[test]
    fn the_caller_is_found_by_its_invite_and_the_callee_by_the_servers() {
        let topology = Topology::reference();
        let subscriptions = [
            request(
                "10.0.0.21:5061",
                SERVER,
                "SUBSCRIBE",
                "60970-3",
                "60970-3",
                "call-info",
            ),
            request(
                "10.0.0.22:5062",
                SERVER,
                "SUBSCRIBE",
                "60970-3",
                "60970-3",
                "call-info",
            ),
        ];
        // Inbound: the caller sends to the line, the server forks it to the
        // phones (From the caller too, but from the server's address).
        let mut inbound = subscriptions.to_vec();
        inbound.push(request(
            "10.0.0.3:5063",
            SERVER,
            "INVITE",
            "60972-3",
            "60970-3",
            "",
        ));
        inbound.push(request(
            SERVER,
            "10.0.0.21:5061",
            "INVITE",
            "60972-3",
            "60970-3",
            "",
        ));
        let found = discover(&inbound, &topology).unwrap();
        assert_eq!(found.who[&addr("10.0.0.3:5063")], "60972");
        assert!(!found.who.contains_key(&addr(SERVER)), "{:?}", found.who);
        assert_eq!(found.identities.user("60972"), "60972-3");
        // Outbound: a line phone calls 60972-3, the server sends it on.
        let mut outbound = subscriptions.to_vec();
        outbound.push(request(
            "10.0.0.21:5061",
            SERVER,
            "INVITE",
            "60970-3",
            "60972-3",
            "",
        ));
        outbound.push(request(
            SERVER,
            "10.0.0.3:5063",
            "INVITE",
            "60970-3",
            "60972-3",
            "",
        ));
        let found = discover(&outbound, &topology).unwrap();
        assert_eq!(found.who[&addr("10.0.0.3:5063")], "60972");
        assert_eq!(found.identities.user("60972"), "60972-3");
        assert_eq!(found.who.len(), 3, "{:?}", found.who);
        // A phone's call to the line's own AoR (a barge-in) names no one.
        let mut barge = subscriptions.to_vec();
        barge.push(request(
            "10.0.0.21:5061",
            SERVER,
            "INVITE",
            "60970-3",
            "60970-3",
            "",
        ));
        barge.push(request(
            SERVER,
            "10.0.0.22:5062",
            "INVITE",
            "60970-3",
            "60970-3",
            "",
        ));
        assert_eq!(discover(&barge, &topology).unwrap().who.len(), 2);
    }
}
