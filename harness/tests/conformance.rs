//! Every case in `cases/` as a named trial against the embedded server,
//! over UDP (`<case>`), TCP (`<case>@tcp`) and TLS (`<case>@tls`):
//! `cargo test --test conformance -- answered` runs the matching ones.

mod common;

use libtest_mimic::{Arguments, Trial};
use scacheck::outcome::Verdict;
use scacheck::report;
use scacheck::run::{run_case, RunOptions};
use scacheck::sip::Transport;

fn trials() -> Result<Vec<Trial>, String> {
    let (suite, topology) = common::load()?;
    let mut trials = Vec::new();
    for prepared in suite {
        for transport in [Transport::Udp, Transport::Tcp, Transport::Tls] {
            let name = scacheck::outcome::keyed(&prepared.case.id, transport);
            let (p, topology) = (prepared.clone(), topology.clone());
            trials.push(Trial::test(name, move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                let opts = RunOptions {
                    transport,
                    ..RunOptions::default()
                };
                let result = rt.block_on(run_case(&p, &topology, opts));
                match result.verdict {
                    Verdict::Pass => Ok(()),
                    _ => Err(report::case_text(&result).into()),
                }
            }));
        }
    }
    Ok(trials)
}

fn main() {
    let args = Arguments::from_args();
    // Bad case or golden files are one failing trial that says where.
    let trials = trials().unwrap_or_else(|e| {
        vec![Trial::test("load cases and golden files", move || {
            Err(e.clone().into())
        })]
    });
    libtest_mimic::run(&args, trials).exit();
}
