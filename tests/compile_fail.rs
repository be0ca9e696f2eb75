//! Misuse that must not compile: the guards' ownership rules are enforced by the type system, and
//! a `Reaper` dropped on the spot is a `#[must_use]` error under `#![deny(unused_must_use)]`.
//! Each case has its expected compiler output beside it (`tests/compile_fail/*.stderr`).

#[test]
fn misuse_of_guards_does_not_compile() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/compile_fail/*.rs");
}
