//! A binary's connection task: resolve a conflicting claim (probe the holder, take over a silent
//! one), route its envelopes to its own phones, and open the grace window when its socket ends.
//!
//! The task holds its `ServerClaim` for as long as it runs: dropping it (even in a panic unwind)
//! releases the id and closes the phones, so there is no cleanup path to forget.

use crate::Hub;
use crate::endpoint::Endpoint;
use crate::envelope::Envelope;
use crate::join;
use crate::metrics::{Direction, DropReason, EndpointLabel, Outcome};
use crate::session::{Event, Session};
use relay_registry::{CloseReason, Conn, RegistryError, SendError, ServerClaim};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Runs a binary's connection until it ends; `first` is the result of its pre-upgrade claim.
pub async fn run(
    hub: Arc<Hub>,
    mut session: Session,
    server_id: String,
    first: Result<ServerClaim<Endpoint>, RegistryError>,
) {
    let conn = session.conn().clone();
    let draining = hub.shutdown.draining.clone();
    let claim = tokio::select! {
        claim = acquire(&hub, &server_id, &conn, first) => claim,
        _ = draining.cancelled() => {
            conn.close(CloseReason::ShuttingDown);
            hub.metrics.upgrade(EndpointLabel::Server, Outcome::ShuttingDown);
            None
        }
    };
    let tag = hub.logs.conn(conn.conn_id());
    let Some(claim) = claim else {
        let ending = session.finish().await;
        tracing::info!(conn = %tag, code = ending.code, "disconnect");
        return;
    };
    while let Event::Frame(text) = session.next().await {
        route(&hub, &claim, text);
    }
    let ending = session.finish().await;
    tracing::info!(conn = %tag, code = ending.code, "disconnect");
    if hub.shutdown.is_draining() {
        drop(claim); // its phones were already closed 1001: release now, no grace to wait for
    } else if claim.release_after(hub.config.grace) {
        tracing::info!(conn = %tag, grace_ms = hub.config.grace.as_millis() as u64, "grace window opened");
    }
}

/// Resolves the pre-upgrade claim. On a conflict, pings the holder: if it answers, `conn` is
/// closed 4409; if not, the holder is taken over (closed 1011 `heartbeat timeout`, its phones
/// 4404 by the registry). Returns `None` (with `conn` closed) if the claim is refused.
async fn acquire(
    hub: &Hub,
    server_id: &str,
    conn: &Arc<Endpoint>,
    first: Result<ServerClaim<Endpoint>, RegistryError>,
) -> Option<ServerClaim<Endpoint>> {
    let tag = hub.logs.conn(conn.conn_id());
    let mut attempt = first;
    for _ in 0..3 {
        let error = match attempt {
            Ok(claim) => {
                hub.metrics.upgrade(EndpointLabel::Server, Outcome::Ok);
                return Some(claim);
            }
            Err(error) => error,
        };
        if error != RegistryError::ServerIdConflict {
            return refuse(hub, conn, error);
        }
        let Some(holder) = hub.registry.binary_for(server_id) else {
            attempt = join::claim(hub, server_id, conn); // released meanwhile: claim again
            continue;
        };
        tracing::info!(conn = %tag, holder = %hub.logs.conn(holder.conn_id()), "conflict: probing holder");
        if probe(hub, &holder).await {
            return refuse(hub, conn, RegistryError::ServerIdConflict);
        }
        match hub
            .registry
            .takeover_server(server_id, Some(&holder), conn.clone())
        {
            Ok(claim) => {
                tracing::info!(conn = %tag, holder = %hub.logs.conn(holder.conn_id()), "takeover");
                hub.metrics.took_over();
                hub.metrics.upgrade(EndpointLabel::Server, Outcome::Ok);
                holder.close(CloseReason::HeartbeatTimeout);
                return Some(claim);
            }
            // The holder changed meanwhile: look again.
            Err(RegistryError::ServerIdConflict) => attempt = join::claim(hub, server_id, conn),
            Err(error) => return refuse(hub, conn, error),
        }
    }
    refuse(hub, conn, RegistryError::ServerIdConflict)
}

/// Whether the holder of a conflicting claim answers a ping within the probe timeout.
async fn probe(hub: &Hub, holder: &Endpoint) -> bool {
    match holder {
        Endpoint::Local(local) => local.probe(hub.config.probe_timeout).await,
    }
}

fn refuse(hub: &Hub, conn: &Endpoint, error: RegistryError) -> Option<ServerClaim<Endpoint>> {
    tracing::info!(conn = %hub.logs.conn(conn.conn_id()), code = error.code(), "claim refused");
    let outcome = match error {
        RegistryError::ServerIdConflict => Outcome::Conflict,
        _ => Outcome::BadRequest,
    };
    hub.metrics.upgrade(EndpointLabel::Server, outcome);
    conn.close(CloseReason::from(error));
    None
}

/// Delivers one envelope from the binary to one of its own phones; anything wrong is counted,
/// logged at debug and dropped, never fatal to the binary.
fn route(hub: &Hub, claim: &ServerClaim<Endpoint>, text: Utf8Bytes) {
    let from = hub.logs.conn(claim.conn().conn_id());
    let Some(envelope) = Envelope::parse(&text) else {
        if hub.config.panic_on_frame.as_deref() == Some(text.as_str()) {
            panic!("fault injection: binary task panics mid-stream");
        }
        hub.metrics.dropped(DropReason::BadEnvelope);
        tracing::debug!(conn = %from, "malformed envelope dropped");
        return;
    };
    let Some(phone) = claim.phone(&envelope.conn_id) else {
        hub.metrics.dropped(DropReason::UnknownConn);
        tracing::debug!(conn = %from, "envelope for an unknown conn-id dropped");
        return;
    };
    if let Some(frame) = envelope.frame {
        let frame = Utf8Bytes::from(frame.get());
        let len = frame.len();
        match phone.send(frame) {
            Ok(()) => hub.metrics.forwarded(Direction::BinaryToPhone, len),
            Err(SendError::Full) => {
                hub.metrics.dropped(DropReason::BacklogFull);
                tracing::info!(conn = %hub.logs.conn(phone.conn_id()), "phone backlog full");
            }
            Err(error) => {
                tracing::debug!(conn = %from, %error, "frame for a closing phone dropped")
            }
        }
    }
    if let Some(close) = envelope.close() {
        phone.close(close);
    }
}
