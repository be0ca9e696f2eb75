//! One accepted TCP connection: read the request head within the header timeout, answer
//! `/healthz` or a refusal, or claim/register and upgrade to a WebSocket handed to the binary's or
//! phone's task.

use super::conn::WsConn;
use super::http::{self, HeadError, Route};
use super::ids::{self, Side};
use super::stream::Tracked;
use super::{Hub, binary, health, phone, stopping};
use relay_registry::{Conn, PhoneTicket, RegistryError, ServerClaim};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::info;

/// One TCP connection: read the request head, answer it or upgrade, run the WebSocket.
pub async fn connection(hub: Arc<Hub>, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut shutdown = hub.shutdown.clone();
    let head = tokio::select! {
        head = tokio::time::timeout(hub.config.header_timeout, http::read_head(&mut stream)) => head,
        _ = stopping(&mut shutdown) => return,
    };
    let plain = "text/plain; charset=utf-8";
    let head = match head {
        Ok(Ok(head)) => head,
        Ok(Err(HeadError::Io)) => return,
        Ok(Err(HeadError::Malformed)) => {
            let _ = http::respond(&mut stream, "400 Bad Request", plain, "", "bad request").await;
            return;
        }
        Ok(Err(HeadError::TooLarge)) => {
            let status = "431 Request Header Fields Too Large";
            let _ = http::respond(&mut stream, status, plain, "", "request head too large").await;
            return;
        }
        Err(_elapsed) => {
            let _ = http::respond(&mut stream, "408 Request Timeout", plain, "", "too slow").await;
            return;
        }
    };
    match http::route(&head, hub.registry.config().max_server_id_len()) {
        Err(rejection) => {
            info!(%peer, status = rejection.status, "request refused before upgrade");
            let _ = http::respond(&mut stream, rejection.status, plain, "", rejection.body).await;
        }
        Ok(Route::Health) => {
            let body = health(hub.registry.counts(), hub.started);
            let json = "application/json";
            let _ = http::respond(
                &mut stream,
                "200 OK",
                json,
                "Cache-Control: no-store\r\n",
                &body,
            )
            .await;
        }
        Ok(Route::Upgrade {
            side,
            server_id,
            accept,
        }) => {
            // Claim or register first, so that once a client sees its `101`, its claim (or
            // registration) is in place; a refusal is told after the upgrade, as a close code.
            let conn_id = ids::conn_id(side, &server_id);
            let limit = match side {
                Side::Binary => hub.config.binary_outbox,
                Side::Phone => hub.config.phone_outbox,
            };
            let conn = Arc::new(WsConn::new(conn_id, side, limit));
            info!(conn_id = %conn.conn_id(), %peer, "connect");
            let joined = match side {
                Side::Binary => Joined::Binary(binary::claim(&hub, &server_id, &conn)),
                Side::Phone => Joined::Phone(hub.registry.register_phone(&server_id, conn.clone())),
            };
            if http::switch_protocols(&mut stream, &accept).await.is_err() {
                return; // dropping `joined` undoes the claim or registration
            }
            let (tracked, arrivals) = Tracked::new(stream);
            let ws_config = WebSocketConfig::default()
                .max_message_size(Some(hub.config.max_frame))
                .max_frame_size(Some(hub.config.max_frame));
            let ws = WebSocketStream::from_partially_read(
                tracked,
                head.rest,
                Role::Server,
                Some(ws_config),
            )
            .await;
            match joined {
                Joined::Binary(claim) => {
                    binary::run(hub, ws, arrivals, server_id, conn, claim).await
                }
                Joined::Phone(ticket) => phone::run(hub, ws, arrivals, conn, ticket).await,
            }
        }
    }
}

/// A connection's first registry operation, done before its upgrade is answered.
enum Joined {
    Binary(Result<ServerClaim<WsConn>, RegistryError>),
    Phone(Result<PhoneTicket<WsConn>, RegistryError>),
}
