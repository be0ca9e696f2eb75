//! The protocol as code: connection ids (`conn_ids`), the binary's envelope and the phone
//! wrapper (`envelope`), and the checks every phone frame passes (`frame_check`).

pub mod conn_ids;
pub mod envelope;
pub mod frame_check;
