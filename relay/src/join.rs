//! The pre-upgrade decision: a binary's claim or a phone's registration, made *before* the `101`
//! is sent, so that once a client sees its upgrade answered its claim (or registration) is in
//! place. A refusal is told after the upgrade, as a close code.
//!
//! This is the one step that decides where a connection belongs; cluster mode replaces it with a
//! directory lookup (and a remote registration) without touching the sessions.

use crate::Hub;
use crate::endpoint::Endpoint;
use crate::ids::{self, Side};
use crate::local::LocalConn;
use relay_registry::{CloseReason, Conn, PhoneTicket, RegistryError, ServerClaim};
use std::sync::Arc;

/// A connection's first registry operation, done before its upgrade is answered.
pub enum Joined {
    /// A binary's claim (a conflict is resolved after the upgrade, by probing the holder).
    Binary(Result<ServerClaim<Endpoint>, RegistryError>),
    /// A phone's registration.
    Phone(Result<PhoneTicket<Endpoint>, RegistryError>),
}

/// Makes the connection for a `side` upgrade to `server_id` and claims or registers it.
pub fn admit(hub: &Hub, side: Side, server_id: &str) -> (Arc<Endpoint>, Joined) {
    let limit = match side {
        Side::Binary => hub.config.binary_outbox,
        Side::Phone => hub.config.phone_outbox,
    };
    let conn = Arc::new(Endpoint::Local(LocalConn::new(
        ids::conn_id(side, server_id),
        side,
        limit,
    )));
    let joined = match side {
        Side::Binary => Joined::Binary(claim(hub, server_id, &conn)),
        Side::Phone => Joined::Phone(hub.registry.register_phone(server_id, conn.clone())),
    };
    // Shutdown closes everyone the registry holds, once; a connection that joined just after
    // that sweep is closed here (the sweep runs after the flag is set, so one of the two sees it).
    if hub.shutdown.is_draining() {
        conn.close(CloseReason::ShuttingDown);
    }
    (conn, joined)
}

/// Claims `server_id` for `conn`; counts and logs a reclaim.
pub fn claim(
    hub: &Hub,
    server_id: &str,
    conn: &Arc<Endpoint>,
) -> Result<ServerClaim<Endpoint>, RegistryError> {
    let claim = hub.registry.claim_server(server_id, conn.clone())?;
    let tag = hub.logs.conn(conn.conn_id());
    if claim.replaced() {
        hub.metrics.reclaimed();
        tracing::info!(conn = %tag, "reclaim");
    } else {
        tracing::info!(conn = %tag, "claim");
    }
    Ok(claim)
}
