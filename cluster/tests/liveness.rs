//! Liveness leases against a real `nats-server`: others learn of a crash within the lease plus
//! one refresh and of a shutdown at once; an instance cut off from NATS fences itself before
//! anyone can see its lease end; a fenced instance comes back under a new incarnation and its old
//! entries stay free.

use relay_cluster_testkit as support;

use relay_cluster::{
    ClusterError, connection::ConnectSettings, connection::Nats, directory::Claim,
    directory::Lookup, instance::InstanceId, instance::Owner, link::LinkSettings,
    liveness::LIVENESS_BUCKET, liveness::LeaseState, liveness::Liveness, liveness::PeerEvent,
};
use std::time::Duration;
use support::instance::{TEST_LEASE, instance, instance_with};
use support::nats::NatsServer;
use support::proxy::Partition;
use support::{PATIENCE, eventually};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Waits up to `bound` for `Lost(owner)`, skipping other events; the instant it came.
async fn lost(
    peers: &mut broadcast::Receiver<PeerEvent>,
    owner: &Owner,
    bound: Duration,
) -> Instant {
    let wait = async {
        loop {
            match peers.recv().await.expect("the watch runs") {
                PeerEvent::Lost(gone) if &gone == owner => return Instant::now(),
                _ => {}
            }
        }
    };
    tokio::time::timeout(bound, wait)
        .await
        .unwrap_or_else(|_| panic!("{owner} not seen lost within {bound:?}"))
}

#[tokio::test]
async fn instances_see_each_other_alive() {
    let Some(server) = NatsServer::start("instances_see_each_other_alive") else {
        return;
    };
    let a = instance(&server, "relay-a", TEST_LEASE).await;
    let mut peers = a.liveness.peers();
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let owner_b = b.liveness.owner().expect("b holds its lease");
    let event = tokio::time::timeout(PATIENCE, peers.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event, PeerEvent::Alive(owner_b.clone()));
    assert_eq!(a.liveness.live_peers(), vec![owner_b.clone()]);
    assert_eq!(a.liveness.is_alive(&owner_b).await, Ok(true));
    assert_eq!(b.liveness.live_peers(), vec![a.liveness.owner().unwrap()]);
    // Refreshes (several per lease) are not news.
    tokio::time::sleep(TEST_LEASE).await;
    assert!(peers.try_recv().is_err());
    assert!(b.liveness.holds_lease());
}

#[tokio::test]
async fn a_crashed_instance_is_seen_lost_within_the_lease_plus_one_refresh() {
    let Some(server) = NatsServer::start("a_crashed_instance_is_seen_lost") else {
        return;
    };
    let a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let mut peers = a.liveness.peers();
    let owner_b = b.liveness.owner().unwrap();
    drop(b); // no shutdown: it stops refreshing, as a crashed process does
    let timing = a.liveness.timing();
    let bound = timing.lease + timing.refresh + Duration::from_millis(500);
    lost(&mut peers, &owner_b, bound).await;
    assert_eq!(a.liveness.is_alive(&owner_b).await, Ok(false));
    assert!(a.liveness.live_peers().is_empty());
}

#[tokio::test]
async fn a_graceful_shutdown_is_seen_at_once_not_after_the_lease() {
    let Some(server) = NatsServer::start("a_graceful_shutdown_is_seen_at_once") else {
        return;
    };
    let a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let mut peers = a.liveness.peers();
    let owner_b = b.liveness.owner().unwrap();
    b.liveness.shutdown().await.expect("the entry is deleted");
    assert!(!b.liveness.holds_lease());
    // Well before the TTL could have expired the entry.
    lost(&mut peers, &owner_b, TEST_LEASE / 2).await;
    assert_eq!(a.liveness.is_alive(&owner_b).await, Ok(false));
}

#[tokio::test]
async fn an_instance_whose_entry_was_replaced_fences_itself_at_its_next_refresh() {
    let Some(server) = NatsServer::start("an_instance_whose_entry_was_replaced") else {
        return;
    };
    let lease = Duration::from_secs(4);
    let first = instance(&server, "relay-a", lease).await;
    let mut state = first.liveness.state();
    let original = first.liveness.owner().unwrap();
    // A second process with the same name (a misconfiguration) announces itself over it.
    let second = instance(&server, "relay-a", lease).await;
    // The first one's next refresh (within 1 s) is refused: it fences at once instead of at its
    // deadline (3.2 s after its last refresh), then announces itself anew.
    let replaced = state.wait_for(|state| *state != LeaseState::Held(original.clone()));
    tokio::time::timeout(lease / 2, replaced)
        .await
        .expect("fenced at the refresh after the takeover, before the deadline")
        .unwrap();
    drop(second);
}

#[tokio::test]
async fn a_refresh_stored_without_its_acknowledgement_does_not_fence_the_instance() {
    let Some(server) = NatsServer::start("a_refresh_stored_without_ack") else {
        return;
    };
    let lease = Duration::from_secs(4);
    let a = instance(&server, "relay-a", lease).await;
    let mut state = a.liveness.state();
    let original = a.liveness.owner().unwrap();
    // What a refresh whose acknowledgement was lost (a timeout during a JetStream election)
    // leaves behind: our own value, stored at a revision this instance never learnt.
    let store = a
        .nats
        .jetstream()
        .get_key_value(LIVENESS_BUCKET)
        .await
        .expect("the bucket");
    store
        .put("relay-a", original.encode().into())
        .await
        .expect("the write");
    // The next refresh's compare-and-set is refused (10071); the entry is still ours, so the
    // refresh goes on from its revision instead of fencing. Past the fence deadline (3.2 s
    // after the last acknowledged refresh), the lease is still held, in the same incarnation.
    let changed = tokio::time::timeout(lease, state.changed()).await;
    assert!(changed.is_err(), "the lease changed: {:?}", *state.borrow());
    assert_eq!(a.liveness.owner(), Some(original));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_instance_fences_itself_before_anyone_sees_its_lease_end() {
    let Some(server) = NatsServer::start("a_partitioned_instance_fences_itself") else {
        return;
    };
    let target = server.url().trim_start_matches("nats://").parse().unwrap();
    let partition = Partition::start(target).await;
    // Pings far apart, so the cut is noticed by the failing refreshes, not as a disconnect.
    let quiet = ConnectSettings {
        ping_interval: Duration::from_secs(60),
        ..ConnectSettings::default()
    };
    let a = instance_with(
        &partition.url(),
        "relay-a",
        TEST_LEASE,
        quiet,
        LinkSettings::default(),
    )
    .await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let Claim::Claimed(_) = a.directory.claim("srv").await.unwrap() else {
        panic!("claimed");
    };
    let old = a.liveness.owner().unwrap();
    let mut peers = b.liveness.peers();
    let mut state = a.liveness.state();
    state.borrow_and_update();

    partition.cut();
    // Both waits run at once, each noting the instant its event came.
    let bound = TEST_LEASE + Duration::from_secs(1);
    let fencing = async {
        tokio::time::timeout(bound, state.wait_for(|state| *state == LeaseState::Fenced))
            .await
            .expect("fenced within the lease")
            .unwrap();
        Instant::now()
    };
    let (fenced, seen) = tokio::join!(fencing, lost(&mut peers, &old, bound + bound));
    assert!(
        fenced < seen,
        "a was told it lost its lease only after b saw it gone"
    );
    assert!(!a.liveness.holds_lease());
    assert_eq!(a.liveness.owner(), None);
    assert_eq!(
        a.directory.claim("other").await,
        Err(ClusterError::NoLease),
        "a fenced instance claims nothing"
    );
    assert_eq!(b.directory.lookup("srv").await, Ok(Lookup::Free));

    // Healed: a comes back under a new incarnation; what it owned before stays free.
    partition.heal();
    let held = tokio::time::timeout(
        PATIENCE,
        state.wait_for(|s| matches!(s, LeaseState::Held(_))),
    )
    .await
    .expect("held again once NATS answers")
    .unwrap()
    .clone();
    let LeaseState::Held(new) = held else {
        unreachable!()
    };
    assert_eq!(new.instance, old.instance);
    assert_ne!(new.incarnation, old.incarnation);
    assert!(a.liveness.holds_lease());
    assert_eq!(b.directory.lookup("srv").await, Ok(Lookup::Free));
    assert!(matches!(
        b.directory.claim("srv").await,
        Ok(Claim::Claimed(_))
    ));
    assert!(matches!(
        a.directory.claim("srv").await,
        Ok(Claim::HeldBy { .. })
    ));
}

#[tokio::test]
async fn nats_restarting_instances_reconnect_hold_leases_and_the_watch_goes_on() {
    let Some(mut server) = NatsServer::start("nats_restarting_and_the_watch_goes_on") else {
        return;
    };
    let lease = Duration::from_secs(4);
    let a = instance(&server, "relay-a", lease).await;
    let b = instance(&server, "relay-b", lease).await;
    server.stop();
    assert!(
        eventually(PATIENCE, || !a.nats.is_connected()
            && !b.nats.is_connected())
        .await
    );
    server.start_again();
    // Both reconnect on their own, and JetStream answers them again.
    assert!(eventually(PATIENCE, || a.nats.is_connected() && b.nats.is_connected()).await);
    let deadline = Instant::now() + PATIENCE;
    while !matches!(
        b.directory.claim("after-restart").await,
        Ok(Claim::Claimed(_))
    ) {
        assert!(
            Instant::now() < deadline,
            "the directory answers again after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        eventually(PATIENCE, || a.liveness.holds_lease()
            && b.liveness.holds_lease())
        .await
    );
    // The watch still works: b's shutdown is seen by a.
    let mut peers = a.liveness.peers();
    let current_b = b.liveness.owner().unwrap();
    b.liveness.shutdown().await.expect("deleted");
    lost(&mut peers, &current_b, PATIENCE).await;
}

/// Creates the liveness bucket as an operator (or an older relay) might have: `config` with the
/// bucket's name.
async fn precreate(server: &NatsServer, config: async_nats::jetstream::kv::Config) -> Nats {
    let nats = Nats::connect(
        &server.url(),
        &InstanceId::new("operator").unwrap(),
        Duration::from_secs(2),
        ConnectSettings::default(),
    )
    .await
    .expect("connect");
    nats.jetstream()
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: LIVENESS_BUCKET.to_owned(),
            ..config
        })
        .await
        .expect("create the bucket");
    nats
}

#[tokio::test]
async fn an_existing_bucket_with_other_settings_jetstream_can_change_is_updated() {
    let Some(server) = NatsServer::start("existing_bucket_updated") else {
        return;
    };
    let nats = precreate(
        &server,
        async_nats::jetstream::kv::Config {
            history: 5,
            ..Default::default()
        },
    )
    .await;
    let a = instance(&server, "relay-a", TEST_LEASE).await;
    assert!(a.liveness.holds_lease());
    let mut stream = nats
        .jetstream()
        .get_stream(format!("KV_{LIVENESS_BUCKET}"))
        .await
        .unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(config.max_messages_per_subject, 1, "history updated to 1");
    assert!(
        config.subject_delete_marker_ttl.is_some(),
        "limit markers on"
    );
}

#[tokio::test]
async fn an_existing_bucket_whose_settings_jetstream_cannot_change_is_refused_saying_what_differs()
{
    let Some(server) = NatsServer::start("existing_bucket_refused") else {
        return;
    };
    let nats = precreate(
        &server,
        async_nats::jetstream::kv::Config {
            history: 1,
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        },
    )
    .await;
    let refused = Liveness::start(&nats, InstanceId::new("relay-a").unwrap(), TEST_LEASE).await;
    match refused {
        Err(ClusterError::Config(message)) => {
            assert!(
                message.contains("storage: has memory, want file"),
                "{message}"
            );
            assert!(message.contains(LIVENESS_BUCKET), "{message}");
        }
        Err(other) => panic!("expected a configuration error, got {other}"),
        Ok(_) => panic!("a memory bucket was accepted"),
    }
}
