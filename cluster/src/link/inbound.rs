//! What a link's receiving end implements: the relay's sinks (a phone's outbox at the phone's
//! instance, the binary at the owner).

use bytes::Bytes;

/// What a link's receiving end does with what arrives, in order.
///
/// Called only from the link's dispatcher task, one call at a time, for every link of this
/// instance, so a sink sees its link's frames, then at most one of `ended` or `lost`, in that
/// order and never anything after. Implementations must not block (enqueue, close,
/// unregister — as a [`Conn`](relay_registry::Conn) would): a blocked sink stalls every link
/// of the instance, and NATS then drops messages (a slow consumer: every link is lost).
pub trait Inbound: Send + Sync + 'static {
    /// The next frame of this link: a text frame, its UTF-8 checked by the link.
    fn frame(&self, frame: Bytes);
    /// The link's last message: the other end ended it with `code` and `reason` (towards a
    /// phone's instance: close the phone with this, see
    /// [`close_from_wire`](super::wire::close_from_wire); towards the owner: the phone left
    /// with `code`). Nothing follows.
    fn ended(&self, code: u16, reason: &str);
    /// The link is lost: close the phone `1011 relay link lost` (or unregister it). Nothing
    /// follows.
    fn lost(&self);
}
