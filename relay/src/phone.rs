//! A phone's connection task: join the server-id, forward its frames wrapped to the binary it
//! joined, and tell that binary when the phone leaves on its own.
//!
//! The task holds its `PhoneTicket` for as long as it runs: dropping it (even in a panic unwind)
//! unregisters the phone, so there is no cleanup path to forget.

use super::Hub;
use super::conn::{Ending, Origin, WsConn};
use super::envelope::{Wrapper, is_json};
use super::session::{Event, Session, Ws};
use super::stream::Arrivals;
use relay_registry::{CloseReason, Conn, PhoneTicket, RegistryError, SendError};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tracing::info;

/// Runs a phone's connection until it ends; `registration` is the result of registering it
/// (done before the upgrade is answered).
pub async fn run(
    hub: Arc<Hub>,
    ws: Ws,
    arrivals: Arrivals,
    conn: Arc<WsConn>,
    registration: Result<PhoneTicket<WsConn>, RegistryError>,
) {
    let mut session = Session::start(ws, arrivals, conn.clone(), &hub);
    let conn_id = conn.conn_id();
    let ticket = match registration {
        Ok(ticket) => ticket,
        Err(error) => {
            info!(%conn_id, code = error.code(), "phone refused");
            conn.close_as(CloseReason::from(error), Origin::Relay);
            session.finish().await;
            return;
        }
    };
    info!(%conn_id, "phone joined");
    let wrapper = Wrapper::new(conn_id);
    let ending = loop {
        match session.next().await {
            Event::Frame(text) => forward(&hub, &conn, &ticket, &wrapper, &text).await,
            Event::Ended(ending) => break ending,
        }
    };
    if let Some(code) = notice_code(ending) {
        // Only while the binary the phone joined still holds the id (the ticket is registered).
        if let Some(binary) = ticket.binary() {
            let _ = binary.push_text(Utf8Bytes::from(wrapper.left(code)));
        }
    }
    drop(ticket);
    let ending = session.finish().await;
    info!(%conn_id, code = ending.code, "disconnect");
}

/// The code to report to the binary, if the phone's connection ended on its own (not by the
/// binary's request, not by eviction, not by shutdown).
fn notice_code(ending: Ending) -> Option<u16> {
    matches!(ending.origin, Origin::Peer | Origin::Relay).then_some(ending.code)
}

/// Checks one phone frame and forwards it, wrapped, to the phone's binary. Waits while the
/// binary's outbox is full (backpressure on this phone only).
async fn forward(
    hub: &Hub,
    conn: &WsConn,
    ticket: &PhoneTicket<WsConn>,
    wrapper: &Wrapper,
    text: &str,
) {
    if hub.config.panic_on_frame.as_deref() == Some(text) {
        panic!("fault injection: phone task panics mid-stream");
    }
    if !is_json(text) {
        info!(conn_id = %conn.conn_id(), "invalid JSON from phone");
        conn.close_as(CloseReason::InvalidJson, Origin::Relay);
        return;
    }
    let Some(binary) = ticket.binary() else {
        return; // evicted: this phone is being closed
    };
    let wrapped = Utf8Bytes::from(wrapper.wrap(text));
    loop {
        match binary.push_text(wrapped.clone()) {
            Err(SendError::Full) => {
                tokio::select! {
                    _ = binary.wait_for_space(wrapped.len()) => {}
                    _ = conn.closed() => return,
                }
            }
            // Delivered, or the binary is gone (grace window): nothing more to do.
            _ => return,
        }
    }
}
