//! Test clients for `relay_e2e`: real WebSocket connections to an in-process relay.
//!
//! Every wait here is bounded by [`PATIENCE`] so a broken relay fails a test instead of hanging
//! it; no wait is an assertion about timing.
//!
//! Each test crate (`e2e`, `adversarial`, `operations`, `process`, `descriptors`, the cluster ones)
//! uses part of it; the `relay` child-process tests share its stdout/stderr helpers at the end.
#![allow(dead_code)]

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use relay_server::{self as server, Relay, RelayConfig};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest any single expected event may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A raw client socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The relay's defaults, on an ephemeral port, with a quick probe and close handshake, metrics on
/// an ephemeral port, and no rate limit (every test client comes from 127.0.0.1; the rate-limit
/// tests turn it on).
pub fn config() -> RelayConfig {
    RelayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        rate_burst: 0,
        probe_timeout: Duration::from_millis(300),
        close_timeout: Duration::from_millis(500),
        drain: Duration::from_secs(3),
        ..RelayConfig::default()
    }
}

/// Starts a relay in-process.
pub async fn relay(config: RelayConfig) -> Relay {
    server::start(config).await.expect("relay binds")
}

/// The headers of a well-behaved binary or phone.
pub fn binary_headers(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-Pyrycode-Server", id.to_owned()),
        ("X-Pyrycode-Version", "1.0.0".to_owned()),
        ("User-Agent", "relay-e2e".to_owned()),
    ]
}

/// See [`binary_headers`].
pub fn phone_headers(id: &str) -> Vec<(&'static str, String)> {
    vec![
        ("X-Pyrycode-Server", id.to_owned()),
        ("X-Pyrycode-Token", "secret-token".to_owned()),
        ("User-Agent", "relay-e2e".to_owned()),
        ("X-Pyrycode-Device-Name", "test phone".to_owned()),
    ]
}

/// Opens a WebSocket to `path` with exactly `headers`.
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, String)],
) -> Result<Ws, WsError> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).unwrap());
    }
    let connecting = tokio_tungstenite::connect_async(request);
    let (ws, _) = tokio::time::timeout(PATIENCE, connecting)
        .await
        .expect("handshake answered")?;
    Ok(ws)
}

/// A raw binary socket that has claimed `id` (its upgrade succeeded; a refusal comes as a close).
pub async fn raw_binary(addr: SocketAddr, id: &str) -> Ws {
    connect(addr, "/v1/server", &binary_headers(id))
        .await
        .expect("binary upgrade")
}

/// A raw phone socket for `id`.
pub async fn raw_phone(addr: SocketAddr, id: &str) -> Ws {
    connect(addr, "/v1/client", &phone_headers(id))
        .await
        .expect("phone upgrade")
}

/// A client whose socket is read continuously in the background (so it answers pings), with
/// what it receives queued for the test.
/// Dropping it drops the socket abruptly (no close frame).
pub struct Peer {
    tx: SplitSink<Ws, Message>,
    rx: mpsc::UnboundedReceiver<Message>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Peer {
    /// Starts reading `ws` in the background.
    pub fn new(ws: Ws) -> Peer {
        let (tx, rx) = ws.split();
        let (queue, received) = mpsc::unbounded_channel();
        let reader = tokio::spawn(read_into(rx, queue));
        Peer {
            tx,
            rx: received,
            reader,
        }
    }

    /// A binary that claimed `id`.
    pub async fn binary(addr: SocketAddr, id: &str) -> Peer {
        Peer::new(raw_binary(addr, id).await)
    }

    /// A phone of `id`.
    pub async fn phone(addr: SocketAddr, id: &str) -> Peer {
        Peer::new(raw_phone(addr, id).await)
    }

    /// Sends a text frame.
    pub async fn send(&mut self, text: impl Into<String>) {
        self.tx
            .send(Message::Text(text.into().into()))
            .await
            .expect("send");
    }

    /// Queues a text frame without flushing (flush with [`send`](Self::send) or
    /// [`flush`](Self::flush)).
    pub async fn feed(&mut self, text: impl Into<String>) {
        self.tx
            .feed(Message::Text(text.into().into()))
            .await
            .expect("feed");
    }

    /// Flushes fed frames.
    pub async fn flush(&mut self) {
        self.tx.flush().await.expect("flush");
    }

    /// Closes normally with `code`.
    pub async fn close(&mut self, code: u16) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "bye".into(),
        };
        self.tx
            .send(Message::Close(Some(frame)))
            .await
            .expect("send close");
    }

    /// The next message (text or close), failing the test if none comes.
    pub async fn next(&mut self) -> Message {
        tokio::time::timeout(PATIENCE, self.rx.recv())
            .await
            .expect("a message within PATIENCE")
            .expect("the connection ended without a close frame")
    }

    /// The next message, or `None` once the connection ended (waits without a bound).
    pub async fn rx_recv(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// A message already received, if any (does not wait).
    pub fn try_next(&mut self) -> Option<Message> {
        self.rx.try_recv().ok()
    }

    /// The next message, which must be a text frame.
    pub async fn text(&mut self) -> String {
        match self.next().await {
            Message::Text(text) => text.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next message, as JSON.
    pub async fn json(&mut self) -> Value {
        serde_json::from_str(&self.text().await).expect("JSON")
    }

    /// The next message, which must be a close frame: its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        match self.next().await {
            Message::Close(Some(frame)) => (u16::from(frame.code), frame.reason.to_string()),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }

    /// Skips text frames until the close frame: its code and reason.
    pub async fn closed_after_texts(&mut self) -> (u16, String) {
        loop {
            match self.next().await {
                Message::Text(_) => continue,
                Message::Close(Some(frame)) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Whether the connection's reader ended (socket closed, with or without a close frame).
    pub async fn ended(&mut self) {
        loop {
            let next = tokio::time::timeout(PATIENCE, self.rx.recv())
                .await
                .expect("the connection ends within PATIENCE");
            if next.is_none() {
                return;
            }
        }
    }
}

/// Forwards text and close frames (pings and pongs are answered by tungstenite while reading).
async fn read_into(mut rx: SplitStream<Ws>, queue: mpsc::UnboundedSender<Message>) {
    while let Some(Ok(message)) = rx.next().await {
        if matches!(
            message,
            Message::Text(_) | Message::Close(_) | Message::Binary(_)
        ) && queue.send(message).is_err()
        {
            return;
        }
    }
}

/// A phone joins `id` and says `hello`; the binary's copy of it reveals the phone's conn-id.
pub async fn join(addr: SocketAddr, id: &str, binary: &mut Peer) -> (Peer, String) {
    let mut phone = Peer::phone(addr, id).await;
    phone.send(r#""hello""#).await;
    let wrapped = binary.json().await;
    assert_eq!(wrapped["frame"], "hello");
    let conn_id = wrapped["conn_id"].as_str().expect("conn_id").to_owned();
    (phone, conn_id)
}

/// A raw HTTP exchange: sends `request`, returns everything the relay answered.
pub async fn http(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("the relay answers and closes")
        .expect("read");
    String::from_utf8(answer).expect("UTF-8 answer")
}

/// `GET /healthz`: the raw response.
pub async fn healthz_raw(addr: SocketAddr) -> String {
    http(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
    )
    .await
}

/// `/healthz`'s body with `uptime_seconds` checked to be a whole number and set to 0.
pub async fn healthz(addr: SocketAddr) -> String {
    let raw = healthz_raw(addr).await;
    let body = raw.split("\r\n\r\n").nth(1).expect("a body").to_owned();
    let (head, uptime) = body
        .rsplit_once("\"uptime_seconds\":")
        .expect("uptime_seconds last");
    let digits = uptime.strip_suffix('}').expect("object ends after uptime");
    assert!(
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
        "uptime_seconds is a whole number: {body}"
    );
    format!("{head}\"uptime_seconds\":0}}")
}

/// The exact `/healthz` body for these counts (uptime normalised to 0 by [`healthz`]).
pub fn health(binaries: usize, phones: usize) -> String {
    format!(
        "{{\"status\":\"ok\",\"version\":\"{}\",\"connected_binaries\":{binaries},\"connected_phones\":{phones},\"uptime_seconds\":0}}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Waits until `/healthz` reports these counts (state changes that no client can observe
/// directly, like a server-side unregister, are awaited this way).
pub async fn await_health(addr: SocketAddr, binaries: usize, phones: usize) {
    let want = health(binaries, phones);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = healthz(addr).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "healthz stuck at {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A WebSocket upgrade done by hand on a bare TCP socket, for writing raw frames.
pub async fn raw_upgrade(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, String)],
) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("an answer")
            .expect("read");
        assert_eq!(n, 1, "the relay answers the upgrade");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    stream
}

/// Reads frames from a raw socket until a close frame (skipping others): its code and reason.
pub async fn raw_close(stream: &mut TcpStream) -> (u16, String) {
    loop {
        let mut header = [0u8; 2];
        tokio::time::timeout(PATIENCE, stream.read_exact(&mut header))
            .await
            .expect("a frame")
            .expect("read");
        let len = match header[1] & 0x7f {
            126 => {
                let mut ext = [0u8; 2];
                stream.read_exact(&mut ext).await.unwrap();
                u16::from_be_bytes(ext) as usize
            }
            127 => {
                let mut ext = [0u8; 8];
                stream.read_exact(&mut ext).await.unwrap();
                u64::from_be_bytes(ext) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.unwrap();
        if header[0] & 0x0f == 0x8 {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            return (code, String::from_utf8(payload[2..].to_vec()).unwrap());
        }
    }
}

/// A scrape of the relay's `/metrics` (Prometheus text).
pub async fn scrape(relay: &Relay) -> String {
    let addr = relay.metrics_addr().expect("metrics are on in tests");
    let answer = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = answer.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    body.to_owned()
}

/// The value of the series `series` (name and labels exactly as exported) in `text`.
pub fn series(text: &str, series: &str) -> u64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse::<u64>().expect("an integer value"))
        })
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

/// The current value of `series` on `relay`.
pub async fn metric(relay: &Relay, series_name: &str) -> u64 {
    series(&scrape(relay).await, series_name)
}

/// A masked client frame: `first` is the FIN bit and opcode, `payload` its data.
pub fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Opcodes and the FIN bit, for [`client_frame`].
pub const FIN: u8 = 0x80;
/// A text frame's opcode.
pub const TEXT: u8 = 0x01;
/// A continuation frame's opcode.
pub const CONTINUATION: u8 = 0x00;
/// A ping's opcode.
pub const PING: u8 = 0x09;
/// A pong's opcode.
pub const PONG: u8 = 0x0a;

/// This process's resident set size, in bytes (Linux).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// A TCP connection to `addr` from the loopback address `from` (e.g. 127.0.0.2: every address of
/// 127.0.0.0/8 is this machine), so that a test can be several client IPs.
pub async fn tcp_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback source address");
    tokio::time::timeout(PATIENCE, socket.connect(addr))
        .await
        .expect("connect within PATIENCE")
        .expect("connect")
}

/// A WebSocket handshake on an already connected `stream` (which may have had bytes written to
/// it, e.g. a PROXY header).
pub async fn connect_on(
    stream: TcpStream,
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, String)],
) -> Result<WebSocketStream<TcpStream>, WsError> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).unwrap());
    }
    let handshake = tokio_tungstenite::client_async(request, stream);
    let (ws, _) = tokio::time::timeout(PATIENCE, handshake)
        .await
        .expect("handshake answered")?;
    Ok(ws)
}

/// The HTTP status of a refused handshake (`None` if it was upgraded).
pub fn refusal_status<S>(result: &Result<S, WsError>) -> Option<u16> {
    match result {
        Ok(_) => None,
        Err(WsError::Http(response)) => Some(response.status().as_u16()),
        Err(other) => panic!("expected an HTTP answer, got {other:?}"),
    }
}

/// Checks that `text` is well-formed Prometheus text exposition: every sample line is
/// `name{labels} value` with an integer or float value, and every sample's family has `# HELP`
/// and `# TYPE` lines before it.
pub fn assert_prometheus_text(text: &str) {
    let mut described = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            described.insert(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if line.starts_with("# TYPE ") || line == "# EOF" || line.is_empty() {
            continue;
        }
        let (sample, value) = line.rsplit_once(' ').expect("`sample value`");
        assert!(value.parse::<f64>().is_ok(), "value of {line}");
        let name = sample.split('{').next().unwrap();
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "name of {line}"
        );
        if let Some(labels) = sample.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        let family = name.strip_suffix("_total").unwrap_or(name);
        assert!(
            described.contains(family) || described.contains(name),
            "no # HELP before {line}"
        );
    }
}

/// The first `n` lines a `relay` child prints on stdout (the addresses it listens on, one per
/// line); the rest of its stdout is drained on a thread, so that the relay never writes to a
/// closed pipe. Blocks until the lines are printed (or panics if stdout ends first).
pub fn printed_lines(child: &mut std::process::Child, n: usize) -> Vec<String> {
    use std::io::BufRead;
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
    let lines = (0..n)
        .map(|_| {
            let mut line = String::new();
            stdout
                .read_line(&mut line)
                .expect("the relay prints its addresses");
            line
        })
        .collect();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    lines
}

/// The socket address right after `scheme` (`"ws://"`, `"http://"`) in a line the relay
/// printed. Panics if there is none.
pub fn printed_address(line: &str, scheme: &str) -> SocketAddr {
    line.split(scheme)
        .nth(1)
        .and_then(|rest| rest.split([' ', '/']).next())
        .and_then(|addr| addr.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {scheme} address in {line:?}"))
}

/// A `relay --cluster` child process on a free loopback port: `lease` (whole seconds), a
/// 300 ms probe timeout, no rate limit and no connection cap, warnings only on its stderr
/// (dropped). Killed (after a `SIGCONT`, so a stopped one is reaped at once) and reaped on drop.
pub struct ClusterProcess {
    child: std::process::Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl ClusterProcess {
    /// Starts it as instance `name` on the NATS at `nats_url`; returns once it listens.
    pub fn start(nats_url: &str, name: &str, lease: Duration) -> ClusterProcess {
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
            .args(["--rate-burst", "0", "--max-connections", "0"])
            .args(["--probe-timeout", "300ms"])
            .args(["--cluster", nats_url, "--instance-id", name])
            .args(["--cluster-lease", &format!("{}s", lease.as_secs())])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start relay");
        let addr = printed_address(&printed_lines(&mut child, 1)[0], "ws://");
        ClusterProcess { child, addr }
    }

    /// Kills it with `SIGKILL` (no goodbye to anyone) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (`STOP`, `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{signal}");
    }

    /// Stops the process and waits until every thread of it is stopped: a `SIGSTOP` stops the
    /// threads one after another (the first to take the signal stops the others), and a
    /// thread still running meanwhile may serve a frame — legitimately, before the stop.
    pub fn stop(&self) {
        self.signal("STOP");
        let tasks = format!("/proc/{}/task", self.child.id());
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            let stopped = std::fs::read_dir(&tasks)
                .expect("the process's threads")
                .filter_map(Result::ok)
                .all(|task| {
                    let stat =
                        std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                    // "tid (name) S …": the state follows the name's closing parenthesis.
                    stat.rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
                });
            if stopped {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the relay never stopped"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        self.kill();
    }
}

/// A child's whole stderr, read on a thread: join it once the child has exited.
pub fn collect_stderr(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    use std::io::Read;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    })
}

/// Fills the outbox of `id`'s binary, which must not be reading: a new phone of `id` on
/// `phones_at` feeds `frames` frames of 32 KiB from a task (its sends block on backpressure)
/// until `counted` (the instance that hands the frames to the binary) stops queuing them — the
/// forwarded count the same over 200 ms while the filler has far more to send. Returns the
/// filler's task (it ends once the binary reads again).
pub async fn fill_binary_outbox(
    counted: &Relay,
    phones_at: SocketAddr,
    id: &str,
    frames: usize,
) -> tokio::task::JoinHandle<Peer> {
    let mut filler = Peer::phone(phones_at, id).await;
    let chunk = format!("\"{}\"", "f".repeat(32 * 1024));
    let fill = tokio::spawn(async move {
        for _ in 0..frames {
            filler.feed(chunk.clone()).await;
        }
        filler.flush().await;
        filler
    });
    let up = "relay_frames_forwarded_total{direction=\"phone_to_binary\"}";
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut queued = metric(counted, up).await;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = metric(counted, up).await;
        if now == queued {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox never filled"
        );
        queued = now;
    }
    assert!(queued < frames as u64, "the binary's outbox is full");
    fill
}

/// Reads `binary` (a raw socket) until it has received `frames` wrapped frames and `notices`
/// phone-left notices, each notice with `code`; fails on anything else or after [`PATIENCE`]
/// without a message.
pub async fn read_frames_and_notices(binary: &mut Ws, frames: usize, notices: usize, code: u16) {
    use futures_util::StreamExt;
    let ending = format!(",\"close_code\":{code}}}");
    let (mut seen_frames, mut seen_notices) = (0, 0);
    while seen_frames < frames || seen_notices < notices {
        let message = tokio::time::timeout(PATIENCE, binary.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("a message");
        let text = message.into_text().expect("text");
        if text.contains("\"frame\"") {
            seen_frames += 1;
        } else {
            assert!(text.ends_with(&ending), "{text}");
            seen_notices += 1;
        }
    }
}
