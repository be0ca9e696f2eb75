//! The grace-expiry task: runs [`Registry::expire_due`] inside the runtime at each deadline (no
//! reaper thread, no polling), so the phones' closes run on the runtime; counts and logs each
//! expired server-id, and in cluster mode deletes its directory entry.
//!
//! [`Registry::expire_due`]: relay_registry::Registry::expire_due

use crate::hub::Hub;
use std::sync::Arc;

/// Expires grace windows as they come due, until the relay stops.
pub(crate) async fn run(hub: Arc<Hub>) {
    let mut changes = hub.registry.deadline_changes();
    let stopped = hub.shutdown.stopped.clone();
    loop {
        let expired = hub.registry.expire_due();
        for window in &expired {
            crate::cluster::claims::spawn_release_check(&hub, window.server_id());
            hub.metrics.grace_expired();
            tracing::info!(
                server = %hub.logs.server(window.server_id()),
                phones = window.phones(),
                "grace window expired"
            );
        }
        for panic in expired.panics() {
            tracing::error!(panic, "a connection's close panicked during grace expiry");
        }
        drop(expired);
        let wait = async {
            match hub.registry.next_deadline() {
                Some(at) => tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {}
                    _ = changes.changed() => {}
                },
                None => changes.changed().await,
            }
        };
        tokio::select! {
            _ = wait => {}
            _ = stopped.cancelled() => return,
        }
    }
}
