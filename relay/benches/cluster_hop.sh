#!/usr/bin/env bash
# The cluster rows of issue 12: a frame's latency phone->binary and back on one instance without
# --cluster, in cluster mode on one instance, and across two instances (HAProxy routes /v1/server
# to one and /v1/client to another); then the sustainable rate of one instance vs three behind
# round-robin HAProxy. Needs nats-server (NATS_SERVER or /tmp/nats-venv/bin) and haproxy; builds
# nothing: run `cargo build --release -p relay-server -p relay-loadgen --bin relay --bin relay-loadgen` first.
# Every process it starts is on loopback and stopped on exit. `relay/benches/report.sh` runs the
# same rows (3 rounds in turn for the latency, an interleaved search for the rates) next to their
# targets; this script is the quick stand-alone version.
set -u
cd "$(dirname "$0")/../.."
rel=${TARGET_DIR:-target}/release
nats=${NATS_SERVER:-/tmp/nats-venv/bin/nats-server}
out=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill $p 2>/dev/null; done; sleep 1; for p in "${pids[@]}"; do kill -9 $p 2>/dev/null; done; }
trap cleanup EXIT
np=$(port)
"$nats" -js -a 127.0.0.1 -p $np -sd $out/store > $out/nats.log 2>&1 & pids+=($!)
sleep 1
flags="--metrics-listen off --rate-burst 0 --max-connections 0 --max-phones 0"
start() { # name port [cluster]
  if [ -n "${3:-}" ]; then RUST_LOG=warn nice -n 10 $rel/relay --listen 127.0.0.1:$2 $flags --cluster nats://127.0.0.1:$np --instance-id $1 > $out/$1.log 2>&1 &
  else RUST_LOG=warn nice -n 10 $rel/relay --listen 127.0.0.1:$2 $flags > $out/$1.log 2>&1 & fi
  pids+=($!)
}
pa=$(port); pb=$(port); pc=$(port); ps=$(port); hx=$(port); hr=$(port)
start m-a $pa c; start m-b $pb c; start m-c $pc c; start single $ps
sleep 2
cat > $out/cross.cfg <<CFG
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend f
    bind 127.0.0.1:$hx
    use_backend binaries if { path /v1/server }
    default_backend phones
backend binaries
    server a 127.0.0.1:$pa
backend phones
    server b 127.0.0.1:$pb
CFG
cat > $out/rr.cfg <<CFG
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
frontend f
    bind 127.0.0.1:$hr
    default_backend relays
backend relays
    balance roundrobin
    server a 127.0.0.1:$pa
    server b 127.0.0.1:$pb
    server c 127.0.0.1:$pc
CFG
haproxy -db -f $out/cross.cfg > $out/hx.log 2>&1 & pids+=($!)
haproxy -db -f $out/rr.cfg > $out/hr.log 2>&1 & pids+=($!)
sleep 1
lg() { local name=$1; shift; timeout 200 nice -n 10 $rel/relay-loadgen --json "$@" > $out/$name.json 2> $out/$name.err; echo "$name rc=$?"; }
shape="--binaries 4 --phones 4 --rate 2000 --duration 5s"
echo "load start: $(cut -d' ' -f1-3 /proc/loadavg)"
lg single-sustained --url ws://127.0.0.1:$ps $shape
lg same-instance --url ws://127.0.0.1:$pa $shape
lg cross-instance --url ws://127.0.0.1:$hx $shape
search="--search --binaries 20 --phones 4 --start-rate 4000 --steps 5 --step 2s --retries 0 --max-p99 50ms"
lg single-search --url ws://127.0.0.1:$ps $search
lg three-search --url ws://127.0.0.1:$hr $search
echo "load end: $(cut -d' ' -f1-3 /proc/loadavg)"
date -u
python3 - $out <<'PY'
import json,sys,os
out=sys.argv[1]
for n in ["single-sustained","same-instance","cross-instance"]:
    try:
        r=json.load(open(os.path.join(out,n+".json"))); s=r["step"]
        print(n, "up p50 %.2f ms p99 %.2f ms | down p50 %.2f ms p99 %.2f | lost %d" % (s["up"]["p50_ms"], s["up"]["p99_ms"], s["down"]["p50_ms"], s["down"]["p99_ms"], s["up"]["lost"]+s["down"]["lost"]))
    except Exception as e: print(n, "failed", e)
for n in ["single-search","three-search"]:
    try:
        r=json.load(open(os.path.join(out,n+".json"))); print(n, "sustainable_per_s", r.get("sustainable_per_s"))
    except Exception as e: print(n, "failed", e)
PY
