//! The JSON the relay writes and reads around frames: a phone's frame wrapped for its binary, the
//! phone-left notice, and the binary's envelope addressed to a phone.

use crate::close::CloseReason;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// `{"conn_id":"client-…","frame":` for one phone, built once; a frame is appended, then `}`.
pub struct Wrapper {
    /// The conn-id as a JSON string.
    id: String,
    prefix: String,
}

impl Wrapper {
    /// The wrapper for the phone `conn_id`.
    pub fn new(conn_id: &str) -> Self {
        let id = serde_json::to_string(conn_id).expect("a string always serializes");
        let prefix = format!("{{\"conn_id\":{id},\"frame\":");
        Wrapper { id, prefix }
    }

    /// `frame` (already checked to be one JSON value) wrapped for the binary, verbatim except
    /// for surrounding whitespace.
    pub fn wrap(&self, frame: &str) -> String {
        let frame = frame.trim_matches([' ', '\t', '\n', '\r']);
        let mut out = String::with_capacity(self.prefix.len() + frame.len() + 1);
        out.push_str(&self.prefix);
        out.push_str(frame);
        out.push('}');
        out
    }

    /// The notice that this phone's connection ended with `code`: no `frame` key.
    pub fn left(&self, code: u16) -> String {
        format!("{{\"conn_id\":{},\"close_code\":{code}}}", self.id)
    }
}

/// What a binary sends: a frame for one of its phones, and/or a close directive for it.
#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    /// The phone's conn-id.
    #[serde(borrow)]
    pub conn_id: Cow<'a, str>,
    /// The frame to deliver verbatim, if any.
    #[serde(borrow, default)]
    pub frame: Option<&'a RawValue>,
    /// A non-zero code closes the phone after the frame (if any) is delivered.
    #[serde(default)]
    pub close_code: Option<u16>,
}

impl<'a> Envelope<'a> {
    /// Parses a binary's frame; `None` if it is not a well-formed envelope (including a close
    /// code a WebSocket close frame may not carry).
    pub fn parse(text: &'a str) -> Option<Self> {
        let envelope: Envelope<'a> = serde_json::from_str(text).ok()?;
        match envelope.close_code {
            Some(code) if code != 0 && !sendable_close_code(code) => None,
            _ => Some(envelope),
        }
    }

    /// The close the envelope asks for, if any (its code was checked by [`parse`](Self::parse)).
    pub fn close(&self) -> Option<CloseReason> {
        let code = self.close_code.filter(|&code| code != 0)?;
        CloseReason::custom(code, "closed by server").ok()
    }
}

/// Close codes a binary may ask for (the protocol: 1000 or 3000–4999).
fn sendable_close_code(code: u16) -> bool {
    CloseReason::custom(code, "").is_ok()
}
