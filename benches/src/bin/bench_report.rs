//! Turns the last `cargo bench --bench registry_vs_go` run into the markdown table of the README's
//! "Performance" section: the median time per operation of `Registry` and `GoShape`, their ratio,
//! the target from the performance issue, and whether it is met.
//!
//! It reads criterion's `<target-dir>/criterion/**/new/{benchmark,estimates}.json` (the target dir
//! is `$CARGO_TARGET_DIR` or `target`) and prints markdown to stdout. `benches/report.sh` runs the
//! benchmarks and this in one go, noting the machine's load before and after.
//!
//! ```text
//! cargo bench -p relay-registry-benches --bench registry_vs_go && cargo run --release -p relay-registry-benches --bin bench_report
//! ```

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// `(group, impl, case)` → median ns per operation.
type Medians = BTreeMap<(String, String, String), f64>;

fn collect(dir: &Path, out: &mut Medians) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if let Some((key, median)) = read_run(&path) {
                out.insert(key, median);
            }
        } else {
            collect(&path, out);
        }
    }
}

fn read_run(dir: &Path) -> Option<((String, String, String), f64)> {
    let read = |name: &str| -> Option<Value> {
        serde_json::from_str(&fs::read_to_string(dir.join(name)).ok()?).ok()
    };
    let bench = read("benchmark.json")?;
    let estimates = read("estimates.json")?;
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let key = (
        field(&bench, "group_id")?,
        field(&bench, "function_id")?,
        field(&bench, "value_str")?,
    );
    let median = estimates.get("median")?.get("point_estimate")?.as_f64()?;
    Some((key, median))
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1_000.0)
    } else {
        format!("{ns:.1} ns")
    }
}

fn first_line_of(path: &str, prefix: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

fn main() {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let mut medians = Medians::new();
    collect(&target.join("criterion"), &mut medians);
    if medians.is_empty() {
        eprintln!(
            "no criterion results under {}: run `cargo bench --bench registry_vs_go` first",
            target.join("criterion").display()
        );
        std::process::exit(1);
    }
    let get = |group: &str, imp: &str, case: &str| {
        medians
            .get(&(group.to_owned(), imp.to_owned(), case.to_owned()))
            .copied()
    };

    println!("| group | case | Registry | GoShape | GoShape / Registry | target | met? |");
    println!("| --- | --- | ---: | ---: | ---: | --- | --- |");
    // Side-by-side rows: the target is a minimum speed-up over GoShape.
    let side_by_side = |group: &str, imp: &str, case: &str, label: &str, min: Option<f64>| {
        let (Some(ours), Some(go)) = (get(group, imp, case), get(group, "go_shape", case)) else {
            return;
        };
        let ratio = go / ours;
        let (target, met) = match min {
            Some(min) => (
                format!("≥ {min}× faster"),
                if ratio >= min { "yes" } else { "**no**" },
            ),
            None => ("—".to_owned(), ""),
        };
        println!(
            "| {group} | {label} | {} | {} | {ratio:.2}× | {target} | {met} |",
            fmt_ns(ours),
            fmt_ns(go)
        );
    };
    side_by_side(
        "lifecycle",
        "registry",
        "4_phones",
        "claim, 4 phones, drop all",
        Some(2.0),
    );
    side_by_side(
        "route",
        "registry",
        "phone_to_binary",
        "phone→binary: `ticket.binary()` vs `binary_for`",
        Some(3.0),
    );
    side_by_side(
        "route",
        "registry",
        "binary_to_phone",
        "binary→phone: `claim.phone()` vs `phone_for`",
        Some(3.0),
    );
    side_by_side(
        "phones_snapshot",
        "registry",
        "4",
        "4 phones, `claim.phones()`",
        Some(2.0),
    );
    side_by_side(
        "phones_snapshot",
        "registry_by_id",
        "4",
        "4 phones, `phones_for(id)`",
        None,
    );
    side_by_side(
        "phones_snapshot",
        "registry",
        "16",
        "16 phones, `claim.phones()`",
        None,
    );
    side_by_side(
        "phones_snapshot",
        "registry_by_id",
        "16",
        "16 phones, `phones_for(id)`",
        None,
    );
    // Scaling rows: the target is that the largest case stays within 1.5× of the smallest.
    let scaling = |group: &str, cases: &[(&str, &str)], what: &str| {
        let first = get(group, "registry", cases[0].0);
        for (i, (case, label)) in cases.iter().enumerate() {
            let (Some(ours), Some(go)) =
                (get(group, "registry", case), get(group, "go_shape", case))
            else {
                continue;
            };
            let (target, met) = if i + 1 == cases.len() {
                let growth = first.map_or(f64::NAN, |f| ours / f);
                (
                    format!("O(1): {what} ≤ 1.5× ({growth:.2}×)"),
                    if growth <= 1.5 { "yes" } else { "**no**" },
                )
            } else {
                (String::new(), "")
            };
            println!(
                "| {group} | {label} | {} | {} | {:.2}× | {target} | {met} |",
                fmt_ns(ours),
                fmt_ns(go),
                go / ours
            );
        }
    };
    scaling(
        "counts",
        &[
            ("1000", "1k ids"),
            ("100000", "100k ids"),
            ("1000000", "1M ids"),
        ],
        "1M vs 1k",
    );
    scaling(
        "unregister_among",
        &[
            ("1", "1 sibling"),
            ("16", "16 siblings"),
            ("256", "256 siblings"),
            ("1024", "1,024 siblings"),
        ],
        "1,024 vs 1",
    );
    side_by_side(
        "mixed_2_threads",
        "registry",
        "90_route_10_lifecycle",
        "90% route / 10% lifecycle, time per op (both threads)",
        Some(1.5),
    );

    let cpu = first_line_of("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let mem = first_line_of("/proc/meminfo", "MemTotal").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rustc =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("-V")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
    println!();
    println!(
        "Median of criterion's samples, from the run whose results are in {}. Machine: {cpu}, \
         {cores} cores, {mem} RAM; {rustc}.",
        target.join("criterion").display()
    );
}
