//! The JSON the relay writes and reads around frames: a phone's frame wrapped for its binary, the
//! phone-left notice, and the binary's envelope addressed to a phone.

use relay_protocol::CloseReason;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// `{"conn_id":"client-…","frame":` for one phone, built once; a frame is appended, then `}`.
///
/// The first envelope of a phone that sent a token carries it too (protocol: "Frames"):
/// `{"conn_id":"client-…","token":"…","frame":…}`. The token is kept (as a JSON string) until
/// the first [`wrap`](Self::wrap) and dropped there, so it lives no longer than it must.
///
/// Every idle phone holds one, so it holds two exact-size allocations at most (the prefix, and
/// the token until the first frame): the conn-id is read back out of the prefix.
pub(crate) struct Wrapper {
    /// `{"conn_id":` + the conn-id as a JSON string + `,"frame":`.
    prefix: Box<str>,
    /// The token as a JSON string, for the first envelope; `None` once used (or without one).
    token: Option<Box<str>>,
}

/// What [`Wrapper::prefix`] holds before and after the conn-id.
const ID_BEFORE: &str = "{\"conn_id\":";
const ID_AFTER: &str = ",\"frame\":";
/// What comes between the conn-id and the token on the first envelope.
const TOKEN_KEY: &str = ",\"token\":";

impl Wrapper {
    /// The wrapper for the phone `conn_id`; `token` goes on its first envelope only.
    pub(crate) fn new(conn_id: &str, token: Option<&str>) -> Self {
        let id = serde_json::to_string(conn_id).expect("a string always serializes");
        let prefix = format!("{ID_BEFORE}{id}{ID_AFTER}").into_boxed_str();
        let token = token.map(|token| {
            serde_json::to_string(token)
                .expect("a string always serializes")
                .into_boxed_str()
        });
        Wrapper { prefix, token }
    }

    /// The conn-id as a JSON string.
    fn id(&self) -> &str {
        &self.prefix[ID_BEFORE.len()..self.prefix.len() - ID_AFTER.len()]
    }

    /// `frame` (already checked to be one JSON value) wrapped for the binary, verbatim except
    /// for surrounding whitespace; the first call puts the token on it (if there is one).
    pub(crate) fn wrap(&mut self, frame: &str) -> String {
        let frame = frame.trim_matches([' ', '\t', '\n', '\r']);
        let token = self.token.take();
        let token_len = token.as_ref().map_or(0, |t| TOKEN_KEY.len() + t.len());
        let mut out = String::with_capacity(self.prefix.len() + token_len + frame.len() + 1);
        match token {
            None => out.push_str(&self.prefix),
            Some(token) => {
                out.push_str(ID_BEFORE);
                out.push_str(self.id());
                out.push_str(TOKEN_KEY);
                out.push_str(&token);
                out.push_str(ID_AFTER);
            }
        }
        out.push_str(frame);
        out.push('}');
        out
    }

    /// The notice that this phone's connection ended with `code`: no `frame` key.
    pub(crate) fn left(&self, code: u16) -> String {
        format!("{ID_BEFORE}{},\"close_code\":{code}}}", self.id())
    }
}

/// What a binary sends: a frame for one of its phones, and/or a close directive for it.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope<'a> {
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
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        let envelope: Envelope<'a> = serde_json::from_str(text).ok()?;
        match envelope.close_code {
            Some(code) if code != 0 && !sendable_close_code(code) => None,
            _ => Some(envelope),
        }
    }

    /// The close the envelope asks for, if any (its code was checked by [`parse`](Self::parse)).
    pub(crate) fn close(&self) -> Option<CloseReason> {
        let code = self.close_code.filter(|&code| code != 0)?;
        CloseReason::custom(code, "closed by server").ok()
    }
}

/// Close codes a binary may ask for (the protocol: 1000 or 3000–4999).
fn sendable_close_code(code: u16) -> bool {
    CloseReason::custom(code, "").is_ok()
}

/// A binary's push wake, `{"push_wake":{"platform":"fcm","token":"…"}}` with no `conn_id`
/// (protocol "Push wakes"; an envelope with a `conn_id` is an [`Envelope`] and wakes nothing).
#[derive(Debug)]
pub(crate) struct PushWake<'a> {
    /// The phone's FCM registration token: non-empty, at most
    /// [`MAX_TOKEN`](crate::push::MAX_TOKEN) bytes.
    pub token: Cow<'a, str>,
}

impl<'a> PushWake<'a> {
    /// Parses a binary's frame that is not an [`Envelope`]; `None` unless it is a well-formed
    /// push wake (platform exactly `fcm`, a token of 1 to 4 KiB bytes, no `conn_id`).
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        #[derive(Deserialize)]
        struct Outer<'a> {
            #[serde(borrow)]
            push_wake: Inner<'a>,
            #[serde(default, deserialize_with = "present")]
            conn_id: Option<()>,
        }
        #[derive(Deserialize)]
        struct Inner<'a> {
            #[serde(borrow)]
            platform: Cow<'a, str>,
            #[serde(borrow)]
            token: Cow<'a, str>,
        }
        let outer: Outer<'a> = serde_json::from_str(text).ok()?;
        let Inner { platform, token } = outer.push_wake;
        let token_ok = !token.is_empty() && token.len() <= crate::push::MAX_TOKEN;
        (outer.conn_id.is_none() && platform == "fcm" && token_ok).then_some(PushWake { token })
    }
}

/// `Some(())` for a key that is present, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(value: D) -> Result<Option<()>, D::Error> {
    serde::de::IgnoredAny::deserialize(value).map(|_| Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_on_the_first_envelope_only() {
        let mut wrapper = Wrapper::new("client-a-1", Some("t0k"));
        assert_eq!(
            wrapper.wrap(" 1 "),
            r#"{"conn_id":"client-a-1","token":"t0k","frame":1}"#
        );
        assert_eq!(wrapper.wrap("2"), r#"{"conn_id":"client-a-1","frame":2}"#);
        assert_eq!(wrapper.wrap("{}"), r#"{"conn_id":"client-a-1","frame":{}}"#);
    }

    #[test]
    fn without_a_token_no_envelope_has_the_key() {
        let mut wrapper = Wrapper::new("client-a-1", None);
        assert_eq!(wrapper.wrap("1"), r#"{"conn_id":"client-a-1","frame":1}"#);
        assert_eq!(wrapper.wrap("2"), r#"{"conn_id":"client-a-1","frame":2}"#);
    }

    #[test]
    fn the_token_is_escaped_as_a_json_string() {
        let mut wrapper = Wrapper::new("client-a-1", Some("a\"b\\c"));
        let envelope: serde_json::Value = serde_json::from_str(&wrapper.wrap("[]")).unwrap();
        assert_eq!(envelope["token"], "a\"b\\c");
        assert_eq!(envelope["frame"], serde_json::json!([]));
    }

    #[test]
    fn a_conn_id_that_needs_escaping_is_escaped_in_every_envelope() {
        let mut wrapper = Wrapper::new("client-\"q\"-1", Some("t"));
        for text in [wrapper.wrap("1"), wrapper.wrap("2"), wrapper.left(1000)] {
            let envelope: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(envelope["conn_id"], "client-\"q\"-1", "{text}");
        }
    }

    #[test]
    fn the_left_notice_never_carries_the_token() {
        let wrapper = Wrapper::new("client-a-1", Some("t0k"));
        assert_eq!(
            wrapper.left(1000),
            r#"{"conn_id":"client-a-1","close_code":1000}"#
        );
    }

    #[test]
    fn a_push_wake_is_fcm_with_a_token_and_no_conn_id() {
        let wake = PushWake::parse(r#"{"push_wake":{"platform":"fcm","token":"t-1"}}"#);
        assert_eq!(wake.map(|w| w.token.into_owned()), Some("t-1".to_owned()));
        let escaped = PushWake::parse(r#"{"push_wake":{"platform":"fcm","token":"a\"b"}}"#);
        assert_eq!(
            escaped.map(|w| w.token.into_owned()),
            Some("a\"b".to_owned())
        );
        let longest = format!(
            r#"{{"push_wake":{{"platform":"fcm","token":"{}"}}}}"#,
            "x".repeat(4096)
        );
        assert!(PushWake::parse(&longest).is_some());
        let too_long = format!(
            r#"{{"push_wake":{{"platform":"fcm","token":"{}"}}}}"#,
            "x".repeat(4097)
        );
        for bad in [
            too_long.as_str(),
            r#"{"push_wake":{"platform":"fcm","token":""}}"#,
            r#"{"push_wake":{"platform":"FCM","token":"t"}}"#,
            r#"{"push_wake":{"platform":"apns","token":"t"}}"#,
            r#"{"push_wake":{"token":"t"}}"#,
            r#"{"push_wake":{"platform":"fcm"}}"#,
            r#"{"push_wake":{"platform":"fcm","token":7}}"#,
            r#"{"push_wake":"fcm"}"#,
            r#"{"push_wake":{"platform":"fcm","token":"t"},"conn_id":null}"#,
            r#"{"push_wake":{"platform":"fcm","token":"t"},"conn_id":7}"#,
            r#"{"platform":"fcm","token":"t"}"#,
        ] {
            assert!(PushWake::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn an_envelope_with_a_conn_id_and_a_push_wake_is_routed() {
        let text =
            r#"{"conn_id":"client-a-1","frame":1,"push_wake":{"platform":"fcm","token":"t"}}"#;
        assert_eq!(Envelope::parse(text).unwrap().conn_id, "client-a-1");
    }
}
