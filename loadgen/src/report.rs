//! What a run prints: the report of each mode as JSON (`--json`, for `relay/benches/report.sh`)
//! and as a human table, built from the parts' merged reports.

use super::hist::Hist;
use super::plan::{DirReport, SetupReport, StepReport, total};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Milliseconds with microsecond precision.
fn ms(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// How a group of connections was set up.
#[derive(Debug, Serialize)]
pub struct Setup {
    /// Attempts made.
    pub attempted: u64,
    /// Upgraded (including those then closed with a refusal code).
    pub opened: u64,
    /// Upgraded and not refused.
    pub accepted: u64,
    /// Refusals by status or close code (`"close 4429"`).
    pub refused: BTreeMap<String, u64>,
    /// Attempts without an answer, by error.
    pub failed: BTreeMap<String, u64>,
    /// Time from the first attempt to the end of the last (the slowest part's).
    pub seconds: f64,
    /// Accepted connections per second of wall time.
    pub per_second: f64,
}

impl Setup {
    /// From the merged report of the parts.
    pub fn new(report: &SetupReport) -> Setup {
        let accepted = report.accepted();
        let seconds = report.open_ms as f64 / 1e3;
        Setup {
            attempted: report.attempted,
            opened: report.opened,
            accepted,
            refused: report.refused.clone(),
            failed: report.failed.clone(),
            seconds,
            per_second: if seconds > 0.0 {
                accepted as f64 / seconds
            } else {
                0.0
            },
        }
    }

    fn line(&self, what: &str) -> String {
        let mut line = format!(
            "{what}: {} accepted of {} attempted in {:.2} s ({:.0}/s)",
            self.accepted, self.attempted, self.seconds, self.per_second
        );
        for (key, n) in &self.refused {
            let _ = write!(line, "; refused {key}: {n}");
        }
        for (key, n) in &self.failed {
            let _ = write!(line, "; failed ({key}): {n}");
        }
        line
    }
}

/// One direction of a step.
#[derive(Debug, Serialize)]
pub struct Direction {
    /// Probes sent.
    pub sent: u64,
    /// Probes received.
    pub received: u64,
    /// Sent and never received.
    pub lost: u64,
    /// Probes of an earlier step that arrived during this one.
    pub late: u64,
    /// Received per second of sending time.
    pub per_second: f64,
    /// Latency percentiles and maximum, in ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// See `p50_ms`.
    pub p999_ms: f64,
    /// See `p50_ms`.
    pub max_ms: f64,
}

impl Direction {
    fn new(report: &DirReport, seconds: f64) -> Direction {
        let latency = &report.latency;
        Direction {
            sent: report.sent,
            received: report.received,
            lost: report.lost(),
            late: report.late,
            per_second: report.received as f64 / seconds,
            p50_ms: ms(latency.quantile(0.5)),
            p99_ms: ms(latency.quantile(0.99)),
            p999_ms: ms(latency.quantile(0.999)),
            max_ms: ms(latency.max()),
        }
    }
}

/// One measured run at one offered rate.
#[derive(Debug, Serialize)]
pub struct Step {
    /// Offered frames per second, each way.
    pub offered_per_s: u64,
    /// Sending time.
    pub seconds: f64,
    /// Connections open at its start.
    pub connections: u64,
    /// Phone → binary.
    pub up: Direction,
    /// Binary → phone.
    pub down: Direction,
    /// Connections the target closed meanwhile, by close code.
    pub closed: BTreeMap<String, u64>,
    /// Search mode: whether the step passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<bool>,
    /// Search mode: why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

impl Step {
    /// From the merged report of a run at `offered` frames/s each way for `duration`.
    pub fn new(report: &StepReport, offered: u64, duration: Duration) -> Step {
        let seconds = duration.as_secs_f64();
        Step {
            offered_per_s: offered,
            seconds,
            connections: report.connections,
            up: Direction::new(&report.up, seconds),
            down: Direction::new(&report.down, seconds),
            closed: report.closed.clone(),
            pass: None,
            why: None,
        }
    }

    /// Frames lost in both directions.
    pub fn lost(&self) -> u64 {
        self.up.lost + self.down.lost
    }

    /// Records [`judge`](Step::judge)'s verdict in the step; returns whether it passed.
    pub fn judged(&mut self, max_p99: Duration) -> bool {
        let verdict = self.judge(max_p99);
        self.pass = Some(verdict.is_ok());
        self.why = verdict.err();
        self.pass == Some(true)
    }

    /// Whether the step is sustainable: nothing lost, no connection closed, p99 within
    /// `max_p99` both ways, and the load generator itself offered at least 95% of the rate.
    pub fn judge(&self, max_p99: Duration) -> Result<(), String> {
        let expected = self.offered_per_s as f64 * self.seconds;
        let limit = ms(max_p99);
        if self.lost() > 0 {
            return Err(format!("{} lost", self.lost()));
        }
        if total(&self.closed) > 0 {
            return Err(format!("connections closed: {:?}", self.closed));
        }
        for (name, d) in [("up", &self.up), ("down", &self.down)] {
            if d.p99_ms > limit {
                return Err(format!("{name} p99 {:.1} ms > {limit} ms", d.p99_ms));
            }
            if (d.sent as f64) < 0.95 * expected {
                return Err(format!(
                    "{name}: the load generator sent only {} of {expected:.0}",
                    d.sent
                ));
            }
        }
        Ok(())
    }

    fn table(steps: &[&Step]) -> String {
        let mut out = String::new();
        out.push_str("| offered/s each way | direction | sent | received | lost | late | received/s | p50 ms | p99 ms | p99.9 ms | max ms | closed | verdict |\n");
        out.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n");
        for step in steps {
            let closed = if step.closed.is_empty() {
                "-".to_owned()
            } else {
                format!("{:?}", step.closed)
            };
            let verdict = match (step.pass, &step.why) {
                (None, _) => "".to_owned(),
                (Some(true), _) => "pass".to_owned(),
                (Some(false), why) => format!("fail: {}", why.as_deref().unwrap_or("")),
            };
            for (name, d) in [("phone → binary", &step.up), ("binary → phone", &step.down)] {
                let _ = writeln!(
                    out,
                    "| {} | {name} | {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {closed} | {verdict} |",
                    step.offered_per_s,
                    d.sent,
                    d.received,
                    d.lost,
                    d.late,
                    d.per_second,
                    d.p50_ms,
                    d.p99_ms,
                    d.p999_ms,
                    d.max_ms
                );
            }
        }
        out
    }
}

/// The load's shape, common to every mode.
#[derive(Debug, Serialize)]
pub struct Shape {
    /// The target's URL.
    pub target: String,
    /// Server-ids (binaries).
    pub binaries: u64,
    /// Phones per binary (sustained, search) or in total (idle).
    pub phones: u64,
    /// Bytes per probe frame.
    pub frame_size: u64,
    /// Processes holding the connections.
    pub procs: u64,
}

/// The sustained mode's result.
#[derive(Debug, Serialize)]
pub struct Sustained {
    /// The load's shape.
    #[serde(flatten)]
    pub shape: Shape,
    /// How the binaries and the phones were set up.
    pub binaries_setup: Setup,
    /// See `binaries_setup`.
    pub phones_setup: Setup,
    /// The run.
    pub step: Step,
}

/// After every phone sent one frame and got it back.
#[derive(Debug, Serialize)]
pub struct AfterFrame {
    /// Phones that sent their frame.
    pub sent: u64,
    /// Phones that got it back.
    pub received: u64,
    /// Round trip (phone → binary → phone) percentiles, ms.
    pub rtt_p50_ms: f64,
    /// See `rtt_p50_ms`.
    pub rtt_p99_ms: f64,
    /// The target's RSS afterwards, KiB.
    pub rss_kib: Option<u64>,
    /// (rss_kib − rss_before_kib) / accepted connections.
    pub per_conn_kib: Option<f64>,
    /// Connections closed by the target while idle or during the echo, by close code.
    pub closed: BTreeMap<String, u64>,
}

impl AfterFrame {
    /// From the merged echo report.
    pub fn new(sent: u64, received: u64, latency: &Hist, closed: BTreeMap<String, u64>) -> Self {
        AfterFrame {
            sent,
            received,
            rtt_p50_ms: ms(latency.quantile(0.5)),
            rtt_p99_ms: ms(latency.quantile(0.99)),
            rss_kib: None,
            per_conn_kib: None,
            closed,
        }
    }
}

/// The idle mode's result.
#[derive(Debug, Serialize)]
pub struct Idle {
    /// The load's shape (`phones` is the total of idle phones, 0 for binaries alone).
    #[serde(flatten)]
    pub shape: Shape,
    /// `"phones"` or `"binaries"`.
    pub connections_are: String,
    /// Connections asked for.
    pub requested: u64,
    /// How the idle connections were set up (the binaries the phones join are not counted).
    pub setup: Setup,
    /// The target's process, when known.
    pub target_pid: Option<u32>,
    /// The target's RSS before the idle connections were opened, KiB.
    pub rss_before_kib: Option<u64>,
    /// The target's RSS after holding them, KiB.
    pub rss_after_kib: Option<u64>,
    /// (rss_after − rss_before) / accepted, KiB.
    pub per_conn_kib: Option<f64>,
    /// With --idle-frame: after one frame each.
    pub after_frame: Option<AfterFrame>,
}

/// The search mode's result.
#[derive(Debug, Serialize)]
pub struct Search {
    /// The load's shape.
    #[serde(flatten)]
    pub shape: Shape,
    /// The p99 each step had to stay within, ms.
    pub max_p99_ms: f64,
    /// Every step, in order.
    pub steps: Vec<Step>,
    /// The highest offered rate that passed (frames/s each way).
    pub sustainable_per_s: Option<u64>,
    /// A run at half that rate (latency at half load).
    pub half: Option<Step>,
}

/// The interleaved search's result (`--search` with `--versus`): one search per target, the
/// first being `--url`.
#[derive(Debug, Serialize)]
pub struct Compare {
    /// Each target's search, `--url` first, then the `--versus` targets in order.
    pub searches: Vec<Search>,
    /// Half the first target's sustainable rate (frames/s each way), if it had one.
    pub first_half_per_s: Option<u64>,
    /// Each target at `first_half_per_s` (empty without such a rate).
    pub at_first_half: Vec<AtRate>,
}

/// One target's steps at one rate, taken in turn with the other targets' (`--latency-rounds`).
#[derive(Debug, Serialize)]
pub struct AtRate {
    /// The worse direction's p99 of each step, ms, in order.
    pub p99_ms: Vec<f64>,
    /// The step with the median of those (the lower middle one of an even count).
    pub median: Option<Step>,
}

impl AtRate {
    /// From the steps of one target.
    pub fn new(mut steps: Vec<Step>) -> AtRate {
        let worse = |s: &Step| s.up.p99_ms.max(s.down.p99_ms);
        let p99_ms = steps.iter().map(worse).collect();
        steps.sort_by(|a, b| worse(a).total_cmp(&worse(b)));
        let middle = steps.len().saturating_sub(1) / 2;
        AtRate {
            p99_ms,
            median: steps.into_iter().nth(middle),
        }
    }
}

/// What any mode reports.
#[derive(Debug, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Report {
    /// `relay-loadgen` without a mode flag.
    Sustained(Sustained),
    /// `--idle N`.
    Idle(Idle),
    /// `--search`.
    Search(Search),
    /// `--search --versus URL…`.
    Compare(Compare),
}

fn kib(value: Option<u64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v} KiB"))
}

fn per_conn(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.1} KiB"))
}

impl Report {
    /// The human table.
    pub fn human(&self) -> String {
        let mut out = String::new();
        match self {
            Report::Sustained(r) => {
                let s = &r.shape;
                let _ = writeln!(
                    out,
                    "sustained: {} binaries × {} phones against {}, {} B frames, {} frames/s each way offered for {:.1} s, {} process(es)",
                    s.binaries,
                    s.phones,
                    s.target,
                    s.frame_size,
                    r.step.offered_per_s,
                    r.step.seconds,
                    s.procs
                );
                let _ = writeln!(out, "{}", r.binaries_setup.line("binaries"));
                let _ = writeln!(out, "{}", r.phones_setup.line("phones"));
                out.push('\n');
                out.push_str(&Step::table(&[&r.step]));
            }
            Report::Idle(r) => {
                let s = &r.shape;
                let _ = writeln!(
                    out,
                    "idle: {} {} against {} ({} binaries), {} process(es), target pid {}",
                    r.requested,
                    r.connections_are,
                    s.target,
                    s.binaries,
                    s.procs,
                    r.target_pid.map_or("unknown".to_owned(), |p| p.to_string())
                );
                let _ = writeln!(out, "{}", r.setup.line("setup"));
                out.push_str("\n| row | value |\n|---|---|\n");
                let _ = writeln!(out, "| RSS before | {} |", kib(r.rss_before_kib));
                let _ = writeln!(out, "| RSS after holding | {} |", kib(r.rss_after_kib));
                let _ = writeln!(
                    out,
                    "| RSS per idle connection | {} |",
                    per_conn(r.per_conn_kib)
                );
                let _ = writeln!(out, "| setup rate | {:.0}/s |", r.setup.per_second);
                if let Some(f) = &r.after_frame {
                    let _ = writeln!(out, "| frames echoed | {} of {} |", f.received, f.sent);
                    let _ = writeln!(
                        out,
                        "| echo round trip | p50 {:.2} ms, p99 {:.2} ms |",
                        f.rtt_p50_ms, f.rtt_p99_ms
                    );
                    let _ = writeln!(out, "| RSS after one frame each | {} |", kib(f.rss_kib));
                    let _ = writeln!(
                        out,
                        "| RSS per connection after one frame | {} |",
                        per_conn(f.per_conn_kib)
                    );
                    if !f.closed.is_empty() {
                        let _ = writeln!(out, "| closed by the target | {:?} |", f.closed);
                    }
                }
            }
            Report::Search(r) => Self::search_human(r, &mut out),
            Report::Compare(c) => {
                let _ = writeln!(
                    out,
                    "interleaved search over {} targets (their steps in turn)\n",
                    c.searches.len()
                );
                for r in &c.searches {
                    Self::search_human(r, &mut out);
                    out.push('\n');
                }
                if let Some(rate) = c.first_half_per_s {
                    let _ = writeln!(
                        out,
                        "every target at {rate} frames/s each way (half the first target's sustainable rate):"
                    );
                    for (at, r) in c.at_first_half.iter().zip(&c.searches) {
                        let p99s: Vec<String> =
                            at.p99_ms.iter().map(|p| format!("{p:.1}")).collect();
                        let _ = writeln!(
                            out,
                            "{}: p99 of each round {} ms; the median round:",
                            r.shape.target,
                            p99s.join(", ")
                        );
                        if let Some(step) = &at.median {
                            out.push_str(&Step::table(&[step]));
                        }
                    }
                }
            }
        }
        out
    }

    fn search_human(r: &Search, out: &mut String) {
        let s = &r.shape;
        let _ = writeln!(
            out,
            "search: {} binaries × {} phones against {}, {} B frames, pass = 0 lost, nothing closed, p99 ≤ {} ms",
            s.binaries, s.phones, s.target, s.frame_size, r.max_p99_ms
        );
        out.push('\n');
        let steps: Vec<&Step> = r.steps.iter().collect();
        out.push_str(&Step::table(&steps));
        out.push('\n');
        match r.sustainable_per_s {
            Some(rate) => {
                let _ = writeln!(out, "sustainable rate: {rate} frames/s each way");
            }
            None => {
                let _ = writeln!(out, "sustainable rate: none of the steps passed");
            }
        }
        if let Some(half) = &r.half {
            let _ = writeln!(out, "\nat half that rate:");
            out.push_str(&Step::table(&[half]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(lost: u64, p99: Duration, sent: u64) -> Step {
        let mut report = StepReport::default();
        for d in [&mut report.up, &mut report.down] {
            d.sent = sent;
            d.received = sent - lost;
            d.latency.record(p99);
        }
        Step::new(&report, 100, Duration::from_secs(1))
    }

    #[test]
    fn a_step_passes_only_with_nothing_lost_closed_late_or_short() {
        let limit = Duration::from_millis(50);
        assert_eq!(step(0, Duration::from_millis(10), 100).judge(limit), Ok(()));
        assert!(
            step(1, Duration::from_millis(10), 100)
                .judge(limit)
                .unwrap_err()
                .contains("lost")
        );
        assert!(
            step(0, Duration::from_millis(80), 100)
                .judge(limit)
                .unwrap_err()
                .contains("p99")
        );
        assert!(
            step(0, Duration::from_millis(10), 50)
                .judge(limit)
                .unwrap_err()
                .contains("sent only")
        );
        let mut closed = step(0, Duration::from_millis(10), 100);
        closed.closed.insert("close 1011".into(), 1);
        assert!(closed.judge(limit).unwrap_err().contains("closed"));
    }

    #[test]
    fn the_median_round_is_kept_by_the_worse_direction() {
        let steps = [10, 40, 20]
            .map(|ms| step(0, Duration::from_millis(ms), 100))
            .into_iter()
            .collect();
        let at = AtRate::new(steps);
        assert_eq!(at.p99_ms.len(), 3);
        let median = at.median.unwrap();
        assert!(
            (median.up.p99_ms - 20.0).abs() < 0.1,
            "{}",
            median.up.p99_ms
        );
        assert!(AtRate::new(Vec::new()).median.is_none());
    }

    #[test]
    fn the_json_report_names_its_mode_and_counts_refusals_apart_from_losses() {
        let mut phones = SetupReport {
            attempted: 20,
            opened: 20,
            open_ms: 1000,
            ..SetupReport::default()
        };
        phones.refused.insert("close 4429".into(), 4);
        let report = Report::Sustained(Sustained {
            shape: Shape {
                target: "ws://127.0.0.1:1".into(),
                binaries: 1,
                phones: 20,
                frame_size: 1024,
                procs: 1,
            },
            binaries_setup: Setup::new(&SetupReport::default()),
            phones_setup: Setup::new(&phones),
            step: step(0, Duration::from_millis(1), 100),
        });
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["mode"], "sustained");
        assert_eq!(json["phones_setup"]["refused"]["close 4429"], 4);
        assert_eq!(json["phones_setup"]["accepted"], 16);
        assert_eq!(json["step"]["up"]["lost"], 0);
        assert!(report.human().contains("refused close 4429: 4"));
    }
}
