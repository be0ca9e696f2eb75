//! Shared by the registry's benchmarks (`benches/benches/`) and the footprint measurement
//! (`src/bin/footprint.rs`): the connection type they register, and `GoShape`, a port of the Go
//! registry that relay-registry replaces, measured side by side on identical inputs.

pub mod bench_conn;
pub mod go_shape;
