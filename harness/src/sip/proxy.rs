//! A stateless, Record-Routing proxy over UDP (RFC 3261 16.11), pure: the
//! edge proxy a phone sits behind in a deployment, between one phone and
//! the server. A case whose phone is relayed gets one of these
//! ([`crate::run`] gives it a socket); its subscriptions then carry a
//! Record-Route, so the server's NOTIFYs follow a route set, and a phone
//! that moves to another relay shows whether the server follows the new
//! route or keeps sending to the old one.
//!
//! What it does, and no more:
//! - a request from the phone side goes to the server; one from the server
//!   goes to the first Route left, else to its Request-URI (the phone's
//!   Contact); a top Route naming the relay is taken off first (loose
//!   routing, RFC 3261 16.4);
//! - every request gets the relay's Via on top, with a branch derived from
//!   the one below it (a retransmission, and a CANCEL, get the same), and
//!   Max-Forwards one less (none left: dropped);
//! - a request that starts a dialog (no To-tag; not REGISTER, ACK, CANCEL
//!   or OPTIONS) gets `Record-Route: <sip:RELAY;lr>`;
//! - a response whose top Via is the relay's loses it and goes to the
//!   address the next Via names (its `received` and `rport` first).
//!
//! Anything else (unparsable bytes, a response not sent through it, a
//! request it cannot address) is dropped with the reason: it never panics
//! and keeps no state, so what it holds is bounded by one datagram.

use std::net::SocketAddr;

use super::{split_list, Message, NameAddr};

/// Where one datagram goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Why a datagram went nowhere.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("not a SIP message: {0}")]
    Unparsable(String),
    #[error("a response whose top Via is not the relay's")]
    NotOurs,
    #[error("Max-Forwards is 0")]
    TooManyHops,
    #[error("no address to send it to: {0}")]
    NoAddress(String),
}

/// One relay: its own address and the server's.
#[derive(Debug, Clone, Copy)]
pub struct Relay {
    pub me: SocketAddr,
    pub server: SocketAddr,
}

impl Relay {
    /// What to do with `bytes`, received from `from`.
    pub fn handle(&self, from: SocketAddr, bytes: &[u8]) -> Result<Forward, Dropped> {
        let msg = Message::parse(bytes.to_vec()).map_err(|e| Dropped::Unparsable(e.to_string()))?;
        let Some(split) = super::find_crlf_crlf(bytes) else {
            return Err(Dropped::Unparsable("no end of headers".into()));
        };
        let head = String::from_utf8_lossy(&bytes[..split]);
        let body = &bytes[split..];
        let mut lines = header_lines(&head);
        let to = if msg.is_request() {
            self.request(&msg, from, &mut lines)?
        } else {
            self.response(&mut lines)?
        };
        Ok(Forward {
            to,
            bytes: [lines.join("\r\n").as_bytes(), body].concat(),
        })
    }

    fn request(
        &self,
        msg: &Message,
        from: SocketAddr,
        lines: &mut Vec<String>,
    ) -> Result<SocketAddr, Dropped> {
        match msg.header("Max-Forwards").map(|v| v.trim().parse::<u32>()) {
            Some(Ok(0)) => return Err(Dropped::TooManyHops),
            Some(Ok(n)) => set_header(lines, &["max-forwards"], &(n - 1).to_string()),
            // RFC 3261 16.6 step 3: a request without one gets 70.
            _ => lines.insert(1, "Max-Forwards: 70".into()),
        }
        let ours = |element: &str| {
            NameAddr::parse(element).and_then(|n| super::uri_addr(&n.uri)) == Some(self.me)
        };
        if first_element(lines, &["route"]).is_some_and(|r| ours(&r)) {
            pop_element(lines, &["route"]);
        }
        let to = if from == self.server {
            let target = first_element(lines, &["route"])
                .and_then(|r| NameAddr::parse(&r))
                .map(|n| n.uri)
                .or_else(|| msg.request_uri().map(str::to_string))
                .unwrap_or_default();
            super::uri_addr(&target).ok_or(Dropped::NoAddress(target))?
        } else {
            self.server
        };
        let below = first_element(lines, &["via", "v"]).unwrap_or_default();
        let via = format!(
            "Via: SIP/2.0/UDP {};branch=z9hG4bK-relay-{:016x}",
            self.me,
            fnv1a(format!("{}|{below}", self.me).as_bytes())
        );
        let method = msg.method().unwrap_or_default();
        let starts_dialog = msg.to_tag().is_none()
            && !matches!(method.as_str(), "REGISTER" | "ACK" | "CANCEL" | "OPTIONS");
        if starts_dialog {
            lines.insert(1, format!("Record-Route: <sip:{};lr>", self.me));
        }
        lines.insert(1, via);
        Ok(to)
    }

    fn response(&self, lines: &mut Vec<String>) -> Result<SocketAddr, Dropped> {
        let top = first_element(lines, &["via", "v"]).unwrap_or_default();
        if via_sent_by(&top) != Some(self.me) {
            return Err(Dropped::NotOurs);
        }
        pop_element(lines, &["via", "v"]);
        let next = first_element(lines, &["via", "v"]).unwrap_or_default();
        via_reply_addr(&next).ok_or(Dropped::NoAddress(next))
    }
}

/// The header lines of a message head (start line first), folded lines
/// joined to the header they continue.
fn header_lines(head: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        let continues = line.starts_with([' ', '\t']) && lines.len() > 1;
        match lines.last_mut() {
            Some(last) if continues => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => lines.push(line.to_string()),
        }
    }
    lines
}

/// The position and value of the first header line named one of `names`
/// (lower case).
fn find(lines: &[String], names: &[&str]) -> Option<(usize, String)> {
    lines.iter().enumerate().skip(1).find_map(|(i, l)| {
        let (name, value) = l.split_once(':')?;
        names
            .contains(&name.trim().to_ascii_lowercase().as_str())
            .then(|| (i, value.trim().to_string()))
    })
}

fn first_element(lines: &[String], names: &[&str]) -> Option<String> {
    let (_, value) = find(lines, names)?;
    split_list(&value).into_iter().next()
}

/// Takes the first element off the first header named one of `names`
/// (the whole line when it was its only one).
fn pop_element(lines: &mut Vec<String>, names: &[&str]) {
    let Some((i, value)) = find(lines, names) else {
        return;
    };
    let rest = split_list(&value);
    if rest.len() <= 1 {
        lines.remove(i);
    } else {
        let name = lines[i].split_once(':').map_or("", |(n, _)| n).to_string();
        lines[i] = format!("{name}: {}", rest[1..].join(", "));
    }
}

fn set_header(lines: &mut [String], names: &[&str], value: &str) {
    if let Some((i, _)) = find(lines, names) {
        let name = lines[i].split_once(':').map_or("", |(n, _)| n).to_string();
        lines[i] = format!("{name}: {value}");
    }
}

/// The sent-by of a Via element, as an address (`SIP/2.0/UDP
/// 127.0.0.1:5070;branch=...` -> 127.0.0.1:5070).
fn via_sent_by(via: &str) -> Option<SocketAddr> {
    let sent_by = via.split(';').next()?.split_whitespace().nth(1)?;
    sent_by.parse().ok()
}

/// Where a response to the sender of a Via element goes: its `received`
/// and `rport`, else its sent-by (RFC 3261 18.2.2, RFC 3581).
fn via_reply_addr(via: &str) -> Option<SocketAddr> {
    let sent_by = via_sent_by(via)?;
    let params = super::params(via);
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    };
    let ip = param("received")
        .and_then(|r| r.parse().ok())
        .unwrap_or(sent_by.ip());
    let port = param("rport")
        .and_then(|p| p.parse().ok())
        .unwrap_or(sent_by.port());
    Some(SocketAddr::new(ip, port))
}

/// FNV-1a, 64 bits: a branch that is the same for the same request below.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::build::Builder;

    const PHONE: &str = "127.0.0.1:5070";
    const RELAY: &str = "127.0.0.1:5080";
    const SERVER: &str = "127.0.0.1:5060";

    fn relay() -> Relay {
        Relay {
            me: RELAY.parse().unwrap(),
            server: SERVER.parse().unwrap(),
        }
    }

    fn subscribe() -> Vec<u8> {
        Builder::request("SUBSCRIBE", "sip:60970@sca.test")
            .header("Via", &format!("SIP/2.0/UDP {PHONE};branch=z9hG4bKa;rport"))
            .header("Max-Forwards", "70")
            .header("From", "<sip:60970@sca.test>;tag=1")
            .header("To", "<sip:60970@sca.test>")
            .header("Call-ID", "c")
            .header("CSeq", "1 SUBSCRIBE")
            .header("Contact", &format!("<sip:60970@{PHONE}>"))
            .header("Event", "call-info")
            .build()
    }

    #[test]
    fn a_phones_subscribe_goes_to_the_server_record_routed_and_its_answer_back() {
        let r = relay();
        let out = r.handle(PHONE.parse().unwrap(), &subscribe()).unwrap();
        assert_eq!(out.to, r.server);
        let m = Message::parse(out.bytes.clone()).unwrap();
        let vias: Vec<&str> = m.headers("Via").collect();
        assert_eq!(vias.len(), 2);
        assert!(vias[0].starts_with(&format!("SIP/2.0/UDP {RELAY};branch=z9hG4bK-relay-")));
        assert_eq!(
            m.header("Record-Route"),
            Some(&*format!("<sip:{RELAY};lr>"))
        );
        assert_eq!(m.header("Max-Forwards"), Some("69"));
        // The same request again gets the same branch.
        let again = r.handle(PHONE.parse().unwrap(), &subscribe()).unwrap();
        assert_eq!(again.bytes, out.bytes);
        // The server's 200 comes back to the phone, by rport.
        let ok = Builder::response_to(&m, 200, Some("t")).build();
        let back = r.handle(r.server, &ok).unwrap();
        assert_eq!(back.to, PHONE.parse().unwrap());
        let back = Message::parse(back.bytes).unwrap();
        assert_eq!(back.headers("Via").count(), 1);
        assert_eq!(back.to_tag().as_deref(), Some("t"));
    }

    #[test]
    fn a_servers_notify_loses_the_relays_route_and_goes_to_the_contact() {
        let r = relay();
        let notify = Builder::request("NOTIFY", &format!("sip:60970@{PHONE}"))
            .header("Via", &format!("SIP/2.0/UDP {SERVER};branch=z9hG4bKn"))
            .header("Route", &format!("<sip:{RELAY};lr>"))
            .header("From", "<sip:60970@sca.test>;tag=t")
            .header("To", "<sip:60970@sca.test>;tag=1")
            .header("Call-ID", "c")
            .header("CSeq", "2 NOTIFY")
            .header("Event", "call-info")
            .body("text/plain", b"x")
            .build();
        // Without a Max-Forwards (the builder gives one): 70.
        let notify = String::from_utf8(notify)
            .unwrap()
            .replace("Max-Forwards: 70\r\n", "");
        let out = r.handle(r.server, notify.as_bytes()).unwrap();
        assert_eq!(out.to, PHONE.parse().unwrap());
        let m = Message::parse(out.bytes).unwrap();
        assert_eq!(m.header("Route"), None);
        assert_eq!(
            m.header("Record-Route"),
            None,
            "in a dialog: no Record-Route"
        );
        assert_eq!(m.header("Max-Forwards"), Some("70"));
        assert_eq!(m.body(), b"x");
    }

    #[test]
    fn what_it_cannot_forward_it_drops_with_the_reason() {
        let r = relay();
        assert!(matches!(
            r.handle(r.server, b"\x00garbage"),
            Err(Dropped::Unparsable(_))
        ));
        let stray = Builder::response_to(&Message::parse(subscribe()).unwrap(), 200, None).build();
        assert_eq!(r.handle(r.server, &stray), Err(Dropped::NotOurs));
        let spent = String::from_utf8(subscribe())
            .unwrap()
            .replace("Max-Forwards: 70", "Max-Forwards: 0");
        assert_eq!(
            r.handle(PHONE.parse().unwrap(), spent.as_bytes()),
            Err(Dropped::TooManyHops)
        );
        let nowhere = Builder::request("NOTIFY", "sip:60970@phone.example")
            .header("Via", &format!("SIP/2.0/UDP {SERVER};branch=z9hG4bKn"))
            .header("From", "<sip:a@h>;tag=1")
            .header("To", "<sip:b@h>;tag=2")
            .header("Call-ID", "c")
            .header("CSeq", "1 NOTIFY")
            .build();
        assert!(matches!(
            r.handle(r.server, &nowhere),
            Err(Dropped::NoAddress(_))
        ));
    }

    #[test]
    fn a_via_list_in_one_line_loses_only_its_top() {
        let mut lines = header_lines(
            "SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKx,\r\n SIP/2.0/UDP 127.0.0.1:5070;received=127.0.0.2;rport=6000\r\nCall-ID: c",
        );
        assert_eq!(lines.len(), 3, "the folded line is joined");
        pop_element(&mut lines, &["via", "v"]);
        let next = first_element(&lines, &["via", "v"]).unwrap();
        assert_eq!(via_reply_addr(&next), "127.0.0.2:6000".parse().ok());
    }
}
