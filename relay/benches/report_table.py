"""The performance report's table and the figures' data, from the row files of one run of
relay/benches/report.sh (which calls it; not meant to be run by hand).

    python3 report_table.py OUT LOAD_START LOAD_END SECONDS QUICK ROWS

Prints the Markdown table (every row next to its target, whether it is met and the ratio) and
writes OUT/figures.json for relay-figures (loadgen/src/figures/data.rs describes the format).
A row file that is missing or says {"error": ...} is "not measured", never a zero.
"""
import json
import os
import platform
import sys
import time

out, load_start, load_end, took, quick, rows_asked = sys.argv[1:7]
quick = quick == "1"
now = time.gmtime()

TARGETS = [("relay", "relay-registry relay"), ("gorelay", "Go relay shape"), ("bare", "bare forwarder")]
SEARCH_INDEX = {"relay": 0, "gorelay": 1, "bare": 2}


def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except Exception:
        return None


def read_number(name):
    try:
        with open(os.path.join(out, name)) as f:
            return float(f.read().strip())
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


def suffix(tls):
    return "-tls" if tls else ""


def failed(r):
    if r is None:
        if rows_asked != "all":
            return f"not measured (ROWS={rows_asked})"
        return "not measured (QUICK)" if quick else "not measured (run failed)"
    return f"not measured: {r['error'] or 'the run failed'}" if "error" in r else None


def kib(v):
    return "n/a" if v is None else f"{v:.1f} KiB"


def ok_or_none(r):
    return None if failed(r) else r


# ---------------------------------------------------------------- values


def idle_kib(t, tls):
    r = ok_or_none(load(f"{t}-idle{suffix(tls)}.json"))
    return r and r.get("per_conn_kib")


def frame_kib(t, tls):
    r = ok_or_none(load(f"{t}-idle{suffix(tls)}.json"))
    return r and (r.get("after_frame") or {}).get("per_conn_kib")


def setup_rate(t, tls):
    r = ok_or_none(load(f"{t}-idle{suffix(tls)}.json"))
    return r and r["setup"]["per_second"]


def search_of(t, tls):
    c = load(f"search{suffix(tls)}.json")
    if c is None or "error" in c:
        return c
    return c["searches"][SEARCH_INDEX[t]]


def sustainable(t, tls):
    r = ok_or_none(search_of(t, tls))
    return r and r.get("sustainable_per_s")


def at_relay_half(t, tls):
    c = load(f"search{suffix(tls)}.json")
    if c is None or "error" in c or not c.get("first_half_per_s"):
        return None
    return c["at_first_half"][SEARCH_INDEX[t]]


def worse_p99(step):
    return max(step["up"]["p99_ms"], step["down"]["p99_ms"])


def half_p99(t, tls):
    at = at_relay_half(t, tls)
    return worse_p99(at["median"]) if at and at.get("median") else None


def cpu_per_conn(t, tls):
    """(target s, load generator s) per connection of the idle row: its setup and one echo."""
    name = f"{t}-idle{suffix(tls)}.json"
    r = ok_or_none(load(name))
    target, loadgen = read_number(f"{name}.target-cpu"), read_number(f"{name}.loadgen-cpu")
    conns = r and r["setup"]["accepted"] + 1
    return (target / conns, loadgen / conns) if conns and target is not None and loadgen is not None else None


def cpu_per_frame(t, tls):
    """(target µs, load generator µs) per frame delivered in the 10,000 frames/s row, its
    connections' setup taken out at the idle row's CPU per connection."""
    name = f"{t}-10k{suffix(tls)}.json"
    r = ok_or_none(load(name))
    target, loadgen = read_number(f"{name}.target-cpu"), read_number(f"{name}.loadgen-cpu")
    per_conn = cpu_per_conn(t, tls)
    if not r or target is None or loadgen is None or per_conn is None:
        return None
    conns = r["binaries_setup"]["accepted"] + r["phones_setup"]["accepted"]
    frames = r["step"]["up"]["received"] + r["step"]["down"]["received"]
    if not frames:
        return None
    return (1e6 * max(0.0, target - conns * per_conn[0]) / frames,
            1e6 * max(0.0, loadgen - conns * per_conn[1]) / frames)


# ---------------------------------------------------------------- cells


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


def idle_cell(tls):
    def cell(t):
        r = load(f"{t}-idle{suffix(tls)}.json")
        return failed(r) or kib(r.get("per_conn_kib"))
    return cell


def frame_cell(tls):
    def cell(t):
        r = load(f"{t}-idle{suffix(tls)}.json")
        if failed(r):
            return failed(r)
        f = r.get("after_frame") or {}
        return f"{kib(f.get('per_conn_kib'))} ({f.get('received', 0)} of {f.get('sent', 0)} echoed)"
    return cell


def setup_cell(tls):
    def cell(t):
        r = load(f"{t}-idle{suffix(tls)}.json")
        if failed(r):
            return failed(r)
        s = r["setup"]
        return f"{s['per_second']:,.0f}/s ({s['accepted']} in {s['seconds']:.1f} s{extras(s)})"
    return cell


def extras(s):
    parts = [f"refused {k}: {n}" for k, n in s.get("refused", {}).items()]
    parts += [f"failed {k}: {n}" for k, n in s.get("failed", {}).items()]
    return "; " + "; ".join(parts) if parts else ""


def many(t):
    r = load(f"{t}-19k.json")
    if failed(r):
        return failed(r)
    s, f = r["setup"], r.get("after_frame") or {}
    return f"{s['accepted']} open, {f.get('received', 0)} answered a frame{extras(s)}"


def limit(t):
    r = load(f"{t}-limit.json")
    if failed(r):
        return failed(r)
    s = r["setup"]
    resume = load(f"{t}-resume.json")
    if resume is None or "error" in resume:
        after = "afterwards: no service" + (f" ({resume['error']})" if resume else "")
    else:
        lost = resume["step"]["up"]["lost"] + resume["step"]["down"]["lost"]
        after = f"afterwards: {resume['phones_setup']['accepted']}/4 phones, {lost} lost"
    return f"{s['accepted']} of {s['attempted']} open{extras(s)}; {after}"


def sustained(name):
    def cell(t):
        r = load(f"{t}-{name}.json")
        return failed(r) or step_cell(r["step"])
    return cell


def cpu_cell(t):
    parts = []
    for tls, label in ((False, "ws"), (True, "wss")):
        c = cpu_per_frame(t, tls)
        parts.append(f"{label}: {c[0]:.1f} µs (load generator {c[1]:.1f} µs)" if c else f"{label}: not measured")
    per_conn = cpu_per_conn(t, True)
    if per_conn:
        parts.append(f"a wss:// connection's setup and echo: {1e3 * per_conn[0]:.2f} ms "
                     f"(load generator {1e3 * per_conn[1]:.2f} ms)")
    return "; ".join(parts)


def search_cell(tls):
    def cell(t):
        r = search_of(t, tls)
        if failed(r):
            return failed(r)
        rate = r.get("sustainable_per_s")
        return f"{rate:,}/s each way" if rate else "no step passed"
    return cell


def half_cell(tls):
    def cell(t):
        r = search_of(t, tls)
        if failed(r):
            return failed(r)
        at = at_relay_half(t, tls)
        if not (at and at.get("median")):
            return "n/a (no sustainable rate)"
        rounds = ", ".join(f"{p:.1f}" for p in at["p99_ms"])
        return (f"p99 {worse_p99(at['median']):.1f} ms (median of {len(at['p99_ms'])} rounds in turn: "
                f"{step_cell(at['median'], with_rate=True)}; p99 of each round: {rounds} ms)")
    return cell


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


def relay_only(cell):
    """A row measured on our relay alone: `cell()` in its column, "—" in the others."""
    return lambda t: cell() if t == "relay" else "—"


def cluster_row(cell):
    """A cluster row: as `relay_only`, or why the cluster rows were not measured."""
    return relay_only(lambda: cluster_skipped() or cell())


def cluster_skipped():
    r = load("cluster-skipped.json")
    return f"not measured: {r['error']}" if r else None


@cluster_row
def hop_cell():
    parts = []
    for path, label in (("single", "one instance"), ("same", "cluster mode, same instance"),
                        ("cross", "across instances (HAProxy splits the endpoints)")):
        p50, all_ = hop_p50(path)
        parts.append(f"{label}: p50 {p50:.2f} ms (rounds {', '.join(f'{x:.2f}' for x in all_)})"
                     if p50 else f"{label}: no clean run")
    return "; ".join(parts)


def cluster_rates():
    c = load("cluster-search.json")
    if c is None or "error" in c:
        return None, None
    return tuple(s.get("sustainable_per_s") for s in c["searches"])


@cluster_row
def cluster_rate_cell():
    c = load("cluster-search.json")
    if failed(c):
        return failed(c)
    one, three = cluster_rates()
    return f"one instance {one or 0:,}/s, three behind round-robin HAProxy {three or 0:,}/s each way"


def read_parts(name):
    """The "label seconds" lines report.sh writes for a row whose CPU is split over processes."""
    try:
        with open(os.path.join(out, name)) as f:
            return [(label, float(v)) for label, v in (line.split() for line in f if line.strip())]
    except (OSError, ValueError):
        return None


def cluster_cpu(which):
    """({process: µs}, load generator µs) per frame delivered in the cluster's fixed-rate row
    through one instance or three (connection setup included: 100 connections against about
    100,000 frames)."""
    name = f"cluster-cpu-{which}.json"
    r = ok_or_none(load(name))
    parts, loadgen = read_parts(f"{name}.cpu-parts"), read_number(f"{name}.loadgen-cpu")
    if not r or not parts or loadgen is None:
        return None
    frames = r["step"]["up"]["received"] + r["step"]["down"]["received"]
    if not frames:
        return None
    return {label: 1e6 * v / frames for label, v in parts}, 1e6 * loadgen / frames


def cluster_cpu_total(which):
    """All the processes' CPU per frame, the load generator's included: on cores they share, the
    rate one path can reach goes as the inverse of it."""
    c = cluster_cpu(which)
    return sum(c[0].values()) + c[1] if c else None


@cluster_row
def cluster_cpu_cell():
    parts = []
    for which, label in (("one", "one instance"), ("three", "three behind round-robin HAProxy")):
        c = cluster_cpu(which)
        if not c:
            parts.append(f"{label}: {failed(load(f'cluster-cpu-{which}.json')) or 'not measured'}")
            continue
        split = ", ".join(f"{k} {v:.1f}" for k, v in sorted(c[0].items(), key=lambda kv: -kv[1]))
        total = f"{sum(c[0].values()):.1f} µs ({split}; " if len(c[0]) > 1 else f"{split} µs ("
        parts.append(f"{label}: {total}load generator {c[1]:.1f} µs)")
    one, three = cluster_cpu_total("one"), cluster_cpu_total("three")
    if one and three:
        parts.append(f"every process, the load generator's included: {one:.1f} and {three:.1f} µs, "
                     f"so the same cores give three instances about {one / three:.2f}× one's rate "
                     "at this rate's cost per frame")
    return "; ".join(parts)


# ---------------------------------------------------------------- the registry's and re-homing rows


def read_text(name):
    try:
        with open(os.path.join(out, name)) as f:
            return f.read()
    except OSError:
        return None


def routing_ns():
    """{(route, threads): ns} from criterion's output of benches/benches/routing.rs (the middle
    estimate of `time: [low mid high]`, the name on its own line or before `time:`)."""
    text = read_text("routing.txt")
    if not text:
        return {}
    scale = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
    found, name = {}, None
    for line in text.splitlines():
        if line[:1].isalpha():
            name = line.split()[0]
        if "time:" in line and name and name.startswith("routing/"):
            low_mid_high = line.split("[", 1)[1].split()
            _, route, threads = name.split("/")
            found[(route, int(threads.split("_")[0]))] = float(low_mid_high[2]) * scale[low_mid_high[3]]
    return found


ROUTES = [("binary_to_phone", "claim.phone (binary → phone, its tenure's lock)"),
          ("phone_to_binary", "ticket.binary (phone → binary, one atomic load)"),
          ("binary_to_phone_by_id", "phone_for (the registry's lock)")]


def growth(ns, route):
    return ratio(ns.get((route, 4)), ns.get((route, 1)))


@relay_only
def route_cell():
    ns = routing_ns()
    if not ns:
        return failed(None) if rows_asked != "all" else "not measured (the benchmark failed)"
    parts = []
    for route, label in ROUTES:
        times = "/".join(f"{ns[(route, n)]:.1f}" if (route, n) in ns else "?" for n in (1, 2, 4))
        parts.append(f"{label}: {times} ns (×{growth(ns, route) or 0:.2f} from 1 to 4 threads)")
    return "; ".join(parts)


def v_route():
    ns = routing_ns()
    b, p = growth(ns, "binary_to_phone"), growth(ns, "phone_to_binary")
    x = ratio(b, p)
    # On a machine with fewer cores than threads every route grows; "scales like the phone →
    # binary route" is growth within a quarter of that route's.
    return verdict(at_most(x, 1.25, f"grows {x or 0:.2f}× as much as phone → binary from 1 to 4 threads"))


def rehome():
    return ok_or_none(load("rehome.json"))


@relay_only
def rehome_cell():
    r = load("rehome.json")
    if failed(r):
        return failed(r)
    first, last = r.get("kill_to_first_s"), r.get("kill_to_all_s")
    return (f"fresh claims {r['fresh_claims_per_s']:,.0f}/s ({r['binaries']:,} binaries); "
            f"{r['rehomed']:,} of {r['on_victim']:,} re-homed, the first {first or 0:.2f} s and the last "
            f"{last or 0:.2f} s after the kill: {r['burst_s']:.2f} s from the first to the last "
            f"({r.get('burst_claims_per_s') or 0:,.0f} claims/s); 503s {r['unavailable_503']}, "
            f"refused {r['refused']}" + rehome_cpu_text(r))


def rehome_cpu_text(r):
    """The CPU the run's processes used per claim (cluster_rehome.sh's rehome.json.cpu)."""
    c = load("rehome.json.cpu")
    if not c:
        return ""
    claims = r["binaries"] + r["rehomed"]
    total = c["client_s"] + c["nats_s"] + c["survivors_s"]
    return (f"; CPU over the whole run (start-up and the lease's wait included; the killed instance's not "
            f"counted): the client {c['client_s']:.2f} s, nats-server {c['nats_s']:.2f} s, the two surviving "
            f"instances {c['survivors_s']:.2f} s for {claims:,} claims: {1e3 * total / claims:.2f} ms a claim, "
            f"where 5,000 claims/s on {os.cpu_count()} cores allows {1e3 * (os.cpu_count() or 1) / 5000:.2f} ms")


def v_rehome():
    r = rehome()
    if not r or r["rehomed"] < r["on_victim"]:
        return verdict((None, False, ""))
    return verdict(at_most(r["kill_to_all_s"], 5.0, f"all hold {r['kill_to_all_s']:.1f} s after the kill "
                           f"(the last {r['burst_s']:.2f} s after the first)"),
                   at_least(r["fresh_claims_per_s"], 5000, f"{r['fresh_claims_per_s']:,.0f} claims/s"))


def goshape_rows():
    """The tables benches/goshape.sh printed: [(go, ours, median)] and {what: (ours, go, ratio)}."""
    text = read_text("goshape.md")
    times, bytes_ = [], {}
    for line in (text or "").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[2].endswith("×") and not cells[0].startswith("per "):
            times.append((cells[0], cells[1], float(cells[2].rstrip("×"))))
        elif len(cells) == 5 and cells[0].startswith("per "):
            bytes_[cells[0]] = (float(cells[1]), float(cells[2]), float(cells[3].rstrip("×")))
    return times, bytes_


def goshape_cell(t):
    if t == "bare":
        return "—"
    times, bytes_ = goshape_rows()
    if not times or len(bytes_) < 2:
        return failed(None) if rows_asked != "all" else "not measured (benches/goshape.sh failed)"
    if t == "gorelay":
        return ("Go's own registry (../shared/baselines/goshape, `go test -bench`): "
                f"{bytes_['per server-id'][1]:.1f} B per id, {bytes_['per phone'][1]:.1f} B per phone")
    level = [ours for _, ours, x in times if x >= 1.0]
    behind = [f"{ours} {x:.2f}×" for _, ours, x in times if x < 1.0]
    return (f"{len(level)} of {len(times)} time rows at least level with Go (Go ÷ ours, one round"
            + (f"; behind: {', '.join(behind)}" if behind else "") + "); "
            f"{bytes_['per server-id'][0]:.1f} B per id, {bytes_['per phone'][0]:.1f} B per phone")


def v_goshape():
    times, bytes_ = goshape_rows()
    if not times or len(bytes_) < 2:
        return verdict((None, False, ""))
    slowest = min(x for _, _, x in times)
    return verdict(at_least(slowest, 1.0, f"slowest row {slowest:.2f}× Go"),
                   at_most(bytes_["per server-id"][2], 1.2, f"{bytes_['per server-id'][2]:.2f}× Go's bytes per id"),
                   at_most(bytes_["per phone"][2], 1.2, f"{bytes_['per phone'][2]:.2f}× per phone"))


# ---------------------------------------------------------------- verdicts
# Each check is (value or None, holds?, what it says); a row is met when every check holds.


def verdict(*checks):
    if any(value is None for value, _, _ in checks):
        return "n/a (not measured)"
    said = ", ".join(text for _, _, text in checks)
    return ("yes: " if all(ok for _, ok, _ in checks) else "**no**: ") + said


def ratio(a, b):
    return a / b if a is not None and b else None


def at_most(value, limit, text):
    return (value, value is not None and value <= limit, text)


def at_least(value, limit, text):
    return (value, value is not None and value >= limit, text)


def v_idle(tls, cap, go_share):
    def v():
        r, g = idle_kib("relay", tls), idle_kib("gorelay", tls)
        share = ratio(r, g)
        return verdict(at_most(r, cap, f"{r or 0:.1f} KiB"),
                       at_most(share, 1 / go_share, f"1/{1 / share:.1f} of Go" if share else "vs Go n/a"))
    return v


def v_frame(tls, cap):
    def v():
        r = frame_kib("relay", tls)
        return verdict(at_most(r, cap, f"{r or 0:.1f} KiB"))
    return v


def v_setup_plain():
    r, g = setup_rate("relay", False), setup_rate("gorelay", False)
    x = ratio(r, g)
    return verdict(at_least(r, 5000, f"{r or 0:,.0f}/s"), at_least(x, 1.0, f"{x or 0:.2f}× Go"))


def v_setup_tls():
    r = setup_rate("relay", True)
    g, b = ratio(r, setup_rate("gorelay", True)), ratio(r, setup_rate("bare", True))
    return verdict(at_least(g, 2.0, f"{g or 0:.2f}× Go"), at_least(b, 0.9, f"{b or 0:.2f}× bare"))


def v_sustainable(tls):
    def v():
        r = sustainable("relay", tls)
        b, g = ratio(r, sustainable("bare", tls)), ratio(r, sustainable("gorelay", tls))
        return verdict(at_least(b, 0.9, f"{b or 0:.2f}× bare"), at_least(g, 3.0, f"{g or 0:.2f}× Go"))
    return v


def v_half(tls):
    def v():
        x = ratio(half_p99("relay", tls), half_p99("bare", tls))
        return verdict(at_most(x, 1.5, f"{x or 0:.2f}× bare"))
    return v


def v_many():
    r = ok_or_none(load("relay-19k.json"))
    answered = r and (r.get("after_frame") or {}).get("received")
    return verdict(at_least(answered, 19000, f"{answered or 0:,} answered"))


def v_hop():
    single, cross = hop_p50("single")[0], hop_p50("cross")[0]
    x = ratio(cross, single)
    return verdict(at_most(x, 2.0, f"{x or 0:.2f}× one instance"))


def v_cluster_rate():
    one, three = cluster_rates()
    x = ratio(three, one)
    bound = ratio(cluster_cpu_total("one"), cluster_cpu_total("three"))
    said = f"{x or 0:.2f}× one instance" + (f" (CPU per frame predicts {bound:.2f}×)" if bound else "")
    return verdict(at_least(x, 0.5, said))


def none():
    return ""


if quick:
    sizes = dict(idle="500", many="1,000 phones on 4 binaries", low="20 ids × 4 phones, 400", mid="800",
                 search="20 × 4")
else:
    sizes = dict(idle="10,000", many="19,000 phones on 19 binaries", low="200 ids × 4 phones, 10k", mid="40k",
                 search="200 × 4")
search_shape = f"{sizes['search']}, 1 KiB, both ways, 0 lost, nothing closed, p99 ≤ 50 ms; the three searched interleaved"

rows = [
    (f"RSS per idle phone (delta over {sizes['idle']} idle phones on one binary)", "≤ 4 KiB, ≤ 1/9 of Go",
     idle_cell(False), v_idle(False, 4, 9)),
    ("RSS per phone after one 1 KiB frame each way", "≤ 6 KiB", frame_cell(False), v_frame(False, 6)),
    (f"RSS per idle wss:// phone ({sizes['idle']} idle phones)", "≤ 8 KiB, ≤ 1/6 of Go with TLS",
     idle_cell(True), v_idle(True, 8, 6)),
    ("RSS per wss:// phone after one 1 KiB frame each way", "≤ 12 KiB", frame_cell(True), v_frame(True, 12)),
    (f"connection setup ({sizes['idle']} phones, upgrade + register, 64 attempts in flight)",
     "≥ 5,000/s, ahead of Go", setup_cell(False), v_setup_plain),
    (f"TLS connection setup ({sizes['idle']} phones, handshake + upgrade + register)",
     "≥ 2× Go with TLS, ≥ 0.9× bare with TLS", setup_cell(True), v_setup_tls),
    (f"concurrent connections ({sizes['many']}, each echoing one frame)", "≥ 19,000 open, each answering", many,
     v_many if not quick else none),
    ("past the descriptor limit (20,500 phones; then a 2 × 2 run)", "refused cleanly, service resumes", limit, none),
    (f"{sizes['low']} frames/s each way offered, 1 KiB frames", "(context)", sustained("10k"), none),
    (f"same over wss://", "(context)", sustained("10k-tls"), none),
    ("CPU per frame delivered in those two rows (the target's; the load generator's, workers included; "
     "each row's connection setup taken out at the idle row's CPU per connection)", "(context)", cpu_cell, none),
    (f"{sizes['low'].rsplit(', ', 1)[0]}, {sizes['mid']} frames/s each way offered", "(context)",
     sustained("40k"), none),
    ("50 ids × 16 phones, 160k frames/s each way offered (saturating)", "(context)", sustained("160k"), none),
    (f"sustainable rate ({search_shape})", "≥ 0.9× bare, ≥ 3× Go", search_cell(False), v_sustainable(False)),
    (f"sustainable rate over TLS ({search_shape})", "≥ 0.9× bare with TLS, ≥ 3× Go with TLS", search_cell(True),
     v_sustainable(True)),
    ("p99 at the relay's half rate (the worse direction)", "≤ 1.5× bare at the same rate", half_cell(False),
     v_half(False)),
    ("p99 at the relay's half rate over TLS", "≤ 1.5× bare with TLS at the same rate", half_cell(True),
     v_half(True)),
    ("cross-instance (cluster) hop p50, 4 ids × 4 phones, 2,000 frames/s each way, the worse direction",
     "≤ 2× one instance", hop_cell, v_hop),
    (f"CPU per frame delivered through one instance and through three (20 ids × 4 phones, "
     f"{sizes['low'].rsplit(', ', 1)[1]} frames/s each way; each process's CPU, connection setup included)",
     "(context)", cluster_cpu_cell, none),
    ("sustainable rate through 3 instances (20 ids × 4 phones, interleaved with one instance)",
     "≥ 0.5× one instance", cluster_rate_cell, v_cluster_rate),
    (f"re-homing after an instance dies ({'300' if quick else '5,000'} binaries on 3 instances, one killed -9, "
     f"lease {'4' if quick else '10'} s; relay/benches/cluster_rehome.sh)",
     "all hold their ids again within 5 s; directory claims ≥ 5,000/s on 3 instances", rehome_cell, v_rehome),
    ("binary → phone route from 1, 2 and 4 threads at once (each thread its own 64 binaries × 4 phones; "
     "ns per round of one lookup on every thread; benches/benches/routing.rs)",
     "no registry lock per frame: scales with threads like the phone → binary route", route_cell, v_route),
    ("registry against the Go registry itself (same workloads, one round, run back to back; "
     "250,000 ids × 4 phones for the bytes; benches/goshape.sh)",
     "every time row at least level with Go; bytes per id and per phone within 1.2× of Go",
     goshape_cell, v_goshape),
]

caption = (f"{time.strftime('%Y-%m-%d %H:%M UTC', now)}, {os.cpu_count()} cores shared with the load generator, "
           f"load average {load_start.split()[0]} at the start, {load_end.split()[0]} at the end"
           + (" (QUICK: tiny rows, figures mean nothing)" if quick else ""))
print(f"# relay performance, {time.strftime('%Y-%m-%d %H:%M UTC', now)}"
      + (" (QUICK: tiny rows, figures mean nothing)" if quick else ""))
print()
print(f"machine: {cpu()}, {os.cpu_count()} cores, {mem_gib():.0f} GiB, {platform.system()} {platform.release()}; "
      f"load average {load_start} at the start, {load_end} at the end; {took} s in all. "
      "The load generator runs on the same cores as the target.")
print()
print("| row | target | " + " | ".join(label for _, label in TARGETS) + " | met? |")
print("|---|---|" + "---|" * len(TARGETS) + "---|")
for name, goal, cell, judge in rows:
    print(f"| {name} | {goal} | " + " | ".join(cell(t).replace("|", "/") for t, _ in TARGETS)
          + f" | {judge()} |")
print()
for tls in (False, True):
    c = load(f"search{suffix(tls)}.json")
    if c and "error" not in c and c.get("first_half_per_s"):
        print(f"the relay's half rate{' over TLS' if tls else ''}: {c['first_half_per_s']:,}/s each way")


# ---------------------------------------------------------------- the figures' data


def latency_points(t, tls):
    r = ok_or_none(search_of(t, tls))
    if not r:
        return []
    steps = list(r.get("steps") or [])
    at = at_relay_half(t, tls)
    if at and at.get("median"):
        steps.append(at["median"])
    by_rate = {}
    for s in steps:
        p50 = max(s["up"]["p50_ms"], s["down"]["p50_ms"])
        by_rate.setdefault(s["offered_per_s"], []).append((worse_p99(s), p50))
    points = []
    for rate, values in sorted(by_rate.items()):
        p99, p50 = sorted(values)[(len(values) - 1) // 2]  # a retried rate: the median round
        points.append([rate, p50, p99])
    return points


transports = (("plain", False), ("tls", True))
figures = {
    "caption": caption,
    "targets": [{"key": t, "label": label} for t, label in TARGETS],
    "latency": [{"transport": name, "target": t, "points": latency_points(t, tls)}
                for name, tls in transports for t, _ in TARGETS],
    "sustainable": [{"transport": name, "target": t, "per_s": sustainable(t, tls)}
                    for name, tls in transports for t, _ in TARGETS],
    "memory": [{"transport": name, "target": t, "idle_kib": idle_kib(t, tls), "after_frame_kib": frame_kib(t, tls)}
               for name, tls in transports for t, _ in TARGETS],
    "memory_targets": [{"transport": "plain", "idle_kib": 4, "after_frame_kib": 6},
                       {"transport": "tls", "idle_kib": 8, "after_frame_kib": 12}],
}
with open(os.path.join(out, "figures.json"), "w") as f:
    json.dump(figures, f, indent=1)
