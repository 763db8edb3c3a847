//! The `scacheck` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use scacheck::check::Checked;
use scacheck::observe::hep::HepListener;
use scacheck::reference::Fault;
use scacheck::replay::ReplayTree;
use scacheck::report;
use scacheck::run::{run_all_reporting, Events, RunOptions, Target};
use scacheck::sip::Transport;
use scacheck::topology::Topology;

/// Conformance tests for SIP servers that implement Shared Call Appearance.
#[derive(Parser)]
#[command(name = "scacheck", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run cases against a target and write a report.
    Run(RunArgs),
    /// List the seeded defects of the embedded server (for --fault).
    Faults,
    /// Print a Markdown table of verdicts per case from report directories,
    /// one column per run (for the README).
    Table {
        /// Report directories (each holds a summary.json).
        #[arg(required = true)]
        reports: Vec<PathBuf>,
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
struct Inputs {
    /// Where the case files are.
    #[arg(long, global = true)]
    cases_dir: Option<PathBuf>,
    /// Where the golden files are.
    #[arg(long, global = true)]
    golden_dir: Option<PathBuf>,
}

impl Inputs {
    fn dirs(&self) -> anyhow::Result<scacheck::suite::Dirs> {
        scacheck::suite::Dirs::resolve(self.cases_dir.clone(), self.golden_dir.clone())
            .context("extracting the built-in suite")
    }
}

/// Where a command writes its report.
#[derive(clap::Args)]
struct Output {
    /// Where to write the report (default: reports/<UTC timestamp>/).
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
}

impl Output {
    fn dir(&self) -> PathBuf {
        report::dir_or_default(self.report_dir.clone())
    }
}

#[derive(Subcommand)]
enum LogCommand {
    /// Diff the T-Library events of a server log against a case's golden
    /// files (every stage, in order, channel by channel).
    Check(LogArgs),
}

#[derive(clap::Args)]
struct LogArgs {
    /// The log file.
    file: PathBuf,
    #[arg(long = "case", value_name = "ID")]
    case_id: String,
    #[command(flatten)]
    inputs: Inputs,
    #[command(flatten)]
    output: Output,
}

#[derive(clap::Args)]
struct GoldenArgs {
    #[command(subcommand)]
    action: GoldenAction,
    #[command(flatten)]
    inputs: Inputs,
}

#[derive(Subcommand)]
enum GoldenAction {
    /// Show every pending golden file as a diff against the golden it replaces.
    Review,
    /// Make pending files the golden files (all, or those of one case's stages).
    Accept { case: Option<String> },
    /// Delete pending files (all, or those of one case's stages).
    Reject { case: Option<String> },
}

#[derive(Subcommand)]
enum PcapCommand {
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
struct ReplayArgs {
    file: PathBuf,
    /// The profile of the server the capture was made on, whose lines and
    /// users it shows (default: the target's).
    #[arg(long, value_name = "embedded|PROFILE")]
    captured_on: Option<String>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct PcapArgs {
    /// The capture (pcap or pcapng).
    file: PathBuf,
    /// The case the capture shows (default: detected, and reported); for
    /// `pcap case`, the new case's id.
    #[arg(long = "case", alias = "id", value_name = "ID")]
    case_id: Option<String>,
    /// `embedded` (DNs are SIP users) or a target profile (its identities
    /// map DNs to SIP users; its deviations apply).
    #[arg(long, default_value = "embedded", value_name = "embedded|PROFILE")]
    target: String,
    #[command(flatten)]
    inputs: Inputs,
    #[command(flatten)]
    output: Output,
}

#[derive(clap::Args)]
struct RunArgs {
    /// What to test: `embedded` (an in-process reference server per case),
    /// or a target profile (fixtures/targets/<name>/target.toml).
    #[arg(long, default_value = "embedded", value_name = "embedded|PROFILE")]
    target: String,
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
    events: String,
    /// Override the profile's server address (IP:port).
    #[arg(long, value_name = "IP:PORT")]
    address: Option<std::net::SocketAddr>,
    /// Only cases whose id matches: a substring or a pattern with '*' (several: a,b).
    #[arg(long, value_name = "PATTERN")]
    cases: Option<String>,
    #[command(flatten)]
    inputs: Inputs,
    #[command(flatten)]
    output: Output,
    /// Start the embedded server with a seeded defect (see `scacheck faults`).
    #[arg(long, value_name = "NAME")]
    fault: Option<String>,
    /// Write what failing cases observed as pending golden files
    /// (`<channel>.jsonl.new`) for `scacheck golden review/accept/reject`;
    /// a case whose golden directories do not exist yet is recorded.
    /// Nothing is written when CI is set.
    #[arg(long)]
    bless: bool,
    /// Also stream one JSON object per finished case to this file (`-`:
    /// standard output; the console lines then go to standard error).
    #[arg(long, value_name = "PATH")]
    json_lines: Option<PathBuf>,
    /// How many cases run at once (default: all; against a profile, one per
    /// line of its pool; 1: one after the other).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    jobs: Option<u16>,
    /// The transport the user agents use (default: udp, or the profile's).
    #[arg(long, value_parser = |s: &str| Transport::parse(s).ok_or("expected udp, tcp or tls"))]
    transport: Option<Transport>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Exit 0: every case as expected; 1: a case failed, xpassed or could
    // not be driven; 2: bad input or usage, said on standard error.
    let outcome = match cli.command {
        Command::Faults => {
            print!("{}", Fault::list());
            Ok(true)
        }
        Command::Table { reports } => report::table(&reports).map(|table| {
            print!("{table}");
            true
        }),
        Command::Pcap(PcapCommand::Check(args)) => pcap_check(args),
        Command::Pcap(PcapCommand::Case(args)) => pcap_case(args),
        Command::Pcap(PcapCommand::Replay(args)) => pcap_replay(args),
        Command::Log(LogCommand::Check(args)) => log_check(args),
        Command::Golden(args) => golden(args).map(|()| true),
        Command::Run(args) => run(args),
    };
    match outcome {
        Ok(expected) => ExitCode::from(if expected { 0 } else { 1 }),
        Err(e) => {
            eprintln!("scacheck: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Checks a capture; returns whether its verdict is an expected one.
fn pcap_check(args: PcapArgs) -> anyhow::Result<bool> {
    let dirs = args.inputs.dirs()?;
    let (file, case) = (&args.file, args.case_id.as_deref());
    let c = scacheck::check::check_file(file, case, &dirs, &args.target, &Topology::reference())?;
    print!("{}", c.said);
    finish(&args.output, &c)
}

/// Makes a capture into a case of the suite's directories.
fn pcap_case(args: PcapArgs) -> anyhow::Result<bool> {
    let (dirs, topology) = (args.inputs.dirs()?, Topology::reference());
    let id = args.case_id.context("pcap case needs --id ID")?;
    let made = scacheck::replay::record_file(&args.file, &id, &dirs, &args.target, &topology)?;
    print!("{made}");
    Ok(true)
}

/// Runs a capture's flow, made into a case, and its reference case.
fn pcap_replay(r: ReplayArgs) -> anyhow::Result<bool> {
    let mut args = r.run;
    let dirs = args.inputs.dirs()?;
    let on = r.captured_on.as_deref().unwrap_or(&args.target);
    let tree = ReplayTree::make(&r.file, &dirs, on, &Topology::reference())?;
    print!("{tree}");
    args.inputs.cases_dir = Some(tree.dirs.cases.clone());
    args.inputs.golden_dir = Some(tree.dirs.golden.clone());
    args.cases = Some(tree.cases());
    run(args)
}

/// Writes a check's report and prints its lines; whether all is expected.
fn finish(output: &Output, c: &Checked) -> anyhow::Result<bool> {
    let dir = output.dir();
    let said = c
        .write_report(&dir)
        .with_context(|| format!("writing the report to {}", dir.display()))?;
    print!("{said}");
    Ok(c.expected())
}

/// Checks a server log; returns whether its verdict is an expected one.
fn log_check(args: LogArgs) -> anyhow::Result<bool> {
    let dirs = args.inputs.dirs()?;
    let c =
        scacheck::check::check_log_file(&args.file, &args.case_id, &dirs, &Topology::reference())?;
    print!("{}", c.said);
    finish(&args.output, &c)
}

/// The pending-golden workflow.
fn golden(args: GoldenArgs) -> anyhow::Result<()> {
    let settle = match args.action {
        GoldenAction::Review => None,
        GoldenAction::Accept { case } => Some((case, true)),
        GoldenAction::Reject { case } => Some((case, false)),
    };
    let dirs = args.inputs.dirs()?;
    for line in scacheck::bless::command(&dirs, &Topology::reference(), settle)? {
        println!("{line}");
    }
    Ok(())
}

/// Returns whether every case passed; an error is bad input or usage.
fn run(args: RunArgs) -> anyhow::Result<bool> {
    let topology = Topology::reference();
    let dirs = args.inputs.dirs()?;
    let target = Target::from_flags(&args.target, args.address, args.fault.as_deref(), |path| {
        dirs.target(path, &topology)
    })?;
    let prepared = dirs.load(&topology, args.cases.as_deref(), args.bless)?;
    let transport = RunOptions::transport_for(&target, args.transport);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let events = Events::parse(&args.events, &target, |at| {
        runtime.block_on(HepListener::bind(at))
    })?;
    let opts = RunOptions {
        target,
        transport,
        events,
        jobs: args.jobs.map(usize::from),
        ..RunOptions::default()
    }
    .with_references()?;
    let described = opts.describe();
    let name = opts.name();
    let dir = args.output.dir();
    let mut console = report::Console::new(args.json_lines.as_deref())?;
    console.say(&format!("target: {described} ({transport})"));
    let results = runtime.block_on(run_all_reporting(&prepared, &topology, opts, |r| {
        console.case(r)
    }));
    let say = |line: &str| console.say(line);
    say(&report::console_summary(&results));
    report::write(&dir, &name, &described, &results)
        .with_context(|| format!("writing the report to {}", dir.display()))?;
    say(&format!("report: {}", dir.display()));
    if args.bless {
        scacheck::bless::bless_all(&prepared, &results, &dirs.golden)?
            .iter()
            .for_each(|line| say(line));
    }
    console.finish().context("writing the JSON-lines stream")?;
    Ok(results.iter().all(|r| r.verdict.expected()))
}
