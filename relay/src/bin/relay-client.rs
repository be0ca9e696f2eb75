//! A tiny relay client: connects as a binary or a phone, prints every frame it receives, and sends
//! each line typed on stdin. Enough to watch a relay work with two terminals and no other tool.
//!
//! ```text
//! cargo run -p relay-server --bin relay-client -- --as binary --server demo
//! cargo run -p relay-server --bin relay-client -- --as phone --server demo
//! relay-client --url wss://relay.example.com --ca-file ca.pem --as phone --server demo
//! ```
//!
//! A phone sends each line as one frame: as is if it is JSON, else as a JSON string. A binary
//! answers the phone that spoke last: a line becomes `{"conn_id":<that phone>,"frame":<line>}`;
//! `/close CODE` closes that phone; a line starting with `{` is sent as a raw envelope. End stdin
//! (Ctrl-D) to close normally (exit status 0).
//!
//! When the relay refuses the upgrade (an HTTP status) or closes the connection (a close code), the
//! client says so on stderr — the status or code and the relay's reason — and exits at once with a
//! non-zero status: 1 for an HTTP refusal or a network error, 2 for a close by the relay.

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Side {
    /// The desktop daemon that holds the server-id.
    Binary,
    /// A mobile app joining the server-id.
    Phone,
}

/// Connect to a relay as a binary or a phone; print what arrives, send what you type.
#[derive(Debug, Parser)]
#[command(name = "relay-client", version, about, long_about = None)]
struct Args {
    /// Connect as the binary (holds the server-id) or as a phone.
    #[arg(long = "as", value_enum)]
    side: Side,
    /// The server-id (X-Pyrycode-Server).
    #[arg(long)]
    server: String,
    /// The relay's base URL: ws://HOST:PORT, or wss://HOST:PORT for a relay that speaks TLS.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// For wss://: also trust the CA certificates in this PEM file (a private CA, a test CA);
    /// the system's roots are always trusted.
    #[arg(long, value_name = "PEM")]
    ca_file: Option<std::path::PathBuf>,
    /// The phone's token, sent as X-Pyrycode-Token. The relay requires it to be present and
    /// non-empty and does nothing else with it (it is not checked, logged or passed on).
    #[arg(long, default_value = "demo-token")]
    token: String,
    /// The phone's device name (X-Pyrycode-Device-Name).
    #[arg(long)]
    device_name: Option<String>,
}

/// How a session ended.
enum Exit {
    /// We closed it (end of stdin) and the relay answered.
    Done,
    /// The relay refused the upgrade with an HTTP status.
    Refused(String),
    /// The relay closed the connection.
    ClosedByRelay(String),
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    // Exit from here, not by returning: the runtime would otherwise wait for the blocked stdin
    // read (a line the user never types) before the process could end.
    let code = match run(args).await {
        Ok(Exit::Done) => 0,
        Ok(Exit::Refused(why)) => {
            eprintln!("refused by the relay: {why}");
            1
        }
        Ok(Exit::ClosedByRelay(why)) => {
            eprintln!("closed by the relay: {why}");
            2
        }
        Err(error) => {
            eprintln!("error: {error}");
            1
        }
    };
    std::process::exit(code);
}

async fn run(args: Args) -> Result<Exit, WsError> {
    let path = match args.side {
        Side::Binary => "/v1/server",
        Side::Phone => "/v1/client",
    };
    let mut request = format!("{}{path}", args.url.trim_end_matches('/')).into_client_request()?;
    let headers = request.headers_mut();
    let value = |v: &str| HeaderValue::from_str(v).map_err(|e| WsError::HttpFormat(e.into()));
    headers.insert("X-Pyrycode-Server", value(&args.server)?);
    headers.insert(
        "User-Agent",
        value(concat!("relay-client/", env!("CARGO_PKG_VERSION")))?,
    );
    match args.side {
        Side::Binary => {
            headers.insert("X-Pyrycode-Version", value(env!("CARGO_PKG_VERSION"))?);
        }
        Side::Phone => {
            headers.insert("X-Pyrycode-Token", value(&args.token)?);
            if let Some(name) = &args.device_name {
                headers.insert("X-Pyrycode-Device-Name", value(name)?);
            }
        }
    }
    let tls = relay_server::client_tls(args.ca_file.as_deref())
        .map_err(|error| WsError::Io(std::io::Error::other(error.to_string())))?;
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector));
    let ws = match connecting.await {
        Ok((ws, _)) => ws,
        Err(WsError::Http(response)) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let reason = status.canonical_reason().unwrap_or("");
            return Ok(Exit::Refused(format!(
                "HTTP {} {reason}: {}",
                status.as_u16(),
                body.trim()
            )));
        }
        Err(error) => return Err(error),
    };
    eprintln!(
        "upgraded as {} for server-id {:?}; type a line and press Enter to send it (the relay \
         tells a refusal as a close)",
        match args.side {
            Side::Binary => "binary",
            Side::Phone => "phone",
        },
        args.server
    );
    let (mut tx, mut rx) = ws.split();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut last_phone: Option<String> = None;
    loop {
        tokio::select! {
            message = rx.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    println!("< {text}");
                    if args.side == Side::Binary {
                        if let Some(id) = conn_id_of(&text) {
                            last_phone = Some(id);
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let why = match frame {
                        Some(f) => format!("{} {}", u16::from(f.code), f.reason),
                        None => "no close code".to_owned(),
                    };
                    return Ok(Exit::ClosedByRelay(why));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(error),
                None => return Ok(Exit::ClosedByRelay("connection dropped without a close frame".to_owned())),
            },
            line = lines.next_line() => match line {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => match compose(args.side, &line, last_phone.as_deref()) {
                    Ok(frame) => tx.send(Message::Text(frame.into())).await?,
                    Err(hint) => eprintln!("{hint}"),
                },
                Ok(None) | Err(_) => {
                    let bye = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
                    tx.send(Message::Close(Some(bye))).await?;
                    // Wait briefly for the relay's close reply, then stop.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Some(Ok(_)) = rx.next().await {}
                    })
                    .await;
                    return Ok(Exit::Done);
                }
            },
        }
    }
}

/// The `conn_id` of a frame the relay sent a binary.
fn conn_id_of(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(value.get("conn_id")?.as_str()?.to_owned())
}

/// `line` as a JSON value: itself if it is JSON, else a JSON string.
fn as_json(line: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(line) {
        Ok(_) => line.to_owned(),
        Err(_) => serde_json::Value::from(line).to_string(),
    }
}

/// The frame to send for a typed line.
fn compose(side: Side, line: &str, last_phone: Option<&str>) -> Result<String, &'static str> {
    if side == Side::Phone {
        return Ok(as_json(line));
    }
    if line.trim_start().starts_with('{') {
        return Ok(line.to_owned());
    }
    let phone = last_phone.ok_or("no phone has spoken yet: wait for a phone's frame first")?;
    let id = serde_json::Value::from(phone);
    if let Some(code) = line.strip_prefix("/close") {
        let code: u16 = code.trim().parse().map_err(|_| "usage: /close CODE")?;
        return Ok(format!("{{\"conn_id\":{id},\"close_code\":{code}}}"));
    }
    Ok(format!("{{\"conn_id\":{id},\"frame\":{}}}", as_json(line)))
}
