//! `Part`: the connections one process holds (all of them, or a worker's share) and the commands
//! that drive them. Each connection is one task; the part tells them what to do through a
//! `watch` channel of [`Order`]s and they count into the shared [`Tally`].

mod connection;
mod tally;

use tally::{Dir, Order, Tally};

use super::client::{self, Outcome, Side};
use super::hist::Hist;
use super::plan::{Command, EchoReport, Reply, SetupReport, StepReport, Target};

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};

/// How long an open command waits for refusals (close frames right after the 101) to arrive.
const SETTLE: Duration = Duration::from_secs(5);
/// In setup without hellos: the open command ends once no close arrived for this long.
const QUIET: Duration = Duration::from_millis(300);

/// The connections of one process and the way to drive them.
pub struct Part {
    target: Target,
    /// The index the next connection gets (for its source address).
    next_conn: u64,
    tally: Arc<Tally>,
    orders: watch::Sender<Order>,
    tasks: JoinSet<()>,
    echo_round: u32,
}

impl Part {
    /// A part with no connections yet.
    pub fn new(target: Target, first_conn: u64) -> Part {
        let tally = Tally {
            base: Instant::now(),
            opening: AtomicBool::new(false),
            attempts: AtomicU64::new(0),
            live: AtomicU64::new(0),
            phones_live: AtomicU64::new(0),
            hellos: AtomicU64::new(0),
            refused: Mutex::new(BTreeMap::new()),
            closed: Mutex::new(BTreeMap::new()),
            last_close: Mutex::new(None),
            step: AtomicU32::new(0),
            active: AtomicU64::new(0),
            up: Dir::new(),
            down: Dir::new(),
            echo_tried: AtomicU64::new(0),
            echo_sent: AtomicU64::new(0),
            echo_received: AtomicU64::new(0),
            echo_latency: Mutex::new(Hist::default()),
        };
        Part {
            target,
            next_conn: first_conn,
            tally: Arc::new(tally),
            orders: watch::channel(Order::Hold).0,
            tasks: JoinSet::new(),
            echo_round: 0,
        }
    }

    /// A reader of the connection attempts finished so far (over the part's life) that does
    /// not borrow the part.
    pub fn progress_counter(&self) -> impl Fn() -> u64 + Send + Sync + 'static + use<> {
        let tally = self.tally.clone();
        move || tally.attempts.load(Relaxed)
    }

    /// Carries out one command (not `Init`, which makes the part).
    pub async fn execute(&mut self, command: Command) -> Reply {
        match command {
            Command::Init { .. } => Reply::Error("the part is already set up".to_owned()),
            Command::OpenBinaries { ids } => {
                let plan = ids
                    .into_iter()
                    .map(|id| (Side::Binary, id, false))
                    .collect();
                Reply::Setup(self.open(plan, false).await)
            }
            Command::OpenPhones { phones, hello } => {
                let plan = phones
                    .into_iter()
                    .flat_map(|(id, n)| (0..n).map(move |_| (Side::Phone, id.clone(), hello)))
                    .collect();
                Reply::Setup(self.open(plan, hello).await)
            }
            Command::Run {
                step,
                per_phone_hz,
                duration_ms,
                drain_ms,
            } => {
                let duration = Duration::from_millis(duration_ms);
                let drain = Duration::from_millis(drain_ms);
                Reply::Step(self.run(step, per_phone_hz, duration, drain).await)
            }
            Command::Echo {
                spread_ms,
                timeout_ms,
            } => {
                let spread = Duration::from_millis(spread_ms);
                let timeout = Duration::from_millis(timeout_ms);
                Reply::Echo(self.echo(spread, timeout).await)
            }
            Command::CloseAll => {
                self.close_all().await;
                Reply::Closed
            }
        }
    }

    /// Opens every connection of `plan` (side, server-id, says hello), at most
    /// `target.concurrency` attempts at once, and waits for refusals to arrive.
    async fn open(&mut self, plan: Vec<(Side, String, bool)>, hellos: bool) -> SetupReport {
        let tally = &self.tally;
        tally.opening.store(true, Relaxed);
        tally.hellos.store(0, Relaxed);
        tally.refused.lock().clear();
        let attempted = plan.len() as u64;
        let started = Instant::now();
        let gate = Arc::new(Semaphore::new(self.target.concurrency.max(1)));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel();
        for (side, id, hello) in plan {
            let index = self.next_conn;
            self.next_conn += 1;
            let (target, tally, gate, done) = (
                self.target.clone(),
                self.tally.clone(),
                gate.clone(),
                done_tx.clone(),
            );
            let orders = self.orders.subscribe();
            self.tasks.spawn(async move {
                let permit = gate.acquire_owned().await;
                let outcome = client::open(&target, side, &id, index).await;
                drop(permit);
                tally.attempts.fetch_add(1, Relaxed);
                let ws = match outcome {
                    Outcome::Open(ws) => {
                        tally.live.fetch_add(1, Relaxed);
                        if side == Side::Phone {
                            tally.phones_live.fetch_add(1, Relaxed);
                        }
                        let _ = done.send(Ok(()));
                        ws
                    }
                    Outcome::Refused(key) => {
                        let _ = done.send(Err((true, key)));
                        return;
                    }
                    Outcome::Failed(key) => {
                        let _ = done.send(Err((false, key)));
                        return;
                    }
                };
                drop(done);
                let conn = connection::Connection {
                    ws: *ws,
                    tally: tally.clone(),
                    shard: index as usize,
                    frame_size: target.frame_size,
                };
                match side {
                    Side::Binary => conn.binary(orders).await,
                    Side::Phone => conn.phone(orders, hello).await,
                }
                tally.live.fetch_sub(1, Relaxed);
                if side == Side::Phone {
                    tally.phones_live.fetch_sub(1, Relaxed);
                }
            });
        }
        drop(done_tx);
        let mut report = SetupReport {
            attempted,
            ..SetupReport::default()
        };
        while let Some(result) = done_rx.recv().await {
            match result {
                Ok(()) => report.opened += 1,
                Err((true, key)) => *report.refused.entry(key).or_default() += 1,
                Err((false, key)) => *report.failed.entry(key).or_default() += 1,
            }
        }
        report.open_ms = started.elapsed().as_millis() as u64;
        self.settle(report.opened, hellos).await;
        tally.opening.store(false, Relaxed);
        for (key, n) in std::mem::take(&mut *tally.refused.lock()) {
            *report.refused.entry(key).or_default() += n;
        }
        report
    }

    /// Waits (bounded) until the refusals of the connections just opened have arrived: with
    /// hellos, until every opened phone has said hello or been closed; without, until no close
    /// arrived for a short while.
    async fn settle(&self, opened: u64, hellos: bool) {
        let deadline = Instant::now() + SETTLE;
        let quiet_since = Instant::now();
        while Instant::now() < deadline {
            let tally = &self.tally;
            if hellos {
                let closed: u64 = tally.refused.lock().values().sum();
                if tally.hellos.load(Relaxed) + closed >= opened {
                    return;
                }
            } else {
                let last = tally
                    .last_close
                    .lock()
                    .unwrap_or(quiet_since)
                    .max(quiet_since);
                if last.elapsed() >= QUIET {
                    return;
                }
            }
            sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends probes for `duration`, then waits up to `drain` for those in flight.
    async fn run(
        &mut self,
        step: u32,
        per_phone_hz: f64,
        duration: Duration,
        drain: Duration,
    ) -> StepReport {
        let tally = &self.tally;
        // The step first: a probe of the last step arriving from now on counts as late, not
        // as received in this one.
        tally.step.store(step, Relaxed);
        let _ = (tally.up.take(), tally.down.take());
        let connections = tally.live.load(Relaxed);
        tally.active.store(connections, Relaxed);
        let period = Duration::from_secs_f64(1.0 / per_phone_hz.max(1e-3));
        let start = Instant::now() + Duration::from_millis(20);
        let until = start + duration;
        self.orders.send_replace(Order::Send {
            step,
            period,
            start,
            until,
        });
        sleep_until(until).await;
        let deadline = until + drain;
        while Instant::now() < deadline {
            let done = |d: &Dir| d.received.load(Relaxed) >= d.sent.load(Relaxed);
            if tally.active.load(Relaxed) == 0 && done(&tally.up) && done(&tally.down) {
                break;
            }
            sleep(Duration::from_millis(10)).await;
        }
        self.orders.send_replace(Order::Hold);
        StepReport {
            connections,
            up: tally.up.take(),
            down: tally.down.take(),
            closed: std::mem::take(&mut *tally.closed.lock()),
        }
    }

    /// Every phone sends one echo probe, spread over `spread` (a burst of thousands at once
    /// would measure the target's overload policy instead); waits up to `timeout` after the
    /// last for them all to come back.
    async fn echo(&mut self, spread: Duration, timeout: Duration) -> EchoReport {
        let tally = &self.tally;
        tally.echo_tried.store(0, Relaxed);
        tally.echo_sent.store(0, Relaxed);
        tally.echo_received.store(0, Relaxed);
        self.echo_round += 1;
        let start = Instant::now();
        self.orders.send_replace(Order::Echo {
            round: self.echo_round,
            start,
            spread,
        });
        let deadline = start + spread + timeout;
        while Instant::now() < deadline {
            let all_tried = tally.echo_tried.load(Relaxed) >= tally.phones_live.load(Relaxed);
            if all_tried && tally.echo_received.load(Relaxed) >= tally.echo_sent.load(Relaxed) {
                break;
            }
            sleep(Duration::from_millis(10)).await;
        }
        self.orders.send_replace(Order::Hold);
        EchoReport {
            sent: tally.echo_sent.load(Relaxed),
            received: tally.echo_received.load(Relaxed),
            latency: tally.echo_latency.lock().take(),
            closed: std::mem::take(&mut *tally.closed.lock()),
        }
    }

    /// Closes every connection (bounded: stragglers are dropped after a few seconds).
    async fn close_all(&mut self) {
        self.orders.send_replace(Order::Quit);
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), all_done)
            .await
            .is_err()
        {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        self.tally.closed.lock().clear();
        self.orders.send_replace(Order::Hold);
    }
}
