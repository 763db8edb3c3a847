//! The console: a line per case as it finishes (its verdict, its key and
//! how long it took; for a failure or an inconclusive case, its headline:
//! the first divergence, else why it could not complete, else its first
//! problem; for an xfail, an xpass or a skipped case, its notes), and at
//! the end the summary line, every verdict with its count (zero included).
//! On a terminal, a status line stays under those lines while cases run:
//! which are running, how many are done of how many, the time so far. When
//! the output is not a terminal (a CI log) there is none: plain lines only.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use super::totals;
use crate::outcome::{CaseResult, Progress, Verdict};

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

/// The status line: `running a, b (+3 more) · 12/30 done · 14 s`.
pub fn status_line(running: &[String], done: usize, total: usize, elapsed: Duration) -> String {
    const SHOWN: usize = 3;
    let mut names = running
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if running.len() > SHOWN {
        let _ = write!(names, " (+{} more)", running.len() - SHOWN);
    }
    let running = if names.is_empty() {
        String::new()
    } else {
        format!("running {names} · ")
    };
    format!("{running}{done}/{total} done · {} s", elapsed.as_secs())
}

/// What the status line shows, kept as cases start and finish.
struct Status {
    bar: indicatif::ProgressBar,
    running: Vec<String>,
    done: usize,
    total: usize,
    began: Instant,
}

impl Status {
    fn show(&self) {
        self.bar.set_message(status_line(
            &self.running,
            self.done,
            self.total,
            self.began.elapsed(),
        ));
    }
}

/// Where a run's lines go as its cases finish: the console (standard
/// output, or standard error when the JSON-lines stream takes standard
/// output) and the JSON-lines stream, if one was asked for. A stream that
/// fails to write is kept as the first error, for the end of the run.
pub struct Console {
    to_stderr: bool,
    stream: Option<Box<dyn std::io::Write>>,
    failed: Option<std::io::Error>,
    status: Option<Status>,
}

impl Console {
    /// `json_lines`: a file to create, `-` for standard output, or none.
    /// A status line is drawn when standard error is a terminal.
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
            status: None,
        })
    }

    /// From now on, while `total` cases run, a status line on a terminal
    /// (none when standard error is not one).
    pub fn start(&mut self, total: usize) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(250));
        let status = Status {
            bar,
            running: Vec::new(),
            done: 0,
            total,
            began: Instant::now(),
        };
        status.show();
        self.status = Some(status);
    }

    /// A line above the status line (which is redrawn under it).
    pub fn say(&self, line: &str) {
        let print = || {
            if self.to_stderr {
                eprintln!("{line}")
            } else {
                println!("{line}")
            }
        };
        match &self.status {
            Some(s) => s.bar.suspend(print),
            None => print(),
        }
    }

    /// What the run told of its cases: one started, or one finished (its
    /// line printed, its JSON line written).
    pub fn progress(&mut self, p: Progress) {
        match p {
            Progress::Started(id) => {
                if let Some(s) = self.status.as_mut() {
                    s.running.push(id.to_string());
                    s.show();
                }
            }
            Progress::Finished(id, r) => {
                if let Some(s) = self.status.as_mut() {
                    s.running.retain(|x| x != id);
                    s.done += 1;
                    s.show();
                }
                self.case(r);
            }
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

    /// The cases have all run: the status line goes.
    pub fn stop(&mut self) {
        if let Some(s) = self.status.take() {
            s.bar.finish_and_clear();
        }
    }

    /// The stream's first write error, if any.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.stop();
        self.failed.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_names_a_few_running_cases_and_counts_the_rest() {
        let running: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        assert_eq!(
            status_line(&running, 12, 30, Duration::from_millis(14_900)),
            "running a, b, c (+2 more) · 12/30 done · 14 s"
        );
        assert_eq!(
            status_line(&running[..1], 29, 30, Duration::ZERO),
            "running a · 29/30 done · 0 s"
        );
        assert_eq!(
            status_line(&[], 30, 30, Duration::from_secs(61)),
            "30/30 done · 61 s"
        );
    }

    #[test]
    fn off_a_terminal_a_run_prints_plain_lines_only() {
        // Under the test harness standard error is captured, not a terminal.
        let mut console = Console::new(None).unwrap();
        console.start(2);
        assert!(console.status.is_none() || std::io::stderr().is_terminal());
    }
}
