//! The console: a line per case as it finishes (its verdict, its key and
//! how long it took; for a failure or an inconclusive case, its headline:
//! the first divergence, else why it could not complete, else its first
//! problem; for an xfail, an xpass or a skipped case, its notes), and at
//! the end the summary line, every verdict with its count (zero included).

use std::fmt::Write as _;
use std::io::Write as _;

use super::totals;
use crate::outcome::{CaseResult, Verdict};

/// The console line of a case.
pub fn console_line(r: &CaseResult) -> String {
    let mut line = format!(
        "{:<13} {:<40} {:>6} ms",
        r.verdict.as_str().to_uppercase(),
        r.key(),
        r.duration.as_millis()
    );
    if let Some(on) = &r.line {
        let _ = write!(line, "  {on}");
    }
    match r.verdict {
        Verdict::Pass => {}
        Verdict::Fail | Verdict::Inconclusive => {
            if let Some(h) = r.headline() {
                let _ = write!(line, "\n    {h}");
            }
        }
        Verdict::Xfail | Verdict::Xpass | Verdict::Skipped => {
            for note in &r.notes {
                let _ = write!(line, "\n    {note}");
            }
        }
    }
    line
}

/// The summary line: how many cases, and how many of each verdict.
pub fn console_summary(results: &[CaseResult]) -> String {
    let t = totals(results);
    let parts: Vec<String> = Verdict::ALL
        .iter()
        .map(|v| format!("{} {}", t[v.as_str()], v.as_str()))
        .collect();
    format!("{} cases: {}", results.len(), parts.join(", "))
}

/// Where a run's lines go as its cases finish: the console (standard
/// output, or standard error when the JSON-lines stream takes standard
/// output) and the JSON-lines stream, if one was asked for. A stream that
/// fails to write is kept as the first error, for the end of the run.
pub struct Console {
    to_stderr: bool,
    stream: Option<Box<dyn std::io::Write>>,
    failed: Option<std::io::Error>,
}

impl Console {
    /// `json_lines`: a file to create, `-` for standard output, or none.
    pub fn new(json_lines: Option<&std::path::Path>) -> std::io::Result<Console> {
        let to_stderr = json_lines.is_some_and(|p| p.as_os_str() == "-");
        let stream: Option<Box<dyn std::io::Write>> = match json_lines {
            None => None,
            Some(_) if to_stderr => Some(Box::new(std::io::stdout())),
            Some(p) => Some(Box::new(std::fs::File::create(p).map_err(|e| {
                std::io::Error::new(e.kind(), format!("creating {}: {e}", p.display()))
            })?)),
        };
        Ok(Console {
            to_stderr,
            stream,
            failed: None,
        })
    }

    pub fn say(&self, line: &str) {
        if self.to_stderr {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    }

    /// A finished case: its console line, and its JSON line on the stream.
    pub fn case(&mut self, r: &CaseResult) {
        self.say(&console_line(r));
        if let Some(out) = self.stream.as_mut() {
            if let Err(e) = out
                .write_all(super::json_line(r).as_bytes())
                .and_then(|_| out.flush())
            {
                self.failed.get_or_insert(e);
            }
        }
    }

    /// The stream's first write error, if any.
    pub fn finish(self) -> std::io::Result<()> {
        self.failed.map_or(Ok(()), Err)
    }
}
