#!/usr/bin/env bash
# The relay's performance table (issue 12): every row against our relay, the Go relay shape
# (../shared/baselines/gorelay, beside the repository root) and the bare forwarder
# (relay/examples/bare_forwarder.rs), in one run, each target started here on its own loopback
# port and stopped after its rows; then one table with each row's target, the machine, the date
# and the load average. Builds what it runs (release). Meant to finish within 15 minutes.
#
#   bash relay/benches/report.sh              # the table on stdout, progress on stderr
#   OUT=/tmp/perf bash relay/benches/report.sh  # also keep every row's JSON in /tmp/perf
#   QUICK=1 PROFILE=dev bash relay/benches/report.sh   # CI: every row tiny (seconds), debug build
#   ROWS=forwarding bash relay/benches/report.sh  # only the search, latency and cluster rows
#
# QUICK=1 makes every row small (hundreds of connections, 1 s runs, a 2-step search, no
# descriptor-limit row) and turns stable outcomes into the exit status: against our relay and
# the bare forwarder every row must lose no frame and serve every connection (relay-loadgen
# --strict); the Go shape's rows must only run. Its figures mean nothing. PROFILE=dev uses the
# debug build (what `cargo test` already built) instead of release.
#
# The forwarding rows' search is interleaved: the three targets run at once and relay-loadgen
# (--search --versus) runs their steps in turn, each with its own schedule, then every target at
# half the relay's sustainable rate a few times in turn (the median p99 is kept), so that the
# ratios are measured under the same load of this shared machine. The cluster rows (issue 12's
# cross-instance hop) need nats-server (NATS_SERVER, /tmp/nats-venv/bin or PATH) and haproxy;
# without them those rows say "not measured".
#
# Every load runs under `nice -n 10`, targets loopback only and stops by itself (relay-loadgen's
# modes are bounded; each call is also under `timeout`).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
shared=${SHARED:-$root/../shared}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
quick=${QUICK:-0}
rows=${ROWS:-all}
case $rows in
  all | forwarding) ;;
  *) echo "report.sh: ROWS must be all or forwarding" >&2; exit 2 ;;
esac
profile=${PROFILE:-release}
case $profile in
  release) profile_flag=--release; profile_dir=release ;;
  dev) profile_flag=; profile_dir=debug ;;
  *) echo "report.sh: PROFILE must be release or dev" >&2; exit 2 ;;
esac
failures=0
say() { echo "report.sh: $*" >&2; }

# ---------------------------------------------------------------- build
started=$SECONDS
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
say "building ($profile): relay, relay-loadgen, bare_forwarder"
nice -n 10 cargo build --quiet $profile_flag -p relay-server -p relay-loadgen --bin relay --bin relay-loadgen --example bare_forwarder
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
relay_bin=$target_dir/$profile_dir/relay
loadgen=$target_dir/$profile_dir/relay-loadgen
bare_bin=$target_dir/$profile_dir/examples/bare_forwarder
say "building the Go relay shape"
nice -n 10 bash "$shared/baselines/gorelay/build.sh" "$out/gorelay" >&2
say "built in $((SECONDS - started)) s"

# ---------------------------------------------------------------- targets
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

target_pid=
all_pids=()
# start_target NAME: starts it on a fresh port; sets target_pid and target_url.
start_target() {
  local name=$1 port
  port=$(free_port)
  case $name in
    relay)
      # Unlimited phones per id (the rows put 10,000 on one); turn off what issue 9 adds in
      # front of every upgrade where this build has it (rate limit, connection cap, metrics).
      local extra=()
      local help
      help=$("$relay_bin" --help)
      grep -q -- '--rate-burst' <<<"$help" && extra+=(--rate-burst 0)
      grep -q -- '--max-connections' <<<"$help" && extra+=(--max-connections 0)
      grep -q -- '--metrics-listen' <<<"$help" && extra+=(--metrics-listen off)
      RUST_LOG=warn nice -n 10 "$relay_bin" --listen "127.0.0.1:$port" --max-phones 0 "${extra[@]}" >"$out/$name.log" 2>&1 &
      ;;
    gorelay)
      nice -n 10 "$out/gorelay" --listen "127.0.0.1:$port" --max-phones 0 >"$out/$name.log" 2>&1 &
      ;;
    bare)
      nice -n 10 "$bare_bin" --listen "127.0.0.1:$port" >"$out/$name.log" 2>&1 &
      ;;
  esac
  target_pid=$!
  all_pids+=("$target_pid")
  target_url="ws://127.0.0.1:$port"
  wait_listening "$port" "$name"
}

# wait_listening PORT NAME: until something accepts on PORT (10 s at most).
wait_listening() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  say "$2 did not start listening on $1"; cat "$out/$2.log" >&2 2>/dev/null; return 1
}

stop_target() {
  if [ -n "$target_pid" ]; then
    kill "$target_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$target_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$target_pid" 2>/dev/null || true
    wait "$target_pid" 2>/dev/null || true
    local kept=() pid
    for pid in "${all_pids[@]}"; do [ "$pid" = "$target_pid" ] || kept+=("$pid"); done
    all_pids=("${kept[@]}")
    target_pid=
  fi
}
# Stops everything this script started that is still running.
stop_all() {
  local pid
  for pid in "${all_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${all_pids[@]}"; do
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  all_pids=()
  target_pid=
}
trap stop_all EXIT

# row NAME FILE ARGS...: one loadgen run against the current target, its JSON kept in FILE
# (an exit status of 1 — frames lost, a search without a pass — is a result, not an error;
# with QUICK=1 it is a failure against our relay and the bare forwarder).
row() {
  local name=$1 file=$2; shift 2
  local strict=()
  [ "$quick" = 1 ] && [ "$current" != gorelay ] && strict=(--strict)
  say "$name: $* ${strict[*]}"
  local rc=0
  timeout 420 nice -n 10 "$loadgen" --url "$target_url" --json "${strict[@]}" "$@" >"$file" 2>"$file.log" || rc=$?
  if [ "$rc" -gt 1 ] || { [ "$rc" -eq 1 ] && [ ${#strict[@]} -gt 0 ]; }; then
    say "$name failed (exit $rc):"; tail -3 "$file.log" >&2
    [ "$quick" = 1 ] && failures=$((failures + 1))
  fi
  if [ "$rc" -gt 1 ]; then
    # Keep relay-loadgen's own last words for the table.
    python3 -c 'import json,sys; print(json.dumps({"error": sys.argv[1]}))' \
      "$(tr '\r' '\n' <"$file.log" | grep 'relay-loadgen' | tail -1)" >"$file"
  fi
}

# The rows' sizes: the real ones, or QUICK's.
if [ "$quick" = 1 ]; then
  idle_n=500 many_n=1000 many_b=4 hold=500ms run=1s search_steps=2 step=500ms
  r_low=400 r_mid=800 r_high=1600 b_many=20 p_many=4 b_wide=5 p_wide=16 start_rate=200
  latency_rounds=1 hop_run=1s hop_rounds=1 c_steps=2 c_step=500ms c_start=200
  # Only losses count in QUICK mode: a p99 bound would make it depend on the machine's load.
  max_p99=10s
else
  idle_n=10000 many_n=19000 many_b=19 hold=3s run=5s search_steps=10 step=3s
  r_low=10000 r_mid=40000 r_high=160000 b_many=200 p_many=4 b_wide=50 p_wide=16 start_rate=10000
  latency_rounds=5 hop_run=3s hop_rounds=3 c_steps=7 c_step=2s c_start=4000
  max_p99=50ms
fi

for t in relay gorelay bare; do
  [ "$rows" = all ] || break
  current=$t
  # Memory rows on a fresh process each.
  start_target $t
  row "$t idle" "$out/$t-idle.json" --idle $idle_n --binaries 1 --idle-frame --hold $hold --target-pid "$target_pid"
  stop_target
  start_target $t
  row "$t many connections" "$out/$t-19k.json" --idle $many_n --binaries $many_b --idle-frame --hold 1s --procs 2 --target-pid "$target_pid"
  stop_target
  if [ "$quick" != 1 ]; then
    start_target $t
    row "$t past the limit" "$out/$t-limit.json" --idle 20500 --binaries 21 --hold 1s --procs 2 --concurrency 256 --connect-timeout 3s --target-pid "$target_pid"
    sleep 2 # the 20,500 have just been closed
    row "$t after the limit" "$out/$t-resume.json" --binaries 2 --phones 2 --rate 100 --duration 1s
    stop_target
  fi
  # Forwarding rows on one process.
  start_target $t
  row "$t low rate" "$out/$t-10k.json" --binaries $b_many --phones $p_many --rate $r_low --duration $run
  row "$t mid rate" "$out/$t-40k.json" --binaries $b_many --phones $p_many --rate $r_mid --duration $run
  if [ "$quick" != 1 ]; then
    # Saturating by design: frames not delivered within the drain count as lost.
    row "$t high rate" "$out/$t-160k.json" --binaries $b_wide --phones $p_wide --rate $r_high --duration $run
  fi
  stop_target
done

# ---------------------------------------------------------------- the interleaved search
# The three targets at once; relay-loadgen runs their steps in turn (see the top).
current=compare
declare -A url_of
for t in relay gorelay bare; do
  start_target $t
  url_of[$t]=$target_url
done
target_url=${url_of[relay]}
rc=0
say "interleaved search: relay, Go shape, bare forwarder"
timeout 600 nice -n 10 "$loadgen" --url "${url_of[relay]}" --versus "${url_of[gorelay]}" --versus "${url_of[bare]}" \
  --json --search --binaries $b_many --phones $p_many --start-rate $start_rate --steps $search_steps \
  --retries 1 --step $step --max-p99 $max_p99 --latency-rounds $latency_rounds \
  >"$out/search.json" 2>"$out/search.json.log" || rc=$?
if [ "$rc" -gt 1 ]; then
  say "the interleaved search failed (exit $rc):"; tail -3 "$out/search.json.log" >&2
  [ "$quick" = 1 ] && failures=$((failures + 1))
elif [ "$quick" = 1 ]; then
  # Our relay and the bare forwarder must have passed a step; the Go shape only runs.
  python3 -c 'import json,sys
r=json.load(open(sys.argv[1]))["searches"]
sys.exit(0 if r[0]["sustainable_per_s"] and r[2]["sustainable_per_s"] else 1)' "$out/search.json" ||
    { say "interleaved search: the relay or the bare forwarder passed no step"; failures=$((failures + 1)); }
fi
stop_all

# ---------------------------------------------------------------- the cluster rows
# One nats-server; three relays in cluster mode (a, b, c) and one without --cluster; an
# HAProxy sending /v1/server to a and /v1/client to b (every frame crosses instances), and one
# in round-robin over a, b and c.
nats=${NATS_SERVER:-}
[ -z "$nats" ] && [ -x /tmp/nats-venv/bin/nats-server ] && nats=/tmp/nats-venv/bin/nats-server
[ -z "$nats" ] && nats=$(command -v nats-server || true)
if [ -z "$nats" ] || ! command -v haproxy >/dev/null; then
  say "cluster rows skipped: nats-server or haproxy not found"
  echo '{"error": "nats-server or haproxy not found"}' >"$out/cluster-skipped.json"
else
  current=cluster
  np=$(free_port)
  nice -n 10 "$nats" -js -a 127.0.0.1 -p "$np" -sd "$out/nats-store" >"$out/nats.log" 2>&1 &
  all_pids+=("$!")
  wait_listening "$np" nats
  declare -A port_of
  cflags=(--metrics-listen off --rate-burst 0 --max-connections 0 --max-phones 0)
  for name in m-a m-b m-c single; do
    port_of[$name]=$(free_port)
    cluster=()
    [ "$name" != single ] && cluster=(--cluster "nats://127.0.0.1:$np" --instance-id "$name")
    RUST_LOG=warn nice -n 10 "$relay_bin" --listen "127.0.0.1:${port_of[$name]}" "${cflags[@]}" "${cluster[@]}" >"$out/$name.log" 2>&1 &
    all_pids+=("$!")
  done
  for name in m-a m-b m-c single; do wait_listening "${port_of[$name]}" "$name"; done
  hx=$(free_port) hr=$(free_port)
  haproxy_defaults="defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h"
  cat >"$out/cross.cfg" <<CFG
$haproxy_defaults
frontend f
    bind 127.0.0.1:$hx
    use_backend binaries if { path /v1/server }
    default_backend phones
backend binaries
    server a 127.0.0.1:${port_of[m-a]}
backend phones
    server b 127.0.0.1:${port_of[m-b]}
CFG
  cat >"$out/rr.cfg" <<CFG
$haproxy_defaults
frontend f
    bind 127.0.0.1:$hr
    default_backend relays
backend relays
    balance roundrobin
    server a 127.0.0.1:${port_of[m-a]}
    server b 127.0.0.1:${port_of[m-b]}
    server c 127.0.0.1:${port_of[m-c]}
CFG
  nice -n 10 haproxy -db -f "$out/cross.cfg" >"$out/hx.log" 2>&1 &
  all_pids+=("$!")
  nice -n 10 haproxy -db -f "$out/rr.cfg" >"$out/hr.log" 2>&1 &
  all_pids+=("$!")
  wait_listening "$hx" haproxy-cross
  wait_listening "$hr" haproxy-rr
  # The hop's latency: the three paths in turn, $hop_rounds rounds (the median p50 is kept).
  for round in $(seq "$hop_rounds"); do
    for path in single same cross; do
      case $path in
        single) target_url=ws://127.0.0.1:${port_of[single]} ;;
        same) target_url=ws://127.0.0.1:${port_of[m-a]} ;;
        cross) target_url=ws://127.0.0.1:$hx ;;
      esac
      row "cluster hop $path (round $round)" "$out/hop-$path-$round.json" --binaries 4 --phones 4 --rate 2000 --duration $hop_run
    done
  done
  # The sustainable rate of one instance vs three behind round-robin HAProxy, interleaved.
  target_url=ws://127.0.0.1:${port_of[single]}
  row "cluster search: one instance vs three" "$out/cluster-search.json" --versus "ws://127.0.0.1:$hr" \
    --search --binaries 20 --phones 4 --start-rate $c_start --steps $c_steps --retries 1 --step $c_step \
    --max-p99 $max_p99 --latency-rounds 1
  stop_all
fi

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$out" "$load_start" "$load_end" "$((SECONDS - started))" "$quick" "$rows" <<'PY'
import json, os, platform, sys, time
out, load_start, load_end, took, quick, rows_asked = sys.argv[1:7]
quick = quick == "1"

def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except Exception:
        return None

def cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"

def mem_gib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            return int(line.split()[1]) / 1024 / 1024
    return 0

targets = [("relay", "relay-registry relay"), ("gorelay", "Go relay shape"), ("bare", "bare forwarder")]

def failed(r):
    if r is None:
        if rows_asked != "all":
            return f"not measured (ROWS={rows_asked})"
        return "not measured (QUICK)" if quick else "not measured (run failed)"
    return f"not measured: {r['error'] or 'the run failed'}" if "error" in r else None

def kib(v):
    return "n/a" if v is None else f"{v:.1f} KiB"

def idle_rss(t):
    r = load(f"{t}-idle.json")
    return failed(r) or kib(r.get("per_conn_kib"))

def idle_frame(t):
    r = load(f"{t}-idle.json")
    if failed(r): return failed(r)
    f = r.get("after_frame") or {}
    return f"{kib(f.get('per_conn_kib'))} ({f.get('received', 0)} of {f.get('sent', 0)} echoed)"

def setup(t):
    r = load(f"{t}-idle.json")
    if failed(r): return failed(r)
    s = r["setup"]
    return f"{s['per_second']:,.0f}/s ({s['accepted']} in {s['seconds']:.1f} s)"

def extras(s):
    parts = [f"refused {k}: {n}" for k, n in s.get("refused", {}).items()]
    parts += [f"failed {k}: {n}" for k, n in s.get("failed", {}).items()]
    return "; " + "; ".join(parts) if parts else ""

def many(t):
    r = load(f"{t}-19k.json")
    if failed(r): return failed(r)
    s, f = r["setup"], r.get("after_frame") or {}
    return f"{s['accepted']} open, {f.get('received', 0)} answered a frame{extras(s)}"

def limit(t):
    r = load(f"{t}-limit.json")
    if failed(r): return failed(r)
    s = r["setup"]
    resume = load(f"{t}-resume.json")
    if resume is None or "error" in resume:
        after = "afterwards: no service" + (f" ({resume['error']})" if resume else "")
    else:
        lost = resume["step"]["up"]["lost"] + resume["step"]["down"]["lost"]
        after = f"afterwards: {resume['phones_setup']['accepted']}/4 phones, {lost} lost"
    return f"{s['accepted']} of {s['attempted']} open{extras(s)}; {after}"

def step_cell(step, with_rate=False):
    up, down = step["up"], step["down"]
    lost = up["lost"] + down["lost"]
    sent = up["sent"] + down["sent"]
    pct = f" ({100 * lost / sent:.0f}%)" if sent and lost else ""
    closed = f", closed {step['closed']}" if step.get("closed") else ""
    rate = f"{step['offered_per_s']:,}/s offered: " if with_rate else ""
    return (f"{rate}{(up['per_second'] + down['per_second']) / 2:,.0f}/s delivered each way, "
            f"{lost} lost{pct}, p50 {max(up['p50_ms'], down['p50_ms']):.1f} ms, "
            f"p99 {max(up['p99_ms'], down['p99_ms']):.1f} ms{closed}")

def sustained(name):
    def cell(t):
        r = load(f"{t}-{name}.json")
        return failed(r) or step_cell(r["step"])
    return cell

SEARCH_INDEX = {"relay": 0, "gorelay": 1, "bare": 2}

def compare():
    return load("search.json")

def search_of(t):
    c = compare()
    if c is None or "error" in c:
        return c
    return c["searches"][SEARCH_INDEX[t]]

def search(t):
    r = search_of(t)
    if failed(r): return failed(r)
    rate = r.get("sustainable_per_s")
    return f"{rate:,}/s each way" if rate else "no step passed"

def at_relay_half(t):
    c = compare()
    if c is None or "error" in c or not c.get("first_half_per_s"):
        return None
    return c["at_first_half"][SEARCH_INDEX[t]]

def worse_p99(step):
    return max(step["up"]["p99_ms"], step["down"]["p99_ms"])

def half(t):
    r = search_of(t)
    if failed(r): return failed(r)
    h = r.get("half")
    cell = ("own half: " + step_cell(h, with_rate=True)) if h else "n/a (no sustainable rate)"
    at = at_relay_half(t)
    if at and at.get("median"):
        rounds = ", ".join(f"{p:.1f}" for p in at["p99_ms"])
        cell += (f"; at the relay's half rate, median of {len(at['p99_ms'])} rounds in turn: "
                 f"{step_cell(at['median'], with_rate=True)} (p99 of each round: {rounds} ms)")
    return cell

def ratio_note():
    rates = {t: (search_of(t) or {}).get("sustainable_per_s") for t, _ in targets}
    r, g, b = rates["relay"], rates["gorelay"], rates["bare"]
    notes = []
    if r and b: notes.append(f"relay/bare = {r / b:.2f}× (target ≥ 0.8×)")
    if r and g: notes.append(f"relay/Go = {r / g:.2f}× (target ≥ 3×)")
    return "; ".join(notes)

def latency_note():
    r, b = at_relay_half("relay"), at_relay_half("bare")
    if not (r and b and r.get("median") and b.get("median")):
        return ""
    rp, bp = worse_p99(r["median"]), worse_p99(b["median"])
    return (f"latency at the relay's half rate ({compare()['first_half_per_s']:,}/s each way): "
            f"relay p99 {rp:.1f} ms / bare p99 {bp:.1f} ms = {rp / bp:.2f}× (target ≤ 1.5×)")

def hop_p50(path):
    p50s = []
    for n in range(1, 10):
        r = load(f"hop-{path}-{n}.json")
        if r is None:
            break
        if "error" in r or r["step"]["up"]["lost"] + r["step"]["down"]["lost"] > 0:
            continue
        s = r["step"]
        p50s.append(max(s["up"]["p50_ms"], s["down"]["p50_ms"]))
    if not p50s:
        return None, []
    return sorted(p50s)[(len(p50s) - 1) // 2], p50s

def cluster_skipped():
    r = load("cluster-skipped.json")
    return f"not measured: {r['error']}" if r else None

def hop_cell(t):
    if t != "relay": return "—"
    if cluster_skipped(): return cluster_skipped()
    parts = []
    for path, label in (("single", "one instance"), ("same", "cluster mode, same instance"), ("cross", "across instances (HAProxy splits the endpoints)")):
        p50, all_ = hop_p50(path)
        parts.append(f"{label}: p50 {p50:.2f} ms (rounds {', '.join(f'{x:.2f}' for x in all_)})" if p50 else f"{label}: no clean run")
    single, cross = hop_p50("single")[0], hop_p50("cross")[0]
    if single and cross:
        parts.append(f"cross/one instance = {cross / single:.2f}×")
    return "; ".join(parts)

def cluster_rate_cell(t):
    if t != "relay": return "—"
    if cluster_skipped(): return cluster_skipped()
    c = load("cluster-search.json")
    if failed(c): return failed(c)
    one, three = (s.get("sustainable_per_s") for s in c["searches"])
    cell = f"one instance {one or 0:,}/s, three behind round-robin HAProxy {three or 0:,}/s each way"
    if one and three:
        cell += f": {three / one:.2f}×"
    return cell

def ahead_note():
    s = {t: ((load(f"{t}-idle.json") or {}).get("setup") or {}).get("per_second") for t, _ in targets}
    return f"relay/Go = {s['relay'] / s['gorelay']:.2f}×" if s["relay"] and s["gorelay"] else ""

not_here = lambda t: "not run by this script: cargo bench -p relay-registry-benches --bench registry_vs_go"

if quick:
    sizes = dict(idle="500", many="1,000 phones on 4 binaries", low="20 ids × 4 phones, 400", mid="800", wide="50 ids × 16 phones, 160k", search="20 × 4")
else:
    sizes = dict(idle="10,000", many="19,000 phones on 19 binaries", low="200 ids × 4 phones, 10k", mid="40k", wide="50 ids × 16 phones, 160k", search="200 × 4")

rows = [
    (f"RSS per idle phone (delta over {sizes['idle']} idle phones on one binary)", "≤ 4 KiB (≤ 1/9 of the Go shape)", idle_rss),
    ("RSS per phone after one 1 KiB frame each way", "≤ 6 KiB", idle_frame),
    (f"connection setup ({sizes['idle']} phones, relay-loadgen, 64 attempts in flight)", "≥ 5,000/s, ahead of the Go shape", setup),
    (f"concurrent connections ({sizes['many']}, each echoing one frame)", "≥ 19,000 open, each answering", many),
    ("past the descriptor limit (20,500 phones; then a 2 × 2 run)", "refused cleanly, service resumes", limit),
    (f"{sizes['low']} frames/s each way offered, 1 KiB frames", "(context)", sustained("10k")),
    (f"same, {sizes['mid']} frames/s each way offered", "(context)", sustained("40k")),
    (f"{sizes['wide']} frames/s each way offered (saturating)", "(context)", sustained("160k")),
    (f"sustainable rate ({sizes['search']}, 1 KiB, 0 lost, nothing closed, p99 ≤ 50 ms; the three searched interleaved)", "≥ 0.8× bare forwarder, ≥ 3× Go shape", search),
    ("latency at half the sustainable rate", "p99 ≤ 1.5× the bare forwarder's p99 at the same rate", half),
    ("cross-instance (cluster) hop p50, 4 ids × 4 phones, 2,000 frames/s each way, the worse direction", "≤ 2× the same-instance path", hop_cell),
    ("sustainable rate through 3 instances (20 ids × 4 phones, interleaved with one instance)", "≥ 0.5× one instance", cluster_rate_cell),
    ("registry micro-benchmarks", "no row slower than today's by > 10%; lifecycle ≥ GoShape", not_here),
]

print(f"# relay performance, {time.strftime('%Y-%m-%d %H:%M %Z')}" + (" (QUICK: tiny rows, figures mean nothing)" if quick else ""))
print()
print(f"machine: {cpu()}, {os.cpu_count()} cores, {mem_gib():.0f} GiB, {platform.system()} {platform.release()}; "
      f"load average {load_start} at the start, {load_end} at the end; {took} s in all. "
      "The load generator runs on the same cores as the target.")
print()
print("| row | target | " + " | ".join(label for _, label in targets) + " |")
print("|---|---|" + "---|" * len(targets))
for name, goal, cell in rows:
    print(f"| {name} | {goal} | " + " | ".join(cell(t).replace("|", "/") for t, _ in targets) + " |")
print()
for note in (ahead_note() and f"setup rate: {ahead_note()}", ratio_note() and f"sustainable rate: {ratio_note()}", latency_note()):
    if note:
        print(note)
PY
say "done in $((SECONDS - started)) s; row JSON in $out"
if [ "$failures" -gt 0 ]; then
  say "$failures row(s) failed"
  exit 1
fi
