//! The binaries as users run them: `relay` as a child process (signals, exit status, what it
//! logs) and `relay-client` against an in-process relay. Every child is started by its test,
//! listens on loopback only, and is stopped (or waited for) by it within a bounded time.

mod support;

use serde_json::Value;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// A `relay` child process on a free port.
struct RelayProcess {
    child: Child,
    addr: SocketAddr,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl RelayProcess {
    /// Starts `relay --listen 127.0.0.1:0 --metrics-listen off <args>` with `RUST_LOG=rust_log`.
    fn start(args: &[&str], rust_log: &str) -> RelayProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
            .args(args)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start relay");
        let stderr = collect_stderr(&mut child);
        let addr = printed_address(&printed_lines(&mut child, 1)[0], "ws://");
        RelayProcess {
            child,
            addr,
            stderr: Some(stderr),
        }
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        // The shell's own `kill`, so that no procps binary is needed.
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", self.child.id())])
            .status()
            .expect("sh -c 'kill -TERM'");
        assert!(status.success());
    }

    /// Waits (at most `limit`) for the process to exit; its status, how long it took, and
    /// everything it wrote to stderr.
    fn wait(mut self, limit: Duration) -> (ExitStatus, Duration, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("the relay did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = self
            .stderr
            .take()
            .expect("waited once")
            .join()
            .expect("stderr reader");
        (status, start.elapsed(), stderr)
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_everyone_1001_and_exits_0_within_the_drain_time() {
    let relay = RelayProcess::start(&[], "info");
    let addr = relay.addr;
    let mut binary = Peer::binary(addr, "srv-term").await;
    let (mut phone, _) = join(addr, "srv-term", &mut binary).await;
    relay.terminate();
    for peer in [&mut binary, &mut phone] {
        assert_eq!(
            peer.closed_after_texts().await,
            (1001, "shutting down".into())
        );
    }
    let (status, _, stderr) =
        tokio::task::spawn_blocking(move || relay.wait(Duration::from_secs(12)))
            .await
            .unwrap();
    assert!(status.success(), "exit status {status:?}\n{stderr}");
}

/// Runs a binary and a phone (with `token`) through a relay started with `args` and
/// `rust_log`, sends `frame`, lets a few requests be refused, then stops it; returns its stderr.
async fn exercise(
    args: &[&str],
    rust_log: &str,
    server_id: &str,
    token: &str,
    frame: &str,
) -> String {
    let relay = RelayProcess::start(args, rust_log);
    let addr = relay.addr;
    let mut binary = raw_upgrade_ok(addr, "/v1/server", &binary_headers(server_id)).await;
    let mut headers = phone_headers(server_id);
    headers.retain(|(name, _)| *name != "X-Pyrycode-Token");
    headers.push(("X-Pyrycode-Token", token.to_owned()));
    let mut phone = raw_upgrade_ok(addr, "/v1/client", &headers).await;
    phone.send(frame).await;
    let wrapped = binary.text().await;
    assert!(wrapped.contains(frame), "{wrapped}");
    // Refused requests: a missing header, an unknown path.
    let refused = http(
        addr,
        &format!(
            "GET /v1/client HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Pyrycode-Server: {server_id}\r\nX-Pyrycode-Token: {token}\r\n\r\n"
        ),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 400 "), "{refused}");
    let _ = http(
        addr,
        "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    relay.terminate();
    let mut last = None;
    while let Ok(Some(message)) = tokio::time::timeout(PATIENCE, binary.rx_recv()).await {
        last = Some(message);
    }
    let (status, _, stderr) =
        tokio::task::spawn_blocking(move || relay.wait(Duration::from_secs(12)))
            .await
            .unwrap();
    let tail: Vec<&str> = stderr.lines().filter(|l| !l.contains("TRACE")).collect();
    assert!(status.success(), "{status:?}\n{}", tail.join("\n"));
    match last {
        Some(tokio_tungstenite::tungstenite::Message::Close(Some(frame))) => {
            assert_eq!(
                (u16::from(frame.code), frame.reason.as_str()),
                (1001, "shutting down"),
                "{stderr}"
            );
        }
        other => panic!("the binary saw {other:?} last\n{stderr}"),
    }
    stderr
}

/// A binary from a raw upgrade, read in the background.
async fn raw_upgrade_ok(addr: SocketAddr, path: &str, headers: &[(&'static str, String)]) -> Peer {
    let stream = raw_upgrade(addr, path, headers).await;
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    Peer::new(ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_and_no_line_at_any_level_has_a_token_or_frame() {
    let token = "tok-5ecret-4d1e";
    let frame = "{\"marker\":\"frame-c0ntent-77\"}";
    let server_id = "desk-logged-id";
    let stderr = exercise(&["--log-format", "json"], "trace", server_id, token, frame).await;
    let mut levels = std::collections::HashSet::new();
    for line in stderr.lines() {
        let object: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(object.is_object(), "{line}");
        let level = object["level"].as_str().expect("a level").to_owned();
        assert!(!line.contains(token), "a token was logged: {line}");
        assert!(
            !line.contains("frame-c0ntent-77"),
            "a frame was logged: {line}"
        );
        if matches!(level.as_str(), "INFO" | "WARN" | "ERROR") {
            assert!(
                !line.contains(server_id),
                "a full server-id at {level}: {line}"
            );
        }
        levels.insert(level);
    }
    for level in ["DEBUG", "INFO"] {
        assert!(levels.contains(level), "no {level} line in\n{stderr}");
    }
    assert!(
        stderr.contains("request refused"),
        "refusals are logged:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_logged_only_quoted_and_escaped_so_they_cannot_forge_fields() {
    let evil = "x peer=6.6.6.6 code=4409\u{85}y";
    let stderr = exercise(&[], "debug", evil, "tok-1", "1").await;
    assert!(
        !stderr.contains('\u{85}'),
        "a raw C1 control character was logged"
    );
    for line in stderr.lines() {
        if line.contains("peer=6.6.6.6") {
            assert!(line.contains(" DEBUG "), "a full id above debug: {line}");
            assert!(
                line.contains("\"x peer=6.6.6.6 code=4409\\u{85}y\""),
                "the id is not one quoted, escaped value: {line}"
            );
        }
    }
    assert!(
        stderr.contains("peer=6.6.6.6"),
        "the id is logged at debug:\n{stderr}"
    );
}

/// Runs `binary --flag` and returns its stdout.
fn output_of(binary: &str, flag: &str) -> String {
    let output = Command::new(binary).arg(flag).output().expect("run");
    assert!(output.status.success(), "{binary} {flag}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn every_binary_names_itself_in_help_and_version() {
    for (binary, name) in [
        (env!("CARGO_BIN_EXE_relay"), "relay"),
        (env!("CARGO_BIN_EXE_relay-client"), "relay-client"),
    ] {
        let version = output_of(binary, "--version");
        assert_eq!(
            version.trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
        let help = output_of(binary, "--help");
        assert!(help.contains(&format!("Usage: {name} ")), "{help}");
    }
    let help = output_of(env!("CARGO_BIN_EXE_relay"), "--help");
    for variable in [
        "RELAY_LISTEN",
        "RELAY_GRACE",
        "RELAY_METRICS_LISTEN",
        "RELAY_RATE_BURST",
    ] {
        assert!(help.contains(variable), "{variable} in\n{help}");
    }
    let help = output_of(env!("CARGO_BIN_EXE_relay-client"), "--help");
    assert!(!help.contains("passes it on"), "{help}");
    assert!(help.contains("X-Pyrycode-Token"), "{help}");
}

/// Runs `relay-client <args>` with its stdin open and never written (a user who types nothing);
/// returns its exit status and stderr, failing if it does not exit within PATIENCE.
async fn client(args: Vec<String>) -> (ExitStatus, String) {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_relay-client"))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start relay-client");
        let _stdin = child.stdin.take();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > PATIENCE {
                let _ = child.kill();
                let _ = child.wait();
                panic!("relay-client {args:?} did not exit by itself");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status, stderr)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_client_exits_at_once_non_zero_with_the_close_code_and_reason() {
    let relay = relay(config()).await;
    let url = format!("ws://{}", relay.local_addr());
    let args = |side: &str, id: &str| {
        ["--url", &url, "--as", side, "--server", id]
            .map(String::from)
            .to_vec()
    };
    let (status, stderr) = client(args("phone", "srv-client-none")).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("4404 no server with that id"), "{stderr}");

    let _holder = Peer::binary(relay.local_addr(), "srv-client-held").await;
    let (status, stderr) = client(args("binary", "srv-client-held")).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("4409 server-id already claimed"),
        "{stderr}"
    );

    let (status, stderr) = client(args("phone", &"x".repeat(300))).await;
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("HTTP 400 Bad Request: invalid server-id"),
        "{stderr}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_client_exits_when_the_relay_shuts_down() {
    let relay = relay(config()).await;
    let url = format!("ws://{}", relay.local_addr());
    let running = tokio::spawn(client(
        [
            "--url",
            &url,
            "--as",
            "binary",
            "--server",
            "srv-client-bye",
        ]
        .map(String::from)
        .to_vec(),
    ));
    await_health(relay.local_addr(), 1, 0).await;
    relay.shutdown().await;
    let (status, stderr) = running.await.unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("1001 shutting down"), "{stderr}");
}

/// Runs `relay <args>` to its end (at most [`PATIENCE`]): its exit code and stderr.
fn relay_fails(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start relay");
    let stderr = collect_stderr(&mut child);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("relay {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status.code(), stderr.join().expect("stderr reader"))
}

/// Asserts that `stderr` is exactly one line `relay: error: …` with no `Debug` formatting.
fn assert_one_error_line(stderr: &str, args: &[&str]) {
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line, got {stderr:?}");
    assert!(
        lines[0].starts_with("relay: error: "),
        "{args:?}: {stderr:?}"
    );
    for debug in ["Custom {", "kind:", "Os {", "Error {"] {
        assert!(
            !lines[0].contains(debug),
            "{args:?}: Debug output: {stderr:?}"
        );
    }
}

#[test]
fn an_invalid_configuration_exits_2_with_one_line() {
    for args in [
        &["--grace", "soon"][..],
        &["--no-such-flag"],
        &["--listen", "not-an-address"],
        &["--forward-token", "always"],
        &[
            "--cluster-lease",
            "1500ms",
            "--cluster",
            "nats://127.0.0.1:4222",
        ],
        &["--instance-id", "a.b", "--cluster", "nats://127.0.0.1:4222"],
        // A NATS URL that cannot be parsed, alone or in a list.
        &["--cluster", "nats://127.0.0.1:4222,nats://127.0.0.1:port"],
        &["--cluster", " , "],
        &["--max-phones", "-1"],
        &[
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ],
        &["--tls-cert", "/etc/hostname", "--tls-key", "/etc/hostname"],
        &["--fcm-credentials", "/nonexistent/service-account.json"],
    ] {
        let (code, stderr) = relay_fails(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_one_error_line(&stderr, args);
    }
}

#[test]
fn a_failure_at_run_time_exits_1_with_one_line() {
    // An address in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let args = ["--listen", addr.as_str(), "--metrics-listen", "off"];
    let (code, stderr) = relay_fails(&args);
    assert_eq!(code, Some(1), "{stderr}");
    assert_one_error_line(&stderr, &args);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}: ")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nats_unreachable_at_start_it_keeps_running_answers_503_and_drains_on_sigterm() {
    use std::io::BufRead;
    // A refused port: NATS is not there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("nats://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .args(["--cluster", &url, "--instance-id", "relay-early"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start relay");
    // It prints its address although it cannot join.
    let addr = printed_address(&printed_lines(&mut child, 1)[0], "ws://");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stderr = std::io::BufReader::new(child.stderr.take().expect("stderr is piped"));
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut child = Reaped(child);
    // Two failed attempts, each logged with its reason: after the first one the relay used to
    // exit 1.
    for attempt in 1..=2 {
        let line = lines
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("attempt {attempt} to join logged"));
        assert!(line.contains("cannot join the cluster"), "{line}");
        assert!(line.contains("WARN"), "{line}");
    }
    assert!(child.0.try_wait().unwrap().is_none(), "it keeps running");
    let readyz = http(
        addr,
        "GET /readyz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    let upgrade = http(
        addr,
        "GET /v1/server HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Pyrycode-Server: srv-early\r\n\r\n",
    )
    .await;
    assert!(upgrade.starts_with("HTTP/1.1 503"), "{upgrade}");
    // SIGTERM drains it as usual: exit 0.
    let pid = child.0.id().to_string();
    assert!(
        Command::new("sh")
            .args(["-c", &format!("kill -TERM {pid}")])
            .status()
            .unwrap()
            .success()
    );
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "exits after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}

/// Kills and reaps the child when the test ends, whichever way.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
