//! One connection's task: sends and reads as its part's [`Order`]s say, and counts into the
//! shared [`Tally`].

use super::tally::{Order, Tally};
use crate::client::{self, Ws};
use crate::frames::{self, HELLO, Probe, Wrapped};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at, sleep_until};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// What one connection task holds.
pub(super) struct Connection {
    pub(super) ws: Ws,
    pub(super) tally: Arc<Tally>,
    pub(super) shard: usize,
    pub(super) frame_size: usize,
}

/// The probe schedule of a connection in a sending step.
struct Sending {
    step: u32,
    ticker: Interval,
    until: Instant,
}

impl Sending {
    /// Starts at `start` plus this connection's share of one period, so that connections do not
    /// all send at the same instant.
    fn new(step: u32, period: Duration, start: Instant, until: Instant, shard: usize) -> Sending {
        let mut ticker = interval_at(start + period.mul_f64(spread_of(shard)), period);
        // Keep the offered rate: ticks missed while busy are sent late, and their latency counts
        // from the scheduled time (no coordinated omission).
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        Sending {
            step,
            ticker,
            until,
        }
    }
}

/// Where in a window connection `shard` acts, as a fraction (golden-ratio steps spread any
/// number of connections evenly).
fn spread_of(shard: usize) -> f64 {
    (shard as f64 * 0.618_033_988_75).fract()
}

/// The next order once the orders change (`None` once the part is gone), and the receiver.
async fn next_order(mut orders: watch::Receiver<Order>) -> (Option<Order>, watch::Receiver<Order>) {
    let order = match orders.changed().await {
        Ok(()) => Some(*orders.borrow_and_update()),
        Err(_) => None,
    };
    (order, orders)
}

/// Resolves at `deadline` (never without one).
async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The next tick of the schedule, if any (never resolves without one).
async fn tick(sending: &mut Option<Sending>) -> Instant {
    match sending {
        Some(sending) => sending.ticker.tick().await,
        None => std::future::pending().await,
    }
}

/// How a connection's read side went.
enum Read {
    Text(Utf8Bytes),
    Other,
    Ended(u16),
}

impl Connection {
    fn read(message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) -> Read {
        match message {
            Some(Ok(Message::Text(text))) => Read::Text(text),
            Some(Ok(message @ Message::Close(_))) => {
                Read::Ended(client::close_code(Some(&message)))
            }
            Some(Ok(_)) => Read::Other,
            Some(Err(_)) | None => Read::Ended(client::close_code(None)),
        }
    }

    /// Ends a sending schedule; counts it as done if it belongs to the step being measured (a
    /// schedule of an earlier step is simply dropped).
    fn finish(&self, sending: Option<Sending>) {
        if let Some(sending) = sending {
            if sending.step == self.tally.step.load(Relaxed) {
                self.tally.active.fetch_sub(1, Relaxed);
            }
        }
    }

    /// The microseconds on the part's clock at `instant`.
    fn micros(&self, instant: Instant) -> u64 {
        u64::try_from(
            instant
                .saturating_duration_since(self.tally.base)
                .as_micros(),
        )
        .unwrap_or(0)
    }

    /// A phone: says hello if asked, then sends probes when told and counts what arrives.
    pub(super) async fn phone(mut self, orders: watch::Receiver<Order>, hello: bool) {
        if hello && self.ws.send(Message::text(HELLO)).await.is_err() {
            self.tally.ended(1006);
            return;
        }
        // One pending wait for the next order for the whole loop (making one per wake-up
        // showed in the load generator's profile: every wait registers in the shared Notify).
        let mut changed = std::pin::pin!(next_order(orders));
        let mut sending: Option<Sending> = None;
        let mut echo_round = 0;
        let mut echo_at: Option<Instant> = None;
        loop {
            tokio::select! {
                message = self.ws.next() => match Self::read(message) {
                    Read::Text(text) => self.phone_received(text.as_str()),
                    Read::Other => {}
                    Read::Ended(code) => {
                        self.tally.ended(code);
                        break;
                    }
                },
                scheduled = tick(&mut sending) => {
                    let Some(plan) = &sending else { continue };
                    if scheduled >= plan.until {
                        self.finish(sending.take());
                        continue;
                    }
                    let text = frames::probe(plan.step, self.micros(scheduled), false, self.frame_size);
                    if self.ws.send(Message::text(text)).await.is_err() {
                        continue; // the read side reports the end
                    }
                    self.tally.up.sent.fetch_add(1, Relaxed);
                }
                () = at(echo_at) => {
                    echo_at = None;
                    let now = self.micros(Instant::now());
                    let text = frames::probe(0, now, true, self.frame_size);
                    let sent = self.ws.send(Message::text(text)).await.is_ok();
                    self.tally.echo_tried.fetch_add(1, Relaxed);
                    if sent {
                        self.tally.echo_sent.fetch_add(1, Relaxed);
                    }
                }
                (order, orders) = &mut changed => {
                    let Some(order) = order else {
                        break;
                    };
                    changed.set(next_order(orders));
                    match order {
                        Order::Send { step, period, start, until } => {
                            self.finish(sending.take());
                            sending = Some(Sending::new(step, period, start, until, self.shard));
                        }
                        Order::Echo { round, start, spread } if round != echo_round => {
                            echo_round = round;
                            echo_at = Some(start + spread.mul_f64(spread_of(self.shard)));
                        }
                        Order::Quit => {
                            self.quit().await;
                            break;
                        }
                        Order::Hold => {
                            self.finish(sending.take());
                            echo_at = None;
                        }
                        Order::Echo { .. } => {}
                    }
                }
            }
        }
        self.finish(sending.take());
    }

    fn phone_received(&self, text: &str) {
        let Some(probe) = Probe::parse(text) else {
            return;
        };
        if probe.e == 1 {
            let rtt = self
                .tally
                .base
                .elapsed()
                .saturating_sub(Duration::from_micros(probe.t));
            self.tally.echo_latency.lock().record(rtt);
            self.tally.echo_received.fetch_add(1, Relaxed);
        } else {
            let current = self.tally.step.load(Relaxed);
            self.tally
                .down
                .received(&probe, current, self.tally.base, self.shard);
        }
    }

    /// A binary: learns its phones from their hellos, counts their probes, sends echo probes
    /// back, and when told sends probes to every phone it knows.
    pub(super) async fn binary(mut self, orders: watch::Receiver<Order>) {
        let mut changed = std::pin::pin!(next_order(orders));
        // conn-id → the envelope prefix addressed to it.
        let mut phones: HashMap<String, String> = HashMap::new();
        let mut sending: Option<Sending> = None;
        loop {
            tokio::select! {
                message = self.ws.next() => match Self::read(message) {
                    Read::Text(text) => {
                        if let Some(echo) = self.binary_received(text.as_str(), &mut phones) {
                            if self.ws.send(Message::text(echo)).await.is_err() {
                                continue;
                            }
                        }
                    }
                    Read::Other => {}
                    Read::Ended(code) => {
                        self.tally.ended(code);
                        break;
                    }
                },
                scheduled = tick(&mut sending) => {
                    let Some(plan) = &sending else { continue };
                    if scheduled >= plan.until {
                        self.finish(sending.take());
                        continue;
                    }
                    let probe = frames::probe(plan.step, self.micros(scheduled), false, self.frame_size);
                    let mut ok = true;
                    for prefix in phones.values() {
                        if self.ws.feed(Message::text(frames::envelope(prefix, &probe))).await.is_err() {
                            ok = false;
                            break;
                        }
                        self.tally.down.sent.fetch_add(1, Relaxed);
                    }
                    if ok {
                        let _ = self.ws.flush().await;
                    }
                }
                (order, orders) = &mut changed => {
                    let Some(order) = order else {
                        break;
                    };
                    changed.set(next_order(orders));
                    match order {
                        Order::Send { step, period, start, until } => {
                            self.finish(sending.take());
                            sending = Some(Sending::new(step, period, start, until, self.shard));
                        }
                        Order::Quit => {
                            self.quit().await;
                            break;
                        }
                        Order::Hold => self.finish(sending.take()),
                        Order::Echo { .. } => {}
                    }
                }
            }
        }
        self.finish(sending.take());
    }

    /// Handles one frame a binary received; returns an echo to send, if it asked for one.
    fn binary_received(&self, text: &str, phones: &mut HashMap<String, String>) -> Option<String> {
        let wrapped = Wrapped::parse(text)?;
        let Some(frame) = wrapped.frame else {
            phones.remove(wrapped.conn_id.as_ref());
            return None;
        };
        let frame = frame.get();
        if frame == HELLO {
            let prefix = frames::envelope_prefix(&wrapped.conn_id);
            if phones
                .insert(wrapped.conn_id.into_owned(), prefix)
                .is_none()
            {
                self.tally.hellos.fetch_add(1, Relaxed);
            }
            return None;
        }
        let probe = Probe::parse(frame)?;
        if probe.e == 1 {
            let prefix = frames::envelope_prefix(&wrapped.conn_id);
            return Some(frames::envelope(&prefix, frame));
        }
        let current = self.tally.step.load(Relaxed);
        self.tally
            .up
            .received(&probe, current, self.tally.base, self.shard);
        None
    }

    /// Sends close 1000 and waits (briefly) for the target's close.
    async fn quit(&mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "loadgen done".into(),
        };
        let closing = async {
            let _ = self.ws.close(Some(frame)).await;
            while let Some(Ok(_)) = self.ws.next().await {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
    }
}
