//! Server logs as a source: a constructed SIP Server log of each reference
//! flow (fixtures/logs/, written from the embedded reference server's events
//! and marked as constructed) passes `log check` against its golden files,
//! and a log with one event changed fails with the right diff.
//!
//! `SCACHECK_WRITE_LOGS=1 cargo test --test logs` constructs the logs anew.

mod common;

use std::path::Path;

use common::suite;
use scacheck::check::check_events;
use scacheck::model::Channel;
use scacheck::observation::Observability;
use scacheck::observe::tlib_log;
use scacheck::outcome::Verdict;
use scacheck::run::{run_all, RunOptions};

/// The reference flows (not the checks beyond the page).
const FLOWS: &[&str] = &[
    "inbound-alerting",
    "inbound-answered",
    "terminated-by-caller",
    "outbound-call",
    "outbound-hangup-answered",
    "outbound-abandoned",
    "hold-retrieve",
    "hold-hangup",
    "barge-in",
];

const HEADER: &str = "# Constructed, not captured: the T-Library events of scacheck's embedded reference server for this flow, written in the SIP Server log format.\n";

fn logs_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/logs")
}

/// A log shows the T-Library channels, not the SIP wire layer.
fn only_tlib(
    p: &scacheck::suite::Prepared,
    topology: &scacheck::topology::Topology,
) -> Observability {
    let mut s = Observability::everything("constructed log");
    s.channels = Some(
        scacheck::golden::channels(&p.case.parties, topology)
            .into_iter()
            .filter(|c| !matches!(c, Channel::Wire(_)))
            .collect(),
    );
    s
}

#[test]
fn constructed_logs_of_every_reference_flow_pass_log_check() {
    let (all, topology) = suite();
    let flows: Vec<_> = all
        .into_iter()
        .filter(|p| FLOWS.contains(&p.case.id.as_str()))
        .collect();
    assert_eq!(flows.len(), FLOWS.len());
    if std::env::var("SCACHECK_WRITE_LOGS").is_ok() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let live = rt.block_on(run_all(&flows, &topology, RunOptions::default()));
        std::fs::create_dir_all(logs_dir()).unwrap();
        for r in live {
            let events: Vec<_> = r
                .events
                .iter()
                .filter(|(s, o)| s != "setup" && !matches!(o.channel, Channel::Wire(_)))
                .map(|(_, o)| (o.channel.clone(), o.event.clone()))
                .collect();
            std::fs::write(
                logs_dir().join(format!("{}.log", r.id)),
                format!("{HEADER}{}", tlib_log::write(&events)),
            )
            .unwrap();
        }
    }
    for p in &flows {
        let path = logs_dir().join(format!("{}.log", p.case.id));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            text.starts_with("# Constructed, not captured"),
            "{} says it is constructed",
            path.display()
        );
        let (events, _) = tlib_log::parse(&text);
        let r = check_events(p, events, only_tlib(p, &topology));
        assert_eq!(
            r.verdict,
            Verdict::Pass,
            "{}",
            scacheck::report::case_text(&r)
        );
    }
}

#[test]
fn a_log_with_one_event_changed_fails_with_the_right_diff() {
    let (all, topology) = suite();
    let p = all
        .into_iter()
        .find(|p| p.case.id == "inbound-answered")
        .unwrap();
    let text = std::fs::read_to_string(logs_dir().join("inbound-answered.log")).unwrap();
    // 60970_2 released as Redirected becomes Ok.
    let at = text.find("message EventReleased").unwrap();
    let changed = format!(
        "{}{}",
        &text[..at],
        text[at..].replacen("'Redirected'", "'Ok'", 1)
    );
    assert_ne!(changed, text);
    let (events, _) = tlib_log::parse(&changed);
    let r = check_events(&p, events, only_tlib(&p, &topology));
    assert_eq!(r.verdict, Verdict::Fail);
    let d = r.first_divergence().unwrap();
    assert_eq!(d.channel, "60970_2");
    assert!(
        d.expected
            .as_deref()
            .unwrap()
            .contains("\"CallState\": \"Redirected\""),
        "{d}"
    );
    assert!(
        d.observed
            .as_deref()
            .unwrap()
            .contains("\"CallState\": \"Ok\""),
        "{d}"
    );
}
