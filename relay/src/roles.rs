//! The two roles of a connection: admission before the `101` (`admission`), then the binary's
//! and the phone's loops (`binary`, `phone`); and the grace windows' expiry (`grace`).

pub(crate) mod admission;
pub(crate) mod binary;
pub(crate) mod grace;
pub(crate) mod phone;
