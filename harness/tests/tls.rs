//! SIP over TLS, end to end: the embedded suite over TLS judges every case
//! as over UDP and leaves a capture (`<case>.pcap`, SIP in clear) that
//! `pcap check` judges alike, with the sessions' keys beside it; a profile
//! over TLS (sips URIs, its CA from a file) against an embedded server
//! passes; an insecure one is said in every report; a phone given the
//! wrong CA or the wrong name gets an inconclusive verdict that names the
//! TLS failure, within the setup deadline.

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use scacheck::outcome::{CaseResult, Verdict};
use scacheck::reference::Embedded;
use scacheck::run::{run_all, Events, RunOptions, Target, DOMAIN};
use scacheck::sip::tls::{TestPki, INSECURE};
use scacheck::sip::Transport;
use scacheck::target::Profile;
use scacheck::topology::Topology;

fn scacheck(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_scacheck"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("scacheck runs")
}

/// Every case's verdict in a report directory, by case id.
/// The suite's cases that run over UDP only.
fn udp_only_cases() -> Vec<String> {
    common::suite()
        .0
        .iter()
        .filter(|p| p.case.transports == [Transport::Udp])
        .map(|p| p.case.id.clone())
        .collect()
}

fn verdicts(dir: &Path) -> BTreeMap<String, String> {
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    summary["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            // `<case>@tls`; a case over TCP only in a UDP run `<case>@tcp`.
            let id = c["id"].as_str().unwrap();
            (
                id.split('@').next().unwrap_or(id).to_string(),
                c["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_suite_over_tls_judges_every_case_as_over_udp_and_its_captures_alike() {
    let dir = tempfile::tempdir().unwrap();
    let (udp, tls) = (dir.path().join("udp"), dir.path().join("tls"));
    let out = scacheck(&["run", "--report-dir", udp.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = scacheck(&[
        "run",
        "--transport",
        "tls",
        "--report-dir",
        tls.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("target: embedded (tls)\n"), "{stdout}");
    // The embedded server's CA is checked: nothing insecure to say.
    assert!(!stdout.contains(INSECURE), "{stdout}");
    let (over_udp, over_tls) = (verdicts(&udp), verdicts(&tls));
    assert_eq!(over_udp.len(), common::suite().0.len());
    assert_eq!(over_udp, over_tls);
    // A case over UDP only (its relay's) runs over UDP in a TLS run, as
    // the embedded server serves UDP too: no TLS to look for in it.
    let udp_only = udp_only_cases();
    for id in over_tls.keys() {
        if udp_only.contains(id) {
            assert!(!tls.join(format!("{id}@tls.keys")).exists(), "{id}");
            continue;
        }
        let key = format!("{id}@tls");
        let keys = std::fs::read_to_string(tls.join(format!("{key}.keys"))).unwrap();
        // Each phone's connection: a TLS 1.3 session, five secrets.
        assert!(keys.lines().count() >= 5, "{key}: {keys}");
        for line in keys.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            assert!(
                fields.len() == 3
                    && fields[0]
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
                    && fields[1].len() == 64
                    && fields[1..]
                        .iter()
                        .all(|f| f.chars().all(|c| c.is_ascii_hexdigit())),
                "{key}: {line}"
            );
        }
        assert!(tls.join(format!("{key}.pcap")).is_file(), "{key}");
        let sip = std::fs::read_to_string(tls.join(format!("{key}.sip.txt"))).unwrap();
        assert!(
            sip.contains("Via: SIP/2.0/TLS ") && sip.contains(";transport=tls>"),
            "{key}"
        );
        // No key log where there was no TLS.
        assert!(!udp.join(format!("{id}.keys")).exists(), "{id}");
    }
    let summary = std::fs::read_to_string(tls.join("summary.json")).unwrap();
    assert!(
        summary.contains("hold-retrieve@tls.pcap holds it in clear"),
        "{summary}"
    );

    // The capture holds the SIP in clear, as TCP: judged as live.
    let checked = dir.path().join("checked");
    let pcap = tls.join("hold-retrieve@tls.pcap");
    let out = scacheck(&[
        "pcap",
        "check",
        pcap.to_str().unwrap(),
        "--report-dir",
        checked.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("detected case: hold-retrieve"), "{stdout}");
    let checked_verdicts = verdicts(&checked);
    assert_eq!(
        checked_verdicts.get("hold-retrieve"),
        over_tls.get("hold-retrieve"),
        "{checked_verdicts:?}"
    );
    let summary = std::fs::read_to_string(checked.join("summary.json")).unwrap();
    assert!(summary.contains("the phones' Via says TLS"), "{summary}");
}

/// A profile of `lines` lines for an embedded server at `address`, with
/// `tls` as its `[tls]` table.
fn profile(lines: usize, address: std::net::SocketAddr, tls: &str, dir: &Path) -> Profile {
    let text = format!(
        r#"
name = "tls-pool"
address = "{address}"
transport = "tls"
domain = "{DOMAIN}"
capabilities = ["call-info", "line-seize", "hold", "retrieve", "private-hold", "barge-in"]
lines = {lines}

[identities]
"60972" = "60972-{{line}}"
"60970" = "60970-{{line}}"
"60970_2" = "60970_2-{{line}}"

[tls]
{tls}
"#
    );
    Profile::parse(&dir.join("target.toml"), &text, &Topology::reference()).unwrap()
}

/// The cases named (all, if none) against one embedded server hosting a
/// pool of `lines` lines over TLS, the phones set up by `[tls]` `tls`
/// (`{ca}`: a file holding the server's CA, `{other_ca}`: another CA's).
fn run_profile(lines: usize, tls: &str, only: &[&str]) -> (RunOptions, Vec<CaseResult>) {
    let (cases, topology) = common::suite();
    let cases: Vec<_> = cases
        .into_iter()
        .filter(|p| only.is_empty() || only.contains(&p.case.id.as_str()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let probe = profile(
            lines,
            "127.0.0.1:5061".parse().unwrap(),
            "insecure = true",
            dir.path(),
        );
        let hosted = scacheck::line::pool_topology(&probe.lines, &topology);
        let server = Embedded::start(IpAddr::V4(Ipv4Addr::LOCALHOST), DOMAIN, hosted, None, None)
            .await
            .unwrap();
        let ca: PathBuf = dir.path().join("ca.pem");
        server.pki.write_ca(&ca).unwrap();
        let other: PathBuf = dir.path().join("other-ca.pem");
        TestPki::generate(DOMAIN).unwrap().write_ca(&other).unwrap();
        let tls = tls
            .replace("{ca}", ca.to_str().unwrap())
            .replace("{other_ca}", other.to_str().unwrap());
        let profile = profile(lines, server.sip, &tls, dir.path());
        let opts = RunOptions {
            transport: profile.transport,
            target: Target::Remote(Arc::new(profile)),
            events: Events::Feed(server.feed),
            ..RunOptions::default()
        }
        .with_references()
        .unwrap();
        let results = run_all(&cases, &topology, opts.clone()).await;
        (opts, results)
    })
}

#[test]
fn a_profile_over_tls_with_sips_uris_passes_every_case() {
    let (_, results) = run_profile(14, "ca_file = \"{ca}\"\nuri = \"sips\"", &[]);
    let udp_only = udp_only_cases();
    for r in &results {
        // A profile over TLS serves TLS alone at its address.
        if udp_only.contains(&r.id) {
            assert_eq!(r.verdict, Verdict::Skipped, "{}", r.key());
            assert!(
                r.notes
                    .iter()
                    .any(|n| n.contains("runs over UDP only, and the target serves TLS")),
                "{:?}",
                r.notes
            );
            continue;
        }
        assert_eq!(
            r.verdict,
            Verdict::Pass,
            "{}",
            scacheck::report::case_text(r)
        );
        assert_eq!(r.transport, Transport::Tls);
        let register = String::from_utf8_lossy(&r.records[0].raw).into_owned();
        assert!(
            register.starts_with("REGISTER sips:sca.test SIP/2.0\r\n")
                && register.contains("\r\nContact: <sips:"),
            "{register}"
        );
        assert!(!r.keys.is_empty(), "{}", r.key());
        assert!(!r.notes.iter().any(|n| n == INSECURE), "{:?}", r.notes);
    }
}

/// `insecure = true` works against a server whose CA the phones do not
/// have, and every report says the certificate went unchecked.
#[test]
fn an_insecure_profile_is_said_in_every_report() {
    let (opts, results) = run_profile(2, "insecure = true", &["inbound-answered", "seize-busy"]);
    assert!(opts.describe().ends_with(INSECURE), "{}", opts.describe());
    for r in &results {
        assert_eq!(
            r.verdict,
            Verdict::Pass,
            "{}",
            scacheck::report::case_text(r)
        );
        assert!(r.notes.iter().any(|n| n == INSECURE), "{:?}", r.notes);
        assert!(scacheck::report::case_text(r).contains(INSECURE));
    }
    let dir = tempfile::tempdir().unwrap();
    scacheck::report::write(dir.path(), &opts.name(), &opts.describe(), &results).unwrap();
    // Past the apostrophe, which XML and HTML may escape.
    let said = INSECURE.split_once("server's ").unwrap().1;
    for file in ["summary.json", "junit.xml", "report.html"] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(text.contains(said), "{file}");
    }
}

/// A phone that cannot verify the server (the wrong CA, or a name the
/// certificate is not for) cannot register: the case is inconclusive, its
/// reason names the TLS failure, and it ends within the setup deadline.
#[test]
fn a_phone_with_the_wrong_ca_or_name_is_inconclusive_naming_the_tls_failure() {
    for (tls, says) in [
        (
            "ca_file = \"{other_ca}\"",
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            "ca_file = \"{ca}\"\nserver_name = \"elsewhere.test\"",
            "certificate not valid for name \"elsewhere.test\"",
        ),
    ] {
        let (opts, results) = run_profile(2, tls, &["inbound-answered", "outbound-call"]);
        for r in &results {
            assert_eq!(
                r.verdict,
                Verdict::Inconclusive,
                "{}",
                scacheck::report::case_text(r)
            );
            let e = r.error.as_deref().unwrap_or_default();
            assert!(e.starts_with("setup: "), "{e}");
            assert!(
                e.contains("TLS handshake with 127.0.0.1:") && e.contains(says),
                "{e}"
            );
            assert!(r.problems.is_empty(), "{:?}", r.problems[0].what);
            println!("{} after {:?}: {e}", r.key(), r.duration);
            let limit = opts.deadlines.setup + std::time::Duration::from_secs(2);
            assert!(r.duration < limit, "{}: {:?}", r.key(), r.duration);
        }
    }
}

/// A run over TLS against a profile without `[tls]` is refused before
/// anything runs (no report), saying what the profile lacks.
#[test]
fn a_run_over_tls_needs_the_profiles_tls_table() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    // The Kamailio profile without its [tls] table.
    let kamailio = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/targets/kamailio/target.toml"),
    )
    .unwrap();
    let without = kamailio.replace(
        "[tls]\nca_file = \"${SCACHECK_KAMAILIO_STATE}/ca.pem\"\n",
        "",
    );
    assert_ne!(
        without, kamailio,
        "the profile has a [tls] table to take out"
    );
    let profile = dir.path().join("target.toml");
    std::fs::write(&profile, without).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scacheck"))
        .args(["run", "--target"])
        .arg(&profile)
        .args(["--transport", "tls", "--report-dir"])
        .arg(&report)
        .env("SCACHECK_KAMAILIO_PASSWORD", "unused")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&profile.display().to_string()) && stderr.contains("needs a [tls] table"),
        "{stderr}"
    );
    assert!(!report.exists());
    let out = scacheck(&["run", "--transport", "sctp"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expected udp, tcp or tls"), "{stderr}");
}
