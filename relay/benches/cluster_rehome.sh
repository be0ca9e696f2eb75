#!/usr/bin/env bash
# Issue 20's cluster row: re-homing after an instance dies. Three relay instances on one
# nats-server, BINARIES (5,000) binaries spread over them (fresh claims: directory creates,
# CONCURRENCY upgrades in flight), then kill -9 of one instance: its binaries reconnect at once to
# the other two. Prints the fresh claims per second, and the time from the kill until every
# re-homed binary holds its id again (first and last) with the burst's claims per second.
# A dead instance's ids are free only once its lease has ended (LEASE, the relay's default 10s):
# that wait is part of "kill -> all hold", by design (see relay/README "Re-homing").
# Needs nats-server (NATS_SERVER, else /tmp/relay-ci-nats-venv/bin) and builds nothing: run
#   cargo build --release -p relay-server --bin relay --example cluster_rehome
# first (BIN_DIR: where they are, default target/release). REHOME_JSON=FILE also keeps the
# client's result (JSON) there, and in FILE.cpu the CPU seconds the client, the nats-server and
# the two surviving instances used over the run (JSON); the exit status is the client's (0: every
# binary held again).
# PROFILE=1 also records `perf` of the nats-server and one surviving instance during the
# first PROFILE_SECS (5) seconds: the fresh claims (perf.data files, named at the end; the
# output directory is kept). It prints the CPU seconds each process used, the client's included.
# Every process it starts is on loopback and stopped on exit.
set -u
cd "$(dirname "$0")/../.."
rel=${BIN_DIR:-${TARGET_DIR:-target}/release}
nats=${NATS_SERVER:-/tmp/relay-ci-nats-venv/bin/nats-server}
binaries=${BINARIES:-5000}
concurrency=${CONCURRENCY:-256}
lease=${LEASE:-10s}
out=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill $p 2>/dev/null; done; sleep 1; for p in "${pids[@]}"; do kill -9 $p 2>/dev/null; done; }
trap cleanup EXIT
ulimit -n 20000
np=$(port)
"$nats" -js -a 127.0.0.1 -p $np -sd $out/store > $out/nats.log 2>&1 & natspid=$!; pids+=($natspid)
sleep 1
flags="--rate-burst 0 --max-connections 0 --cluster nats://127.0.0.1:$np --cluster-lease $lease"
ports=(); mports=(); relays=()
for name in rh-a rh-b rh-c; do
  p=$(port); ports+=($p); m=$(port); mports+=($m)
  RUST_LOG=${RUST_LOG:-warn} $rel/relay --listen 127.0.0.1:$p --metrics-listen 127.0.0.1:$m $flags --instance-id $name > $out/$name.log 2>&1 &
  relays+=($!); pids+=($!)
done
for p in "${ports[@]}"; do
  for _ in $(seq 100); do curl -fs http://127.0.0.1:$p/readyz > /dev/null && break; sleep 0.1; done
done
instances="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz=$(getconf CLK_TCK) '{ printf "%.2f", ($14 + $15) / hz }' /proc/$1/stat 2>/dev/null; }
if [ "${PROFILE:-}" = 1 ]; then
  # The fresh claims (the first seconds) on the nats-server and one instance.
  perf record -g -o $out/perf-nats.data -p $natspid -- sleep ${PROFILE_SECS:-5} > /dev/null 2>&1 & perfs=($!)
  perf record -g -o $out/perf-relay.data -p ${relays[0]} -- sleep ${PROFILE_SECS:-5} > /dev/null 2>&1 & perfs+=($!)
fi
before="nats $(cpu $natspid) rh-a $(cpu ${relays[0]}) rh-b $(cpu ${relays[1]})"
echo "load start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "binaries $binaries, concurrency $concurrency, lease $lease, instances $instances"
# The client; its wall time and CPU (user and system seconds, its rusage) go to rehome.json.time.
python3 -c 'import resource, subprocess, sys, time
start = time.monotonic()
rc = subprocess.call(sys.argv[2:], stdout=open(sys.argv[1], "w"))
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print("%.2f %.2f %.2f" % (time.monotonic() - start, r.ru_utime, r.ru_stime), file=open(sys.argv[1] + ".time", "w"))
sys.exit(rc if rc >= 0 else 128 - rc)' $out/rehome.json timeout 300 $rel/examples/cluster_rehome --instances $instances \
  --victim 2 --victim-pid ${relays[2]} --binaries $binaries --concurrency $concurrency
rc=$?
read -r client_real client_user client_sys < $out/rehome.json.time
echo "rc=$rc load end: $(cut -d' ' -f1-3 /proc/loadavg)"
date -u
cat $out/rehome.json
after="nats $(cpu $natspid) rh-a $(cpu ${relays[0]}) rh-b $(cpu ${relays[1]})"
echo "cpu seconds before: $before; after: $after; the client: ${client_user} user, ${client_sys} system (${client_real} s)"
if [ -n "${REHOME_JSON:-}" ]; then
  cp $out/rehome.json "$REHOME_JSON"
  python3 -c 'import json, sys
b, a = sys.argv[1].split(), sys.argv[2].split()
used = {k: float(y) - float(x) for k, x, y in zip(b[0::2], b[1::2], a[1::2])}
print(json.dumps({"client_s": float(sys.argv[3]) + float(sys.argv[4]), "nats_s": used["nats"],
                  "survivors_s": used["rh-a"] + used["rh-b"]}))' "$before" "$after" "$client_user" "$client_sys" >"$REHOME_JSON.cpu"
fi
# The survivors' cluster requests (directory and probes) by outcome.
for i in 0 1; do
  echo "instance $i:"; curl -fs http://127.0.0.1:${mports[$i]}/metrics | grep '^relay_cluster_requests_total' | grep -v ' 0$'
done
if [ "${PROFILE:-}" = 1 ]; then wait "${perfs[@]}"; echo "profiles: $out/perf-nats.data $out/perf-relay.data"; fi
exit $rc
