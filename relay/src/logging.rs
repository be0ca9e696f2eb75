//! How the relay logs: tracing to stderr as text or JSON lines, and the rules for what may appear.
//!
//! - Never a token, a frame's content, or a header other than the ones named here.
//! - A server-id appears at info level and above only as a [`ServerTag`]: 8 hex digits of a
//!   keyed hash (the key is random per process, so a tag correlates the lines of one run and
//!   reveals nothing of the id). A conn-id embeds its server-id, so at info and above it is a
//!   [`ConnTag`]: `client-<tag>-<random suffix>`; the suffix is the one the binary sees.
//! - Full ids appear only at debug level, and only as `?` (Debug) values: quoted and escaped, so
//!   an id like `x peer=6.6.6.6` cannot fake a field and control characters arrive escaped.
//! - Refused requests are logged at debug each, and at info at most a few per second with a count
//!   of the ones left out ([`RefusalLog`]), so the log shows an attack without becoming one.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

/// `--log-format`: how log lines are written to stderr.
///
/// # Examples
///
/// ```
/// use clap::ValueEnum;
/// use relay_server::LogFormat;
///
/// assert_eq!(LogFormat::from_str("json", false), Ok(LogFormat::Json));
/// assert_eq!(LogFormat::default(), LogFormat::Text);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (`key=value` fields; string values quoted and escaped).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the process's tracing subscriber: `format` lines on stderr, level from `RUST_LOG`
/// (default `info`; hyper and tungstenite never below info).
///
/// # Panics
///
/// If a global subscriber was already installed.
///
/// # Examples
///
/// ```no_run
/// relay_server::init_logging(relay_server::LogFormat::Json);
/// tracing::info!("one JSON object per line on stderr");
/// ```
pub fn init(format: LogFormat) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The HTTP and WebSocket layers log frames and requests at their debug and trace levels;
    // whatever RUST_LOG says, they never log below info, so no token or frame content can reach
    // the log through them.
    for quiet in [
        "hyper=info",
        "hyper_util=info",
        "tungstenite=info",
        "tokio_tungstenite=info",
    ] {
        filter = filter.add_directive(quiet.parse().expect("a valid directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Makes the short tags ids are logged as (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct LogIds {
    key: RandomState,
}

impl LogIds {
    /// A fresh random key.
    pub(crate) fn new() -> Self {
        LogIds::default()
    }

    /// The tag of `server_id`.
    pub(crate) fn server(&self, server_id: &str) -> ServerTag {
        ServerTag(self.key.hash_one(server_id) as u32)
    }

    /// The tag of the conn-id `conn_id` (`<side>-<server-id>-<suffix>`).
    pub(crate) fn conn<'a>(&self, conn_id: &'a str) -> ConnTag<'a> {
        let (side, rest) = conn_id.split_once('-').unwrap_or(("conn", conn_id));
        let (server_id, suffix) = rest.rsplit_once('-').unwrap_or((rest, ""));
        ConnTag {
            side,
            server: self.server(server_id),
            suffix,
        }
    }
}

/// A server-id as logged at info level and above: 8 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServerTag(u32);

impl fmt::Display for ServerTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A conn-id as logged at info level and above: `<side>-<server tag>-<suffix>`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnTag<'a> {
    side: &'a str,
    server: ServerTag,
    suffix: &'a str,
}

impl fmt::Display for ConnTag<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}",
            ascii_or_mark(self.side),
            self.server,
            ascii_or_mark(self.suffix)
        )
    }
}

/// `s` if it is plain ASCII letters and digits (a conn-id's side and suffix, which the relay makes),
/// else `?`.
fn ascii_or_mark(s: &str) -> &str {
    if s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        s
    } else {
        "?"
    }
}

/// Logs refused requests: each at debug, and at info a few per second with the count of the
/// ones the limit left out.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    limiter: DefaultDirectRateLimiter,
    suppressed: AtomicU64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self::new()
    }
}

impl RefusalLog {
    /// At most 5 info lines per second (in bursts of 10).
    pub(crate) fn new() -> Self {
        let quota = Quota::per_second(NonZeroU32::new(5).expect("non-zero"))
            .allow_burst(NonZeroU32::new(10).expect("non-zero"));
        RefusalLog {
            limiter: RateLimiter::direct(quota),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Logs one refusal: `status` (an HTTP status, or 0 for a dropped connection), `what`
    /// (a fixed description) and the client IP.
    pub(crate) fn refused(&self, status: u16, what: &'static str, ip: std::net::IpAddr) {
        tracing::debug!(status, %ip, what, "request refused");
        if self.limiter.check().is_ok() {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::info!(status, %ip, what, suppressed, "request refused");
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_tag_is_stable_within_a_process_and_hides_the_id() {
        let ids = LogIds::new();
        let tag = ids.server("desk-1").to_string();
        assert_eq!(tag, ids.server("desk-1").to_string());
        assert_eq!(tag.len(), 8);
        assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(tag, ids.server("desk-2").to_string());
    }

    #[test]
    fn a_conn_tag_keeps_the_side_and_suffix_and_replaces_the_server_id() {
        let ids = LogIds::new();
        let conn = "client-x peer=6.6.6.6 code=4409-0123abcd";
        let tag = ids.conn(conn).to_string();
        let server = ids.server("x peer=6.6.6.6 code=4409");
        assert_eq!(tag, format!("client-{server}-0123abcd"));
    }
}
