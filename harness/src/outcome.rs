//! The outcome of a case: its verdict, what went wrong besides event
//! differences, and the rules that settle a verdict from the compared
//! stages. Everything that judges or reports a case (a live run, a capture
//! or log check, every report) depends on this module, never on the live
//! runner.
//!
//! The verdict rules, for every producer alike:
//! - fail: a difference no declared deviation excuses, or SIP the server
//!   should not have sent;
//! - inconclusive: the case could not be driven to its end;
//! - xpass: a declared deviation did not occur where it is declared;
//! - xfail: every difference is exactly a declared deviation;
//! - pass: no difference at all (skipped is set before anything runs).

use std::time::Duration;

use crate::diff::{Divergence, StageResult};
use crate::model::Channel;
use crate::observation::{Observability, Observation};
use crate::pcap::Packet;
use crate::sip::record::Record;
use crate::sip::Transport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// Failed, and every difference is a deviation the profile declares.
    Xfail,
    /// A declared deviation did not occur: the profile needs fixing.
    Xpass,
    /// The case needs a capability the target does not claim.
    Skipped,
    /// The target could not be driven through the case.
    Inconclusive,
}

impl Verdict {
    pub const ALL: [Verdict; 6] = [
        Verdict::Pass,
        Verdict::Fail,
        Verdict::Xfail,
        Verdict::Xpass,
        Verdict::Skipped,
        Verdict::Inconclusive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Xfail => "xfail",
            Verdict::Xpass => "xpass",
            Verdict::Skipped => "skipped",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    /// What a green run may contain.
    pub fn expected(self) -> bool {
        matches!(self, Verdict::Pass | Verdict::Xfail | Verdict::Skipped)
    }
}

/// Something wrong that is not an event difference: SIP the server sent
/// that we could not parse or did not expect, an unreadable feed line.
#[derive(Debug, Clone)]
pub struct Problem {
    pub what: String,
    /// The raw message, when there is one.
    pub raw: Option<Vec<u8>>,
}

/// A case's or a run's name as reports key it: `@tcp` for TCP, `@tls` for
/// TLS, nothing for UDP (the default), so the transports line up in a
/// verdict table.
pub fn keyed(name: &str, transport: Transport) -> String {
    match transport {
        Transport::Udp => name.to_string(),
        other => format!("{name}@{other}"),
    }
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    pub title: String,
    pub transport: Transport,
    pub verdict: Verdict,
    pub duration: Duration,
    pub stages: Vec<StageResult>,
    /// Why the case could not be driven to its end.
    pub error: Option<String>,
    pub problems: Vec<Problem>,
    pub records: Vec<Record>,
    /// Events in arrival order, with the stage they were attributed to
    /// (`setup` before the first stage).
    pub events: Vec<(String, Observation)>,
    pub source: Observability,
    /// Why the verdict is xfail, xpass or skipped.
    pub notes: Vec<String>,
    /// The server's own view of the case's SIP, when it mirrored it (HEP).
    pub mirrored: Vec<Packet>,
    /// The line of the target's pool the case ran on (`line 3
    /// (60970-3)`), for a target with numbered lines.
    pub line: Option<String>,
    /// The secrets of its TLS sessions, as NSS key log lines (written as
    /// `<case>.keys`); none over UDP and TCP.
    pub keys: Vec<String>,
    /// The target stopped during the case ("the server stopped answering
    /// after 60970's call-info SUBSCRIBE at stage rebooted: ..."): the
    /// case fails with it as its first divergence, whatever else it shows,
    /// and the cases after it are not run.
    pub stopped: Option<String>,
    /// Where each part of the case begins in `records` (an index): `setup`,
    /// each stage that ran, `teardown`; in order. Empty when the events
    /// came without SIP (a log).
    pub stage_starts: Vec<StageStart>,
}

/// What a run tells as it goes: a case (by its id) started, or finished
/// with its result. The console's status line is made of it.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    Started(&'a str),
    Finished(&'a str, &'a CaseResult),
}

/// A part of a case (a stage, the setup or the teardown) and the index in
/// [`CaseResult::records`] of its first record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageStart {
    pub stage: String,
    pub record: usize,
}

impl CaseResult {
    /// A case about to be judged: nothing observed, nothing wrong yet, the
    /// verdict to be settled ([`settle_verdict`]). Every producer of a
    /// result (a live run, a capture check, a log check) starts here.
    pub fn new(id: &str, title: &str, transport: Transport, source: Observability) -> CaseResult {
        CaseResult {
            id: id.to_string(),
            title: title.to_string(),
            transport,
            verdict: Verdict::Pass,
            duration: Duration::ZERO,
            stages: Vec::new(),
            error: None,
            problems: Vec::new(),
            records: Vec::new(),
            events: Vec::new(),
            source,
            notes: Vec::new(),
            mirrored: Vec::new(),
            line: None,
            keys: Vec::new(),
            stopped: None,
            stage_starts: Vec::new(),
        }
    }

    /// How every report names the case: its id, and `@tcp` or `@tls` for a
    /// run over TCP or TLS (a verdict table lines the transports up by it).
    pub fn key(&self) -> String {
        keyed(&self.id, self.transport)
    }

    /// Where the run first left the golden path, preferring a difference
    /// no declared deviation excuses (shown against the golden with the
    /// declared deviations applied).
    pub fn first_divergence(&self) -> Option<&Divergence> {
        let channels = || self.stages.iter().flat_map(|s| s.channels.iter());
        channels()
            .find_map(|c| c.unexcused())
            .or_else(|| channels().find_map(|c| c.divergence.as_ref()))
    }

    /// Every channel the case's golden files name, in order.
    pub fn channels(&self) -> Vec<&Channel> {
        let mut out: Vec<&Channel> = Vec::new();
        for c in self.stages.iter().flat_map(|s| s.channels.iter()) {
            if !out.contains(&&c.channel) {
                out.push(&c.channel);
            }
        }
        out
    }

    /// Where each channel's events came from, one line per source.
    pub fn source_lines(&self) -> Vec<String> {
        self.source
            .sources(self.channels())
            .into_iter()
            .map(|(source, channels)| {
                let names: Vec<String> = channels.iter().map(|c| c.to_string()).collect();
                format!("{}: {source}", names.join(", "))
            })
            .collect()
    }

    /// The first divergence as every output writes it.
    /// A server that stopped is the first of all.
    pub fn headline_divergence(&self) -> Option<String> {
        if let Some(stopped) = &self.stopped {
            return Some(stopped.clone());
        }
        self.first_divergence().map(ToString::to_string)
    }

    /// One line saying why the case did not pass.
    pub fn headline(&self) -> Option<String> {
        if let Some(d) = self.headline_divergence() {
            return Some(d);
        }
        if let Some(e) = &self.error {
            return Some(e.clone());
        }
        self.problems.first().map(|p| p.what.clone())
    }
}

/// Sets a finished run's verdict and notes from its stages (each channel
/// says which declared deviations occurred there). Live runs and capture
/// checks share it.
pub fn settle_verdict(result: &mut CaseResult) {
    (result.verdict, result.notes) = judge(result);
}

/// The verdict of a run, from what each channel's result says of the
/// deviations declared on it:
/// - fail: a difference no declared deviation excuses, or SIP the server
///   should not have sent;
/// - inconclusive: the case could not be driven to its end;
/// - xpass: a declared deviation did not occur on a channel it is declared
///   on (the golden matched without it);
/// - xfail: every difference is exactly a declared deviation;
/// - pass: no difference at all.
fn judge(r: &CaseResult) -> (Verdict, Vec<String>) {
    use crate::diff::Declared;
    let channels = || {
        r.stages
            .iter()
            .flat_map(|s| s.channels.iter().map(move |c| (s, c)))
    };
    let unexcused = channels().any(|(_, c)| c.unexcused().is_some());
    let mut occurred: Vec<&Declared> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    let mut unobservable: Vec<&Declared> = Vec::new();
    for (s, c) in channels() {
        let Some(d) = &c.deviated else { continue };
        unobservable.extend(&d.unobservable);
        occurred.extend(d.occurred.iter().flatten());
        for x in d.did_not_occur() {
            missing.push(format!(
                "did not occur in stage {:?}, channel {}: {}",
                s.stage, c.channel, x.label
            ));
        }
    }
    let labels = |mut v: Vec<&Declared>, prefix: &str| -> Vec<String> {
        v.sort_by_key(|x| x.line);
        v.dedup_by_key(|x| x.line);
        v.iter().map(|x| format!("{prefix}{}", x.label)).collect()
    };
    let blind = labels(unobservable, "not observable by this source: ");
    let with_blind = |mut notes: Vec<String>| {
        notes.extend(blind.iter().cloned());
        notes
    };
    let matched = labels(occurred, "");
    // SIP the server should not have sent is never an expected deviation,
    // nor a server that stopped.
    if unexcused || !r.problems.is_empty() || r.stopped.is_some() {
        return (Verdict::Fail, with_blind(matched));
    }
    if r.error.is_some() {
        return (Verdict::Inconclusive, with_blind(matched));
    }
    if !missing.is_empty() {
        return (Verdict::Xpass, with_blind(missing));
    }
    if matched.is_empty() {
        return (Verdict::Pass, with_blind(Vec::new()));
    }
    (Verdict::Xfail, with_blind(matched))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::deviation::Deviation;
    use crate::diff::{compare_stage, Bindings, ChannelResult, StageResult};

    /// A case result whose stage/channel pairs `differing` differ (the
    /// report's tests use it too).
    pub(crate) fn result(differing: &[(&str, &str)]) -> CaseResult {
        let stages = differing
            .iter()
            .map(|(stage, channel)| StageResult {
                stage: stage.to_string(),
                channels: vec![ChannelResult {
                    channel: Channel::parse(channel),
                    expected: Vec::new(),
                    observed: Vec::new(),
                    diff: Some("-x".into()),
                    divergence: None,
                    deviated: None,
                }],
                not_observed: Vec::new(),
                unasserted: Vec::new(),
            })
            .collect();
        let mut r = CaseResult::new("c", "t", Transport::Udp, Observability::everything("test"));
        r.stages = stages;
        r
    }

    fn ev(line: &str) -> crate::model::Event {
        let obj: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        crate::model::Event::from_json(&obj, crate::model::Strictness::Strict, &[])
            .unwrap()
            .0
    }

    fn deviation(line: usize, edit: crate::deviation::Edit) -> Deviation {
        Deviation {
            cases: vec!["c".into()],
            stage: "alerting".into(),
            channels: vec![Channel::parse("sca.60970")],
            edit,
            reason: format!("reason {line}"),
            evidence: None,
            line,
            file: None,
            at: Default::default(),
        }
    }

    const OFFERED: &str = r#"{"event": "Offered", "OtherDN": "60972", "Index": 1}"#;
    const BARE: &str = r#"{"event": "Offered", "OtherDN": "60972"}"#;
    const ALERTING: &str = r#"{"event": "Appearance", "Index": 1, "AppearanceState": "alerting"}"#;
    const HELD: &str = r#"{"event": "Appearance", "Index": 1, "AppearanceState": "held"}"#;

    /// Kamailio's two alerting deviations: no Index in the INVITE, no
    /// alerting state.
    fn kamailio() -> Vec<Deviation> {
        use crate::deviation::Edit;
        vec![
            deviation(
                10,
                Edit::Changed {
                    golden: vec![ev(r#"{"event": "Offered"}"#)],
                    without: vec![crate::model::Attr::Index],
                    set: Default::default(),
                },
            ),
            deviation(
                20,
                Edit::Absent(vec![ev(
                    r#"{"event": "Appearance", "AppearanceState": "alerting"}"#,
                )]),
            ),
        ]
    }

    /// The alerting stage of sca.60970 (golden: Offered with Index, then
    /// alerting) judged with `observed` and `deviations`.
    fn judged(observed: &[&str], deviations: &[Deviation]) -> (Verdict, Vec<String>, CaseResult) {
        let golden = vec![(
            Channel::parse("sca.60970"),
            crate::golden::Expectation::Events(
                [OFFERED, ALERTING]
                    .iter()
                    .enumerate()
                    .map(|(i, l)| crate::golden::Expected {
                        event: ev(l),
                        path: "g".into(),
                        line: i + 1,
                    })
                    .collect(),
            ),
        )];
        let observed: Vec<Observation> = observed
            .iter()
            .map(|l| Observation {
                channel: Channel::parse("sca.60970"),
                event: ev(l),
                raw: l.to_string(),
                within: None,
                record: None,
            })
            .collect();
        let refs: Vec<&Deviation> = deviations.iter().collect();
        let stage = compare_stage(
            "alerting",
            &golden,
            &observed,
            &Observability::everything("t"),
            &mut Bindings::default(),
            &refs,
        );
        let mut r = result(&[]);
        r.stages = vec![stage];
        let (v, notes) = judge(&r);
        (v, notes, r)
    }

    #[test]
    fn a_case_is_xfail_only_if_it_is_exactly_the_golden_with_its_deviations() {
        assert_eq!(judged(&[OFFERED, ALERTING], &[]).0, Verdict::Pass);
        assert_eq!(judged(&[BARE], &[]).0, Verdict::Fail);
        let (v, notes, _) = judged(&[BARE], &kamailio());
        assert_eq!(v, Verdict::Xfail);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("profile line 10") && notes[0].contains("reason 10"));
    }

    /// What a deviation does not name is not excused, even on its channel:
    /// `held` where the target is declared to send nothing.
    #[test]
    fn a_difference_beside_a_declared_one_fails_and_the_report_says_which_is_which() {
        for observed in [
            &[BARE, HELD][..],
            &[HELD],
            &[],
            &[BARE, BARE],
            &[r#"{"event": "Offered", "OtherDN": "60970"}"#],
        ] {
            let (v, _, r) = judged(observed, &kamailio());
            assert_eq!(v, Verdict::Fail, "{observed:?}");
            let channel = &r.stages[0].channels[0];
            let d = channel.unexcused().expect("an unexcused divergence");
            // Shown against the golden with the deviations applied.
            assert!(d.expected.is_some() || d.observed.is_some(), "{d}");
            let standing = channel.standing().join("\n");
            assert!(standing.contains("not excused"), "{standing}");
            assert_eq!(r.first_divergence(), Some(d));
        }
        let (_, _, r) = judged(&[BARE, HELD], &kamailio());
        let d = r.stages[0].channels[0].unexcused().unwrap();
        assert_eq!(
            (d.expected.as_deref(), d.observed.as_deref()),
            (None, Some(HELD))
        );
    }

    #[test]
    fn a_declared_deviation_that_did_not_occur_is_an_xpass() {
        // Neither occurred.
        let (v, notes, _) = judged(&[OFFERED, ALERTING], &kamailio());
        assert_eq!(v, Verdict::Xpass);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().all(|n| n.starts_with("did not occur in stage \"alerting\", channel sca.60970: declared deviation (profile line")), "{notes:?}");
        // One occurred (no alerting state), the other did not (the Index is there).
        let (v, notes, r) = judged(&[OFFERED], &kamailio());
        assert_eq!(v, Verdict::Xpass);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("profile line 10"), "{notes:?}");
        let standing = r.stages[0].channels[0].standing();
        assert!(
            standing[0].starts_with("excused:") && standing[0].contains("line 20"),
            "{standing:?}"
        );
        assert!(standing[1].starts_with("did not occur:") && standing[1].contains("line 10"));
    }

    #[test]
    fn a_deviation_the_source_cannot_see_is_neither_excuse_nor_xpass() {
        let mut blind = Observability::everything("t");
        blind.blind_to.push(crate::model::Attr::Index);
        let golden = vec![(
            Channel::parse("sca.60970"),
            crate::golden::Expectation::Events(vec![crate::golden::Expected {
                event: ev(OFFERED),
                path: "g".into(),
                line: 1,
            }]),
        )];
        let observed = vec![Observation {
            channel: Channel::parse("sca.60970"),
            event: ev(BARE),
            raw: String::new(),
            within: None,
            record: None,
        }];
        let devs = kamailio();
        let stage = compare_stage(
            "alerting",
            &golden,
            &observed,
            &blind,
            &mut Bindings::default(),
            &[&devs[0]],
        );
        let mut r = result(&[]);
        r.stages = vec![stage];
        let (v, notes) = judge(&r);
        assert_eq!(v, Verdict::Pass);
        assert!(notes[0].contains("not observable"), "{notes:?}");
    }

    /// Another case's or another stage's deviation does not apply.
    #[test]
    fn a_deviation_applies_only_where_it_is_declared() {
        let mut other = kamailio();
        other[0].stage = "answered".into();
        other[1].channels = vec![Channel::parse("sca.60970_2")];
        assert_eq!(judged(&[BARE], &other).0, Verdict::Fail);
    }

    #[test]
    fn problems_fail_and_undriven_cases_are_inconclusive() {
        let mut r = result(&[]);
        r.problems.push(Problem {
            what: "x".into(),
            raw: None,
        });
        assert_eq!(judge(&r).0, Verdict::Fail);
        let mut r = result(&[]);
        r.error = Some("setup: timed out".into());
        assert_eq!(judge(&r).0, Verdict::Inconclusive);
        assert!(
            Verdict::Xfail.expected()
                && Verdict::Skipped.expected()
                && !Verdict::Xpass.expected()
                && !Verdict::Inconclusive.expected()
        );
    }
}
