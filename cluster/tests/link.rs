//! Links between instances against a real `nats-server`: frames in order both ways, a gap or a
//! lost connection loses the link (1011) at both ends and is counted, requests are bounded, no
//! registration is left half-made, and a remote phone is a registry `Conn` like any other.

use relay_cluster_testkit as support;

use bytes::Bytes;
use relay_cluster::wire::{self, LinkId, LinkMessage, close_from_wire};
use relay_cluster::{
    connection::ConnectSettings, instance::InstanceId, link::Inbound, link::LinkSettings,
    link::Outbound, link::Registration, link::RequestError, metrics::RequestKind,
    metrics::RequestOutcome, remote::RemotePhone, wire::Reply, wire::Request,
};
use relay_protocol::{CloseReason, SendError};
use relay_registry::{Conn, Registry};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::instance::{
    Instance, Recorder, Seen, TEST_LEASE, instance, instance_with, next, next_request, recorder,
};
use support::nats::NatsServer;
use support::proxy::Partition;
use support::{PATIENCE, eventually};
use tokio::sync::mpsc::UnboundedReceiver;

/// One remote phone's link: the owner is `a`, the phone's instance `b`.
struct Established {
    /// At b: the phone's frames up to the owner.
    up: Outbound,
    /// At a: the binary's frames down to the phone.
    down: Outbound,
    /// What reaches the owner (a).
    at_owner: UnboundedReceiver<Seen>,
    /// What reaches the phone's instance (b).
    at_phone: UnboundedReceiver<Seen>,
    /// a's id for the link.
    owner_link: LinkId,
    /// b's id for the link.
    phone_link: LinkId,
}

/// Registers phone `conn_id` at b with owner a, a answering as the relay will.
async fn establish(a: &mut Instance, b: &Instance, conn_id: &str) -> Established {
    let (phone_sink, at_phone) = recorder();
    establish_with(a, b, conn_id, phone_sink, at_phone).await
}

/// [`establish`] with this sink at the phone's instance.
async fn establish_with(
    a: &mut Instance,
    b: &Instance,
    conn_id: &str,
    phone_sink: Arc<dyn Inbound>,
    at_phone: UnboundedReceiver<Seen>,
) -> Established {
    let owner = a.liveness.owner().expect("a holds its lease");
    let (owner_sink, at_owner) = recorder();
    let register = b.link.register(&owner, "srv", conn_id, phone_sink);
    let serve = async {
        let incoming = next_request(a).await;
        let Request::Register {
            from,
            link,
            conn_id: asked,
            server_id,
        } = incoming.request.clone()
        else {
            panic!("a register request");
        };
        assert_eq!((asked.as_str(), server_id.as_str()), (conn_id, "srv"));
        let (accepting, down) = a.link.accept(&from, link).expect("a well-formed request");
        let owner_link = accepting.id();
        accepting.activate(owner_sink).expect("not abandoned");
        incoming
            .respond(Reply::Registered { link: owner_link })
            .await;
        (down, owner_link, link)
    };
    let (registration, (down, owner_link, phone_link)) = tokio::join!(register, serve);
    let Ok(Registration::Registered(up)) = registration else {
        panic!("registered");
    };
    Established {
        up,
        down,
        at_owner,
        at_phone,
        owner_link,
        phone_link,
    }
}

fn text(frame: &str) -> Bytes {
    Bytes::from(frame.to_owned())
}

/// Publishes a hand-made link message to `to`'s link subject.
async fn inject(from: &Instance, to: &str, message: &LinkMessage<'_>, frame: &[u8]) {
    let client = from.nats.client();
    client
        .publish(wire::link_subject(to), wire::encode_link(message, frame))
        .await
        .unwrap();
    client.flush().await.unwrap();
}

#[tokio::test]
async fn a_subscription_is_in_place_at_the_server_once_sync_returns() {
    let Some(server) = NatsServer::start("a_subscription_is_in_place_once_sync_returns") else {
        return;
    };
    let a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    // Each round: b subscribes and syncs, then a publishes once, from its own connection. A
    // flush alone would let a's message overtake b's subscription now and then (and be lost).
    for round in 0..100 {
        let subject = format!("sync-test.{round}");
        let mut subscription = b.nats.client().subscribe(subject.clone()).await.unwrap();
        b.nats.sync(PATIENCE).await.expect("the server confirms");
        a.nats.client().publish(subject, "x".into()).await.unwrap();
        let got = tokio::time::timeout(PATIENCE, futures_util::StreamExt::next(&mut subscription));
        assert!(got.await.is_ok(), "round {round}: the message was lost");
    }
}

#[tokio::test]
async fn a_link_carries_1000_frames_each_way_complete_and_in_order() {
    let Some(server) = NatsServer::start("a_link_carries_1000_frames_each_way") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let mut link = establish(&mut a, &b, "client-srv-00000001").await;
    let up = async {
        for n in 0..1000 {
            link.up
                .frame(&text(&format!(r#"{{"up":{n}}}"#)))
                .await
                .unwrap();
        }
    };
    let down = async {
        for n in 0..1000 {
            link.down
                .frame(&text(&format!(r#"{{"down":{n}}}"#)))
                .await
                .unwrap();
        }
    };
    tokio::join!(up, down);
    for n in 0..1000 {
        assert_eq!(
            next(&mut link.at_owner).await,
            Seen::Frame(format!(r#"{{"up":{n}}}"#))
        );
        assert_eq!(
            next(&mut link.at_phone).await,
            Seen::Frame(format!(r#"{{"down":{n}}}"#))
        );
    }
    // The phone leaves with 1000: the owner is told, after every frame.
    link.up.end(1000, "");
    assert_eq!(
        next(&mut link.at_owner).await,
        Seen::Ended(1000, String::new())
    );
    assert!(
        eventually(PATIENCE, || a.link.open_links() == 0
            && b.link.open_links() == 0)
        .await
    );
    assert_eq!(a.metrics.link_losses() + b.metrics.link_losses(), 0);
}

#[tokio::test]
async fn a_gap_in_the_up_stream_loses_the_link_at_both_ends_and_is_counted() {
    let Some(server) = NatsServer::start("a_gap_in_the_up_stream") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let mut link = establish(&mut a, &b, "client-srv-00000001").await;
    for n in 1..=2 {
        link.up.try_frame(&text(&n.to_string())).unwrap();
        assert_eq!(next(&mut link.at_owner).await, Seen::Frame(n.to_string()));
    }
    // Frame 3 is "lost": 4 arrives.
    let gap = LinkMessage::Frame {
        link: link.owner_link,
        seq: 4,
    };
    inject(&b, "relay-a", &gap, b"4").await;
    assert_eq!(next(&mut link.at_owner).await, Seen::Lost);
    assert_eq!(
        next(&mut link.at_phone).await,
        Seen::Lost,
        "the other end is told"
    );
    // Nothing more is delivered or accepted on either end.
    assert_eq!(link.up.try_frame(&text("5")), Err(SendError::Closed));
    assert_eq!(link.down.try_frame(&text("6")), Err(SendError::Closed));
    assert!(link.at_owner.try_recv().is_err());
    assert_eq!((a.metrics.link_losses(), b.metrics.link_losses()), (1, 1));
    assert_eq!((a.link.open_links(), b.link.open_links()), (0, 0));
}

#[tokio::test]
async fn a_gap_in_the_down_stream_closes_the_phone_link_lost() {
    let Some(server) = NatsServer::start("a_gap_in_the_down_stream") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let mut link = establish(&mut a, &b, "client-srv-00000001").await;
    let metrics = a.metrics.clone();
    let phone = RemotePhone::new("client-srv-00000001".into(), link.down, metrics);
    phone.send(text("1")).unwrap();
    assert_eq!(next(&mut link.at_phone).await, Seen::Frame("1".into()));
    // A repeated number is as wrong as a skipped one.
    let repeat = LinkMessage::Frame {
        link: link.phone_link,
        seq: 1,
    };
    inject(&a, "relay-b", &repeat, b"1").await;
    assert_eq!(next(&mut link.at_phone).await, Seen::Lost);
    assert_eq!(next(&mut link.at_owner).await, Seen::Lost);
    assert_eq!(phone.send(text("2")), Err(SendError::Closed));
    assert!(!phone.is_open());
    assert_eq!((a.metrics.link_losses(), b.metrics.link_losses()), (1, 1));
}

#[tokio::test]
async fn a_frame_that_is_not_utf8_loses_the_link() {
    let Some(server) = NatsServer::start("a_frame_that_is_not_utf8") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let mut link = establish(&mut a, &b, "client-srv-00000001").await;
    let bad = LinkMessage::Frame {
        link: link.owner_link,
        seq: 1,
    };
    inject(&b, "relay-a", &bad, b"\xff").await;
    assert_eq!(next(&mut link.at_owner).await, Seen::Lost);
    assert_eq!(next(&mut link.at_phone).await, Seen::Lost);
    drop(link.up);
}

#[tokio::test]
async fn requests_time_out_or_find_no_responders_and_both_are_answers() {
    let Some(server) = NatsServer::start("requests_time_out_or_find_no_responders") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let probe = Request::Probe {
        server_id: "srv".into(),
        revision: 1,
    };
    let ghost = InstanceId::new("relay-ghost").unwrap();
    let bounded = |call| tokio::time::timeout(PATIENCE, call);
    assert_eq!(
        bounded(b.link.request(&ghost, &probe)).await.unwrap(),
        Err(RequestError::NoResponders)
    );
    // a receives the probe but never answers it.
    let a_id = a.liveness.instance().clone();
    let asking = b.link.request(&a_id, &probe);
    let (answer, held) = tokio::join!(bounded(asking), next_request(&mut a));
    assert_eq!(answer.unwrap(), Err(RequestError::TimedOut));
    assert_eq!(held.request, probe);
    drop(held);
    // And an answered one.
    let asking = b.link.request(&a_id, &probe);
    let answering = async { next_request(&mut a).await.respond(Reply::Alive).await };
    let (answer, ()) = tokio::join!(bounded(asking), answering);
    assert_eq!(answer.unwrap(), Ok(Reply::Alive));
    let counted = |outcome| b.metrics.requests(RequestKind::Probe, outcome);
    assert_eq!(
        [
            RequestOutcome::Answered,
            RequestOutcome::TimedOut,
            RequestOutcome::NoResponders
        ]
        .map(counted),
        [1, 1, 1]
    );
}

#[tokio::test]
async fn any_server_id_and_conn_id_cross_to_the_owner_intact() {
    let Some(server) = NatsServer::start("any_server_id_and_conn_id_cross_intact") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let owner = a.liveness.owner().unwrap();
    for id in [
        "a.b",
        "*",
        ">",
        "a b\r\nPUB x 1",
        "relay.relay-a.rpc",
        "é\u{85}\u{0}",
        &"x".repeat(256),
    ] {
        let conn_id = format!("client-{id}-0000000a");
        let (sink, _seen) = recorder();
        let register = b.link.register(&owner, id, &conn_id, sink);
        let check = async {
            let incoming = next_request(&mut a).await;
            let Request::Register {
                server_id,
                conn_id: asked,
                ..
            } = &incoming.request
            else {
                panic!("a register request");
            };
            assert_eq!((server_id.as_str(), asked.as_str()), (id, conn_id.as_str()));
            incoming.respond(Reply::Refused { code: 4404 }).await;
        };
        let (registration, ()) = tokio::join!(register, check);
        assert!(
            matches!(registration, Ok(Registration::Refused(4404))),
            "{id:?}"
        );
    }
}

#[tokio::test]
async fn a_refused_registration_is_an_answer_and_leaves_no_link() {
    let Some(server) = NatsServer::start("a_refused_registration") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let owner = a.liveness.owner().unwrap();
    let (sink, mut seen) = recorder();
    let register = b.link.register(&owner, "srv", "client-srv-00000001", sink);
    // The owner does what the relay does: accept, try the registry (full: 4429), refuse.
    let refuse = async {
        let incoming = next_request(&mut a).await;
        let Request::Register { from, link, .. } = incoming.request.clone() else {
            panic!()
        };
        let (accepting, down) = a.link.accept(&from, link).unwrap();
        drop((accepting, down));
        incoming.respond(Reply::Refused { code: 4429 }).await;
    };
    let (registration, ()) = tokio::join!(register, refuse);
    assert!(matches!(registration, Ok(Registration::Refused(4429))));
    assert_eq!((a.link.open_links(), b.link.open_links()), (0, 0));
    // The refused phone is told nothing over the link (it is closed 4429 by its relay, and must
    // not see a 1011 first): anything a published before this later frame arrived before it.
    let mut later = establish(&mut a, &b, "client-srv-00000002").await;
    later.down.try_frame(&text("later")).unwrap();
    assert_eq!(next(&mut later.at_phone).await, Seen::Frame("later".into()));
    assert!(
        seen.try_recv().is_err(),
        "the refused phone's sink was told something"
    );
    drop(later.up);
}

/// Registers with an owner that answers only after the asker's timeout; the owner activates
/// `before_reply` or after. Returns what the owner's sink saw, or `None` if activation refused.
async fn late_registration(activate_early: bool) {
    let Some(server) = NatsServer::start("a_registration_answered_too_late") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let owner = a.liveness.owner().unwrap();
    let (phone_sink, _at_phone) = recorder();
    let register = b
        .link
        .register(&owner, "srv", "client-srv-00000001", phone_sink);
    let (owner_sink, mut at_owner) = recorder();
    let slow_owner = async {
        let incoming = next_request(&mut a).await;
        let Request::Register { from, link, .. } = incoming.request.clone() else {
            panic!()
        };
        let (accepting, down) = a.link.accept(&from, link).unwrap();
        let id = accepting.id();
        if activate_early {
            accepting
                .activate(owner_sink)
                .expect("activated before the asker gave up");
            tokio::time::sleep(Duration::from_millis(1500)).await;
            incoming.respond(Reply::Registered { link: id }).await;
            assert_eq!(
                next(&mut at_owner).await,
                Seen::Lost,
                "undone when the asker gave up"
            );
        } else {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let activated = accepting.activate(owner_sink as Arc<Recorder>);
            assert_eq!(
                activated,
                Err(RequestError::TimedOut),
                "refused: the asker gave up"
            );
        }
        drop(down);
    };
    let (registration, ()) = tokio::join!(register, slow_owner);
    assert!(matches!(registration, Err(RequestError::TimedOut)));
    assert!(
        eventually(PATIENCE, || a.link.open_links() == 0
            && b.link.open_links() == 0)
        .await
    );
}

#[tokio::test]
async fn a_registration_answered_too_late_is_undone_at_the_owner() {
    late_registration(true).await;
}

#[tokio::test]
async fn a_registration_made_after_the_asker_gave_up_is_refused() {
    late_registration(false).await;
}

#[tokio::test]
async fn a_registration_whose_asker_was_cancelled_is_undone_at_the_owner() {
    let Some(server) = NatsServer::start("a_registration_whose_asker_was_cancelled") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let owner = a.liveness.owner().unwrap();
    let (phone_sink, _at_phone) = recorder();
    let (owner_sink, mut at_owner) = recorder();
    // The phone's task is cancelled (say, the relay shuts down) while the request is out.
    let register = b
        .link
        .register(&owner, "srv", "client-srv-00000001", phone_sink);
    let incoming = tokio::select! {
        _ = register => panic!("nobody answered yet"),
        incoming = next_request(&mut a) => incoming,
    };
    assert_eq!(
        b.link.open_links(),
        0,
        "the cancelled registration left nothing at b"
    );
    let Request::Register { from, link, .. } = incoming.request.clone() else {
        panic!()
    };
    let (accepting, down) = a.link.accept(&from, link).unwrap();
    let id = accepting.id();
    match accepting.activate(owner_sink) {
        // Activated before the abandon arrived: the abandon loses the link.
        Ok(()) => assert_eq!(next(&mut at_owner).await, Seen::Lost),
        Err(refused) => assert_eq!(refused, RequestError::TimedOut),
    }
    incoming.respond(Reply::Registered { link: id }).await;
    assert!(eventually(PATIENCE, || a.link.open_links() == 0).await);
    drop(down);
}

#[tokio::test]
async fn a_vanished_peer_loses_its_links_within_the_lease_plus_one_refresh() {
    let Some(server) = NatsServer::start("a_vanished_peer_loses_its_links") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    // b reaches NATS through a forwarder that can be cut: once cut, b says nothing more, as a
    // crashed or partitioned instance (and keeps its connection open, so nothing is noticed
    // before its lease expires).
    let target = server.url().trim_start_matches("nats://").parse().unwrap();
    let partition = Partition::start(target).await;
    let quiet = ConnectSettings {
        ping_interval: Duration::from_secs(60),
        ..ConnectSettings::default()
    };
    let b = instance_with(
        &partition.url(),
        "relay-b",
        TEST_LEASE,
        quiet,
        LinkSettings::default(),
    )
    .await;
    let mut link = establish(&mut a, &b, "client-srv-00000001").await;
    partition.cut();
    let timing = a.liveness.timing();
    let bound = timing.lease + timing.refresh + Duration::from_millis(500);
    let seen = tokio::time::timeout(bound, link.at_owner.recv()).await;
    assert_eq!(seen.expect("told within the bound"), Some(Seen::Lost));
    assert_eq!(a.link.open_links(), 0);
    assert_eq!(a.metrics.link_losses(), 1);
    assert_eq!(link.down.try_frame(&text("late")), Err(SendError::Closed));
    drop(link.up);
}

#[tokio::test]
async fn dropping_an_outbound_without_ending_it_loses_the_link() {
    let Some(server) = NatsServer::start("dropping_an_outbound_without_ending_it") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let mut link = establish(&mut a, &b, "client-srv-00000001").await;
    drop(link.up); // e.g. the phone's task panicked
    assert_eq!(next(&mut link.at_owner).await, Seen::Lost);
    assert_eq!(next(&mut link.at_phone).await, Seen::Lost);
}

/// A sink that blocks once, on its first frame — what a sink must never do; here it makes b's
/// subscription overflow.
struct Stalling {
    inner: Arc<Recorder>,
    stalled: AtomicBool,
}

impl Inbound for Stalling {
    fn frame(&self, frame: Bytes) {
        if !self.stalled.swap(true, Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(700));
        }
        self.inner.frame(frame);
    }
    fn ended(&self, code: u16, reason: &str) {
        self.inner.ended(code, reason);
    }
    fn lost(&self) {
        self.inner.lost();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_slow_consumer_loses_every_link_instead_of_dropping_a_frame() {
    let Some(server) = NatsServer::start("a_slow_consumer_loses_every_link") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    let tiny = ConnectSettings {
        subscription_capacity: 8,
        ..ConnectSettings::default()
    };
    let b = instance_with(
        &server.url(),
        "relay-b",
        TEST_LEASE,
        tiny,
        LinkSettings::default(),
    )
    .await;
    let (recorder, at_phone) = recorder();
    let stalling = Arc::new(Stalling {
        inner: recorder,
        stalled: AtomicBool::new(false),
    });
    let mut link = establish_with(&mut a, &b, "client-srv-00000001", stalling, at_phone).await;
    let mut other = establish(&mut a, &b, "client-srv-00000002").await;
    // b stalls on the first frame while 200 more arrive: far more than its buffer of 8. (The
    // loss may reach a before it has sent them all: then the link refuses the rest.)
    for n in 0..=200 {
        if link.down.frame(&text(&n.to_string())).await == Err(SendError::Closed) {
            break;
        }
    }
    // What b delivered is a prefix, in order, then the loss: never a gap.
    let mut expected = 0;
    loop {
        match next(&mut link.at_phone).await {
            Seen::Frame(frame) => {
                assert_eq!(frame, expected.to_string());
                expected += 1;
            }
            Seen::Lost => break,
            ended => panic!("{ended:?}"),
        }
    }
    assert!(
        expected <= 200,
        "all {expected} frames arrived: no overflow happened"
    );
    // Every link of b is lost, not only the stalled one, and both ends know.
    assert_eq!(next(&mut other.at_phone).await, Seen::Lost);
    assert_eq!(next(&mut link.at_owner).await, Seen::Lost);
    assert_eq!(next(&mut other.at_owner).await, Seen::Lost);
    assert!(b.metrics.link_losses() >= 2);
    drop((link.up, other.up));
}

#[tokio::test]
async fn a_remote_phone_is_a_registry_conn_and_its_eviction_closes_it_over_the_link() {
    let Some(server) = NatsServer::start("a_remote_phone_is_a_registry_conn") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let mut link = establish(&mut a, &b, "client-srv-00000001").await;

    // The owner's registry holds local and remote connections alike.
    enum Endpoint {
        Local(String),
        Remote(RemotePhone),
    }
    impl Conn for Endpoint {
        fn conn_id(&self) -> &str {
            match self {
                Endpoint::Local(id) => id,
                Endpoint::Remote(phone) => phone.conn_id(),
            }
        }
        fn close(&self, reason: relay_registry::CloseReason) {
            if let Endpoint::Remote(phone) = self {
                phone.close(reason.into());
            }
        }
    }
    impl Endpoint {
        fn send(&self, frame: Bytes) -> Result<(), SendError> {
            match self {
                Endpoint::Local(_) => Ok(()),
                Endpoint::Remote(phone) => phone.send(frame),
            }
        }
    }
    let registry: Registry<Endpoint> = Registry::new();
    let binary = Arc::new(Endpoint::Local("server-srv-00000001".into()));
    let claim = registry.claim_server("srv", binary).unwrap();
    let remote = RemotePhone::new("client-srv-00000001".into(), link.down, a.metrics.clone());
    let ticket = registry
        .register_phone("srv", Arc::new(Endpoint::Remote(remote)))
        .unwrap();
    assert_eq!(a.metrics.remote_phones(), 1);

    // The binary addresses the phone by conn-id; the frame crosses to b.
    let phone = claim.phone("client-srv-00000001").expect("registered");
    phone.send(text(r#"{"hello":"phone"}"#)).unwrap();
    drop(phone);
    assert_eq!(
        next(&mut link.at_phone).await,
        Seen::Frame(r#"{"hello":"phone"}"#.into())
    );

    // The binary releases the id: the registry evicts the phone, the close crosses to b.
    claim.release();
    let Seen::Ended(code, reason) = next(&mut link.at_phone).await else {
        panic!("ended");
    };
    assert_eq!(
        close_from_wire(code, &reason),
        CloseReason::Registry(relay_registry::CloseReason::Released)
    );
    assert!(!ticket.is_registered());
    drop(ticket);
    assert_eq!(a.metrics.remote_phones(), 0);
    // b's end is over too: the phone's late frames go nowhere.
    link.up.end(1001, "");
    assert!(
        eventually(PATIENCE, || a.link.open_links() == 0
            && b.link.open_links() == 0)
        .await
    );
    assert!(link.at_owner.try_recv().is_err());
}

#[tokio::test]
async fn a_remote_phone_over_its_bound_is_closed_backlog_full() {
    let Some(server) = NatsServer::start("a_remote_phone_over_its_bound") else {
        return;
    };
    let small = LinkSettings {
        outbox_bytes: 1024,
        ..LinkSettings::default()
    };
    let mut a = instance_with(
        &server.url(),
        "relay-a",
        TEST_LEASE,
        ConnectSettings::default(),
        small,
    )
    .await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let mut link = establish(&mut a, &b, "client-srv-00000001").await;
    let phone = RemotePhone::new("client-srv-00000001".into(), link.down, a.metrics.clone());
    let frame = "x".repeat(400);
    // This test's runtime has one thread: the publisher cannot drain between these sends.
    // Each frame costs 400 + 64 bytes: two fit in 1024, the third does not.
    let sent: Vec<_> = (0..4)
        .map(|_| phone.send(text(&format!("\"{frame}\""))))
        .collect();
    assert_eq!(
        sent,
        [Ok(()), Ok(()), Err(SendError::Full), Err(SendError::Closed)]
    );
    for _ in 0..2 {
        assert!(matches!(next(&mut link.at_phone).await, Seen::Frame(_)));
    }
    let Seen::Ended(code, reason) = next(&mut link.at_phone).await else {
        panic!("closed");
    };
    assert_eq!(close_from_wire(code, &reason), CloseReason::BacklogFull);
    drop(link.up);
}

#[tokio::test]
async fn nats_restarting_loses_every_link_then_instances_reconnect_with_nothing_half_registered() {
    let Some(mut server) = NatsServer::start("nats_restarting_loses_every_link") else {
        return;
    };
    let mut a = instance(&server, "relay-a", TEST_LEASE).await;
    let b = instance(&server, "relay-b", TEST_LEASE).await;
    let mut first = establish(&mut a, &b, "client-srv-00000001").await;
    let mut second = establish(&mut a, &b, "client-srv-00000002").await;
    let remote = RemotePhone::new("client-srv-00000001".into(), first.down, a.metrics.clone());
    assert_eq!(a.metrics.remote_phones(), 1);

    server.stop();
    // Whatever was addressed to either instance meanwhile may be gone: every link is lost, at
    // both ends, without waiting for the restart.
    for seen in [
        &mut first.at_owner,
        &mut first.at_phone,
        &mut second.at_owner,
        &mut second.at_phone,
    ] {
        assert_eq!(next(seen).await, Seen::Lost);
    }
    assert_eq!((a.link.open_links(), b.link.open_links()), (0, 0));
    assert!(!remote.is_open());
    drop(remote);
    assert_eq!(a.metrics.remote_phones(), 0);

    server.start_again();
    assert!(eventually(PATIENCE, || a.nats.is_connected() && b.nats.is_connected()).await);
    assert!(
        eventually(PATIENCE, || a.liveness.holds_lease()
            && b.liveness.holds_lease())
        .await
    );
    // Once a's subscriptions are back at the server (the client renews them on its own after
    // reconnecting), a new phone registers and talks as before.
    let a_id = a.liveness.instance().clone();
    let probe = Request::Probe {
        server_id: "srv".into(),
        revision: 1,
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let ask = b.link.request(&a_id, &probe);
        let answer = async {
            let waiting = tokio::time::timeout(Duration::from_secs(1), a.incoming.recv());
            if let Ok(Some(incoming)) = waiting.await {
                incoming.respond(Reply::Released).await;
            }
        };
        if tokio::join!(ask, answer).0.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a answers again after the restart"
        );
    }
    let mut again = establish(&mut a, &b, "client-srv-00000003").await;
    again.up.frame(&text("up")).await.unwrap();
    again.down.frame(&text("down")).await.unwrap();
    assert_eq!(next(&mut again.at_owner).await, Seen::Frame("up".into()));
    assert_eq!(next(&mut again.at_phone).await, Seen::Frame("down".into()));
    assert_eq!((a.link.open_links(), b.link.open_links()), (1, 1));
    drop((first.up, second.up, second.down));
}
