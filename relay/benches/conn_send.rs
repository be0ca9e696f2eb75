//! The owned-frame `send` decision (`Endpoint::send`, once the registry's `Conn::send`), measured: for 1 KiB text frames that the relay already holds as
//! tokio-tungstenite's `Utf8Bytes` (as every frame it forwards arrives), the old signature
//! `send(&[u8])` — the conn must check UTF-8 again and copy into a new `Utf8Bytes` — against the
//! new `send(Utf8Bytes)` — the frame is moved in (here: a reference-count increment of a frame the
//! caller keeps, which is what the relay does when it may need to retry). Both push into the same
//! outbox shape as the relay's (a mutex around a `VecDeque`, drained as the writer would), in
//! the same run.
//!
//! ```text
//! cargo bench -p relay-server --bench conn_send
//! ```

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::hint::black_box;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The outbox shape both signatures push into.
#[derive(Default)]
struct Outbox {
    queue: Mutex<VecDeque<Utf8Bytes>>,
}

impl Outbox {
    /// The old signature: borrowed bytes, checked and copied.
    fn send_bytes(&self, frame: &[u8]) -> Result<(), std::str::Utf8Error> {
        let text = std::str::from_utf8(frame)?;
        self.queue.lock().push_back(Utf8Bytes::from(text));
        Ok(())
    }

    /// The new signature: the owned frame, moved in.
    fn send_owned(&self, frame: Utf8Bytes) {
        self.queue.lock().push_back(frame);
    }

    /// What the writer does with a batch.
    fn drain(&self) {
        let batch = std::mem::take(&mut *self.queue.lock());
        black_box(batch);
    }
}

/// A 1 KiB JSON text frame, as a phone would send it.
fn frame() -> Utf8Bytes {
    let pad = "x".repeat(1024 - 12);
    let text = format!("{{\"pad\":\"{pad}\"}}");
    assert_eq!(text.len(), 1022);
    Utf8Bytes::from(text)
}

fn conn_send(c: &mut Criterion) {
    let frame = frame();
    let mut group = c.benchmark_group("conn_send_1kib");
    group.throughput(Throughput::Elements(64));
    group.bench_function("old: send(&[u8]) (UTF-8 check + copy)", |b| {
        let outbox = Outbox::default();
        b.iter(|| {
            for _ in 0..64 {
                outbox.send_bytes(black_box(frame.as_bytes())).unwrap();
            }
            outbox.drain();
        });
    });
    group.bench_function("new: send(Utf8Bytes) (moved in)", |b| {
        let outbox = Outbox::default();
        b.iter(|| {
            for _ in 0..64 {
                outbox.send_owned(black_box(frame.clone()));
            }
            outbox.drain();
        });
    });
    group.finish();
}

criterion_group!(benches, conn_send);
criterion_main!(benches);
