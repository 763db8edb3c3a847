//! Server defects that a relay between the phones and Kamailio simulates
//! live (`fixtures/targets/kamailio/hostile.sh`), reproduced here without
//! Kamailio: Kamailio's recorded captures (`fixtures/captures/kamailio/`)
//! rewritten as the relay rewrites what the server sends, then checked with
//! Kamailio's profile. Each defect must fail its cases: a declared
//! deviation excuses exactly what it names, never a defect beside it.

mod common;
use common::{judge_capture, kamailio_captures, suite};

use std::net::SocketAddr;

use scacheck::check::endpoints;
use scacheck::outcome::Verdict;
use scacheck::pcap::Packet;
use scacheck::suite::Prepared;
use scacheck::target::Profile;
use scacheck::topology::Topology;

/// A message with `edit` applied to its head and body, Content-Length made
/// to fit the new body (as a rewriting relay must).
fn rewrite(raw: &[u8], edit: impl Fn(&str) -> String) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (head, body) = (edit(head), edit(body));
    let head: Vec<String> = head
        .split("\r\n")
        .map(|l| {
            if l.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {}", body.len())
            } else {
                l.to_string()
            }
        })
        .collect();
    format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
}

fn text(p: &Packet) -> String {
    String::from_utf8_lossy(&p.raw).into_owned()
}

/// The address the capture's phone `dn` used.
fn address_of(packets: &[Packet], topology: &Topology, profile: &Profile, dn: &str) -> SocketAddr {
    let line = scacheck::check::line_of(packets, &profile.lines, topology);
    endpoints(packets, topology, &line.users)
        .into_iter()
        .find(|(_, d)| d == dn)
        .map(|(a, _)| a)
        .unwrap_or_else(|| panic!("no phone {dn} in the capture"))
}

/// Checks the rewritten captures of `cases`: each must fail.
fn each_fails(
    cases: &[&str],
    defect: &str,
    rewrite: impl Fn(&Prepared, &Topology, &Profile, Vec<Packet>) -> Vec<Packet>,
) {
    let (prepared, topology) = suite();
    let (profile, captures) = kamailio_captures(&prepared, &topology);
    for id in cases {
        let (p, packets) = captures
            .iter()
            .find(|(p, _)| p.case.id == *id)
            .expect("a capture of the case");
        // The capture as recorded is what the profile declares.
        let honest = judge_capture(p, packets, &topology, &profile);
        assert!(
            honest.verdict.expected(),
            "{id} as recorded: {:?} {:?}",
            honest.verdict,
            honest.headline()
        );
        let rewritten = rewrite(p, &topology, &profile, packets.clone());
        let r = judge_capture(p, &rewritten, &topology, &profile);
        assert_eq!(
            r.verdict,
            Verdict::Fail,
            "{id} with {defect} must fail; got {:?}, notes {:?}",
            r.verdict,
            r.notes
        );
        let d = r.first_divergence().expect("a divergence");
        assert!(
            r.stages
                .iter()
                .flat_map(|s| &s.channels)
                .any(|c| c.unexcused() == Some(d)),
            "{id}: the headline is an unexcused divergence: {d}"
        );
        println!("{id} with {defect}: FAIL, {d}");
    }
}

#[test]
fn held_instead_of_progressing_while_dialling_fails_every_outbound_case() {
    each_fails(
        &[
            "outbound-call",
            "outbound-hangup-answered",
            "outbound-abandoned",
        ],
        "held told while dialling",
        |_, _, _, packets| {
            packets
                .into_iter()
                .map(|mut p| {
                    if text(&p).starts_with("NOTIFY ") {
                        p.raw = rewrite(&p.raw, |s| {
                            s.replace("appearance-state=progressing", "appearance-state=held")
                        });
                    }
                    p
                })
                .collect()
        },
    );
}

#[test]
fn an_invite_never_forked_to_the_second_phone_fails_inbound_alerting() {
    each_fails(
        &["inbound-alerting"],
        "no fork to 60970_2",
        |_, topology, profile, packets| {
            let second = address_of(&packets, topology, profile, "60970_2");
            // Every message of the INVITE dialog the server opened with the
            // second phone goes: it never heard of the call.
            let call_id = |p: &Packet| {
                text(p)
                    .lines()
                    .find_map(|l| l.strip_prefix("Call-ID: ").map(str::to_string))
            };
            let forked: Vec<Option<String>> = packets
                .iter()
                .filter(|p| p.dst == second && text(p).starts_with("INVITE "))
                .map(call_id)
                .collect();
            assert!(!forked.is_empty(), "the capture forks to 60970_2");
            packets
                .into_iter()
                .filter(|p| !((p.dst == second || p.src == second) && forked.contains(&call_id(p))))
                .collect()
        },
    );
}

/// 2,000 NOTIFYs per phone in its call-info dialog, held and active in
/// turn, as soon as the stage's first step is sent.
#[test]
fn a_notify_flood_fails_inbound_alerting_and_retrieve_idle() {
    each_fails(
        &["inbound-alerting", "retrieve-idle"],
        "a flood of 2,000 NOTIFYs per phone",
        |p, topology, profile, packets| {
            let first_step = &p.case.stages[0].steps[0];
            let actor = address_of(&packets, topology, profile, &first_step.actor);
            let at = packets
                .iter()
                .position(|q| q.src == actor && text(q).starts_with("INVITE "))
                .expect("the stage's INVITE");
            let mut flood = Vec::new();
            for dn in ["60970", "60970_2"] {
                let phone = address_of(&packets, topology, profile, dn);
                let notify = packets[..at]
                    .iter()
                    .rfind(|q| {
                        q.dst == phone
                            && text(q).starts_with("NOTIFY ")
                            && text(q).contains("Event: call-info")
                    })
                    .expect("a call-info NOTIFY before the stage");
                for i in 0..2000u32 {
                    let state = if i % 2 == 0 { "held" } else { "active" };
                    let mut q = notify.clone();
                    q.time = packets[at].time + std::time::Duration::from_micros(u64::from(i) + 1);
                    q.raw = rewrite(&notify.raw, |s| {
                        s.lines()
                            .map(|l| {
                                if l.starts_with("Call-Info:") {
                                    format!(
                                        "Call-Info: <sip:sca.test>;appearance-index=1;appearance-state={state}"
                                    )
                                } else if let Some(n) = l.strip_prefix("CSeq: ") {
                                    let n: u32 = n.split(' ').next().unwrap().parse().unwrap();
                                    format!("CSeq: {} NOTIFY", n + 100 + i)
                                } else {
                                    l.to_string()
                                }
                            })
                            .collect::<Vec<_>>()
                            .join("\r\n")
                    });
                    flood.push(q);
                }
            }
            let mut out = packets;
            out.splice(at + 1..at + 1, flood);
            out
        },
    );
}
