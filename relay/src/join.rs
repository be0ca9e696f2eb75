//! The pre-upgrade decision: a binary's claim or a phone's registration, made *before* the `101`
//! is sent, so that once a client sees its upgrade answered its claim (or registration) is in
//! place. A refusal is told after the upgrade, as a close code.
//!
//! This is the one step that decides where a connection belongs. In cluster mode it asks the
//! directory too ([`clustered::claims::claim`], [`clustered::away::join`]); when the cluster
//! cannot decide, the upgrade is refused 503 ([`Unavailable`]).

use crate::Hub;
use crate::close::CloseReason;
use crate::clustered::away::{self, Away};
use crate::clustered::claims::{self, Claiming};
use crate::endpoint::Endpoint;
use crate::ids::{self, Side};
use crate::local::LocalConn;
use relay_registry::{Conn, PhoneTicket, RegistryError, ServerClaim};
use std::sync::Arc;

/// A connection's first registry operation, done before its upgrade is answered.
pub enum Joined {
    /// A binary's claim (a conflict is resolved after the upgrade, by probing the holder).
    Binary(Claiming),
    /// A phone's registration with this instance's registry.
    Phone(Result<PhoneTicket<Endpoint>, RegistryError>),
    /// Cluster mode: a phone registered with (or refused by) the owner of its id elsewhere.
    Away(Away),
}

/// The cluster could not decide where the connection belongs: answer 503.
#[derive(Debug, Clone, Copy)]
pub struct Unavailable;

/// Makes the connection for a `side` upgrade to `server_id` and claims or registers it.
///
/// # Errors
///
/// [`Unavailable`] in cluster mode when the directory or the owner could not decide in time.
pub async fn admit(
    hub: &Arc<Hub>,
    side: Side,
    server_id: &str,
) -> Result<(Arc<Endpoint>, Joined), Unavailable> {
    let limit = match side {
        Side::Binary => hub.config.binary_outbox,
        Side::Phone => hub.config.phone_outbox,
    };
    let conn = Arc::new(Endpoint::Local(LocalConn::new(
        ids::conn_id(side, server_id),
        side,
        limit,
    )));
    let joined = match (side, &hub.cluster) {
        (Side::Binary, None) => Joined::Binary(Claiming::Registry(claim(hub, server_id, &conn))),
        (Side::Phone, None) => Joined::Phone(hub.registry.register_phone(server_id, conn.clone())),
        (Side::Binary, Some(cluster)) => Joined::Binary(
            claims::claim(hub, cluster, server_id, &conn)
                .await
                .map_err(|error| {
                    tracing::info!(%error, "binary claim: the cluster cannot decide");
                    Unavailable
                })?,
        ),
        (Side::Phone, Some(cluster)) => {
            // The id held here: this registry decides, no round trip.
            match hub.registry.register_phone(server_id, conn.clone()) {
                Err(RegistryError::NoServer) => {
                    match away::join(hub, cluster, server_id, &conn)
                        .await
                        .map_err(|()| Unavailable)?
                    {
                        Some(away) => Joined::Away(away),
                        None => Joined::Phone(hub.registry.register_phone(server_id, conn.clone())),
                    }
                }
                local => Joined::Phone(local),
            }
        }
    };
    // Shutdown closes everyone the registry holds, once; a connection that joined just after that
    // sweep is closed here (the sweep runs after the flag is set, so one of the two sees it).
    if hub.shutdown.is_draining() {
        conn.close(CloseReason::ShuttingDown);
    }
    Ok((conn, joined))
}

/// Claims `server_id` for `conn` in this instance's registry; counts and logs a reclaim.
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

/// Claims again (the holder changed while the claim was being resolved): through the directory
/// in cluster mode. `None` if the cluster cannot decide.
pub async fn claim_again(
    hub: &Arc<Hub>,
    server_id: &str,
    conn: &Arc<Endpoint>,
) -> Option<Claiming> {
    match &hub.cluster {
        None => Some(Claiming::Registry(claim(hub, server_id, conn))),
        Some(cluster) => claims::claim(hub, cluster, server_id, conn).await.ok(),
    }
}
