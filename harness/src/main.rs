//! The `scacheck` command line.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use scacheck::check::Checked;
use scacheck::observe::hep::HepListener;
use scacheck::reference::Fault;
use scacheck::replay::ReplayTree;
use scacheck::report;
use scacheck::run::{run_all_reporting, Events, RunOptions, Target};
use scacheck::topology::Topology;

mod cli;

use cli::*;

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
        Command::Serve(args) => serve(args),
        Command::Table {
            reports,
            html: None,
        } => report::table(&reports).map(|table| {
            print!("{table}");
            true
        }),
        Command::Table {
            reports,
            html: Some(page),
        } => report::table_html(&reports, &page).and_then(|html| {
            std::fs::write(&page, html).with_context(|| format!("writing {}", page.display()))?;
            println!("wrote {}", page.display());
            Ok(true)
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
    let loss = match args.loss {
        None => None,
        Some(_) if transport != scacheck::sip::Transport::Udp => {
            anyhow::bail!("--loss is for UDP: over {transport} the transport retransmits")
        }
        Some(percent) => {
            let seed = args.seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            });
            Some(scacheck::sip::loss::Loss::new(percent, seed).map_err(anyhow::Error::msg)?)
        }
    };
    let opts = RunOptions {
        target,
        transport,
        events,
        jobs: args.jobs.map(usize::from),
        loss,
        ..RunOptions::default()
    }
    .with_references()?;
    let described = opts.describe();
    let name = opts.name();
    let dir = args.output.dir();
    let mut console = report::Console::new(args.json_lines.as_deref())?;
    console.say(&format!("target: {described} ({transport})"));
    if let Some(loss) = loss {
        console.say(&format!(
            "the phones drop {}% of their datagrams: --seed {} repeats this run's choices",
            loss.percent, loss.seed
        ));
    }
    console.start(prepared.len());
    let results = runtime.block_on(run_all_reporting(&prepared, &topology, opts, |p| {
        console.progress(p)
    }));
    console.stop();
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

/// Serves until a signal; an error is bad input or a port it cannot have.
fn serve(args: ServeArgs) -> anyhow::Result<bool> {
    let serve = args.serve()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let at = serve.address;
    runtime
        .block_on(serve.run(|line| eprintln!("scacheck serve: {line}")))
        .with_context(|| format!("serving on {at}"))?;
    Ok(true)
}
