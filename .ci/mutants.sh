#!/usr/bin/env bash
# Mutation testing of the library (issue 8): cargo-mutants mutates src/ of relay-registry and runs
# the library's fast tests against each mutant — its unit tests and integration tests, without
# the compile-fail cases (trybuild rebuilds the crate per case) and without doctests — never the
# relay's end-to-end tests. A mutant that no test kills is "missed"; the README's testing section
# lists the counts of the last full run and why each remaining missed mutant is equivalent.
#
#   bash .ci/mutants.sh                 # the whole library (about 2 hours on 2 cores)
#   bash .ci/mutants.sh -f src/state.rs # one file; any other cargo-mutants option works too
#
# Not part of .ci/run (too slow for CI). Results: target/mutants/mutants.out/ (caught.txt,
# missed.txt, unviable.txt, timeout.txt, outcomes.json).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants

# Not behaviour, or not compiled in these tests: the invariant checker (`test-util`) and the heap
# iterator it uses, the deliberately broken claim (only under --cfg relay_registry_broken_claim),
# the mock conn of the compile-time assertions (never run), loom's lock shim (only under
# --cfg loom) and the flag-less lock token of release builds.
exclude=(
    --exclude-re 'check_invariants'
    --exclude-re 'PhoneList<C>::check\b'
    --exclude-re 'Deadlines::iter'
    --exclude-re 'broken_claim'
    --exclude-re 'AnyConn'
    --exclude-re 'loom_shim'
    --exclude-re 'no_flag'
)
tests=(--lib)
for t in tests/*.rs; do
    name=$(basename "$t" .rs)
    case $name in
    compile_fail | loom) ;; # trybuild's rebuilds; loom runs only under --cfg loom
    *) tests+=(--test "$name") ;;
    esac
done

# Fewer random cases per mutant than plain `cargo test` (each test still runs in full).
export PROPTEST_CASES=${PROPTEST_CASES:-128} LIN_HISTORIES=${LIN_HISTORIES:-400}
nice -n 10 cargo mutants --package relay-registry --output target/mutants \
    --timeout-multiplier 3 "${exclude[@]}" "$@" -- "${tests[@]}"
