//! Push wakes (protocol "Push wakes"): a binary's `push_wake` becomes an FCM message, sent with
//! an OAuth access token from the JWT-bearer grant, within the per-id and relay-wide limits,
//! counted in `relay_push_wakes_total{outcome}`, and never logged by its token.
//!
//! Google's token endpoint and FCM are stand-ins served over TLS by the test ([`standin`]); the
//! relay runs in-process (and, for what it logs and how it refuses a bad key, as the `relay`
//! binary). Nothing waits on a clock: the stand-ins count, and a stalled FCM is released by the
//! test.

#[path = "push/standin.rs"]
mod standin;
mod support;

use relay_server::{PushConfig, Relay, RelayConfig};
use standin::Google;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::*;

const OUTCOMES: [&str; 8] = [
    "sent",
    "unregistered",
    "rejected",
    "send_failed",
    "token_fetch_failed",
    "rate_limited",
    "busy",
    "disabled",
];

fn wakes(outcome: &str) -> String {
    format!("relay_push_wakes_total{{outcome=\"{outcome}\"}}")
}

fn wake(token: &str) -> String {
    serde_json::json!({"push_wake": {"platform": "fcm", "token": token}}).to_string()
}

/// Push through the stand-ins.
fn push_config(google: &Google) -> PushConfig {
    PushConfig {
        endpoint: google.endpoint.clone(),
        ca_file: Some(google.ca_file.clone()),
        ..PushConfig::new(&google.credentials)
    }
}

async fn relay_with(push: PushConfig) -> Relay {
    relay(RelayConfig {
        push: Some(push),
        ..config()
    })
    .await
}

/// Waits (at most PATIENCE) until the wakes counted sum to `total`; returns every outcome's
/// count.
async fn settled(relay: &Relay, total: u64) -> std::collections::BTreeMap<&'static str, u64> {
    let start = Instant::now();
    loop {
        let text = scrape(relay).await;
        let counts: std::collections::BTreeMap<_, _> = OUTCOMES
            .iter()
            .map(|outcome| (*outcome, series(&text, &wakes(outcome))))
            .collect();
        if counts.values().sum::<u64>() >= total {
            return counts;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "wakes counted {counts:?}, expected {total}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most PATIENCE) for `condition`.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < PATIENCE, "waited in vain for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn only(counts: &std::collections::BTreeMap<&str, u64>, expected: &[(&str, u64)]) {
    for outcome in OUTCOMES {
        let want = expected
            .iter()
            .find(|(o, _)| *o == outcome)
            .map_or(0, |(_, n)| *n);
        assert_eq!(counts[outcome], want, "{outcome} in {counts:?}");
    }
}

#[tokio::test]
async fn wakes_are_sent_with_one_verified_grant_and_every_outcome_series_starts_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let google = Google::start(dir.path()).await;
    let relay = relay_with(push_config(&google)).await;
    let text = scrape(&relay).await;
    for outcome in OUTCOMES {
        assert_eq!(series(&text, &wakes(outcome)), 0, "{outcome}");
    }
    let mut binary = Peer::binary(relay.local_addr(), "sa").await;
    for n in 0..5 {
        binary.send(wake(&format!("ok-{n}"))).await;
    }
    only(&settled(&relay, 5).await, &[("sent", 5)]);
    let mut delivered = google.seen().delivered.lock().clone();
    delivered.sort();
    assert_eq!(delivered, ["ok-0", "ok-1", "ok-2", "ok-3", "ok-4"]);
    assert_eq!(
        google.seen().token_fetches.load(Ordering::SeqCst),
        1,
        "the access token is cached"
    );
    assert_eq!(google.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn an_access_token_is_not_used_in_its_last_minute() {
    let dir = tempfile::tempdir().unwrap();
    let google = Google::start(dir.path()).await;
    // Tokens that expire in 60 s are already in their last minute: each send fetches anew.
    google.set_expires_in(60);
    let relay = relay_with(push_config(&google)).await;
    let mut binary = Peer::binary(relay.local_addr(), "short").await;
    binary.send(wake("ok-1")).await;
    settled(&relay, 1).await;
    binary.send(wake("ok-2")).await;
    only(&settled(&relay, 2).await, &[("sent", 2)]);
    assert_eq!(google.seen().token_fetches.load(Ordering::SeqCst), 2);
    // An hour's token is kept: one more fetch for three sends.
    google.set_expires_in(3600);
    for n in 3..6 {
        binary.send(wake(&format!("ok-{n}"))).await;
    }
    only(&settled(&relay, 5).await, &[("sent", 5)]);
    assert_eq!(google.seen().token_fetches.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn fcm_replies_are_counted_no_redirect_is_followed_and_only_4_kib_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let google = Google::start(dir.path()).await;
    let relay = relay_with(PushConfig {
        // `mute-` is never answered: the call's bound ends it.
        timeout: Duration::from_millis(500),
        ..push_config(&google)
    })
    .await;
    let mut binary = Peer::binary(relay.local_addr(), "replies").await;
    // Six wakes, the id's whole burst.
    for token in ["gone-1", "unreg-1", "bad-1", "down-1", "mute-1", "moved-1"] {
        binary.send(wake(token)).await;
    }
    let counts = settled(&relay, 6).await;
    only(
        &counts,
        &[("unregistered", 2), ("rejected", 1), ("send_failed", 3)],
    );
    // The redirect was not followed.
    assert_eq!(google.seen().fcm_requests.load(Ordering::SeqCst), 6);
    // Only the first 4 KiB of a reply are read: an error code beyond them is not seen.
    let mut other = Peer::binary(relay.local_addr(), "replies-2").await;
    other.send(wake("huge-1")).await;
    only(
        &settled(&relay, 7).await,
        &[("unregistered", 2), ("rejected", 2), ("send_failed", 3)],
    );
    assert_eq!(google.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn an_unreachable_fcm_is_send_failed() {
    let dir = tempfile::tempdir().unwrap();
    let google = Google::start(dir.path()).await;
    // A port nobody listens on (bound, then closed).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("https://{}", closed.local_addr().unwrap());
    drop(closed);
    let relay = relay_with(PushConfig {
        endpoint,
        ..push_config(&google)
    })
    .await;
    let mut binary = Peer::binary(relay.local_addr(), "unreachable").await;
    binary.send(wake("ok-1")).await;
    only(&settled(&relay, 1).await, &[("send_failed", 1)]);
    assert_eq!(google.seen().token_fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failing_token_endpoint_is_token_fetch_failed_and_nothing_reaches_fcm() {
    let dir = tempfile::tempdir().unwrap();
    let google = Google::start(dir.path()).await;
    google.set_token_down(true);
    let relay = relay_with(push_config(&google)).await;
    let mut binary = Peer::binary(relay.local_addr(), "no-token").await;
    binary.send(wake("ok-1")).await;
    binary.send(wake("ok-2")).await;
    only(&settled(&relay, 2).await, &[("token_fetch_failed", 2)]);
    assert_eq!(google.seen().fcm_requests.load(Ordering::SeqCst), 0);
    // Once the endpoint works again, the next wake fetches a token (failures are not cached).
    google.set_token_down(false);
    binary.send(wake("ok-3")).await;
    only(
        &settled(&relay, 3).await,
        &[("token_fetch_failed", 2), ("sent", 1)],
    );
}

#[tokio::test]
async fn a_401_from_fcm_fetches_a_new_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let google = Google::start(dir.path()).await;
    let relay = relay_with(push_config(&google)).await;
    let mut binary = Peer::binary(relay.local_addr(), "refresh").await;
    binary.send(wake("ok-1")).await;
    settled(&relay, 1).await;
    google.revoke_tokens();
    binary.send(wake("ok-2")).await;
    only(&settled(&relay, 2).await, &[("sent", 2)]);
    let seen = google.seen();
    assert_eq!(seen.token_fetches.load(Ordering::SeqCst), 2);
    assert_eq!(
        seen.fcm_requests.load(Ordering::SeqCst),
        3,
        "ok-1, ok-2 (401), ok-2"
    );
    // FCM refusing every token: one more fetch, one retry, then rejected.
    google.set_always_401(true);
    binary.send(wake("ok-3")).await;
    only(&settled(&relay, 3).await, &[("sent", 2), ("rejected", 1)]);
    assert_eq!(seen.token_fetches.load(Ordering::SeqCst), 3);
    assert_eq!(seen.fcm_requests.load(Ordering::SeqCst), 5);
    assert_eq!(google.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn ten_wakes_in_a_burst_from_one_id_send_six_and_another_id_has_its_own_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let google = Google::start(dir.path()).await;
    let relay = relay_with(PushConfig {
        // No wake comes back during the test, however slow the machine.
        refill: Duration::from_secs(3600),
        ..push_config(&google)
    })
    .await;
    let mut binary = Peer::binary(relay.local_addr(), "bursty").await;
    for n in 0..10 {
        binary.feed(wake(&format!("ok-{n}"))).await;
    }
    binary.flush().await;
    only(
        &settled(&relay, 10).await,
        &[("sent", 6), ("rate_limited", 4)],
    );
    assert_eq!(google.seen().fcm_requests.load(Ordering::SeqCst), 6);
    let mut other = Peer::binary(relay.local_addr(), "calm").await;
    other.send(wake("ok-other")).await;
    only(
        &settled(&relay, 11).await,
        &[("sent", 7), ("rate_limited", 4)],
    );
}

#[tokio::test]
async fn at_most_32_sends_are_in_flight_the_binaries_keep_forwarding_and_sends_outlive_them() {
    let dir = tempfile::tempdir().unwrap();
    let google = Google::start(dir.path()).await;
    let relay = relay_with(push_config(&google)).await;
    let addr = relay.local_addr();
    // 8 ids × 6 wakes (each id's whole burst) = 48 wakes against a stalled FCM.
    let mut binaries = Vec::new();
    for b in 0..8 {
        binaries.push(Peer::binary(addr, &format!("cap-{b}")).await);
    }
    let (mut phone, phone_id) = join(addr, "cap-0", &mut binaries[0]).await;
    for (b, binary) in binaries.iter_mut().enumerate() {
        for n in 0..6 {
            binary.feed(wake(&format!("stall-{b}-{n}"))).await;
        }
        binary.flush().await;
    }
    let counts = settled(&relay, 16).await;
    only(&counts, &[("busy", 16)]);
    until("32 stalled sends at FCM", || {
        google.seen().in_flight.load(Ordering::SeqCst) == 32
    })
    .await;
    // Meanwhile the binary's frames flow both ways.
    for n in 0..20 {
        let frame = serde_json::json!({"conn_id": phone_id, "frame": {"n": n}});
        binaries[0].send(frame.to_string()).await;
        assert_eq!(phone.json().await["n"], n);
        phone.send(format!("{{\"m\":{n}}}")).await;
        assert_eq!(binaries[0].json().await["frame"]["m"], n);
    }
    // The binaries leave; their sends go on.
    for binary in &mut binaries {
        binary.close(1000).await;
    }
    drop(binaries);
    google.release();
    only(&settled(&relay, 48).await, &[("busy", 16), ("sent", 32)]);
    assert_eq!(google.seen().max_in_flight.load(Ordering::SeqCst), 32);
    assert_eq!(google.seen().fcm_requests.load(Ordering::SeqCst), 32);
    // The places are free again.
    let mut again = Peer::binary(addr, "cap-again").await;
    again.send(wake("ok-after")).await;
    only(&settled(&relay, 49).await, &[("busy", 16), ("sent", 33)]);
}

#[tokio::test]
async fn without_credentials_wakes_are_counted_disabled_and_the_binary_stays() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "off").await;
    binary.send(wake("ok-1")).await;
    only(&settled(&relay, 1).await, &[("disabled", 1)]);
    let (mut phone, phone_id) = join(addr, "off", &mut binary).await;
    binary
        .send(serde_json::json!({"conn_id": phone_id, "frame": 1}).to_string())
        .await;
    assert_eq!(phone.text().await, "1");
}

#[tokio::test]
async fn malformed_wakes_are_bad_envelopes_and_an_envelope_with_a_conn_id_wakes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let google = Google::start(dir.path()).await;
    let relay = relay_with(push_config(&google)).await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "malformed").await;
    let (mut phone, phone_id) = join(addr, "malformed", &mut binary).await;
    let bad = [
        r#"{"push_wake":{"platform":"apns","token":"ok-1"}}"#.to_owned(),
        r#"{"push_wake":{"platform":"fcm","token":""}}"#.to_owned(),
        r#"{"push_wake":{"platform":"fcm"}}"#.to_owned(),
        wake(&format!("ok-{}", "x".repeat(4096))),
    ];
    for frame in &bad {
        binary.send(frame.as_str()).await;
    }
    let routed = serde_json::json!({
        "conn_id": phone_id,
        "frame": "routed",
        "push_wake": {"platform": "fcm", "token": "ok-2"},
    });
    binary.send(routed.to_string()).await;
    assert_eq!(
        phone.text().await,
        "\"routed\"",
        "the binary stays connected"
    );
    // A last good wake: once it is counted, the frames before it were handled.
    binary.send(wake("ok-3")).await;
    only(&settled(&relay, 1).await, &[("sent", 1)]);
    assert_eq!(
        metric(
            &relay,
            "relay_frames_dropped_total{reason=\"bad_envelope\"}"
        )
        .await,
        4
    );
    assert_eq!(*google.seen().delivered.lock(), ["ok-3"]);
}

/// The lines of the test key's base64 body: none may appear in an error or a log.
fn key_lines() -> Vec<&'static str> {
    let lines: Vec<&str> = standin::rsa_key_pem()
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    assert!(lines.len() > 20, "a 2048-bit key spans many lines");
    lines
}

fn assert_no_key_material(text: &str) {
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    for line in key_lines() {
        assert!(!text.contains(line), "key material in {text}");
        assert!(!text.contains(&line[..16]), "key material in {text}");
    }
}

/// Every way a service-account file can be wrong, with what the error must say.
fn malformed_accounts() -> Vec<(serde_json::Value, &'static str)> {
    let good = standin::service_account("https://oauth2.googleapis.com/token");
    let with = |field: &str, value: serde_json::Value| {
        let mut json = good.clone();
        json[field] = value;
        json
    };
    let without = |field: &str| {
        let mut json = good.clone();
        json.as_object_mut().unwrap().remove(field);
        json
    };
    let pem = standin::rsa_key_pem();
    let lines: Vec<&str> = pem.lines().collect();
    let truncated = format!("{}\n-----END PRIVATE KEY-----\n", lines[..10].join("\n"));
    let mut cut = lines.clone();
    cut.remove(lines.len() / 2);
    let cut = cut.join("\n");
    let ec = rcgen::KeyPair::generate().unwrap().serialize_pem();
    vec![
        (without("client_email"), "`client_email` is missing"),
        (
            with("client_email", 7.into()),
            "`client_email` is not a string",
        ),
        (with("client_email", "".into()), "`client_email` is empty"),
        (without("private_key"), "`private_key` is missing"),
        (
            with("private_key", true.into()),
            "`private_key` is not a string",
        ),
        (
            with("private_key", truncated.into()),
            "`private_key` is not",
        ),
        (with("private_key", cut.into()), "`private_key` is not"),
        (
            with(
                "private_key",
                pem.replace("PRIVATE KEY", "CERTIFICATE").into(),
            ),
            "`private_key` is not a PEM-encoded private key",
        ),
        (
            with("private_key", ec.into()),
            "`private_key` is not an RSA key",
        ),
        (without("token_uri"), "`token_uri` is missing"),
        (
            with("token_uri", "http://oauth2.googleapis.com/token".into()),
            "`token_uri` is not an https:// URL (plain http:// is not accepted)",
        ),
        (
            with("token_uri", "oauth2.googleapis.com".into()),
            "`token_uri` is not an https:// URL",
        ),
        (without("project_id"), "`project_id` is missing"),
        (
            with("project_id", "a/../b".into()),
            "`project_id` is not a project id",
        ),
        (
            serde_json::Value::String(pem.to_owned()),
            "is not a JSON object",
        ),
    ]
}

#[tokio::test]
async fn malformed_credentials_stop_the_relay_naming_the_field_and_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("account.json");
    for (json, expected) in malformed_accounts() {
        standin::write_account(&path, &json);
        let error = relay_server::start(RelayConfig {
            push: Some(PushConfig::new(&path)),
            ..config()
        })
        .await
        .err()
        .unwrap_or_else(|| panic!("started with a bad key ({expected})"));
        assert!(error.is_config(), "a configuration error: {error}");
        let message = error.to_string();
        assert!(message.contains(expected), "{message} lacks {expected}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert_no_key_material(&message);
    }
    // The PEM file itself given as the key file.
    std::fs::write(&path, standin::rsa_key_pem()).unwrap();
    let error = PushConfig::new(&path).load().unwrap_err().to_string();
    assert!(error.contains("is not a JSON object"), "{error}");
    assert_no_key_material(&error);
}

#[tokio::test]
async fn an_http_endpoint_or_a_bad_ca_file_stops_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let google = Google::start(dir.path()).await;
    let plain = PushConfig {
        endpoint: "http://fcm.googleapis.com".into(),
        ..push_config(&google)
    };
    let error = plain.load().unwrap_err().to_string();
    assert_eq!(
        error,
        "--fcm-endpoint is not an https:// URL (plain http:// is not accepted)"
    );
    let missing = PushConfig {
        ca_file: Some(dir.path().join("none.pem")),
        ..push_config(&google)
    };
    let error = missing.load().unwrap_err().to_string();
    assert!(error.starts_with("--fcm-ca-file "), "{error}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let no_cert = PushConfig {
        ca_file: Some(empty),
        ..push_config(&google)
    };
    let error = relay_server::start(RelayConfig {
        push: Some(no_cert),
        ..config()
    })
    .await
    .err()
    .expect("refused");
    assert!(error.to_string().contains("no CERTIFICATE"), "{error}");
}

/// The `relay` binary, exited: its status and stderr (it must exit within PATIENCE).
fn run_relay(args: &[&str]) -> (std::process::ExitStatus, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .args(args)
        .env_remove("RELAY_FCM_CREDENTIALS")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run relay");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_relay_binary_refuses_a_malformed_key_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("account.json");
    for (json, expected) in malformed_accounts() {
        standin::write_account(&path, &json);
        let (status, stderr) = run_relay(&["--fcm-credentials", path.to_str().unwrap()]);
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("relay: error: "), "{stderr}");
        assert!(stderr.contains(expected), "{stderr} lacks {expected}");
        assert_no_key_material(&stderr);
    }
    // The same from the environment variable.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .env("RELAY_FCM_CREDENTIALS", &path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run relay");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("relay: error: the FCM service-account file"),
        "{stderr}"
    );
}

/// Reads the `relay` child's metrics page.
async fn child_metric(metrics: std::net::SocketAddr, series_name: &str) -> u64 {
    let answer = http(
        metrics,
        "GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
    )
    .await;
    series(answer.split_once("\r\n\r\n").unwrap().1, series_name)
}

#[tokio::test]
async fn no_fcm_token_appears_in_any_log_line_at_any_level() {
    let dir = tempfile::tempdir().unwrap();
    let google = Google::start(dir.path()).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .arg("--fcm-credentials")
        .arg(&google.credentials)
        .args(["--fcm-endpoint", &google.endpoint])
        .arg("--fcm-ca-file")
        .arg(&google.ca_file)
        .env("RUST_LOG", "trace")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start relay");
    let stderr = collect_stderr(&mut child);
    let lines = printed_lines(&mut child, 2);
    let addr = printed_address(&lines[0], "ws://");
    let metrics = printed_address(&lines[1], "http://");
    let secret = |kind: &str, n: usize| {
        format!("{kind}-SECRET{n}-dQw4w9WgXcQ:APA91bHun4MxP5egoKMwt2KZFBaFUH")
    };
    let mut tokens = vec![secret("ok", 0), secret("gone", 1), secret("bad", 2)];
    tokens.extend((3..9).map(|n| secret("ok", n))); // 9 wakes: 3 over the burst of 6
    let malformed = secret("ok", 99);
    let mut binary = Peer::binary(addr, "logs").await;
    for token in &tokens {
        binary.send(wake(token)).await;
    }
    binary
        .send(
            serde_json::json!({"push_wake": {"platform": "apns", "token": malformed}}).to_string(),
        )
        .await;
    binary
        .send(serde_json::json!({"conn_id": "client-x-1", "push_wake": {"platform": "fcm", "token": malformed}}).to_string())
        .await;
    let start = Instant::now();
    loop {
        let mut total = 0;
        for outcome in OUTCOMES {
            total += child_metric(metrics, &wakes(outcome)).await;
        }
        if total == 9 {
            break;
        }
        assert!(start.elapsed() < PATIENCE, "{total} of 9 wakes counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(child_metric(metrics, &wakes("sent")).await, 4);
    assert_eq!(child_metric(metrics, &wakes("rate_limited")).await, 3);
    binary.close(1000).await;
    let _ = child.kill();
    let _ = child.wait();
    let log = stderr.join().expect("stderr");
    assert!(
        log.contains("DEBUG") && log.contains("malformed envelope dropped"),
        "debug logging is on:\n{log}"
    );
    for token in tokens.iter().chain([&malformed]) {
        assert!(!log.contains(token.as_str()), "an FCM token in the log");
        assert!(
            !log.contains("dQw4w9WgXcQ"),
            "part of an FCM token in the log"
        );
        // Named by its fingerprint instead.
        if !token.contains("SECRET99") {
            // The protocol's fingerprint, computed here: the first 8 hex digits of the SHA-256.
            let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
            let fingerprint: String = digest.as_ref()[..4]
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            assert!(log.contains(&fingerprint), "no {fingerprint} in the log");
        }
    }
    assert!(!log.contains("ya29."), "an access token in the log");
    assert_eq!(google.violations(), Vec::<String>::new());
}
