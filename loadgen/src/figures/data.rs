//! What `relay/benches/report.sh` hands to the figures: one JSON object, built by its table
//! script from the run's row files, so that the figures and the tables come from the same run.
//!
//! ```json
//! {"caption": "2026-12-07 07:00 UTC, load average 3.1 at the start, 4.2 at the end",
//!  "targets": [{"key": "relay", "label": "relay"}, {"key": "bare", "label": "bare forwarder"}],
//!  "latency": [{"transport": "tls", "target": "relay", "points": [[10000, 1.2, 3.4]]}],
//!  "sustainable": [{"transport": "plain", "target": "relay", "per_s": 65000}],
//!  "memory": [{"transport": "plain", "target": "relay", "idle_kib": 3.5, "after_frame_kib": 5.7}],
//!  "memory_targets": [{"transport": "tls", "idle_kib": 8, "after_frame_kib": 12}]}
//! ```
//!
//! `transport` is `plain` (`ws://`) or `tls` (`wss://`); a latency point is (offered frames/s
//! each way, p50 ms, p99 ms), the worse of the two directions; `null` is "not measured".

use serde::Deserialize;
use std::path::Path;

/// The whole data file.
#[derive(Debug, Deserialize)]
pub struct Data {
    /// When and under what load the run was made (each figure's subtitle).
    pub caption: String,
    /// The targets in the order they are drawn, with their labels.
    pub targets: Vec<TargetInfo>,
    /// Latency against offered rate, one series per target and transport.
    #[serde(default)]
    pub latency: Vec<LatencySeries>,
    /// Sustainable rates.
    #[serde(default)]
    pub sustainable: Vec<Rate>,
    /// RSS per connection.
    #[serde(default)]
    pub memory: Vec<Memory>,
    /// The memory rows' targets, per transport.
    #[serde(default)]
    pub memory_targets: Vec<MemoryTarget>,
}

/// A target's key (as in the other entries) and its label.
#[derive(Debug, Deserialize)]
pub struct TargetInfo {
    /// `relay`, `gorelay`, `bare`.
    pub key: String,
    /// What the legend says.
    pub label: String,
}

/// The transports, in the order they are drawn, with their labels.
pub const TRANSPORTS: [(&str, &str); 2] = [("plain", "ws:// (plain TCP)"), ("tls", "wss:// (TLS)")];

/// Latency at each offered rate of one target over one transport.
#[derive(Debug, Deserialize)]
pub struct LatencySeries {
    /// `plain` or `tls`.
    pub transport: String,
    /// A target's key.
    pub target: String,
    /// (offered frames/s each way, p50 ms, p99 ms).
    pub points: Vec<[f64; 3]>,
}

/// One sustainable rate.
#[derive(Debug, Deserialize)]
pub struct Rate {
    /// `plain` or `tls`.
    pub transport: String,
    /// A target's key.
    pub target: String,
    /// Frames/s each way; `None`: not measured or no step passed.
    pub per_s: Option<f64>,
}

/// RSS per connection of one target over one transport.
#[derive(Debug, Deserialize)]
pub struct Memory {
    /// `plain` or `tls`.
    pub transport: String,
    /// A target's key.
    pub target: String,
    /// Per idle phone, KiB.
    pub idle_kib: Option<f64>,
    /// Per phone after one frame each way, KiB.
    pub after_frame_kib: Option<f64>,
}

/// The memory rows' targets for one transport.
#[derive(Debug, Deserialize)]
pub struct MemoryTarget {
    /// `plain` or `tls`.
    pub transport: String,
    /// Per idle phone, KiB.
    pub idle_kib: Option<f64>,
    /// Per phone after one frame each way, KiB.
    pub after_frame_kib: Option<f64>,
}

impl Data {
    /// Reads and parses the data file.
    ///
    /// # Errors
    ///
    /// A line naming the file and saying why it cannot be read or parsed.
    pub fn read(path: &Path) -> Result<Data, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_with_nulls_as_not_measured() {
        let data: Data = serde_json::from_str(
            r#"{"caption": "c", "targets": [{"key": "relay", "label": "relay"}],
                "latency": [{"transport": "tls", "target": "relay", "points": [[10000, 1.2, 3.4]]}],
                "sustainable": [{"transport": "plain", "target": "relay", "per_s": null}],
                "memory": [{"transport": "plain", "target": "relay", "idle_kib": 3.5, "after_frame_kib": null}]}"#,
        )
        .unwrap();
        assert_eq!(data.latency[0].points, [[10000.0, 1.2, 3.4]]);
        assert_eq!(data.sustainable[0].per_s, None);
        assert_eq!(data.memory[0].after_frame_kib, None);
        assert!(data.memory_targets.is_empty());
    }
}
