//! The HTTP side of the relay, before any upgrade: reading a request head, routing it, checking
//! headers, and writing plain responses (400s, `/healthz`, the 101 that starts a WebSocket).

use super::ids::Side;
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Most header lines accepted.
const MAX_HEADERS: usize = 48;

/// A parsed request head, and whatever bytes came after it.
#[derive(Debug)]
pub struct Head {
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    /// Bytes read past the head (the start of the WebSocket stream, if any).
    pub rest: Vec<u8>,
}

/// Why a request head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The peer closed or the socket failed before a whole head arrived.
    Io,
    /// Not HTTP/1.1, or garbled.
    Malformed,
    /// More than [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines.
    TooLarge,
}

/// Reads one request head from `stream` (the caller bounds it with the header timeout).
pub async fn read_head(stream: &mut TcpStream) -> Result<Head, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 2048];
        let n = stream.read(&mut chunk).await.map_err(|_| HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut lines = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut lines);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let head = Head {
                    method: req.method.unwrap_or_default().to_owned(),
                    path: req.path.unwrap_or_default().to_owned(),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                        .collect(),
                    rest: buf[len..].to_vec(),
                };
                return Ok(head);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return Err(HeadError::TooLarge);
            }
            Err(_) => return Err(HeadError::Malformed),
        }
    }
}

impl Head {
    /// The value of header `name` (lower-case), if present and valid UTF-8, trimmed.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// The value of header `name` if present and non-empty.
    fn required(&self, name: &str) -> Result<&str, Rejection> {
        match self.header(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(Rejection::bad_request("missing or empty required header")),
        }
    }

    /// Whether the comma-separated header `name` contains `token` (case-insensitively).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name).is_some_and(|v| {
            v.split(',')
                .any(|part| part.trim().eq_ignore_ascii_case(token))
        })
    }
}

/// What a request asks for, once its headers passed.
#[derive(Debug)]
pub enum Route {
    /// `GET /healthz`.
    Health,
    /// A WebSocket upgrade on `/v1/server` or `/v1/client`, for `server_id`.
    Upgrade {
        /// Binary or phone.
        side: Side,
        /// The `X-Pyrycode-Server` header.
        server_id: String,
        /// The `Sec-WebSocket-Accept` value to answer with.
        accept: String,
    },
}

/// A request refused before any upgrade: an HTTP status and a short plain-text body.
#[derive(Debug)]
pub struct Rejection {
    /// Status line, e.g. `400 Bad Request`.
    pub status: &'static str,
    /// Plain-text body.
    pub body: &'static str,
}

impl Rejection {
    fn bad_request(body: &'static str) -> Self {
        Rejection {
            status: "400 Bad Request",
            body,
        }
    }
}

/// Routes `head` and checks its headers; `max_id_len` is the registry's server-id limit.
pub fn route(head: &Head, max_id_len: usize) -> Result<Route, Rejection> {
    let path = head.path.split('?').next().unwrap_or_default();
    let side = match path {
        "/healthz" => None,
        "/v1/server" => Some(Side::Binary),
        "/v1/client" => Some(Side::Phone),
        _ => {
            return Err(Rejection {
                status: "404 Not Found",
                body: "not found",
            });
        }
    };
    if head.method != "GET" {
        return Err(Rejection {
            status: "405 Method Not Allowed",
            body: "method not allowed",
        });
    }
    let Some(side) = side else {
        return Ok(Route::Health);
    };
    let server_id = head.required("x-pyrycode-server")?;
    head.required("user-agent")?;
    match side {
        Side::Binary => head.required("x-pyrycode-version")?,
        Side::Phone => head.required("x-pyrycode-token")?,
    };
    if server_id.len() > max_id_len {
        return Err(Rejection::bad_request("invalid server-id"));
    }
    if !head.has_token("connection", "upgrade")
        || !head.has_token("upgrade", "websocket")
        || head.header("sec-websocket-version") != Some("13")
    {
        return Err(Rejection::bad_request("not a websocket upgrade"));
    }
    let key = head.required("sec-websocket-key")?;
    Ok(Route::Upgrade {
        side,
        server_id: server_id.to_owned(),
        accept: derive_accept_key(key.as_bytes()),
    })
}

/// Writes a complete response with `Connection: close` and shuts the write side.
pub async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    extra: &str,
    body: &str,
) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Writes the `101 Switching Protocols` answer to an accepted upgrade.
pub async fn switch_protocols(stream: &mut TcpStream, accept: &str) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    stream.write_all(response.as_bytes()).await
}
