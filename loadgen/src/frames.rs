//! What the load generator sends and how it reads what comes back: the probe frame (a step number,
//! a send time, an echo flag and padding up to the frame size), the phone's hello, and the
//! binary's envelopes in both directions (`relay/PROTOCOL.md`, "Frames").

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::sync::LazyLock;

/// Padding to copy from: as long as the largest frame (building it char by char showed up in
/// the load generator's profile).
static PAD: LazyLock<String> = LazyLock::new(|| "p".repeat(256 * 1024));

/// A phone's first frame: tells its binary the phone's conn-id.
pub const HELLO: &str = "\"hello\"";

/// A probe: `{"s":STEP,"t":MICROS,"e":0|1,"p":"ppp…"}`, padded to exactly `size` bytes (or its
/// unpadded length, if that is longer). `e = 1` asks the binary to send it back to its phone.
pub fn probe(step: u32, sent_us: u64, echo: bool, size: usize) -> String {
    let head = format!(
        "{{\"s\":{step},\"t\":{sent_us},\"e\":{},\"p\":\"",
        u8::from(echo)
    );
    let pad = size.saturating_sub(head.len() + 2).min(PAD.len());
    let mut text = String::with_capacity(head.len() + pad + 2);
    text.push_str(&head);
    text.push_str(&PAD[..pad]);
    text.push_str("\"}");
    text
}

/// The start of an envelope to the phone `conn_id`: append a frame and `}`.
pub fn envelope_prefix(conn_id: &str) -> String {
    format!(
        "{{\"conn_id\":{},\"frame\":",
        serde_json::Value::from(conn_id)
    )
}

/// An envelope from a binary to the phone `conn_id` carrying `frame` (a JSON text).
pub fn envelope(prefix: &str, frame: &str) -> String {
    let mut text = String::with_capacity(prefix.len() + frame.len() + 1);
    text.push_str(prefix);
    text.push_str(frame);
    text.push('}');
    text
}

/// A probe as read back: which step sent it, when, and whether it asks for an echo.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Probe {
    /// The step (`0` for setup and echo frames).
    pub s: u32,
    /// The send time, microseconds since the sending process's clock base.
    pub t: u64,
    /// 1 if the binary should send it back.
    #[serde(default)]
    pub e: u8,
}

impl Probe {
    /// Reads a probe from a frame's text; `None` for anything else.
    pub fn parse(text: &str) -> Option<Probe> {
        serde_json::from_str(text).ok()
    }
}

/// What a binary receives: a phone's frame wrapped, or a phone-left notice (no `frame`).
#[derive(Debug, Deserialize)]
pub struct Wrapped<'a> {
    /// The phone's conn-id.
    #[serde(borrow)]
    pub conn_id: Cow<'a, str>,
    /// The phone's frame, verbatim.
    #[serde(borrow, default)]
    pub frame: Option<&'a RawValue>,
}

impl<'a> Wrapped<'a> {
    /// Reads an envelope; `None` for anything else.
    pub fn parse(text: &'a str) -> Option<Wrapped<'a>> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_is_exactly_the_frame_size_and_reads_back() {
        // 64 bytes is the smallest --frame-size: the fields with a long time stamp fit.
        for size in [64, 100, 1024, 4096] {
            let text = probe(7, 123_456_789_012, true, size);
            assert_eq!(text.len(), size, "{text}");
            assert_eq!(
                Probe::parse(&text),
                Some(Probe {
                    s: 7,
                    t: 123_456_789_012,
                    e: 1
                })
            );
        }
    }

    #[test]
    fn a_probe_smaller_than_its_fields_is_not_truncated() {
        let text = probe(1, 2, false, 0);
        assert_eq!(Probe::parse(&text).map(|p| p.t), Some(2));
    }

    #[test]
    fn an_envelope_carries_the_frame_to_the_named_phone() {
        let prefix = envelope_prefix("client-a\"b-0001");
        let text = envelope(&prefix, &probe(3, 9, false, 80));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["conn_id"], "client-a\"b-0001");
        assert_eq!(value["frame"]["t"], 9);
    }

    #[test]
    fn wrapped_frames_and_leave_notices_are_told_apart() {
        let frame = r#"{"conn_id":"client-x-1","frame":"hello"}"#;
        let wrapped = Wrapped::parse(frame).unwrap();
        assert_eq!(wrapped.conn_id, "client-x-1");
        assert_eq!(wrapped.frame.map(RawValue::get), Some(HELLO));
        let left = Wrapped::parse(r#"{"conn_id":"client-x-1","close_code":1001}"#).unwrap();
        assert!(left.frame.is_none());
        assert!(Wrapped::parse("[1,2]").is_none());
    }
}
