//! HTTP: the public listener (`listen`, with the PROXY header in `proxy`), the client IP
//! (`client_ip`), the gates every upgrade passes (`gates`) and the routes (`routes`); and the
//! metrics listener (`scrape`).

pub mod client_ip;
pub mod gates;
pub mod listen;
pub mod proxy;
pub mod routes;
pub mod scrape;
