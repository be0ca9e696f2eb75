#!/usr/bin/env bash
# The longer chaos run of issue 19: relay/tests/chaos.rs (three `relay` instances on a three-node
# NATS cluster, instances killed, paused and partitioned, NATS nodes killed, a client-side checker
# of one holder per id, per-link order and announced gaps) once per seed, with longer settings
# than the short seed `cargo test` runs, then one summary line per seed and the violations found.
#
#   SEEDS="1 2 3" SECONDS_EACH=120 relay/benches/chaos.sh
#
# SEEDS (default "1 2 3"), SECONDS_EACH (default 120: how long faults keep starting, per seed);
# CHAOS_FAULTS, CHAOS_LEASE, CHAOS_IDS are passed on (see relay/tests/chaos.rs). Needs nats-server
# (NATS_SERVER, or on PATH; /tmp/relay-ci-nats-venv/bin is tried). Each seed's full output and the
# instances' stderr stay in a temporary directory, printed at the end. Exits 1 if a seed found a
# violation or failed.
set -u
cd "$(dirname "$0")/../.."
export PATH=${NATS_VENV:-/tmp/relay-ci-nats-venv}/bin:$PATH RELAY_CLUSTER_TESTS=required
seeds=${SEEDS:-1 2 3}
seconds=${SECONDS_EACH:-120}
out=$(mktemp -d /tmp/relay-chaos.XXXXXX)
cargo test -q -p relay-server --test chaos --no-run 2>&1 | grep -v '^$' || true
echo "chaos.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "chaos.sh: seeds $seeds, ${seconds} s of faults each, faults ${CHAOS_FAULTS:-default}, lease ${CHAOS_LEASE:-10} s"
status=0
for seed in $seeds; do
  mkdir -p "$out/$seed"
  CHAOS_SEED=$seed CHAOS_SECONDS=$seconds CHAOS_LOGS="$out/$seed" \
    cargo test -q -p relay-server --test chaos -- --nocapture a_seeded_run >"$out/$seed/test.log" 2>&1
  code=$?
  summary=$(grep '^chaos summary:' "$out/$seed/test.log" || echo "chaos summary: seed=$seed (no summary: the test failed before it, see $out/$seed/test.log)")
  echo "$summary (exit $code, load $(cut -d' ' -f1 /proc/loadavg))"
  grep -E '^chaos violation:|panicked|was not served' "$out/$seed/test.log" | head -20
  [ $code -eq 0 ] || status=1
done
echo "chaos.sh: done $(date -u '+%H:%M UTC'); logs in $out"
exit $status
