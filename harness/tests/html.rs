//! The HTML report of a failing run, opened in headless Chromium (Debian
//! package `chromium`, installed by .ci/run): the rendered DOM has the
//! summary, the failing case, its highlighted divergence and its ladder,
//! and no script. A screenshot is kept as an artifact:
//! target/artifacts/report.png.

use std::path::Path;
use std::process::Command;

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn headless(browser: &str, extra: &[&str], page: &Path) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    Command::new("timeout")
        .arg("60")
        .arg(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs")
}

#[test]
fn chromium_renders_the_failing_case_and_its_divergence() {
    let Some(browser) = chromium() else {
        // CI installs Chromium, so there this cannot pass by skipping.
        assert!(
            std::env::var("CI").is_err(),
            "CI must have chromium for this test"
        );
        eprintln!("chromium is not installed: skipping (apt-get install chromium)");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scacheck"))
        .args([
            "run",
            "--fault",
            "no-onhook",
            "--cases",
            "terminated",
            "--report-dir",
        ])
        .arg(dir.path())
        .current_dir(root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let page = dir.path().join("report.html");

    let dom =
        String::from_utf8_lossy(&headless(browser, &["--dump-dom"], &page).stdout).into_owned();
    assert!(dom.contains("<table id=\"summary\">"), "{dom}");
    assert!(
        dom.contains("<td class=\"verdict v-fail\">fail</td>"),
        "{dom}"
    );
    assert!(dom.contains("id=\"case-terminated-by-caller\""), "{dom}");
    let highlighted = dom
        .split("class=\"changed divergence\"")
        .nth(1)
        .expect("a highlighted divergence");
    assert!(
        highlighted
            .split("</tr>")
            .next()
            .unwrap()
            .contains("EventOnHook"),
        "the highlight is the missing EventOnHook"
    );
    assert!(
        dom.contains("<table class=\"ladder\">")
            && dom.contains("<details><summary>INVITE sip:60970@sca.test SIP/2.0"),
        "{dom}"
    );
    assert!(
        !dom.to_lowercase().contains("<script"),
        "no script in the report"
    );

    let artifacts = root.join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("report.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        browser,
        &[
            "--window-size=1280,1600",
            &format!("--screenshot={}", shot.display()),
        ],
        &page,
    );
    assert!(
        std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0) > 10_000,
        "a screenshot was taken"
    );
}
