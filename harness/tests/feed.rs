//! A real target that reports its own events: from an event feed
//! (`--events feed:HOST:PORT`) or from the log it writes as it runs
//! (`--events tlib-log:PATH`). The embedded server stands in for such a
//! server; every attribute is compared and the verdicts are as usual.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use common::suite;
use scacheck::outcome::Verdict;
use scacheck::reference::Embedded;
use scacheck::run::{run_all, Events, RunOptions, Target, DOMAIN};
use scacheck::sip::Transport;
use scacheck::target::Profile;
use scacheck::topology::Topology;

/// A reference server on loopback, standing in for a real one.
async fn embedded(topology: &Topology) -> Embedded {
    Embedded::start(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        DOMAIN,
        topology.clone(),
        None,
        None,
    )
    .await
    .unwrap()
}

/// A HEP listener on a free loopback port.
async fn hep_listener() -> scacheck::observe::hep::HepListener {
    scacheck::observe::hep::HepListener::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The embedded server as a real target with no deviations.
fn profile_of(server: &Embedded, topology: &Topology) -> Profile {
    Profile {
        name: "bridged".into(),
        path: "bridged.toml".into(),
        address: server.sip,
        transport: Transport::Udp,
        // The embedded server serves TCP at the same port.
        transports: vec![Transport::Udp, Transport::Tcp],
        domain: DOMAIN.into(),
        lines: vec![scacheck::line::Identities::own(topology)],
        capabilities: scacheck::target::CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect(),
        deviations: Vec::new(),
        line_commands: Default::default(),
        timers: Default::default(),
        credentials: Vec::new(),
        tls: None,
        liveness: None,
    }
}

fn judged_from(kind: &str) {
    let (all, topology) = suite();
    let cases: Vec<_> = all
        .into_iter()
        .filter(|p| ["inbound-answered", "hold-retrieve"].contains(&p.case.id.as_str()))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let logfile = tempfile::NamedTempFile::new().unwrap();
    let results = rt.block_on(async {
        let server = embedded(&topology).await;
        let profile = profile_of(&server, &topology);
        let events = if kind == "feed" {
            Events::Feed(server.feed)
        } else {
            // The server "writes a log": its feed, appended to a file in the
            // SIP Server log format as events come (constructed, not captured).
            let log = scacheck::observe::EventLog::default();
            let client = scacheck::observe::feed::FeedClient::connect(
                server.feed,
                std::time::Duration::from_secs(2),
                log.clone(),
            )
            .await
            .unwrap();
            let path = logfile.path().to_path_buf();
            tokio::spawn(async move {
                let _client = client;
                let mut written = 0;
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    let new = log.since(written);
                    if new.is_empty() {
                        continue;
                    }
                    written += new.len();
                    let pairs: Vec<_> = new.into_iter().map(|o| (o.channel, o.event)).collect();
                    use std::io::Write;
                    let mut f = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .unwrap();
                    // With a line no reader knows, as real logs have.
                    let text = scacheck::observe::tlib_log::write(&pairs);
                    f.write_all(format!("@12:00:00.0000 garbled (constructed)\n{text}").as_bytes())
                        .unwrap();
                }
            });
            Events::Log(logfile.path().to_path_buf())
        };
        let opts = RunOptions {
            target: Target::Remote(Arc::new(profile)),
            events,
            ..RunOptions::default()
        };
        run_all(&cases, &topology, opts).await
    });
    for r in &results {
        assert_eq!(
            r.verdict,
            Verdict::Pass,
            "{}",
            scacheck::report::case_text(r)
        );
        let expected = if kind == "feed" {
            "the event feed at"
        } else {
            "the server log"
        };
        assert!(r.source.source.starts_with(expected), "{}", r.source.source);
        // The report says, channel by channel, where events came from: the
        // server's for its DNs, the phones' SIP for the wire layer.
        let lines = r.source_lines();
        assert!(
            lines
                .iter()
                .any(|l| l.contains("60970_2, monitoring: ") && l.contains(expected))
                && lines
                    .iter()
                    .any(|l| l.starts_with("sca.60970") && l.contains("the SIP the phones saw")),
            "{lines:?}"
        );
        if kind == "log" {
            // What the reader passed over is reported, and not fatal.
            assert!(
                r.notes.iter().any(|n| n.starts_with("server log: skipped")),
                "{:?}",
                r.notes
            );
        }
        // The server's own events show what SIP cannot: call monitoring was compared.
        assert!(
            r.stages.iter().all(|s| s.not_observed.is_empty()),
            "{:?}",
            r.stages.iter().map(|s| &s.not_observed).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_remote_target_judged_from_its_event_feed() {
    judged_from("feed");
}

#[test]
fn a_remote_target_judged_from_the_log_it_writes_as_it_runs() {
    judged_from("log");
}

/// The server's own view (its HEP mirror) and the phones' view of the same
/// traffic give the same events, channel by channel, and the same verdicts.
#[test]
fn a_remote_target_judged_from_its_hep_mirror_as_from_its_phones() {
    judged_from_hep_as_from_phones(Transport::Udp);
}

/// Over TCP each phone's connection has its own port: the server's view is
/// still attributed to the right phone.
#[test]
fn a_remote_target_over_tcp_judged_from_its_hep_mirror_as_from_its_phones() {
    judged_from_hep_as_from_phones(Transport::Tcp);
}

fn judged_from_hep_as_from_phones(transport: Transport) {
    let (all, topology) = suite();
    let cases: Vec<_> = all
        .into_iter()
        .filter(|p| {
            [
                "inbound-answered",
                "hold-retrieve",
                "outbound-call",
                "barge-in",
            ]
            .contains(&p.case.id.as_str())
        })
        .collect();
    assert_eq!(cases.len(), 4, "a case of this test was renamed");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (phones, server) = rt.block_on(async {
        let server = embedded(&topology).await;
        let listener = hep_listener().await;
        server.mirror_over_hep(listener.local_addr()).unwrap();
        let target = Target::Remote(Arc::new(profile_of(&server, &topology)));
        let run = |events| {
            run_all(
                &cases,
                &topology,
                RunOptions {
                    target: target.clone(),
                    events,
                    transport,
                    ..RunOptions::default()
                },
            )
        };
        let phones = run(Events::Sip).await;
        let server_view = run(Events::Hep(Arc::new(listener))).await;
        (phones, server_view)
    });
    // Events of the stages, channel by channel (order is compared within a
    // channel, as the diff does).
    let by_channel = |r: &scacheck::outcome::CaseResult| {
        let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (stage, o) in &r.events {
            if stage != "setup" && stage != "teardown" {
                out.entry(format!("{stage} {}", o.channel))
                    .or_default()
                    .push(format!("{:?}", o.event));
            }
        }
        out
    };
    for (p, s) in phones.iter().zip(&server) {
        assert!(
            s.source_lines()
                .iter()
                .all(|l| l.contains("the SIP the server mirrored over HEP")),
            "{:?}",
            s.source_lines()
        );
        assert_eq!((p.transport, s.transport), (transport, transport));
        assert_eq!(p.verdict, s.verdict, "{}", scacheck::report::case_text(s));
        assert_eq!(by_channel(p), by_channel(s), "{}", p.id);
        assert!(!by_channel(s).is_empty(), "{}: no events at all", s.id);
        // Every message, both ways, and nothing else.
        assert_eq!(s.mirrored.len(), s.records.len(), "{}", s.id);
        assert!(
            s.notes.iter().all(|n| !n.contains("not mirrored")),
            "{:?}",
            s.notes
        );
    }
}

/// A server that mirrors nothing: the cases cannot be judged, and say why.
#[test]
fn no_hep_from_the_server_is_inconclusive_not_a_failure() {
    let (all, topology) = suite();
    let cases: Vec<_> = all
        .into_iter()
        .filter(|p| p.case.id == "inbound-answered")
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results = rt.block_on(async {
        let server = embedded(&topology).await;
        let listener = hep_listener().await;
        let opts = RunOptions {
            target: Target::Remote(Arc::new(profile_of(&server, &topology))),
            events: Events::Hep(Arc::new(listener)),
            ..RunOptions::default()
        };
        run_all(&cases, &topology, opts).await
    });
    let r = &results[0];
    assert_eq!(
        r.verdict,
        Verdict::Inconclusive,
        "{}",
        scacheck::report::case_text(r)
    );
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("no HEP from the server")),
        "{:?}",
        r.error
    );
    // No stage was compared against a view that holds nothing; the leak
    // check (the phones' own SIP) still looked at the line.
    assert!(
        r.stages.iter().all(|s| s.stage == scacheck::leak::STAGE),
        "{}",
        scacheck::report::case_text(r)
    );
}
