//! What a phone's frame must be: exactly one valid JSON value, nested at most `max_depth` levels.
//!
//! Validity is serde_json's (its `IgnoredAny` path walks the value with an explicit stack, no
//! recursion and no allocation per value). Depth is counted by [`depth_exceeds`], one pass over
//! the bytes with a counter: a 100,000-deep value costs no stack in the relay, and the binary
//! behind it never sees one. Most frames never need that pass: a frame with no more opening
//! brackets than the limit cannot nest deeper, and counting them is a vectorised byte search
//! (`memchr`; the byte-by-byte pass was 9% of the relay's profile at 40k frames/s each way).

/// Why a phone's frame was refused (both close it 1007).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Not exactly one valid JSON value.
    NotJson,
    /// Valid JSON nested deeper than allowed.
    TooDeep,
}

/// Checks one phone frame.
///
/// # Errors
///
/// [`FrameError::NotJson`] or [`FrameError::TooDeep`].
pub(crate) fn check(text: &str, max_depth: usize) -> Result<(), FrameError> {
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        return Err(FrameError::NotJson);
    }
    if few_brackets(text.as_bytes(), max_depth) {
        return Ok(());
    }
    if depth_exceeds(text.as_bytes(), max_depth) {
        return Err(FrameError::TooDeep);
    }
    Ok(())
}

/// Whether `bytes` hold at most `max` opening brackets (`[` or `{`, in strings or not): then no
/// value in them nests more than `max` levels deep.
fn few_brackets(bytes: &[u8], max: usize) -> bool {
    memchr::memchr2_iter(b'[', b'{', bytes).nth(max).is_none()
}

/// Whether valid JSON `bytes` nest arrays and objects more than `max` levels deep. Brackets
/// inside strings (escapes included) do not count.
pub(crate) fn depth_exceeds(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_128_passes_and_129_is_too_deep() {
        assert_eq!(check(&nested(128), 128), Ok(()));
        assert_eq!(check(&nested(129), 128), Err(FrameError::TooDeep));
        let objects = format!("{}1{}", "{\"a\":".repeat(129), "}".repeat(129));
        assert_eq!(check(&objects, 128), Err(FrameError::TooDeep));
    }

    #[test]
    fn a_hundred_thousand_levels_are_refused_without_recursion() {
        assert_eq!(check(&nested(100_000), 128), Err(FrameError::TooDeep));
    }

    #[test]
    fn brackets_in_strings_do_not_count_and_escapes_are_followed() {
        let text = format!("[\"{}\\\"[[[\", {{\"k\":\"]]]\"}}]", "[".repeat(500));
        assert_eq!(check(&text, 2), Ok(()));
    }

    #[test]
    fn many_shallow_brackets_take_the_precise_pass_and_pass() {
        // More opening brackets than the limit, none nested deeper than 2.
        let wide = format!("[{}[]]", "[],".repeat(300));
        assert_eq!(check(&wide, 2), Ok(()));
        assert_eq!(check(&wide, 1), Err(FrameError::TooDeep));
        // Exactly the limit's worth of brackets, all nested: still within it.
        assert_eq!(check(&nested(3), 3), Ok(()));
        assert_eq!(check(&nested(4), 3), Err(FrameError::TooDeep));
    }

    #[test]
    fn invalid_json_is_not_json() {
        for text in ["{not json", "", "1 2", "[1,]", "\"unterminated"] {
            assert_eq!(check(text, 128), Err(FrameError::NotJson), "{text}");
        }
    }
}
