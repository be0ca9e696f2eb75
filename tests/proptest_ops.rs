//! The proptest twin of the `ops` fuzz target: the same `Op`, the same model, the same driver, in
//! plain `cargo test` on stable. Failures are persisted to `proptest-regressions/proptest_ops.txt`
//! (committed) and replayed first on every run.

use relay_registry_model as model;

use model::driver::run_scenario;
use model::op::{DropOrder, Id, Incumbent, Name, Op, Pick, Scenario};
use model::spec::Grace;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

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
        6 => (id(), name()).prop_map(|(id, name)| Op::Register { id, name }),
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
        cases: 512,
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
