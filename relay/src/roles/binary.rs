//! A binary's connection task: resolve a conflicting claim (probe the holder, take over a silent
//! one), route its envelopes to its own phones, and open the grace window when its socket ends.
//!
//! The task holds its `ServerClaim` for as long as it runs: dropping it (even in a panic unwind)
//! releases the id and closes the phones, so there is no cleanup path to forget. In cluster
//! mode a conflict with a binary on another instance was decided by its owner before the
//! upgrade ([`claims::claim`](crate::cluster::claims::claim)), and the task also holds a
//! [`ReleaseCheck`] that deletes the id's directory entry once the registry lets the id go.

use crate::cluster::claims::{Claiming, ReleaseCheck};
use crate::conn::endpoint::Endpoint;
use crate::conn::session::{Event, Session};
use crate::hub::{Contest, Hub};
use crate::metrics::{Direction, DropReason, EndpointLabel, Outcome};
use crate::protocol::envelope::{Envelope, PushWake};
use crate::roles::admission;
use relay_protocol::{CloseReason, SendError};
use relay_registry::{Conn, RegistryError, ServerClaim};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::{Bytes, Utf8Bytes};

/// Runs a binary's connection until it ends; `first` is the result of its pre-upgrade claim.
pub(crate) async fn run(hub: Arc<Hub>, mut session: Session, server_id: String, first: Claiming) {
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
    // Declared after the claim's binding would be dropped first: keep it before.
    let release_check = ReleaseCheck::new(&hub, &server_id);
    while let Event::Frame(text) = session.next().await {
        route(&hub, &server_id, &claim, text);
    }
    let ending = session.finish().await;
    tracing::info!(conn = %tag, code = ending.code, "disconnect");
    let fenced = hub
        .cluster
        .joined()
        .is_some_and(|cluster| !cluster.liveness.holds_lease());
    if hub.shutdown.is_draining() || fenced {
        drop(claim); // its phones were already closed 1001 (1012): release now, no grace
    } else if claim.release_after(hub.config.grace) {
        tracing::info!(conn = %tag, grace_ms = hub.config.grace.as_millis() as u64, "grace window opened");
    }
    drop(release_check);
}

/// Resolves the pre-upgrade claim. On a conflict, pings the holder: if it answers, `conn` is
/// closed 4409; if not, the holder is taken over (closed 1011 `heartbeat timeout`, its phones
/// 4404 by the registry). Returns `None` (with `conn` closed) if the claim is refused.
async fn acquire(
    hub: &Arc<Hub>,
    server_id: &str,
    conn: &Arc<Endpoint>,
    first: Claiming,
) -> Option<ServerClaim<Endpoint>> {
    let tag = hub.logs.conn(conn.conn_id());
    let mut attempt = first;
    for _ in 0..3 {
        let error = match attempt {
            Claiming::Registry(Ok(claim)) => {
                hub.metrics.upgrade(EndpointLabel::Server, Outcome::Ok);
                return Some(claim);
            }
            Claiming::Registry(Err(error)) => error,
            Claiming::KeptElsewhere => {
                tracing::info!(conn = %tag, "conflict: the owning instance's binary answered");
                return refuse(hub, conn, RegistryError::ServerIdConflict);
            }
        };
        if error != RegistryError::ServerIdConflict {
            return refuse(hub, conn, error);
        }
        let Some(holder) = hub.registry.binary_for(server_id) else {
            // Released meanwhile: claim again.
            attempt = match admission::claim_again(hub, server_id, conn).await {
                Some(attempt) => attempt,
                None => return unreachable_cluster(hub, conn),
            };
            continue;
        };
        tracing::info!(conn = %tag, holder = %hub.logs.conn(holder.conn_id()), "conflict: probing holder");
        let mut failed = None;
        let take_over = async {
            hub.registry
                .takeover_server(server_id, Some(&holder), conn.clone())
                .map_err(|error| failed = Some(error))
                .ok()
        };
        match hub.contest(&holder, take_over).await {
            Contest::Alive => return refuse(hub, conn, RegistryError::ServerIdConflict),
            Contest::TookOver(claim) => {
                hub.metrics.upgrade(EndpointLabel::Server, Outcome::Ok);
                return Some(claim);
            }
            Contest::Changed => match failed {
                // The holder changed meanwhile: look again.
                None | Some(RegistryError::ServerIdConflict) => {
                    attempt = match admission::claim_again(hub, server_id, conn).await {
                        Some(attempt) => attempt,
                        None => return unreachable_cluster(hub, conn),
                    };
                }
                Some(error) => return refuse(hub, conn, error),
            },
        }
    }
    refuse(hub, conn, RegistryError::ServerIdConflict)
}

/// Cluster mode, after the upgrade: the directory could not decide a claim again.
fn unreachable_cluster(hub: &Hub, conn: &Endpoint) -> Option<ServerClaim<Endpoint>> {
    tracing::info!(conn = %hub.logs.conn(conn.conn_id()), "claim undecided: cluster unavailable");
    hub.metrics
        .upgrade(EndpointLabel::Server, Outcome::ClusterUnavailable);
    conn.close(CloseReason::ClusterConnectionLost);
    None
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

/// Delivers one envelope from the binary to one of its own phones, or hands a push wake to the
/// push service; anything wrong is counted, logged at debug and dropped, never fatal to the
/// binary.
fn route(hub: &Hub, server_id: &str, claim: &ServerClaim<Endpoint>, text: Utf8Bytes) {
    // Past the lease's deadline (cluster mode): fenced at once (this binary is closing 1012),
    // nothing it sent is acted on.
    if !hub.may_deliver_for(claim.conn()) {
        return;
    }
    let from = hub.logs.conn(claim.conn().conn_id());
    let Some(envelope) = Envelope::parse(&text) else {
        if let Some(wake) = PushWake::parse(&text) {
            hub.push
                .wake(server_id, hub.logs.server(server_id), &wake.token);
            return;
        }
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
        let frame = slice_of(&text, frame.get());
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

/// `part` (a sub-slice of `text`, e.g. the envelope's `frame`) as its own `Utf8Bytes` sharing
/// `text`'s buffer: no allocation and no copy of the frame (only its UTF-8 is checked again,
/// which `Utf8Bytes` requires without `unsafe`). A `part` not inside `text` is copied.
fn slice_of(text: &Utf8Bytes, part: &str) -> Utf8Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    if start > text.len() || text.len() - start < part.len() {
        return Utf8Bytes::from(part);
    }
    let bytes = Bytes::from(text.clone()).slice(start..start + part.len());
    Utf8Bytes::try_from(bytes).unwrap_or_else(|_| Utf8Bytes::from(part))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_sliced_out_of_its_envelope_is_the_frame_and_shares_the_buffer() {
        let text = Utf8Bytes::from(r#"{"conn_id":"client-a-1","frame":{"é":[1,2]}}"#.to_owned());
        let envelope = Envelope::parse(&text).unwrap();
        let frame = slice_of(&text, envelope.frame.unwrap().get());
        assert_eq!(frame.as_str(), r#"{"é":[1,2]}"#);
        let inside = text.as_ptr() as usize..text.as_ptr() as usize + text.len();
        assert!(inside.contains(&(frame.as_ptr() as usize)));
    }

    #[test]
    fn a_part_from_elsewhere_is_copied() {
        let text = Utf8Bytes::from("{}".to_owned());
        let elsewhere = String::from("[1,2]");
        assert_eq!(slice_of(&text, &elsewhere).as_str(), "[1,2]");
    }
}
