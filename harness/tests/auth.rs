//! Servers that challenge (issue 14), on the embedded server's profile
//! switch (fixtures/targets/embedded-auth): a run against it gives every
//! case the verdict and the events of the run against the plain embedded
//! server, its captures judge like it, a wrong password makes every case
//! inconclusive naming the phone and the status, and the password appears
//! in no file a run writes.

mod common;
use common::suite;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use scacheck::credentials::Keys;
use scacheck::outcome::{CaseResult, Verdict};
use scacheck::run::{run_all, RunOptions, Target};
use scacheck::sip::auth::Secret;
use scacheck::sip::record::Direction;
use scacheck::sip::{Message, Transport};
use scacheck::target::{EmbeddedProfile, Loaded};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The repository's profile of the challenging embedded server.
fn challenging() -> Arc<EmbeddedProfile> {
    let topology = scacheck::topology::Topology::reference();
    match Loaded::load(
        &root().join("fixtures/targets/embedded-auth/target.toml"),
        &topology,
    )
    .unwrap()
    {
        Loaded::Embedded(p) => Arc::new(p),
        other => panic!("not an embedded profile: {other:?}"),
    }
}

fn run(target: Target, transport: Transport, password: &str) -> Vec<CaseResult> {
    let (prepared, topology) = suite();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run_all(
        &prepared,
        &topology,
        RunOptions {
            target,
            transport,
            credentials: Arc::new(Keys::every_dn(Secret::new(password))),
            ..RunOptions::default()
        },
    ))
}

/// Each stage's events, channel by channel, as a multiset: the verdict
/// already judges their order against the goldens. Not the setup's or the
/// teardown's, which are not judged (how much of the cleanup lands before
/// a case ends is timing), as compare-reports.sh has it.
fn events(r: &CaseResult) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let judged = |s: &str| s != "setup" && s != "teardown";
    let renamed = common::race_parts(r);
    for (stage, o) in r.events.iter().filter(|(s, _)| judged(s)) {
        out.entry((stage.clone(), renamed(stage, o.channel.to_string())))
            .or_default()
            .push(renamed(stage, o.event.to_string()));
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

fn challenges(r: &CaseResult) -> (usize, usize) {
    let mut challenged = 0;
    let mut stale = 0;
    for rec in r
        .records
        .iter()
        .filter(|r| r.direction == Direction::Received)
    {
        let Ok(m) = Message::parse(rec.raw.clone()) else {
            continue;
        };
        if matches!(m.status(), Some(401 | 407)) {
            challenged += 1;
            stale += usize::from(String::from_utf8_lossy(m.raw()).contains("stale=true"));
        }
    }
    (challenged, stale)
}

fn same_as_plain(transport: Transport) {
    let plain = run(Target::embedded(), transport, "unused");
    let authed = run(
        Target::Embedded {
            fault: None,
            profile: Some(challenging()),
        },
        transport,
        "s3cret",
    );
    let mut errors = Vec::new();
    let mut stale = 0;
    for (p, a) in plain.iter().zip(&authed) {
        if (p.verdict, events(p)) != (a.verdict, events(a)) {
            errors.push(format!(
                "{}: plain {:?} {:#?}\nauthenticated {:?} {:#?}",
                p.id,
                p.verdict,
                events(p),
                a.verdict,
                events(a)
            ));
        }
        let (n, s) = challenges(a);
        stale += s;
        if n == 0 {
            errors.push(format!("{}: no challenge was answered", a.id));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n\n"));
    // Nonces are spent after a few requests: stale ones were answered.
    assert!(stale > 0, "no stale nonce in the whole suite");

    // A capture of the authenticated run judges like the run.
    let (prepared, topology) = suite();
    let line = scacheck::line::Identities::own(&topology);
    for (p, a) in prepared.iter().zip(&authed) {
        let mut file = Vec::new();
        scacheck::pcap::write_packets(&mut file, &scacheck::pcap::packets_from_records(&a.records))
            .unwrap();
        let mut reader = scacheck::pcap::Reader::from_reader(std::io::Cursor::new(file)).unwrap();
        let captured: Vec<_> = std::iter::from_fn(|| reader.next_packet().unwrap()).collect();
        let who = scacheck::check::endpoints(&captured, &topology, &line.users);
        let recs = scacheck::check::records(&captured, &who);
        let starts = scacheck::check::stage_starts(p, &recs, &topology, &line)
            .unwrap_or_else(|| panic!("{}: the capture does not show the steps", p.case.id));
        let checked = scacheck::check::check(p, recs, &topology, &line, &starts, &[]);
        assert_eq!(checked.verdict, a.verdict, "{}: capture vs live", p.case.id);
    }
}

#[test]
fn a_challenging_server_over_udp_gives_the_verdicts_and_events_of_a_plain_one() {
    same_as_plain(Transport::Udp);
}

#[test]
fn a_challenging_server_over_tcp_gives_the_verdicts_and_events_of_a_plain_one() {
    same_as_plain(Transport::Tcp);
}

/// A profile of the challenging embedded server that expects the
/// password in `$var` of the phones, whose own is in
/// `$SCACHECK_EMBEDDED_PASSWORD`.
fn expecting(dir: &Path, var: &str) -> std::path::PathBuf {
    let path = dir.join("refusing.toml");
    std::fs::write(
        &path,
        format!(
            "name = \"refusing\"\nembedded = {{ challenge = [\"SHA-256\"], expects = {{ password_env = \"{var}\" }} }}\n\n[[credentials]]\npassword_env = \"SCACHECK_EMBEDDED_PASSWORD\"\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_wrong_password_makes_every_case_inconclusive_naming_the_phone_and_status() {
    std::env::set_var("SCACHECK_TEST_AUTH_EXPECTED", "the-right-one");
    let dir = tempfile::tempdir().unwrap();
    let profile = match Loaded::load(
        &expecting(dir.path(), "SCACHECK_TEST_AUTH_EXPECTED"),
        &scacheck::topology::Topology::reference(),
    )
    .unwrap()
    {
        Loaded::Embedded(p) => p,
        other => panic!("{other:?}"),
    };
    let results = run(
        Target::Embedded {
            fault: None,
            profile: Some(Arc::new(profile)),
        },
        Transport::Udp,
        "a-wrong-one",
    );
    for r in &results {
        let error = r.error.clone().unwrap_or_default();
        assert_eq!(r.verdict, Verdict::Inconclusive, "{}: {error}", r.id);
        assert!(
            ["60972", "60970", "60970_2"]
                .iter()
                .any(|dn| error.contains(&format!(
                    "authentication failed for {dn}: 401 after credentials"
                ))),
            "{}: {error}",
            r.id
        );
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_password_is_in_no_file_a_run_writes_and_nothing_it_prints() {
    const SECRET: &str = "Zq7-distinctive-pa55word-4d1f";
    let dir = tempfile::tempdir().unwrap();
    let profiles = tempfile::tempdir().unwrap();
    // Passing and failing alike: the right password, and one the server
    // refuses (its failure messages are the likeliest place for a leak).
    for (name, profile) in [
        (
            "ok",
            root().join("fixtures/targets/embedded-auth/target.toml"),
        ),
        (
            "refused",
            expecting(profiles.path(), "SCACHECK_TEST_EXPECTED"),
        ),
    ] {
        let reports = dir.path().join(name);
        let stream = dir.path().join(format!("{name}.jsonl"));
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_scacheck"))
            .args(["run", "--target"])
            .arg(&profile)
            .arg("--report-dir")
            .arg(&reports)
            .arg("--json-lines")
            .arg(&stream)
            .env("SCACHECK_EMBEDDED_PASSWORD", SECRET)
            .env("RUST_LOG", "trace")
            .env("SCACHECK_TEST_EXPECTED", "another")
            .current_dir(root())
            .output()
            .unwrap();
        let printed = [out.stdout, out.stderr].concat();
        assert!(!printed.is_empty());
        assert!(
            !String::from_utf8_lossy(&printed).contains(SECRET),
            "{name}: printed"
        );
        let written = files(dir.path());
        assert!(written.len() > 14, "{name}: {} files", written.len());
        for f in written {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "{name}: {} holds the password",
                f.display()
            );
        }
    }
}
