//! A phone's connection task: forward its frames, checked and wrapped, to the binary it joined,
//! and tell that binary when the phone leaves on its own.
//!
//! The task holds its `PhoneTicket` for as long as it runs: dropping it (even in a panic unwind)
//! unregisters the phone, so there is no cleanup path to forget. In cluster mode a phone whose
//! id another instance owns holds an [`AwayPhone`] instead: its frames go up the link (waiting
//! for the link's credit is the same backpressure as waiting for the binary's outbox), and
//! dropping it ends the link, which unregisters the phone at the owner.

use crate::Hub;
use crate::close::CloseReason;
use crate::clustered::away::{Away, AwayPhone};
use crate::endpoint::Endpoint;
use crate::envelope::Wrapper;
use crate::frame_check::{self, FrameError};
use crate::metrics::{Direction, DropReason, EndpointLabel, Outcome};
use crate::outbox::{Ending, Origin};
use crate::send_error::SendError;
use crate::session::{Event, Session, local};
use relay_registry::{Conn, PhoneTicket, RegistryError};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Runs a phone's connection until it ends; `registration` is the result of its pre-upgrade
/// registration.
pub async fn run(
    hub: Arc<Hub>,
    mut session: Session,
    registration: Result<PhoneTicket<Endpoint>, RegistryError>,
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
    let wrapper = Wrapper::new(conn.conn_id());
    let ending = loop {
        match session.next().await {
            Event::Frame(text) => {
                if let Some(ending) = forward(&hub, &mut session, &ticket, &wrapper, text).await {
                    break ending;
                }
            }
            Event::Ended(ending) => break ending,
            Event::Space => {}
        }
    };
    if let Some(code) = notice_code(ending) {
        // Only while the binary the phone joined still holds the id (the ticket is registered).
        if let Some(binary) = ticket.binary() {
            if binary.send(Utf8Bytes::from(wrapper.left(code))) == Err(SendError::Full) {
                hub.metrics.dropped(DropReason::BinaryFull);
            }
        }
    }
    drop(ticket);
    let ending = session.finish().await;
    tracing::info!(conn = %tag, code = ending.code, "disconnect");
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
pub async fn run_away(hub: Arc<Hub>, mut session: Session, away: Away) {
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
    let wrapper = Wrapper::new(session.conn().conn_id());
    let ending = loop {
        match session.next().await {
            Event::Frame(text) => {
                if let Some(ending) = forward_up(&hub, &mut session, &phone, &wrapper, text).await {
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
    wrapper: &Wrapper,
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
    wrapper: &Wrapper,
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
