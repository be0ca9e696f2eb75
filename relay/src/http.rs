//! HTTP: the public listener (`listen`, with the PROXY header in `proxy`), the client IP
//! (`client_ip`), the gates every upgrade passes (`gates`) and the routes (`routes`); and the
//! metrics listener (`scrape`).

pub(crate) mod client_ip;
pub(crate) mod gates;
pub(crate) mod listen;
pub(crate) mod proxy;
pub(crate) mod request_target;
pub(crate) mod routes;
pub(crate) mod scrape;
pub(crate) mod tls;
