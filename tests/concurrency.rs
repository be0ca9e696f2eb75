//! Many threads hammering a few ids with every operation: afterwards, with every guard dropped and
//! every window expired, the registry is empty and consistent, and every conn saw the closes the
//! contract allows (binaries none, phones at most one, unregistered phones none).

mod common;

use common::{Mock, check, mock, registry_with_cap};
use relay_registry::{Conn, Counts, PhoneTicket, ServerClaim};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const THREADS: usize = 16;
const OPS: usize = 2_000;
const IDS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

/// A small deterministic PRNG (xorshift64*), seeded per thread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Default)]
struct Outcome {
    binaries: Vec<Arc<Mock>>,
    phones: Vec<Arc<Mock>>,
    /// Phones whose ticket's `unregister` returned true: they must never be closed.
    unregistered: Vec<Arc<Mock>>,
}

#[test]
fn sixteen_threads_mixing_every_operation_leave_a_consistent_empty_registry() {
    let (reg, clock) = registry_with_cap(3);
    let start = Arc::new(Barrier::new(THREADS + 2)); // workers, the ticker, and this thread
    let done = Arc::new(AtomicBool::new(false));

    let ticker = {
        let (reg, clock, done, start) = (reg.clone(), clock.clone(), done.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            let mut ticks = 0u64;
            while !done.load(Ordering::Acquire) {
                clock.advance(Duration::from_millis(7));
                reg.expire_due();
                ticks += 1;
                std::thread::yield_now();
            }
            ticks
        })
    };

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (reg, start) = (reg.clone(), start.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ ((t as u64 + 1) * 0x1234_5678_9abc));
                let mut claims: Vec<ServerClaim<Mock>> = Vec::new();
                let mut tickets: Vec<PhoneTicket<Mock>> = Vec::new();
                let mut out = Outcome::default();
                start.wait();
                for op in 0..OPS {
                    let id = IDS[rng.below(IDS.len())];
                    let name = format!("t{t}-op{op}");
                    match rng.below(14) {
                        0 | 1 => {
                            let conn = mock(&format!("bin-{name}"));
                            out.binaries.push(conn.clone());
                            if let Ok(claim) = reg.claim_server(id, conn) {
                                claims.push(claim);
                            }
                        }
                        2 => {
                            let conn = mock(&format!("bin-{name}"));
                            out.binaries.push(conn.clone());
                            let incumbent = reg.binary_for(id);
                            if let Ok(claim) = reg.takeover_server(id, incumbent.as_ref(), conn) {
                                claims.push(claim);
                            }
                        }
                        3 if !claims.is_empty() => {
                            let claim = claims.swap_remove(rng.below(claims.len()));
                            let _ = claim.release();
                        }
                        4 if !claims.is_empty() => {
                            drop(claims.swap_remove(rng.below(claims.len())));
                        }
                        5 if !claims.is_empty() => {
                            let claim = claims.swap_remove(rng.below(claims.len()));
                            let grace = Duration::from_millis(rng.below(50) as u64);
                            let _ = claim.release_after(grace);
                        }
                        6 | 7 => {
                            let conn = mock(&format!("phone-{name}"));
                            if let Ok(ticket) = reg.register_phone(id, conn.clone()) {
                                out.phones.push(conn);
                                tickets.push(ticket);
                            }
                        }
                        8 if !tickets.is_empty() => {
                            let ticket = tickets.swap_remove(rng.below(tickets.len()));
                            let conn = ticket.conn().clone();
                            if ticket.unregister() {
                                out.unregistered.push(conn);
                            }
                        }
                        9 if !tickets.is_empty() => {
                            let ticket = &tickets[rng.below(tickets.len())];
                            if let Some(binary) = ticket.binary() {
                                assert!(binary.conn_id().starts_with("bin-"));
                            }
                        }
                        10 => {
                            if let Some(claim) = claims.get(rng.below(claims.len().max(1))) {
                                let phones = claim.phones();
                                if let Some(p) = phones.first() {
                                    let _ = claim.phone(p.conn_id());
                                }
                            }
                            let _ = reg.phone_for(id, "phone-t0-op1");
                        }
                        11 => {
                            let phones = reg.phones_for(id);
                            assert!(phones.len() <= 3, "cap respected");
                            let _ = reg.snapshot();
                        }
                        12 => {
                            let c = reg.counts();
                            assert!(c.binaries + c.gracing <= IDS.len());
                            assert!(c.phones <= 3 * IDS.len());
                        }
                        _ => {
                            reg.expire_due();
                            let _ = reg.next_deadline();
                        }
                    }
                    if op % 500 == 0 {
                        check(&reg);
                    }
                }
                // Drop what is left in a thread-dependent order.
                if t % 2 == 0 {
                    drop(claims);
                    drop(tickets);
                } else {
                    drop(tickets);
                    drop(claims);
                }
                out
            })
        })
        .collect();

    start.wait();
    let outcomes: Vec<Outcome> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    done.store(true, Ordering::Release);
    assert!(ticker.join().unwrap() > 0);

    // Every guard is gone: only grace windows can still hold ids. Expire them all.
    clock.advance(Duration::from_secs(3600));
    reg.expire_due();
    check(&reg);
    assert_eq!(reg.counts(), Counts::default());
    assert!(reg.snapshot().is_empty());
    assert_eq!(reg.next_deadline(), None);

    for out in &outcomes {
        assert!(
            out.binaries.iter().all(|b| !b.is_closed()),
            "binaries are never closed"
        );
        assert!(
            out.phones.iter().all(|p| p.closes().len() <= 1),
            "one eviction per phone"
        );
        assert!(
            out.unregistered.iter().all(|p| !p.is_closed()),
            "unregistered phones are never closed"
        );
    }
    let registered: usize = outcomes.iter().map(|o| o.phones.len()).sum();
    assert!(
        registered > 100,
        "the workload registered phones ({registered})"
    );
}
