//! The HTML report: one self-contained file (no script, no network, no
//! external file) with the verdicts, and for each case its SIP ladder, its
//! expected and observed events side by side with the first divergence
//! highlighted, and every raw message a click away. Everything a server
//! sent is escaped: a hostile message shows as text.

use std::fmt::Write as _;

use similar::{ChangeTag, TextDiff};

use crate::outcome::{CaseResult, Verdict};
use crate::sip::headers::appearances;
use crate::sip::record::Direction;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top;text-align:left}\
.v-pass,.v-xfail{color:#176c2e}.v-fail,.v-xpass,.v-inconclusive{color:#b00020;font-weight:bold}.v-skipped{color:#777}\
pre{margin:0;white-space:pre-wrap;font:12px/1.3 monospace}.ladder td{font:12px monospace;white-space:nowrap}\
.ladder td.msg{color:#114}.states{color:#6a3d9a}.sides td{font:12px monospace;white-space:pre-wrap;width:50%}\
.del{background:#fde8e8}.ins{background:#e6f4ea}.divergence{outline:3px solid #b00020}details summary{cursor:pointer}";

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
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>scacheck: {}</title><style>{STYLE}</style></head><body>\n",
        escape(name)
    );
    let _ = writeln!(
        out,
        "<h1>scacheck report</h1><p>Target: <b>{}</b></p>",
        escape(target)
    );
    out.push_str("<table id=\"summary\"><tr><th>case</th><th>verdict</th><th>ms</th><th>first divergence</th></tr>\n");
    for r in results {
        let key = r.key();
        let _ = writeln!(
            out,
            "<tr><td><a href=\"#case-{k}\">{k}</a></td><td class=\"verdict v-{v}\">{v}</td><td>{}</td><td>{}</td></tr>",
            r.duration.as_millis(),
            escape(&r.headline_divergence().unwrap_or_default()),
            k = escape(&key),
            v = r.verdict.as_str()
        );
    }
    out.push_str("</table>\n");
    for r in results {
        w.write_all(out.as_bytes())?;
        out.clear();
        case_section(&mut out, r);
    }
    out.push_str("</body></html>\n");
    w.write_all(out.as_bytes())
}

fn case_section(out: &mut String, r: &CaseResult) {
    let key = escape(&r.key());
    let _ = writeln!(out, "<section class=\"case\" data-verdict=\"{v}\" id=\"case-{key}\"><h2>{key}: <span class=\"verdict v-{v}\">{v}</span></h2>", v = r.verdict.as_str());
    let _ = writeln!(out, "<p>{}</p>", escape(&r.title));
    if let Some(line) = &r.line {
        let _ = writeln!(out, "<p class=\"source\">ran on {}</p>", escape(line));
    }
    for line in r.source_lines() {
        let _ = writeln!(out, "<p class=\"source\">events from {}</p>", escape(&line));
    }
    if r.verdict != Verdict::Pass {
        if let Some(h) = r.headline() {
            let _ = writeln!(out, "<p class=\"headline\">{}</p>", escape(&h));
        }
    }
    for note in &r.notes {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(note));
    }
    events_side_by_side(out, r);
    ladder(out, r);
    out.push_str("</section>\n");
}

/// Expected and observed events of every differing channel, side by side;
/// the row of the first divergence is highlighted.
fn events_side_by_side(out: &mut String, r: &CaseResult) {
    let first = r.first_divergence();
    for stage in &r.stages {
        for channel in stage.channels.iter().filter(|c| c.diff.is_some()) {
            let _ = writeln!(
                out,
                "<h3>stage {} · channel {}</h3><table class=\"sides\"><tr><th>expected</th><th>observed</th></tr>",
                escape(&stage.stage),
                escape(&channel.channel.to_string())
            );
            let is_first = first.is_some_and(|d| {
                d.stage == stage.stage && d.channel == channel.channel.to_string()
            });
            let (e, o) = (lines(&channel.expected), lines(&channel.observed));
            let diff = TextDiff::from_lines(&e, &o);
            let mut highlighted = false;
            for op in diff.ops() {
                let changes: Vec<_> = diff.iter_changes(op).collect();
                let dels: Vec<&str> = changes
                    .iter()
                    .filter(|c| c.tag() == ChangeTag::Delete)
                    .map(|c| c.value().trim_end())
                    .collect();
                let ins: Vec<&str> = changes
                    .iter()
                    .filter(|c| c.tag() == ChangeTag::Insert)
                    .map(|c| c.value().trim_end())
                    .collect();
                for c in changes.iter().filter(|c| c.tag() == ChangeTag::Equal) {
                    let v = escape(c.value().trim_end());
                    let _ = writeln!(out, "<tr><td>{v}</td><td>{v}</td></tr>");
                }
                for i in 0..dels.len().max(ins.len()) {
                    let mark = if is_first && !highlighted {
                        " divergence"
                    } else {
                        ""
                    };
                    highlighted = true;
                    let _ = writeln!(
                        out,
                        "<tr class=\"changed{mark}\"><td class=\"del\">{}</td><td class=\"ins\">{}</td></tr>",
                        escape(dels.get(i).copied().unwrap_or("")),
                        escape(ins.get(i).copied().unwrap_or(""))
                    );
                }
            }
            out.push_str("</table>\n");
            for line in channel.standing() {
                let _ = writeln!(out, "<pre class=\"standing\">{}</pre>", escape(&line));
            }
        }
    }
}

fn lines(v: &[String]) -> String {
    v.iter().map(|l| format!("{l}\n")).collect()
}

/// The SIP exchange: a column per user agent and one for the server, an
/// arrow per message, the appearance states a NOTIFY told, the raw message
/// behind a click.
fn ladder(out: &mut String, r: &CaseResult) {
    let mut agents: Vec<&str> = Vec::new();
    for rec in &r.records {
        if !agents.contains(&rec.agent.as_str()) {
            agents.push(&rec.agent);
        }
    }
    out.push_str("<h3>SIP ladder</h3><table class=\"ladder\"><tr><th>#</th>");
    for a in &agents {
        let _ = write!(out, "<th>{}</th>", escape(a));
    }
    out.push_str("<th>server</th><th>message</th></tr>\n");
    for rec in &r.records {
        let _ = write!(out, "<tr><td>{}</td>", rec.seq);
        for a in &agents {
            let cell = match (rec.agent == *a, rec.direction) {
                (true, Direction::Sent) => "──────▶",
                (true, Direction::Received) => "◀──────",
                _ => "",
            };
            let _ = write!(out, "<td>{cell}</td>");
        }
        let raw = String::from_utf8_lossy(&rec.raw);
        let states = crate::sip::Message::parse(rec.raw.clone())
            .ok()
            .filter(|m| m.is("NOTIFY"))
            .and_then(|m| appearances(m.headers("Call-Info")).ok())
            .map(|a| {
                a.iter()
                    .map(|a| {
                        format!(
                            "{}={}",
                            a.index,
                            a.state
                                .as_ref()
                                .map(ToString::to_string)
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .filter(|s| !s.is_empty())
            .map(|s| format!(" <span class=\"states\">[{}]</span>", escape(&s)))
            .unwrap_or_default();
        let problem = rec
            .problem
            .as_ref()
            .map(|p| format!(" <b class=\"v-fail\">{}</b>", escape(p)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<td>{}</td><td class=\"msg\"><details><summary>{}{states}{problem}</summary><pre>{}</pre></details></td></tr>",
            escape(&rec.peer.to_string()),
            escape(&rec.first_line()),
            escape(&raw)
        );
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_message_shows_as_text() {
        use crate::observation::Observability;
        use crate::sip::record::Record;
        use crate::sip::Transport;
        let hostile = b"NOTIFY sip:x <script>alert(1)</script> SIP/2.0\r\nX-Evil: <img src=x onerror=alert(2)>\r\n\r\n".to_vec();
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
        assert!(html.contains("&lt;img src=x onerror=alert(2)&gt;"));
    }

    #[test]
    fn escapes_what_a_server_may_send() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }
}
