//! `relay-figures`: draws the performance report's figures as SVG from the data file
//! `relay/benches/report.sh` writes (`figures.json`, from the same run as the report's tables).
//!
//! ```text
//! relay-figures --data /tmp/perf/figures.json --out relay/benches/figures
//! ```
//!
//! It writes four files into `--out` (created if missing), each dated by the data's caption:
//! - `latency-plain.svg`, `latency-tls.svg`: p50 and p99 latency against the offered rate of
//!   every step the interleaved searches ran, per target (`ws://`, then `wss://`);
//! - `sustainable.svg`: the sustainable rates side by side, plain TCP and TLS;
//! - `memory.svg`: RSS per connection idle and after one 1 KiB frame each way, plain and TLS,
//!   with each row's target.
//!
//! The data model is in `data`, the drawing (plotters, SVG backend only) in `draw`. A target or a
//! value the run did not measure is left out of its figure, never drawn as zero.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod data;
mod draw;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Draws the performance report's figures (SVG) from report.sh's data file.
#[derive(Debug, Parser)]
#[command(name = "relay-figures", version)]
struct Args {
    /// The data file report.sh wrote (`figures.json`).
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    /// The folder the SVG files go into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let data = match data::Data::read(&args.data) {
        Ok(data) => data,
        Err(message) => {
            eprintln!("relay-figures: {message}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = std::fs::create_dir_all(&args.out) {
        eprintln!(
            "relay-figures: cannot create {}: {error}",
            args.out.display()
        );
        return ExitCode::from(2);
    }
    match draw::all(&data, &args.out) {
        Ok(written) => {
            for path in written {
                eprintln!("relay-figures: wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("relay-figures: {message}");
            ExitCode::from(1)
        }
    }
}
