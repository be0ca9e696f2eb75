//! What instances say to each other over core NATS: the subjects, and the byte format of every
//! message.
//!
//! # Subjects
//!
//! Each instance listens on two subjects, both addressed to it by its
//! [`InstanceId`](super::instance::InstanceId) (validated to be a single subject token):
//!
//! | subject | carries |
//! | --- | --- |
//! | `relay.<instance>.link` | [`LinkMessage`]s: the ordered streams of every link whose receiving end is there (phone frames up to the owner, binary frames and closes down to the phone's instance, link-lost notices) |
//! | `relay.<instance>.rpc` | [`Request`]s that decide an outcome (register, probe, handover); each answered with a [`Reply`] on the request's inbox |
//!
//! Server-ids, conn-ids and frames travel only in message bodies, so no id (any UTF-8, chosen by
//! whoever connects) can ever add a token or a wildcard to a subject.
//!
//! # Format
//!
//! Every body is a [postcard](https://docs.rs/postcard) encoding of one of the enums below —
//! compact (varint integers, length-prefixed strings: a frame's header is 3 to 20 bytes), a
//! documented stable wire format, and the `serde` derives keep it in step with the types. A
//! [`LinkMessage::Frame`] header is followed by the frame's bytes, raw, so a frame is neither
//! escaped nor parsed on its way between instances (JSON around JSON would cost both), and the
//! receiver hands it on as a slice of the received buffer, without a copy.

use bytes::{Bytes, BytesMut};
use relay_protocol::CloseReason;
use serde::{Deserialize, Serialize};

/// The subject of `instance`'s link streams.
pub fn link_subject(instance: &str) -> String {
    format!("relay.{instance}.link")
}

/// The subject of `instance`'s requests.
pub fn rpc_subject(instance: &str) -> String {
    format!("relay.{instance}.rpc")
}

/// A link's id, chosen by the end that receives on it (each end names the link by its own id).
pub type LinkId = u64;

/// One message of a link stream, addressed to the end whose id `link` is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkMessage<'a> {
    /// A frame, number `seq` (from 1) of this direction; the frame's bytes follow the header.
    Frame {
        /// The receiving end's link id.
        link: LinkId,
        /// Position in this direction's stream.
        seq: u64,
    },
    /// The last message of this direction, number `seq`: towards a phone's instance, "close
    /// the phone with this"; towards the owner, "the phone left with this code".
    End {
        /// The receiving end's link id.
        link: LinkId,
        /// Position in this direction's stream.
        seq: u64,
        /// The close code.
        code: u16,
        /// The close reason text.
        #[serde(borrow)]
        reason: &'a str,
    },
    /// The sender lost this link (a gap, a lost connection): tear it down, `1011 relay link
    /// lost`. Not numbered: it ends the stream whatever came before.
    Lost {
        /// The receiving end's link id.
        link: LinkId,
    },
    /// A phone's instance gave up on a registration whose answer never came: if the owner did
    /// register it, under the link the phone's instance named `link`, it must unregister it.
    Abandoned {
        /// The phone's instance.
        #[serde(borrow)]
        from: &'a str,
        /// The id the phone's instance gave the link in its register request.
        link: LinkId,
    },
    /// Towards a phone's instance: the owner has handed on `consumed` bytes (frame lengths +
    /// 64 each) of this link's up frames in all, so far. Not numbered: a running total, so a
    /// later one supersedes an earlier one.
    Credit {
        /// The receiving end's link id.
        link: LinkId,
        /// The running total.
        consumed: u64,
    },
}

/// A request that decides an outcome, sent to the instance that must decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Register a phone connected to the sender with the owner of `server_id`.
    Register {
        /// The id the phone joins.
        server_id: String,
        /// The phone's conn-id (its binary addresses it by this).
        conn_id: String,
        /// The phone's instance.
        from: String,
        /// The phone's instance's id for the link: down messages are addressed to it.
        link: LinkId,
    },
    /// A binary on the sender claims `server_id`, whose directory entry (at `revision`) names
    /// the receiver: decide as for a claim of your own. A live binary that answers its ping
    /// keeps the id ([`Reply::Alive`]); otherwise the tenure ends (takeover: the holder 1011,
    /// its phones 4404; a gracing id or none: its phones 4404) and the entry is deleted if it
    /// is still at `revision` ([`Reply::Released`]): the claimant then creates it anew.
    Probe {
        /// The id claimed.
        server_id: String,
        /// The revision of the entry the claimant read.
        revision: u64,
    },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// [`Request::Register`] succeeded; up messages go to the owner's link `link`.
    Registered {
        /// The owner's id for the link.
        link: LinkId,
    },
    /// The request was refused with this close code (4404, 4429, 4409).
    Refused {
        /// The close code the phone or binary is told.
        code: u16,
    },
    /// [`Request::Probe`]: the binary answered; the claim is a conflict (4409).
    Alive,
    /// [`Request::Probe`]: the owner holds nothing for the id any more and deleted its entry
    /// (unless it changed meanwhile): claim it again.
    Released,
}

/// Why a message could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed cluster message")]
pub struct Malformed;

/// The bytes of a link message; `frame` follows a [`LinkMessage::Frame`] header.
pub fn encode_link(message: &LinkMessage<'_>, frame: &[u8]) -> Bytes {
    let header = postcard::to_allocvec(message).expect("encoding to a Vec cannot fail");
    let mut out = BytesMut::with_capacity(header.len() + frame.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(frame);
    out.freeze()
}

/// A link message and, for a frame, its bytes (a slice of `body`, not a copy).
///
/// # Errors
///
/// [`Malformed`] if `body` is not a link message, or if anything but a frame has trailing bytes.
pub fn decode_link(body: &Bytes) -> Result<(LinkMessage<'_>, Bytes), Malformed> {
    let (message, rest) =
        postcard::take_from_bytes::<LinkMessage<'_>>(body).map_err(|_| Malformed)?;
    let frame = body.slice(body.len() - rest.len()..);
    match message {
        LinkMessage::Frame { .. } => Ok((message, frame)),
        _ if frame.is_empty() => Ok((message, frame)),
        _ => Err(Malformed),
    }
}

/// The bytes of a request.
pub fn encode_request(request: &Request) -> Bytes {
    postcard::to_allocvec(request)
        .expect("encoding to a Vec cannot fail")
        .into()
}

/// Decodes a request.
///
/// # Errors
///
/// [`Malformed`] unless `body` is exactly one request.
pub fn decode_request(body: &[u8]) -> Result<Request, Malformed> {
    exactly(body)
}

/// The bytes of a reply.
pub fn encode_reply(reply: &Reply) -> Bytes {
    postcard::to_allocvec(reply)
        .expect("encoding to a Vec cannot fail")
        .into()
}

/// Decodes a reply.
///
/// # Errors
///
/// [`Malformed`] unless `body` is exactly one reply.
pub fn decode_reply(body: &[u8]) -> Result<Reply, Malformed> {
    exactly(body)
}

fn exactly<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Malformed> {
    match postcard::take_from_bytes(body) {
        Ok((value, [])) => Ok(value),
        _ => Err(Malformed),
    }
}

/// The text of a binary's close directive (the relay's only application close).
const DIRECTIVE_REASON: &str = "closed by server";

/// The [`CloseReason`] a received `code` and `reason` stand for: the same variant when it is one
/// of the protocol's closes, an application close (1000, 3000–4999) with the binary-directive
/// text otherwise, and [`CloseReason::LinkLost`] for a code no peer may send.
///
/// # Examples
///
/// ```
/// use relay_cluster::wire::close_from_wire;
/// use relay_protocol::CloseReason;
///
/// assert_eq!(
///     close_from_wire(4404, "binary reclaimed server-id"),
///     CloseReason::Registry(relay_registry::CloseReason::Reclaimed),
/// );
/// assert_eq!(close_from_wire(4000, "closed by server").code(), 4000);
/// assert_eq!(close_from_wire(1006, "abnormal"), CloseReason::LinkLost);
/// ```
pub fn close_from_wire(code: u16, reason: &str) -> CloseReason {
    // The closes that cross the wire by their code and text, mapped back to the same close.
    CloseReason::known()
        .find(|close| close.code() == code && close.reason() == reason)
        .or_else(|| CloseReason::custom(code, DIRECTIVE_REASON).ok())
        .unwrap_or(CloseReason::LinkLost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_header_is_small_and_the_frame_follows_raw() {
        let message = LinkMessage::Frame { link: 7, seq: 300 };
        let body = encode_link(&message, br#"{"a":1}"#);
        assert!(body.len() <= 1 + 1 + 2 + 7, "{} bytes", body.len());
        let (decoded, frame) = decode_link(&body).unwrap();
        assert_eq!(decoded, message);
        assert_eq!(&frame[..], br#"{"a":1}"#);
    }

    #[test]
    fn control_messages_round_trip_and_refuse_trailing_bytes() {
        let all = [
            LinkMessage::End {
                link: 1,
                seq: 2,
                code: 4404,
                reason: "binary reclaimed server-id",
            },
            LinkMessage::Lost { link: u64::MAX },
            LinkMessage::Abandoned {
                from: "relay-2",
                link: 9,
            },
            LinkMessage::Credit {
                link: 4,
                consumed: 1 << 40,
            },
        ];
        for message in all {
            let body = encode_link(&message, b"");
            assert_eq!(decode_link(&body).unwrap().0, message);
            assert_eq!(decode_link(&encode_link(&message, b"x")), Err(Malformed));
        }
        assert_eq!(decode_link(&Bytes::from_static(&[0xff])), Err(Malformed));
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let request = Request::Register {
            server_id: "x peer=6.6.6.6 \u{85}".into(),
            conn_id: "client-x-0000000a".into(),
            from: "relay-1".into(),
            link: 3,
        };
        assert_eq!(decode_request(&encode_request(&request)), Ok(request));
        for reply in [
            Reply::Registered { link: 4 },
            Reply::Refused { code: 4429 },
            Reply::Alive,
            Reply::Released,
        ] {
            assert_eq!(decode_reply(&encode_reply(&reply)), Ok(reply));
        }
        let mut long = encode_reply(&Reply::Alive).to_vec();
        long.push(0);
        assert_eq!(decode_reply(&long), Err(Malformed));
    }

    #[test]
    fn every_known_close_crosses_the_wire_as_itself() {
        for close in CloseReason::known() {
            assert_eq!(close_from_wire(close.code(), close.reason()), close);
        }
        let directive = CloseReason::custom(4000, DIRECTIVE_REASON).unwrap();
        assert_eq!(close_from_wire(4000, DIRECTIVE_REASON), directive);
        assert_eq!(
            close_from_wire(5000, DIRECTIVE_REASON),
            CloseReason::LinkLost
        );
    }
}
