//! The command line: every flag, its default, and the checks that reject nonsense before any
//! connection is made.

use clap::{Parser, ValueEnum};
use std::time::Duration;

/// Load a relay (or a baseline speaking its protocol) on this machine and measure it.
///
/// Modes: by default a sustained run (binaries × phones, probes both ways at --rate for
/// --duration, latency percentiles, frames lost, refusals by close code); --idle N (open N
/// connections, hold them, report the target's RSS and the setup rate); --search (the highest
/// offered rate with 0 lost and p99 within --max-p99). Every mode stops by itself.
///
/// Exit status: 0 done; 1 frames lost, echoes missing or (--strict) connections refused;
/// 2 bad arguments; 3 could not connect at all, or a worker failed.
#[derive(Debug, Parser)]
#[command(name = "relay-loadgen", version, about, long_about)]
pub struct Args {
    /// The target's base URL (loopback only): ws://HOST:PORT, or wss://HOST:PORT.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    pub url: String,
    /// For wss:// targets: also trust the CA certificates in this PEM file (the system's roots
    /// are always trusted).
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<std::path::PathBuf>,
    /// Start a relay in this process (on a free port) instead of using --url.
    #[arg(long, conflicts_with = "url")]
    pub in_process: bool,
    /// With --in-process: phones per server-id the relay accepts (0 = unlimited).
    #[arg(long, default_value_t = 16, requires = "in_process")]
    pub max_phones: usize,
    /// Server-ids (one binary each). Default: 4, or 1 with --idle.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub binaries: Option<u64>,
    /// Phones per binary (sustained and search modes).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub phones: u64,
    /// Offered frames per second in each direction, over all phones together.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: u64,
    /// How long the sustained run sends, e.g. 10s or 500ms.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub duration: Duration,
    /// Bytes per probe frame (the frame a phone sends and a binary addresses to a phone).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(64..=262_144))]
    pub frame_size: u64,
    /// After sending: how long to wait for frames in flight before counting the rest as lost.
    #[arg(long, default_value = "5s", value_parser = positive_duration)]
    pub drain: Duration,

    /// Idle mode: open this many connections, hold them, report RSS and setup rate.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "search")]
    pub idle: Option<u64>,
    /// Idle mode: what the connections are (phones spread over --binaries, or binaries alone).
    #[arg(long, value_enum, default_value_t = IdleAs::Phones, requires = "idle")]
    pub idle_as: IdleAs,
    /// Idle mode: how long to hold the connections before reading RSS.
    #[arg(long, default_value = "3s", value_parser = positive_duration, requires = "idle")]
    pub hold: Duration,
    /// Idle mode: then have every phone send one frame its binary sends back (at most 5,000
    /// frames/s in all, so that no burst meets the target's overload policy), and read RSS again.
    #[arg(long, requires = "idle")]
    pub idle_frame: bool,
    /// Idle mode: the target's process id, for its RSS (default: this process with
    /// --in-process).
    #[arg(long)]
    pub target_pid: Option<u32>,

    /// Search mode: find the highest offered rate with 0 lost and p99 within --max-p99.
    #[arg(long)]
    pub search: bool,
    /// Search mode: the first rate tried (frames/s each way).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..), requires = "search")]
    pub start_rate: u64,
    /// Search mode: how long each step sends.
    #[arg(long, default_value = "3s", value_parser = positive_duration, requires = "search")]
    pub step: Duration,
    /// Search mode: how many rates to try at most.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=40), requires = "search")]
    pub steps: u32,
    /// Search mode: how many more times a failed rate is tried (it passes if any try passes).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=5), requires = "search")]
    pub retries: u32,
    /// Search mode: decide each rate by a majority of N tries instead of --retries (N odd; it
    /// stops as soon as more than half passed or more than half failed).
    #[arg(long, value_name = "N", value_parser = odd_tries, requires = "search", conflicts_with = "retries")]
    pub tries: Option<u32>,
    /// Search mode: also search this target (repeatable), interleaved with --url: every target
    /// holds its own connections, and the targets run their steps in turn (each with its own
    /// schedule), so that a change in the machine's load falls on all of them alike; then each
    /// at half its own rate and each at half --url's rate. The report has one search per target.
    #[arg(
        long,
        value_name = "URL",
        requires = "search",
        conflicts_with = "in_process"
    )]
    pub versus: Vec<String>,
    /// Search mode with --versus: how many times every target runs at half --url's rate, in
    /// turn (the median is reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9), requires = "versus")]
    pub latency_rounds: u32,
    /// Search mode: the p99 latency a step must stay within (both directions).
    #[arg(long, default_value = "50ms", value_parser = positive_duration, requires = "search")]
    pub max_p99: Duration,

    /// Split the connections over this many worker processes (each has its own descriptor
    /// limit); 1 = all in this process.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub procs: u64,
    /// Spread client sockets over this many loopback source addresses (127.0.0.1 and up), past
    /// one address's ephemeral ports.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..=250))]
    pub sources: u8,
    /// Connection attempts in flight at once, per process.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub concurrency: u64,
    /// How long one connection attempt (TCP connect and upgrade) may take.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    pub connect_timeout: Duration,

    /// Print the report as one JSON object on stdout (the human table goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Also fail (exit 1) if any connection was refused or closed by the target.
    #[arg(long)]
    pub strict: bool,
    /// Internal: run as a worker of another relay-loadgen (commands on stdin).
    #[arg(long, hide = true)]
    pub worker: bool,
}

/// What idle connections are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IdleAs {
    /// Phones, spread over --binaries binaries.
    Phones,
    /// Binaries, each on its own server-id.
    Binaries,
}

/// The mode a command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Sustained rate for a duration.
    Sustained,
    /// Open and hold connections.
    Idle(u64),
    /// Search the sustainable rate.
    Search,
}

impl Args {
    /// The mode asked for.
    pub fn mode(&self) -> Mode {
        match (self.idle, self.search) {
            (Some(n), _) => Mode::Idle(n),
            (None, true) => Mode::Search,
            (None, false) => Mode::Sustained,
        }
    }

    /// The number of binaries (its default depends on the mode).
    pub fn binaries(&self) -> u64 {
        self.binaries
            .unwrap_or(if self.idle.is_some() { 1 } else { 4 })
    }

    /// Checks what clap cannot see flag by flag; the message names the offending flags.
    ///
    /// # Errors
    ///
    /// A combination that makes no sense.
    pub fn check(&self) -> Result<(), String> {
        if self.idle_frame && self.idle_as == IdleAs::Binaries {
            return Err("--idle-frame needs phones (a binary alone has no one to send to): drop --idle-as binaries".into());
        }
        if self.target_pid.is_some() && self.in_process {
            return Err(
                "--target-pid and --in-process both name the target's process: give one".into(),
            );
        }
        if let Mode::Idle(n) = self.mode() {
            if self.idle_as == IdleAs::Phones && self.binaries() > n {
                return Err(format!(
                    "--binaries {} is more than --idle {n}: every binary needs at least one phone",
                    self.binaries()
                ));
            }
        }
        Ok(())
    }
}

/// An odd number of tries from 1 to 9 (a majority of an even number can tie).
fn odd_tries(text: &str) -> Result<u32, String> {
    let n: u32 = text.parse().map_err(|e| format!("{e}"))?;
    if n % 2 == 0 || n > 9 {
        return Err(format!(
            "{n}: must be odd (a majority of an even number can tie) and at most 9"
        ));
    }
    Ok(n)
}

/// A humantime duration (`10s`, `500ms`, `1m 30s`) greater than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| format!("{e}"))?;
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("relay-loadgen").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn zero_rates_counts_and_durations_are_refused() {
        for bad in [
            &["--rate", "0"][..],
            &["--phones", "0"],
            &["--binaries", "0"],
            &["--duration", "0s"],
            &["--idle", "0"],
            &["--procs", "0"],
            &["--frame-size", "10"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn tries_are_odd_and_exclude_retries() {
        assert_eq!(parse(&["--search", "--tries", "3"]).unwrap().tries, Some(3));
        assert_eq!(parse(&["--search"]).unwrap().tries, None);
        for bad in ["0", "2", "11", "x"] {
            assert!(
                parse(&["--search", "--tries", bad]).is_err(),
                "--tries {bad}"
            );
        }
        assert!(parse(&["--search", "--tries", "3", "--retries", "1"]).is_err());
        assert!(parse(&["--tries", "3"]).is_err(), "search mode only");
    }

    #[test]
    fn durations_are_humantime_and_reject_bare_numbers() {
        assert_eq!(
            parse(&["--duration", "1m 30s"]).unwrap().duration,
            Duration::from_secs(90)
        );
        assert!(parse(&["--duration", "30"]).is_err());
        assert!(parse(&["--duration", "307445734561825861m"]).is_err());
    }

    #[test]
    fn the_mode_follows_the_flags_and_binaries_default_by_mode() {
        let sustained = parse(&[]).unwrap();
        assert_eq!(
            (sustained.mode(), sustained.binaries()),
            (Mode::Sustained, 4)
        );
        let idle = parse(&["--idle", "100"]).unwrap();
        assert_eq!((idle.mode(), idle.binaries()), (Mode::Idle(100), 1));
        assert_eq!(parse(&["--search"]).unwrap().mode(), Mode::Search);
        assert!(parse(&["--idle", "5", "--search"]).is_err());
    }

    #[test]
    fn combinations_without_meaning_are_refused() {
        let binaries_echo =
            parse(&["--idle", "5", "--idle-as", "binaries", "--idle-frame"]).unwrap();
        assert!(binaries_echo.check().is_err());
        let more_binaries = parse(&["--idle", "5", "--binaries", "6"]).unwrap();
        assert!(more_binaries.check().is_err());
        assert!(parse(&["--in-process", "--url", "ws://127.0.0.1:1"]).is_err());
        assert!(parse(&["--hold", "1s"]).is_err(), "--hold without --idle");
        assert!(
            parse(&["--versus", "ws://127.0.0.1:1"]).is_err(),
            "--versus without --search"
        );
        let versus = parse(&[
            "--search",
            "--versus",
            "ws://127.0.0.1:1",
            "--versus",
            "ws://127.0.0.1:2",
        ]);
        assert_eq!(versus.unwrap().versus.len(), 2);
    }

    #[test]
    fn help_and_version_name_the_binary() {
        let command = Args::command();
        assert_eq!(command.get_name(), "relay-loadgen");
        assert!(command.render_version().starts_with("relay-loadgen "));
    }
}
