//! A server that dies is a finding: `scacheck serve` with the fault
//! stops-on-reboot exits (as a crash, its PID file left behind) when a
//! phone that holds a busy appearance subscribes afresh. Run against it
//! with a profile whose `[liveness]` names that PID file, the case that
//! killed it fails with that as its first divergence, the cases after it
//! are not run (inconclusive, with why), its capture is kept, and a run
//! against the dead server does not start.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn scacheck() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scacheck"))
}

#[test]
fn the_case_a_server_dies_in_fails_with_it_and_the_rest_are_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let (address, pid) = (dir.path().join("address"), dir.path().join("pid"));
    let mut serve = scacheck()
        .args(["serve", "--lines", "16", "--fault", "stops-on-reboot"])
        .arg("--address-file")
        .arg(&address)
        .arg("--pid-file")
        .arg(&pid)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !address.exists() {
        assert!(Instant::now() < deadline, "no address file");
        std::thread::sleep(Duration::from_millis(20));
    }
    let at = std::fs::read_to_string(&address)
        .unwrap()
        .trim()
        .to_string();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let base = std::fs::read_to_string(root.join("fixtures/targets/serve/target.toml")).unwrap();
    let profile = dir.path().join("target.toml");
    std::fs::write(
        &profile,
        format!("{base}\n[liveness]\npid_file = \"{}\"\n", pid.display()),
    )
    .unwrap();
    let report = dir.path().join("report");
    let run = |report: &Path| {
        scacheck()
            .args(["run", "--target"])
            .arg(&profile)
            .args(["--address", &at, "--jobs", "1"])
            .args(["--cases", "=reboot-resubscribe,=terminated-by-caller"])
            .arg("--report-dir")
            .arg(report)
            .output()
            .unwrap()
    };
    let out = run(&report);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{said}");
    let lines: Vec<&str> = said.lines().collect();
    let fail = lines
        .iter()
        .position(|l| l.starts_with("FAIL") && l.contains("reboot-resubscribe"))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        lines[fail + 1].contains(
            "the server stopped answering after 60970's SUBSCRIBE (call-info) at stage rebooted: its process (PID"
        ) && lines[fail + 1].contains("has exited"),
        "{said}"
    );
    let inconclusive = lines
        .iter()
        .position(|l| l.starts_with("INCONCLUSIVE") && l.contains("terminated-by-caller"))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        lines[inconclusive + 1]
            .contains("not run: the server stopped during case reboot-resubscribe"),
        "{said}"
    );
    // What was captured up to the crash is kept.
    let sip = std::fs::read_to_string(report.join("reboot-resubscribe.sip.txt")).unwrap();
    assert!(sip.contains("SUBSCRIBE"), "{sip}");
    let diff = std::fs::read_to_string(report.join("reboot-resubscribe.diff")).unwrap();
    assert!(
        diff.contains("first divergence: the server stopped answering"),
        "{diff}"
    );
    // It exited as a crash does: not 0, the PID file left.
    let status = serve.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(pid.exists());
    // Against the dead server, no case starts.
    let again = run(&dir.path().join("again"));
    let said = String::from_utf8_lossy(&again.stdout).to_string();
    assert_eq!(
        said.lines()
            .filter(|l| l.starts_with("INCONCLUSIVE"))
            .count(),
        2,
        "{said}"
    );
    assert!(
        said.contains("[liveness] pid_file: its process") && said.contains("before the run began"),
        "{said}"
    );
}
