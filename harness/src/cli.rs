//! The `scacheck` command line's arguments (clap definitions); main.rs
//! dispatches them.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use scacheck::report;
use scacheck::sip::Transport;

/// Conformance tests for SIP servers that implement Shared Call Appearance.
#[derive(Parser)]
#[command(name = "scacheck", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run cases against a target and write a report.
    Run(RunArgs),
    /// List the seeded defects of the embedded server (for --fault).
    Faults,
    /// Run the embedded server on its own, for phones that are not
    /// scacheck's, until SIGTERM or SIGINT (exit 0); logs to standard error.
    Serve(ServeArgs),
    /// Print a Markdown table of verdicts per case from report directories,
    /// one column per run (for the README); with --html, write a page of it
    /// whose cells open that case in that run's report.
    Table {
        /// Report directories (each holds a summary.json).
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        /// Write the matrix as an HTML page to FILE (instead of printing
        /// Markdown).
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
    },
    /// Captures: check one against a case's golden files.
    #[command(subcommand)]
    Pcap(PcapCommand),
    /// Pending golden files written by `run --bless`: review, accept, reject.
    Golden(GoldenArgs),
    /// Genesys SIP Server / T-Server logs.
    #[command(subcommand)]
    Log(LogCommand),
}

/// Where a command finds the suite (default: `cases/` and
/// `fixtures/golden/` of the checkout it runs in, else the built-in suite).
#[derive(clap::Args)]
pub struct Inputs {
    /// Where the case files are.
    #[arg(long, global = true)]
    pub cases_dir: Option<PathBuf>,
    /// Where the golden files are.
    #[arg(long, global = true)]
    pub golden_dir: Option<PathBuf>,
}

impl Inputs {
    pub fn dirs(&self) -> anyhow::Result<scacheck::suite::Dirs> {
        scacheck::suite::Dirs::resolve(self.cases_dir.clone(), self.golden_dir.clone())
            .context("extracting the built-in suite")
    }
}

/// Where a command writes its report.
#[derive(clap::Args)]
pub struct Output {
    /// Where to write the report (default: reports/<UTC timestamp>/).
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
}

impl Output {
    pub fn dir(&self) -> PathBuf {
        report::dir_or_default(self.report_dir.clone())
    }
}

#[derive(Subcommand)]
pub enum LogCommand {
    /// Diff the T-Library events of a server log against a case's golden
    /// files (every stage, in order, channel by channel).
    Check(LogArgs),
}

#[derive(clap::Args)]
pub struct LogArgs {
    /// The log file.
    pub file: PathBuf,
    #[arg(long = "case", value_name = "ID")]
    pub case_id: String,
    #[command(flatten)]
    pub inputs: Inputs,
    #[command(flatten)]
    pub output: Output,
}

#[derive(clap::Args)]
pub struct GoldenArgs {
    #[command(subcommand)]
    pub action: GoldenAction,
    #[command(flatten)]
    pub inputs: Inputs,
}

#[derive(Subcommand)]
pub enum GoldenAction {
    /// Show every pending golden file as a diff against the golden it replaces.
    Review,
    /// Make pending files the golden files (all, or those of one case's stages).
    Accept { case: Option<String> },
    /// Delete pending files (all, or those of one case's stages).
    Reject { case: Option<String> },
}

#[derive(Subcommand)]
pub enum PcapCommand {
    /// Check a pcap or pcapng file: find the phones, derive the events,
    /// split them into the case's stages and report exactly like a run.
    Check(PcapArgs),
    /// Make a capture into a case (`--id ID`): each phone's actions as its
    /// steps, goldens recorded from what the captured server did.
    Case(PcapArgs),
    /// Re-drive a target with a capture: its flow made into a case, judged
    /// against what the captured server did and its reference case's goldens.
    Replay(ReplayArgs),
}

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The capture (pcap or pcapng): every flow in it is replayed.
    pub file: PathBuf,
    /// The profile of the server the capture was made on, whose lines and
    /// users it shows (default: the target's).
    #[arg(long, value_name = "embedded|PROFILE")]
    pub captured_on: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(clap::Args)]
pub struct PcapArgs {
    /// The capture (pcap or pcapng).
    pub file: PathBuf,
    /// The case the capture shows (default: detected, and reported); for
    /// `pcap case`, the new case's id.
    #[arg(long = "case", alias = "id", value_name = "ID")]
    pub case_id: Option<String>,
    /// `embedded` (DNs are SIP users) or a target profile (its identities
    /// map DNs to SIP users; its deviations apply).
    #[arg(long, default_value = "embedded", value_name = "embedded|PROFILE")]
    pub target: String,
    #[command(flatten)]
    pub inputs: Inputs,
    #[command(flatten)]
    pub output: Output,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// What to test: `embedded` (an in-process reference server per case),
    /// or a target profile (fixtures/targets/<name>/target.toml).
    #[arg(long, default_value = "embedded", value_name = "embedded|PROFILE")]
    pub target: String,
    /// Where a real target's T-Library events come from: `sip` (derived from
    /// the phones' SIP), `feed:IP:PORT` (a JSON-lines event feed, see
    /// docs/event-feed.md), `tlib-log:PATH` (a SIP Server log the target
    /// writes as it runs, followed), or `hep:IP:PORT` (derived from the SIP
    /// the server mirrors there over HEPv3: the server's own view).
    #[arg(
        long,
        default_value = "sip",
        value_name = "sip|feed:IP:PORT|tlib-log:PATH|hep:IP:PORT"
    )]
    pub events: String,
    /// Override the profile's server address (IP:port).
    #[arg(long, value_name = "IP:PORT")]
    pub address: Option<std::net::SocketAddr>,
    /// Only cases whose id matches: a substring, a pattern with '*', or
    /// =ID for that id alone (several: a,b).
    #[arg(long, value_name = "PATTERN")]
    pub cases: Option<String>,
    #[command(flatten)]
    pub inputs: Inputs,
    #[command(flatten)]
    pub output: Output,
    /// Start the embedded server with a seeded defect (see `scacheck faults`).
    #[arg(long, value_name = "NAME")]
    pub fault: Option<String>,
    /// Write what failing cases observed as pending golden files
    /// (`<channel>.jsonl.new`) for `scacheck golden review/accept/reject`;
    /// a case whose golden directories do not exist yet is recorded.
    /// Nothing is written when CI is set.
    #[arg(long)]
    pub bless: bool,
    /// Also stream one JSON object per finished case to this file (`-`:
    /// standard output; the console lines then go to standard error).
    #[arg(long, value_name = "PATH")]
    pub json_lines: Option<PathBuf>,
    /// How many cases run at once (default: all; against a profile, one per
    /// line of its pool; 1: one after the other).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// The transport the user agents use (default: udp, or the profile's).
    #[arg(long, value_parser = |s: &str| Transport::parse(s).ok_or("expected udp, tcp or tls"))]
    pub transport: Option<Transport>,
    /// The phones drop this share (0 to 100, in percent) of the UDP
    /// datagrams they send and receive, as over a bad network; each case's
    /// report names those dropped. UDP only.
    #[arg(long, value_name = "PERCENT")]
    pub loss: Option<f64>,
    /// The seed that picks which datagrams `--loss` drops (default: one
    /// from the clock, printed, so that the run can be repeated).
    #[arg(long, value_name = "N", requires = "loss")]
    pub seed: Option<u64>,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Where its SIP port goes (UDP, TCP and TLS at once; port 0: a free one).
    #[arg(long, default_value = "127.0.0.1:0", value_name = "IP:PORT")]
    pub address: std::net::SocketAddr,
    /// The transport the phones are to use (the port speaks all three).
    #[arg(long, default_value = "udp", value_parser = |s: &str| Transport::parse(s).ok_or("expected udp, tcp or tls"))]
    pub transport: Transport,
    /// Start it with a seeded defect (see `scacheck faults`).
    #[arg(long, value_name = "NAME")]
    pub fault: Option<String>,
    /// Serve a pool of N lines (line K: 60970-K with its phones 60970-K and
    /// 60970_2-K, and 60972-K) instead of the reference's parties.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub lines: Option<u16>,
    /// Its SIP domain.
    #[arg(long, default_value = "sca.test")]
    pub domain: String,
    /// Write the SIP address (IP:PORT) here once it is bound.
    #[arg(long, value_name = "FILE")]
    pub address_file: Option<PathBuf>,
    /// Write its PID here once SIGTERM stops it cleanly.
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
    /// Write the CA that signed the certificate it presents over TLS here.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

impl ServeArgs {
    pub fn serve(self) -> anyhow::Result<scacheck::reference::Serve> {
        let fault = match self.fault.as_deref() {
            Some(name) => Some(
                scacheck::reference::Fault::parse(name)
                    .with_context(|| format!("no fault {name:?}; `scacheck faults` lists them"))?,
            ),
            None => None,
        };
        Ok(scacheck::reference::Serve {
            address: self.address,
            transport: self.transport,
            domain: self.domain,
            fault,
            lines: self.lines.map(usize::from),
            address_file: self.address_file,
            pid_file: self.pid_file,
            ca_file: self.ca_file,
        })
    }
}
