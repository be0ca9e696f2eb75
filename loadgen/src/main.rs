//! `relay-loadgen`: loads a relay on this machine — ours, the Go baseline or the bare forwarder
//! (`relay/examples/bare_forwarder.rs`), anything speaking enough of `relay/PROTOCOL.md` — and
//! measures it. A benchmark tool, not a test; every mode is bounded in time and stops by itself.
//!
//! ```text
//! cargo run --release -p relay-loadgen -- --in-process --duration 5s
//! relay-loadgen --url ws://127.0.0.1:8080 --binaries 200 --phones 4 --rate 10000 --duration 10s
//! relay-loadgen --url ws://127.0.0.1:8080 --idle 10000 --idle-frame --target-pid PID
//! relay-loadgen --url ws://127.0.0.1:8080 --search --binaries 200 --phones 4
//! relay-loadgen --url ws://127.0.0.1:8080 --search --versus ws://127.0.0.1:9000 --json
//! relay-loadgen ... --procs 2 --json
//! ```
//!
//! Modes:
//! - **sustained** (default): B binaries × P phones; each phone sends probes to its binary and
//!   the binary sends probes to each phone, `--rate` frames/s each way in total; latency from each
//!   probe's *scheduled* send time to its arrival (hdrhistogram), frames lost after a drain, and
//!   connections refused by status or close code (a phone over the cap is "refused close 4429",
//!   never "lost").
//! - **idle** (`--idle N`): N phones spread over B binaries (or N binaries alone), held for
//!   `--hold`; the target's RSS (`/proc/PID/status`, `--target-pid` or the in-process relay)
//!   before and after, per connection, and the setup rate; `--idle-frame` then has every phone
//!   send one frame its binary sends back, and reads RSS again.
//! - **search** (`--search`): steps of `--step` at rates doubling from `--start-rate`, then
//!   bisecting, for the highest offered rate with 0 lost, nothing closed and p99 ≤ `--max-p99`
//!   (a failed rate is tried `--retries` more times, or every rate decided by a majority of
//!   `--tries N`); then one step at half that rate. With
//!   `--versus URL` (repeatable) the targets are searched interleaved — their steps in turn, each
//!   with its own schedule — so that the ratio between them is measured under the same load of
//!   the machine; then each at half the first target's rate too.
//!
//! Client sockets are bound to 127.0.0.1 … 127.0.0.`--sources` in turn (each loopback address
//! has its own ~28k ephemeral ports); `--procs K` re-executes this binary as K workers (each has
//! its own descriptor limit) and merges their reports. `--json` prints one JSON object.
//!
//! Module map: `cli` (flags) → `modes` (what the coordinator asks, in order) → `workers` (the
//! parts, here or in worker processes) → `part` (one process's connections, each a task of
//! `part::connection`) → `client` (one connection attempt) and `frames` (what is sent); `plan`
//! is the coordinator–part vocabulary, `hist` the latency histogram, `report` the output,
//! `target` the target's address, RSS and descriptor limit (and the relay started in this
//! process with `--in-process`, built with the `in-process` feature).

mod cli;
mod client;
mod frames;
mod hist;
mod modes;
mod part;
mod plan;
mod report;
mod target;
mod tls;
mod workers;

use clap::{CommandFactory, Parser};
use cli::{Args, IdleAs, Mode};
use modes::{Failure, Run, Tries};
use plan::{Target, total};
use report::Report;
use std::process::ExitCode;

/// Room left in each process's descriptor limit for everything but client sockets.
const SPARE_FDS: u64 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.worker {
        return match workers::serve().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("relay-loadgen worker: {error}");
                ExitCode::from(3)
            }
        };
    }
    if let Err(message) = args.check() {
        usage_error(&message);
    }
    coordinate(args).await
}

/// Prints a usage error the way clap does and exits with status 2.
fn usage_error(message: &str) -> ! {
    Args::command()
        .error(clap::error::ErrorKind::ArgumentConflict, message)
        .exit()
}

/// How many client sockets the run opens in all.
fn planned_connections(args: &Args) -> u64 {
    match args.mode() {
        Mode::Idle(n) if args.idle_as == IdleAs::Binaries => n,
        Mode::Idle(n) => n + args.binaries(),
        Mode::Sustained | Mode::Search => args.binaries() * (1 + args.phones),
    }
}

async fn coordinate(args: Args) -> ExitCode {
    let mode = args.mode();
    let in_process = if args.in_process {
        match target::InProcess::start(args.max_phones).await {
            Ok(relay) => Some(relay),
            Err(error) => {
                eprintln!("relay-loadgen: cannot start the in-process relay: {error}");
                return ExitCode::from(3);
            }
        }
    } else {
        None
    };
    let url = in_process
        .as_ref()
        .map_or_else(|| args.url.clone(), target::InProcess::url);
    let (addr, base) = match target::resolve(&url).await {
        Ok(resolved) => resolved,
        Err(message) => usage_error(&message),
    };
    let mut versus = Vec::with_capacity(args.versus.len());
    for url in &args.versus {
        match target::resolve(url).await {
            Ok(resolved) => versus.push(resolved),
            Err(message) => usage_error(&message.replace("--url", "--versus")),
        }
    }
    let procs = args.procs;
    // With an in-process relay and no workers, both ends of every connection are here.
    let sockets_per_conn = if in_process.is_some() && procs == 1 {
        2
    } else {
        1
    };
    let per_process =
        planned_connections(&args).div_ceil(procs) * sockets_per_conn * (1 + versus.len() as u64);
    if let Some(limit) = target::open_files_limit() {
        if per_process + SPARE_FDS > limit {
            usage_error(&format!(
                "{per_process} sockets in one process would pass its descriptor limit of {limit}: \
                 raise --procs (each worker has its own limit){}",
                if in_process.is_some() {
                    ", or run the relay as its own process"
                } else {
                    ""
                }
            ));
        }
    }
    let pid = args
        .target_pid
        .or(in_process.as_ref().map(|_| std::process::id()));
    if in_process.is_some() && procs == 1 && matches!(mode, Mode::Idle(_)) {
        eprintln!(
            "relay-loadgen: note: the in-process relay's RSS includes this process's own client connections; use --procs 2 to hold them in workers"
        );
    }
    let target = Target {
        addr,
        url: base,
        ca_file: args.ca_file.clone(),
        sources: args.sources,
        frame_size: args.frame_size as usize,
        connect_timeout_ms: args.connect_timeout.as_millis() as u64,
        concurrency: args.concurrency as usize,
    };
    let mut targets = vec![target.clone()];
    targets.extend(versus.into_iter().map(|(addr, url)| Target {
        addr,
        url,
        ..target.clone()
    }));
    let mut runs = Vec::with_capacity(targets.len());
    for target in targets {
        let parts = match workers::Parts::start(&target, procs as usize, |k| k as u64).await {
            Ok(parts) => parts,
            Err(error) => {
                eprintln!("relay-loadgen: {error}");
                return ExitCode::from(3);
            }
        };
        runs.push(Run {
            target,
            parts,
            pid,
            run_id: format!("{:08x}", getrandom::u32().unwrap_or(0)),
            binaries: args.binaries(),
            phones: args.phones,
            procs,
            drain: args.drain,
            connect_timeout: args.connect_timeout,
        });
    }
    if runs.len() > 1 {
        let (start, steps) = (args.start_rate, args.steps);
        let result = modes::compare(
            &mut runs,
            start,
            steps,
            tries(&args),
            args.step,
            args.max_p99,
            args.latency_rounds,
        )
        .await;
        for run in runs {
            run.parts.stop().await;
        }
        return finish(result.map(Report::Compare), args.json, args.strict);
    }
    let mut run = runs.pop().expect("one target");
    let result = match mode {
        Mode::Sustained => run.sustained(args.rate, args.duration).await,
        Mode::Idle(n) => {
            let as_binaries = args.idle_as == IdleAs::Binaries;
            run.idle(n, as_binaries, args.hold, args.idle_frame).await
        }
        Mode::Search => {
            let (start, steps) = (args.start_rate, args.steps);
            run.search(start, steps, tries(&args), args.step, args.max_p99)
                .await
        }
    };
    run.parts.stop().await;
    if let Some(relay) = in_process {
        relay.stop().await;
    }
    finish(result, args.json, args.strict)
}

/// Prints the report (or why there is none) and turns it into the exit status.
fn finish(result: Result<Report, Failure>, json: bool, strict: bool) -> ExitCode {
    match result {
        Ok(report) => {
            let human = report.human();
            if json {
                eprintln!("{human}");
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("reports serialize")
                );
            } else {
                println!("{human}");
            }
            match verdict(&report, strict) {
                Ok(()) => ExitCode::SUCCESS,
                Err(why) => {
                    eprintln!("relay-loadgen: {why}");
                    ExitCode::from(1)
                }
            }
        }
        Err(Failure::CannotConnect(message)) => {
            eprintln!("relay-loadgen: {message}");
            ExitCode::from(3)
        }
        Err(Failure::Part(message)) => {
            eprintln!("relay-loadgen: a part failed: {message}");
            ExitCode::from(3)
        }
    }
}

/// Whether the run's outcome is a failure for a script: frames lost, echoes missing, a search
/// with no passing step; with `strict`, any refusal, failed attempt or close by the target.
fn verdict(report: &Report, strict: bool) -> Result<(), String> {
    match report {
        Report::Sustained(r) => {
            if r.step.lost() > 0 {
                return Err(format!("{} frames were lost", r.step.lost()));
            }
            if strict {
                for setup in [&r.binaries_setup, &r.phones_setup] {
                    if setup.accepted < setup.attempted {
                        return Err(format!(
                            "--strict: {} of {} connections were not accepted",
                            setup.attempted - setup.accepted,
                            setup.attempted
                        ));
                    }
                }
                if total(&r.step.closed) > 0 {
                    return Err(format!("--strict: the target closed {:?}", r.step.closed));
                }
            }
            Ok(())
        }
        Report::Idle(r) => {
            if let Some(frame) = &r.after_frame {
                if frame.received < frame.sent || frame.sent < r.setup.accepted {
                    return Err(format!(
                        "{} phones held, {} sent their frame, {} got it back",
                        r.setup.accepted, frame.sent, frame.received
                    ));
                }
            }
            if strict && r.setup.accepted < r.requested {
                return Err(format!(
                    "--strict: {} of {} connections were not accepted",
                    r.requested - r.setup.accepted,
                    r.requested
                ));
            }
            if strict {
                if let Some(frame) = r.after_frame.as_ref().filter(|f| !f.closed.is_empty()) {
                    return Err(format!("--strict: the target closed {:?}", frame.closed));
                }
            }
            Ok(())
        }
        Report::Search(r) => match r.sustainable_per_s {
            Some(_) => Ok(()),
            None => Err("no step of the search passed".to_owned()),
        },
        Report::Compare(c) => match c.searches.iter().find(|r| r.sustainable_per_s.is_none()) {
            None => Ok(()),
            Some(r) => Err(format!(
                "no step of the search of {} passed",
                r.shape.target
            )),
        },
    }
}

/// How the search decides a rate: a majority of `--tries`, or `--retries`.
fn tries(args: &Args) -> Tries {
    match args.tries {
        Some(of) => Tries::Majority(of),
        None => Tries::Retries(args.retries),
    }
}
