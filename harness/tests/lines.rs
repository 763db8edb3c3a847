//! A real target's pool of lines, with the embedded server standing in for
//! a shared, long-running server that hosts every line of the pool at once:
//! cases run in parallel, each on its own line, a line is reused once its
//! case left it clean, a leak is the finding of the case that left it and
//! its line is never handed to another case, and nothing depends on
//! `--jobs`.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;

use common::suite;
use scacheck::outcome::{CaseResult, Verdict};
use scacheck::reference::{Embedded, Fault};
use scacheck::run::{run_all, Events, RunOptions, Target, DOMAIN};
use scacheck::target::Profile;
use scacheck::topology::Topology;

/// A profile of `lines` lines (line N: `60970-N`, `60970_2-N`, `60972-N`)
/// for a server at `address`.
fn profile(lines: usize, address: std::net::SocketAddr, topology: &Topology) -> Profile {
    let text = format!(
        r#"
name = "pool"
address = "{address}"
domain = "{DOMAIN}"
# The embedded server serves TCP at the same port.
transports = ["udp", "tcp"]
capabilities = ["call-info", "line-seize", "hold", "retrieve", "private-hold", "barge-in"]
lines = {lines}

[identities]
"60972" = "60972-{{line}}"
"60970" = "60970-{{line}}"
"60970_2" = "60970_2-{{line}}"
"#
    );
    Profile::parse(Path::new("pool.toml"), &text, topology).unwrap()
}

/// The whole suite against one embedded server hosting a pool of `lines`
/// lines, its events from its own feed (in its SIP users, every line's).
fn run_pool(lines: usize, jobs: Option<usize>, fault: Option<Fault>) -> Vec<CaseResult> {
    let (cases, topology) = suite();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let probe = profile(lines, "127.0.0.1:5060".parse().unwrap(), &topology);
        let hosted = scacheck::line::pool_topology(&probe.lines, &topology);
        let server = Embedded::start(IpAddr::V4(Ipv4Addr::LOCALHOST), DOMAIN, hosted, fault, None)
            .await
            .unwrap();
        let opts = RunOptions {
            target: Target::Remote(Arc::new(profile(lines, server.sip, &topology))),
            events: Events::Feed(server.feed),
            jobs,
            ..RunOptions::default()
        };
        run_all(&cases, &topology, opts).await
    })
}

/// Every event of a run by case, stage and channel, identifiers (which
/// the server picks) masked, each channel's events sorted (order is the
/// verdict's to check): what must not depend on how many cases ran at once.
type Seen = Vec<(
    String,
    std::collections::BTreeMap<(String, String), Vec<String>>,
)>;

fn events(results: &[CaseResult]) -> Seen {
    use scacheck::model::Value;
    results
        .iter()
        .map(|r| {
            let mut by: std::collections::BTreeMap<(String, String), Vec<String>> =
                Default::default();
            let renamed = common::race_parts(r);
            for (stage, o) in r.events.iter().filter(|(stage, _)| stage != "teardown") {
                let mut event = o.event.clone();
                for v in event.attrs.values_mut() {
                    if let Value::Id(_) = v {
                        *v = Value::Id("$".into());
                    }
                }
                by.entry((stage.clone(), renamed(stage, o.channel.to_string())))
                    .or_default()
                    .push(renamed(stage, event.to_json_line()));
            }
            by.values_mut().for_each(|v| v.sort());
            (format!("{} {:?}", r.key(), r.verdict), by)
        })
        .collect()
}

#[test]
fn fewer_lines_than_cases_run_every_case_alike_at_any_jobs() {
    let parallel = run_pool(3, None, None);
    for r in &parallel {
        assert_eq!(
            r.verdict,
            Verdict::Pass,
            "{}",
            scacheck::report::case_text(r)
        );
        let line = r.line.as_deref().unwrap_or_default();
        assert!(
            ["line 1 (", "line 2 (", "line 3 ("]
                .iter()
                .any(|l| line.starts_with(l)),
            "{}: {line:?}",
            r.key()
        );
        // A case sees only its own line's events, in the golden DNs.
        assert!(
            r.events
                .iter()
                .all(|(_, o)| !o.event.to_json_line().contains("-1\"")
                    && !o.event.to_json_line().contains("-2\"")
                    && !o.event.to_json_line().contains("-3\"")),
            "{}: a server user leaked into the events",
            r.key()
        );
    }
    let used: std::collections::BTreeSet<_> =
        parallel.iter().filter_map(|r| r.line.clone()).collect();
    assert_eq!(used.len(), 3, "every line of the pool is used: {used:?}");
    let one_at_a_time = run_pool(3, Some(1), None);
    assert_eq!(events(&parallel), events(&one_at_a_time));
}

/// With a line for every case, which case runs on which line does not
/// depend on `--jobs` either: the reports name the same lines.
#[test]
fn with_lines_enough_each_case_has_the_same_line_at_any_jobs() {
    let lines = |results: Vec<CaseResult>| -> Vec<(String, Option<String>)> {
        results.into_iter().map(|r| (r.key(), r.line)).collect()
    };
    // A line for every case of the suite, however many it has.
    let enough = suite().0.len();
    let parallel = lines(run_pool(enough, None, None));
    assert_eq!(parallel.len(), enough);
    assert_eq!(parallel[0].1.as_deref(), Some("line 1 (60970-1)"));
    assert_eq!(parallel, lines(run_pool(enough, Some(1), None)));
}

#[test]
fn a_leak_fails_its_case_and_its_line_is_not_handed_on() {
    // The server tells the phones idle but keeps the appearance busy; the
    // profile names no command to clean a line, so a leaky line is out.
    let results = run_pool(2, None, Some(Fault::KeepsAppearance));
    let leaked: Vec<&CaseResult> = results
        .iter()
        .filter(|r| {
            r.verdict == Verdict::Fail
                && r.headline()
                    .is_some_and(|h| h.contains("leak-check") && h.contains("Appearance"))
        })
        .collect();
    assert!(!leaked.is_empty(), "no case reported the leak");
    // At most one leak per line: a line left dirty is never used again,
    // and once no line is clean the cases left say why they could not run.
    let lines: std::collections::BTreeSet<_> = leaked.iter().map(|r| r.line.clone()).collect();
    assert_eq!(lines.len(), leaked.len(), "a dirty line was reused");
    assert!(leaked.len() <= 2);
    let stranded: Vec<&CaseResult> = results
        .iter()
        .filter(|r| r.verdict == Verdict::Inconclusive)
        .collect();
    assert!(!stranded.is_empty());
    for r in stranded {
        let e = r.error.as_deref().unwrap_or_default();
        assert!(
            e.contains("no clean line is left") && e.contains("left dirty by"),
            "{e}"
        );
    }
}

/// The teardown hangs up a call from one end only: the line's phones go
/// first, one after the other, and a phone whose call the server ended
/// meanwhile has nothing left to end. Both ends hanging up at once cross
/// their BYEs (a phone sends a BYE on a dialog the server is ending with
/// its own BYE), which a server may
/// mishandle (Kamailio's sca then told a fresh subscription an appearance
/// was still active), and the leak check would judge the teardown.
/// And every call has ended, its BYE answered, before any phone
/// unsubscribes: Kamailio's sca handles a BYE one way while the line has
/// call-info subscribers and another once it has none, so a BYE racing
/// an unsubscribe made the leak check's verdict a coin toss.
#[test]
fn the_teardown_hangs_up_from_one_end_and_before_any_unsubscribe() {
    use scacheck::sip::record::Direction;
    let results = run_pool(4, None, None);
    let byes = |r: &CaseResult, agent: &str, direction: Direction| -> Vec<String> {
        r.records
            .iter()
            .filter(|rec| {
                rec.agent == agent && rec.direction == direction && rec.raw.starts_with(b"BYE ")
            })
            .filter_map(|rec| rec.message().ok().map(|m| m.call_id().to_string()))
            .collect()
    };
    let mut hung_up = 0;
    for r in &results {
        for phone in ["60970", "60970_2", "60972"] {
            let received = byes(r, phone, Direction::Received);
            hung_up += received.len();
            let crossed: Vec<String> = byes(r, phone, Direction::Sent)
                .into_iter()
                .filter(|id| received.contains(id))
                .collect();
            assert!(
                crossed.is_empty(),
                "{}: {phone} sent a BYE on a call the server was ending: {crossed:?}",
                r.key()
            );
        }
    }
    // Phones do get their calls ended by the server's BYEs.
    assert!(hung_up > 0);
    let mut ordered = 0;
    for r in &results {
        let parsed: Vec<_> = r
            .records
            .iter()
            .filter_map(|rec| rec.message().ok().map(|m| (rec, m)))
            .collect();
        let Some(first_unsubscribe) = parsed.iter().position(|(rec, m)| {
            rec.direction == Direction::Sent
                && m.is("SUBSCRIBE")
                && m.header("Expires").is_some_and(|e| e.trim() == "0")
                && m.header("X-Scacheck")
                    .is_some_and(|x| x.trim() == "teardown")
        }) else {
            continue;
        };
        for (at, (rec, m)) in parsed.iter().enumerate() {
            if rec.direction != Direction::Sent || !m.is("BYE") {
                continue;
            }
            let answered = parsed.iter().position(|(back, a)| {
                back.agent == rec.agent
                    && back.direction == Direction::Received
                    && a.status().is_some_and(|c| c >= 200)
                    && a.call_id() == m.call_id()
                    && a.cseq().is_some_and(|(_, method)| method == "BYE")
            });
            assert!(
                at < first_unsubscribe && answered.is_some_and(|a| a < first_unsubscribe),
                "{}: {}'s BYE on {} is not answered before the first unsubscribe",
                r.key(),
                rec.agent,
                m.call_id()
            );
            ordered += 1;
        }
    }
    // Phones do hang up in the teardown.
    assert!(ordered > 0);
}
