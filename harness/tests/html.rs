//! The HTML report opened in headless Chromium (Debian package `chromium`,
//! installed by .ci/run):
//! - a run with a seeded fault: the summary counts, the failing case first
//!   and open, its SVG ladder (one arrow per message, the stage bands in
//!   order, the divergence marked), its appearance timelines parting where
//!   the hold was not told, no script;
//! - the filter, driven by a test page of our own (a script outside the
//!   report, in a page that frames it): each choice shows only its cases;
//! - a report of hostile server content (script tags, event-handler
//!   attributes, control bytes, invalid UTF-8, a 100 KB header) executes
//!   nothing and stays small and readable.
//!
//! A screenshot of the failing case is kept as an artifact:
//! target/artifacts/report.png.

use std::path::Path;
use std::process::Command;

fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        // CI installs Chromium, so there this cannot pass by skipping.
        assert!(
            std::env::var("CI").is_err(),
            "CI must have chromium for this test"
        );
        eprintln!("chromium is not installed: skipping (apt-get install chromium)");
    }
    found
}

fn headless(browser: &str, extra: &[&str], page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
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
        .expect("chromium runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A page of the test's own that frames `report` and, once it loaded,
/// runs `script` (with `d`, the report's document, and `say(line)`),
/// then `--dump-dom` prints what it said inside `<pre id="out">`.
fn probe(browser: &str, dir: &Path, report: &Path, script: &str) -> Vec<String> {
    let page = dir.join("probe.html");
    std::fs::write(
        &page,
        format!(
            r#"<!DOCTYPE html><html><body><pre id="out"></pre>
<iframe src="file://{}" width="1200" height="800"></iframe>
<script>
const said = [];
const say = (l) => {{ said.push(l); document.getElementById('out').textContent = said.join('\n'); }};
const f = document.querySelector('iframe');
f.onload = () => {{ const d = f.contentDocument; try {{ {script} }} catch (e) {{ say('error: ' + e); }} say('done'); }};
</script></body></html>"#,
            report.display()
        ),
    )
    .unwrap();
    let dom = headless(
        browser,
        &[
            "--allow-file-access-from-files",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ],
        &page,
    );
    let out = dom
        .split("<pre id=\"out\">")
        .nth(1)
        .and_then(|s| s.split("</pre>").next())
        .unwrap_or_default()
        .replace("&gt;", ">")
        .replace("&lt;", "<")
        .replace("&amp;", "&");
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("done"),
        "the probe ran to its end: {dom}"
    );
    lines
}

/// The value a probe said for `name` (`name: value`).
fn said<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {lines:?}"))
}

#[test]
fn chromium_renders_the_ladder_the_timelines_and_the_filter_of_a_failing_run() {
    let Some(browser) = chromium() else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_scacheck"))
        .args([
            "run",
            "--fault",
            "hold-not-notified",
            "--cases",
            "=hold-retrieve,=inbound-alerting",
            "--report-dir",
        ])
        .arg(dir.path())
        .current_dir(root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let page = dir.path().join("report.html");
    let messages = std::fs::read_to_string(dir.path().join("hold-retrieve.sip.txt"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with('#'))
        .count();

    let lines = probe(
        browser,
        dir.path(),
        &page,
        r#"
const c = d.getElementById('case-hold-retrieve');
say('first case: ' + d.querySelector('section.case').id);
say('open: ' + c.querySelector('details').open);
say('passing open: ' + d.getElementById('case-inbound-alerting').querySelector('details').open);
say('counts: ' + d.querySelector('.counts').textContent.replace(/\s+/g, ' ').trim());
const svg = c.querySelector('svg.ladder');
say('arrows: ' + svg.querySelectorAll('g.msg').length);
say('lines in arrows: ' + svg.querySelectorAll('g.msg > line').length);
say('bands: ' + [...svg.querySelectorAll('g.stage')].map(g => g.dataset.stage).join(','));
say('missing: ' + [...svg.querySelectorAll('g.missing')].map(g => g.dataset.stage + ' ' + g.textContent.replace(/\s+/g, ' ').trim()).join('|'));
say('divergent arrows: ' + svg.querySelectorAll('g.msg.divergent').length);
const first = svg.querySelector('g.msg');
say('first arrow links: ' + (first.parentNode.getAttribute('href') === '#m-hold-retrieve-' + first.dataset.seq
    && d.getElementById('m-hold-retrieve-' + first.dataset.seq) !== null));
const t = c.querySelector('svg.timeline');
say('timelines: ' + [...t.querySelectorAll('g.appearance')].map(g => g.dataset.channel + '#' + g.dataset.index).join(','));
const a = t.querySelector('g.appearance[data-channel="sca.60970"]');
say('observed: ' + [...a.querySelectorAll('g.observed rect')].map(r => r.dataset.state).join(','));
say('expected: ' + [...a.querySelectorAll('g.expected rect')].map(r => r.dataset.state).join(','));
say('parts: ' + a.querySelectorAll('line.parts').length);
say('scripts: ' + d.querySelectorAll('script').length);
const shown = () => [...d.querySelectorAll('section.case')]
    .filter(s => getComputedStyle(s).display !== 'none').map(s => s.id).join(',');
const rows = () => [...d.querySelectorAll('#summary tr[data-verdict]')]
    .filter(s => getComputedStyle(s).display !== 'none').length;
say('all: ' + shown() + ' rows ' + rows());
for (const f of ['f-fail', 'f-pass', 'f-xfail', 'f-problems', 'f-all']) {
    d.getElementById(f).click();
    say(f + ': ' + shown() + ' rows ' + rows());
}
"#,
    );
    assert_eq!(said(&lines, "first case"), "case-hold-retrieve");
    assert_eq!(said(&lines, "open"), "true");
    assert_eq!(said(&lines, "passing open"), "false");
    assert_eq!(
        said(&lines, "counts"),
        "1 pass 1 fail 0 xfail 0 xpass 0 skipped 0 inconclusive"
    );
    assert_eq!(said(&lines, "arrows"), messages.to_string());
    assert_eq!(said(&lines, "lines in arrows"), messages.to_string());
    assert_eq!(
        said(&lines, "bands"),
        "setup,alerting,answered,held,retrieved,teardown"
    );
    // The hold was never told: the mark is at the end of stage held, on
    // 60970's lifeline, and no arrow is marked instead.
    let missing = said(&lines, "missing");
    assert!(
        missing.starts_with("held ")
            && missing.contains("sca.60970: Appearance AppearanceState=held"),
        "{missing}"
    );
    assert_eq!(said(&lines, "divergent arrows"), "0");
    assert_eq!(said(&lines, "first arrow links"), "true");
    assert_eq!(said(&lines, "timelines"), "sca.60970#1,sca.60970_2#1");
    assert_eq!(said(&lines, "observed"), "idle,alerting,active,idle");
    assert_eq!(said(&lines, "expected"), "idle,alerting,active,held,active");
    assert_eq!(said(&lines, "parts"), "1");
    assert_eq!(said(&lines, "scripts"), "0");
    let both = "case-hold-retrieve,case-inbound-alerting rows 2";
    assert_eq!(said(&lines, "all"), both);
    assert_eq!(said(&lines, "f-fail"), "case-hold-retrieve rows 1");
    assert_eq!(said(&lines, "f-pass"), "case-inbound-alerting rows 1");
    assert_eq!(said(&lines, "f-xfail"), " rows 0");
    assert_eq!(said(&lines, "f-problems"), "case-hold-retrieve rows 1");
    assert_eq!(said(&lines, "f-all"), both);

    // The matrix page of this run: every cell opens its case.
    let matrix = dir.path().join("matrix.html");
    let out = Command::new(env!("CARGO_BIN_EXE_scacheck"))
        .args(["table", "--html"])
        .arg(&matrix)
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let page_text = std::fs::read_to_string(&matrix).unwrap();
    let cells: Vec<&str> = page_text
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .filter(|h| h.contains('#'))
        .collect();
    assert_eq!(cells.len(), 2, "{page_text}");
    for cell in cells {
        let (file, id) = cell.split_once('#').unwrap();
        let target = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(target.contains(&format!("id=\"{id}\"")), "{cell}");
    }

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

#[test]
fn a_report_of_hostile_server_content_executes_nothing_and_stays_readable() {
    use scacheck::observation::Observability;
    use scacheck::outcome::{CaseResult, Verdict};
    use scacheck::sip::record::{Direction, Record};
    use scacheck::sip::Transport;
    let Some(browser) = chromium() else { return };
    // What a hostile server may send: markup that would run if copied
    // into the page, control bytes, invalid UTF-8, a 100 KB header.
    let run = |what: &str| format!("parent.document.title='EXECUTED {what}'");
    let mut hostile = format!(
        "NOTIFY sip:60970@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:h>;tag=1\r\n\
         To: <sip:60970@h>;tag=2\r\nCall-ID: c\r\nCSeq: 1 NOTIFY\r\nEvent: call-info\r\n\
         Call-Info: <sip:h>;appearance-index=1;appearance-state=\"<script>{}</script>\"\r\n\
         X-Img: <img src=x onerror=\"{}\">\r\nX-Svg: <svg onload=\"{}\"></svg>\r\n\
         X-Escape: \x1b[2J\x00\x07\r\nX-Big: {}\r\n",
        run("script"),
        run("img"),
        run("svg"),
        "A".repeat(100 * 1024)
    )
    .into_bytes();
    hostile.extend_from_slice(b"X-Bad-Utf8: \xff\xfe\xc3\r\nContent-Length: 0\r\n\r\n");
    let mut r = CaseResult::new(
        "hostile",
        "<script>parent.document.title='EXECUTED title'</script>",
        Transport::Udp,
        Observability::everything("t"),
    );
    r.verdict = Verdict::Fail;
    r.notes = vec![format!("<img src=x onerror=\"{}\">", run("note"))];
    r.records = (0..3)
        .map(|seq| Record {
            seq,
            at: std::time::SystemTime::UNIX_EPOCH,
            agent: "60970\"><script>parent.document.title='EXECUTED agent'</script>".into(),
            direction: Direction::Received,
            transport: Transport::Udp,
            local: "127.0.0.1:1".parse().unwrap(),
            peer: "127.0.0.1:2".parse().unwrap(),
            raw: hostile.clone(),
            problem: None,
            parsed: Default::default(),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    let html = scacheck::report::html::report("hostile", "<b>t</b>", &[r]);
    std::fs::write(&page, &html).unwrap();
    // Three 100 KB messages, each shown folded.
    assert!(html.len() < 100 * 1024, "{} bytes", html.len());
    let lines = probe(
        browser,
        dir.path(),
        &page,
        r#"
say('title: ' + document.title);
say('scripts: ' + d.querySelectorAll('script').length);
say('handlers: ' + [...d.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length);
say('imgs: ' + d.querySelectorAll('img').length);
const pre = d.querySelector('details.message pre').textContent;
say('escape shown: ' + pre.includes('X-Escape: \\x1b[2J\\x00\\x07'));
say('markup shown: ' + pre.includes('<img src=x onerror='));
say('folded: ' + pre.includes('bytes more, in hostile.sip.txt'));
say('arrows: ' + d.querySelectorAll('svg.ladder g.msg').length);
"#,
    );
    assert_eq!(said(&lines, "title"), "");
    assert_eq!(said(&lines, "scripts"), "0");
    assert_eq!(said(&lines, "handlers"), "0");
    assert_eq!(said(&lines, "imgs"), "0");
    assert_eq!(said(&lines, "escape shown"), "true");
    assert_eq!(said(&lines, "markup shown"), "true");
    assert_eq!(said(&lines, "folded"), "true");
    assert_eq!(said(&lines, "arrows"), "3");
}
