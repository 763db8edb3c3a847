//! Which of a case's messages the page draws and lists: all of them, up to
//! [`MAX_ROWS`]; beyond that (a server flooding a phone with NOTIFYs) the
//! first and the last ones, the one holding the first divergence with its
//! neighbours, and in between a gap that says how many were left out and
//! what they were. The `.sip.txt` file keeps every message whatever the
//! page draws, so a page stays readable at any size.

use std::collections::{BTreeMap, BTreeSet};

use crate::outcome::CaseResult;

/// At most this many messages are drawn and listed for one case.
pub const MAX_ROWS: usize = 400;
/// Drawn around the divergent message when a case is folded.
const AROUND: usize = 10;

/// A row of the ladder and of the message list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// The record at this index of [`CaseResult::records`].
    Record(usize),
    /// Records left out: how many, and their first lines' kinds with
    /// counts (`NOTIFY ×55400, 200 ×12`).
    Gap { count: usize, summary: String },
}

/// The rows of `r`, at most about [`MAX_ROWS`] of them.
pub fn rows(r: &CaseResult) -> Vec<Row> {
    let n = r.records.len();
    if n <= MAX_ROWS {
        return (0..n).map(Row::Record).collect();
    }
    let mut kept: BTreeSet<usize> = (0..MAX_ROWS / 2).chain(n - MAX_ROWS / 2..n).collect();
    let divergent = r
        .first_divergence()
        .and_then(|d| d.record)
        .and_then(|seq| r.records.iter().position(|x| x.seq == seq));
    if let Some(i) = divergent {
        kept.extend(i.saturating_sub(AROUND)..(i + AROUND + 1).min(n));
    }
    let mut out = Vec::with_capacity(kept.len() + 2);
    let mut next = 0;
    for i in kept {
        if i > next {
            out.push(gap(r, next..i));
        }
        out.push(Row::Record(i));
        next = i + 1;
    }
    out
}

fn gap(r: &CaseResult, left_out: std::ops::Range<usize>) -> Row {
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for rec in &r.records[left_out.clone()] {
        let first = rec.first_line();
        // A request by its method, a response by its status.
        let kind = match first.strip_prefix("SIP/2.0 ") {
            Some(rest) => rest.split(' ').next().unwrap_or("").to_string(),
            None => first.split(' ').next().unwrap_or("").to_string(),
        };
        *kinds.entry(kind).or_default() += 1;
    }
    let mut by_count: Vec<(String, usize)> = kinds.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let summary = by_count
        .iter()
        .take(4)
        .map(|(k, n)| {
            format!(
                "{} ×{n}",
                crate::report::shown::visible(crate::report::shown::folded(k, 20).0)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    Row::Gap {
        count: left_out.len(),
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_folded_into_its_ends_and_a_gap_that_counts_it() {
        let mut r = crate::outcome::tests::result(&[]);
        let notify = b"NOTIFY sip:a@b SIP/2.0\r\n\r\n".to_vec();
        r.records = (0..1000)
            .map(|i| {
                let mut rec = crate::derive::test_record(
                    "60970",
                    crate::sip::record::Direction::Received,
                    notify.clone(),
                );
                rec.seq = i;
                rec
            })
            .collect();
        let drawn = rows(&r);
        assert_eq!(drawn.len(), MAX_ROWS + 1);
        assert_eq!(drawn[0], Row::Record(0));
        assert_eq!(
            drawn[MAX_ROWS / 2],
            Row::Gap {
                count: 1000 - MAX_ROWS,
                summary: "NOTIFY ×600".into()
            }
        );
        assert_eq!(drawn.last(), Some(&Row::Record(999)));
        r.records.truncate(10);
        assert_eq!(rows(&r), (0..10).map(Row::Record).collect::<Vec<_>>());
    }
}
