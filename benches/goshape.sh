#!/usr/bin/env bash
# Runs the Go registry's own benchmarks (`go test -bench`, ../shared/baselines/goshape) and their
# one-to-one ports in `benches/benches/goshape.rs` (criterion) back to back, ROUNDS times, and
# prints each row as Go's time per op ÷ ours (our speed relative to Go's: 1.00× is level, above
# is faster), median over the rounds,
# with the machine's load; then the bytes per id and per phone of both (same strings).
# Usage: benches/goshape.sh            ROUNDS=3 (default) GO_BENCHTIME=1s SHARED=../shared
#        BEFORE=FILE  also runs FILE (the goshape bench binary of an earlier commit) after Go in each
#                     round, and adds its column: a before/after comparison under the same load.
#        CRITERION_ARGS="--warm-up-time 0.2 --measurement-time 0.8"  passed to our benchmarks
#                     (criterion's own options; relay/benches/report.sh shortens them this way).
# Needs Go (Debian's golang-go is enough; no modules beyond the standard library).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
shared=${SHARED:-../shared}
goshape=$(cd "$shared/baselines/goshape" && pwd)
command -v go >/dev/null || { echo "goshape.sh: needs Go (apt-get install golang-go)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target=${CARGO_TARGET_DIR:-target}

echo "building: go test -c ($goshape), cargo bench --bench goshape --no-run" >&2
(cd "$goshape" && GOCACHE="$work/gocache" GOFLAGS=-mod=mod go test -c -o "$work/goshape.test" .)
cargo bench -q -p relay-registry-benches --bench goshape --no-run 2>/dev/null
cargo build -q --release -p relay-registry-benches --bin footprint
ours=$(ls -t "$target"/release/deps/goshape-* | grep -v '\.d$' | head -n1)

# "name ns" lines from `go test -bench` output (the -N GOMAXPROCS suffix dropped).
parse_go() { awk '/^Benchmark/ { n=$1; sub(/^Benchmark/,"",n); sub(/-[0-9]+$/,"",n); print n, $3 }'; }
# "name ns" lines from criterion output: the estimate (middle of the interval), in ns.
parse_ours() {
  awk 'function ns(v,u) { return u=="ps" ? v/1000 : u=="ns" ? v : (u=="µs"||u=="us") ? v*1000 : u=="ms" ? v*1e6 : v*1e9 }
       /^[A-Za-z]/ { name=$1 }
       / time: +\[/ { sub(/^.*time: +\[/,""); print name, ns($3,$4) }'
}

loads=()
for r in $(seq 1 "$rounds"); do
  loads+=("$(cut -d' ' -f1 /proc/loadavg)")
  echo "round $r/$rounds: Go ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  (cd "$work" && ./goshape.test -test.run XXX -test.bench . -test.benchtime "${GO_BENCHTIME:-1s}") \
    | parse_go > "$work/go.$r"
  echo "round $r/$rounds: ours ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  # shellcheck disable=SC2086 # CRITERION_ARGS is a list of options
  "$ours" --bench ${CRITERION_ARGS:-} 2>/dev/null | parse_ours > "$work/ours.$r"
  if [ -n "${BEFORE:-}" ]; then
    echo "round $r/$rounds: before ($(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    # shellcheck disable=SC2086
    "$BEFORE" --bench ${CRITERION_ARGS:-} 2>/dev/null | parse_ours > "$work/before.$r"
  fi
done
loads+=("$(cut -d' ' -f1 /proc/loadavg)")

echo "bytes: Go TestFootprint, footprint --go-strings" >&2
go_fp=$(cd "$work" && ./goshape.test -test.run TestFootprint -test.v | grep '^footprint:')
our_fp=$("$target"/release/footprint --go-strings)

# Ours -> the Go benchmark it ports (one to one; a variant of ours maps to the same Go row).
go_name() {
  case $1 in
    RouteLookups_by_id) echo RouteLookups ;;
    PhonesFor16_by_id) echo PhonesFor16 ;;
    Mixed2/*) echo Mixed2 ;;
    *) echo "$1" ;;
  esac
}
median() { sort -g | awk '{ v[NR]=$1 } END { if (NR==0) print "nan"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }'; }

echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $rounds rounds (Go, then ours${BEFORE:+, then before}, in turn), load average (1 min) at each round's start and at the end: ${loads[*]}"
echo
# Go's time ÷ the time of `name` in the runs "$work/$1.*", one ratio per round.
speeds() {
  local r o x
  for r in $(seq 1 "$rounds"); do
    o=$(awk -v n="$name" '$1==n { print $2 }' "$work/$1.$r")
    x=$(awk -v n="$g" '$1==n { print $2 }' "$work/go.$r")
    [ -n "$o" ] && [ -n "$x" ] && awk -v o="$o" -v x="$x" 'BEGIN { printf "%.2f\n", x/o }'
  done
}
if [ -n "${BEFORE:-}" ]; then
  echo "| workload (Go benchmark) | ours | before: Go ÷ ours (speed), median | now: Go ÷ ours, median | now, per round | now at least level with Go? |"
  echo "| --- | --- | ---: | ---: | --- | --- |"
else
  echo "| workload (Go benchmark) | ours | Go ÷ ours (speed), median | per round | at least level with Go? |"
  echo "| --- | --- | ---: | --- | --- |"
fi
for name in $(awk '{ print $1 }' "$work/ours.1"); do
  g=$(go_name "$name")
  now=$(speeds ours)
  m=$(median <<<"$now")
  level=$(awk -v m="$m" 'BEGIN { print (m >= 1.0 ? "yes" : "no") }')
  if [ -n "${BEFORE:-}" ]; then
    echo "| $g | $name | $(speeds before | median)× | ${m}× | $(echo $now) | $level |"
  else
    echo "| $g | $name | ${m}× | $(echo $now) | $level |"
  fi
done
echo
go_id=$(sed -E 's/.*footprint: ([0-9.]+) bytes\/server.*/\1/' <<<"$go_fp")
go_ph=$(sed -E 's/.*, ([0-9.]+) bytes\/phone.*/\1/' <<<"$go_fp")
our_id=$(awk -F'|' '/server-id \(binary held\)/ { gsub(/ /,"",$3); print $3 }' <<<"$our_fp")
our_ph=$(awk -F'|' '$2 ~ /^ phone / { gsub(/ /,"",$3); print $3 }' <<<"$our_fp")
echo "| bytes (TestFootprint, 250,000 ids × 4 phones, Go's strings) | ours | Go | ours ÷ Go | within 1.2×? |"
echo "| --- | ---: | ---: | ---: | --- |"
for row in "per server-id|$our_id|$go_id" "per phone|$our_ph|$go_ph"; do
  IFS='|' read -r what o x <<<"$row"
  awk -v w="$what" -v o="$o" -v x="$x" \
    'BEGIN { r=o/x; printf "| %s | %.1f | %.1f | %.2f× | %s |\n", w, o, x, r, (r <= 1.2 ? "yes" : "no") }'
done
