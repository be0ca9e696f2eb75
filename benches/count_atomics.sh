#!/usr/bin/env bash
# Counts the atomic read-modify-write instructions (lock-prefixed, and xchg with a memory operand)
# that one scenario of benches/benches/probe.rs executes per operation, from callgrind's
# per-instruction execution counts (only `probe::measured_*` is collected, so the setup is not).
# Usage: benches/count_atomics.sh SCENARIO IMPL [N]   e.g. lifecycle registry 10000 | lifecycle go_shape
# Builds the probe (cargo bench --no-run); needs valgrind, objdump and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
scen=${1:?usage: count_atomics.sh SCENARIO IMPL [N]}; impl=${2:?IMPL: registry or go_shape}; n=${3:-10000}
cargo bench -q -p relay-registry-benches --bench probe --no-run 2>/dev/null
bin=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/probe-* | grep -v '\.d$' | head -n1)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
valgrind --tool=callgrind --dump-instr=yes --compress-pos=no --compress-strings=no \
  --toggle-collect='probe::measured_*' --callgrind-out-file="$out" "$bin" "$scen" "$impl" "$n" >/dev/null 2>&1
python3 - "$bin" "$out" "$n" <<'PY'
import collections, re, subprocess, sys

binary, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])


def atomic_addresses(obj):
    """Addresses of the atomic read-modify-write instructions in `obj` (file offsets)."""
    found = set()
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj], capture_output=True, text=True)
    for line in listing.stdout.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)", line)
        if m and (re.match(r"lock\b", m.group(2)) or (m.group(2).startswith("xchg") and "(" in m.group(2))):
            found.add(int(m.group(1), 16))
    return found


def symbols(obj):
    table = {}
    for line in subprocess.run(["nm", "-C", obj], capture_output=True, text=True).stdout.splitlines():
        p = line.split(" ", 2)
        if len(p) == 3 and p[0] and p[1] in "tT":
            table.setdefault(p[2], int(p[0], 16))
    return table


# callgrind's cost lines: "ADDR LINE Ir" (self cost); the line after "calls=" is a call's
# inclusive cost and is skipped.
executed = collections.defaultdict(collections.Counter)
lowest = {}
obj = fn = None
after_call = False
for line in open(out):
    if line.startswith("ob="):
        obj = line[3:].strip()
    elif line.startswith("fn="):
        fn = line[3:].strip()
    elif line.startswith("calls="):
        after_call = True
    elif line.startswith("0x"):
        if after_call:
            after_call = False
            continue
        fields = line.split()
        addr = int(fields[0], 16)
        executed[obj][addr] += int(fields[-1])
        lowest[(obj, fn)] = min(lowest.get((obj, fn), addr), addr)

total = 0
for obj, counts in executed.items():
    if not obj or not obj.startswith("/"):
        continue
    # Load offset (0 for the addresses callgrind reports in file terms): page-rounded distance
    # between a function's lowest executed address and its symbol.
    syms, base = symbols(obj), 0
    for (o, f), addr in lowest.items():
        if o == obj and f in syms:
            base = (addr - syms[f]) & ~0xFFF
            break
    atomics = atomic_addresses(obj)
    hits = sum(c for a, c in counts.items() if a - base in atomics)
    if hits:
        print(f"  {obj.rsplit('/', 1)[-1]}: {hits / n:.1f} per op")
    total += hits
print(f"atomic RMWs per op: {total / n:.1f}")
PY
