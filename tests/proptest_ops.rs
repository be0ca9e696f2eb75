//! The proptest twin of the `ops` fuzz target: the same `Op`, the same model, the same driver, in
//! plain `cargo test` on stable. Failures are persisted to `proptest-regressions/proptest_ops.txt`
//! (committed) and replayed first on every run.

use relay_registry_model as model;

use model::driver::run_scenario;
use model::op::{DropOrder, Id, Incumbent, Name, Op, Pick, Scenario, TrapPick};
use model::spec::Grace;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// `default` cases, or fewer if `PROPTEST_CASES` says so.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(default, |n: u32| n.min(default))
}

fn pick() -> impl Strategy<Value = Pick> {
    any::<u8>().prop_map(Pick)
}

fn id() -> impl Strategy<Value = Id> {
    // Mostly the first three ids, so they collide; sometimes any of the eight (invalid ones too).
    prop_oneof![4 => (0u8..3).prop_map(Id), 1 => any::<u8>().prop_map(Id)]
}

fn name() -> impl Strategy<Value = Name> {
    any::<u8>().prop_map(Name)
}

fn trap() -> impl Strategy<Value = TrapPick> {
    // Mostly phones that never panic; some that panic in `close` (0) or in `Drop` (1).
    prop_oneof![6 => Just(TrapPick::NONE), 1 => Just(TrapPick(0)), 1 => Just(TrapPick(1))]
}

fn grace() -> impl Strategy<Value = Grace> {
    prop_oneof![4 => (0u8..20).prop_map(Grace::Ticks), 1 => Just(Grace::Max)]
}

fn incumbent() -> impl Strategy<Value = Incumbent> {
    prop_oneof![
        Just(Incumbent::Current),
        any::<u8>().prop_map(Incumbent::Stale),
        Just(Incumbent::Nobody),
    ]
}

fn drop_order() -> impl Strategy<Value = DropOrder> {
    prop_oneof![
        Just(DropOrder::OldestFirst),
        Just(DropOrder::NewestFirst),
        Just(DropOrder::TicketsFirst),
        Just(DropOrder::ClaimsFirst),
        Just(DropOrder::Interleaved),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => id().prop_map(|id| Op::Claim { id }),
        3 => (id(), incumbent()).prop_map(|(id, incumbent)| Op::Takeover { id, incumbent }),
        2 => pick().prop_map(|claim| Op::Release { claim }),
        2 => pick().prop_map(|claim| Op::DropClaim { claim }),
        3 => (pick(), grace()).prop_map(|(claim, grace)| Op::ReleaseAfter { claim, grace }),
        2 => (0u8..20).prop_map(|ticks| Op::Advance { ticks }),
        2 => Just(Op::ExpireDue),
        6 => (id(), name(), trap()).prop_map(|(id, name, trap)| Op::Register { id, name, trap }),
        2 => pick().prop_map(|ticket| Op::Unregister { ticket }),
        2 => pick().prop_map(|ticket| Op::DropTicket { ticket }),
        1 => id().prop_map(|id| Op::BinaryFor { id }),
        1 => (id(), name()).prop_map(|(id, name)| Op::PhoneFor { id, name }),
        1 => id().prop_map(|id| Op::PhonesFor { id }),
        1 => (pick(), name()).prop_map(|(claim, name)| Op::ClaimPhone { claim, name }),
        1 => pick().prop_map(|claim| Op::ClaimPhones { claim }),
        1 => Just(Op::Snapshot),
        1 => Just(Op::Counts),
        1 => Just(Op::NextDeadline),
        1 => drop_order().prop_map(|order| Op::DropAll { order }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        // `PROPTEST_CASES` lowers it (the mutation run does); 512 otherwise.
        cases: cases(512),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/proptest_ops.txt",
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_op_sequences_match_the_model(
        cap in 0u8..4,
        ops in proptest::collection::vec(op(), 0..120),
    ) {
        run_scenario(&Scenario { cap, ops });
    }
}

/// The op language's panicking phones reach the registry, and the model predicts each panic: a
/// release, a reclaim and a takeover whose evicted phone panics in `close` (each call panics), an
/// expiry whose phone does (the report counts it), and phones whose `Drop` panics when the
/// registry refuses them or when their ticket is dropped.
#[test]
fn panicking_phones_are_predicted_by_the_model() {
    use Op::*;
    let (a, b) = (Id(0), Id(1));
    let close = TrapPick(0);
    let drop = TrapPick(1);
    let newest = Pick(0);
    let phone = |id, trap| Register {
        id,
        name: Name(0),
        trap,
    };
    let ops = vec![
        // release: panics after closing every phone
        Claim { id: a },
        phone(a, close),
        phone(a, TrapPick::NONE),
        DropClaim { claim: newest },
        // reclaim: panics, and the new claim is released while unwinding
        Claim { id: a },
        phone(a, close),
        ReleaseAfter {
            claim: newest,
            grace: Grace::Ticks(5),
        },
        Claim { id: a },
        // takeover
        Claim { id: b },
        phone(b, close),
        Takeover {
            id: b,
            incumbent: Incumbent::Current,
        },
        // expiry: caught and counted, never propagated
        Claim { id: a },
        phone(a, close),
        ReleaseAfter {
            claim: newest,
            grace: Grace::Ticks(1),
        },
        Advance { ticks: 1 },
        ExpireDue,
        // Drop: a refused phone, then a registered one's ticket
        phone(a, drop),
        Claim { id: a },
        phone(a, drop),
        DropTicket { ticket: newest },
    ];
    let summary = run_scenario(&Scenario { cap: 0, ops });
    // release, reclaim, takeover, refused register, ticket drop (and the final DropAll drops the
    // stale tickets of the Close phones, which do not panic there).
    assert_eq!(summary.panicked, 5, "{summary:?}");
}
