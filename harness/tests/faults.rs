//! Every seeded fault of the embedded server must make exactly the cases
//! that cover it fail, each with a first divergence in the right stage and
//! channel naming the right event (or, for a wire-level fault, a problem
//! holding the offending raw message); and every case must be caught by at
//! least one fault.

mod common;
use common::suite;

use std::collections::BTreeSet;

use scacheck::outcome::{CaseResult, Verdict};
use scacheck::reference::Fault;
use scacheck::report;
use scacheck::run::{run_all, RunOptions, Target};

/// How a fault must show in one case.
#[derive(Clone)]
enum Catch {
    /// The first divergence is in this stage and channel, and its expected
    /// or observed line contains this text.
    Diff {
        stage: &'static str,
        channel: &'static str,
        needle: &'static str,
    },
    /// A problem containing this text, with the raw message.
    Problem(&'static str),
    /// A problem, or why the server stopped, containing this text: what
    /// the run found the server failed to do (no message holds it).
    Said(&'static str),
}

/// The cases that start with the inbound call answered at 60970.
const ANSWERED_AT_60970: &[&str] = &[
    "ack-retransmitted",
    "hold-hangup",
    "hold-inactive",
    "hold-retrieve",
    "hold-rfc2543",
    "hold-update",
    "inbound-answered",
    "reboot-resubscribe",
    "retrieve-hangup",
    "retrieve-private",
    "second-call",
    "terminated-by-caller",
];
/// Every case that begins with reference 1.1.
const INBOUND: &[&str] = &[
    "ack-retransmitted",
    "answer-glare",
    "barge-in",
    "hold-hangup",
    "hold-inactive",
    "hold-retrieve",
    "hold-rfc2543",
    "hold-update",
    "inbound-alerting",
    "inbound-answered",
    "inbound-cancelled",
    "reboot-resubscribe",
    "retrieve-hangup",
    "retrieve-private",
    "second-call",
    "terminated-by-caller",
];
/// Every case whose stage "held" holds the call with a public hold.
const HOLDING: &[&str] = &[
    "hold-hangup",
    "hold-inactive",
    "hold-retrieve",
    "hold-rfc2543",
    "hold-update",
    "retrieve-hangup",
];
/// Every case that seizes appearance 1 first.
const SEIZING: &[&str] = &[
    "outbound-abandoned",
    "outbound-call",
    "outbound-hangup-answered",
    "outbound-rejected",
    "seize-after-release",
    "seize-busy",
    "seize-expiry",
];
/// Every case that dials out from the line.
const DIALLING: &[&str] = &[
    "outbound-abandoned",
    "outbound-call",
    "outbound-hangup-answered",
    "outbound-rejected",
];

fn each(cases: &[&'static str], catch: Catch) -> Vec<(&'static str, Catch)> {
    cases.iter().map(|c| (*c, catch.clone())).collect()
}

/// 60970 was never told the appearance went idle in `stage`.
fn told_idle(stage: &'static str) -> Catch {
    diff(stage, "sca.60970", "\"AppearanceState\": \"idle\"")
}

fn diff(stage: &'static str, channel: &'static str, needle: &'static str) -> Catch {
    Catch::Diff {
        stage,
        channel,
        needle,
    }
}

fn table() -> Vec<(Fault, Vec<(&'static str, Catch)>)> {
    let ringing = "\"event\": \"EventRinging\"";
    let mut no_cancel = each(
        ANSWERED_AT_60970,
        diff("answered", "60970_2", "EventReleased"),
    );
    no_cancel.push(("barge-in", diff("answered", "60970", "EventReleased")));
    // The race's loser is the server's to pick: its channel.
    no_cancel.push((
        "answer-glare",
        diff("answered", "60970|60970_2", "EventReleased"),
    ));
    let mut drop_deleted = each(
        ANSWERED_AT_60970,
        diff("answered", "monitoring", "EventCallPartyDeleted"),
    );
    for case in ["barge-in", "answer-glare"] {
        drop_deleted.push((
            case,
            diff("answered", "monitoring", "EventCallPartyDeleted"),
        ));
    }
    let notify = Catch::Problem("malformed CSeq");
    let held = diff("held", "sca.60970", "\"AppearanceState\": \"held\"");
    // A hold the server takes as a resume: no EventHeld, first.
    let not_held = diff("held", "60970", "EventHeld");
    // Every case: each phone unsubscribes in its teardown, and the
    // terminating NOTIFY after the first is malformed too.
    let every_subscriber: Vec<&str> = INBOUND
        .iter()
        .chain(SEIZING)
        .chain(&[
            "subscription-refresh",
            "retrieve-idle",
            "seize-race",
            "seize-race-trials",
            "notify-refused",
            "tcp-notify-reconnect",
            "resubscribe-new-route",
        ])
        .copied()
        .collect();
    vec![
        (Fault::NoCancelToLoser, no_cancel),
        (
            Fault::WrongAppearanceIndex,
            each(INBOUND, diff("alerting", "60970", "\"AppearanceIndex\": 2")),
        ),
        (
            Fault::CoveredAsOk,
            each(INBOUND, diff("alerting", "60970", "\"CallState\": \"Ok\"")),
        ),
        (Fault::DropLoserPartyDeleted, drop_deleted),
        (
            Fault::DuplicateRinging,
            each(INBOUND, diff("alerting", "60970_2", ringing)),
        ),
        (
            Fault::NoOnHook,
            vec![
                (
                    "terminated-by-caller",
                    diff("released", "60970", "EventOnHook"),
                ),
                (
                    "outbound-hangup-answered",
                    diff("hung-up", "60970", "EventOnHook"),
                ),
                ("retrieve-hangup", diff("hung-up", "60970_2", "EventOnHook")),
                (
                    "answer-glare",
                    diff("released", "60970|60970_2", "EventOnHook"),
                ),
            ],
        ),
        (Fault::MalformedNotify, each(&every_subscriber, notify)),
        (Fault::NoPrivateInfo, {
            let mut v = each(SEIZING, diff("seized", "60970", "EventPrivateInfo"));
            // The race's winner is the server's to pick: its channel.
            for race in ["seize-race", "seize-race-trials"] {
                v.push((race, diff("race-1", "60970|60970_2", "EventPrivateInfo")));
            }
            // Its seizure is 60970_2's.
            v.push((
                "notify-refused",
                diff("refused", "60970_2", "EventPrivateInfo"),
            ));
            v.push((
                "tcp-notify-reconnect",
                diff("reconnected", "60970_2", "EventPrivateInfo"),
            ));
            v.push((
                "resubscribe-new-route",
                diff("seized", "60970_2", "EventPrivateInfo"),
            ));
            v
        }),
        (
            Fault::SeizeNotTerminated,
            each(DIALLING, diff("dialled", "sca.60970", "SeizeEnded")),
        ),
        (Fault::HoldNotNotified, {
            let mut v = each(HOLDING, held.clone());
            v.push((
                "retrieve-private",
                diff(
                    "held-private",
                    "sca.60970",
                    "\"AppearanceState\": \"held-private\"",
                ),
            ));
            v
        }),
        (
            Fault::SecondCallOnFirst,
            vec![(
                "second-call",
                diff("second-alerting", "sca.60970", "\"Index\": 2"),
            )],
        ),
        (
            Fault::CancelledStaysAlerting,
            vec![
                ("inbound-cancelled", told_idle("cancelled")),
                // Not inbound-alerting's nor second-call's: their teardowns
                // end the call that still alerts by the line's phones
                // refusing it (the line's phones go first), not by the
                // caller's CANCEL.
            ],
        ),
        (
            Fault::RejectedStaysProgressing,
            vec![("outbound-rejected", told_idle("rejected"))],
        ),
        (
            Fault::InactiveNotHeld,
            vec![("hold-inactive", not_held.clone())],
        ),
        (
            Fault::Rfc2543NotHeld,
            vec![("hold-rfc2543", not_held.clone())],
        ),
        (
            Fault::UpdateNotHeld,
            vec![("hold-update", not_held.clone())],
        ),
        (
            Fault::RetrieveNotTransfer,
            each(
                &["hold-retrieve", "retrieve-hangup"],
                diff("retrieved", "60970", "1stepTransfer"),
            ),
        ),
        (
            Fault::RefusedStillNotified,
            vec![(
                "notify-refused",
                diff("released", "sca.60970", "\"event\": \"Appearance\""),
            )],
        ),
        (
            Fault::RebootKeepsAppearance,
            vec![("reboot-resubscribe", told_idle("rebooted"))],
        ),
        (
            Fault::RetrievedStaysActive,
            vec![
                ("retrieve-hangup", told_idle("hung-up")),
                // Its teardown hangs up the retrieved call.
                (
                    "hold-retrieve",
                    diff("leak-check", "sca.60970", "\"AppearanceState\": \"active\""),
                ),
            ],
        ),
        (
            Fault::BargeRefused,
            vec![("barge-in", diff("barged", "60972", "EventPartyAdded"))],
        ),
        (
            Fault::OnHookWhileHeld,
            each(
                &[
                    "hold-hangup",
                    "hold-inactive",
                    "hold-rfc2543",
                    "hold-update",
                ],
                diff("hung-up", "60970", "EventOnHook"),
            ),
        ),
        (
            Fault::LostAckFreesAppearance,
            vec![(
                "ack-retransmitted",
                diff(
                    "answered",
                    "sca.60970|sca.60970_2",
                    "\"AppearanceState\": \"idle\"",
                ),
            )],
        ),
        (
            Fault::DoubleSeize,
            vec![
                ("seize-busy", diff("refused", "sca.60970_2", "SeizeRefused")),
                // Both granted: no single winner, the golden as written.
                ("seize-race", diff("race-1", "sca.60970_2", "SeizeRefused")),
                (
                    "seize-race-trials",
                    diff("race-1", "sca.60970_2", "SeizeRefused"),
                ),
                (
                    "seize-after-release",
                    diff("refused", "sca.60970", "SeizeRefused"),
                ),
            ],
        ),
        (
            Fault::SeizeNeverExpires,
            // The golden's first event (the idle NOTIFY is missing too).
            vec![(
                "seize-expiry",
                diff("expired", "sca.60970", "\"Reason\": \"timeout\""),
            )],
        ),
        (
            Fault::PrivateRetrievable,
            vec![(
                "retrieve-private",
                diff("refused", "sca.60970", "\"AppearanceState\": \"active\""),
            )],
        ),
        (
            Fault::IdleRetrieveWrongCode,
            vec![(
                "retrieve-idle",
                diff("refused", "sca.60970_2", "\"Status\": 480"),
            )],
        ),
        (
            // Told idle, still busy in the line's state: only the leak
            // check after the teardown sees it, in every case whose call
            // ended on an appearance.
            // Not reboot-resubscribe's: its reboot freed the appearance
            // before the teardown ended the call.
            Fault::KeepsAppearance,
            each(
                &[INBOUND, DIALLING]
                    .concat()
                    .into_iter()
                    .filter(|c| *c != "reboot-resubscribe")
                    .collect::<Vec<_>>(),
                diff("leak-check", "sca.60970", "\"event\": \"Appearance\""),
            ),
        ),
        (
            Fault::StopsOnReboot,
            vec![(
                "reboot-resubscribe",
                Catch::Said(
                    "the server stopped answering after 60970's SUBSCRIBE (call-info) at stage rebooted",
                ),
            )],
        ),
        (
            Fault::NoReconnect,
            vec![(
                "tcp-notify-reconnect",
                diff("reconnected", "sca.60970", "\"AppearanceState\": \"seized\""),
            )],
        ),
        (
            Fault::StaleRoute,
            vec![(
                "resubscribe-new-route",
                diff("seized", "sca.60970", "\"AppearanceState\": \"seized\""),
            )],
        ),
        (
            Fault::GlareLeavesLoser,
            vec![("answer-glare", Catch::Said("answer race not settled"))],
        ),
        (
            Fault::NoTerminatedNotify,
            vec![(
                "subscription-refresh",
                diff("unsubscribed", "sca.60970", "SubscriptionEnded"),
            )],
        ),
    ]
}

#[test]
fn every_fault_and_every_case_is_in_the_table() {
    let table = table();
    for f in Fault::ALL {
        assert!(
            table.iter().any(|(g, _)| g == f),
            "fault {f} has no expectation in the table"
        );
    }
    let (prepared, _) = suite();
    let caught: BTreeSet<&str> = table
        .iter()
        .flat_map(|(_, cs)| {
            cs.iter()
                .filter(|(_, c)| matches!(c, Catch::Diff { .. }))
                .map(|(id, _)| *id)
        })
        .collect();
    for p in &prepared {
        assert!(
            caught.contains(p.case.id.as_str()),
            "case {} has no seeded fault that fails it with a diff",
            p.case.id
        );
    }
}

fn check(fault: Fault, catches: &[(&str, Catch)], results: &[CaseResult]) -> Vec<String> {
    let mut errors = Vec::new();
    for r in results {
        let text = report::case_text(r);
        let Some((_, catch)) = catches.iter().find(|(id, _)| *id == r.id) else {
            if r.verdict != Verdict::Pass {
                errors.push(format!("{fault}: case {} should pass:\n{text}", r.id));
            }
            continue;
        };
        if r.verdict != Verdict::Fail {
            errors.push(format!(
                "{fault}: case {} should fail, got {:?}:\n{text}",
                r.id, r.verdict
            ));
            continue;
        }
        match catch {
            Catch::Diff {
                stage,
                channel,
                needle,
            } => match r.first_divergence() {
                None => errors.push(format!(
                    "{fault}: {} failed without a divergence:\n{text}",
                    r.id
                )),
                Some(d) => {
                    let named = d
                        .expected
                        .iter()
                        .chain(&d.observed)
                        .any(|l| l.contains(needle));
                    // `a|b`: either channel (a race's winner's).
                    let channel_is = channel.split('|').any(|c| d.channel == c);
                    if d.stage != *stage || !channel_is || !named {
                        errors.push(format!("{fault}: {} diverged at {d}; wanted stage {stage}, channel {channel}, {needle}", r.id));
                    } else if !text.contains(&format!("--- expected {stage}/{}", d.channel)) {
                        errors.push(format!(
                            "{fault}: {} report has no diff for {stage}/{channel}:\n{text}",
                            r.id
                        ));
                    }
                }
            },
            Catch::Problem(what) => match r.problems.iter().find(|p| p.what.contains(what)) {
                Some(p)
                    if p.raw.as_ref().is_some_and(|raw| !raw.is_empty())
                        && text.contains("    | NOTIFY ") => {}
                _ => errors.push(format!(
                    "{fault}: {} has no problem {what:?} with its raw message:\n{text}",
                    r.id
                )),
            },
            Catch::Said(what) => {
                let stopped = r.stopped.as_deref().is_some_and(|s| s.contains(what));
                if !stopped && !r.problems.iter().any(|p| p.what.contains(what)) {
                    errors.push(format!(
                        "{fault}: {} has no problem {what:?}:\n{text}",
                        r.id
                    ));
                }
            }
        }
    }
    errors
}

#[test]
fn each_fault_fails_exactly_the_cases_that_cover_it() {
    let (prepared, topology) = suite();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let runs = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        // A few faults at a time: every fault's whole suite at once is
        // hundreds of cases on two cores, and a stage that takes longer
        // than the one-second seizure of seize-expiry sees it expire.
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
        for fault in Fault::ALL.iter().copied() {
            let (prepared, topology) = (prepared.clone(), topology.clone());
            let slots = slots.clone();
            set.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let opts = RunOptions {
                    target: Target::Embedded {
                        fault: Some(fault),
                        profile: None,
                    },
                    ..RunOptions::default()
                };
                (fault, run_all(&prepared, &topology, opts).await)
            });
        }
        set.join_all().await
    });
    let mut errors = Vec::new();
    for (fault, catches) in table() {
        let (_, results) = runs.iter().find(|(f, _)| *f == fault).unwrap();
        assert_eq!(results.len(), prepared.len(), "every case ran");
        errors.extend(check(fault, &catches, results));
    }
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
}
