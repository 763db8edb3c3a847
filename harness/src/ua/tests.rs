//! The agent's behaviour, message by message.

use std::net::SocketAddr;

use super::agent::*;
use super::Seizure;
use crate::sip::build::Builder;
use crate::sip::record::Inbound;
use crate::sip::sdp::HoldStyle;
use crate::sip::{Message, Transport};

const SERVER: &str = "127.0.0.1:5060";

fn agent() -> Agent {
    Agent::new(config())
}

fn config() -> AgentConfig {
    AgentConfig {
        dn: "60970".into(),
        user: "60970".into(),
        domain: "sca.test".into(),
        local: "127.0.0.1:6000".parse().unwrap(),
        transport: Transport::Udp,
        server: SERVER.parse().unwrap(),
        nonce: "n".into(),
        t1: crate::sip::retransmit::T1,
        credentials: None,
        tls_uri: Default::default(),
    }
}

fn inbound(bytes: Vec<u8>) -> Inbound {
    Inbound {
        msg: Message::parse(bytes).unwrap(),
        transport: Transport::Udp,
        peer: SERVER.parse::<SocketAddr>().unwrap(),
    }
}

fn sent(a: &mut Agent) -> Vec<Message> {
    std::iter::from_fn(|| a.poll_transmit())
        .map(|t| Message::parse(t.bytes).unwrap())
        .collect()
}

fn invite(call_id: &str) -> Vec<u8> {
    Builder::request("INVITE", "sip:60970@127.0.0.1:6000")
        .header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKs1")
        .header("From", "<sip:60972@sca.test>;tag=srv")
        .header("To", "<sip:60970@sca.test>")
        .header("Call-ID", call_id)
        .header("CSeq", "7 INVITE")
        .header("Contact", "<sip:b2bua@127.0.0.1:5060>")
        .header("Call-Info", "<sip:sca.test>;appearance-index=1")
        .build()
}

fn in_dialog(method: &str, call_id: &str, to_tag: &str) -> Vec<u8> {
    Builder::request(method, "sip:60970@127.0.0.1:6000")
        .header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKs2")
        .header("From", "<sip:60972@sca.test>;tag=srv")
        .header("To", &format!("<sip:60970@sca.test>;tag={to_tag}"))
        .header("Call-ID", call_id)
        .header("CSeq", &format!("8 {method}"))
        .build()
}

#[test]
fn incoming_call_rings_answers_and_ends_by_bye() {
    let mut a = agent();
    a.handle(&inbound(invite("c1")));
    let out = sent(&mut a);
    assert_eq!(out[0].status(), Some(180));
    let tag = out[0].to_tag().unwrap();
    let call = &a.status().calls[0];
    assert_eq!(
        (call.phase.clone(), call.remote_user.as_str()),
        (Phase::Ringing, "60972")
    );
    assert_eq!(
        call.call_info[0].index,
        crate::sip::headers::AppearanceIndex::Index(1)
    );

    a.answer().unwrap();
    let ok = &sent(&mut a)[0];
    assert_eq!((ok.status(), ok.to_tag()), (Some(200), Some(tag.clone())));
    assert_eq!(a.status().calls[0].phase, Phase::Connecting);

    let mut ack = in_dialog("ACK", "c1", &tag);
    ack = String::from_utf8(ack)
        .unwrap()
        .replace("8 ACK", "7 ACK")
        .into_bytes();
    a.handle(&inbound(ack));
    assert_eq!(a.status().calls[0].phase, Phase::Confirmed);

    a.handle(&inbound(in_dialog("BYE", "c1", &tag)));
    assert_eq!(sent(&mut a)[0].status(), Some(200));
    assert_eq!(a.status().calls[0].phase, Phase::Ended(End::ByePeer));
    assert!(a.status().problems.is_empty());
}

/// A 2xx waits for its ACK whether it answered the call's INVITE or a
/// re-INVITE of it; an UPDATE's 2xx waits for nothing. (A stage is not
/// over while an ACK is due: what it derives belongs to the stage.)
#[test]
fn a_2xx_to_an_invite_or_reinvite_is_due_an_ack_and_an_update_is_not() {
    let mut a = agent();
    a.handle(&inbound(invite("c9")));
    let tag = sent(&mut a)[0].to_tag().unwrap();
    assert!(!a.status().calls[0].ack_due(), "ringing: no 2xx yet");
    a.answer().unwrap();
    sent(&mut a);
    assert!(a.status().calls[0].ack_due());
    let ack = String::from_utf8(in_dialog("ACK", "c9", &tag))
        .unwrap()
        .replace("8 ACK", "7 ACK")
        .into_bytes();
    a.handle(&inbound(ack));
    assert!(!a.status().calls[0].ack_due());

    a.handle(&inbound(in_dialog("UPDATE", "c9", &tag)));
    assert_eq!(sent(&mut a)[0].status(), Some(200));
    assert!(!a.status().calls[0].ack_due(), "an UPDATE has no ACK");

    a.handle(&inbound(in_dialog("INVITE", "c9", &tag)));
    assert_eq!(sent(&mut a)[0].status(), Some(200));
    assert!(a.status().calls[0].ack_due(), "the re-INVITE's 2xx");
    a.handle(&inbound(in_dialog("ACK", "c9", &tag)));
    assert!(!a.status().calls[0].ack_due());

    // A BYE before the ACK ends the call: nothing is due any more.
    a.handle(&inbound(in_dialog("INVITE", "c9", &tag)));
    sent(&mut a);
    assert!(a.status().calls[0].ack_due());
    a.handle(&inbound(in_dialog("BYE", "c9", &tag)));
    assert!(!a.status().calls[0].ack_due());
}

#[test]
fn cancel_gets_200_and_the_invite_487() {
    let mut a = agent();
    a.handle(&inbound(invite("c2")));
    sent(&mut a);
    let cancel = String::from_utf8(invite("c2"))
        .unwrap()
        .replace("INVITE sip", "CANCEL sip")
        .replace("7 INVITE", "7 CANCEL")
        .replace(
            "Call-Info",
            "Reason: SIP;cause=200;text=\"Call completed elsewhere\"\r\nX-Old",
        );
    a.handle(&inbound(cancel.into_bytes()));
    let out = sent(&mut a);
    assert_eq!(
        out.iter()
            .map(|m| (m.status(), m.cseq().unwrap().1.to_string()))
            .collect::<Vec<_>>(),
        vec![
            (Some(200), "CANCEL".to_string()),
            (Some(487), "INVITE".to_string())
        ]
    );
    match &a.status().calls[0].phase {
        Phase::Ended(End::CancelledByPeer(Some(r))) => assert!(r.contains("cause=200")),
        other => panic!("{other:?}"),
    }
    assert!(a.answer().is_err(), "a cancelled call cannot be answered");
}

#[test]
fn outgoing_call_acks_2xx_and_failures() {
    let mut a = agent();
    let id = a.invite("60972");
    let inv = sent(&mut a).remove(0);
    assert_eq!(inv.request_uri(), Some("sip:60972@sca.test"));
    let reply = |code: u16, tag: &str| {
        let b = Builder::response_to(&inv, code, Some(tag))
            .header("Contact", "<sip:b2bua@127.0.0.1:5060>")
            .build();
        inbound(b)
    };
    a.handle(&reply(180, "r1"));
    assert_eq!(a.status().calls[0].phase, Phase::Early);
    a.handle(&reply(200, "r1"));
    let ack = sent(&mut a).remove(0);
    assert!(ack.is("ACK"));
    assert_eq!(ack.request_uri(), Some("sip:b2bua@127.0.0.1:5060"));
    assert_eq!(a.status().calls[0].phase, Phase::Confirmed);
    a.hangup().unwrap();
    let bye = sent(&mut a).remove(0);
    assert_eq!(
        (bye.call_id(), bye.to_tag().as_deref()),
        (id.as_str(), Some("r1"))
    );

    let mut b = agent();
    b.invite("60972");
    let inv = sent(&mut b).remove(0);
    b.handle(&inbound(Builder::response_to(&inv, 486, Some("x")).build()));
    let ack = sent(&mut b).remove(0);
    assert_eq!((ack.is("ACK"), ack.via_branch()), (true, inv.via_branch()));
    assert_eq!(b.status().calls[0].phase, Phase::Ended(End::Failed(486)));
}

/// Two phones answered one INVITE (a forking proxy): the first answer is
/// the call, the second is ACKed and its dialog ended at once (RFC 3261
/// 13.2.2.4), its 2xx again ACKed again, and its BYE's answer is not the
/// call's.
#[test]
fn a_second_answer_from_another_dialog_is_acked_and_ended() {
    let mut a = agent();
    let id = a.invite("60970");
    let inv = sent(&mut a).remove(0);
    let reply = |tag: &str| {
        inbound(
            Builder::response_to(&inv, 200, Some(tag))
                .header("Contact", &format!("<sip:{tag}@127.0.0.1:5070>"))
                .build(),
        )
    };
    a.handle(&reply("first"));
    assert!(sent(&mut a)[0].is("ACK"));
    a.handle(&reply("second"));
    let out = sent(&mut a);
    let said: Vec<_> = out
        .iter()
        .map(|m| {
            (
                m.method().unwrap(),
                m.to_tag().unwrap(),
                m.request_uri().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        said,
        [
            (
                "ACK".into(),
                "second".into(),
                "sip:second@127.0.0.1:5070".into()
            ),
            (
                "BYE".into(),
                "second".into(),
                "sip:second@127.0.0.1:5070".into()
            ),
        ]
    );
    a.handle(&reply("second"));
    let again = sent(&mut a);
    assert!(again.len() == 1 && again[0].is("ACK"), "{again:?}");
    let st = a.status();
    assert_eq!(st.forks.count, 1);
    assert!(st.forks.first.as_deref().unwrap().contains("To-tag second"));
    assert_eq!(st.calls[0].phase, Phase::Confirmed);
    // The call's own BYE stays unanswered until its own answer comes.
    a.hangup().unwrap();
    let bye = sent(&mut a).remove(0);
    assert_eq!(bye.to_tag().as_deref(), Some("first"));
    a.handle(&inbound(Builder::response_to(&out[1], 200, None).build()));
    assert_eq!(a.status().byes_unanswered, std::slice::from_ref(&id));
    a.handle(&inbound(Builder::response_to(&bye, 200, None).build()));
    assert!(a.status().byes_unanswered.is_empty());
    assert!(a.status().problems.is_empty(), "{:?}", a.status().problems);
}

/// A CANCEL that crossed the phone's 200 has no effect (RFC 3261 9.2):
/// answered 200, the call kept, no problem.
#[test]
fn a_cancel_after_the_answer_is_answered_and_changes_nothing() {
    let mut a = agent();
    a.handle(&inbound(invite("c3")));
    a.answer().unwrap();
    sent(&mut a);
    let cancel = String::from_utf8(invite("c3"))
        .unwrap()
        .replace("INVITE sip", "CANCEL sip")
        .replace("7 INVITE", "7 CANCEL");
    a.handle(&inbound(cancel.into_bytes()));
    let out = sent(&mut a);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].status(), out[0].cseq().unwrap().1),
        (Some(200), "CANCEL")
    );
    assert_eq!(a.status().calls[0].phase, Phase::Connecting);
    assert!(a.status().problems.is_empty());
}

/// Over UDP a request whose answer was lost comes again: the same answer
/// goes back, and nothing happens twice (no "BYE for no call", no second
/// NOTIFY counted).
#[test]
fn retransmitted_requests_get_the_same_answer_and_change_nothing() {
    let mut a = agent();
    a.handle(&inbound(invite("c1")));
    let tag = sent(&mut a)[0].to_tag().unwrap();
    a.answer().unwrap();
    sent(&mut a);
    let bye = in_dialog("BYE", "c1", &tag);
    a.handle(&inbound(bye.clone()));
    let first = sent(&mut a);
    a.handle(&inbound(bye));
    let again = sent(&mut a);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].raw(), first[0].raw());
    assert!(a.status().problems.is_empty(), "{:?}", a.status().problems);

    // A different request on the same branch and CSeq is not a
    // retransmission: it is handled (here, a BYE for a call already ended).
    let other = String::from_utf8(in_dialog("BYE", "c1", &tag))
        .unwrap()
        .replace("CSeq: 8 BYE", "CSeq: 8 BYE\r\nSubject: another")
        .into_bytes();
    a.handle(&inbound(other));
    assert_eq!(sent(&mut a)[0].status(), Some(481));
    assert_eq!(a.status().problems.len(), 1);
}

/// A server that forks a phone's own INVITE back to it (the phone called
/// its own line) gets 482 on that branch, every time it asks.
#[test]
fn its_own_invite_looped_back_is_refused_as_a_loop() {
    let mut a = agent();
    a.invite("60970");
    let ours = sent(&mut a).remove(0);
    let looped = String::from_utf8(ours.raw().to_vec())
        .unwrap()
        .replacen(
            "Via: ",
            "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfork\r\nVia: ",
            1,
        )
        .into_bytes();
    for _ in 0..2 {
        a.handle(&inbound(looped.clone()));
        let out = sent(&mut a);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].start_line(), "SIP/2.0 482 Loop Detected");
    }
    assert!(a.status().problems.is_empty(), "{:?}", a.status().problems);
}

#[test]
fn stray_requests_are_refused_and_reported() {
    let mut a = agent();
    a.handle(&inbound(in_dialog("BYE", "nope", "x")));
    a.handle(&inbound(in_dialog("NOTIFY", "nope", "x")));
    let codes: Vec<_> = sent(&mut a).iter().map(|m| m.status()).collect();
    assert_eq!(codes, vec![Some(481), Some(481)]);
    assert_eq!(a.status().problems.len(), 2);
    assert!(a.hangup().is_err() && a.cancel().is_err() && a.refuse(486).is_err());
}

#[test]
fn subscription_counts_notifies_and_sees_termination() {
    let mut a = agent();
    a.subscribe_call_info("60970");
    let sub = sent(&mut a).remove(0);
    a.handle(&inbound(
        Builder::response_to(&sub, 202, Some("srv")).build(),
    ));
    assert!(a.status().subscribed);
    let notify = |state: &str| {
        let tag = sub.from_tag().unwrap();
        Builder::request("NOTIFY", "sip:60970@127.0.0.1:6000")
            .header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKn")
            .header("From", "<sip:60970@sca.test>;tag=srv")
            .header("To", &format!("<sip:60970@sca.test>;tag={tag}"))
            .header("Call-ID", sub.call_id())
            .header("CSeq", "1 NOTIFY")
            .header("Event", "call-info")
            .header("Subscription-State", state)
            .header(
                "Call-Info",
                "<sip:sca.test>;appearance-index=*;appearance-state=idle",
            )
            .build()
    };
    a.handle(&inbound(notify("active;expires=3600")));
    a.handle(&inbound(notify("terminated;reason=timeout")));
    assert_eq!(sent(&mut a).len(), 2);
    let s = a.status();
    assert_eq!((s.notifies, s.subscribed), (2, false));
}

/// A live phone (60970, over UDP, retransmitting on `t1`) with the server
/// at `server`, that has just sent its REGISTER; and the recorder of what
/// it sends and receives.
async fn registering(
    server: std::net::SocketAddr,
    t1: std::time::Duration,
) -> (crate::ua::AgentHandle, crate::sip::transport::Recorder) {
    use crate::sip::transport::{Endpoint, Recorder};
    let recorder = Recorder::default();
    let (endpoint, inbound) =
        Endpoint::bind("60970", "127.0.0.1".parse().unwrap(), recorder.clone())
            .await
            .unwrap();
    let cfg = AgentConfig {
        dn: "60970".into(),
        user: "60970".into(),
        domain: "sca.test".into(),
        local: endpoint.local_addr(),
        transport: Transport::Udp,
        server,
        nonce: "n".into(),
        t1,
        credentials: None,
        tls_uri: Default::default(),
    };
    let agent = crate::ua::AgentHandle::start(endpoint, inbound, cfg);
    agent.act(|a| a.register()).await.unwrap();
    (agent, recorder)
}

/// Every wait has a deadline: a server that never answers gives a named
/// timeout, not a hang.
#[tokio::test]
async fn a_silent_server_times_out_with_a_clear_error() {
    use crate::ua::UaError;
    use std::time::Duration;

    // A bound socket that never answers stands in for a dead server.
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (agent, recorder) =
        registering(silent.local_addr().unwrap(), crate::sip::retransmit::T1).await;
    let err = agent
        .wait_for(
            "its REGISTER to be accepted",
            Duration::from_millis(100),
            |s| s.registered,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, UaError::Timeout { .. }));
    assert_eq!(
        err.to_string(),
        "60970: timed out after 100ms waiting for its REGISTER to be accepted"
    );
    // What was sent is on record, raw.
    let sent = recorder.snapshot();
    assert_eq!(sent.len(), 1);
    assert!(sent[0]
        .raw
        .starts_with(b"REGISTER sip:sca.test SIP/2.0\r\n"));
}

/// Over UDP a lost REGISTER is sent again at T1: a server that drops the
/// first one still registers the phone, and both sends are on record.
#[tokio::test]
async fn a_lost_register_is_sent_again_over_udp() {
    use std::time::Duration;

    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (agent, recorder) =
        registering(server.local_addr().unwrap(), crate::sip::retransmit::T1).await;
    // The first REGISTER is "lost"; the second is answered.
    let mut buf = vec![0u8; 65_535];
    let (n, _) = server.recv_from(&mut buf).await.unwrap();
    let first = buf[..n].to_vec();
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), server.recv_from(&mut buf))
        .await
        .expect("no retransmission within 2 s")
        .unwrap();
    assert_eq!(buf[..n], first[..], "a retransmission is the same bytes");
    let req = Message::parse(first).unwrap();
    server
        .send_to(&Builder::response_to(&req, 200, Some("r")).build(), from)
        .await
        .unwrap();
    agent
        .wait_for("its REGISTER to be accepted", Duration::from_secs(1), |s| {
            s.registered
        })
        .await
        .unwrap();
    let sent = recorder.snapshot();
    assert_eq!(sent.len(), 3, "REGISTER, its retransmission, the 200");
    assert!(sent[1].at.duration_since(sent[0].at).unwrap() >= Duration::from_millis(450));
}

/// A wait for an answer over UDP lasts as long as the retransmissions do
/// (`Deadlines::answer`): a server that loses the first three REGISTERs
/// (sent at 0, T1 and 3·T1) and answers the fourth (7·T1) registers the
/// phone, although the plain deadline has passed by then.
#[tokio::test]
async fn a_wait_for_an_answer_outlasts_sends_the_timers_repeat() {
    use crate::run::Deadlines;
    use std::time::{Duration, Instant};

    let t1 = Duration::from_millis(40);
    let deadlines = Deadlines {
        setup: Duration::from_millis(200),
        t1,
        ..Deadlines::default()
    };
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    let (agent, _) = registering(server.local_addr().unwrap(), t1).await;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        for send in 1.. {
            let Ok((n, from)) = server.recv_from(&mut buf).await else {
                return;
            };
            if send == 4 {
                let req = Message::parse(buf[..n].to_vec()).unwrap();
                let ok = Builder::response_to(&req, 200, Some("r")).build();
                let _ = server.send_to(&ok, from).await;
            }
        }
    });
    let wait = deadlines.answer(deadlines.setup, Transport::Udp);
    agent
        .wait_for("its REGISTER to be accepted", wait, |s| s.registered)
        .await
        .unwrap();
    assert!(
        started.elapsed() > deadlines.setup,
        "the fourth send comes after the plain deadline"
    );
}

#[test]
fn seizure_is_granted_refused_and_named_in_the_next_invite() {
    let mut a = agent();
    a.seize("60970", 1, 15);
    let sub = sent(&mut a).remove(0);
    assert_eq!(sub.header("Event"), Some("line-seize"));
    assert_eq!(sub.header("Expires"), Some("15"));
    assert!(sub
        .header("Call-Info")
        .unwrap()
        .contains("appearance-index=1"));
    assert_eq!(a.status().seizure, Some(Seizure::Pending(1)));
    a.handle(&inbound(
        Builder::response_to(&sub, 200, Some("srv")).build(),
    ));
    assert_eq!(a.status().seizure, Some(Seizure::Granted(1)));
    a.invite("60972");
    let inv = sent(&mut a).remove(0);
    assert!(inv
        .header("Call-Info")
        .unwrap()
        .contains("appearance-index=1"));

    let mut b = agent();
    b.seize("60970", 1, 15);
    let sub = sent(&mut b).remove(0);
    b.handle(&inbound(Builder::response_to(&sub, 480, None).build()));
    assert_eq!(b.status().seizure, Some(Seizure::Refused(480)));
    b.invite("60972");
    assert!(
        sent(&mut b)[0].header("Call-Info").is_none(),
        "no seizure, no appearance"
    );
}

/// The agent with call "c9" offered, answered and ACKed: established.
fn answered(a: &mut Agent) {
    a.handle(&inbound(invite("c9")));
    let tag = sent(a)[0].to_tag().unwrap();
    a.answer().unwrap();
    sent(a);
    let ack = String::from_utf8(in_dialog("ACK", "c9", &tag))
        .unwrap()
        .replace("8 ACK", "7 ACK");
    a.handle(&inbound(ack.into_bytes()));
}

#[test]
fn hold_is_a_sendonly_reinvite_acked_with_its_own_cseq() {
    let mut a = agent();
    answered(&mut a);
    assert!(a.hold(false, HoldStyle::SendOnly).is_ok());
    let reinvite = sent(&mut a).remove(0);
    assert!(reinvite.is("INVITE"));
    assert_eq!(reinvite.request_uri(), Some("sip:b2bua@127.0.0.1:5060"));
    assert!(String::from_utf8_lossy(reinvite.body()).contains("a=sendonly"));
    assert_eq!(
        reinvite.header("Call-Info"),
        Some("<sip:sca.test>;appearance-index=1")
    );
    let (n, _) = reinvite.cseq().unwrap();
    a.handle(&inbound(Builder::response_to(&reinvite, 200, None).build()));
    let ack = sent(&mut a).remove(0);
    assert_eq!(ack.cseq(), Some((n, "ACK")));
    assert!(a.status().calls[0].held);

    assert!(a.hold(true, HoldStyle::SendOnly).is_ok());
    let private = sent(&mut a).remove(0);
    assert!(private
        .header("Call-Info")
        .unwrap()
        .contains("appearance-index=1;appearance-state=held-private"));
}

/// Each other form of hold: an RFC 2543 or inactive re-INVITE, or an
/// UPDATE that is answered without an ACK and holds on its 2xx.
#[test]
fn each_hold_style_sends_its_own_request_and_an_update_is_not_acked() {
    for style in [HoldStyle::Inactive, HoldStyle::Rfc2543, HoldStyle::Update] {
        let mut a = agent();
        answered(&mut a);
        a.hold(false, style).unwrap();
        let hold = sent(&mut a).remove(0);
        assert!(hold.is(style.method()), "{style:?}");
        assert_eq!(HoldStyle::of(style.method(), hold.body()), Some(style));
        a.handle(&inbound(Builder::response_to(&hold, 200, None).build()));
        let after = sent(&mut a);
        match style {
            HoldStyle::Update => assert!(after.is_empty(), "an UPDATE's 2xx is not ACKed"),
            _ => assert!(after[0].is("ACK"), "{style:?}"),
        }
        assert!(a.status().calls[0].held, "{style:?}");
    }
}

#[test]
fn join_invites_the_line_for_an_appearance() {
    let mut a = agent();
    a.join_appearance("60970", 2);
    let inv = sent(&mut a).remove(0);
    assert_eq!(inv.request_uri(), Some("sip:60970@sca.test"));
    assert!(inv
        .header("Call-Info")
        .unwrap()
        .contains("appearance-index=2"));
    a.handle(&inbound(Builder::response_to(&inv, 403, Some("x")).build()));
    assert_eq!(a.status().calls[0].phase, Phase::Ended(End::Failed(403)));
}

#[test]
fn refresh_and_unsubscribe_stay_in_the_subscription_dialog() {
    let mut a = agent();
    assert!(a.refresh_call_info(3600).is_err(), "nothing to refresh yet");
    a.subscribe_call_info("60970");
    let sub = sent(&mut a).remove(0);
    a.handle(&inbound(
        Builder::response_to(&sub, 202, Some("srv"))
            .header("Expires", "3600")
            .build(),
    ));
    a.refresh_call_info(0).unwrap();
    let unsub = sent(&mut a).remove(0);
    assert_eq!(unsub.call_id(), sub.call_id());
    assert_eq!(unsub.to_tag().as_deref(), Some("srv"));
    assert_eq!(unsub.cseq(), Some((2, "SUBSCRIBE")));
    assert_eq!(unsub.header("Expires"), Some("0"));
    a.handle(&inbound(
        Builder::response_to(&unsub, 202, None)
            .header("Expires", "0")
            .build(),
    ));
    let s = a.status();
    assert_eq!((s.subscribed, s.subscribe_answers), (false, 2));
}

#[test]
fn an_invite_with_replaces_is_taken_at_once_and_ends_the_replaced_call() {
    let mut a = agent();
    a.handle(&inbound(invite("c1")));
    let tag = sent(&mut a)[0].to_tag().unwrap();
    a.answer().unwrap();
    sent(&mut a);
    let ack = String::from_utf8(in_dialog("ACK", "c1", &tag))
        .unwrap()
        .replace("8 ACK", "7 ACK");
    a.handle(&inbound(ack.into_bytes()));
    let replacing = String::from_utf8(invite("c2")).unwrap().replace(
        "Call-Info",
        &format!("Replaces: c1;to-tag={tag};from-tag=srv\r\nX-Old"),
    );
    a.handle(&inbound(replacing.into_bytes()));
    let out = sent(&mut a);
    assert_eq!(out[0].status(), Some(200), "no ringing for a Replaces");
    assert!(out[1].is("BYE") && out[1].call_id() == "c1");
    let s = a.status();
    assert_eq!(
        (s.calls[0].phase.clone(), s.calls[1].phase.clone()),
        (Phase::Ended(End::ByeUs), Phase::Connecting)
    );
}

#[test]
fn teardown_messages_are_marked() {
    let mut a = agent();
    a.handle(&inbound(invite("c1")));
    sent(&mut a);
    a.tear_down();
    let out = sent(&mut a);
    assert_eq!(
        out.iter()
            .map(|m| m.status().map(|s| s.to_string()).or(m.method()).unwrap())
            .collect::<Vec<_>>(),
        ["486", "REGISTER"]
    );
    assert!(out
        .iter()
        .all(|m| m.header("X-Scacheck") == Some("teardown")));
}

/// A call-info NOTIFY from the notifier `from_tag` in the subscription
/// `sub` opened (its Call-ID, its From-tag as the To-tag).
fn notify_in(sub: &Message, from_tag: &str, state: &str, call_info: &str) -> Vec<u8> {
    let tag = sub.from_tag().unwrap();
    Builder::request("NOTIFY", "sip:60970@127.0.0.1:6000")
        .header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKn")
        .header("From", &format!("<sip:60970@sca.test>;tag={from_tag}"))
        .header("To", &format!("<sip:60970@sca.test>;tag={tag}"))
        .header("Call-ID", sub.call_id())
        .header("CSeq", "1 NOTIFY")
        .header("Contact", "<sip:notifier@127.0.0.1:5060>")
        .header("Event", "call-info")
        .header("Subscription-State", state)
        .header("Call-Info", call_info)
        .build()
}

const ALL_IDLE: &str = "<sip:sca.test>;appearance-index=*;appearance-state=idle";

/// A call-info NOTIFY whose Call-Info cannot be read (an index that is not
/// a number, a state outside the model) is answered, and reported.
#[test]
fn unreadable_call_info_in_a_notify_is_a_problem() {
    for (element, says) in [
        (
            "<sip:sca.test>;appearance-index=1;appearance-state=ringing",
            "appearance-state \"ringing\" is not a state of the SCA model",
        ),
        (
            "<sip:sca.test>;appearance-index=first;appearance-state=idle",
            "appearance-index \"first\" is not a number",
        ),
    ] {
        let mut a = agent();
        a.subscribe_call_info("60970");
        let sub = sent(&mut a).remove(0);
        a.handle(&inbound(notify_in(&sub, "srv", "active", element)));
        assert_eq!(sent(&mut a)[0].status(), Some(200));
        let problems = a.status().problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("NOTIFY with unreadable Call-Info: "),
            "{problems:?}"
        );
        assert!(problems[0].contains(says), "{problems:?}");
    }
}

/// Over UDP the 2xx to the SUBSCRIBE may be lost (or come after the NOTIFY):
/// the first NOTIFY of the subscription establishes it (RFC 6665 4.1.2.4),
/// so the phone is subscribed, refreshes in the dialog the NOTIFY made, and
/// takes the late 2xx without complaint.
#[test]
fn a_notify_before_the_2xx_establishes_the_subscription() {
    let mut a = agent();
    a.subscribe_call_info("60970");
    let sub = sent(&mut a).remove(0);
    assert!(a.refresh_call_info(3600).is_err(), "not established yet");
    a.handle(&inbound(notify_in(
        &sub,
        "ntf",
        "active;expires=3600",
        ALL_IDLE,
    )));
    assert_eq!(sent(&mut a)[0].status(), Some(200));
    let s = a.status();
    assert!(s.subscribed && s.notifies == 1, "{s:?}");
    a.refresh_call_info(3600).unwrap();
    let refresh = sent(&mut a).remove(0);
    assert_eq!(refresh.to_tag().as_deref(), Some("ntf"));
    assert_eq!(
        refresh.request_uri(),
        Some("sip:notifier@127.0.0.1:5060"),
        "the NOTIFY's Contact is the dialog's target"
    );
    a.handle(&inbound(
        Builder::response_to(&sub, 200, Some("ntf"))
            .header("Expires", "3600")
            .build(),
    ));
    let s = a.status();
    assert!(s.subscribed && s.subscribe_answers == 1, "{s:?}");
    assert!(s.problems.is_empty(), "{:?}", s.problems);
}

/// A NOTIFY of another dialog than the phone's subscription (another
/// Call-ID, a To-tag the phone never gave, a From-tag other than the
/// notifier's) is refused with 481 and reported; the subscription's own
/// NOTIFY is taken.
#[test]
fn a_notify_with_foreign_ids_is_outside_the_subscription() {
    let mut a = agent();
    a.subscribe_call_info("60970");
    let sub = sent(&mut a).remove(0);
    a.handle(&inbound(
        Builder::response_to(&sub, 202, Some("srv")).build(),
    ));
    let own = String::from_utf8(notify_in(&sub, "srv", "active", ALL_IDLE)).unwrap();
    let tag = sub.from_tag().unwrap();
    let foreign = [
        own.replace(sub.call_id(), "another-call-id"),
        own.replace(&format!(";tag={tag}"), ";tag=not-ours"),
        own.replace(";tag=srv", ";tag=an-impostor"),
    ];
    for notify in foreign {
        a.handle(&inbound(notify.into_bytes()));
        assert_eq!(sent(&mut a)[0].status(), Some(481));
    }
    let problems = a.status().problems;
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems
        .iter()
        .all(|p| p.starts_with("NOTIFY outside our subscriptions")));
    assert_eq!(a.status().notifies, 0);
    a.handle(&inbound(own.into_bytes()));
    assert_eq!(sent(&mut a)[0].status(), Some(200));
    assert_eq!((a.status().notifies, a.status().problems.len()), (1, 3));
}

/// A request of no dialog the phone has is a problem when it is addressed
/// to the phone, and only counted when it is for another SIP identity (a
/// contact an earlier phone had at this address); a new call for another
/// identity is still a call the phone takes, so nothing the server sends
/// the phone itself is hidden.
#[test]
fn only_a_stranger_addressed_to_another_identity_is_a_stray() {
    let mut a = agent();
    let ours = in_dialog("BYE", "gone", "t1");
    let theirs = String::from_utf8(ours.clone())
        .unwrap()
        .replace("BYE sip:60970@", "BYE sip:60970-8@")
        .into_bytes();
    a.handle(&inbound(theirs));
    assert_eq!(sent(&mut a)[0].status(), Some(481));
    a.handle(&inbound(ours));
    assert_eq!(sent(&mut a)[0].status(), Some(481));
    let s = a.status();
    assert_eq!(s.strays.count, 1);
    assert!(
        s.strays
            .first
            .as_deref()
            .is_some_and(|f| f.contains("(for 60970-8)")),
        "{s:?}"
    );
    assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
    assert!(s.problems[0].starts_with("BYE for no established call"));
    // An INVITE with a Request-URI of another user still rings.
    let other = String::from_utf8(invite("new"))
        .unwrap()
        .replace("INVITE sip:60970@", "INVITE sip:60970-8@")
        .into_bytes();
    a.handle(&inbound(other));
    assert_eq!(sent(&mut a).last().and_then(|m| m.status()), Some(180));
}

mod auth {
    use super::*;
    use crate::sip::auth::{Algorithm, Challenger, Credentials, Gate, Kind, Secret};

    fn phone(password: Option<&str>) -> Agent {
        Agent::new(AgentConfig {
            credentials: password.map(|p| Credentials {
                user: "60970".into(),
                password: Secret::new(p),
            }),
            ..config()
        })
    }

    fn server() -> Challenger {
        Challenger::new(
            "sca.test",
            &[Algorithm::Sha256, Algorithm::Md5],
            vec![("60970".into(), Secret::new("right"))],
            "n",
        )
    }

    /// The server's answer to `req`: its challenge, or `ok` when the
    /// credentials pass.
    fn answer(srv: &mut Challenger, req: &Message, kind: Kind, ok: u16) -> Vec<u8> {
        match srv.check(req, kind) {
            Gate::Pass => Builder::response_to(req, ok, Some("srv")).build(),
            Gate::Challenge { status, headers } => headers
                .iter()
                .fold(
                    Builder::response_to(req, status, Some("srv")),
                    |b, (n, v)| b.header(n, v),
                )
                .build(),
        }
    }

    #[test]
    fn a_challenged_register_is_sent_again_with_credentials_and_they_are_reused() {
        let mut a = phone(Some("right"));
        let mut srv = server();
        a.register();
        let first = sent(&mut a).remove(0);
        assert_eq!(first.header("Authorization"), None);
        a.handle(&inbound(answer(&mut srv, &first, Kind::Www, 200)));
        let again = sent(&mut a).remove(0);
        assert_eq!(again.cseq(), Some((2, "REGISTER")));
        assert_ne!(again.via_branch(), first.via_branch());
        assert!(again
            .header("Authorization")
            .unwrap()
            .contains("algorithm=SHA-256"));
        a.handle(&inbound(answer(&mut srv, &again, Kind::Www, 200)));
        let s = a.status();
        assert!(s.registered && s.auth_failed.is_none() && s.problems.is_empty());
        assert_eq!(s.challenges, 1);
        // The next request carries the credentials at once: no challenge.
        a.unregister();
        let later = sent(&mut a).remove(0);
        assert_eq!(later.cseq(), Some((3, "REGISTER")));
        assert!(later
            .header("Authorization")
            .unwrap()
            .contains("nc=00000002"));
        assert_eq!(srv.check(&later, Kind::Www), Gate::Pass);
    }

    #[test]
    fn a_challenged_invite_is_acked_sent_again_and_cancelled_in_its_new_transaction() {
        let mut a = phone(Some("right"));
        let mut srv = server();
        a.invite("60972");
        let first = sent(&mut a).remove(0);
        let challenge = answer(&mut srv, &first, Kind::Proxy, 180);
        a.handle(&inbound(challenge.clone()));
        let out = sent(&mut a);
        assert_eq!(out.len(), 2, "the ACK and the INVITE again");
        assert_eq!(out[0].method().as_deref(), Some("ACK"));
        assert_eq!(
            (out[0].via_branch(), out[0].cseq()),
            (first.via_branch(), Some((1, "ACK")))
        );
        let again = &out[1];
        assert_eq!(again.cseq(), Some((2, "INVITE")));
        assert!(again.header("Proxy-Authorization").is_some());
        assert_eq!(again.body(), first.body());
        // The challenge retransmitted: the ACK again, no third INVITE.
        a.handle(&inbound(challenge));
        let out = sent(&mut a);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].method().as_deref(), Some("ACK"));
        assert_eq!(a.status().calls[0].phase, Phase::Calling);
        // A CANCEL names the INVITE that is pending: the second one.
        a.cancel().unwrap();
        let cancel = sent(&mut a).remove(0);
        assert_eq!(
            (cancel.via_branch(), cancel.cseq()),
            (again.via_branch(), Some((2, "CANCEL")))
        );
        assert!(a.status().problems.is_empty() && a.status().auth_failed.is_none());
    }

    #[test]
    fn a_second_challenge_after_credentials_fails_authentication_and_names_the_phone() {
        for (password, want) in [
            (
                Some("wrong"),
                "authentication failed for 60970: 401 after credentials",
            ),
            (
                None,
                "authentication failed for 60970: 401 and no credentials to answer it",
            ),
        ] {
            let mut a = phone(password);
            let mut srv = server();
            a.register();
            let mut last = sent(&mut a).remove(0);
            for _ in 0..3 {
                a.handle(&inbound(answer(&mut srv, &last, Kind::Www, 200)));
                match sent(&mut a).pop() {
                    Some(m) => last = m,
                    None => break,
                }
            }
            let s = a.status();
            assert_eq!(s.auth_failed.as_deref(), Some(want));
            // Inconclusive, not the server's fault: no problem is noted.
            assert!(s.problems.is_empty() && !s.registered, "{s:?}");
        }
    }

    #[test]
    fn a_stale_nonce_is_answered_again_and_a_held_call_is_held_after_its_challenge() {
        let mut a = phone(Some("right"));
        let mut srv = server();
        a.handle(&inbound(invite("c9")));
        sent(&mut a);
        a.answer().unwrap();
        let tag = sent(&mut a)[0].to_tag().unwrap();
        let ack = String::from_utf8(in_dialog("ACK", "c9", &tag))
            .unwrap()
            .replace("8 ACK", "7 ACK");
        a.handle(&inbound(ack.into_bytes()));
        // Spend nonces until the server says stale; the phone goes on.
        let mut stale_seen = 0;
        for _ in 0..crate::sip::auth::NONCE_USES + 2 {
            a.hold(false, HoldStyle::SendOnly).unwrap();
            let mut req = sent(&mut a).remove(0);
            loop {
                let resp = answer(&mut srv, &req, Kind::Proxy, 200);
                let stale = String::from_utf8_lossy(&resp).contains("stale=true");
                stale_seen += usize::from(stale);
                a.handle(&inbound(resp));
                let out = sent(&mut a);
                match out.iter().find(|m| m.is("INVITE")) {
                    Some(m) => req = m.clone(),
                    None => break,
                }
            }
            assert!(a.status().calls[0].held);
        }
        assert!(stale_seen > 0);
        let s = a.status();
        assert!(s.auth_failed.is_none() && s.problems.is_empty(), "{s:?}");
    }

    #[test]
    fn the_cleanup_sent_again_after_a_challenge_is_still_marked() {
        let mut a = phone(Some("right"));
        let mut srv = server();
        a.register();
        let first = sent(&mut a).remove(0);
        a.handle(&inbound(answer(&mut srv, &first, Kind::Www, 200)));
        let again = sent(&mut a).remove(0);
        a.handle(&inbound(answer(&mut srv, &again, Kind::Www, 200)));
        // A fresh server nonce: the teardown's unregister is challenged.
        let mut other = server();
        a.tear_down();
        let bye = sent(&mut a).remove(0);
        assert!(String::from_utf8_lossy(bye.raw()).contains(crate::ua::agent::TEARDOWN_HEADER));
        a.handle(&inbound(answer(&mut other, &bye, Kind::Www, 200)));
        let resent = sent(&mut a).remove(0);
        assert_eq!(resent.cseq().map(|c| c.1), Some("REGISTER"));
        let text = String::from_utf8_lossy(resent.raw()).to_string();
        assert_eq!(
            text.matches(crate::ua::agent::TEARDOWN_HEADER).count(),
            1,
            "{text}"
        );
    }
}

/// A phone over TLS that writes its URIs as `uri` says.
fn tls_agent(uri: crate::sip::tls::TlsUri) -> Agent {
    let mut a = agent();
    let mut cfg = a.config().clone();
    cfg.transport = Transport::Tls;
    cfg.tls_uri = uri;
    a = Agent::new(cfg);
    a
}

/// Over TLS a phone says so in its Via and its Contact, as the profile
/// chose: `transport=tls` with `sip:` URIs, or `sips:` everywhere.
#[test]
fn over_tls_the_via_contact_and_uris_say_tls() {
    use crate::sip::tls::TlsUri;
    for (uri, contact, scheme) in [
        (
            TlsUri::TransportParam,
            "<sip:60970@127.0.0.1:6000;transport=tls>",
            "sip",
        ),
        (TlsUri::Sips, "<sips:60970@127.0.0.1:6000>", "sips"),
    ] {
        let mut a = tls_agent(uri);
        a.register();
        a.subscribe_call_info("60970");
        a.invite("60972");
        let out = sent(&mut a);
        let (reg, sub, inv) = (&out[0], &out[1], &out[2]);
        for m in &out {
            assert!(
                m.header("Via")
                    .unwrap()
                    .starts_with("SIP/2.0/TLS 127.0.0.1:6000;"),
                "{:?}",
                m.header("Via")
            );
            assert_eq!(m.header("Contact"), Some(contact), "{uri:?}");
            assert_eq!(
                m.header("From").unwrap().split(';').next(),
                Some(format!("<{scheme}:60970@sca.test>").as_str())
            );
        }
        assert_eq!(
            reg.request_uri(),
            Some(format!("{scheme}:sca.test").as_str())
        );
        assert_eq!(
            sub.request_uri(),
            Some(format!("{scheme}:60970@sca.test").as_str())
        );
        assert_eq!(
            inv.request_uri(),
            Some(format!("{scheme}:60972@sca.test").as_str())
        );
    }
    // UDP and TCP are as they were, whatever the TLS choice.
    let mut a = agent();
    let mut cfg = a.config().clone();
    cfg.tls_uri = TlsUri::Sips;
    a = Agent::new(cfg.clone());
    a.register();
    assert_eq!(
        sent(&mut a)[0].header("Contact"),
        Some("<sip:60970@127.0.0.1:6000>")
    );
    cfg.transport = Transport::Tcp;
    a = Agent::new(cfg);
    a.register();
    assert_eq!(
        sent(&mut a)[0].header("Contact"),
        Some("<sip:60970@127.0.0.1:6000;transport=tcp>")
    );
}

/// A proxy that records a TLS route: the dialog's requests carry it as
/// their Route, and still go to the outbound server.
#[test]
fn a_record_route_over_tls_is_followed_through_the_outbound_server() {
    let mut a = tls_agent(crate::sip::tls::TlsUri::TransportParam);
    a.invite("60972");
    let inv = sent(&mut a).remove(0);
    let rr = "<sip:127.0.0.1:5061;transport=tls;lr>";
    let ok = Builder::response_to(&inv, 200, Some("r1"))
        .header("Record-Route", rr)
        .header("Contact", "<sip:60972@127.0.0.1:7000;transport=tls>")
        .build();
    a.handle(&inbound(ok));
    a.hangup().unwrap();
    let out: Vec<Transmit> = std::iter::from_fn(|| a.poll_transmit()).collect();
    assert_eq!(out.len(), 2, "ACK and BYE");
    for t in out {
        assert_eq!(t.to, SERVER.parse::<SocketAddr>().unwrap());
        let m = Message::parse(t.bytes).unwrap();
        assert_eq!(m.header("Route"), Some(rr), "{}", m.start_line());
        assert_eq!(
            m.request_uri(),
            Some("sip:60972@127.0.0.1:7000;transport=tls")
        );
    }
}

/// The leak check's probe owns nothing: it subscribes with a Contact of
/// its own at the phone's address (a server that takes a fresh SUBSCRIBE
/// from an appearance's owner for a reboot releases the appearance, so a
/// probe with the phone's Contact would release the leak it looks for),
/// and its unsubscribe keeps that Contact, as every refresh keeps its
/// subscription's.
#[test]
fn the_leak_probe_subscribes_as_a_contact_of_its_own() {
    let mut a = agent();
    let sub = subscribed(&mut a);
    assert_eq!(
        sub.contact_uri().as_deref(),
        Some("sip:60970@127.0.0.1:6000")
    );
    let call_id = a.probe_call_info("60970");
    let probe = accept_subscribe(&mut a);
    assert_eq!(probe.call_id(), call_id);
    assert_ne!(probe.call_id(), sub.call_id());
    assert_eq!(
        probe.contact_uri().as_deref(),
        Some("sip:60970-probe@127.0.0.1:6000")
    );
    assert_eq!(
        probe
            .from()
            .and_then(|f| f.user().map(str::to_string))
            .as_deref(),
        Some("60970")
    );
    assert!(a.end_probe());
    let unsub = sent(&mut a).remove(0);
    assert_eq!(unsub.call_id(), call_id);
    assert_eq!(unsub.header("Expires"), Some("0"));
    assert_eq!(
        unsub.contact_uri().as_deref(),
        Some("sip:60970-probe@127.0.0.1:6000")
    );
}

/// The teardown's first half ends the calls and leaves the subscription;
/// the phone counts its BYE unanswered until a final answer comes.
#[test]
fn ending_calls_keeps_the_subscription_and_waits_for_the_bye_answer() {
    let mut a = agent();
    subscribed(&mut a);
    answered(&mut a);
    a.end_calls();
    let out = sent(&mut a);
    let bye = out.iter().find(|m| m.is("BYE")).expect("a BYE");
    assert!(out.iter().all(|m| !m.is("SUBSCRIBE")), "{out:?}");
    assert_eq!(a.status().byes_unanswered, vec!["c9".to_string()]);
    assert!(a.status().subscribed);
    a.handle(&inbound(Builder::response_to(bye, 200, None).build()));
    assert!(a.status().byes_unanswered.is_empty());
    a.release();
    let unsub = sent(&mut a)
        .into_iter()
        .find(|m| m.is("SUBSCRIBE"))
        .expect("an unsubscribe");
    assert_eq!(unsub.header("Expires"), Some("0"));
}

/// A call-info subscription of line 60970, accepted by the server.
fn subscribed(a: &mut Agent) -> Message {
    a.subscribe_call_info("60970");
    accept_subscribe(a)
}

/// The SUBSCRIBE the phone just sent, answered 202 by the server.
fn accept_subscribe(a: &mut Agent) -> Message {
    let sub = sent(a).remove(0);
    a.handle(&inbound(
        Builder::response_to(&sub, 202, Some("srv"))
            .header("Expires", "3600")
            .build(),
    ));
    sub
}

/// refuse-notify: the next NOTIFY of the subscription is answered 481 and
/// the subscription is gone for the phone; every later NOTIFY on it gets
/// 481 as well, and none is a problem of the phone's (a server that keeps
/// notifying is the case's finding).
#[test]
fn a_refused_subscription_answers_481_from_then_on() {
    let mut a = agent();
    let sub = subscribed(&mut a);
    a.refuse_notifies();
    for _ in 0..2 {
        a.handle(&inbound(notify_in(
            &sub,
            "srv",
            "active;expires=3600",
            ALL_IDLE,
        )));
        let out = sent(&mut a);
        assert_eq!(out[0].status(), Some(481), "{out:?}");
    }
    let s = a.status();
    assert!(!s.subscribed && s.problems.is_empty(), "{s:?}");
    // Nothing left to unsubscribe.
    assert!(a.refresh_call_info(0).is_err());
}

/// Two phones of a shared line may register one SIP user (Kamailio's
/// profile does): their REGISTER, subscriptions and answers must still be
/// dialogs of their own, or a server (and the caller) would take one
/// phone's for the other's.
#[test]
fn two_phones_of_one_sip_user_make_ids_of_their_own() {
    let ids = |dn: &str| {
        let mut a = Agent::new(AgentConfig {
            dn: dn.into(),
            user: "60970-1".into(),
            ..config()
        });
        a.register();
        let reg = sent(&mut a).remove(0);
        a.subscribe_call_info("60970");
        let sub = sent(&mut a).remove(0);
        a.handle(&inbound(invite("c1")));
        let ringing = sent(&mut a).remove(0);
        (
            reg.call_id().to_string(),
            sub.call_id().to_string(),
            sub.from_tag().unwrap(),
            sub.via_branch().unwrap(),
            ringing.to_tag().unwrap(),
        )
    };
    let (one, two) = (ids("60970"), ids("60970_2"));
    assert_ne!(one.0, two.0, "REGISTER Call-ID");
    assert_ne!(one.1, two.1, "SUBSCRIBE Call-ID");
    assert_ne!(one.2, two.2, "SUBSCRIBE From-tag");
    assert_ne!(one.3, two.3, "SUBSCRIBE branch");
    assert_ne!(one.4, two.4, "To-tag of the answer");
}
