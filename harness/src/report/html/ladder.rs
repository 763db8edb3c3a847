//! The SIP ladder of a case as an inline SVG sequence diagram: a lifeline
//! per user agent and one for the server (in the middle, the phones split
//! on either side of it), an arrow per drawn message labelled with its
//! method or status (and, for a NOTIFY, the appearance states it told),
//! the stages as shaded bands with their names, a time column, the
//! message holding the first divergence marked (or, when the divergence is
//! an event that never came, a mark where its stage ended on that phone's
//! lifeline), retransmissions and authentication challenges drawn muted.
//! Every arrow links to its raw message on the page.
//!
//! DOM contract (the browser test reads it): the `svg.ladder` has one
//! `g.msg` per drawn message (`data-seq`), `g.stage` bands in stage order
//! (`data-stage`), at most one `g.msg.divergent` or one `g.missing`.

use std::collections::HashSet;

use maud::{html, Markup};

use super::rows::Row;
use crate::model::Channel;
use crate::outcome::CaseResult;
use crate::report::shown::{folded, visible};
use crate::sip::record::{Direction, Record};

const TIME_W: i64 = 70;
const MARGIN: i64 = 70;
const LANE: i64 = 180;
const BAND_LABEL_W: i64 = 150;
const HEADER: i64 = 30;
const ROW: i64 = 18;

/// The ladder of `r`, drawing `rows` (every record, or a flood folded).
/// `anchor(seq)` is the page id of a record's raw message.
pub fn ladder(r: &CaseResult, rows: &[Row], anchor: &dyn Fn(u64) -> String) -> Markup {
    let lanes = lanes(r);
    let lane_x = |name: &str| {
        lanes
            .iter()
            .position(|l| l == name)
            .map(|i| TIME_W + MARGIN + i as i64 * LANE)
    };
    let server_x = lane_x(SERVER).unwrap_or(TIME_W + MARGIN);
    let right = TIME_W + MARGIN + (lanes.len() as i64 - 1) * LANE + MARGIN;
    let width = right + BAND_LABEL_W;
    let row_y = |k: usize| HEADER + k as i64 * ROW + ROW / 2 + 4;
    let divergence = r.first_divergence().filter(|_| r.stopped.is_none());
    let marked = divergence.and_then(|d| d.record);
    // A divergence that is a missing event: marked where its stage ends.
    let missing = divergence.filter(|d| d.record.is_none() && d.expected.is_some());
    // The missing event's own row, where its stage ended (before the
    // first row of the part after it), on its phone's lifeline.
    let missing_row = missing.map(|d| {
        let k = r.stage_starts.iter().position(|s| s.stage == d.stage);
        let next = k.and_then(|k| r.stage_starts.get(k + 1));
        next.map_or(rows.len(), |s| row_of(rows, s.record))
    });
    let shift = |row: usize| row + usize::from(missing_row.is_some_and(|m| row >= m));
    let bands: Vec<(&str, usize, usize)> = bands(r, rows)
        .into_iter()
        .map(|(name, from, to)| {
            // The stage the mark is in keeps it: its end moves, not its start.
            let to = if missing.is_some_and(|d| d.stage == name) {
                to + 1
            } else {
                shift(to)
            };
            (name, shift(from), to)
        })
        .collect();
    let missing_at = missing.zip(missing_row).map(|(d, row)| {
        let dn = match Channel::parse(&d.channel) {
            Channel::Dn(dn) | Channel::Wire(dn) => Some(dn),
            Channel::Monitoring => None,
        };
        let x = dn.as_deref().and_then(lane_x).unwrap_or(server_x);
        (x, row_y(row), d)
    });
    // The mark's text, right of its lifeline: the picture widens for it.
    let missing_text = missing_at.map(|(x, _, d)| {
        let expected = d.expected.as_deref().unwrap_or_default();
        let text = format!("never came to {}: {}", d.channel, brief(expected));
        let text = visible(folded(&text, 200).0).into_owned();
        (x + 12 + 7 * text.chars().count() as i64 + 10, text)
    });
    let width = missing_text
        .as_ref()
        .map_or(width, |(end, _)| width.max(*end));
    let drawn = rows.len() + usize::from(missing_at.is_some());
    let height = HEADER + drawn as i64 * ROW + 16;
    let muted = muted(&r.records);
    let t0 = r.records.first().map(|x| x.at);
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="ladder" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="SIP ladder" {
            @for (k, (name, from, to)) in bands.iter().enumerate() {
                g class="stage" data-stage=(name) {
                    rect class=(format!("band band-{}", k % 2)) x="0" y=(HEADER + *from as i64 * ROW)
                        width=(width) height=((*to - *from) as i64 * ROW) {}
                    text class="stage-name" x=(width - 6) y=(HEADER + *from as i64 * ROW + 13)
                        text-anchor="end" { (visible(name)) }
                }
            }
            @for name in &lanes {
                @let x = lane_x(name).unwrap_or(0);
                g class="lifeline" data-agent=(name) {
                    text class="agent" x=(x) y="16" text-anchor="middle" { (visible(name)) }
                    line x1=(x) y1="22" x2=(x) y2=(height - 4) {}
                }
            }
            @for (k, row) in rows.iter().enumerate() {
                @let y = row_y(shift(k));
                @match row {
                    Row::Record(i) => {
                        @let rec = &r.records[*i];
                        @let agent_x = lane_x(&rec.agent).unwrap_or(server_x);
                        @let (x1, x2) = match rec.direction {
                            Direction::Sent => (agent_x, server_x),
                            Direction::Received => (server_x, agent_x),
                        };
                        @let dir = if x2 >= x1 { 1 } else { -1 };
                        @let class = format!(
                            "msg{}{}",
                            if muted.contains(i) { " muted" } else { "" },
                            if marked == Some(rec.seq) { " divergent" } else { "" }
                        );
                        a href=(format!("#{}", anchor(rec.seq))) {
                            g class=(class) data-seq=(rec.seq) {
                                title { (visible(&rec.first_line())) }
                                text class="time" x="4" y=(y) {
                                    (t0.map(|t0| format!("+{:.3}", rec.at.duration_since(t0).unwrap_or_default().as_secs_f64())).unwrap_or_default())
                                }
                                line x1=(x1) y1=(y) x2=(x2) y2=(y) {}
                                polygon points=(format!("{},{} {},{} {},{}", x2, y, x2 - dir * 8, y - 4, x2 - dir * 8, y + 4)) {}
                                text class="label" x=((x1 + x2) / 2) y=(y - 3) text-anchor="middle" {
                                    (label(rec))
                                }
                                @if marked == Some(rec.seq) {
                                    text class="mark" x=(x2 + dir * 12) y=(y + 4)
                                        text-anchor=(if dir > 0 { "start" } else { "end" }) { "first divergence" }
                                }
                            }
                        }
                    }
                    Row::Gap { count, summary } => {
                        text class="gap" x=(server_x) y=(y) text-anchor="middle" {
                            "⋯ " (count) " messages not drawn (" (summary) "): every one is in the .sip.txt file"
                        }
                    }
                }
            }
            @if let (Some((x, y, d)), Some((_, text))) = (missing_at, &missing_text) {
                g class="missing" data-stage=(d.stage) {
                    title { "first divergence: " (visible(d.expected.as_deref().unwrap_or_default())) }
                    circle cx=(x) cy=(y - 4) r="6" {}
                    text x=(x + 12) y=(y) { (text) }
                }
            }
        }
    }
}

/// A golden event line in brief: `Appearance Index=1 AppearanceState=held`
/// (the line itself when it is not a JSON object).
fn brief(line: &str) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    let mut out = map
        .get("event")
        .and_then(|e| e.as_str())
        .unwrap_or("?")
        .to_string();
    for (k, v) in map.iter().filter(|(k, _)| *k != "event") {
        let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
        out.push_str(&format!(" {k}={v}"));
    }
    out
}

/// The server's lifeline.
pub const SERVER: &str = "server";

/// The lifelines, left to right: the user agents in the order they first
/// show, split in two halves around the server.
fn lanes(r: &CaseResult) -> Vec<String> {
    let mut agents: Vec<String> = Vec::new();
    for rec in &r.records {
        if !agents.contains(&rec.agent) {
            agents.push(rec.agent.clone());
        }
    }
    let half = agents.len() / 2;
    let mut lanes: Vec<String> = agents[..half].to_vec();
    lanes.push(SERVER.to_string());
    lanes.extend_from_slice(&agents[half..]);
    lanes
}

/// Each part of the case as a band of rows: (name, first row, end row),
/// from [`CaseResult::stage_starts`]; a part with no drawn row is left out.
fn bands<'a>(r: &'a CaseResult, rows: &[Row]) -> Vec<(&'a str, usize, usize)> {
    let mut out = Vec::new();
    for (k, s) in r.stage_starts.iter().enumerate() {
        let from = row_of(rows, s.record);
        let to = r
            .stage_starts
            .get(k + 1)
            .map_or(rows.len(), |next| row_of(rows, next.record));
        if to > from {
            out.push((s.stage.as_str(), from, to));
        }
    }
    out
}

/// The first row drawing the record at index `record` or a later one.
fn row_of(rows: &[Row], record: usize) -> usize {
    rows.iter()
        .position(|row| matches!(row, Row::Record(i) if *i >= record))
        .unwrap_or(rows.len())
}

/// The arrow's label: a request's method, a response's status and the
/// method it answers; a NOTIFY's appearance states (`NOTIFY 1=active`).
fn label(rec: &Record) -> String {
    let Some(msg) = rec.message_once() else {
        let first = rec.first_line();
        return visible(folded(&first, 40).0).into_owned();
    };
    let mut out = match (msg.status(), msg.cseq()) {
        (Some(status), Some((_, method))) => format!("{status} ({method})"),
        (Some(status), None) => status.to_string(),
        _ => msg.method().unwrap_or_default(),
    };
    if msg.is("NOTIFY") {
        if let Ok(apps) = msg.appearances() {
            for a in apps {
                let state = a
                    .state
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                out.push_str(&format!(" {}={state}", a.index));
            }
        }
    }
    if rec.problem.is_some() {
        out.push_str(" (unusable)");
    }
    visible(folded(&out, 60).0).into_owned()
}

/// The records drawn muted: a retransmission (the same bytes the same
/// agent sent or received before) and an authentication challenge (a
/// 401 or 407, and the request it challenged).
fn muted(records: &[Record]) -> HashSet<usize> {
    let mut seen: HashSet<(&str, bool, &[u8])> = HashSet::new();
    let mut out = HashSet::new();
    let mut challenged: HashSet<(&str, String, u32)> = HashSet::new();
    for (i, rec) in records.iter().enumerate() {
        let sent = rec.direction == Direction::Sent;
        if !seen.insert((&rec.agent, sent, &rec.raw)) {
            out.insert(i);
        }
        // Only a response can be a challenge: nothing else is parsed.
        if !rec.raw.starts_with(b"SIP/2.0 40") {
            continue;
        }
        if let Some(msg) = rec.message_once() {
            if matches!(msg.status(), Some(401 | 407)) {
                out.insert(i);
                if let Some((n, _)) = msg.cseq() {
                    challenged.insert((&rec.agent, msg.call_id().to_string(), n));
                }
            }
        }
    }
    for (i, rec) in records.iter().enumerate() {
        if challenged.is_empty() {
            break;
        }
        if rec.direction != Direction::Sent || rec.raw.starts_with(b"SIP/2.0") {
            continue;
        }
        if let Some(msg) = rec.message_once() {
            if let Some((n, _)) = msg.cseq() {
                if challenged.contains(&(rec.agent.as_str(), msg.call_id().to_string(), n)) {
                    out.insert(i);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawing_a_case_keeps_no_parse_of_its_records() {
        // A report of a busy capture's 200 kept flows would otherwise hold
        // every message twice (measured: 10 MiB more at its peak).
        let mut r = crate::outcome::tests::result(&[]);
        let notify = b"NOTIFY sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:h>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 NOTIFY\r\nEvent: call-info\r\nCall-Info: <sip:h>;appearance-index=1;appearance-state=active\r\nContent-Length: 0\r\n\r\n".to_vec();
        r.records = vec![crate::derive::test_record(
            "60970",
            Direction::Received,
            notify,
        )];
        let rows = super::super::rows::rows(&r);
        let svg = ladder(&r, &rows, &|seq| format!("m-{seq}")).into_string();
        assert!(svg.contains(">NOTIFY 1=active<"), "{svg}");
        assert_eq!(format!("{:?}", r.records[0].parsed), "Parsed(not yet)");
    }
}
