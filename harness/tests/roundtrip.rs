//! A capture of a live run, checked as a capture, must give the same
//! derived events, stage by stage, and the same verdict as the run itself.
//! On the embedded server the run's T-Library events come from its feed,
//! not from SIP, so the events compared are the wire layer's (all of them,
//! T-Library included, on Kamailio: fixtures/targets/kamailio/pcap-roundtrip.sh).

mod common;
use common::suite;

use scacheck::check::{check, endpoints, records, stage_starts};
use scacheck::model::Channel;
use scacheck::pcap::{packets_from_records, write_packets, Packet, Reader};
use scacheck::run::{run_all, RunOptions};

fn round_trip(transport: scacheck::sip::Transport) {
    let (prepared, topology) = suite();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let live = rt.block_on(run_all(
        &prepared,
        &topology,
        RunOptions {
            transport,
            ..RunOptions::default()
        },
    ));
    let line = scacheck::line::Identities::own(&topology);
    let mut errors = Vec::new();
    for (p, run) in prepared.iter().zip(&live) {
        // Through a real capture file: written as a run writes it, read
        // back as any capture is read.
        let mut file = Vec::new();
        write_packets(&mut file, &packets_from_records(&run.records)).unwrap();
        let mut reader = Reader::from_reader(std::io::Cursor::new(file)).unwrap();
        let captured: Vec<Packet> = std::iter::from_fn(|| reader.next_packet().unwrap()).collect();
        assert_eq!(
            reader.skipped(),
            &Default::default(),
            "{}: nothing skipped",
            p.case.id
        );
        let who = endpoints(&captured, &topology, &line.users);
        let recs = records(&captured, &who);
        let Some(starts) = stage_starts(p, &recs, &topology, &line) else {
            errors.push(format!(
                "{}: the capture does not show the case's steps",
                p.case.id
            ));
            continue;
        };
        let checked = check(p, recs, &topology, &line, &starts, &[]);
        // Channel by channel, as the diff compares: order across channels
        // (two phones' messages) is not part of the verdict.
        let wire = |events: &[(String, scacheck::observation::Observation)]| {
            let mut by_channel: std::collections::BTreeMap<(String, String), Vec<String>> =
                Default::default();
            for (s, o) in events
                .iter()
                .filter(|(s, o)| s != "setup" && matches!(o.channel, Channel::Wire(_)))
            {
                by_channel
                    .entry((s.clone(), o.channel.to_string()))
                    .or_default()
                    .push(o.event.to_string());
            }
            by_channel
        };
        if wire(&run.events) != wire(&checked.events) {
            errors.push(format!(
                "{}: wire events differ:\nlive    {:#?}\ncapture {:#?}",
                p.case.id,
                wire(&run.events),
                wire(&checked.events)
            ));
        }
        if checked.verdict != run.verdict {
            errors.push(format!(
                "{}: live {:?}, capture {:?}:\n{}",
                p.case.id,
                run.verdict,
                checked.verdict,
                scacheck::report::case_text(&checked)
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}

#[test]
fn checking_the_capture_of_a_live_udp_run_gives_the_same_wire_events_and_verdict() {
    round_trip(scacheck::sip::Transport::Udp);
}

#[test]
fn checking_the_capture_of_a_live_tcp_run_gives_the_same_wire_events_and_verdict() {
    round_trip(scacheck::sip::Transport::Tcp);
}
