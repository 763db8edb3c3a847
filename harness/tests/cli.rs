//! The command line as a user meets it: exit codes, report files, and
//! errors that name the file and line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scacheck(args: &[&str]) -> Output {
    scacheck_in(root(), args)
}

/// The binary run from `dir` (the checkout for [`scacheck`]).
fn scacheck_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scacheck"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("scacheck runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_clean_run_passes_and_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = scacheck(&["run", "--report-dir", dir.path().to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let n = std::fs::read_dir(root().join("cases"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    assert!(n >= 14, "the suite has every reference flow");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["totals"]["pass"], n);
    assert_eq!(summary["cases"].as_array().unwrap().len(), n);
    for case in summary["cases"].as_array().unwrap() {
        assert_eq!(case["verdict"], "pass");
        assert!(case["duration_ms"].is_u64());
        assert!(case["first_divergence"].is_null());
        let sip = std::fs::read_to_string(
            dir.path()
                .join(format!("{}.sip.txt", case["id"].as_str().unwrap())),
        )
        .unwrap();
        assert!(sip.contains(" -> REGISTER sip:sca.test SIP/2.0"), "{sip}");
        // Where each channel's events came from.
        let sources = case["sources"].as_object().unwrap();
        assert!(!sources.is_empty());
        for (channel, source) in sources {
            let source = source.as_str().unwrap();
            let expected = if channel.starts_with("sca.") {
                "SCA wire layer derived from the SIP the phones saw"
            } else {
                "the embedded server's event feed"
            };
            assert_eq!(source, expected, "{channel}");
        }
    }
    assert!(text(&out.stdout).contains(&format!(
        "{n} cases: {n} pass, 0 fail, 0 xfail, 0 xpass, 0 skipped, 0 inconclusive"
    )));
}

#[test]
fn a_fault_exits_1_with_a_diff_for_the_failing_case_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = scacheck(&[
        "run",
        "--fault",
        "no-onhook",
        "--cases",
        "*-by-caller",
        "--report-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let diff = std::fs::read_to_string(dir.path().join("terminated-by-caller.diff")).unwrap();
    assert!(diff.contains("first divergence: stage \"released\", channel 60970: expected {\"event\": \"EventOnHook\""), "{diff}");
    assert!(
        diff.contains("-{\"event\": \"EventOnHook\", \"ThisDN\": \"60970\"}"),
        "{diff}"
    );
    let summary = std::fs::read_to_string(dir.path().join("summary.json")).unwrap();
    assert!(summary.contains("\"fail\": 1"), "{summary}");
}

#[test]
fn faults_are_listed() {
    let out = scacheck(&["faults"]);
    assert_eq!(out.status.code(), Some(0));
    for f in scacheck::reference::Fault::ALL {
        assert!(text(&out.stdout).contains(f.name()));
    }
}

/// A copy of cases/ and fixtures/golden/ in a temporary directory, with one
/// file replaced.
fn broken_tree(file: &str, contents: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = |from: &Path, to: &Path| {
        for entry in walk(from) {
            let rel = entry.strip_prefix(from).unwrap();
            std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
            std::fs::copy(&entry, to.join(rel)).unwrap();
        }
    };
    let (cases, golden) = (dir.path().join("cases"), dir.path().join("golden"));
    copy(&root().join("cases"), &cases);
    copy(&root().join("fixtures/golden"), &golden);
    std::fs::write(dir.path().join(file), contents).unwrap();
    (dir, cases, golden)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn run_tree(cases: &Path, golden: &Path, report: &Path) -> Output {
    scacheck(&[
        "run",
        "--cases-dir",
        cases.to_str().unwrap(),
        "--golden-dir",
        golden.to_str().unwrap(),
        "--report-dir",
        report.to_str().unwrap(),
    ])
}

#[test]
fn bad_input_exits_2_naming_file_and_line() {
    let bad = [
        ("cases/inbound-answered.toml", "title = \"x\"\nparties = [\"60972\"]\n[[stage]]\nname = \"a\"\ncovers = \"c\"\ngolden = \"inbound-alerting\"\nsteps = [{ actor = \"60970\", action = \"answer\" }]\n", "cases/inbound-answered.toml:7: actor \"60970\" is not one of the case's parties"),
        ("cases/inbound-alerting.toml", "title = \"x\"\nparties = [\n  \"60972\",\n]\n[[stage]]\nname = 1\n", "cases/inbound-alerting.toml:6: invalid type"),
        ("golden/inbound-answered/60970.jsonl", "{\"event\": \"EventEstablished\", \"ThisDN\": \"60970\"}\n{\"event\": \"EventEstablished\", \"Cause\": \"Sometimes\"}\n", "golden/inbound-answered/60970.jsonl:2: unknown Cause \"Sometimes\""),
        ("golden/inbound-alerting/monitoring.jsonl", "{\"event\": \"EventCallCreated\", \"ConnID\": \"1\"}\n", "golden/inbound-alerting/monitoring.jsonl:1: ConnID \"1\" must be a symbol"),
        ("golden/inbound-alerting/60972.jsonl", "{\"event\": \"EventOffHook\", \"ThisDN\": \"60973\"}\n", "golden/inbound-alerting/60972.jsonl:1: ThisDN \"60973\" is not a known party"),
        ("golden/inbound-alerting/6097.jsonl", "", "golden/inbound-alerting/6097.jsonl: not a channel file"),
    ];
    for (file, contents, want) in bad {
        let (dir, cases, golden) = broken_tree(file, contents);
        let report = dir.path().join("report");
        let out = run_tree(&cases, &golden, &report);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains(want), "{file}: wanted {want:?} in {err}");
        assert!(!report.exists(), "nothing runs on bad input");
    }
}

/// A NUL byte in a comment (toml says nothing of it) is named with the
/// file, line and column, in a case file and in a target profile.
#[test]
fn a_control_character_in_a_case_or_profile_exits_2_naming_file_and_line() {
    let with_nul = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap();
        let (first, rest) = text.split_once('\n').unwrap();
        format!("{first}\n# a \0 here\n{rest}")
    };
    let case = with_nul(&root().join("cases/inbound-alerting.toml"));
    let (dir, cases, golden) = broken_tree("cases/inbound-alerting.toml", &case);
    let out = run_tree(&cases, &golden, &dir.path().join("report"));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cases/inbound-alerting.toml:2: column 5: control character U+0000"),
        "{err}"
    );
    let profile = dir.path().join("target.toml");
    std::fs::write(
        &profile,
        with_nul(&root().join("fixtures/targets/kamailio/target.toml")),
    )
    .unwrap();
    let out = scacheck(&["run", "--target", profile.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}:2: column 5: control character U+0000",
            profile.display()
        )),
        "{err}"
    );
}

/// `log check` of something that is not a server log is bad input, said as
/// such: not a log in which nothing matched.
#[test]
fn log_check_of_something_that_is_not_a_log_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let random: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for (name, bytes) in [("random.bin", random), ("empty.log", Vec::new())] {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let out = scacheck(&[
            "log",
            "check",
            file.to_str().unwrap(),
            "--case",
            "inbound-answered",
            "--report-dir",
            dir.path().join("report").to_str().unwrap(),
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(name), "{name}: {err}");
        assert!(
            err.contains("not a SIP Server/T-Server log"),
            "{name}: {err}"
        );
        assert!(!dir.path().join("report").exists(), "{name}: no report");
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["run", "--fault", "nope"][..],
        &["run", "--cases", "no-such-case"],
        &["run", "--transport", "sctp"],
        &["frobnicate"],
    ] {
        let out = scacheck(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

/// `log check` says what it passed over, on the console and in the report.
#[test]
fn log_check_reports_what_it_skipped() {
    let report = tempfile::tempdir().unwrap();
    let log = root().join("fixtures/logs/inbound-answered.log");
    let out = scacheck(&[
        "log",
        "check",
        log.to_str().unwrap(),
        "--case",
        "inbound-answered",
        "--report-dir",
        report.path().to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    // The constructed log's `Trc` lines and its header comment.
    let skipped = stdout
        .lines()
        .find_map(|l| {
            l.split_once("skipped ")?
                .1
                .split(' ')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no skipped count: {stdout}"));
    assert!(skipped > 0, "{stdout}");
    let summary = std::fs::read_to_string(report.path().join("summary.json")).unwrap();
    assert!(
        summary.contains(&format!("skipped {skipped} lines")),
        "{summary}"
    );
}

/// Every `--events` mistake is found before anything runs, and said.
#[test]
fn bad_event_sources_exit_2_saying_what_is_wrong() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken = format!("hep:{}", taken.local_addr().unwrap());
    let profile = root().join("fixtures/targets/kamailio/target.toml");
    let profile = profile.to_str().unwrap();
    for (target, events, says) in [
        (profile, "hep:nowhere", "is not an IP:PORT"),
        (profile, taken.as_str(), "cannot listen for HEP"),
        (profile, "tlib-log:/no/such/sipserver.log", "is not a file"),
        (profile, "feed:127.0.0.1", "is not an IP:PORT"),
        (profile, "pigeon:127.0.0.1:1", "unknown source \"pigeon\""),
        (profile, "hep", "expected sip, feed:IP:PORT"),
        (
            "embedded",
            "hep:127.0.0.1:0",
            "the embedded server has its own feed",
        ),
    ] {
        let out = scacheck(&["run", "--target", target, "--events", events]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{events}: {stderr}");
        assert!(stderr.contains(says), "{events}: {stderr}");
    }
}

#[test]
fn every_run_writes_a_capture_that_pcap_check_reads_back_to_the_same_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let out = scacheck(&[
        "run",
        "--cases",
        "hold-retrieve",
        "--transport",
        "tcp",
        "--report-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let pcap = dir.path().join("hold-retrieve@tcp.pcap");
    assert!(std::fs::metadata(&pcap).unwrap().len() > 1000);
    let checked = dir.path().join("checked");
    let out = scacheck(&[
        "pcap",
        "check",
        pcap.to_str().unwrap(),
        "--report-dir",
        checked.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("detected case: hold-retrieve"), "{stdout}");
    assert!(stdout.contains("PASS"), "{stdout}");
    let summary = std::fs::read_to_string(checked.join("summary.json")).unwrap();
    assert!(summary.contains("\"verdict\": \"pass\""), "{summary}");
}

#[test]
fn pcap_check_refuses_garbage_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture at all").unwrap();
    let out = scacheck(&[
        "pcap",
        "check",
        junk.to_str().unwrap(),
        "--report-dir",
        dir.path().join("r").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("junk.pcap"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn junit_json_lines_and_summary_say_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("stream.jsonl");
    let out = scacheck(&[
        "run",
        "--fault",
        "no-onhook",
        "--cases",
        "terminated",
        "--json-lines",
        stream.to_str().unwrap(),
        "--report-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("summary.json")).unwrap()).unwrap();
    let case = &summary["cases"][0];
    let divergence = case["first_divergence"].as_str().unwrap();
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&stream)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(&line, case, "the stream's object is summary.json's");
    assert!(
        text(&out.stdout).contains(divergence),
        "the console names the same divergence"
    );
    let junit = std::fs::read_to_string(dir.path().join("junit.xml")).unwrap();
    let escaped = divergence
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    assert!(
        junit.contains(&format!("<failure message=\"{escaped}\" type=\"fail\">")),
        "{junit}"
    );
    assert!(junit.contains("<testcase name=\"terminated-by-caller\""));
    assert!(
        junit.contains("<system-out>#0 "),
        "the SIP ladder is the system-out"
    );
}

fn scacheck_env(args: &[&str], ci: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_scacheck"));
    cmd.args(args).current_dir(root());
    if ci {
        cmd.env("CI", "true");
    } else {
        cmd.env_remove("CI");
    }
    cmd.output().expect("scacheck runs")
}

#[test]
fn bless_then_accept_turns_a_failing_run_into_a_passing_one_but_never_in_ci() {
    let good = std::fs::read_to_string(root().join("fixtures/golden/inbound-alerting/60970.jsonl"))
        .unwrap();
    let (dir, cases, golden) = broken_tree(
        "golden/inbound-alerting/60970.jsonl",
        &good.replace("Covered", "Ok"),
    );
    let report = dir.path().join("r");
    let paths = [
        "--cases-dir",
        cases.to_str().unwrap(),
        "--golden-dir",
        golden.to_str().unwrap(),
    ];
    let run = |extra: &[&str], ci: bool| {
        let mut args = vec![
            "run",
            "--cases",
            "inbound-alerting",
            "--report-dir",
            report.to_str().unwrap(),
        ];
        args.extend(paths);
        args.extend(extra);
        scacheck_env(&args, ci)
    };
    let pending = golden.join("inbound-alerting/60970.jsonl.new");

    // In CI nothing is written, and nothing can be accepted.
    assert_eq!(run(&["--bless"], true).status.code(), Some(1));
    assert!(!pending.exists(), "CI writes no golden file");

    let out = run(&["--bless"], false);
    assert_eq!(out.status.code(), Some(1));
    assert!(pending.exists(), "{}", text(&out.stdout));
    let mut review = vec!["golden", "review"];
    review.extend(paths);
    let shown = text(&scacheck_env(&review, false).stdout);
    assert!(
        shown.contains("-{\"event\": \"EventRinging\"")
            && shown.contains("\"CallState\": \"Covered\""),
        "{shown}"
    );
    let mut accept = vec!["golden", "accept", "inbound-alerting"];
    accept.extend(paths);
    assert_eq!(
        scacheck_env(&accept, true).status.code(),
        Some(2),
        "no accepting in CI"
    );
    assert_eq!(scacheck_env(&accept, false).status.code(), Some(0));
    assert!(!pending.exists());
    assert_eq!(
        run(&[], false).status.code(),
        Some(0),
        "the accepted golden passes"
    );
}

#[test]
fn a_new_case_is_recorded_in_one_command() {
    let case = "title = \"recorded\"\nparties = [\"60972\", \"60970\", \"60970_2\"]\n[[stage]]\nname = \"alerting\"\ncovers = \"1.1\"\ngolden = \"recorded-alerting\"\nsteps = [{ actor = \"60972\", action = \"call\", to = \"60970\" }]\n";
    let (dir, cases, golden) = broken_tree("cases/recorded.toml", case);
    let report = dir.path().join("r");
    let paths = [
        "--cases-dir",
        cases.to_str().unwrap(),
        "--golden-dir",
        golden.to_str().unwrap(),
    ];
    let mut record = vec![
        "run",
        "--cases",
        "recorded",
        "--bless",
        "--report-dir",
        report.to_str().unwrap(),
    ];
    record.extend(paths);
    let out = scacheck_env(&record, false);
    assert!(
        golden
            .join("recorded-alerting/monitoring.jsonl.new")
            .exists(),
        "{}",
        text(&out.stdout)
    );
    assert!(golden
        .join("recorded-alerting/sca.60970_2.jsonl.new")
        .exists());
    let mut accept = vec!["golden", "accept"];
    accept.extend(paths);
    assert_eq!(scacheck_env(&accept, false).status.code(), Some(0));
    let mut again = vec![
        "run",
        "--cases",
        "recorded",
        "--report-dir",
        report.to_str().unwrap(),
    ];
    again.extend(paths);
    let out = scacheck_env(&again, false);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn junit_of_a_failing_run_passes_a_junit_schema_check() {
    if Command::new("xmllint").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "CI must have xmllint (libxml2-utils) for this test"
        );
        eprintln!("xmllint is not installed: skipping (apt-get install libxml2-utils)");
        return;
    }
    let schema = root().join("fixtures/junit/junit.xsd");
    let validate = |file: &Path| {
        Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(&schema)
            .arg(file)
            .output()
            .unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let out = scacheck(&[
        "run",
        "--fault",
        "barge-refused",
        "--report-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let junit = dir.path().join("junit.xml");
    let checked = validate(&junit);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    assert!(std::fs::read_to_string(&junit)
        .unwrap()
        .contains("<failure message=\"stage &quot;barged&quot;"));
    // The schema bites: a test case without a name is refused.
    let broken = dir.path().join("broken.xml");
    std::fs::write(&broken, "<testsuites><testsuite name=\"s\" tests=\"1\"><testcase classname=\"c\"/></testsuite></testsuites>").unwrap();
    assert!(!validate(&broken).status.success());
}

/// A deviation naming what the suite does not have is an error with the
/// profile's file and line, whatever the command.
#[test]
fn a_profile_naming_a_case_stage_channel_or_event_that_does_not_exist_is_an_error() {
    let good =
        std::fs::read_to_string(root().join("fixtures/targets/kamailio/target.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (from, to, want) in [
        ("\"seize-expiry\"]", "\"seize-expirey\"]", "no case \"seize-expirey\""),
        ("stage = \"expired\"", "stage = \"expried\"", "no stage \"expried\""),
        (
            "channels = [\"sca.60970_2\"]\nabsent = { event = \"Appearance\", AppearanceState = \"idle\" }",
            "channels = [\"60970_2\"]\nabsent = { event = \"Appearance\", AppearanceState = \"idle\" }",
            "channel 60970_2 is not asserted",
        ),
        (
            "{ event = \"SeizeEnded\", Reason = \"timeout\" }",
            "{ event = \"SeizeEnded\", Reason = \"expired\" }",
            "no golden event matches",
        ),
        (
            "changed = { event = \"Appearance\", AppearanceState = \"progressing\" }\nwithout = [\"AppearanceUri\"]",
            "changed = { event = \"Appearance\", AppearanceState = \"progressing\" }\nwithout = [\"Status\"]",
            "changes nothing in the golden",
        ),
    ] {
        assert!(good.contains(from), "{from}");
        let text_of = good.replacen(from, to, 1);
        let line = text_of[..text_of.find(to).unwrap()].matches('\n').count() + 1;
        let profile = dir.path().join("target.toml");
        std::fs::write(&profile, &text_of).unwrap();
        for args in [
            vec!["run", "--target", profile.to_str().unwrap(), "--cases", "seize-busy"],
            vec![
                "pcap",
                "check",
                "fixtures/captures/kamailio/seize-busy.pcap",
                "--target",
                profile.to_str().unwrap(),
            ],
        ] {
            let out = scacheck(&args);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(&format!("target.toml:{line}:")), "{args:?}: line {line}: {err}");
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}

/// Two cases a capture fits equally well: exit 2, naming both and
/// `--case`, whichever verdict either would get.
#[test]
fn a_capture_two_cases_fit_equally_is_ambiguous() {
    let dir = tempfile::tempdir().unwrap();
    // Kamailio's identities, none of its deviations (they name other cases).
    let kamailio =
        std::fs::read_to_string(root().join("fixtures/targets/kamailio/target.toml")).unwrap();
    let (head, rest) = kamailio.split_once("[[deviation]]").unwrap();
    let identities = &rest[rest.find("[identities]").unwrap()..];
    let elsewhere = tempfile::tempdir().unwrap();
    let profile = elsewhere.path().join("target.toml");
    std::fs::write(&profile, format!("{head}{identities}")).unwrap();
    let profile = profile.to_str().unwrap();
    for id in ["retrieve-idle", "retrieve-idle-twin"] {
        std::fs::copy(
            root().join("cases/retrieve-idle.toml"),
            dir.path().join(format!("{id}.toml")),
        )
        .unwrap();
    }
    let report = tempfile::tempdir().unwrap();
    let out = scacheck(&[
        "pcap",
        "check",
        "fixtures/captures/kamailio/retrieve-idle.pcap",
        "--target",
        profile,
        "--cases-dir",
        dir.path().to_str().unwrap(),
        "--report-dir",
        report.path().to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("equally well")
            && err.contains("--case retrieve-idle-twin")
            && err.contains("--case retrieve-idle\n"),
        "{err}"
    );
    // Named, it is judged (a fail: this profile declares nothing).
    let out = scacheck(&[
        "pcap",
        "check",
        "fixtures/captures/kamailio/retrieve-idle.pcap",
        "--case",
        "retrieve-idle-twin",
        "--target",
        profile,
        "--cases-dir",
        dir.path().to_str().unwrap(),
        "--report-dir",
        report.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("retrieve-idle-twin"));
}

/// Every recorded Kamailio capture is given its own case by its
/// structure, and its verdict is the profile's.
#[test]
fn each_kamailio_capture_is_detected_as_its_own_case() {
    let report = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(root().join("fixtures/captures/kamailio")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "pcap") {
            continue;
        }
        let id = path.file_stem().unwrap().to_str().unwrap().to_string();
        let out = scacheck(&[
            "pcap",
            "check",
            path.to_str().unwrap(),
            "--target",
            "fixtures/targets/kamailio/target.toml",
            "--report-dir",
            report.path().to_str().unwrap(),
        ]);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{id}: {stdout}{}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains(&format!("detected case: {id}\n")),
            "{id}: {stdout}"
        );
    }
}

/// A capture of phones scacheck did not make (no REGISTER, no User-Agent:
/// fixtures/captures/foreign/) is detected without a profile, its phones
/// found by their SCA signalling; a capture with no phones at all says why.
#[test]
fn pcap_check_finds_foreign_phones_without_a_profile() {
    let report = tempfile::tempdir().unwrap();
    for id in ["hold-retrieve", "outbound-call"] {
        let path = root().join(format!("fixtures/captures/foreign/{id}.pcap"));
        let out = scacheck(&[
            "pcap",
            "check",
            path.to_str().unwrap(),
            "--report-dir",
            report.path().to_str().unwrap(),
        ]);
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains(&format!("detected case: {id}\n")),
            "{id}: {stdout}{}",
            text(&out.stderr)
        );
        // Without the profile's deviations Kamailio fails, in DNs.
        assert_eq!(out.status.code(), Some(1), "{id}: {stdout}");
        assert!(!stdout.contains("60970-"), "{id}: {stdout}");
    }
    // A pcap header and nothing else.
    let empty = report.path().join("empty.pcap");
    let mut header = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    header.extend([2u8, 0, 4, 0]);
    header.extend([0u8; 8]);
    header.extend(65535u32.to_le_bytes());
    header.extend(1u32.to_le_bytes());
    std::fs::write(&empty, header).unwrap();
    let out = scacheck(&["pcap", "check", empty.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("phones found: none: no REGISTER names one of the target's SIP users, and no call-info or line-seize SUBSCRIBE"),
        "{stderr}"
    );
}

/// Installed, the binary has no checkout beside it: the suite travels
/// with it, and `run` and `pcap check` work from any directory.
#[test]
fn the_built_in_suite_runs_from_any_directory() {
    let elsewhere = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| scacheck_in(elsewhere.path(), args);
    let report = elsewhere.path().join("report");
    let out = run(&["run", "--report-dir", report.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let cases = std::fs::read_dir(root().join("cases")).unwrap().count();
    assert!(
        stdout.contains(&format!("{cases} cases: {cases} pass")),
        "{stdout}"
    );
    let capture = root().join("fixtures/captures/kamailio/hold-retrieve.pcap");
    let profile = root().join("fixtures/targets/kamailio/target.toml");
    let out = run(&[
        "pcap",
        "check",
        capture.to_str().unwrap(),
        "--target",
        profile.to_str().unwrap(),
        "--report-dir",
        report.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("detected case: hold-retrieve"), "{stdout}");
    // A directory given still replaces the built-in one.
    let empty = elsewhere.path().join("none");
    std::fs::create_dir(&empty).unwrap();
    let out = run(&["run", "--cases-dir", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no case files"),
        "{}",
        text(&out.stderr)
    );
}

/// summary.json says, channel by channel, which declared deviations
/// occurred and that nothing is left unexcused.
#[test]
fn the_summary_states_what_each_declared_deviation_came_to() {
    let report = tempfile::tempdir().unwrap();
    let out = scacheck(&[
        "pcap",
        "check",
        "fixtures/captures/kamailio/outbound-call.pcap",
        "--target",
        "fixtures/targets/kamailio/target.toml",
        "--report-dir",
        report.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.path().join("summary.json")).unwrap())
            .unwrap();
    let deviations = summary["cases"][0]["deviations"].as_array().unwrap();
    let channels: Vec<(&str, &str)> = deviations
        .iter()
        .map(|d| (d["stage"].as_str().unwrap(), d["channel"].as_str().unwrap()))
        .collect();
    assert_eq!(
        channels,
        [("dialled", "sca.60970"), ("dialled", "sca.60970_2")]
    );
    for d in deviations {
        assert_eq!(d["occurred"].as_array().unwrap().len(), 1, "{d}");
        assert!(d["did_not_occur"].as_array().unwrap().is_empty(), "{d}");
        assert!(d["unexcused"].is_null(), "{d}");
    }
}
