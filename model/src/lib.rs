//! The reference model of `relay-registry`: a workspace-internal crate (`publish = false`) shared
//! by the library's tests, its proptest twin and its fuzz targets.
//!
//! - [`spec`]: the model itself — plain maps and vectors, one method per registry operation, each
//!   returning what the registry must return and which conns it must close with which reason.
//! - [`conn`]: `RecConn`, a conn with a serial number that records its closes per thread.
//! - [`op`]: the `Op` language (derives `arbitrary::Arbitrary`) that fuzzing and proptest speak.
//! - [`driver`]: replays ops on a real `Registry` and on the model and compares after every op;
//!   `run(&[u8])` / `run_churn(&[u8])` are what the fuzz targets and the regression replay call.

pub mod actor;
pub mod conn;
pub mod driver;
pub mod op;
pub mod spec;
