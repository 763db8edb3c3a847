//! A capture made into a case (`scacheck pcap case`, issue 15): the steps
//! recovered from scacheck's own capture of every case are that case's
//! steps; the recorded case passes against the server it was recorded
//! from, and fails where a seeded fault changes what the phones are told.

mod common;
use common::suite;

use std::path::Path;
use std::process::{Command, Output};

use scacheck::case::{Action, Index};
use scacheck::run::{run_all, RunOptions};

fn scacheck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scacheck"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("scacheck runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_steps_recovered_from_each_cases_capture_are_its_steps() {
    let (prepared, topology) = suite();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let live = rt.block_on(run_all(&prepared, &topology, RunOptions::default()));
    let mut errors = Vec::new();
    for (p, run) in prepared.iter().zip(&live) {
        let capture = scacheck::check::Capture {
            packets: scacheck::pcap::packets_from_records(&run.records),
            skipped: Default::default(),
            broken: None,
        };
        let (line, who) = scacheck::check::phones(&capture.packets, &[], &topology);
        let records = scacheck::check::records(&capture.packets, &who);
        // A stage each: an action, or the actions fired together (a race),
        // which the capture may show in either order.
        let mut got: Vec<Vec<(String, Action)>> = Vec::new();
        let recovery = scacheck::actions::recover(&records, &topology, &line);
        // An armed step (refuse-notify, lose-ack) is not recovered: the
        // recovery says so, one note per 481 the phone sent or ACK that
        // came after its 2xx came again; each such step is said, and
        // nothing else.
        for name in ["refuse-notify", "lose-ack"] {
            let armed = p
                .case
                .stages
                .iter()
                .flat_map(|s| &s.steps)
                .any(|s| s.action.armed() && scacheck::actions::name(&s.action) == name);
            let said = recovery
                .unrecovered
                .iter()
                .any(|u| u.contains(&format!("{name} is not recovered")));
            if armed != said {
                errors.push(format!(
                    "{}: {name} steps {armed}, said unrecovered {said}: {:?}",
                    p.case.id, recovery.unrecovered
                ));
            }
        }
        for a in recovery.actions {
            match got.last_mut() {
                Some(group) if a.concurrent => group.push((a.actor, a.action)),
                _ => got.push(vec![(a.actor, a.action)]),
            }
        }
        let mut want: Vec<Vec<(String, Action)>> = Vec::new();
        for s in &p.case.stages {
            let steps = s
                .steps
                .iter()
                .filter(|s| !s.action.armed())
                .map(|s| (s.actor.clone(), s.action.clone()));
            if s.together {
                want.push(steps.collect());
            } else {
                want.extend(steps.map(|s| vec![s]));
            }
        }
        // A step after a race is taken by whichever phone won it.
        for groups in [&mut got, &mut want] {
            let mut racing: Vec<String> = Vec::new();
            for group in groups.iter_mut() {
                if group.len() > 1 {
                    racing = group.iter().map(|(a, _)| a.clone()).collect();
                    group.sort_by(|a, b| a.0.cmp(&b.0));
                } else if racing.contains(&group[0].0) {
                    group[0].0 = "the race's winner".into();
                }
            }
        }
        // A retrieve or barge-in recovered from a capture names the
        // appearance by what the line told the phone; the case, by number.
        let step_same = |(ga, g): &(String, Action), (wa, w): &(String, Action)| {
            ga == wa
                && match (g, w) {
                    (
                        Action::Retrieve {
                            index: Index::Told(_),
                        },
                        Action::Retrieve { .. },
                    )
                    | (
                        Action::Barge {
                            index: Index::Told(_),
                        },
                        Action::Barge { .. },
                    ) => true,
                    _ => g == w,
                }
        };
        let same = got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(g, w)| g.len() == w.len() && g.iter().zip(w).all(|(g, w)| step_same(g, w)));
        if !same {
            errors.push(format!(
                "{}:\n  recovered {got:?}\n  case      {want:?}",
                p.case.id
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// A copy of the repository's suite to record into.
fn tree() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let copy = |from: &Path, to: &Path| {
        let out = Command::new("cp")
            .arg("-r")
            .arg(from)
            .arg(to)
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    copy(&root.join("cases"), &dir.path().join("cases"));
    copy(&root.join("fixtures/golden"), &dir.path().join("golden"));
    let cases = dir.path().join("cases").display().to_string();
    let golden = dir.path().join("golden").display().to_string();
    (dir, cases, golden)
}

#[test]
fn a_recorded_case_passes_where_it_was_recorded_and_fails_with_a_fault_it_exercises() {
    let (dir, cases, golden) = tree();
    let dirs = [
        "--cases-dir",
        cases.as_str(),
        "--golden-dir",
        golden.as_str(),
    ];
    let report = dir.path().join("first").display().to_string();
    let mut first = vec!["run", "--cases", "hold-retrieve", "--report-dir", &report];
    first.extend(dirs);
    assert_eq!(scacheck(&first).status.code(), Some(0));
    let pcap = format!("{report}/hold-retrieve.pcap");
    let mut make = vec!["pcap", "case", &pcap, "--id", "recorded-hold"];
    make.extend(dirs);
    let out = scacheck(&make);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("4 steps"), "{}", text(&out));
    let case = std::fs::read_to_string(format!("{cases}/recorded-hold.toml")).unwrap();
    // Bound to what the line told the phone: the held appearance.
    assert!(
        case.contains("action = \"retrieve\", index = \"held\""),
        "{case}"
    );
    // The T-Library channels are left to a server's own events, with why.
    let dn = std::fs::read_to_string(format!("{golden}/recorded-hold-1-call/60970.jsonl")).unwrap();
    assert!(dn.contains("unasserted"), "{dn}");
    let wire = std::fs::read_to_string(format!("{golden}/recorded-hold-3-hold/sca.60970_2.jsonl"))
        .unwrap();
    assert!(wire.contains("\"AppearanceState\": \"held\""), "{wire}");

    let run = |fault: Option<&str>| {
        let report = dir.path().join("again").display().to_string();
        let mut args = vec!["run", "--cases", "recorded-hold", "--report-dir", &report];
        args.extend(dirs);
        if let Some(f) = fault {
            args.extend(["--fault", f]);
        }
        scacheck(&args)
    };
    let passed = run(None);
    assert_eq!(passed.status.code(), Some(0), "{}", text(&passed));
    let caught = run(Some("hold-not-notified"));
    assert_eq!(caught.status.code(), Some(1), "{}", text(&caught));
    assert!(text(&caught).contains("FAIL"), "{}", text(&caught));

    // Nothing is overwritten.
    let again = scacheck(&make);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again));
    assert!(text(&again).contains("exists already"), "{}", text(&again));
}

#[test]
fn captures_that_show_no_phone_action_are_refused_with_exit_2() {
    let (dir, cases, golden) = tree();
    let dirs = [
        "--cases-dir",
        cases.as_str(),
        "--golden-dir",
        golden.as_str(),
    ];
    let garbage = dir.path().join("garbage.pcap");
    std::fs::write(&garbage, b"not a capture at all").unwrap();
    // A capture of SIP with no SCA: one OPTIONS and its answer.
    let plain = dir.path().join("plain.pcap");
    let options = b"OPTIONS sip:sca.test SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\nFrom: <sip:a@sca.test>;tag=1\r\nTo: <sip:sca.test>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let packet = scacheck::pcap::Packet {
        time: std::time::SystemTime::UNIX_EPOCH,
        transport: scacheck::sip::Transport::Udp,
        src: "127.0.0.1:5070".parse().unwrap(),
        dst: "127.0.0.1:5060".parse().unwrap(),
        raw: options.to_vec(),
    };
    scacheck::pcap::write_packets(std::fs::File::create(&plain).unwrap(), &[packet]).unwrap();
    for (file, want) in [(&garbage, "reading"), (&plain, "no phones")] {
        let f = file.display().to_string();
        let mut args = vec!["pcap", "case", &f, "--id", "x"];
        args.extend(dirs);
        let out = scacheck(&args);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(want), "{}", text(&out));
        assert!(!Path::new(&format!("{cases}/x.toml")).exists());
    }
    let out = scacheck(&[
        "pcap",
        "case",
        "fixtures/captures/foreign/hold-retrieve.pcap",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--id"), "{}", text(&out));
}

#[test]
fn a_replay_judges_the_flow_against_the_captured_server_and_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    // Kamailio's flow on the embedded server: what the reference asks of
    // it holds, what Kamailio did does not (the embedded server tells the
    // phones an alerting state, Kamailio told them nothing).
    let report = dir.path().join("kamailio").display().to_string();
    let out = scacheck(&[
        "pcap",
        "replay",
        "fixtures/captures/foreign/hold-retrieve.pcap",
        "--report-dir",
        &report,
    ]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("reference case hold-retrieve"), "{said}");
    let verdicts = |dir: &str| -> Vec<(String, String)> {
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}/summary.json")).unwrap())
                .unwrap();
        let mut v: Vec<(String, String)> = s["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().into(),
                    c["verdict"].as_str().unwrap().into(),
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        verdicts(&report),
        vec![
            ("hold-retrieve".to_string(), "pass".to_string()),
            ("replay-hold-retrieve".to_string(), "fail".to_string())
        ]
    );
    assert!(said.contains("AppearanceState\": \"alerting\""), "{said}");
    // The embedded server's own flow replayed on it: both hold.
    let first = dir.path().join("first").display().to_string();
    let out = scacheck(&["run", "--cases", "barge-in", "--report-dir", &first]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let again = dir.path().join("again").display().to_string();
    let pcap = format!("{first}/barge-in.pcap");
    let out = scacheck(&["pcap", "replay", &pcap, "--report-dir", &again]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        verdicts(&again),
        vec![
            ("barge-in".to_string(), "pass".to_string()),
            ("replay-barge-in".to_string(), "pass".to_string())
        ]
    );
}

#[test]
fn a_seize_race_in_a_capture_is_replayed_as_a_race_and_the_report_names_each_winner() {
    let (dir, cases, golden) = tree();
    let dirs = [
        "--cases-dir",
        cases.as_str(),
        "--golden-dir",
        golden.as_str(),
    ];
    let report = dir.path().join("first").display().to_string();
    let mut first = vec!["run", "--cases", "seize-race", "--report-dir", &report];
    first.extend(dirs);
    assert_eq!(scacheck(&first).status.code(), Some(0));
    let pcap = format!("{report}/seize-race.pcap");
    let mut make = vec!["pcap", "case", &pcap, "--id", "recorded-race"];
    make.extend(dirs);
    let out = scacheck(&make);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let case = std::fs::read_to_string(format!("{cases}/recorded-race.toml")).unwrap();
    // The race is one stage of two seizures fired together.
    assert_eq!(case.matches("together = true").count(), 1, "{case}");
    assert_eq!(case.matches("action = \"seize\"").count(), 2, "{case}");
    assert!(case.contains("name = \"1-seize-race\""), "{case}");

    let run = |fault: Option<&str>| {
        let report = dir.path().join("again").display().to_string();
        let mut args = vec!["run", "--cases", "recorded-race", "--report-dir", &report];
        args.extend(dirs);
        if let Some(f) = fault {
            args.extend(["--fault", f]);
        }
        let out = scacheck(&args);
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{report}/summary.json")).unwrap(),
        )
        .unwrap();
        (out, summary["cases"][0].clone())
    };
    let (passed, case) = run(None);
    assert_eq!(passed.status.code(), Some(0), "{}", text(&passed));
    let winners: Vec<&str> = case["notes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n.as_str())
        .filter(|n| n.contains("line-seize race"))
        .collect();
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert!(
        winners
            .iter()
            .all(|n| n.contains("won by 60970 ") || n.contains("won by 60970_2 ")),
        "{winners:?}"
    );
    // Both seizures granted: no single winner, and the race fails.
    let (caught, case) = run(Some("double-seize"));
    assert_eq!(caught.status.code(), Some(1), "{}", text(&caught));
    assert!(
        case["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("won by no single phone")),
        "{case}"
    );
}
