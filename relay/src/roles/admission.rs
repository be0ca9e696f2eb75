//! The pre-upgrade decision: a binary's claim or a phone's registration, made *before* the `101`
//! is sent, so that once a client sees its upgrade answered its claim (or registration) is in
//! place. A refusal is told after the upgrade, as a close code.
//!
//! This is the one step that decides where a connection belongs. In cluster mode it asks the
//! directory too, and the owner of the id elsewhere when there is one ([`claims::claim`],
//! [`away::join`]); when the cluster cannot decide in time, the upgrade is refused 503
//! ([`Unavailable`]), with `Retry-After` when the answer waits for a silent owner's lease to
//! end. A conflict with a binary on this instance is the one claim still settled after the
//! upgrade (the holder is pinged, as on a single instance).

use crate::cluster::away::{self, Away};
use crate::cluster::claims::{self, Claiming, Undecided};
use crate::cluster::join::Mode;
use crate::conn::endpoint::Endpoint;
use crate::conn::local::LocalConn;
use crate::hub::Hub;
use crate::protocol::conn_ids::{self, Side};
use relay_protocol::CloseReason;
use relay_registry::{PhoneTicket, RegistryError};
use std::sync::Arc;
use std::time::Duration;

/// A connection's first registry operation, done before its upgrade is answered.
pub(crate) enum Joined {
    /// A binary's claim (a conflict with a holder here is resolved after the upgrade, by
    /// probing it; one elsewhere was decided by its owner before).
    Binary(Claiming),
    /// A phone's registration with this instance's registry.
    Phone(Result<PhoneTicket<Endpoint>, RegistryError>),
    /// Cluster mode: a phone registered with (or refused by) the owner of its id elsewhere.
    Away(Away),
}

/// The cluster could not decide where the connection belongs: answer 503.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unavailable {
    /// `Retry-After`, when the decision waits for another instance's lease to end.
    pub retry_after: Option<Duration>,
}

impl From<Undecided> for Unavailable {
    fn from(undecided: Undecided) -> Self {
        Unavailable {
            retry_after: undecided.retry_after,
        }
    }
}

/// Makes the connection for a `side` upgrade to `server_id` and claims or registers it.
///
/// # Errors
///
/// [`Unavailable`] in cluster mode when the directory or the owner could not decide in time,
/// or the instance has not joined the cluster yet.
pub(crate) async fn admit(
    hub: &Arc<Hub>,
    side: Side,
    server_id: &str,
) -> Result<(Arc<Endpoint>, Joined), Unavailable> {
    let limit = match side {
        Side::Binary => hub.config.binary_outbox,
        Side::Phone => hub.config.phone_outbox,
    };
    let conn = Arc::new(Endpoint::Local(LocalConn::new(
        conn_ids::conn_id(side, server_id),
        side,
        limit,
        hub.lease_epoch(),
    )));
    let joined = match (side, hub.cluster.mode()) {
        // Configured but not joined: never a single instance.
        (_, Mode::Joining) => return Err(Unavailable { retry_after: None }),
        (Side::Binary, Mode::Single) => {
            Joined::Binary(Claiming::Registry(hub.claim(server_id, &conn)))
        }
        (Side::Phone, Mode::Single) => Joined::Phone(register(hub, server_id, &conn).await),
        (Side::Binary, Mode::Joined(cluster)) => {
            Joined::Binary(claims::claim(hub, cluster, server_id, &conn).await?)
        }
        (Side::Phone, Mode::Joined(cluster)) => {
            // The id held here: this registry decides, no round trip.
            match hub.registry.register_phone(server_id, conn.clone()) {
                Err(RegistryError::NoServer) => {
                    match away::join(hub, cluster, server_id, &conn).await? {
                        Some(away) => Joined::Away(away),
                        None => Joined::Phone(register(hub, server_id, &conn).await),
                    }
                }
                Err(RegistryError::PhonesAtCap) => {
                    Joined::Phone(register(hub, server_id, &conn).await)
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
    // Cluster mode: no claim or registration is answered past the lease's deadline (this fences
    // at once; the claim or registration made is dropped with `joined`).
    if !hub.may_deliver_for(&conn) {
        return Err(Unavailable { retry_after: None });
    }
    Ok((conn, joined))
}

/// How often a phone over its id's cap tries again while it waits (see [`register`]).
const CAP_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

/// Registers the phone `conn` with this instance's registry. At the phone cap it waits, up to
/// `cap_wait`, for one of the id's phones to leave before it is refused 4429: a phone whose
/// client has just gone (a TCP reset) stays registered until its task reads the reset, and a
/// client that leaves and joins again at once must not be refused for that moment (issue 17:
/// under churn, a refusal is a phone its binary never hears of, and the client never sees why).
async fn register(
    hub: &Hub,
    server_id: &str,
    conn: &Arc<Endpoint>,
) -> Result<PhoneTicket<Endpoint>, RegistryError> {
    let deadline = tokio::time::Instant::now() + hub.config.cap_wait;
    loop {
        match hub.registry.register_phone(server_id, conn.clone()) {
            Err(RegistryError::PhonesAtCap) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(CAP_RETRY).await;
            }
            registered => return registered,
        }
    }
}

/// Claims again (the holder changed while the claim was being resolved): through the directory
/// in cluster mode. `None` if the cluster cannot decide.
pub(crate) async fn claim_again(
    hub: &Arc<Hub>,
    server_id: &str,
    conn: &Arc<Endpoint>,
) -> Option<Claiming> {
    match hub.cluster.mode() {
        Mode::Single => Some(Claiming::Registry(hub.claim(server_id, conn))),
        Mode::Joining => None,
        Mode::Joined(cluster) => claims::claim(hub, cluster, server_id, conn).await.ok(),
    }
}
