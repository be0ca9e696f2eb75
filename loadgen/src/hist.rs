//! `Hist`: a latency histogram (hdrhistogram, microseconds) that travels between processes as
//! `(value, count)` pairs and merges.

use hdrhistogram::Histogram;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// Largest latency kept apart from the rest (two minutes); longer ones are recorded as this.
const HIGHEST_US: u64 = 120_000_000;

/// Latencies in microseconds, 3 significant digits, 1 µs to two minutes.
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist(Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("static bounds are valid"))
    }
}

impl Hist {
    /// Records one latency (clamped into the histogram's range).
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us.max(1));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Hist) {
        for value in other.0.iter_recorded() {
            self.0
                .saturating_record_n(value.value_iterated_to(), value.count_at_value());
        }
    }

    /// How many samples were recorded.
    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at `quantile` (0.0 to 1.0); zero when empty.
    pub fn quantile(&self, quantile: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.0.value_at_quantile(quantile))
    }

    /// The largest latency recorded; zero when empty.
    pub fn max(&self) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.0.max())
    }

    /// Empties the histogram and returns what it held.
    pub fn take(&mut self) -> Hist {
        let taken = self.clone();
        self.0.reset();
        taken
    }
}

impl Serialize for Hist {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(u64, u64)> = self
            .0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        pairs.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Hist {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(u64, u64)>::deserialize(deserializer)?;
        let mut hist = Hist::default();
        for (value, count) in pairs {
            hist.0.saturating_record_n(value, count);
        }
        Ok(hist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_come_from_the_recorded_samples() {
        let mut hist = Hist::default();
        for n in 1..=100 {
            hist.record(ms(n));
        }
        assert_eq!(hist.count(), 100);
        let p50 = hist.quantile(0.5).as_millis();
        let p99 = hist.quantile(0.99).as_millis();
        assert!((49..=51).contains(&p50), "p50 {p50} ms");
        assert!((98..=100).contains(&p99), "p99 {p99} ms");
        assert_eq!(hist.max().as_millis(), 100);
    }

    #[test]
    fn a_histogram_survives_json_and_merges_with_another() {
        let mut a = Hist::default();
        a.record(ms(1));
        a.record(ms(1));
        let mut b = Hist::default();
        b.record(ms(300));
        let b: Hist = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert_eq!(a.max().as_millis(), 300);
        assert_eq!(a.quantile(0.5).as_millis(), 1);
    }

    #[test]
    fn take_empties_and_returns_the_samples() {
        let mut hist = Hist::default();
        hist.record(ms(5));
        let taken = hist.take();
        assert_eq!(taken.count(), 1);
        assert_eq!(hist.count(), 0);
        assert_eq!(hist.quantile(0.99), Duration::ZERO);
    }
}
