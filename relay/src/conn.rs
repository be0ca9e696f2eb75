//! One WebSocket: its task (`session`), what it still has to write (`outbox`, behind `local`'s
//! shared half), the registry's connection type (`endpoint`), and its read side: one socket read
//! for many of tungstenite's small ones (`read_ahead`, handing out what it `held`) under the
//! slow-message timer (`message_timer`), both with their writes passed through by
//! `write_through`.

pub(crate) mod endpoint;
pub(crate) mod held;
pub(crate) mod local;
pub(crate) mod message_timer;
pub(crate) mod outbox;
pub(crate) mod read_ahead;
pub(crate) mod session;
pub(crate) mod write_through;
