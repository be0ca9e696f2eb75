#!/usr/bin/env bash
# Verification stages of issue 3 (called from .ci/run): cargo-fuzz against the model, loom,
# ThreadSanitizer, and the deliberately broken claim caught by the linearizability checker.
# (The proptest twin, the fuzz-regression replay and the linearizability histories run in plain
# `cargo test`.) Prints each stage's name and elapsed time; fails on the first failure.
#
#   FUZZ_SECONDS=60 (per target)   bash .ci/verify.sh [fuzz|loom|tsan|broken]...
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
fuzz_seconds=${FUZZ_SECONDS:-60}
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(fuzz loom tsan broken)
# Each stage builds with its own flags, in its own target directory under fuzz/target (gitignored).
targets=$root/fuzz/target

stage() {
    local name=$1 start=$SECONDS
    shift
    echo "=== verify: $name"
    "$@"
    echo "=== verify: $name passed in $((SECONDS - start)) s"
}

ensure_nightly() {
    rustup toolchain list | grep '^nightly' >/dev/null || rustup toolchain install nightly --profile minimal
}

# cargo-fuzz build flags: optimised, with debug assertions (overflow checks), and no AddressSanitizer:
# the crate forbids unsafe code, and ASan would cost half the executions.
fuzz_flags=(-O --debug-assertions --sanitizer none)

# Runs one fuzz target; on a crash, minimises it into fuzz/regressions/<target>/ and fails.
fuzz_target() {
    local target=$1
    shift
    mkdir -p "fuzz/corpus/$target"
    if ! (cd fuzz && cargo +nightly fuzz run "${fuzz_flags[@]}" "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$fuzz_seconds" -max_len=4096 -print_final_stats=1 "$@"); then
        local crash
        crash=$(ls -t "fuzz/artifacts/$target"/crash-* 2>/dev/null | head -n1 || true)
        if [ -n "$crash" ]; then
            (cd fuzz && cargo +nightly fuzz tmin "${fuzz_flags[@]}" "$target" "../$crash" -- -runs=5000) || true
            local min
            min=$(ls -t "fuzz/artifacts/$target"/minimized-from-* 2>/dev/null | head -n1 || true)
            mkdir -p "fuzz/regressions/$target"
            cp "${min:-$crash}" "fuzz/regressions/$target/"
            echo "crash minimised into fuzz/regressions/$target/$(basename "${min:-$crash}")" \
                "(replayed by tests/fuzz_regressions.rs)" >&2
        fi
        return 1
    fi
}

fuzz() {
    ensure_nightly
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
    fuzz_target ops
    # Churn is about long runs: try long inputs from the start.
    fuzz_target churn -len_control=0
}

# Builds, then runs (under a timeout, so that a hang fails the stage instead of the whole CI run)
# the tests named by `cargo test` arguments "$@".
build_and_run() {
    local build=()
    for arg in "$@"; do
        [ "$arg" = -- ] && break
        build+=("$arg")
    done
    cargo "${build[@]}" --no-run
    timeout "${RUN_TIMEOUT:-600}" cargo "$@"
}

loom() {
    export LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=$targets/loom
    build_and_run test --release --manifest-path fuzz/checks/Cargo.toml --test loom
}

tsan() {
    ensure_nightly
    rustup component list --toolchain nightly --installed | grep '^rust-src' >/dev/null ||
        rustup component add rust-src --toolchain nightly
    local host
    host=$(rustc +nightly -vV | sed -n 's/^host: //p')
    # halt_on_error: the first report fails the run; zero reports is the bar. Release mode: the
    # optimised code is what runs in production, and TSan on it is ~10x faster than on debug.
    # LIN_HISTORIES: fewer linearizability histories than plain `cargo test` (each still >= 50 ops).
    export LIN_HISTORIES=1000 RUSTFLAGS="-Zsanitizer=thread" CARGO_TARGET_DIR=$targets/tsan
    export TSAN_OPTIONS="suppressions=$root/.ci/tsan.supp halt_on_error=1 second_deadlock_stack=1"
    build_and_run +nightly test -Zbuild-std --target "$host" --release \
        --manifest-path fuzz/checks/Cargo.toml \
        --test linearizability --test concurrency --test locking --test reaper
}

broken() {
    # Under this cfg claim_server checks and installs under two lock acquisitions; the
    # linearizability checker must find a history no sequential order explains.
    export RUSTFLAGS="--cfg relay_registry_broken_claim" CARGO_TARGET_DIR=$targets/broken
    build_and_run test --manifest-path fuzz/checks/Cargo.toml --test linearizability \
        broken_claim_race_is_caught_by_the_checker -- --exact --nocapture
}

total=$SECONDS
for s in "${stages[@]}"; do
    case $s in
    # Each stage in a subshell, so its exported flags stay its own.
    fuzz | loom | tsan | broken) (stage "$s" "$s") ;;
    *) echo "unknown stage $s" >&2; exit 2 ;;
    esac
done
echo "=== verify: all stages passed in $((SECONDS - total)) s"
