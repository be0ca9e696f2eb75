//! The only module that knows which synchronisation primitives are in use.
//!
//! Everything else in the crate takes its lock and atomics from here, so a model checker can swap
//! them in one place.

pub(crate) use parking_lot::Mutex;
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};
