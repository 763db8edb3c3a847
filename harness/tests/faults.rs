//! Every seeded fault of the embedded server must make exactly the cases
//! that cover it fail, with a diff that names the right stage, channel and
//! event (or, for wire-level faults, a problem holding the raw message).

use std::path::Path;

use scacheck::case::Case;
use scacheck::reference::Fault;
use scacheck::report;
use scacheck::run::{run_all, CaseResult, Prepared, RunOptions, Target, Verdict};
use scacheck::topology::Topology;

/// How a fault must show.
enum Catch {
    /// A diff whose first divergence is in this stage and channel and
    /// names this event.
    Diff {
        stage: &'static str,
        channel: &'static str,
        event: &'static str,
    },
    /// A problem (not an event difference) containing this text, with the
    /// offending raw message.
    Problem(&'static str),
}

const ALL_CASES: &[&str] = &[
    "inbound-alerting",
    "inbound-answered",
    "terminated-by-caller",
];
const ANSWERED: &[&str] = &["inbound-answered", "terminated-by-caller"];

fn table() -> Vec<(Fault, &'static [&'static str], Catch)> {
    use Catch::*;
    vec![
        (
            Fault::NoCancelToLoser,
            ANSWERED,
            Diff {
                stage: "answered",
                channel: "60970_2",
                event: "EventReleased",
            },
        ),
        (
            Fault::WrongAppearanceIndex,
            ALL_CASES,
            Diff {
                stage: "alerting",
                channel: "60970",
                event: "\"AppearanceIndex\": 2",
            },
        ),
        (
            Fault::CoveredAsOk,
            ALL_CASES,
            Diff {
                stage: "alerting",
                channel: "60970",
                event: "\"CallState\": \"Ok\"",
            },
        ),
        (
            Fault::DropLoserPartyDeleted,
            ANSWERED,
            Diff {
                stage: "answered",
                channel: "monitoring",
                event: "EventCallPartyDeleted",
            },
        ),
        (
            Fault::DuplicateRinging,
            ALL_CASES,
            Diff {
                stage: "alerting",
                channel: "60970_2",
                event: "EventRinging",
            },
        ),
        (
            Fault::NoOnHook,
            &["terminated-by-caller"],
            Diff {
                stage: "released",
                channel: "60970",
                event: "EventOnHook",
            },
        ),
        (Fault::MalformedNotify, ALL_CASES, Problem("malformed CSeq")),
    ]
}

#[test]
fn every_fault_is_in_the_table() {
    let listed: Vec<Fault> = table().iter().map(|(f, _, _)| *f).collect();
    for f in Fault::ALL {
        assert!(
            listed.contains(f),
            "fault {f} has no expectation in the table"
        );
    }
}

fn check(
    fault: Fault,
    must_fail: &[&str],
    catch: &Catch,
    results: &[CaseResult],
) -> Result<(), String> {
    assert_eq!(results.len(), ALL_CASES.len(), "every case ran");
    for r in results {
        let text = report::case_text(r);
        if !must_fail.contains(&r.id.as_str()) {
            if r.verdict != Verdict::Pass {
                return Err(format!("{fault}: case {} should pass:\n{text}", r.id));
            }
            continue;
        }
        if r.verdict != Verdict::Fail {
            return Err(format!(
                "{fault}: case {} should fail, got {:?}:\n{text}",
                r.id, r.verdict
            ));
        }
        match catch {
            Catch::Diff {
                stage,
                channel,
                event,
            } => {
                let d = r.first_divergence().ok_or_else(|| {
                    format!("{fault}: {} failed without a divergence:\n{text}", r.id)
                })?;
                let named = d
                    .expected
                    .iter()
                    .chain(&d.observed)
                    .any(|l| l.contains(event));
                if d.stage != *stage || d.channel != *channel || !named {
                    return Err(format!("{fault}: {} diverged at {d}, wanted stage {stage}, channel {channel}, {event}", r.id));
                }
                if !text.contains(&format!("--- expected {stage}/{channel}")) {
                    return Err(format!(
                        "{fault}: {} report has no diff for {stage}/{channel}:\n{text}",
                        r.id
                    ));
                }
            }
            Catch::Problem(what) => {
                let p = r
                    .problems
                    .iter()
                    .find(|p| p.what.contains(what))
                    .ok_or_else(|| format!("{fault}: {} has no problem {what:?}:\n{text}", r.id))?;
                if p.raw.as_ref().is_none_or(|raw| raw.is_empty())
                    || !text.contains("    | NOTIFY ")
                {
                    return Err(format!(
                        "{fault}: {} problem lacks the raw message:\n{text}",
                        r.id
                    ));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn each_fault_fails_exactly_the_cases_that_cover_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let topology = Topology::reference();
    let prepared: Vec<Prepared> = Case::load_dir(&root.join("cases"), &topology)
        .unwrap()
        .into_iter()
        .filter(|c| ALL_CASES.contains(&c.id.as_str()))
        .map(|c| Prepared::new(c, &root.join("fixtures/golden"), &topology).unwrap())
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runs = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (fault, _, _) in table() {
            let (prepared, topology) = (prepared.clone(), topology.clone());
            set.spawn(async move {
                let opts = RunOptions {
                    target: Target::Embedded { fault: Some(fault) },
                    ..RunOptions::default()
                };
                (fault, run_all(&prepared, &topology, opts).await)
            });
        }
        set.join_all().await
    });
    let mut errors = Vec::new();
    for (fault, must_fail, catch) in table() {
        let (_, results) = runs.iter().find(|(f, _)| *f == fault).unwrap();
        if let Err(e) = check(fault, must_fail, &catch, results) {
            errors.push(e);
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}
