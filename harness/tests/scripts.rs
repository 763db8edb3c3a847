//! The scripts CI judges reports with. `compare-reports.sh` decides whether
//! Kamailio's HEP view and a capture of a run agree with the phones' view;
//! it must compare order exactly where the diff does, and no further.

use std::path::Path;
use std::process::Command;

use scacheck::report::WITHIN;

/// A report directory holding one case `c` with `verdict` and these event
/// lines (as `<case>.sip.txt` writes them).
fn report<S: AsRef<str>>(verdict: &str, events: &[S]) -> tempfile::TempDir {
    report_noted(verdict, events, &[])
}

/// [`report`] with the case's notes in its summary (a race's outcome).
fn report_noted<S: AsRef<str>>(verdict: &str, events: &[S], notes: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let summary = serde_json::json!({"cases": [{"id": "c", "verdict": verdict, "notes": notes}]});
    std::fs::write(dir.path().join("summary.json"), summary.to_string()).unwrap();
    let events: Vec<&str> = events.iter().map(AsRef::as_ref).collect();
    let text = format!(
        "#0 +0.000s 60972 -> INVITE sip:60970@sca.test SIP/2.0 sent to 127.0.0.1:5060 (udp)\n\n== events ==\nfrom: test\n{}\n",
        events.join("\n")
    );
    std::fs::write(dir.path().join("c.sip.txt"), text).unwrap();
    dir
}

/// Runs compare-reports.sh BASE OTHER: whether they agree, and what it said.
fn compare(base: &tempfile::TempDir, other: &tempfile::TempDir) -> (bool, String) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/targets/kamailio/compare-reports.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg(base.path())
        .arg(other.path())
        .output()
        .expect("bash runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// An event line of 60972 in stage `retrieved`, ordered `within` a dialog
/// as the report writes it (`None`: as a feed's, ordered on the channel).
fn line(event: &str, within: Option<&str>) -> String {
    let mut l = format!(r#"[retrieved] 60972 {{"event": "{event}", "ThisDN": "60972"}}"#);
    if let Some(w) = within {
        l.push_str(&format!("{WITHIN}{w})"));
    }
    l
}

/// The retrieve at 60972 as one run saw it: the new call rings and is
/// answered, the replaced call is released. `run` names the Call-IDs, which
/// differ from run to run; `None` gives a feed's lines.
fn retrieve(run: Option<&str>) -> [String; 3] {
    let new = run.map(|r| format!("new-{r}"));
    let old = run.map(|r| format!("old-{r}"));
    [
        line("EventRinging", new.as_deref()),
        line("EventEstablished", new.as_deref()),
        line("EventReleased", old.as_deref()),
    ]
}

#[test]
fn two_dialogs_in_either_order_agree_across_runs() {
    // What CI saw: the HEP mirror gave a phone's BYE of the replaced
    // dialog before its 200 on the new one.
    let base = report("xfail", &retrieve(Some("run1")));
    let [ringing, established, released] = retrieve(Some("run2"));
    let other = report("xfail", &[ringing, released, established]);
    let (agree, said) = compare(&base, &other);
    assert!(agree, "{said}");
    assert!(said.contains("c: xfail, same events"), "{said}");
}

#[test]
fn one_dialog_reordered_a_missing_event_or_another_verdict_disagree() {
    let base = report("xfail", &retrieve(Some("run1")));
    let [ringing, established, released] = retrieve(Some("run2"));
    let within = report("xfail", &[&established, &ringing, &released]);
    let (agree, said) = compare(&base, &within);
    assert!(!agree && said.contains("the events differ"), "{said}");
    let missing = report("xfail", &[&ringing, &established]);
    assert!(!compare(&base, &missing).0);
    let verdict = report("fail", &[&ringing, &established, &released]);
    let (agree, said) = compare(&base, &verdict);
    assert!(!agree && said.contains("xfail in"), "{said}");
}

#[test]
fn a_feed_channel_is_compared_in_the_order_delivered() {
    let [ringing, established, released] = retrieve(None);
    let base = report("pass", &[&ringing, &established, &released]);
    assert!(compare(&base, &report("pass", &[&ringing, &established, &released])).0);
    let swapped = report("pass", &[&ringing, &released, &established]);
    assert!(!compare(&base, &swapped).0);
}

#[test]
fn either_winner_of_an_answer_race_compares_equal_by_its_part() {
    // An answer glare: the server connects whichever phone it picks, and
    // the run's notes say which; the winner's events are named by part.
    let won_by = |dn: &str| {
        let note = format!(
            "stage answered: an answer race of 60970 and 60970_2, won by {dn} (the golden's winner: 60970)"
        );
        let event = format!(r#"[answered] {dn} {{"event": "EventEstablished", "ThisDN": "{dn}"}}"#);
        (note, event)
    };
    let (note1, event1) = won_by("60970");
    let (note2, event2) = won_by("60970_2");
    let base = report_noted("xfail", &[&event1], &[&note1]);
    let other = report_noted("xfail", &[&event2], &[&note2]);
    let (agree, said) = compare(&base, &other);
    assert!(agree, "{said}");
    // Without the notes nothing says the phones swapped parts.
    let (agree, said) = compare(&report("xfail", &[&event1]), &report("xfail", &[&event2]));
    assert!(!agree && said.contains("the events differ"), "{said}");
}

#[test]
fn a_verdict_disagreement_says_each_first_divergence_and_the_event_difference() {
    let base = report("xfail", &retrieve(Some("run1")));
    let [ringing, established, _] = retrieve(Some("run2"));
    let other = report("fail", &[&ringing, &established]);
    std::fs::write(
        other.path().join("c.diff"),
        "case c: FAIL\nfirst divergence: stage \"retrieved\", channel 60972: expected EventReleased, observed nothing\n",
    )
    .unwrap();
    let (agree, said) = compare(&base, &other);
    assert!(!agree, "{said}");
    assert!(
        said.contains("first divergence: stage \"retrieved\""),
        "{said}"
    );
    assert!(
        said.contains("< [retrieved] 60972 {\"event\": \"EventReleased\""),
        "{said}"
    );
}
