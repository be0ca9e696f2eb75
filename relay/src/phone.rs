//! A phone's connection task: forward its frames, checked and wrapped, to the binary it joined,
//! and tell that binary when the phone leaves on its own.
//!
//! The task holds its `PhoneTicket` for as long as it runs: dropping it (even in a panic unwind)
//! unregisters the phone, so there is no cleanup path to forget.

use crate::Hub;
use crate::endpoint::Endpoint;
use crate::envelope::Wrapper;
use crate::frame_check::{self, FrameError};
use crate::metrics::{Direction, DropReason, EndpointLabel, Outcome};
use crate::outbox::{Ending, Origin};
use crate::session::{Event, Session, local};
use relay_registry::{CloseReason, Conn, PhoneTicket, RegistryError, SendError};
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
        Err(error) => {
            let outcome = match error {
                RegistryError::NoServer => Outcome::NoServer,
                RegistryError::PhonesAtCap => Outcome::PhoneCap,
                _ => Outcome::BadRequest,
            };
            hub.metrics.upgrade(EndpointLabel::Client, outcome);
            tracing::info!(conn = %tag, code = error.code(), "phone refused");
            local(&conn).close_as(CloseReason::from(error), Origin::Relay);
            session.finish().await;
            return;
        }
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
    if let Err(error) = frame_check::check(&text, hub.config.max_json_depth) {
        if hub.config.panic_on_frame.as_deref() == Some(text.as_str()) {
            panic!("fault injection: phone task panics mid-stream");
        }
        let reason = match error {
            FrameError::NotJson => CloseReason::InvalidJson,
            FrameError::TooDeep => CloseReason::JsonTooDeep,
        };
        tracing::debug!(conn = %hub.logs.conn(ticket.conn().conn_id()), ?error, "phone frame refused");
        local(session.conn()).close_as(reason, Origin::Relay);
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
                let event = match &*binary {
                    Endpoint::Local(binary) => session.wait_for_space(binary, len).await,
                };
                if let Event::Ended(ending) = event {
                    return Some(ending);
                }
            }
            // The binary is gone (grace window): nothing more to do.
            Err(_) => return None,
        }
    }
}
