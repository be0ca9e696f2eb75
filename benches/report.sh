#!/usr/bin/env bash
# Runs the Registry-vs-GoShape benchmarks and the footprint example, then prints the README's
# "Performance" tables from that run, with the machine's load before and after.
# Usage: benches/report.sh [criterion filter]   (honours CARGO_TARGET_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)  ($(date -u '+%Y-%m-%d %H:%M UTC'))" >&2
start=$(date +%s)
cargo bench -p relay-registry-benches --bench registry_vs_go -- "$@" >&2
echo "load after:  $(cut -d' ' -f1-3 /proc/loadavg)  (benches took $(( $(date +%s) - start )) s)" >&2
cargo run --quiet --release -p relay-registry-benches --bin bench_report
echo
cargo run --quiet --release -p relay-registry-benches --bin footprint
