//! The public routes, as one hyper service: `/healthz`, `/readyz`, and the WebSocket endpoints
//! `/v1/server` and `/v2/server` (binaries), `/v1/client` and `/v2/client` (phones); everything
//! else is 404. The version label means nothing to the relay: both labels of a side are one
//! endpoint, apart from `/v2/client`'s optional `X-Pyrycode-Token`.
//!
//! An upgrade request goes, in order: readiness (503 once shutdown began) → the [gates](crate::http::gates)
//! (429 rate limit, 503 connection cap) → in cluster mode, the cluster (503 while this instance
//! is not connected to NATS or does not hold its lease) → the header checks (400: HTTP/1.1, a WebSocket upgrade,
//! version 13, each required header present, non-empty and UTF-8, a valid server-id) → the
//! pre-upgrade decision ([`admission::admit`]) → `101`, after which the session task takes the
//! upgraded connection. Nothing touches the registry before the checks passed.

use crate::config::ForwardToken;
use crate::conn::message_timer::Tracked;
use crate::conn::read_ahead::ReadAhead;
use crate::conn::session::{Session, ws_config};
use crate::http::client_ip::{self, Origin};
use crate::http::gates::{Permit, Refusal};
use crate::http::tls;
use crate::hub::Hub;
use crate::metrics::{EndpointLabel, Outcome, RefusedReason};
use crate::protocol::conn_ids::Side;
use crate::roles::admission::{self, Joined};
use crate::roles::{binary, phone};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// A response of the public listener.
pub(crate) type Reply = Response<Full<Bytes>>;

/// Answers one request on a connection from `origin`; `fragment`: its request target had a
/// fragment (hyper's parsed URI no longer shows it, see [`request_target`](crate::http::request_target)).
pub(crate) async fn handle(
    hub: Arc<Hub>,
    origin: Origin,
    fragment: bool,
    req: Request<Incoming>,
) -> Result<Reply, Infallible> {
    if fragment {
        let what = "a request target has no fragment";
        hub.metrics.refused(RefusedReason::Malformed);
        let ip = client_ip::client_ip(hub.config.client_ip, origin, req.headers());
        hub.refusals.refused(400, what, ip);
        return Ok(plain(StatusCode::BAD_REQUEST, what));
    }
    if hub
        .tls
        .as_ref()
        .is_some_and(|tls| !tls::host::allowed(tls.names(), &req))
    {
        return Ok(misdirected());
    }
    let side = match req.uri().path() {
        "/healthz" | "/readyz" if req.method() != Method::GET => {
            return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
        }
        "/healthz" => return Ok(health(&hub)),
        "/readyz" => return Ok(ready(&hub)),
        "/v1/server" | "/v2/server" => (Side::Binary, Token::Unused),
        "/v1/client" => (Side::Phone, Token::Required),
        "/v2/client" => (Side::Phone, Token::Optional),
        _ => return Ok(plain(StatusCode::NOT_FOUND, "not found")),
    };
    Ok(upgrade(hub, origin, side, req).await)
}

/// What an endpoint asks of `X-Pyrycode-Token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// Binaries: not read.
    Unused,
    /// `/v1/client`: present, non-empty, UTF-8 (else 400).
    Required,
    /// `/v2/client`: absent or empty means none; present, it must be UTF-8 (else 400).
    Optional,
}

/// `/healthz`: counts, version, uptime; gracing binaries are not connected; no per-id detail.
/// In cluster mode the counts are this instance's own connections, followed by its name and
/// whether it is part of the cluster now (connected, lease held).
fn health(hub: &Hub) -> Reply {
    let counts = hub.own_counts();
    let mut body = json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "connected_binaries": counts.binaries,
        "connected_phones": counts.phones,
        "uptime_seconds": hub.started.elapsed().as_secs(),
    });
    if let (Some(config), Some(fields)) = (hub.cluster.config(), body.as_object_mut()) {
        fields.insert("instance".into(), config.instance.as_str().into());
        fields.insert("cluster".into(), hub.cluster.is_ready().into());
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

/// `/readyz`: 200 while serving, 503 once shutdown began or (cluster mode) while the cluster
/// link is down.
fn ready(hub: &Hub) -> Reply {
    let mut reply = if hub.shutdown.is_draining() {
        plain(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if !hub.cluster.is_ready() {
        plain(StatusCode::SERVICE_UNAVAILABLE, "cluster unavailable")
    } else if hub.tls.as_ref().is_some_and(|tls| !tls.ready()) {
        plain(StatusCode::SERVICE_UNAVAILABLE, "no TLS certificate yet")
    } else {
        plain(StatusCode::OK, "ready")
    };
    reply.headers_mut().remove(header::CONNECTION);
    reply
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    reply
}

/// 421 with an empty body: the request's host is not one of the TLS listener's names.
fn misdirected() -> Reply {
    Response::builder()
        .status(StatusCode::MISDIRECTED_REQUEST)
        .header(header::CONNECTION, "close")
        .body(Full::new(Bytes::new()))
        .expect("a valid response")
}

/// A plain-text response that closes the connection (every refusal is one).
fn plain(status: StatusCode, body: &'static str) -> Reply {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CONNECTION, "close")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid response")
}

/// An upgrade request refused before any upgrade: counted, logged, answered.
fn refuse(hub: &Hub, side: Side, ip: std::net::IpAddr, refusal: Refused) -> Reply {
    let (status, outcome, body) = match refusal {
        Refused::ShuttingDown => (
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::ShuttingDown,
            "shutting down",
        ),
        Refused::Gate(Refusal::OverCapacity) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::OverCapacity,
            "too many connections",
        ),
        Refused::Gate(Refusal::RateLimited(_)) => (
            StatusCode::TOO_MANY_REQUESTS,
            Outcome::RateLimited,
            "too many requests",
        ),
        Refused::Cluster(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Outcome::ClusterUnavailable,
            "cluster unavailable",
        ),
        Refused::BadRequest(body) => (StatusCode::BAD_REQUEST, Outcome::BadRequest, body),
        Refused::BadVersion => (
            StatusCode::BAD_REQUEST,
            Outcome::BadRequest,
            "unsupported Sec-WebSocket-Version: this relay speaks 13",
        ),
    };
    hub.metrics.upgrade(side.into(), outcome);
    hub.refusals.refused(status.as_u16(), body, ip);
    let mut reply = plain(status, body);
    match refusal {
        Refused::Gate(Refusal::RateLimited(wait)) | Refused::Cluster(Some(wait)) => {
            // Whole seconds, rounded up (RFC 9110 `delay-seconds`).
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            reply
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        Refused::BadVersion => {
            reply.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        _ => {}
    }
    reply
}

/// Why an upgrade request was refused before the upgrade.
enum Refused {
    ShuttingDown,
    Gate(Refusal),
    /// Cluster mode: not part of the cluster now, or it could not decide in time (with
    /// `Retry-After` when the decision waits for a silent owner's lease to end).
    Cluster(Option<std::time::Duration>),
    BadRequest(&'static str),
    BadVersion,
}

/// The checked parts of an upgrade request.
struct Checked {
    server_id: String,
    accept: String,
    /// A phone's `X-Pyrycode-Token`, kept only to be forwarded on its first envelope (never
    /// logged, never compared); `None` for binaries, without the header, or with
    /// `--forward-token never`.
    token: Option<String>,
}

async fn upgrade(
    hub: Arc<Hub>,
    origin: Origin,
    (side, token): (Side, Token),
    mut req: Request<Incoming>,
) -> Reply {
    let ip = client_ip::client_ip(hub.config.client_ip, origin, req.headers());
    if hub.shutdown.is_draining() {
        return refuse(&hub, side, ip, Refused::ShuttingDown);
    }
    // The connection's TLS handshake may have paid this upgrade's rate-limit token already.
    let prepaid = req
        .extensions()
        .get::<tls::Prepaid>()
        .is_some_and(tls::Prepaid::take);
    let permit = match hub.gates.admit_prepaid(ip, prepaid) {
        Ok(permit) => permit,
        Err(refusal) => return refuse(&hub, side, ip, Refused::Gate(refusal)),
    };
    if !hub.cluster.is_ready() {
        return refuse(&hub, side, ip, Refused::Cluster(None));
    }
    let mut checked = match check(&hub, side, token, &req) {
        Ok(checked) => checked,
        Err(refused) => return refuse(&hub, side, ip, refused),
    };
    let (conn, joined) = match admission::admit(&hub, side, &checked.server_id).await {
        Ok(admitted) => admitted,
        Err(unavailable) => {
            return refuse(&hub, side, ip, Refused::Cluster(unavailable.retry_after));
        }
    };
    let tag = hub.logs.conn(relay_registry::Conn::conn_id(&*conn));
    tracing::info!(conn = %tag, %ip, "connect");
    tracing::debug!(conn = %tag, server_id = ?checked.server_id, "connect");
    let task_hub = hub.clone();
    // Only the upgrade's handle goes into the task, not the request (its head is dropped here).
    let upgrading = hyper::upgrade::on(&mut req);
    drop(req);
    let accept = std::mem::take(&mut checked.accept);
    let Checked {
        server_id, token, ..
    } = checked;
    // The task's future is `run_session`'s own (no block around it: it would hold the arguments
    // a second time).
    hub.sessions.spawn(run_session(
        task_hub, upgrading, conn, joined, server_id, token, permit,
    ));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::new(Bytes::new()))
        .expect("a valid response")
}

/// The header checks of the protocol and of RFC 6455.
fn check(hub: &Hub, side: Side, token: Token, req: &Request<Incoming>) -> Result<Checked, Refused> {
    if req.method() != Method::GET {
        return Err(Refused::BadRequest("WebSocket upgrades use GET"));
    }
    if req.version() != Version::HTTP_11 {
        return Err(Refused::BadRequest("WebSocket upgrades need HTTP/1.1"));
    }
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err(Refused::BadRequest("not a websocket upgrade"));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refused::BadVersion);
    }
    let server_id = required(req, "x-pyrycode-server")?;
    required(req, "user-agent")?;
    if side == Side::Binary {
        required(req, "x-pyrycode-version")?;
    }
    let token = match token {
        Token::Unused => None,
        Token::Required => Some(required(req, "x-pyrycode-token")?),
        Token::Optional => optional(req, "x-pyrycode-token")?,
    };
    let token = match hub.config.forward_token {
        ForwardToken::FirstFrame => token.map(str::to_owned),
        ForwardToken::Never => None,
    };
    if hub.registry.check_server_id(server_id).is_err() {
        return Err(Refused::BadRequest("invalid server-id"));
    }
    let key = required(req, "sec-websocket-key")?;
    Ok(Checked {
        server_id: server_id.to_owned(),
        accept: derive_accept_key(key.as_bytes()),
        token,
    })
}

/// The value of header `name` if it is present and non-empty once trimmed; `None` if absent or
/// empty; refused if not UTF-8.
fn optional<'r>(
    req: &'r Request<Incoming>,
    name: &'static str,
) -> Result<Option<&'r str>, Refused> {
    match required(req, name) {
        Ok(text) => Ok(Some(text)),
        Err(Refused::BadRequest(body)) if body == missing(name) => Ok(None),
        Err(refused) => Err(refused),
    }
}

/// The value of header `name`: present, UTF-8 and non-empty once trimmed.
fn required<'r>(req: &'r Request<Incoming>, name: &'static str) -> Result<&'r str, Refused> {
    let Some(value) = req.headers().get(name) else {
        return Err(Refused::BadRequest(missing(name)));
    };
    let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
        return Err(Refused::BadRequest(not_utf8(name)));
    };
    match text.trim() {
        "" => Err(Refused::BadRequest(missing(name))),
        text => Ok(text),
    }
}

fn missing(name: &'static str) -> &'static str {
    match name {
        "x-pyrycode-server" => "missing or empty required header: X-Pyrycode-Server",
        "x-pyrycode-version" => "missing or empty required header: X-Pyrycode-Version",
        "x-pyrycode-token" => "missing or empty required header: X-Pyrycode-Token",
        "user-agent" => "missing or empty required header: User-Agent",
        _ => "missing or empty required header: Sec-WebSocket-Key",
    }
}

fn not_utf8(name: &'static str) -> &'static str {
    match name {
        "x-pyrycode-server" => "X-Pyrycode-Server is not valid UTF-8",
        "x-pyrycode-version" => "X-Pyrycode-Version is not valid UTF-8",
        "x-pyrycode-token" => "X-Pyrycode-Token is not valid UTF-8",
        "user-agent" => "User-Agent is not valid UTF-8",
        _ => "Sec-WebSocket-Key is not valid UTF-8",
    }
}

/// After the `101`: takes the upgraded connection and runs the binary's or phone's session.
/// If the upgrade never completes, dropping `joined` undoes the claim or registration.
///
/// The connection task's future for its whole life, so kept small: an `async move` block (an
/// `async fn` would keep its arguments beside their moved copies), and the connection's run is
/// one boxed future made inside an inner block, so that no moved-from local (the `Session`, the
/// upgraded stream) keeps a slot in this future while the run is awaited.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold a second copy of its arguments for the connection's life"
)]
fn run_session(
    hub: Arc<Hub>,
    upgrading: OnUpgrade,
    conn: Arc<crate::conn::endpoint::Endpoint>,
    joined: Joined,
    server_id: String,
    token: Option<String>,
    permit: Permit,
) -> impl Future<Output = ()> + Send {
    async move {
        let run: Pin<Box<dyn Future<Output = ()> + Send>> = {
            let upgraded = match tokio::time::timeout(hub.config.header_timeout, upgrading).await {
                Ok(Ok(upgraded)) => upgraded,
                _ => return,
            };
            let io = Tracked::new(ReadAhead::new(TokioIo::new(upgraded)));
            // Boxed (briefly): its state would otherwise size this task's future for its whole
            // life.
            let ws = Box::pin(WebSocketStream::from_raw_socket(
                io,
                Role::Server,
                Some(ws_config(hub.config.max_frame)),
            ))
            .await;
            let session = Session::new(hub.clone(), conn, ws);
            // Each connection's life is one boxed future: the task's own future (the upgrade's
            // state) stays small, and a phone does not pay for the size of a binary's claim
            // (cluster probes).
            match joined {
                Joined::Binary(claim) => Box::pin(binary::run(hub, session, server_id, claim)),
                Joined::Phone(ticket) => {
                    drop(server_id);
                    Box::pin(phone::run(hub, session, ticket, token))
                }
                Joined::Away(away) => {
                    drop(server_id);
                    Box::pin(phone::run_away(hub, session, away, token))
                }
            }
        };
        run.await;
        drop(permit);
    }
}

impl From<Side> for EndpointLabel {
    fn from(side: Side) -> Self {
        match side {
            Side::Binary => EndpointLabel::Server,
            Side::Phone => EndpointLabel::Client,
        }
    }
}
