//! A phone's connection task: forward its frames, checked and wrapped, to the binary it joined,
//! and tell that binary when the phone leaves on its own.
//!
//! The task holds its `PhoneTicket` for as long as it runs: dropping it (even in a panic unwind)
//! unregisters the phone, so there is no cleanup path to forget. In cluster mode a phone whose
//! id another instance owns holds an [`AwayPhone`] instead: its frames go up the link (waiting
//! for the link's credit is the same backpressure as waiting for the binary's outbox), and
//! dropping it ends the link, which unregisters the phone at the owner.

use crate::Hub;
use crate::clustered::away::{Away, AwayPhone};
use crate::endpoint::Endpoint;
use crate::envelope::Wrapper;
use crate::frame_check::{self, FrameError};
use crate::metrics::{Direction, EndpointLabel, Outcome};
use crate::outbox::{Ending, Origin};
use crate::session::{Event, Session, local};
use relay_registry::{CloseReason, Conn, PhoneTicket, RegistryError, SendError};
use std::future::poll_fn;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Runs a phone's connection until it ends; `registration` is the result of its pre-upgrade
/// registration.
pub async fn run(
    hub: Arc<Hub>,
    mut session: Session,
    registration: Result<PhoneTicket<Endpoint>, RegistryError>,
    token: Option<String>,
) {
    let conn = session.conn().clone();
    let tag = hub.logs.conn(conn.conn_id());
    let ticket = match registration {
        Ok(ticket) => {
            hub.metrics.upgrade(EndpointLabel::Client, Outcome::Ok);
            ticket
        }
        Err(error) => return refused(&hub, session, error).await,
    };
    tracing::info!(conn = %tag, "phone joined");
    let mut wrapper = Wrapper::new(conn.conn_id(), token.as_deref());
    drop(token);
    let ending = loop {
        match session.next().await {
            Event::Frame(text) => {
                if let Some(ending) = forward(&hub, &mut session, &ticket, &mut wrapper, text).await
                {
                    break ending;
                }
            }
            Event::Ended(ending) => break ending,
            Event::Space => {}
        }
    };
    // The notice, then the registration ends; meanwhile the close handshake runs (a notice that
    // waits for room in a full binary outbox does not hold the phone's close up).
    let left = async {
        if let Some(code) = notice_code(ending) {
            // Only while the binary the phone joined still holds the id (the ticket is registered).
            if let Some(binary) = ticket.binary() {
                announce(&binary, Utf8Bytes::from(wrapper.left(code))).await;
            }
        }
        drop(ticket);
    };
    let ((), ending) = tokio::join!(left, session.finish());
    tracing::info!(conn = %tag, code = ending.code, "disconnect");
}

/// Queues a phone-left `notice` for `binary`, waiting while its outbox is full as the phone's
/// frames do: the binary keeps the phone's state until the notice, so it is never dropped for a
/// full outbox. Gives up only when the binary is closing (its outbox then refuses everything).
async fn announce(binary: &Endpoint, notice: Utf8Bytes) {
    let len = notice.len();
    while binary.send(notice.clone()) == Err(SendError::Full) {
        let Some(local) = binary.as_local() else {
            return; // a binary is always local: nothing to wait for
        };
        poll_fn(|cx| local.poll_space(len, cx)).await;
    }
}

/// Tells a refused phone its close code.
async fn refused(hub: &Hub, session: Session, error: RegistryError) {
    let outcome = match error {
        RegistryError::NoServer => Outcome::NoServer,
        RegistryError::PhonesAtCap => Outcome::PhoneCap,
        _ => Outcome::BadRequest,
    };
    hub.metrics.upgrade(EndpointLabel::Client, outcome);
    tracing::info!(conn = %hub.logs.conn(session.conn().conn_id()), code = error.code(), "phone refused");
    local(session.conn()).close_as(CloseReason::from(error), Origin::Relay);
    session.finish().await;
}

/// Runs a phone's connection whose id another instance owns, until it ends.
pub async fn run_away(hub: Arc<Hub>, mut session: Session, away: Away, token: Option<String>) {
    let phone = match away {
        Away::Joined(phone) => {
            hub.metrics.upgrade(EndpointLabel::Client, Outcome::Ok);
            phone
        }
        Away::Refused(error) => return refused(&hub, session, error).await,
    };
    let conn = session.conn().clone();
    let tag = hub.logs.conn(conn.conn_id());
    tracing::info!(conn = %tag, owner = %phone.up.peer(), "phone joined through another instance");
    // The frames go up wrapped, the first with the token: the owner hands them on as they are.
    let mut wrapper = Wrapper::new(session.conn().conn_id(), token.as_deref());
    drop(token);
    let ending = loop {
        match session.next().await {
            Event::Frame(text) => {
                if let Some(ending) =
                    forward_up(&hub, &mut session, &phone, &mut wrapper, text).await
                {
                    break ending;
                }
            }
            Event::Ended(ending) => break ending,
            Event::Space => {}
        }
    };
    // The owner tells the binary (if it still holds the id) and unregisters the phone; if the
    // owner ended the link itself (an eviction, a close directive), this does nothing.
    phone.up.end(ending.code, "");
    drop(phone);
    let ending = session.finish().await;
    tracing::info!(conn = %tag, code = ending.code, "disconnect");
}

/// Checks one phone frame; false (with the phone closing) if it is refused.
fn check(hub: &Hub, session: &Session, text: &Utf8Bytes) -> bool {
    let Err(error) = frame_check::check(text, hub.config.max_json_depth) else {
        return true;
    };
    if hub.config.panic_on_frame.as_deref() == Some(text.as_str()) {
        panic!("fault injection: phone task panics mid-stream");
    }
    let reason = match error {
        FrameError::NotJson => CloseReason::InvalidJson,
        FrameError::TooDeep => CloseReason::JsonTooDeep,
    };
    tracing::debug!(conn = %hub.logs.conn(session.conn().conn_id()), ?error, "phone frame refused");
    local(session.conn()).close_as(reason, Origin::Relay);
    false
}

/// Checks one frame of an away phone and sends it, wrapped, up its link; waits (without reading
/// the phone) while the link has no credit. Returns the phone's ending if it ended meanwhile.
async fn forward_up(
    hub: &Hub,
    session: &mut Session,
    phone: &AwayPhone,
    wrapper: &mut Wrapper,
    text: Utf8Bytes,
) -> Option<Ending> {
    if !check(hub, session, &text) {
        return None;
    }
    let wrapped = Utf8Bytes::from(wrapper.wrap(&text));
    let len = wrapped.len();
    loop {
        match phone.up.try_frame(&wrapped) {
            Ok(()) => return None,
            Err(SendError::Full) => {
                let ready = |cx: &mut std::task::Context<'_>| phone.up.poll_space(len, cx);
                if let Event::Ended(ending) = session.wait_until(&ready).await {
                    return Some(ending);
                }
            }
            // The link is over: the phone is being closed.
            Err(_) => return None,
        }
    }
}

/// The code to report to the binary, if the phone's connection ended on its own (not by the
/// binary's request, not by eviction, not by shutdown).
fn notice_code(ending: Ending) -> Option<u16> {
    matches!(ending.origin, Origin::Peer | Origin::Relay).then_some(ending.code)
}

/// Checks one phone frame and forwards it, wrapped, to the phone's binary. Waits while the
/// binary's outbox is full (backpressure on this phone only: it is not read meanwhile).
/// Returns the phone's ending if it ended while waiting.
async fn forward(
    hub: &Hub,
    session: &mut Session,
    ticket: &PhoneTicket<Endpoint>,
    wrapper: &mut Wrapper,
    text: Utf8Bytes,
) -> Option<Ending> {
    if !check(hub, session, &text) {
        return None;
    }
    // Evicted: this phone is being closed.
    let binary = ticket.binary()?;
    let wrapped = Utf8Bytes::from(wrapper.wrap(&text));
    let len = wrapped.len();
    loop {
        match binary.send(wrapped.clone()) {
            Ok(()) => {
                hub.metrics.forwarded(Direction::PhoneToBinary, len);
                return None;
            }
            Err(SendError::Full) => {
                let Some(binary) = binary.as_local() else {
                    return None; // a binary is always local: nothing to wait for
                };
                let event = session.wait_for_space(binary, len).await;
                if let Event::Ended(ending) = event {
                    return Some(ending);
                }
            }
            // The binary is gone (grace window): nothing more to do.
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Side;
    use crate::local::LocalConn;
    use crate::outbox::Work;
    use relay_registry::CloseReason;
    use std::task::{Context, Poll, Waker};

    /// A binary whose outbox (bound 100 bytes) holds one frame over the bound: full.
    fn full_binary() -> Endpoint {
        let binary = Endpoint::Local(LocalConn::new("server-srv".into(), Side::Binary, 100));
        binary.send(Utf8Bytes::from("x".repeat(200))).unwrap();
        let notice = Utf8Bytes::from_static("{}");
        assert_eq!(
            binary.send(notice),
            Err(SendError::Full),
            "the outbox is full"
        );
        binary
    }

    fn notice() -> Utf8Bytes {
        Utf8Bytes::from(Wrapper::new("client-srv-1", None).left(1000))
    }

    #[test]
    fn a_notice_for_a_full_binary_waits_for_room_and_is_queued_not_dropped() {
        let binary = full_binary();
        let local = binary.as_local().unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut announcing = Box::pin(announce(&binary, notice()));
        assert!(announcing.as_mut().poll(&mut cx).is_pending());
        // The binary's task takes the queued frame: there is room now.
        let Poll::Ready(Work::Frames { frames, .. }) = local.poll_work(&mut cx) else {
            panic!("the queued frame is taken");
        };
        assert_eq!(frames.len(), 1);
        assert!(announcing.as_mut().poll(&mut cx).is_ready());
        let Poll::Ready(Work::Frames { frames, .. }) = local.poll_work(&mut cx) else {
            panic!("the notice is queued");
        };
        assert_eq!(Vec::from(frames), [notice()]);
    }

    #[test]
    fn a_notice_for_a_full_binary_that_closes_gives_up() {
        let binary = full_binary();
        let mut cx = Context::from_waker(Waker::noop());
        let mut announcing = Box::pin(announce(&binary, notice()));
        assert!(announcing.as_mut().poll(&mut cx).is_pending());
        binary.close(CloseReason::ShuttingDown);
        assert!(announcing.as_mut().poll(&mut cx).is_ready());
    }
}
