//! The server core driven by messages and a clock, no sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::server::Server;
use super::Fault;
use crate::model::{Attr, Channel, KnownEvent, Value};
use crate::sip::build::Builder;
use crate::sip::record::Inbound;
use crate::sip::{Message, Transport};
use crate::topology::Topology;

const SERVER: &str = "127.0.0.1:5060";

fn phone(dn: &str) -> SocketAddr {
    match dn {
        "60970" => "127.0.0.1:6001",
        "60970_2" => "127.0.0.1:6002",
        _ => "127.0.0.1:6003",
    }
    .parse()
    .unwrap()
}

fn request(dn: &str, method: &str, to: &str, call_id: &str, extra: &[(&str, &str)]) -> Inbound {
    let mut b = Builder::request(method, &format!("sip:{to}@sca.test"))
        .header(
            "Via",
            &format!("SIP/2.0/UDP {};branch=z9hG4bK{call_id}", phone(dn)),
        )
        .header("From", &format!("<sip:{dn}@sca.test>;tag=f{call_id}"))
        .header("To", &format!("<sip:{to}@sca.test>"))
        .header("Call-ID", call_id)
        .header("CSeq", &format!("1 {method}"))
        .header("Contact", &format!("<sip:{dn}@{}>", phone(dn)));
    for (n, v) in extra {
        b = b.header(n, v);
    }
    Inbound {
        msg: Message::parse(b.build()).unwrap(),
        transport: Transport::Udp,
        peer: phone(dn),
    }
}

/// A server with both phones registered and subscribed to call-info.
fn server(fault: Option<Fault>, now: Instant) -> Server {
    let mut s = Server::new(
        "sca.test",
        SERVER.parse().unwrap(),
        Topology::reference(),
        fault,
    );
    for dn in ["60970", "60970_2"] {
        s.handle(&request(dn, "REGISTER", dn, &format!("reg{dn}"), &[]), now);
        s.handle(
            &request(
                dn,
                "SUBSCRIBE",
                "60970",
                &format!("sub{dn}"),
                &[("Event", "call-info"), ("Expires", "3600")],
            ),
            now,
        );
    }
    drain(&mut s);
    s
}

/// What the server sent; the phones answer each NOTIFY 200 (else the
/// server sends it again over UDP, and its timers are not only those a
/// test looks at).
fn drain(s: &mut Server) -> Vec<(SocketAddr, Message)> {
    let out: Vec<(SocketAddr, Message)> = std::iter::from_fn(|| s.poll_transmit())
        .map(|o| (o.to, Message::parse(o.bytes).unwrap()))
        .collect();
    for (to, m) in out.iter().filter(|(_, m)| m.is("NOTIFY")) {
        s.handle(&answer_from(*to, m, 200), Instant::now());
    }
    out
}

fn answer_from(peer: SocketAddr, req: &Message, code: u16) -> Inbound {
    Inbound {
        msg: Message::parse(Builder::response_to(req, code, None).build()).unwrap(),
        transport: Transport::Udp,
        peer,
    }
}

fn seize(dn: &str, id: &str, expires: &str) -> Inbound {
    request(
        dn,
        "SUBSCRIBE",
        "60970",
        id,
        &[
            ("Event", "line-seize"),
            ("Expires", expires),
            ("Call-Info", "<sip:sca.test>;appearance-index=1"),
        ],
    )
}

#[test]
fn a_seizure_is_granted_notified_and_reported_then_a_second_is_refused() {
    let now = Instant::now();
    let mut s = server(None, now);
    s.handle(&seize("60970", "s1", "15"), now);
    let out = drain(&mut s);
    let lines: Vec<String> = out
        .iter()
        .map(|(to, m)| {
            format!(
                "{} {}",
                m.start_line(),
                if *to == phone("60970") {
                    "60970"
                } else {
                    "60970_2"
                }
            )
        })
        .collect();
    assert_eq!(lines[0], "SIP/2.0 200 OK 60970");
    assert!(
        lines[1].starts_with("NOTIFY ") && out[1].1.header("Event") == Some("line-seize"),
        "{lines:?}"
    );
    let seized: Vec<_> = out[2..]
        .iter()
        .filter(|(_, m)| {
            m.header("Call-Info")
                .is_some_and(|c| c.contains("appearance-state=seized"))
        })
        .collect();
    assert_eq!(seized.len(), 2, "both phones are told: {lines:?}");
    let (channel, event) = s.poll_event().unwrap();
    assert_eq!(channel, Channel::Dn("60970".into()));
    assert_eq!(event.name, KnownEvent::PrivateInfo.into());
    assert_eq!(event.get(Attr::ServiceId), Some(&Value::Int(4026)));

    s.handle(&seize("60970_2", "s2", "15"), now);
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].1.status(), Some(480));
    assert!(out[0].1.header("Retry-After").is_some());
}

#[test]
fn an_unused_seizure_lapses_on_the_clock() {
    let now = Instant::now();
    let mut s = server(None, now);
    s.handle(&seize("60970", "s1", "2"), now);
    drain(&mut s);
    let due = s.poll_timeout().expect("the seizure wants a wake-up");
    assert_eq!(due, now + Duration::from_secs(2));
    s.handle_timeout(now + Duration::from_secs(1));
    assert!(drain(&mut s).is_empty(), "not yet");
    s.handle_timeout(due);
    let out = drain(&mut s);
    assert_eq!(
        out[0].1.header("Subscription-State"),
        Some("terminated;reason=timeout")
    );
    assert!(out[1..]
        .iter()
        .all(|(_, m)| !m.header("Call-Info").unwrap_or_default().contains("seized")));
    assert_eq!(s.poll_timeout(), None);

    let mut never = server(Some(Fault::SeizeNeverExpires), now);
    never.handle(&seize("60970", "s1", "2"), now);
    drain(&mut never);
    assert_eq!(never.poll_timeout(), None);
}

#[test]
fn seizures_are_capped_and_need_an_index() {
    let now = Instant::now();
    let mut s = server(None, now);
    s.handle(&seize("60970", "s1", "3600"), now);
    assert_eq!(drain(&mut s)[0].1.header("Expires"), Some("15"));
    s.handle(
        &request(
            "60970_2",
            "SUBSCRIBE",
            "60970",
            "s2",
            &[("Event", "line-seize")],
        ),
        now,
    );
    assert_eq!(drain(&mut s)[0].1.status(), Some(400));
    s.handle(
        &request(
            "60972",
            "SUBSCRIBE",
            "60970",
            "s3",
            &[("Event", "line-seize")],
        ),
        now,
    );
    assert_eq!(
        drain(&mut s)[0].1.status(),
        Some(403),
        "only the line's phones may seize"
    );
}

/// A phone over UDP whose answer was late sends its SUBSCRIBE again: it
/// gets the same answer and nothing changes, even after the seizure it
/// asked for lapsed (under load, faults.rs saw a lapsed seizure seized
/// again by the retransmission of the request that made it).
#[test]
fn a_retransmitted_request_gets_the_same_answer_and_changes_nothing() {
    let now = Instant::now();
    let mut s = server(None, now);
    s.handle(&seize("60970", "s1", "1"), now);
    let first = drain(&mut s);
    assert_eq!(first[0].1.status(), Some(200));
    let later = now + Duration::from_secs(2);
    s.handle_timeout(later);
    let lapsed = drain(&mut s);
    assert!(!lapsed.is_empty(), "the seizure lapsed and was told");
    s.handle(&seize("60970", "s1", "1"), later);
    let again = drain(&mut s);
    assert_eq!(again.len(), 1, "only the answer: {again:?}");
    assert_eq!(again[0].1.raw(), first[0].1.raw());
    assert_eq!(s.poll_timeout(), None, "no new seizure");
}

/// Over UDP the server sends its requests again until answered (a phone
/// that lost one, `--loss`, gets it later), and stops once answered.
#[test]
fn an_unanswered_notify_over_udp_is_sent_again_until_answered() {
    let now = Instant::now();
    let mut s = server(None, now);
    // 60970 subscribes again (a second dialog), and its NOTIFY is lost.
    s.handle(
        &request(
            "60970",
            "SUBSCRIBE",
            "60970",
            "sub-again",
            &[("Event", "call-info"), ("Expires", "3600")],
        ),
        now,
    );
    let sent: Vec<(SocketAddr, Message)> = std::iter::from_fn(|| s.poll_transmit())
        .map(|o| (o.to, Message::parse(o.bytes).unwrap()))
        .collect();
    let notify = sent
        .iter()
        .find(|(_, m)| m.is("NOTIFY"))
        .expect("a NOTIFY")
        .clone();
    let due = s.poll_timeout().expect("the NOTIFY wants a wake-up");
    assert_eq!(due, now + crate::sip::retransmit::T1);
    s.handle_timeout(due);
    let again: Vec<Message> = std::iter::from_fn(|| s.poll_transmit())
        .map(|o| Message::parse(o.bytes).unwrap())
        .collect();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].raw(), notify.1.raw(), "the same NOTIFY");
    s.handle(&answer_from(notify.0, &again[0], 200), due);
    assert_eq!(s.poll_timeout(), None, "answered: nothing more to send");
}
