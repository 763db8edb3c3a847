//! A real target with an event feed: the suite takes its T-Library events
//! from `--events feed:HOST:PORT` (here the embedded server stands in for a
//! server with a bridge), compares every attribute, and judges as usual.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use common::suite;
use scacheck::reference::Embedded;
use scacheck::run::{run_all, Events, RunOptions, Target, Verdict, DOMAIN};
use scacheck::sip::Transport;
use scacheck::target::Profile;

#[test]
fn a_remote_target_judged_from_its_event_feed() {
    let (all, topology) = suite();
    let cases: Vec<_> = all
        .into_iter()
        .filter(|p| ["inbound-answered", "hold-retrieve"].contains(&p.case.id.as_str()))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results = rt.block_on(async {
        let server = Embedded::start(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            DOMAIN,
            topology.clone(),
            None,
        )
        .await
        .unwrap();
        let profile = Profile {
            name: "bridged".into(),
            path: "bridged.toml".into(),
            address: server.sip,
            transport: Transport::Udp,
            domain: DOMAIN.into(),
            identities: topology
                .dns()
                .iter()
                .map(|d| (d.to_string(), d.to_string()))
                .collect(),
            capabilities: scacheck::target::CAPABILITIES
                .iter()
                .map(|c| c.to_string())
                .collect(),
            deviations: Vec::new(),
            reset: Vec::new(),
        };
        let opts = RunOptions {
            target: Target::Remote(Arc::new(profile)),
            events: Events::Feed(server.feed),
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
        assert!(
            r.source.source.starts_with("event feed at"),
            "{}",
            r.source.source
        );
        // The feed shows what SIP cannot: call monitoring was compared.
        assert!(
            r.stages.iter().all(|s| s.not_observed.is_empty()),
            "{:?}",
            r.stages.iter().map(|s| &s.not_observed).collect::<Vec<_>>()
        );
    }
}
