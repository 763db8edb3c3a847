//! The HTML report: one self-contained file (no script, no network, no
//! external file: its Content-Security-Policy forbids them all) with the
//! verdicts counted and filterable (failures and xpasses first, passing
//! cases collapsed), and for each case its appearance timelines, its SIP
//! ladder as a picture, its expected and observed events side by side with
//! the first divergence highlighted, and every raw message a click away.
//!
//! Built with maud: every value is escaped unless a template asks for it
//! unescaped by name (`PreEscaped`, used here only for the style sheet, a
//! constant). What a server sent is also made visible ([`super::shown`]): control
//! characters as escapes, long messages folded, a flood of messages drawn
//! as its ends and a count ([`rows`]); the `.sip.txt` file keeps it whole.
//!
//! The filter is CSS alone: radio buttons before the page's `main`, and a
//! rule per choice that hides the cases of other verdicts.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use similar::{ChangeTag, TextDiff};

use crate::outcome::{CaseResult, Verdict};

pub mod ladder;
pub mod rows;
pub mod timeline;

use super::shown::{self, message_text, visible};

/// The bytes of a message shown on the page; the rest is in `.sip.txt`.
const MESSAGE_SHOWN: usize = 8 * 1024;
/// The characters of a note, a headline or an event line shown.
const LINE_SHOWN: usize = 2 * 1024;

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top;text-align:left}\
.v-pass,.v-xfail{color:#176c2e}.v-fail,.v-xpass,.v-inconclusive{color:#b00020;font-weight:bold}.v-skipped{color:#777}\
pre{margin:0;white-space:pre-wrap;word-break:break-all;font:12px/1.3 monospace}\
.sides td{font:12px monospace;white-space:pre-wrap;word-break:break-all;width:50%}\
.del{background:#fde8e8}.ins{background:#e6f4ea}.divergence{outline:3px solid #b00020}details summary{cursor:pointer}\
section.case>details>summary h2{display:inline;font-size:1.2em}.headline{color:#b00020;font-weight:bold}\
.counts span{margin-right:1em}.filter{margin:.5em 0 1em}.filter label{margin-right:1em;cursor:pointer}\
#f-problems:checked~main .case:not([data-verdict=fail]):not([data-verdict=xpass]):not([data-verdict=inconclusive]),\
#f-problems:checked~main #summary tr[data-verdict=pass],#f-problems:checked~main #summary tr[data-verdict=xfail],\
#f-problems:checked~main #summary tr[data-verdict=skipped]{display:none}\
#f-fail:checked~main .case:not([data-verdict=fail]),#f-fail:checked~main #summary tr[data-verdict]:not([data-verdict=fail]){display:none}\
#f-xpass:checked~main .case:not([data-verdict=xpass]),#f-xpass:checked~main #summary tr[data-verdict]:not([data-verdict=xpass]){display:none}\
#f-xfail:checked~main .case:not([data-verdict=xfail]),#f-xfail:checked~main #summary tr[data-verdict]:not([data-verdict=xfail]){display:none}\
#f-pass:checked~main .case:not([data-verdict=pass]),#f-pass:checked~main #summary tr[data-verdict]:not([data-verdict=pass]){display:none}\
.pictures{overflow-x:auto}\
svg text{font:11px monospace;fill:#222}svg .agent{font-weight:bold}svg .lifeline line{stroke:#999;stroke-dasharray:4 3}\
svg .band-0{fill:#f4f6fb}svg .band-1{fill:#fbf8f1}svg .stage-name{fill:#555;font-style:italic}\
svg .msg line{stroke:#1a3d7c;stroke-width:1.2}svg .msg polygon{fill:#1a3d7c}svg .msg .time{fill:#666}\
svg .msg.muted{opacity:.4}svg .msg.divergent line{stroke:#b00020;stroke-width:2.5}svg .msg.divergent polygon{fill:#b00020}\
svg .msg.divergent .label,svg .mark,svg .missing text{fill:#b00020;font-weight:bold}svg .missing circle{fill:none;stroke:#b00020;stroke-width:2;stroke-dasharray:3 2}\
svg .gap{fill:#b05a00;font-style:italic}svg a:hover .label{text-decoration:underline}\
svg .tick line{stroke:#bbb}svg .tick text{fill:#777;font-size:10px}svg .which{fill:#777;font-size:10px}\
svg .parts{stroke:#b00020;stroke-width:2}\
.s-idle{fill:#e8e8e8}.s-seized{fill:#ffd54f}.s-progressing{fill:#ffe082}.s-alerting{fill:#ffb74d}\
.s-active{fill:#66bb6a}.s-held{fill:#42a5f5}.s-held-private{fill:#7e57c2}.s-bridge-active{fill:#26a69a}.s-other{fill:#9e9e9e}\
.legend span{display:inline-block;padding:0 6px;margin-right:4px;font-size:12px;border-radius:3px}\
.legend .s-idle{background:#e8e8e8}.legend .s-seized{background:#ffd54f}.legend .s-progressing{background:#ffe082}\
.legend .s-alerting{background:#ffb74d}.legend .s-active{background:#66bb6a}.legend .s-held{background:#42a5f5}\
.legend .s-held-private{background:#7e57c2;color:#fff}.legend .s-bridge-active{background:#26a69a}.legend .s-other{background:#9e9e9e}";

/// What the page allows itself: inline style, nothing else (no script,
/// no request anywhere, no frame, no form).
const POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The order cases are shown in: what needs a look first.
fn rank(v: Verdict) -> u8 {
    match v {
        Verdict::Fail => 0,
        Verdict::Xpass => 1,
        Verdict::Inconclusive => 2,
        Verdict::Xfail => 3,
        Verdict::Skipped => 4,
        Verdict::Pass => 5,
    }
}

/// The whole report.
pub fn report(name: &str, target: &str, results: &[CaseResult]) -> String {
    let mut out = Vec::new();
    let _ = write_report(&mut out, name, target, results);
    String::from_utf8(out).unwrap_or_default()
}

/// [`report`] written to `w` a case at a time (a report of a busy
/// capture's flows is megabytes: not held whole).
pub fn write_report(
    mut w: impl std::io::Write,
    name: &str,
    target: &str,
    results: &[CaseResult],
) -> std::io::Result<()> {
    let mut order: Vec<&CaseResult> = results.iter().collect();
    order.sort_by_key(|r| rank(r.verdict));
    let count = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
    let head = html! {
        meta charset="utf-8";
        meta http-equiv="Content-Security-Policy" content=(POLICY);
        title { "scacheck: " (visible(name)) }
        style { (PreEscaped(STYLE)) }
    };
    let top = html! {
        h1 { "scacheck report" }
        p { "Target: " b { (visible(target)) } }
        p class="counts" {
            @for v in Verdict::ALL {
                span class=(format!("v-{}", v.as_str())) { (count(v)) " " (v.as_str()) }
                " "
            }
        }
        // The filter: checked radio buttons select a CSS rule (STYLE).
        input type="radio" name="filter" id="f-all" checked;
        label for="f-all" { "all" }
        " "
        input type="radio" name="filter" id="f-problems";
        label for="f-problems" { "failures and xpasses" }
        " "
        @for v in [Verdict::Fail, Verdict::Xpass, Verdict::Xfail, Verdict::Pass] {
            input type="radio" name="filter" id=(format!("f-{}", v.as_str()));
            label for=(format!("f-{}", v.as_str())) { (v.as_str()) }
            " "
        }
    };
    let summary = html! {
        table id="summary" {
            tr { th { "case" } th { "verdict" } th { "ms" } th { "first divergence" } }
            @for r in &order {
                @let key = r.key();
                tr data-verdict=(r.verdict.as_str()) {
                    td { a href=(format!("#case-{key}")) { (visible(&key)) } }
                    td class=(format!("verdict v-{}", r.verdict.as_str())) { (r.verdict.as_str()) }
                    td { (r.duration.as_millis()) }
                    td { (line_text(&r.headline_divergence().unwrap_or_default())) }
                }
            }
        }
    };
    // The document is written in pieces so that one case at a time is
    // held: the head and summary, each case, the end.
    write!(
        w,
        "{}<html lang=\"en\"><head>{}</head><body>{}<main>{}",
        DOCTYPE.into_string(),
        head.into_string(),
        top.into_string(),
        summary.into_string()
    )?;
    for r in order {
        w.write_all(case_section(r).into_string().as_bytes())?;
    }
    w.write_all(b"</main></body></html>\n")
}

/// A line from a server or a run, fit to show: control characters
/// visible, at most [`LINE_SHOWN`] bytes.
fn line_text(s: &str) -> String {
    let (head, left) = shown::folded(s, LINE_SHOWN);
    let mut out = visible(head).into_owned();
    if left > 0 {
        out.push_str(&format!(" … ({left} bytes more)"));
    }
    out
}

fn case_section(r: &CaseResult) -> Markup {
    let key = r.key();
    let verdict = r.verdict.as_str();
    // Passing, expected failures and skipped cases start collapsed.
    let open = matches!(
        r.verdict,
        Verdict::Fail | Verdict::Xpass | Verdict::Inconclusive
    );
    let rows = rows::rows(r);
    let anchor = |seq: u64| format!("m-{key}-{seq}");
    let whole = format!("{key}.sip.txt");
    html! {
        section class="case" data-verdict=(verdict) id=(format!("case-{key}")) {
            details open[open] {
                summary { h2 { (visible(&key)) ": " span class=(format!("verdict v-{verdict}")) { (verdict) } } }
                p { (line_text(&r.title)) }
                @if let Some(line) = &r.line { p class="source" { "ran on " (line_text(line)) } }
                @for line in r.source_lines() { p class="source" { "events from " (line_text(&line)) } }
                @if r.verdict != Verdict::Pass {
                    @if let Some(h) = r.headline() { p class="headline" { (line_text(&h)) } }
                }
                @for note in &r.notes { p class="note" { (line_text(note)) } }
                div class="pictures" {
                    @if let Some(t) = timeline::timelines(r) {
                        h3 { "Appearance timelines" }
                        p class="legend" {
                            @for s in ["idle", "seized", "progressing", "alerting", "active", "held", "held-private", "bridge-active", "other"] {
                                span class=(format!("s-{s}")) { (s) }
                            }
                        }
                        (t)
                    }
                    @if !r.records.is_empty() {
                        h3 { "SIP ladder" }
                        (ladder::ladder(r, &rows, &anchor))
                    }
                }
                (events_side_by_side(r))
                @if !r.records.is_empty() {
                    h3 { "Messages" }
                    div class="messages" {
                        @for row in &rows {
                            @match row {
                                rows::Row::Record(i) => {
                                    @let rec = &r.records[*i];
                                    details class="message" id=(anchor(rec.seq)) {
                                        summary {
                                            "#" (rec.seq) " " (visible(&rec.agent))
                                            (if rec.direction == crate::sip::record::Direction::Sent { " → " } else { " ← " })
                                            (line_text(&rec.first_line()))
                                            @if let Some(p) = &rec.problem { " " b class="v-fail" { (line_text(p)) } }
                                        }
                                        pre { (message_text(&rec.raw, MESSAGE_SHOWN, &whole)) }
                                    }
                                }
                                rows::Row::Gap { count, summary } => {
                                    p class="gap" { "⋯ " (count) " messages not listed (" (summary) "): every one is in " (whole) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Expected and observed events of every differing channel, side by side;
/// the row of the first divergence is highlighted.
fn events_side_by_side(r: &CaseResult) -> Markup {
    let first = r.first_divergence();
    html! {
        @for stage in &r.stages {
            @for channel in stage.channels.iter().filter(|c| c.diff.is_some()) {
                @let is_first = first.is_some_and(|d| d.stage == stage.stage && d.channel == channel.channel.to_string());
                h3 { "stage " (visible(&stage.stage)) " · channel " (channel.channel.to_string()) }
                table class="sides" {
                    tr { th { "expected" } th { "observed" } }
                    (side_rows(&channel.expected, &channel.observed, is_first))
                }
                @for line in channel.standing() { pre class="standing" { (line_text(&line)) } }
            }
        }
    }
}

fn side_rows(expected: &[String], observed: &[String], is_first: bool) -> Markup {
    let lines = |v: &[String]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
    let (e, o) = (lines(expected), lines(observed));
    let diff = TextDiff::from_lines(&e, &o);
    let mut highlighted = false;
    let mut out = String::new();
    for op in diff.ops() {
        let changes: Vec<_> = diff.iter_changes(op).collect();
        let of = |tag: ChangeTag| -> Vec<&str> {
            changes
                .iter()
                .filter(|c| c.tag() == tag)
                .map(|c| c.value().trim_end())
                .collect()
        };
        let (dels, ins) = (of(ChangeTag::Delete), of(ChangeTag::Insert));
        for v in of(ChangeTag::Equal) {
            out.push_str(
                &html! { tr { td { (line_text(v)) } td { (line_text(v)) } } }.into_string(),
            );
        }
        for i in 0..dels.len().max(ins.len()) {
            let class = if is_first && !highlighted {
                "changed divergence"
            } else {
                "changed"
            };
            highlighted = true;
            let row = html! {
                tr class=(class) {
                    td class="del" { (line_text(dels.get(i).copied().unwrap_or(""))) }
                    td class="ins" { (line_text(ins.get(i).copied().unwrap_or(""))) }
                }
            };
            out.push_str(&row.into_string());
        }
    }
    // Built above by maud, escaped there.
    PreEscaped(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::record::{Direction, Record};

    #[test]
    fn a_hostile_message_shows_as_text() {
        use crate::observation::Observability;
        use crate::sip::Transport;
        let hostile = b"NOTIFY sip:x <script>alert(1)</script> SIP/2.0\r\nX-Evil: <img src=x onerror=alert(2)>\x1b[2J\0\r\n\r\n".to_vec();
        let mut r = CaseResult::new(
            "c",
            "<b>title</b>",
            Transport::Udp,
            Observability::everything("t"),
        );
        r.verdict = Verdict::Fail;
        r.error = Some("</p><script>alert(3)</script>".into());
        r.records = vec![Record {
            seq: 0,
            at: std::time::SystemTime::UNIX_EPOCH,
            agent: "60970\"><script>".into(),
            direction: Direction::Received,
            transport: Transport::Udp,
            local: "127.0.0.1:1".parse().unwrap(),
            peer: "127.0.0.1:2".parse().unwrap(),
            raw: hostile,
            problem: Some("unparseable <script>".into()),
            parsed: Default::default(),
        }];
        r.notes = vec!["<script>alert(4)</script>".into()];
        let html = report("n<script>", "t<script>", &[r]);
        assert!(!html.to_lowercase().contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            html.contains("&lt;img src=x onerror=alert(2)&gt;\\x1b[2J\\x00"),
            "{html}"
        );
        assert!(
            !html.contains('\u{1b}') && !html.contains('\0'),
            "control bytes copied"
        );
    }

    #[test]
    fn failures_come_first_and_passing_cases_start_collapsed() {
        let mut pass = crate::outcome::tests::result(&[]);
        pass.id = "a-pass".into();
        let mut fail = crate::outcome::tests::result(&[]);
        fail.id = "b-fail".into();
        fail.verdict = Verdict::Fail;
        let html = report("n", "t", &[pass, fail]);
        let at = |s: &str| html.find(s).unwrap_or_else(|| panic!("{s} in {html}"));
        assert!(at("id=\"case-b-fail\"") < at("id=\"case-a-pass\""));
        assert!(html.contains(
            "<section class=\"case\" data-verdict=\"fail\" id=\"case-b-fail\"><details open>"
        ));
        assert!(html.contains(
            "<section class=\"case\" data-verdict=\"pass\" id=\"case-a-pass\"><details>"
        ));
        assert!(html.contains("content=\"default-src 'none';"), "{html}");
    }
}
