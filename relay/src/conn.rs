//! One WebSocket: its task (`session`), what it still has to write (`outbox`, behind `local`'s
//! shared half), the registry's connection type (`endpoint`), and the slow-message timer on its
//! read side (`message_timer`, its writes passed through by `write_through`).

pub(crate) mod endpoint;
pub(crate) mod local;
pub(crate) mod message_timer;
pub(crate) mod outbox;
pub(crate) mod session;
pub(crate) mod write_through;
