//! Replays, on stable, every minimised fuzz crash in `fuzz/regressions/<target>/` and every seed
//! input in `fuzz/seeds/<target>/`, through the same `run(&[u8])` the fuzz targets call.

use relay_registry_model as model;

use std::fs;
use std::path::{Path, PathBuf};

/// The files of `fuzz/<dir>/<target>/`, sorted (none if the directory is missing or empty).
fn inputs(dir: &str, target: &str) -> Vec<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let mut files: Vec<PathBuf> = match fs::read_dir(&path) {
        Ok(entries) => entries
            .map(|e| e.expect("readable directory entry").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let mut replayed = 0;
    for dir in ["regressions", "seeds"] {
        for file in inputs(dir, target) {
            let data = fs::read(&file).expect("readable input");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{} fails again", file.display());
            replayed += 1;
        }
    }
    replayed
}

#[test]
fn ops_crashes_and_seeds_replay_cleanly() {
    let replayed = replay("ops", model::driver::run);
    assert!(replayed > 0, "fuzz/seeds/ops/ has committed seed inputs");
}

#[test]
fn churn_crashes_and_seeds_replay_cleanly() {
    let replayed = replay("churn", model::driver::run_churn);
    assert!(replayed > 0, "fuzz/seeds/churn/ has committed seed inputs");
}

/// The empty input and a run of every byte value are valid inputs too (arbitrary never fails on
/// short data): the targets must not reject or crash on them.
#[test]
fn degenerate_inputs_run_cleanly() {
    let every_byte: Vec<u8> = (0..=255).collect();
    for data in [&[][..], &[0; 64], &[0xff; 64], &every_byte] {
        model::driver::run(data);
        model::driver::run_churn(data);
    }
}

/// Deterministic pseudo-random inputs of up to 4 KiB (the fuzzers' `-max_len`), so that plain
/// `cargo test` also runs long operation sequences through both targets.
#[test]
fn pseudo_random_inputs_run_cleanly() {
    let mut state = 0x5eed_u64;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut panicked = 0;
    for round in 0..64 {
        let len = 256 + (next() % 3840) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if round % 2 == 0 {
            panicked += model::driver::run_scenario(&model::driver::scenario(&data)).panicked;
        } else {
            model::driver::run_churn(&data);
        }
    }
    // The `ops` language includes phones that panic in `close` and `Drop`: random inputs reach
    // those paths (and the model predicted every one).
    assert!(panicked > 0, "no call panicked in 32 random `ops` inputs");
}
