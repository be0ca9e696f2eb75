//! What the per-frame lease check costs (`Hub::may_deliver`, the relay's `cluster` module docs:
//! "No stale delivery"), measured against the same frame push without it, in the same run.
//!
//! Each iteration pushes 64 frames of 1 KiB (`Utf8Bytes`, moved in) into the outbox shape of
//! `conn_send` (a mutex around a `VecDeque`, drained as the writer would), and:
//!
//! - `no check`: nothing else (the relay before the check);
//! - `single instance`: the check as a single instance makes it — the hub's cluster slot is
//!   empty (`OnceLock::get`), one branch;
//! - `cluster, lease held`: the check as cluster mode makes it — the slot's cluster, its
//!   liveness, and [`FenceDeadline::is_ahead_since`] (two atomic loads — the deadline, the
//!   epoch — and one read of the monotonic clock) on a deadline an hour ahead;
//! - `the check alone`: the cluster check, 64 times, without the push.
//!
//! The relay makes the check twice per frame: where the frame is handed on (the phone's task,
//! the binary's routing, a link's sink) and in the writer, before it is written.
//!
//! ```text
//! cargo bench -p relay-server --bench lease_check
//! ```

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parking_lot::Mutex;
use relay_cluster::deadline::FenceDeadline;
use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The outbox shape the frames are pushed into (as in `conn_send`).
#[derive(Default)]
struct Outbox {
    queue: Mutex<VecDeque<Utf8Bytes>>,
}

impl Outbox {
    fn send(&self, frame: Utf8Bytes) {
        self.queue.lock().push_back(frame);
    }

    fn drain(&self) {
        let batch = std::mem::take(&mut *self.queue.lock());
        black_box(batch);
    }
}

/// The path from the hub to the deadline: the cluster slot (`OnceLock<Cluster>`), the
/// cluster's `Arc<Liveness>`, the liveness's shared state holding the deadline.
struct Liveness {
    shared: Arc<FenceDeadline>,
}

struct Cluster {
    liveness: Arc<Liveness>,
}

/// `Hub::may_deliver` with its pointers, without the fence (never reached here).
#[inline]
fn may_deliver(slot: &OnceLock<Cluster>, epoch: u64) -> bool {
    match slot.get() {
        None => true,
        Some(cluster) => cluster.liveness.shared.is_ahead_since(epoch),
    }
}

/// A 1 KiB JSON text frame, as a phone would send it.
fn frame() -> Utf8Bytes {
    let pad = "x".repeat(1024 - 12);
    Utf8Bytes::from(format!("{{\"pad\":\"{pad}\"}}"))
}

fn lease_check(c: &mut Criterion) {
    let frame = frame();
    let single = OnceLock::new();
    let cluster = OnceLock::new();
    let deadline = FenceDeadline::new();
    deadline.set(Some(
        tokio::time::Instant::now() + Duration::from_secs(3600),
    ));
    let _ = cluster.set(Cluster {
        liveness: Arc::new(Liveness {
            shared: Arc::new(deadline),
        }),
    });
    assert!(may_deliver(&single, 0) && may_deliver(&cluster, 0));

    let mut group = c.benchmark_group("lease_check_1kib");
    group.throughput(Throughput::Elements(64));
    group.bench_function("no check", |b| {
        let outbox = Outbox::default();
        b.iter(|| {
            for _ in 0..64 {
                outbox.send(black_box(frame.clone()));
            }
            outbox.drain();
        });
    });
    for (name, slot) in [
        ("single instance", &single),
        ("cluster, lease held", &cluster),
    ] {
        group.bench_function(name, |b| {
            let outbox = Outbox::default();
            b.iter(|| {
                for _ in 0..64 {
                    if may_deliver(black_box(slot), black_box(0)) {
                        outbox.send(black_box(frame.clone()));
                    }
                }
                outbox.drain();
            });
        });
    }
    group.bench_function("the check alone", |b| {
        b.iter(|| {
            for _ in 0..64 {
                black_box(may_deliver(black_box(&cluster), black_box(0)));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, lease_check);
criterion_main!(benches);
