//! Phones connected here whose server-id another instance owns ("away" phones): registered
//! with the owner over a link ([`join`]), their frames sent up by the phone's task, what the
//! owner sends down pushed into their outbox ([`DownSink`]).
//!
//! The [`AwaySet`](super::away_set::AwaySet) holds them, so that shutdown (1001) and a fence (1012) reach them as they
//! reach everyone in the registry, and `/healthz` counts them as this instance's phones.

use super::Cluster;
use super::claims::Undecided;
use crate::conn::endpoint::Endpoint;
use crate::conn::outbox::Origin;
use crate::hub::Hub;
use crate::metrics::DropReason;
use relay_cluster::wire::close_from_wire;
use relay_cluster::{
    directory::Lookup, link::Inbound, link::Outbound, link::Registration, link::RequestError,
};
use relay_protocol::{CloseReason, SendError};
use relay_registry::{Conn, RegistryError};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::{Bytes, Utf8Bytes};

/// A phone's registration with an owner elsewhere: the up direction of its link. Dropping it
/// takes the phone out of the away set and ends the link (the owner unregisters the phone; if
/// it was not ended with the phone's own code first, it tells the binary 1001).
pub(crate) struct AwayPhone {
    hub: Arc<Hub>,
    key: u64,
    /// Frames up to the owner.
    pub up: Outbound,
}

impl Drop for AwayPhone {
    fn drop(&mut self) {
        self.up.end(1001, "");
        if let Some(cluster) = self.hub.cluster.joined() {
            cluster.away.remove(self.key);
        }
    }
}

/// What a phone's join found in cluster mode, beyond this instance's registry.
pub(crate) enum Away {
    /// Registered with the owner elsewhere.
    Joined(AwayPhone),
    /// Refused (no binary holds the id anywhere, or the owner said so: 4404, 4429).
    Refused(RegistryError),
}

/// Joins `phone` (a local connection, not yet upgraded) to `server_id` whose owner is not this
/// instance; `None` when this instance's registry is the one to ask after all (the id is ours).
///
/// An owner that does not answer (nobody listens on its subject, or the request timed out)
/// while its lease has not ended is the window in which a binary claiming the id elsewhere
/// waits for that lease ([`claims`](super::claims)): the phone is refused like that binary, 503
/// with `Retry-After` (one lease: by then the owner's lease has ended if it stopped refreshing
/// when it went silent), never 4404 — the id may be held again a moment later.
///
/// # Errors
///
/// When the cluster cannot decide (directory or owner unreachable, timed out): the upgrade is
/// refused 503.
pub(crate) async fn join(
    hub: &Arc<Hub>,
    cluster: &Cluster,
    server_id: &str,
    phone: &Arc<Endpoint>,
) -> Result<Option<Away>, Undecided> {
    let owner = match cluster.directory.lookup(server_id).await {
        Ok(Lookup::Free) => return Ok(Some(Away::Refused(RegistryError::NoServer))),
        Ok(Lookup::Ours(_)) => return Ok(None),
        Ok(Lookup::Owner { owner, .. }) => owner,
        Err(error) => {
            tracing::info!(%error, "phone join: directory unavailable");
            return Err(Undecided { retry_after: None });
        }
    };
    let sink = Arc::new(DownSink {
        hub: hub.clone(),
        phone: phone.clone(),
    });
    let registered = cluster
        .link
        .register(&owner, server_id, phone.conn_id(), sink)
        .await;
    match registered {
        Ok(Registration::Registered(up)) => {
            let key = cluster.away.insert(phone.clone());
            let away = AwayPhone {
                hub: hub.clone(),
                key,
                up,
            };
            // Shutdown and a fence close every away phone once; one that joined just after that
            // sweep is closed here (the flag is set before the sweep, so one of the two sees it).
            if hub.shutdown.is_draining() {
                phone.close(CloseReason::ShuttingDown);
            } else if !cluster.liveness.holds_lease() {
                phone.close(CloseReason::ClusterConnectionLost);
            }
            Ok(Some(Away::Joined(away)))
        }
        Ok(Registration::Refused(code)) => Ok(Some(Away::Refused(refusal(code)))),
        Err(error @ (RequestError::NoResponders | RequestError::TimedOut)) => {
            tracing::info!(%error, owner = %owner, "phone join: the owner did not answer");
            // Its lease ended meanwhile: nobody holds the id (a claimant would be in the entry).
            if cluster.liveness.is_alive(&owner).await == Ok(false) {
                return Ok(Some(Away::Refused(RegistryError::NoServer)));
            }
            Err(Undecided {
                retry_after: Some(cluster.liveness.timing().lease),
            })
        }
        Err(error) => {
            tracing::info!(%error, "phone join: the owner did not answer");
            Err(Undecided { retry_after: None })
        }
    }
}

/// The registry error an owner's refusal code stands for.
fn refusal(code: u16) -> RegistryError {
    [
        RegistryError::PhonesAtCap,
        RegistryError::ServerIdConflict,
        RegistryError::InvalidServerId,
    ]
    .into_iter()
    .find(|&error| CloseReason::from(error).code() == code)
    .unwrap_or(RegistryError::NoServer)
}

/// Where an away phone's link delivers: the binary's frames into the phone's outbox (a full one
/// closes the phone `1011 phone backlog full`, as on one instance), the owner's close as the
/// phone's close, a lost link as `1011 relay link lost`.
pub(crate) struct DownSink {
    hub: Arc<Hub>,
    phone: Arc<Endpoint>,
}

impl Inbound for DownSink {
    fn frame(&self, frame: Bytes) {
        // The link checked the UTF-8 already: this never fails.
        let Ok(frame) = Utf8Bytes::try_from(frame) else {
            return self.lost();
        };
        // Past this instance's lease deadline: fenced at once (the phone is closing 1012).
        if !self.hub.may_deliver_for(&self.phone) {
            return;
        }
        if self.phone.send(frame) == Err(SendError::Full) {
            self.hub.metrics.dropped(DropReason::BacklogFull);
            tracing::info!(conn = %self.hub.logs.conn(self.phone.conn_id()), "phone backlog full");
        }
    }

    fn ended(&self, code: u16, reason: &str) {
        self.close(close_from_wire(code, reason));
    }

    fn lost(&self) {
        self.close(CloseReason::LinkLost);
    }
}

impl DownSink {
    fn close(&self, reason: CloseReason) {
        if let Some(local) = self.phone.as_local() {
            local.close_as(reason, Origin::Requested);
        }
    }
}
