//! A binary's connection task: claim the server-id (probing a conflicting holder and taking over a
//! silent one), route its envelopes to its phones, and open the grace window when its socket ends.
//!
//! The task holds its `ServerClaim` for as long as it runs: dropping it (even in a panic unwind)
//! releases the id and closes the phones, so there is no cleanup path to forget.

use super::Hub;
use super::conn::{Origin, WsConn};
use super::envelope::Envelope;
use super::session::{Event, Session, Ws};
use super::stream::Arrivals;
use relay_registry::{CloseReason, Conn, RegistryError, ServerClaim};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::{debug, info};

/// Claims `server_id` for `conn` (done before the upgrade is answered, so a phone that connects
/// once the binary saw its `101` finds the id held).
pub fn claim(
    hub: &Hub,
    server_id: &str,
    conn: &Arc<WsConn>,
) -> Result<ServerClaim<WsConn>, RegistryError> {
    let claim = hub.registry.claim_server(server_id, conn.clone())?;
    let id = conn.conn_id();
    if claim.replaced() {
        info!(conn_id = %id, "reclaim");
    } else {
        info!(conn_id = %id, "claim");
    }
    Ok(claim)
}

/// Runs a binary's connection until it ends; `first` is the result of its [`claim`].
pub async fn run(
    hub: Arc<Hub>,
    ws: Ws,
    arrivals: Arrivals,
    server_id: String,
    conn: Arc<WsConn>,
    first: Result<ServerClaim<WsConn>, RegistryError>,
) {
    let mut session = Session::start(ws, arrivals, conn.clone(), &hub);
    let mut shutdown = hub.shutdown.clone();
    let claim = tokio::select! {
        claim = acquire(&hub, &server_id, &conn, first) => claim,
        _ = super::stopping(&mut shutdown) => None,
    };
    let conn_id = conn.conn_id();
    let Some(claim) = claim else {
        let ending = session.finish().await;
        info!(%conn_id, code = ending.code, "disconnect");
        return;
    };
    while let Event::Frame(text) = session.next().await {
        route(&hub, &claim, &text);
    }
    let ending = session.finish().await;
    info!(%conn_id, code = ending.code, "disconnect");
    if *hub.shutdown.borrow() {
        drop(claim); // its phones were already closed 1001: release now, no grace to wait for
    } else if claim.release_after(hub.config.grace) {
        info!(%conn_id, grace_ms = hub.config.grace.as_millis() as u64, "grace window opened");
    }
}

/// Resolves a refused first claim. On a conflict, pings the holder: if it answers, `conn` is
/// closed 4409; if not, the holder is taken over (closed 1011 `heartbeat timeout`, its phones
/// 4404 by the registry). Returns `None` (with `conn` closed) if the claim is refused.
async fn acquire(
    hub: &Hub,
    server_id: &str,
    conn: &Arc<WsConn>,
    first: Result<ServerClaim<WsConn>, RegistryError>,
) -> Option<ServerClaim<WsConn>> {
    let id = conn.conn_id();
    let mut attempt = first;
    for _ in 0..3 {
        let error = match attempt {
            Ok(claim) => return Some(claim),
            Err(error) => error,
        };
        if error != RegistryError::ServerIdConflict {
            return refuse(conn, error);
        }
        let Some(holder) = hub.registry.binary_for(server_id) else {
            attempt = claim(hub, server_id, conn); // released meanwhile: claim again
            continue;
        };
        info!(conn_id = %id, holder = %holder.conn_id(), "conflict: probing holder");
        if holder.probe(hub.config.probe_timeout).await {
            return refuse(conn, RegistryError::ServerIdConflict);
        }
        match hub
            .registry
            .takeover_server(server_id, Some(&holder), conn.clone())
        {
            Ok(claim) => {
                info!(conn_id = %id, holder = %holder.conn_id(), "takeover");
                holder.close_as(CloseReason::HeartbeatTimeout, Origin::Relay);
                return Some(claim);
            }
            // The holder changed meanwhile: look again.
            Err(RegistryError::ServerIdConflict) => attempt = claim(hub, server_id, conn),
            Err(error) => return refuse(conn, error),
        }
    }
    refuse(conn, RegistryError::ServerIdConflict)
}

fn refuse(conn: &WsConn, error: RegistryError) -> Option<ServerClaim<WsConn>> {
    info!(conn_id = %conn.conn_id(), code = error.code(), "claim refused");
    conn.close_as(CloseReason::from(error), Origin::Relay);
    None
}

/// Delivers one envelope from the binary to one of its own phones; anything wrong is logged and
/// dropped, never fatal to the binary.
fn route(hub: &Hub, claim: &ServerClaim<WsConn>, text: &str) {
    if hub.config.panic_on_frame.as_deref() == Some(text) {
        panic!("fault injection: binary task panics mid-stream");
    }
    let from = claim.conn().conn_id();
    let Some(envelope) = Envelope::parse(text) else {
        debug!(conn_id = %from, "malformed envelope dropped");
        return;
    };
    let Some(phone) = claim.phone(&envelope.conn_id) else {
        debug!(conn_id = %from, "envelope for an unknown conn-id dropped");
        return;
    };
    if let Some(frame) = envelope.frame {
        if let Err(error) = phone.push_text(Utf8Bytes::from(frame.get())) {
            debug!(conn_id = %from, %error, "frame for a phone dropped");
        }
    }
    if let Some(close) = envelope.close() {
        phone.close_as(close, Origin::Binary);
    }
}
