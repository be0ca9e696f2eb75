//! One WebSocket: its task (`session`), what it still has to write (`outbox`, behind `local`'s
//! shared half), the registry's connection type (`endpoint`), and the slow-message timer on its
//! read side (`message_timer`).

pub mod endpoint;
pub mod local;
pub mod message_timer;
pub mod outbox;
pub mod session;
