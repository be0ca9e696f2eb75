//! The `Reaper` expires windows at their deadlines on its own thread, wakes early when an earlier
//! window is armed, and stops when dropped or when the registry is gone.
//!
//! These tests wait for real deadlines (a few milliseconds); they assert only what happened, never
//! how long it took.

mod common;

use common::{Mock, check, mock, tally};
use relay_registry::{CloseReason, Counts, Reaper, Registry};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Waits (bounded) until `done` holds; panics if it never does.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let give_up = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < give_up, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn reaper_expires_a_window_and_closes_phones_on_its_own_thread() {
    let reg: Registry<Mock> = Registry::new();
    let reaper = Reaper::spawn(&reg);
    let claim = reg.claim_server("srv", mock("bin")).unwrap();
    let phone = mock("p");
    let _ticket = reg.register_phone("srv", phone.clone()).unwrap();
    claim.release_after(Duration::from_millis(20));
    eventually("the phone is closed", || phone.is_closed());
    assert_eq!(phone.closes(), vec![CloseReason::GraceExpired]);
    assert_ne!(phone.close_threads()[0], std::thread::current().id());
    assert_eq!(reg.counts(), Counts::default());
    check(&reg);
    drop(reaper);
}

#[test]
fn reaper_wakes_for_an_earlier_window_armed_while_it_sleeps() {
    let reg: Registry<Mock> = Registry::new();
    let _reaper = Reaper::spawn(&reg);
    // The reaper goes to sleep on a far deadline...
    reg.claim_server("far", mock("far"))
        .unwrap()
        .release_after(Duration::from_secs(3600));
    eventually("the reaper has seen the far window", || {
        reg.next_deadline().is_some()
    });
    // ...and must wake for a near one, without polling.
    let phone = mock("p");
    let claim = reg.claim_server("near", mock("near")).unwrap();
    let _ticket = reg.register_phone("near", phone.clone()).unwrap();
    claim.release_after(Duration::from_millis(5));
    eventually("the near window expired", || phone.is_closed());
    assert_eq!(reg.counts(), tally(0, 1, 0));
}

#[test]
fn reaper_ignores_a_window_cancelled_by_a_reclaim() {
    let reg: Registry<Mock> = Registry::new();
    let _reaper = Reaper::spawn(&reg);
    reg.claim_server("srv", mock("old"))
        .unwrap()
        .release_after(Duration::from_millis(30));
    let reclaim = reg.claim_server("srv", mock("new")).unwrap();
    let phone = mock("p");
    let _ticket = reg.register_phone("srv", phone.clone()).unwrap();
    // A later window on another id proves the reaper ran past the cancelled deadline.
    let later = mock("later-phone");
    let other = reg.claim_server("other", mock("other")).unwrap();
    let _t = reg.register_phone("other", later.clone()).unwrap();
    other.release_after(Duration::from_millis(60));
    eventually("the later window expired", || later.is_closed());
    assert!(reclaim.is_current());
    assert!(!phone.is_closed());
    assert_eq!(reg.counts(), tally(1, 0, 1));
}

#[test]
fn reaper_survives_a_panicking_close() {
    use relay_registry::Conn;
    struct Panics;
    impl Conn for Panics {
        fn conn_id(&self) -> &str {
            "panics"
        }
        fn close(&self, _: CloseReason) {
            panic!("close panicked on the reaper thread");
        }
    }
    let reg: Registry<Panics> = Registry::new();
    let _reaper = Reaper::spawn(&reg);
    let claim = reg.claim_server("a", Arc::new(Panics)).unwrap();
    let _t = reg.register_phone("a", Arc::new(Panics)).unwrap();
    claim.release_after(Duration::from_millis(1));
    eventually("the first window expired", || reg.counts().gracing == 0);
    reg.claim_server("b", Arc::new(Panics))
        .unwrap()
        .release_after(Duration::from_millis(1));
    eventually("the reaper still runs", || {
        reg.counts() == Counts::default()
    });
}

#[test]
fn dropping_the_reaper_stops_and_joins_its_thread() {
    let reg: Registry<Mock> = Registry::new();
    let (entered_tx, entered_rx) = mpsc::channel();
    let finished = Arc::new(AtomicBool::new(false));
    // The handler, and with it this probe, is owned by the reaper thread until the thread ends.
    let probe = Arc::new(());
    let reaper = {
        let (finished, probe) = (finished.clone(), probe.clone());
        Reaper::spawn_with(&reg, move |_expiries| {
            let _owned = &probe;
            entered_tx.send(()).unwrap();
            // A slow handler: still running when the reaper is dropped below.
            std::thread::sleep(Duration::from_millis(50));
            finished.store(true, Ordering::SeqCst);
        })
    };
    reg.claim_server("srv", mock("bin"))
        .unwrap()
        .release_after(Duration::ZERO);
    entered_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the reaper runs the handler");
    drop(reaper);
    // The drop returned only once the thread finished its round and ended.
    assert!(
        finished.load(Ordering::SeqCst),
        "the drop waited for the handler"
    );
    assert_eq!(
        Arc::strong_count(&probe),
        1,
        "the thread (and its handler) are gone"
    );
    assert_eq!(reg.counts(), Counts::default());
}

#[test]
fn reaper_stops_when_the_registry_is_gone() {
    let reg: Registry<Mock> = Registry::new();
    let weak_probe = mock("bin");
    let reaper = Reaper::spawn(&reg);
    reg.claim_server("srv", weak_probe.clone())
        .unwrap()
        .release_after(Duration::from_secs(3600));
    drop(reg);
    // The registry's last handle is gone, so it (and the binary it held) is freed even though the
    // reaper is alive: the reaper holds only a weak reference (upgraded only while it works).
    eventually("the registry is freed", || {
        Arc::strong_count(&weak_probe) == 1
    });
    drop(reaper);
}
