//! A phone's connection task: forward its frames, checked and wrapped, to the binary it joined,
//! and tell that binary when the phone leaves on its own.
//!
//! The task holds its `PhoneTicket` for as long as it runs: dropping it (even in a panic unwind)
//! unregisters the phone, so there is no cleanup path to forget. In cluster mode a phone whose
//! id another instance owns holds an [`AwayPhone`] instead: its frames go up the link (waiting
//! for the link's credit is the same backpressure as waiting for the binary's outbox), and
//! dropping it ends the link, which unregisters the phone at the owner.

use crate::cluster::away::{Away, AwayPhone};
use crate::conn::endpoint::Endpoint;
use crate::conn::outbox::{Ending, Origin};
use crate::conn::session::{Event, Session, local};
use crate::hub::Hub;
use crate::metrics::{Direction, EndpointLabel, Outcome};
use crate::protocol::envelope::Wrapper;
use crate::protocol::frame_check::{self, FrameError};
use futures_util::future::Either;
use relay_cluster::link::Outbound;
use relay_protocol::{CloseReason, SendError};
use relay_registry::{Conn, PhoneTicket, RegistryError};
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::Context;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Runs a phone's connection until it ends; `registration` is the result of its pre-upgrade
/// registration with this instance's registry.
///
/// Not an `async fn`: it only picks what [`serve`] gets, so it adds no future of its own (an
/// `async fn` keeps its arguments in its state for its whole life, beside the future it awaits:
/// a second `Session` slot in every idle phone).
pub(crate) fn run(
    hub: Arc<Hub>,
    session: Session,
    registration: Result<PhoneTicket<Endpoint>, RegistryError>,
    token: Option<String>,
) -> impl Future<Output = ()> + Send {
    serve(hub, session, registration.map(Upstream::Local), token)
}

/// Runs a phone's connection whose id another instance owns, until it ends (not an `async fn`,
/// as [`run`]).
pub(crate) fn run_away(
    hub: Arc<Hub>,
    session: Session,
    away: Away,
    token: Option<String>,
) -> impl Future<Output = ()> + Send {
    let joined = match away {
        Away::Joined(phone) => Ok(Upstream::Away(phone)),
        Away::Refused(error) => Err(error),
    };
    serve(hub, session, joined, token)
}

/// Where a phone's frames go: the binary it joined, in this instance's registry, or (cluster
/// mode) up the link to the instance that owns its id. The one phone loop ([`serve`]) sends to
/// either.
enum Upstream {
    /// Registered here: dropping the ticket unregisters the phone.
    Local(PhoneTicket<Endpoint>),
    /// Registered with the owner elsewhere: dropping it ends the link, which unregisters the
    /// phone there.
    Away(AwayPhone),
}

impl Upstream {
    /// Where the next frame goes; `None` once the phone was evicted (it is being closed).
    fn target(&self) -> Option<Target<'_>> {
        match self {
            Upstream::Local(ticket) => ticket.binary().map(Target::Binary),
            Upstream::Away(phone) => Some(Target::Link(&phone.up)),
        }
    }

    /// The phone's connection ended (`ending`): tells the binary it joined, if it left on its
    /// own, and unregisters it. A notice for a full binary outbox waits for room (see
    /// [`announce`]); away, the owner does the same.
    async fn left(self, wrapper: &Wrapper, ending: Ending) {
        match self {
            Upstream::Local(ticket) => {
                if let Some(code) = notice_code(ending) {
                    // Only while the binary the phone joined still holds the id (the ticket is
                    // registered).
                    if let Some(binary) = ticket.binary() {
                        announce(&binary, Utf8Bytes::from(wrapper.left(code))).await;
                    }
                }
                drop(ticket);
            }
            Upstream::Away(phone) => {
                // The owner tells the binary (if it still holds the id) and unregisters the
                // phone; if the owner ended the link itself (an eviction, a close directive),
                // this does nothing.
                phone.up.end(ending.code, "");
                drop(phone);
            }
        }
    }
}

/// Where one frame goes.
enum Target<'a> {
    /// The binary's connection, here.
    Binary(Arc<Endpoint>),
    /// The link up to the owner.
    Link(&'a Outbound),
}

/// What waiting for room to send found.
enum Room {
    /// There may be room now: try again.
    Maybe,
    /// There will be none (a binary is always local: nothing to wait for).
    Never,
    /// The phone's connection ended meanwhile.
    Ended(Ending),
}

impl Target<'_> {
    /// Sends `frame` without waiting (a frame handed to a binary here is counted forwarded;
    /// one sent up a link is counted by the owner once it hands it on).
    fn try_send(&self, hub: &Hub, phone: &Endpoint, frame: &Utf8Bytes) -> Result<(), SendError> {
        // Past the lease's deadline (cluster mode): fenced at once, nothing delivered.
        if !hub.may_deliver_for(phone) {
            return Err(SendError::Closed);
        }
        match self {
            Target::Binary(binary) => {
                let sent = binary.send(frame.clone());
                if sent.is_ok() {
                    hub.metrics.forwarded(Direction::PhoneToBinary, frame.len());
                }
                sent
            }
            Target::Link(up) => up.try_frame(frame.as_bytes()),
        }
    }

    /// Waits, without reading the phone, until a frame of `len` bytes may fit: the binary's
    /// outbox has room, or the link has credit (the same backpressure).
    async fn wait_for_room(&self, session: &mut Session, len: usize) -> Room {
        let event = match self {
            Target::Binary(binary) => match binary.as_local() {
                Some(local) => session.wait_for_space(local, len).await,
                None => return Room::Never,
            },
            Target::Link(up) => {
                let ready = |cx: &mut Context<'_>| up.poll_space(len, cx);
                session.wait_until(&ready).await
            }
        };
        match event {
            Event::Ended(ending) => Room::Ended(ending),
            _ => Room::Maybe,
        }
    }
}

/// The phone loop, local or away: forwards each frame until the connection ends, then tells the
/// binary and unregisters.
///
/// What runs for the connection's whole life is the `async move` block, and it holds only what
/// the loop needs: the registration's outcome and the token are settled before it (an `async fn`
/// would keep its arguments in its state beside their moved copies), and the waits that are
/// rare — backpressure, the phone-left notice — are boxed when they happen, so that their
/// states do not size every idle phone's future.
fn serve(
    hub: Arc<Hub>,
    session: Session,
    joined: Result<Upstream, RegistryError>,
    token: Option<String>,
) -> Either<impl Future<Output = ()> + Send, impl Future<Output = ()> + Send> {
    let upstream = match joined {
        Ok(upstream) => {
            hub.metrics.upgrade(EndpointLabel::Client, Outcome::Ok);
            upstream
        }
        // Boxed: rare, and its state would size every phone's future.
        Err(error) => return Either::Left(Box::pin(refused(hub, session, error))),
    };
    // The first envelope carries the token; away, the frames go up wrapped and the owner hands
    // them on as they are.
    let wrapper = Wrapper::new(session.conn().conn_id(), token.as_deref());
    drop(token);
    Either::Right(serve_joined(hub, session, upstream, wrapper))
}

/// [`serve`]'s loop, once joined (an `async move` block: see [`serve`]).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold a second copy of its `mut` arguments (the Session)"
)]
fn serve_joined(
    hub: Arc<Hub>,
    mut session: Session,
    upstream: Upstream,
    mut wrapper: Wrapper,
) -> impl Future<Output = ()> + Send {
    async move {
        let conn = session.conn().clone();
        match &upstream {
            Upstream::Local(_) => {
                tracing::info!(conn = %hub.logs.conn(conn.conn_id()), "phone joined");
            }
            Upstream::Away(phone) => {
                tracing::info!(conn = %hub.logs.conn(conn.conn_id()), owner = %phone.up.peer(), "phone joined through another instance");
            }
        }
        let ending = loop {
            match session.next().await {
                Event::Frame(text) => {
                    if let Some(ending) =
                        forward(&hub, &mut session, &upstream, &mut wrapper, text).await
                    {
                        break ending;
                    }
                }
                Event::Ended(ending) => break ending,
                Event::Space => {}
            }
        };
        // The notice, then the registration ends; meanwhile the close handshake runs (a notice
        // that waits for room in a full binary outbox does not hold the phone's close up).
        // Boxed: it runs once, at the end.
        let ((), ending) =
            Box::pin(
                async move { tokio::join!(upstream.left(&wrapper, ending), session.finish()) },
            )
            .await;
        tracing::info!(conn = %hub.logs.conn(conn.conn_id()), code = ending.code, "disconnect");
    }
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
async fn refused(hub: Arc<Hub>, session: Session, error: RegistryError) {
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

/// Checks one phone frame and sends it, wrapped, upstream. Waits while there is no room
/// (backpressure on this phone only: it is not read meanwhile). Returns the phone's ending if it
/// ended while waiting.
async fn forward(
    hub: &Hub,
    session: &mut Session,
    upstream: &Upstream,
    wrapper: &mut Wrapper,
    text: Utf8Bytes,
) -> Option<Ending> {
    if !check(hub, session, &text) {
        return None;
    }
    // Evicted: this phone is being closed.
    let target = upstream.target()?;
    let wrapped = Utf8Bytes::from(wrapper.wrap(&text));
    let len = wrapped.len();
    loop {
        match target.try_send(hub, session.conn(), &wrapped) {
            Ok(()) => return None,
            // Boxed: backpressure is rare, and its state would size every phone's future.
            Err(SendError::Full) => match Box::pin(target.wait_for_room(session, len)).await {
                Room::Maybe => {}
                Room::Never => return None,
                Room::Ended(ending) => return Some(ending),
            },
            // The binary is gone (grace window), or the link is over (the phone is being
            // closed): nothing more to do.
            Err(_) => return None,
        }
    }
}

/// The code to report to the binary, if the phone's connection ended on its own (not by the
/// binary's request, not by eviction, not by shutdown).
fn notice_code(ending: Ending) -> Option<u16> {
    matches!(ending.origin, Origin::Peer | Origin::Relay).then_some(ending.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::local::LocalConn;
    use crate::conn::outbox::Work;
    use crate::protocol::conn_ids::Side;
    use std::task::{Poll, Waker};

    /// A binary whose outbox (bound 100 bytes) holds one frame over the bound: full.
    fn full_binary() -> Endpoint {
        let binary = Endpoint::Local(LocalConn::new("server-srv".into(), Side::Binary, 100, 0));
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
