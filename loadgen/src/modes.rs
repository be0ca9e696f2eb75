//! The coordinator's side of each mode: which part opens what, the order of the commands, the
//! target's RSS between them, and the search's schedule of rates.

use super::plan::{Command, EchoReport, Reply, SetupReport, StepReport, Target};
use super::report::{
    AfterFrame, AtRate, Compare, Idle, Report, Search, Setup, Shape, Step, Sustained,
};
use super::target;
use super::workers::Parts;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

/// Everything a mode needs.
pub struct Run {
    /// Where the parts connect.
    pub target: Target,
    /// The parts holding the connections.
    pub parts: Parts,
    /// The target's process (for RSS), when known.
    pub pid: Option<u32>,
    /// A prefix making this run's server-ids unique.
    pub run_id: String,
    /// Shape of the load.
    pub binaries: u64,
    /// Phones per binary (sustained, search).
    pub phones: u64,
    /// Processes holding connections.
    pub procs: u64,
    /// How long to wait for frames in flight after sending.
    pub drain: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
}

/// Why a mode could not produce a report.
#[derive(Debug)]
pub enum Failure {
    /// Not a single connection could be made (the message says what happened instead).
    CannotConnect(String),
    /// A part failed.
    Part(String),
}

impl From<String> for Failure {
    fn from(error: String) -> Failure {
        Failure::Part(error)
    }
}

/// Runs `work` while a progress bar on stderr (hidden when stderr is not a terminal) counts the
/// parts' connection attempts up to `len`.
async fn with_progress<T>(
    parts_progress: impl Fn() -> u64,
    len: u64,
    what: &str,
    work: impl Future<Output = T>,
) -> T {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}] {wide_bar} {pos}/{len}")
            .expect("valid template"),
    );
    bar.set_message(what.to_owned());
    let start = parts_progress();
    tokio::pin!(work);
    let result = loop {
        tokio::select! {
            result = &mut work => break result,
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                bar.set_position(parts_progress().saturating_sub(start));
            }
        }
    };
    bar.finish_and_clear();
    result
}

/// A spinner with elapsed time for `work` (a run or a hold).
async fn with_timer<T>(what: &str, work: impl Future<Output = T>) -> T {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
            .expect("valid template"),
    );
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    let result = work.await;
    bar.finish_and_clear();
    result
}

impl Run {
    fn id(&self, round: u32, b: u64) -> String {
        format!("load-{}-{round}-{b}", self.run_id)
    }

    /// The worst case of opening `n` connections in one part, plus slack.
    fn open_limit(&self, n: u64) -> Duration {
        let waves = n.div_ceil(self.target.concurrency as u64).max(1);
        self.connect_timeout * u32::try_from(waves).unwrap_or(u32::MAX) + Duration::from_secs(30)
    }

    fn rss(&self) -> Option<u64> {
        self.pid.and_then(|pid| target::rss_kib(pid).ok())
    }

    /// Sends `command(k)` to every part and merges the setup reports.
    async fn open(
        &mut self,
        what: &str,
        count: u64,
        command: impl Fn(usize) -> Option<Command>,
    ) -> Result<SetupReport, Failure> {
        let limit = self.open_limit(count);
        let progress = self.parts_progress();
        let replies = with_progress(progress, count, what, self.parts.each(command, limit)).await?;
        let mut merged = SetupReport::default();
        for reply in replies {
            match reply {
                Reply::Setup(report) => merged.merge(&report),
                other => return Err(Failure::Part(format!("unexpected reply {other:?}"))),
            }
        }
        Ok(merged)
    }

    fn parts_progress(&self) -> impl Fn() -> u64 + use<> {
        self.parts.progress_reader()
    }

    /// Fails with [`Failure::CannotConnect`] when none of `report`'s attempts was accepted.
    fn require_some(&self, report: &SetupReport, what: &str) -> Result<(), Failure> {
        if report.attempted > 0 && report.accepted() == 0 {
            return Err(Failure::CannotConnect(format!(
                "cannot connect to {}: none of {} {what} was accepted (refused: {:?}, failed: {:?})",
                self.target.url, report.attempted, report.refused, report.failed
            )));
        }
        Ok(())
    }

    /// Binaries `round`-0..B, binary b in part b % K, each with `phones` phones in its part.
    async fn open_groups(&mut self, round: u32) -> Result<(Setup, Setup), Failure> {
        let k = self.parts.len() as u64;
        let ids: Vec<Vec<String>> = (0..k)
            .map(|part| {
                (0..self.binaries)
                    .filter(|b| b % k == part)
                    .map(|b| self.id(round, b))
                    .collect()
            })
            .collect();
        let binaries = self
            .open("binaries", self.binaries, |part| {
                Some(Command::OpenBinaries {
                    ids: ids[part].clone(),
                })
            })
            .await?;
        self.require_some(&binaries, "binaries")?;
        let phones = self.phones;
        let phone_setup = self
            .open("phones", self.binaries * phones, |part| {
                Some(Command::OpenPhones {
                    phones: ids[part].iter().map(|id| (id.clone(), phones)).collect(),
                    hello: true,
                })
            })
            .await?;
        self.require_some(&phone_setup, "phones")?;
        Ok((Setup::new(&binaries), Setup::new(&phone_setup)))
    }

    /// One measured run at `rate` frames/s each way over `accepted` phones.
    async fn step(
        &mut self,
        step: u32,
        rate: u64,
        accepted: u64,
        duration: Duration,
    ) -> Result<Step, Failure> {
        let per_phone_hz = rate as f64 / accepted.max(1) as f64;
        let command = Command::Run {
            step,
            per_phone_hz,
            duration_ms: duration.as_millis() as u64,
            drain_ms: self.drain.as_millis() as u64,
        };
        let limit = duration + self.drain + Duration::from_secs(30);
        let what = format!("step {step}: {rate} frames/s each way");
        let replies = with_timer(&what, self.parts.each(|_| Some(command.clone()), limit)).await?;
        let mut merged = StepReport::default();
        for reply in replies {
            match reply {
                Reply::Step(report) => merged.merge(&report),
                other => return Err(Failure::Part(format!("unexpected reply {other:?}"))),
            }
        }
        Ok(Step::new(&merged, rate, duration))
    }

    fn shape(&self, phones: u64, frame_size: u64) -> Shape {
        Shape {
            target: self.target.url.clone(),
            binaries: self.binaries,
            phones,
            frame_size,
            procs: self.procs,
        }
    }

    /// The sustained mode: open, run once at `rate` for `duration`, close.
    pub async fn sustained(&mut self, rate: u64, duration: Duration) -> Result<Report, Failure> {
        let (binaries_setup, phones_setup) = self.open_groups(0).await?;
        let step = self.step(1, rate, phones_setup.accepted, duration).await?;
        Ok(Report::Sustained(Sustained {
            shape: self.shape(self.phones, self.target.frame_size as u64),
            binaries_setup,
            phones_setup,
            step,
        }))
    }

    /// The search: steps at rates from [`Schedule`], each rate decided by its [`Tries`] (on
    /// shared cores a neighbour's burst is not the target's limit), reopening fresh connections
    /// after a step in which the target closed some; then one run at half the best rate.
    pub async fn search(
        &mut self,
        start_rate: u64,
        steps: u32,
        tries: Tries,
        step_time: Duration,
        max_p99: Duration,
    ) -> Result<Report, Failure> {
        let mut searching = self.search_begin(start_rate, steps).await?;
        while self
            .search_step(&mut searching, tries, step_time, max_p99)
            .await?
        {}
        let half = self.search_half(&mut searching, step_time).await?;
        Ok(Report::Search(self.search_end(searching, max_p99, half)))
    }

    /// Opens the search's connections; the schedule starts at `start_rate` and tries at most
    /// `steps` rates.
    pub async fn search_begin(
        &mut self,
        start_rate: u64,
        steps: u32,
    ) -> Result<Searching, Failure> {
        let (_, phones) = self.open_groups(0).await?;
        Ok(Searching {
            round: 0,
            accepted: phones.accepted,
            schedule: Schedule::new(start_rate),
            done: Vec::new(),
            number: 1,
            rates_left: steps,
        })
    }

    /// Tries the schedule's next rate until `tries` decides it; false once the search is over
    /// (no rate left to try: nothing was run).
    pub async fn search_step(
        &mut self,
        searching: &mut Searching,
        tries: Tries,
        step_time: Duration,
        max_p99: Duration,
    ) -> Result<bool, Failure> {
        if searching.rates_left == 0 {
            return Ok(false);
        }
        let Some(rate) = searching.schedule.next_rate() else {
            return Ok(false);
        };
        searching.rates_left -= 1;
        let (mut passes, mut failures) = (0, 0);
        let passed = loop {
            let mut step = self
                .step(searching.number, rate, searching.accepted, step_time)
                .await?;
            searching.number += 1;
            let passed = step.judged(max_p99);
            if passed {
                passes += 1;
            } else {
                failures += 1;
            }
            let reopen =
                !step.closed.is_empty() || step.connections < searching.accepted + self.binaries;
            searching.done.push(step);
            if reopen {
                self.close_all().await?;
                searching.round += 1;
                searching.accepted = self.open_groups(searching.round).await?.1.accepted;
            }
            // Let queues left by a failed step empty before the next (a passed step left
            // none: every frame it sent arrived).
            if !passed {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if let Some(verdict) = tries.verdict(passes, failures) {
                break verdict;
            }
        };
        searching.schedule.record(rate, passed);
        Ok(true)
    }

    /// One step at half the best rate found (none without one).
    pub async fn search_half(
        &mut self,
        searching: &mut Searching,
        step_time: Duration,
    ) -> Result<Option<Step>, Failure> {
        match searching.schedule.best() {
            Some(best) => self
                .search_at(searching, (best / 2).max(1), step_time)
                .await
                .map(Some),
            None => Ok(None),
        }
    }

    /// One unjudged step at `rate` on the search's connections (the latency row compares
    /// targets at one rate).
    pub async fn search_at(
        &mut self,
        searching: &mut Searching,
        rate: u64,
        step_time: Duration,
    ) -> Result<Step, Failure> {
        let step = self
            .step(searching.number, rate, searching.accepted, step_time)
            .await?;
        searching.number += 1;
        Ok(step)
    }

    /// The search's report.
    pub fn search_end(
        &self,
        searching: Searching,
        max_p99: Duration,
        half: Option<Step>,
    ) -> Search {
        Search {
            shape: self.shape(self.phones, self.target.frame_size as u64),
            max_p99_ms: max_p99.as_secs_f64() * 1e3,
            steps: searching.done,
            sustainable_per_s: searching.schedule.best(),
            half,
        }
    }

    async fn close_all(&mut self) -> Result<(), Failure> {
        self.parts
            .each(|_| Some(Command::CloseAll), Duration::from_secs(15))
            .await?;
        Ok(())
    }

    /// The idle mode: open `n` connections (phones spread over the binaries, or binaries alone),
    /// hold them for `hold`, read RSS; with `frame`, one echo each and RSS again.
    pub async fn idle(
        &mut self,
        n: u64,
        as_binaries: bool,
        hold: Duration,
        frame: bool,
    ) -> Result<Report, Failure> {
        let k = self.parts.len() as u64;
        let (setup, rss_before) = if as_binaries {
            let rss_before = self.rss();
            let ids: Vec<Vec<String>> = (0..k)
                .map(|part| {
                    (0..n)
                        .filter(|b| b % k == part)
                        .map(|b| self.id(0, b))
                        .collect()
                })
                .collect();
            let setup = self
                .open("idle binaries", n, |part| {
                    Some(Command::OpenBinaries {
                        ids: ids[part].clone(),
                    })
                })
                .await?;
            (setup, rss_before)
        } else {
            let ids: Vec<String> = (0..self.binaries).map(|b| self.id(0, b)).collect();
            let binaries = self
                .open("binaries", self.binaries, |part| {
                    (part == 0).then(|| Command::OpenBinaries { ids: ids.clone() })
                })
                .await?;
            self.require_some(&binaries, "binaries")?;
            let rss_before = self.rss();
            // Phone j is in part j % K and joins binary j % B.
            let binaries = self.binaries;
            let plan = |part: u64| -> Vec<(String, u64)> {
                let mut counts = vec![0u64; binaries as usize];
                for j in (0..n).filter(|j| j % k == part) {
                    counts[(j % binaries) as usize] += 1;
                }
                counts
                    .into_iter()
                    .enumerate()
                    .filter(|(_, c)| *c > 0)
                    .map(|(b, c)| (ids[b].clone(), c))
                    .collect()
            };
            let setup = self
                .open("idle phones", n, |part| {
                    Some(Command::OpenPhones {
                        phones: plan(part as u64),
                        hello: false,
                    })
                })
                .await?;
            (setup, rss_before)
        };
        self.require_some(&setup, if as_binaries { "binaries" } else { "phones" })?;
        with_timer("holding", tokio::time::sleep(hold)).await;
        let rss_after = self.rss();
        let accepted = setup.accepted();
        let per_conn = |after: Option<u64>| match (rss_before, after) {
            (Some(before), Some(after)) if accepted > 0 => {
                Some((after as f64 - before as f64) / accepted as f64)
            }
            _ => None,
        };
        let after_frame = if frame {
            let limit = ECHO_WAIT;
            let spread = echo_spread(accepted);
            let replies = with_timer(
                "one frame each",
                self.parts.each(
                    |_| {
                        Some(Command::Echo {
                            spread_ms: spread.as_millis() as u64,
                            timeout_ms: limit.as_millis() as u64,
                        })
                    },
                    spread + limit + Duration::from_secs(30),
                ),
            )
            .await?;
            let mut merged = EchoReport::default();
            for reply in replies {
                match reply {
                    Reply::Echo(report) => merged.merge(&report),
                    other => return Err(Failure::Part(format!("unexpected reply {other:?}"))),
                }
            }
            with_timer("holding", tokio::time::sleep(hold)).await;
            let mut after =
                AfterFrame::new(merged.sent, merged.received, &merged.latency, merged.closed);
            after.rss_kib = self.rss();
            after.per_conn_kib = per_conn(after.rss_kib);
            Some(after)
        } else {
            None
        };
        Ok(Report::Idle(Idle {
            shape: self.shape(
                if as_binaries { 0 } else { n },
                self.target.frame_size as u64,
            ),
            connections_are: if as_binaries { "binaries" } else { "phones" }.to_owned(),
            requested: n,
            setup: Setup::new(&setup),
            target_pid: self.pid,
            rss_before_kib: rss_before,
            rss_after_kib: rss_after,
            per_conn_kib: per_conn(rss_after),
            after_frame,
        }))
    }
}

/// A search in progress (see [`Run::search_step`]).
pub struct Searching {
    /// Which set of connections is open (a new one after the target closed some).
    round: u32,
    /// Phones accepted in the current set.
    accepted: u64,
    schedule: Schedule,
    done: Vec<Step>,
    /// The next step's number (probes carry it).
    number: u32,
    /// Rates the search may still try.
    rates_left: u32,
}

/// Searches every target in `runs` at once, step by step in turn: each has its own schedule,
/// and in each round every unfinished target runs its next rate, in an order reversed every
/// other round, so that a change of the machine's load in the middle of the search falls on
/// all of them alike. Then each target at half its own best rate, and then every target at half
/// the **first** target's best rate, `latency_rounds` times in turn (the latency row compares
/// the relay with the bare forwarder at the relay's half rate; one step's p99 on shared cores
/// is noisy, the median of a few taken in turn is not as much).
///
/// Every target's connections stay open throughout; a target not being measured is idle.
pub async fn compare(
    runs: &mut [Run],
    start_rate: u64,
    steps: u32,
    tries: Tries,
    step_time: Duration,
    max_p99: Duration,
    latency_rounds: u32,
) -> Result<Compare, Failure> {
    let mut searches = Vec::with_capacity(runs.len());
    for run in runs.iter_mut() {
        searches.push(Some(run.search_begin(start_rate, steps).await?));
    }
    let mut going = vec![true; runs.len()];
    let mut round = 0usize;
    while going.iter().any(|g| *g) {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..runs.len()).collect()
        } else {
            (0..runs.len()).rev().collect()
        };
        for k in order {
            if !going[k] {
                continue;
            }
            let searching = searches[k].as_mut().expect("present until the end");
            going[k] = runs[k]
                .search_step(searching, tries, step_time, max_p99)
                .await?;
        }
        round += 1;
    }
    let first_half = searches[0]
        .as_ref()
        .and_then(|s| s.schedule.best())
        .map(|best| (best / 2).max(1));
    let mut halves = Vec::with_capacity(runs.len());
    for (k, run) in runs.iter_mut().enumerate() {
        let searching = searches[k].as_mut().expect("present until the end");
        halves.push(run.search_half(searching, step_time).await?);
    }
    // The latency row: every target at the first target's half rate, `latency_rounds` times in
    // turn (order reversed every other round); each target's median step by p99 is kept.
    let mut at_rate: Vec<Vec<Step>> = (0..runs.len()).map(|_| Vec::new()).collect();
    if let Some(rate) = first_half {
        for round in 0..latency_rounds {
            let order: Vec<usize> = if round % 2 == 0 {
                (0..runs.len()).collect()
            } else {
                (0..runs.len()).rev().collect()
            };
            for k in order {
                let searching = searches[k].as_mut().expect("present until the end");
                at_rate[k].push(runs[k].search_at(searching, rate, step_time).await?);
            }
        }
    }
    let at_first_half: Vec<AtRate> = at_rate.into_iter().map(AtRate::new).collect();
    let searches = runs
        .iter()
        .zip(searches)
        .zip(halves)
        .map(|((run, searching), half)| {
            run.search_end(searching.expect("present until the end"), max_p99, half)
        })
        .collect();
    Ok(Compare {
        searches,
        first_half_per_s: first_half,
        at_first_half,
    })
}

/// Echo probes are offered at most this many per second in all.
const ECHO_RATE: u64 = 5000;

/// How long the idle mode waits for echo replies after the last probe was sent: a reply not
/// back by then is counted as missing. The slowest target's p99 is under 100 ms at 19,000
/// phones, so 5 s loses nothing that would come; it bounds the row when a target drops probes
/// (the Go shape drops a few of 10,000, and the row used to wait 30 s for them).
const ECHO_WAIT: Duration = Duration::from_secs(5);

/// How long `phones` echo probes take at [`ECHO_RATE`] (at least 100 ms).
fn echo_spread(phones: u64) -> Duration {
    Duration::from_millis((phones * 1000 / ECHO_RATE).max(100))
}

/// How a search step's tries decide whether its rate passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tries {
    /// A failed rate is tried up to this many more times, and passes if any try does.
    Retries(u32),
    /// The rate is tried until most of this many (odd) tries agree: it stops as soon as more
    /// than half of them passed, or more than half failed. Unlike "any try", it does not favour
    /// a lucky try (near the limit one try's p99 moves by up to 10x on shared cores).
    Majority(u32),
}

impl Tries {
    /// The verdict after `passes` passing and `failures` failing tries; `None` while another
    /// try is needed.
    pub fn verdict(self, passes: u32, failures: u32) -> Option<bool> {
        match self {
            Tries::Retries(retries) => {
                if passes > 0 {
                    Some(true)
                } else {
                    (failures > retries).then_some(false)
                }
            }
            Tries::Majority(of) => {
                let most = of / 2 + 1;
                if passes >= most {
                    Some(true)
                } else {
                    (failures >= most).then_some(false)
                }
            }
        }
    }
}

/// The search's rates: double from the start rate while steps pass (halve while they fail),
/// then bisect between the best pass and the lowest failure until they are within 5%. Then the
/// lowest failure is tried once more: on shared cores a neighbour's burst can fail a rate the
/// target sustains, and without this a burst early in the search would cap it for good. If it
/// fails again, the search ends. If it passes now, it becomes the best pass and the search goes
/// on upwards — bisecting up to the next failure recorded above it (which gets the same second
/// try once the bracket is narrow), and doubling only when none is left. So the rate found is
/// never above a rate that failed twice, nor reached by skipping over failures never tried again.
/// (Until 2026-12-07 23:10 UTC a passed second try forgot every failure and doubled: a lucky try
/// could then settle above rates that had failed, and the doubling wasted a step or two.)
#[derive(Debug, Clone)]
pub struct Schedule {
    start: u64,
    best: Option<u64>,
    /// Every rate that failed and was not passed since, lowest first (the bracket's top).
    failures: BTreeSet<u64>,
    /// The lowest failure failed again when tried last (or there is nothing to confirm).
    confirmed: bool,
}

impl Schedule {
    /// A schedule starting at `start` frames/s.
    pub fn new(start: u64) -> Schedule {
        Schedule {
            start: start.max(1),
            best: None,
            failures: BTreeSet::new(),
            confirmed: false,
        }
    }

    /// The lowest rate that failed (and was not passed since).
    fn worst(&self) -> Option<u64> {
        self.failures.first().copied()
    }

    /// The next rate to try, `None` once the bracket is narrow enough and its top confirmed
    /// (or nothing is left).
    pub fn next_rate(&self) -> Option<u64> {
        match (self.best, self.worst()) {
            (None, None) => Some(self.start),
            (Some(best), None) => Some(best.saturating_mul(2)),
            (None, Some(worst)) => (worst >= 2).then_some(worst / 2),
            (Some(best), Some(worst)) if worst > best + best / 20 + 1 => {
                Some(best + (worst - best) / 2)
            }
            (Some(_), Some(worst)) => (!self.confirmed).then_some(worst),
        }
    }

    /// Records how a step at `rate` went.
    pub fn record(&mut self, rate: u64, passed: bool) {
        let narrow = matches!(
            (self.best, self.worst()),
            (Some(best), Some(worst)) if worst <= best + best / 20 + 1
        );
        if narrow && Some(rate) == self.worst() && !passed {
            self.confirmed = true;
            return;
        }
        if passed {
            // A pass overrules every failure at or below it (a confirmed one included: the
            // failure was the machine's, not the target's); the search goes on up to the next.
            let best = self.best.map_or(rate, |b| b.max(rate));
            self.best = Some(best);
            self.failures.retain(|&failed| failed > best);
        } else {
            self.failures.insert(rate);
        }
    }

    /// The highest rate that passed.
    pub fn best(&self) -> Option<u64> {
        self.best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a schedule against a target that sustains exactly `limit`.
    fn search(start: u64, limit: u64, steps: usize) -> (Vec<u64>, Option<u64>) {
        let mut schedule = Schedule::new(start);
        let mut tried = Vec::new();
        while tried.len() < steps {
            let Some(rate) = schedule.next_rate() else {
                break;
            };
            tried.push(rate);
            schedule.record(rate, rate <= limit);
        }
        (tried, schedule.best())
    }

    #[test]
    fn retries_pass_on_any_try_and_fail_once_every_retry_failed() {
        let tries = Tries::Retries(1);
        assert_eq!(tries.verdict(1, 0), Some(true));
        assert_eq!(tries.verdict(0, 1), None, "one more try");
        assert_eq!(tries.verdict(1, 1), Some(true));
        assert_eq!(tries.verdict(0, 2), Some(false));
        assert_eq!(Tries::Retries(0).verdict(0, 1), Some(false));
    }

    #[test]
    fn a_majority_stops_as_soon_as_more_than_half_agree() {
        let tries = Tries::Majority(3);
        assert_eq!(tries.verdict(1, 0), None);
        assert_eq!(tries.verdict(0, 1), None);
        assert_eq!(
            tries.verdict(2, 0),
            Some(true),
            "two of three: no third try"
        );
        assert_eq!(tries.verdict(0, 2), Some(false));
        assert_eq!(tries.verdict(1, 1), None, "the third try decides");
        assert_eq!(tries.verdict(2, 1), Some(true));
        assert_eq!(tries.verdict(1, 2), Some(false));
        assert_eq!(Tries::Majority(1).verdict(0, 1), Some(false));
        assert_eq!(Tries::Majority(1).verdict(1, 0), Some(true));
        assert_eq!(Tries::Majority(5).verdict(2, 2), None);
        assert_eq!(Tries::Majority(5).verdict(3, 2), Some(true));
    }

    #[test]
    fn the_search_doubles_then_bisects() {
        let (tried, best) = search(1000, 5000, 8);
        assert_eq!(&tried[..4], &[1000, 2000, 4000, 8000]);
        assert_eq!(tried[4], 6000);
        assert!(best.unwrap() <= 5000 && best.unwrap() >= 4000);
    }

    #[test]
    fn the_search_halves_when_the_start_fails() {
        let (tried, best) = search(8000, 1500, 3);
        assert_eq!(tried, vec![8000, 4000, 2000]);
        assert_eq!(best, None);
        let (_, best) = search(8000, 1500, 12);
        assert!(best.unwrap() >= 1000 && best.unwrap() <= 1500, "{best:?}");
    }

    #[test]
    fn the_search_stops_when_pass_and_failure_are_within_five_percent_and_the_failure_repeats() {
        let mut schedule = Schedule::new(1000);
        schedule.record(1000, true);
        schedule.record(1040, false);
        assert_eq!(
            schedule.next_rate(),
            Some(1040),
            "the failure is tried again"
        );
        schedule.record(1040, false);
        assert_eq!(schedule.next_rate(), None);
        assert_eq!(schedule.best(), Some(1000));
    }

    #[test]
    fn a_failure_that_passes_when_tried_again_bisects_up_to_the_next_failure() {
        // The report's bare forwarder on 2026-12-07 at 22:51 UTC: 40,000, 30,000 and 28,750
        // failed, then 28,750 passed when tried again (the search used to double to 57,500 and
        // settle on 43,125, above two failures).
        let mut schedule = Schedule::new(10_000);
        for (rate, passed, why) in [
            (10_000, true, "the start"),
            (20_000, true, "doubles"),
            (40_000, false, "doubles"),
            (30_000, false, "bisects"),
            (25_000, true, "bisects"),
            (27_500, true, "bisects"),
            (28_750, false, "bisects"),
            (28_750, true, "the lowest failure again"),
            (
                30_000,
                true,
                "the next failure gets its second try, instead of doubling past it",
            ),
            (35_000, true, "bisects below 40,000"),
            (37_500, true, "bisects"),
            (38_750, true, "bisects"),
            (40_000, false, "40,000 gets its second try"),
        ] {
            assert_eq!(schedule.next_rate(), Some(rate), "{why}");
            schedule.record(rate, passed);
        }
        assert_eq!(schedule.next_rate(), None);
        assert_eq!(schedule.best(), Some(38_750));
    }

    #[test]
    fn a_failure_that_passes_when_tried_again_no_longer_caps_the_search() {
        // The first step fails (a neighbour's burst), the target really sustains 50,000.
        let mut schedule = Schedule::new(10_000);
        let mut burst = true;
        let mut tried = Vec::new();
        while let Some(rate) = schedule.next_rate() {
            tried.push(rate);
            let passed = !std::mem::take(&mut burst) && rate <= 50_000;
            schedule.record(rate, passed);
            assert!(tried.len() < 40, "{tried:?}");
        }
        let best = schedule.best().unwrap();
        assert!((47_500..=50_000).contains(&best), "{best} after {tried:?}");
    }
}
