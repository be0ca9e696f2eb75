//! `relay-loadgen` end to end: the real binary against an in-process relay (real sockets,
//! loopback), each run short and bounded; assertions on its exit status and its `--json` report,
//! never on a time. The runs with `--in-process` need the binary built with it:
//! `cargo test -p relay-loadgen --features in-process` (without it they are reported ignored).

use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The longest one loadgen run may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

fn loadgen(args: &[&str]) -> Output {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_relay-loadgen"))
        .args(args)
        .output()
        .expect("relay-loadgen runs");
    assert!(
        started.elapsed() < PATIENCE,
        "relay-loadgen {args:?} took {:?}",
        started.elapsed()
    );
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs with `--json` and returns the report, asserting the exit status (any of `statuses`).
fn report_with(args: &[&str], statuses: &[i32]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let output = loadgen(&all);
    let code = output.status.code().unwrap_or(-1);
    assert!(
        statuses.contains(&code),
        "relay-loadgen {all:?} exited {code}: {}",
        stderr(&output)
    );
    serde_json::from_slice(&output.stdout).expect("--json prints one JSON object")
}

fn report(args: &[&str], status: i32) -> Value {
    report_with(args, &[status])
}

#[test]
fn a_url_where_nothing_listens_fails_loudly_instead_of_printing_zeros() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("ws://127.0.0.1:{port}");
    let output = loadgen(&["--url", &url, "--duration", "1s"]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot connect"),
        "{}",
        stderr(&output)
    );
    assert!(output.stdout.is_empty(), "no table of zeros");
}

#[test]
fn nonsense_arguments_are_refused_with_a_clear_error_before_connecting() {
    for (args, flag) in [
        (&["--rate", "0"][..], "--rate"),
        (&["--phones", "0"], "--phones"),
        (&["--duration", "0s"], "--duration"),
        (&["--idle", "0"], "--idle"),
        (&["--url", "ws://192.0.2.1:80"], "loopback"),
    ] {
        let output = loadgen(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains(flag),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn help_and_version_name_the_binary() {
    let version = loadgen(&["--version"]);
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("relay-loadgen "));
    let help = loadgen(&["--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("Usage: relay-loadgen"));
}

#[test]
#[cfg_attr(not(feature = "in-process"), ignore = "needs --features in-process")]
fn phones_over_the_cap_are_refused_4429_per_id_not_lost() {
    let json = report(
        &[
            "--in-process",
            "--binaries",
            "2",
            "--phones",
            "18",
            "--rate",
            "100",
            "--duration",
            "500ms",
        ],
        0,
    );
    let phones = &json["phones_setup"];
    assert_eq!(phones["attempted"], 36);
    assert_eq!(
        phones["refused"]["close 4429"], 4,
        "2 over the cap of 16 per id: {phones}"
    );
    assert_eq!(phones["accepted"], 32);
    let step = &json["step"];
    for direction in ["up", "down"] {
        assert_eq!(step[direction]["lost"], 0, "{step}");
        assert!(step[direction]["received"].as_u64().unwrap() > 0, "{step}");
    }
}

#[test]
#[cfg_attr(not(feature = "in-process"), ignore = "needs --features in-process")]
fn a_run_split_over_worker_processes_merges_every_connection_and_frame() {
    let json = report(
        &[
            "--in-process",
            "--procs",
            "2",
            "--binaries",
            "3",
            "--phones",
            "2",
            "--rate",
            "120",
            "--duration",
            "500ms",
        ],
        0,
    );
    assert_eq!(json["procs"], 2);
    assert_eq!(json["binaries_setup"]["accepted"], 3);
    assert_eq!(json["phones_setup"]["accepted"], 6);
    let step = &json["step"];
    assert_eq!(step["connections"], 9);
    for direction in ["up", "down"] {
        let d = &step[direction];
        assert!(d["sent"].as_u64().unwrap() > 0, "{step}");
        assert_eq!(d["received"], d["sent"], "{step}");
    }
}

#[test]
#[cfg_attr(not(feature = "in-process"), ignore = "needs --features in-process")]
fn idle_phones_in_workers_report_the_relays_rss_and_every_echo() {
    let json = report(
        &[
            "--in-process",
            "--max-phones",
            "0",
            "--procs",
            "2",
            "--idle",
            "40",
            "--binaries",
            "2",
            "--idle-frame",
            "--hold",
            "100ms",
            "--strict",
        ],
        0,
    );
    assert_eq!(json["mode"], "idle");
    assert_eq!(json["setup"]["accepted"], 40);
    assert!(json["rss_before_kib"].as_u64().unwrap() > 0);
    assert!(json["rss_after_kib"].as_u64().unwrap() > 0);
    assert!(json["per_conn_kib"].is_number());
    let frame = &json["after_frame"];
    assert_eq!(frame["sent"], 40, "{frame}");
    assert_eq!(frame["received"], 40, "{frame}");
    assert!(frame["rss_kib"].as_u64().unwrap() > 0);
}

#[test]
#[cfg_attr(not(feature = "in-process"), ignore = "needs --features in-process")]
fn idle_phones_over_the_cap_are_refused_and_fail_only_under_strict() {
    let args = ["--in-process", "--idle", "20", "--hold", "100ms"];
    let json = report(&args, 0);
    assert_eq!(json["setup"]["accepted"], 16);
    assert_eq!(json["setup"]["refused"]["close 4429"], 4);
    let strict = [&args[..], &["--strict"]].concat();
    report(&strict, 1);
}

/// A search of the relay in this process with one binary and one phone, from 40 frames/s.
const ONE_PHONE_SEARCH: [&str; 8] = [
    "--in-process",
    "--search",
    "--binaries",
    "1",
    "--phones",
    "1",
    "--start-rate",
    "40",
];

#[test]
#[cfg_attr(not(feature = "in-process"), ignore = "needs --features in-process")]
fn the_search_doubles_the_rate_after_a_pass_and_halves_it_after_a_failure() {
    let mut args = ONE_PHONE_SEARCH.to_vec();
    args.extend([
        "--steps",
        "2",
        "--retries",
        "0",
        "--step",
        "300ms",
        "--drain",
        "2s",
    ]);
    // 1 if neither step passed on a busy machine: the schedule is what is checked here.
    let json = report_with(&args, &[0, 1]);
    let steps = json["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{json}");
    assert_eq!(steps[0]["offered_per_s"], 40);
    let passed = steps[0]["pass"]
        .as_bool()
        .expect("a search step has a verdict");
    let expected = if passed { 80 } else { 20 };
    assert_eq!(steps[1]["offered_per_s"], expected, "{json}");
}

/// [`ONE_PHONE_SEARCH`] over at most `rates` rates, each decided by `rule` (`--retries N` or
/// `--tries N`), in which every try fails, deterministically: no frame crosses a relay within the
/// microsecond `--max-p99` allows.
fn search_where_every_try_fails(rates: u32, rule: [&str; 2]) -> Value {
    let rates = rates.to_string();
    let mut args = ONE_PHONE_SEARCH.to_vec();
    args.extend(["--steps", &rates]);
    args.extend(rule);
    args.extend(["--step", "200ms", "--max-p99", "1us"]);
    report(&args, 1)
}

#[test]
#[cfg_attr(not(feature = "in-process"), ignore = "needs --features in-process")]
fn a_failed_rate_is_tried_again_before_the_search_gives_it_up() {
    let json = search_where_every_try_fails(1, ["--retries", "2"]);
    let steps = json["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3, "one rate, tried three times: {json}");
    for step in steps {
        assert_eq!(step["offered_per_s"], 40);
        assert_eq!(step["pass"], false);
        assert!(step["why"].as_str().unwrap().contains("p99"), "{step}");
    }
    assert!(json["sustainable_per_s"].is_null());
}

#[test]
#[cfg_attr(not(feature = "in-process"), ignore = "needs --features in-process")]
fn a_rate_decided_by_a_majority_stops_once_most_tries_failed() {
    // Two failures of three decide, no third try; each rate has its own tries (two rates: the
    // halved rate is tried twice as well).
    let json = search_where_every_try_fails(2, ["--tries", "3"]);
    let rates: Vec<_> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| {
            (
                step["offered_per_s"].as_u64().unwrap(),
                step["pass"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rates,
        [(40, false), (40, false), (20, false), (20, false)],
        "{json}"
    );
    assert!(json["sustainable_per_s"].is_null());
}
