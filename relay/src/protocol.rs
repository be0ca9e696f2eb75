//! The protocol as code: connection ids (`conn_ids`), the binary's envelope and the phone
//! wrapper (`envelope`), and the checks every phone frame passes (`frame_check`).

pub(crate) mod conn_ids;
pub(crate) mod envelope;
pub(crate) mod frame_check;
