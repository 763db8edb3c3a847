//! The `scacheck` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use scacheck::case::Case;
use scacheck::observe::hep::HepListener;
use scacheck::reference::Fault;
use scacheck::report;
use scacheck::run::{run_all_reporting, Events, Prepared, RunOptions, Target};
use scacheck::sip::Transport;
use scacheck::target::Profile;
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

/// Where a command finds the suite.
#[derive(clap::Args)]
struct Inputs {
    /// Where the case files are.
    #[arg(long, default_value = "cases", global = true)]
    cases_dir: PathBuf,
    /// Where the golden files are.
    #[arg(long, default_value = "fixtures/golden", global = true)]
    golden_dir: PathBuf,
}

impl Inputs {
    /// The case named `id`.
    fn case(&self, id: &str, topology: &Topology) -> anyhow::Result<Case> {
        Case::load_dir(&self.cases_dir, topology)?
            .into_iter()
            .find(|c| c.id == id)
            .with_context(|| format!("no case {id:?} in {}", self.cases_dir.display()))
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
        self.report_dir
            .clone()
            .unwrap_or_else(|| report::default_dir(&PathBuf::from("reports")))
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
}

#[derive(clap::Args)]
struct PcapArgs {
    /// The capture (pcap or pcapng).
    file: PathBuf,
    /// The case the capture shows (default: detected, and reported).
    #[arg(long = "case", value_name = "ID")]
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

#[derive(Clone, Copy, ValueEnum)]
enum TransportArg {
    Udp,
    Tcp,
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
    /// Only cases whose id matches: a substring, or a pattern with '*'.
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
    /// The transport the user agents use (default: udp, or the profile's).
    #[arg(long, value_enum)]
    transport: Option<TransportArg>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Faults => {
            for f in Fault::ALL {
                println!("{:<26} {}", f.name(), f.description());
            }
            ExitCode::SUCCESS
        }
        Command::Table { reports } => match report::table(&reports) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("scacheck: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Pcap(PcapCommand::Check(args)) => match pcap_check(args) {
            Ok(expected) => ExitCode::from(if expected { 0 } else { 1 }),
            Err(e) => {
                eprintln!("scacheck: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Log(LogCommand::Check(args)) => match log_check(args) {
            Ok(expected) => ExitCode::from(if expected { 0 } else { 1 }),
            Err(e) => {
                eprintln!("scacheck: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Golden(args) => match golden(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("scacheck: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::Run(args) => match run(args) {
            Ok(all_passed) => ExitCode::from(if all_passed { 0 } else { 1 }),
            Err(e) => {
                eprintln!("scacheck: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

/// Does a case id match the user's pattern?
fn matches(pattern: &str, id: &str) -> bool {
    if !pattern.contains('*') {
        return id.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !id.starts_with(first)
        || !id[first.len()..].ends_with(last)
        || id.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &id[first.len()..id.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Loads a target profile and checks its deviations against the whole
/// suite (not only the cases a command selects): every case, stage,
/// channel and golden event a deviation names must exist. A golden
/// directory that does not exist yet (a case being recorded) has no events
/// a deviation could name.
fn load_profile(path: &str, inputs: &Inputs, topology: &Topology) -> anyhow::Result<Profile> {
    let profile = Profile::load(std::path::Path::new(path), topology)?;
    let suite: Vec<Prepared> = Case::load_dir(&inputs.cases_dir, topology)?
        .into_iter()
        .map(|c| Prepared::new_recording(c, &inputs.golden_dir, topology))
        .collect::<Result<_, _>>()?;
    let named: Vec<(&Case, &[scacheck::golden::GoldenStage])> = suite
        .iter()
        .map(|p| (&p.case, p.golden.as_slice()))
        .collect();
    profile.validate(&named)?;
    Ok(profile)
}

/// Checks a capture; returns whether its verdict is an expected one.
fn pcap_check(args: PcapArgs) -> anyhow::Result<bool> {
    use scacheck::check::{check, detect, endpoints, records};
    let topology = Topology::reference();
    let (name, identities, deviations) = if args.target == "embedded" {
        let ids = topology
            .dns()
            .iter()
            .map(|d| (d.to_string(), d.to_string()))
            .collect();
        ("embedded".to_string(), ids, Vec::new())
    } else {
        let profile = load_profile(&args.target, &args.inputs, &topology)?;
        (
            profile.name.clone(),
            profile.identities.clone(),
            profile.deviations.clone(),
        )
    };
    let dn_of_user = scacheck::target::dn_of_user(&identities, &topology);
    let mut reader = scacheck::pcap::Reader::open(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let mut captured = Vec::new();
    let mut broken = None;
    loop {
        match reader.next_packet() {
            Ok(Some(p)) => captured.push(p),
            Ok(None) => break,
            Err(e) => {
                broken = Some(e.to_string());
                break;
            }
        }
    }
    println!(
        "capture: {} SIP messages; skipped: {:?}",
        captured.len(),
        reader.skipped()
    );
    if let Some(e) = &broken {
        println!("capture ends early: {e}");
    }
    let mut cases = Case::load_dir(&args.inputs.cases_dir, &topology)?;
    if let Some(id) = &args.case_id {
        cases.retain(|c| &c.id == id);
        anyhow::ensure!(
            !cases.is_empty(),
            "no case {id:?} in {}",
            args.inputs.cases_dir.display()
        );
    }
    let prepared: Vec<Prepared> = cases
        .into_iter()
        .map(|c| Prepared::new(c, &args.inputs.golden_dir, &topology))
        .collect::<Result<_, _>>()?;
    let who = endpoints(&captured, &topology, &identities);
    let recs = records(&captured, &who);
    // The flow: the given case, or the one the capture's structure shows
    // (never chosen by its verdict).
    let (p, starts) =
        detect(&prepared, &recs, &who, &topology).with_context(|| match &args.case_id {
            Some(c) => format!("case {c}"),
            None => "detecting the flow".to_string(),
        })?;
    let mut result = check(p, recs, &topology, &dn_of_user, &starts, &deviations);
    if args.case_id.is_none() {
        println!("detected case: {}", p.case.id);
    }
    let from = format!("derived from the SIP in {}", args.file.display());
    result.source.source = format!("T-Library events {from}");
    result.source.wire_source = format!("SCA wire layer {from}");
    println!("{}", report::console_line(&result));
    let dir = args.output.dir();
    report::write(
        &dir,
        &name,
        &format!("capture {}", args.file.display()),
        std::slice::from_ref(&result),
    )
    .with_context(|| format!("writing the report to {}", dir.display()))?;
    println!("report: {}", dir.display());
    Ok(result.verdict.expected())
}

/// Checks a server log; returns whether its verdict is an expected one.
fn log_check(args: LogArgs) -> anyhow::Result<bool> {
    use scacheck::observation::Observability;
    use scacheck::observe::tlib_log;
    let topology = Topology::reference();
    let file = &args.file;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let (events, skipped) = tlib_log::read(&String::from_utf8_lossy(&bytes))
        .with_context(|| format!("reading {}", file.display()))?;
    println!("log: {} events; {skipped}", events.len());
    let case = args.inputs.case(&args.case_id, &topology)?;
    let p = Prepared::new(case, &args.inputs.golden_dir, &topology)?;
    let mut source = Observability::everything(&format!("T-Library events in {}", file.display()));
    // A log holds the T-Library channels, not the SIP wire layer.
    source.channels = Some(
        scacheck::golden::channels(&p.case.parties, &topology)
            .into_iter()
            .filter(|c| !matches!(c, scacheck::model::Channel::Wire(_)))
            .collect(),
    );
    let mut result = scacheck::check::check_events(&p, events, source);
    if !skipped.is_empty() {
        result
            .notes
            .push(format!("log {}: {skipped}", file.display()));
    }
    println!("{}", report::console_line(&result));
    let dir = args.output.dir();
    report::write(
        &dir,
        "log",
        &format!("log {}", file.display()),
        std::slice::from_ref(&result),
    )
    .with_context(|| format!("writing the report to {}", dir.display()))?;
    println!("report: {}", dir.display());
    Ok(result.verdict.expected())
}

/// The pending-golden workflow.
fn golden(args: GoldenArgs) -> anyhow::Result<()> {
    use scacheck::bless;
    let topology = Topology::reference();
    let case = |id: &Option<String>| -> anyhow::Result<Option<Prepared>> {
        let Some(id) = id else { return Ok(None) };
        let c = args.inputs.case(id, &topology)?;
        Ok(Some(Prepared::new_recording(
            c,
            &args.inputs.golden_dir,
            &topology,
        )?))
    };
    match &args.action {
        GoldenAction::Review => {
            let files = bless::pending(&args.inputs.golden_dir);
            if files.is_empty() {
                println!(
                    "no pending golden files under {}",
                    args.inputs.golden_dir.display()
                );
            }
            for f in files {
                print!("{}", bless::review(&f));
            }
        }
        GoldenAction::Accept { case: id } | GoldenAction::Reject { case: id } => {
            anyhow::ensure!(
                !bless::in_ci(),
                "CI is set: golden files are not changed in CI"
            );
            let accept = matches!(args.action, GoldenAction::Accept { .. });
            for f in bless::selected(&args.inputs.golden_dir, case(id)?.as_ref()) {
                if accept {
                    std::fs::rename(&f, bless::target_of(&f))
                        .with_context(|| format!("accepting {}", f.display()))?;
                    println!("accepted {}", bless::target_of(&f).display());
                } else {
                    std::fs::remove_file(&f)
                        .with_context(|| format!("rejecting {}", f.display()))?;
                    println!("rejected {}", f.display());
                }
            }
        }
    }
    Ok(())
}

/// The `--events` source of a run. A HEP listener is bound here, once for
/// the whole run, so that a port in use is an error before anything runs.
fn events_source(
    spec: &str,
    target: &Target,
    runtime: &tokio::runtime::Runtime,
) -> anyhow::Result<Events> {
    const EXPECTED: &str = "expected sip, feed:IP:PORT, tlib-log:PATH or hep:IP:PORT";
    if spec == "sip" {
        return Ok(Events::Sip);
    }
    let (kind, value) = spec
        .split_once(':')
        .with_context(|| format!("--events {spec:?}: {EXPECTED}"))?;
    anyhow::ensure!(
        ["feed", "tlib-log", "hep"].contains(&kind),
        "--events {spec:?}: unknown source {kind:?}, {EXPECTED}"
    );
    anyhow::ensure!(
        matches!(target, Target::Remote(_)),
        "--events {kind}: is for a target profile; the embedded server has its own feed"
    );
    let addr = || {
        value
            .parse::<std::net::SocketAddr>()
            .with_context(|| format!("--events {spec:?}: {value:?} is not an IP:PORT"))
    };
    Ok(match kind {
        "feed" => Events::Feed(addr()?),
        "hep" => {
            let at = addr()?;
            let listener = runtime
                .block_on(HepListener::bind(at))
                .with_context(|| format!("--events {spec:?}: cannot listen for HEP on UDP {at}"))?;
            Events::Hep(std::sync::Arc::new(listener))
        }
        _ => {
            let path = std::path::PathBuf::from(value);
            // Followed from its end as it grows: a file that is not there
            // would silently give no events at all.
            anyhow::ensure!(
                path.is_file(),
                "--events {spec:?}: {} is not a file (the log must exist when the run starts)",
                path.display()
            );
            Events::Log(path)
        }
    })
}

/// Returns whether every case passed; an error is bad input or usage.
fn run(args: RunArgs) -> anyhow::Result<bool> {
    let topology = Topology::reference();
    let fault = match &args.fault {
        None => None,
        Some(name) => Some(Fault::parse(name).with_context(|| {
            let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
            format!("unknown fault {name:?} (known: {})", known.join(", "))
        })?),
    };
    let target = if args.target == "embedded" {
        anyhow::ensure!(
            args.address.is_none(),
            "--address is for a target profile, not the embedded server"
        );
        Target::Embedded { fault }
    } else {
        anyhow::ensure!(fault.is_none(), "--fault is for the embedded server only");
        let mut profile = load_profile(&args.target, &args.inputs, &topology)?;
        if let Some(a) = args.address {
            profile.address = a;
        }
        Target::Remote(std::sync::Arc::new(profile))
    };
    let mut cases = Case::load_dir(&args.inputs.cases_dir, &topology)?;
    if let Some(p) = &args.cases {
        cases.retain(|c| matches(p, &c.id));
        anyhow::ensure!(
            !cases.is_empty(),
            "no case in {} matches {p:?}",
            args.inputs.cases_dir.display()
        );
    }
    anyhow::ensure!(
        !cases.is_empty(),
        "no case files (*.toml) in {}",
        args.inputs.cases_dir.display()
    );
    let prepared: Vec<Prepared> = cases
        .into_iter()
        .map(|c| {
            if args.bless {
                Prepared::new_recording(c, &args.inputs.golden_dir, &topology)
            } else {
                Prepared::new(c, &args.inputs.golden_dir, &topology)
            }
        })
        .collect::<Result<_, _>>()?;
    let transport = match args.transport {
        Some(TransportArg::Tcp) => Transport::Tcp,
        _ => Transport::Udp,
    };
    let transport = match (&target, args.transport.is_some()) {
        (Target::Remote(p), false) => p.transport,
        _ => transport,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let events = events_source(&args.events, &target, &runtime)?;
    // A verdict table can hold one target judged from several sources.
    let described = target.describe();
    let mut name = match &events {
        Events::Sip => target.name(),
        Events::Feed(_) => format!("{}+feed", target.name()),
        Events::Log(_) => format!("{}+tlib-log", target.name()),
        Events::Hep(_) => format!("{}+hep", target.name()),
    };
    if transport == Transport::Tcp {
        // As a case run over TCP is keyed `<case>@tcp`.
        name.push_str("@tcp");
    }
    let opts = RunOptions {
        target,
        transport,
        events,
        ..RunOptions::default()
    };
    let dir = args.output.dir();

    // With the JSON stream on standard output, the console goes to stderr.
    let to_stderr = args
        .json_lines
        .as_ref()
        .is_some_and(|p| p.as_os_str() == "-");
    let say = |line: String| {
        if to_stderr {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    say(format!("target: {described} ({transport})"));
    let mut stream: Option<Box<dyn std::io::Write>> = match &args.json_lines {
        None => None,
        Some(p) if p.as_os_str() == "-" => Some(Box::new(std::io::stdout())),
        Some(p) => Some(Box::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
    };
    let mut stream_error = None;
    let results = runtime.block_on(run_all_reporting(&prepared, &topology, opts, |r| {
        say(report::console_line(r));
        if let Some(out) = stream.as_mut() {
            if let Err(e) = out
                .write_all(report::json_line(r).as_bytes())
                .and_then(|_| out.flush())
            {
                stream_error.get_or_insert(e);
            }
        }
    }));
    if let Some(e) = stream_error {
        return Err(e).context("writing the JSON-lines stream");
    }
    say(report::console_summary(&results));
    report::write(&dir, &name, &described, &results)
        .with_context(|| format!("writing the report to {}", dir.display()))?;
    say(format!("report: {}", dir.display()));
    if args.bless {
        if scacheck::bless::in_ci() {
            say("--bless: CI is set, no golden file written".into());
        } else {
            for (p, r) in prepared.iter().zip(&results) {
                for f in scacheck::bless::bless(p, r, &args.inputs.golden_dir)
                    .with_context(|| format!("blessing {}", r.id))?
                {
                    say(format!("pending: {}", f.display()));
                }
            }
            say(
                "review with `scacheck golden review`, then `scacheck golden accept` or `reject`"
                    .into(),
            );
        }
    }
    Ok(results.iter().all(|r| r.verdict.expected()))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns() {
        assert!(matches("answered", "inbound-answered"));
        assert!(matches("inbound-*", "inbound-answered"));
        assert!(matches("*-answered", "inbound-answered"));
        assert!(matches("in*ed", "inbound-answered"));
        assert!(!matches("out*", "inbound-answered"));
        assert!(!matches("inbound-*-x", "inbound-answered"));
        assert!(!matches("ab*ba", "aba"));
    }
}
