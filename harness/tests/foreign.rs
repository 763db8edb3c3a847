//! Captures scacheck did not make: phones that registered before the
//! capture began and do not say who they are. Every recorded Kamailio
//! capture made so ([`common::foreign`]: no REGISTER, no User-Agent) is
//! still its own case, found by its SCA signalling alone; with the
//! Kamailio profile it gets the verdict of the capture as recorded.

mod common;

use std::path::Path;

use scacheck::check::Capture;
use scacheck::line::Identities;
use scacheck::outcome::CaseResult;
use scacheck::pcap::{write_packets, Packet, Reader};
use scacheck::suite::Prepared;
use scacheck::topology::Topology;

/// The captures `fixtures/captures/foreign/` keeps, made by
/// [`common::foreign`] of Kamailio's.
const KEPT: [&str; 2] = ["hold-retrieve", "outbound-call"];

/// A capture judged against the whole suite (the flow detected).
fn detected<'a>(
    suite: &'a [Prepared],
    packets: Vec<Packet>,
    lines: &[Identities],
    deviations: &[scacheck::deviation::Deviation],
    topology: &Topology,
) -> (&'a Prepared, CaseResult) {
    let capture = Capture {
        packets,
        skipped: Default::default(),
        broken: None,
    };
    capture
        .judge(Path::new("foreign"), suite, lines, deviations, topology)
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn foreign_phones_are_found_by_their_sca_signalling() {
    let (suite, topology) = common::suite();
    let (profile, captures) = common::kamailio_captures(&suite, &topology);
    assert!(captures.len() >= 14);
    let embedded = [Identities::own(&topology)];
    for (p, packets) in &captures {
        let id = &p.case.id;
        let recorded = common::judge_capture(p, packets, &topology, &profile);
        let foreign = common::foreign(packets);
        assert!(foreign.len() < packets.len(), "{id}: no REGISTER dropped");
        assert!(foreign
            .iter()
            .all(|m| !String::from_utf8_lossy(&m.raw).contains("User-Agent")));
        // With the profile: its line, and the recorded verdict.
        let (q, with) = detected(
            &suite,
            foreign.clone(),
            &profile.lines,
            &profile.deviations,
            &topology,
        );
        assert_eq!(&q.case.id, id);
        assert_eq!(
            with.verdict,
            recorded.verdict,
            "{id}: {:?}",
            with.headline()
        );
        assert_eq!(with.line, recorded.line, "{id}");
        let passed = |r: &CaseResult| -> Vec<(String, bool)> {
            r.stages
                .iter()
                .map(|s| (s.stage.clone(), s.passed()))
                .collect()
        };
        assert_eq!(passed(&with), passed(&recorded), "{id}");
        // Without one: the same case, its events in DNs.
        let (q, without) = detected(&suite, foreign, &embedded, &[], &topology);
        assert_eq!(&q.case.id, id);
        assert_eq!(without.line, None);
        assert!(!without.events.is_empty(), "{id}");
        for (_, o) in &without.events {
            let said = format!("{:?}", o.event);
            assert!(
                !said.contains("60970-") && !said.contains("60972-"),
                "{id}: a SIP user, not a DN: {said}"
            );
        }
        let channels: std::collections::BTreeSet<String> = without
            .events
            .iter()
            .map(|(_, o)| format!("{:?}", o.channel))
            .collect();
        for dn in &p.case.parties {
            assert!(
                channels.iter().any(|c| c.contains(&format!("\"{dn}\""))),
                "{id}: nothing on {dn}: {channels:?}"
            );
        }
    }
}

/// The kept files are what [`common::foreign`] makes of Kamailio's now.
/// `SCACHECK_WRITE_FOREIGN=1 cargo test --test foreign` writes them again.
#[test]
fn the_kept_foreign_captures_are_made_of_kamailios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for id in KEPT {
        let from = root.join(format!("fixtures/captures/kamailio/{id}.pcap"));
        let mut reader = Reader::open(&from).unwrap();
        let packets: Vec<Packet> = std::iter::from_fn(|| reader.next_packet().unwrap()).collect();
        let mut made = Vec::new();
        write_packets(&mut made, &common::foreign(&packets)).unwrap();
        let kept = root.join(format!("fixtures/captures/foreign/{id}.pcap"));
        if std::env::var_os("SCACHECK_WRITE_FOREIGN").is_some() {
            std::fs::write(&kept, &made).unwrap();
        }
        let on_disk = std::fs::read(&kept).unwrap_or_else(|e| panic!("{kept:?}: {e}"));
        assert!(
            on_disk == made,
            "{id}: stale; SCACHECK_WRITE_FOREIGN=1 remakes it"
        );
    }
}

/// Every recorded Kamailio capture (each ran on a line of its own) in one
/// file, in time order: `pcap check` splits it into a flow per line and
/// gives each the case and verdict its own capture has.
#[test]
fn a_capture_of_every_flow_on_its_own_line_is_split_into_its_flows() {
    use scacheck::pcap::{write_packets, Packet, Reader};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let mut all: Vec<Packet> = Vec::new();
    let mut want = std::collections::BTreeMap::new();
    let captures = root.join("fixtures/captures/kamailio");
    let mut names: Vec<_> = std::fs::read_dir(&captures)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    names.sort();
    let profile = root.join("fixtures/targets/kamailio/target.toml");
    let check = |file: &std::path::Path, report: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_scacheck"))
            .args(["pcap", "check"])
            .arg(file)
            .arg("--target")
            .arg(&profile)
            .arg("--report-dir")
            .arg(report)
            .current_dir(root)
            .output()
            .unwrap()
    };
    let verdicts = |report: &std::path::Path| -> Vec<(String, String)> {
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap())
                .unwrap();
        s["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().into(),
                    c["verdict"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    for (n, path) in names.iter().enumerate() {
        let mut reader = Reader::open(path).unwrap();
        while let Some(p) = reader.next_packet().unwrap() {
            all.push(p);
        }
        let report = dir.path().join(format!("one-{n}"));
        check(path, &report);
        let (id, verdict) = verdicts(&report).remove(0);
        want.insert(id, verdict);
    }
    all.sort_by_key(|p| p.time);
    let merged = dir.path().join("all.pcap");
    write_packets(std::fs::File::create(&merged).unwrap(), &all).unwrap();
    let report = dir.path().join("merged");
    let out = check(&merged, &report);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        // (seize-race's capture ran on line 1 by itself: its flow is the
        // line's second, split from barge-in's by their registrations.)
        said.contains(&format!("{} flows", names.len())),
        "{said}"
    );
    let got: std::collections::BTreeMap<String, String> = verdicts(&report)
        .into_iter()
        .map(|(id, v)| (id.split('@').next().unwrap().to_string(), v))
        .collect();
    assert_eq!(got, want, "{said}");
    assert_eq!(want.len(), names.len());
    // Made into cases: one per flow, each its line's.
    for (from, to) in [("cases", "cases"), ("fixtures/golden", "golden")] {
        let copied = std::process::Command::new("cp")
            .arg("-r")
            .arg(root.join(from))
            .arg(dir.path().join(to))
            .status()
            .unwrap();
        assert!(copied.success());
    }
    let suite = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_scacheck"))
            .args(args)
            .arg("--cases-dir")
            .arg(dir.path().join("cases"))
            .arg("--golden-dir")
            .arg(dir.path().join("golden"))
            .current_dir(root)
            .output()
            .unwrap()
    };
    let merged_arg = merged.display().to_string();
    let profile_arg = profile.display().to_string();
    let out = suite(&[
        "pcap",
        "case",
        &merged_arg,
        "--id",
        "merged",
        "--target",
        &profile_arg,
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made = std::fs::read_dir(dir.path().join("cases"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("merged-line-"))
        .count();
    assert_eq!(made, names.len(), "{said}");
    // Replayed against a live Kamailio by fixtures/targets/kamailio/recorded.sh.
}

/// The field captures (`fixtures/captures/field/`, made by a SIP stack of
/// its own against Kamailio, phones registered before the capture began):
/// `pcap check` with the Kamailio profile splits each into its flows (one
/// per line, and one per trial of the five-trial seize race, split by its
/// seizures' lifetimes as nothing registers), and gives every flow the
/// verdict scacheck's own capture of that case on Kamailio gets; each
/// trial's report says who won it.
#[test]
fn field_captures_made_by_other_phones_give_each_flow_its_kamailio_verdict() {
    let (suite, topology) = common::suite();
    let (profile, captures) = common::kamailio_captures(&suite, &topology);
    let want: std::collections::BTreeMap<String, String> = captures
        .iter()
        .map(|(p, packets)| {
            let r = common::judge_capture(p, packets, &topology, &profile);
            (p.case.id.clone(), format!("{:?}", r.verdict).to_lowercase())
        })
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for (file, flows) in [("kamailio-udp", 19), ("kamailio-tcp", 7), ("seize-race", 5)] {
        let report = dir.path().join(file);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_scacheck"))
            .args(["pcap", "check"])
            .arg(root.join(format!("fixtures/captures/field/{file}.pcap")))
            .arg("--target")
            .arg(root.join("fixtures/targets/kamailio/target.toml"))
            .arg("--report-dir")
            .arg(&report)
            .current_dir(root)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{file}: {said}");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap())
                .unwrap();
        let cases = summary["cases"].as_array().unwrap();
        assert_eq!(cases.len(), flows, "{file}: {said}");
        let mut races = 0;
        for (k, c) in cases.iter().enumerate() {
            let id = c["id"].as_str().unwrap();
            let case = id.split('@').next().unwrap();
            assert_eq!(
                Some(c["verdict"].as_str().unwrap()),
                want.get(case).map(String::as_str),
                "{file}: {id}: {said}"
            );
            let notes: Vec<&str> = c["notes"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|n| n.as_str())
                .collect();
            // The phones' own teardown is cut off, and said to be, in
            // each line's last flow; a trial before the next ends where
            // the next begins.
            let line = |c: &serde_json::Value| {
                let id = c["id"].as_str().unwrap().to_string();
                let at = id.split('@').nth(1).unwrap_or_default().to_string();
                at.split('.').next().unwrap_or_default().to_string()
            };
            let last_of_line = cases.get(k + 1).is_none_or(|next| line(next) != line(c));
            assert_eq!(
                notes
                    .iter()
                    .any(|n| n.contains("read as the flow's own teardown")),
                last_of_line,
                "{file}: {id}: {notes:?}"
            );
            if case == "seize-race" {
                races += 1;
                assert!(
                    notes
                        .iter()
                        .any(|n| n.contains("line-seize race") && n.contains("won by 6097")),
                    "{file}: {id}: {notes:?}"
                );
            }
        }
        assert_eq!(races, 5, "{file}: {said}");
    }
}

/// The field capture replayed on the embedded server, its phones found by
/// the profile of the server it was made on: every flow's reference case
/// gets the embedded server's verdict (pass), and the five-trial race is
/// recorded as races.
#[test]
fn a_field_capture_replayed_on_the_embedded_server_gives_the_reference_verdicts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("replay");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scacheck"))
        .args(["pcap", "replay"])
        .arg(root.join("fixtures/captures/field/kamailio-udp.pcap"))
        .arg("--captured-on")
        .arg(root.join("fixtures/targets/kamailio/target.toml"))
        .arg("--report-dir")
        .arg(&report)
        .current_dir(root)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        said.matches("is judged against what the captured server did")
            .count(),
        19,
        "{said}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap())
            .unwrap();
    let (mut reference, mut trials, mut races) = (0, 0, 0);
    for c in summary["cases"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        if id.starts_with("replay-") {
            // Line 15's five trials, a flow each.
            if id.ends_with("-line-15") || id.contains("-line-15-") {
                trials += 1;
                races += c["notes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|n| n.as_str().unwrap().contains("line-seize race"))
                    .count();
            }
            continue;
        }
        reference += 1;
        assert_eq!(c["verdict"], "pass", "{id}: {said}");
    }
    assert_eq!(trials, 5, "{said}");
    // A trial whose second SUBSCRIBE the capture shows after the server
    // had told that phone of the first seizure is read as two seizures in
    // turn, not a race.
    assert!((4..=5).contains(&races), "{said}");
    assert_eq!(reference, 15, "{said}");
}
