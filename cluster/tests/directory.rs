//! The cluster directory against a real `nats-server`: keys for any id, first claim wins across
//! instances, compare-and-set moves and releases, dead owners' entries are free, every call is
//! bounded, and a call made while JetStream elects the bucket's leader (a three-node NATS
//! cluster, the leader's node killed) is answered once it has one.

use relay_cluster_testkit as support;

use proptest::prelude::*;
use relay_cluster::keys::{key_of, server_id_of};
use relay_cluster::{
    ClusterError, directory::Claim, directory::Lookup, directory::Move, directory::Release,
    metrics::RequestKind, metrics::RequestOutcome,
};
use std::collections::HashSet;
use std::time::Duration;
use support::instance::{TEST_LEASE, instance};
use support::nats::NatsServer;
use support::{PATIENCE, eventually};

/// Ids that break naive encodings: KV and subject syntax, escapes, look-alikes, the limits.
fn tricky_ids() -> Vec<String> {
    let mut ids: Vec<String> = [
        "",
        "a",
        "a.b",
        "a/b",
        "a_b",
        "a-b",
        "a=b",
        "a..b",
        ".",
        "..",
        ".a",
        "a.",
        "*",
        ">",
        "a.*",
        "a.>",
        " ",
        "a b",
        "\t",
        "\n",
        "\r\n",
        "\u{0}",
        "\u{85}",
        "\u{2028}",
        "é",
        "e\u{301}",
        "😀",
        "id-",
        "id-YQ",
        "YQ",
        "YQ==",
        "%2e",
        "\\",
        "\"",
        "'",
        "$KV",
        "_INBOX.x",
        "x peer=6.6.6.6 code=4409",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    ids.push("x".repeat(256));
    ids.push("é".repeat(128));
    ids.push(format!("{}.", "a".repeat(255)));
    ids
}

/// What `nats-server` and async-nats accept as a KV key.
fn is_legal_kv_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
}

proptest! {
    #[test]
    fn server_id_keys_are_injective_legal_and_decode_back(
        a in "\\PC{0,80}|[ -~]{0,256}",
        b in "\\PC{0,80}|[ -~]{0,256}",
    ) {
        prop_assert!(is_legal_kv_key(&key_of(&a)));
        prop_assert_eq!(server_id_of(&key_of(&a)), Some(a.clone()));
        prop_assert_eq!(key_of(&a) == key_of(&b), a == b);
    }
}

#[test]
fn tricky_ids_get_distinct_legal_keys() {
    let ids = tricky_ids();
    let keys: HashSet<String> = ids.iter().map(|id| key_of(id)).collect();
    assert_eq!(keys.len(), ids.len(), "two ids share a key");
    for id in &ids {
        let key = key_of(id);
        assert!(is_legal_kv_key(&key), "{id:?} → {key:?}");
        assert_eq!(server_id_of(&key).as_ref(), Some(id));
    }
}

#[tokio::test]
async fn the_server_accepts_every_tricky_key_and_keeps_the_ids_apart() {
    let Some(server) = NatsServer::start("the_server_accepts_every_tricky_key") else {
        return;
    };
    let a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    // Odd ids go to a, even ones to b: if two ids shared an entry, one claim would see the other.
    let ids = tricky_ids();
    for (n, id) in ids.iter().enumerate() {
        let claimer = if n % 2 == 0 { &a } else { &b };
        let claim = claimer.directory.claim(id).await.expect("answered");
        assert!(matches!(claim, Claim::Claimed(_)), "{id:?}: {claim:?}");
    }
    for (n, id) in ids.iter().enumerate() {
        let owner = if n % 2 == 0 { &a } else { &b };
        let other = if n % 2 == 0 { &b } else { &a };
        assert!(
            matches!(owner.directory.lookup(id).await, Ok(Lookup::Ours(_))),
            "{id:?}"
        );
        let seen = other.directory.lookup(id).await.expect("answered");
        let Lookup::Owner { owner: seen, .. } = seen else {
            panic!("{id:?}: {seen:?}");
        };
        assert_eq!(Some(seen), owner.liveness.owner());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_claiming_one_id_at_once_exactly_one_wins_200_rounds() {
    let Some(server) = NatsServer::start("two_instances_claiming_one_id_at_once") else {
        return;
    };
    let a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let (owner_a, owner_b) = (a.liveness.owner().unwrap(), b.liveness.owner().unwrap());
    let mut wins = [0, 0];
    for round in 0..200 {
        let id = format!("race-{round}");
        let (from_a, from_b) = tokio::join!(a.directory.claim(&id), b.directory.claim(&id));
        match (from_a.expect("a answered"), from_b.expect("b answered")) {
            (
                Claim::Claimed(revision),
                Claim::HeldBy {
                    owner,
                    revision: seen,
                },
            ) => {
                assert_eq!((owner, seen), (owner_a.clone(), revision), "round {round}");
                wins[0] += 1;
            }
            (
                Claim::HeldBy {
                    owner,
                    revision: seen,
                },
                Claim::Claimed(revision),
            ) => {
                assert_eq!((owner, seen), (owner_b.clone(), revision), "round {round}");
                wins[1] += 1;
            }
            other => panic!("round {round}: not exactly one winner: {other:?}"),
        }
    }
    assert_eq!(wins[0] + wins[1], 200);
    assert_eq!(
        a.metrics
            .requests(RequestKind::Claim, RequestOutcome::Answered),
        200
    );
    eprintln!("race wins: a {} b {}", wins[0], wins[1]);
}

#[tokio::test]
async fn a_move_with_a_stale_revision_is_refused() {
    let Some(server) = NatsServer::start("a_move_with_a_stale_revision_is_refused") else {
        return;
    };
    let a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let Claim::Claimed(first) = a.directory.claim("srv").await.unwrap() else {
        panic!("a fresh id is claimed");
    };
    let Claim::HeldBy { revision, .. } = b.directory.claim("srv").await.unwrap() else {
        panic!("a live owner holds it");
    };
    assert_eq!(revision, first);
    // The owner let go (a handover): b moves the entry with the revision it read.
    let Move::Moved(second) = b.directory.move_to_me("srv", revision).await.unwrap() else {
        panic!("the revision it read moves the entry");
    };
    assert!(second > first);
    // Everyone naming the old revision is refused, b included.
    assert_eq!(a.directory.move_to_me("srv", first).await, Ok(Move::Stale));
    assert_eq!(b.directory.move_to_me("srv", first).await, Ok(Move::Stale));
    let owner_b = b.liveness.owner().unwrap();
    assert_eq!(
        a.directory.lookup("srv").await,
        Ok(Lookup::Owner {
            owner: owner_b,
            revision: second
        })
    );
}

#[tokio::test]
async fn release_deletes_only_our_entry() {
    let Some(server) = NatsServer::start("release_deletes_only_our_entry") else {
        return;
    };
    let a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let Claim::Claimed(ours) = a.directory.claim("srv").await.unwrap() else {
        panic!("claimed");
    };
    assert_eq!(
        a.directory.release("srv", ours).await,
        Ok(Release::Released)
    );
    assert_eq!(b.directory.lookup("srv").await, Ok(Lookup::Free));
    // The id is free again: b claims it (over the purge marker) ...
    let Claim::Claimed(theirs) = b.directory.claim("srv").await.unwrap() else {
        panic!("a released id is claimed again");
    };
    // ... and a's late release with its old revision deletes nothing.
    assert_eq!(a.directory.release("srv", ours).await, Ok(Release::NotOurs));
    assert!(matches!(
        a.directory.lookup("srv").await,
        Ok(Lookup::Owner { .. })
    ));
    assert_eq!(
        b.directory.release("srv", theirs).await,
        Ok(Release::Released)
    );
    assert_eq!(
        a.directory.release("srv", theirs).await,
        Ok(Release::NotOurs)
    );
}

#[tokio::test]
async fn release_all_frees_every_id_still_ours_and_no_other() {
    let Some(server) = NatsServer::start("release_all_frees_every_id_we_own") else {
        return;
    };
    let a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let mut owned = Vec::new();
    for n in 0..50 {
        let id = format!("srv-{n}");
        let Claim::Claimed(revision) = a.directory.claim(&id).await.unwrap() else {
            panic!("claimed");
        };
        owned.push((id, revision));
    }
    // One entry moved on meanwhile: it is not ours to delete any more.
    let (moved, old) = owned[0].clone();
    assert!(matches!(
        b.directory.move_to_me(&moved, old).await,
        Ok(Move::Moved(_))
    ));
    assert_eq!(a.directory.release_all(owned).await, 49);
    for n in 1..50 {
        assert_eq!(
            b.directory.lookup(&format!("srv-{n}")).await,
            Ok(Lookup::Free)
        );
    }
    assert!(matches!(
        b.directory.lookup(&moved).await,
        Ok(Lookup::Ours(_))
    ));
}

#[tokio::test]
async fn an_id_whose_owner_shut_down_is_free_and_claimed_by_compare_and_set() {
    let Some(server) = NatsServer::start("an_id_whose_owner_shut_down_is_free") else {
        return;
    };
    let a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    assert!(matches!(
        a.directory.claim("srv").await,
        Ok(Claim::Claimed(_))
    ));
    assert!(matches!(
        b.directory.claim("srv").await,
        Ok(Claim::HeldBy { .. })
    ));
    // a shuts down gracefully: its liveness entry is deleted, its directory entry stays.
    a.liveness.shutdown().await.expect("deleted");
    assert!(!a.liveness.holds_lease());
    assert_eq!(b.directory.lookup("srv").await, Ok(Lookup::Free));
    assert!(matches!(
        b.directory.claim("srv").await,
        Ok(Claim::Claimed(_))
    ));
}

#[tokio::test]
async fn an_id_whose_owner_crashed_is_free_once_its_lease_expired() {
    let Some(server) = NatsServer::start("an_id_whose_owner_crashed_is_free") else {
        return;
    };
    let a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    assert!(matches!(
        a.directory.claim("srv").await,
        Ok(Claim::Claimed(_))
    ));
    drop(a); // no shutdown: the entry expires after one lease
    assert!(matches!(
        b.directory.claim("srv").await,
        Ok(Claim::HeldBy { .. })
    ));
    let bound = TEST_LEASE + TEST_LEASE / 4 + Duration::from_secs(1);
    let start = tokio::time::Instant::now();
    loop {
        match b.directory.claim("srv").await.unwrap() {
            Claim::Claimed(_) => break,
            Claim::HeldBy { .. } => {}
            other => panic!("{other:?}"),
        }
        assert!(
            start.elapsed() < bound,
            "still held {bound:?} after the crash"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_call_is_bounded_and_a_timeout_is_an_answer() {
    let Some(mut server) = NatsServer::start("every_call_is_bounded") else {
        return;
    };
    let a = instance(&server, "relay-a", TEST_LEASE).await;
    server.stop();
    assert!(eventually(PATIENCE, || !a.nats.is_connected()).await);
    let calls = async {
        let claim = a.directory.claim("srv").await;
        let lookup = a.directory.lookup("srv").await;
        let release = a
            .directory
            .release("srv", relay_cluster::directory::Revision(1))
            .await;
        (claim, lookup, release)
    };
    let (claim, lookup, release) = tokio::time::timeout(PATIENCE, calls)
        .await
        .expect("every call answers within its bound");
    for result in [claim.map(drop), lookup.map(drop), release.map(drop)] {
        assert!(
            matches!(result, Err(ClusterError::TimedOut | ClusterError::Nats(_))),
            "{result:?}"
        );
    }
    let unanswered = a
        .metrics
        .requests(RequestKind::Claim, RequestOutcome::TimedOut)
        + a.metrics
            .requests(RequestKind::Claim, RequestOutcome::Failed);
    assert_eq!(unanswered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_made_while_the_directory_leader_is_elected_is_answered_once_it_is() {
    use relay_cluster::{
        connection::ConnectSettings, connection::Nats, directory::DIRECTORY_BUCKET,
        directory::Directory, instance::InstanceId, liveness::DEFAULT_LEASE, liveness::Liveness,
        metrics::ClusterMetrics,
    };
    use std::sync::Arc;
    let Some(mut nats) = support::nats::NatsCluster::start("a_claim_during_an_election") else {
        return;
    };
    let replicated = ConnectSettings {
        bucket_replicas: 3,
        ..ConnectSettings::default()
    };
    let id = InstanceId::new("relay-a").unwrap();
    let client = Nats::connect(&nats.urls(), &id, Duration::from_secs(2), replicated)
        .await
        .expect("connect");
    // Right after the nodes start, JetStream may have no meta leader yet.
    let deadline = tokio::time::Instant::now() + PATIENCE * 3;
    let liveness = loop {
        match Liveness::start(&client, id.clone(), DEFAULT_LEASE).await {
            Ok(liveness) => break Arc::new(liveness),
            Err(error) => assert!(tokio::time::Instant::now() < deadline, "{error}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // A timeout long enough for an election (4-15 s measured).
    let timeout = Duration::from_secs(40);
    let directory = Directory::open(
        &client,
        liveness,
        timeout,
        Arc::new(ClusterMetrics::default()),
    )
    .await
    .expect("the directory opens");
    assert!(matches!(
        directory.claim("srv-before").await,
        Ok(Claim::Claimed(_))
    ));
    let mut stream = client
        .jetstream()
        .get_stream(format!("KV_{DIRECTORY_BUCKET}"))
        .await
        .expect("the directory's stream");
    let leader = stream
        .info()
        .await
        .expect("stream info")
        .cluster
        .clone()
        .and_then(|cluster| cluster.leader)
        .expect("a leader");
    let node: usize = leader[1..].parse::<usize>().expect("n1, n2 or n3") - 1;
    // Killed: until a new leader is elected, every request to the stream is told "no
    // responders" at once or times out; the claim is tried again until it is answered.
    nats.node(node).kill();
    let claim = tokio::time::timeout(timeout, directory.claim("srv-during")).await;
    assert!(
        matches!(claim, Ok(Ok(Claim::Claimed(_)))),
        "{claim:?} after killing {leader}"
    );
    assert_eq!(
        directory.lookup("srv-during").await,
        Ok(Lookup::Ours(match claim {
            Ok(Ok(Claim::Claimed(revision))) => revision,
            _ => unreachable!(),
        }))
    );
}
