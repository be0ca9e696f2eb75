//! The relay protocol's vocabulary, shared by the relay (`relay-server`) and its cluster building
//! blocks (`relay-cluster`), which carry closes between instances: [`CloseReason`], every close
//! the relay sends with the code and text of `relay/PROTOCOL.md`'s close table (the registry's
//! own closes among them), and [`SendError`], why a connection could not take a frame.
//!
//! It knows no socket, runtime or wire format: the relay maps a [`CloseReason`] to a WebSocket
//! close frame, the cluster's wire to a code and a text.
//!
//! ```
//! use relay_protocol::CloseReason;
//!
//! assert_eq!(CloseReason::HeartbeatTimeout.code(), 1011);
//! assert_eq!(CloseReason::from(relay_registry::CloseReason::Released).code(), 4404);
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod close;
pub mod send_error;

pub use close::CloseReason;
pub use send_error::SendError;
