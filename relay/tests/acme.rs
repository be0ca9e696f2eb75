//! ACME against a real ACME server: Debian's `pebble` (Let's Encrypt's test CA), with
//! `pebble-challtestsrv` as its DNS server answering 127.0.0.1 for every name. Each test starts
//! both on free loopback ports (pebble's HTTPS certificate made by the test's CA) and points
//! pebble's http-01 and tls-alpn-01 validation ports at the relay's listeners. Clients verify the
//! relay against Pebble's root (`/roots/0` on its management port).
//!
//! Without `pebble` (or `PEBBLE`/`PEBBLE_CHALLTESTSRV`) the tests print a notice and pass, unless
//! `RELAY_CLUSTER_TESTS=required` (as CI sets) makes them fail.

use relay_cluster_testkit as cluster_support;
mod support;
mod tls_support;

use cluster_support::{find_tool, free_port, skip};
use relay_server::{AcmeConfig, Relay, RelayConfig, TlsConfig};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tls_support::*;

/// The name the relay gets a certificate for (pebble-challtestsrv resolves it to 127.0.0.1).
const DOMAIN: &str = "relay.pebble.test";

/// A running pebble and its DNS server; both killed and reaped on drop.
struct Pebble {
    children: Vec<Child>,
    dir: tempfile::TempDir,
    directory: String,
    management: u16,
    https_ca: Ca,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Pebble {
    /// Pebble validating http-01 at `http_port` and tls-alpn-01 at `tls_port`; `None` (after a
    /// notice) if the tools are missing.
    fn start(test: &str, http_port: u16, tls_port: u16) -> Option<Pebble> {
        let Some(pebble) = find_tool("PEBBLE", "pebble") else {
            skip(test, "pebble", "PEBBLE");
            return None;
        };
        let Some(dns) = find_tool("PEBBLE_CHALLTESTSRV", "pebble-challtestsrv") else {
            skip(test, "pebble-challtestsrv", "PEBBLE_CHALLTESTSRV");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let https_ca = Ca::new();
        let leaf = https_ca.leaf();
        std::fs::write(dir.path().join("cert.pem"), &leaf.cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), &leaf.key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &https_ca.pem).unwrap();
        let (dns_port, dns_management) = (free_port(), free_port());
        let (acme_port, management) = (free_port(), free_port());
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("cert.pem"),
            "privateKey": dir.path().join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = dir.path().join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let mut children = Vec::new();
        children.push(
            Command::new(dns)
                .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
                .args(["-management", &format!("127.0.0.1:{dns_management}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .stdin(Stdio::null())
                .stdout(log("dns.log"))
                .stderr(log("dns.err"))
                .spawn()
                .expect("start pebble-challtestsrv"),
        );
        children.push(
            Command::new(pebble)
                .arg("-config")
                .arg(&config_path)
                .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdin(Stdio::null())
                .stdout(log("pebble.log"))
                .stderr(log("pebble.err"))
                .spawn()
                .expect("start pebble"),
        );
        let pebble = Pebble {
            children,
            dir,
            directory: format!("https://localhost:{acme_port}/dir"),
            management,
            https_ca,
        };
        for port in [dns_management, acme_port, management] {
            let deadline = std::time::Instant::now() + PATIENCE;
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(std::time::Instant::now() < deadline, "{}", pebble.logs());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Some(pebble)
    }

    /// What pebble and its DNS server logged (for a failing test's message).
    fn logs(&self) -> String {
        ["pebble.log", "pebble.err", "dns.log", "dns.err"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                format!("--- {name}\n{text}")
            })
            .collect()
    }

    /// The file trusting pebble's own HTTPS (`--acme-ca-file`).
    fn https_ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A client configuration trusting the certificates pebble issues (its root, `/roots/0`).
    async fn issued_roots(&self) -> Arc<rustls::ClientConfig> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.management));
        let answer = https(
            addr,
            &self.https_ca,
            "GET /roots/0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("a response");
        assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
        let path = self.dir.path().join("root.pem");
        std::fs::write(&path, body).unwrap();
        relay_server::client_tls(Some(&path)).expect("pebble's root")
    }
}

/// The relay's configuration for ACME from `pebble` (the directory given apart, so that a relay
/// can start before pebble does) on `tls_port`, http-01 on `http_port` (or tls-alpn-01).
fn acme_config(
    directory: &str,
    https_ca: &Path,
    cache: &Path,
    tls_port: u16,
    http_port: Option<u16>,
) -> RelayConfig {
    let mut acme = AcmeConfig::new([DOMAIN], cache);
    acme.directory = directory.to_owned();
    acme.ca_file = Some(https_ca.to_owned());
    acme.http_listen = http_port.map(|port| SocketAddr::from(([127, 0, 0, 1], port)));
    acme.first_retry = Duration::from_millis(200);
    RelayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], tls_port)),
        tls: Some(TlsConfig::acme(acme)),
        ..config()
    }
}

/// Waits (bounded) until `series` on `relay` is at least `at_least`.
async fn await_metric(relay: &Relay, series_name: &str, at_least: u64, pebble: &Pebble) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while metric(relay, series_name).await < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series_name} never reached {at_least}\n{}\n{}",
            scrape(relay).await,
            pebble.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A binary and a phone exchange frames over `wss://DOMAIN`, verified against `roots`.
async fn exchange_over_wss(relay: &Relay, roots: &Arc<rustls::ClientConfig>, id: &str) {
    let addr = relay.local_addr();
    let binary = wss_to(
        addr,
        DOMAIN,
        "/v1/server",
        &binary_headers(id),
        roots.clone(),
    )
    .await;
    let phone = wss_to(
        addr,
        DOMAIN,
        "/v1/client",
        &phone_headers(id),
        roots.clone(),
    )
    .await;
    let (mut binary, mut phone) = (Peer::new(binary), Peer::new(phone));
    phone.send(r#"{"over":"acme"}"#).await;
    let envelope = binary.json().await;
    assert_eq!(envelope["frame"]["over"], "acme", "{envelope}");
    let conn_id = envelope["conn_id"].as_str().unwrap();
    binary
        .send(format!(r#"{{"conn_id":"{conn_id}","frame":{{"back":1}}}}"#))
        .await;
    assert_eq!(phone.json().await["back"], 1);
}

const ISSUED: &str = "relay_acme_orders_total{outcome=\"issued\"}";
const FAILED: &str = "relay_acme_orders_total{outcome=\"failed\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_01_issues_a_certificate_not_ready_before_it_and_a_restart_serves_the_cache() {
    let test = "http_01_issues_a_certificate_not_ready_before_it_and_a_restart_serves_the_cache";
    let (http_port, tls_port) = (free_port(), free_port());
    // Pebble's ports are known before it runs: the relay starts first, while no ACME server
    // answers, so its first orders fail.
    let pebble_dir = tempfile::tempdir().unwrap();
    let cache = pebble_dir.path().join("cache");
    let Some(pebble) = Pebble::start(test, http_port, tls_port) else {
        return;
    };
    let unreachable = format!("https://localhost:{}/dir", free_port());
    let waiting = relay(acme_config(
        &unreachable,
        &pebble.https_ca_file(),
        &cache,
        tls_port,
        Some(http_port),
    ))
    .await;
    await_metric(&waiting, FAILED, 1, &pebble).await;
    // Not ready: no handshake completes.
    let roots = pebble.issued_roots().await;
    let stream = tokio::net::TcpStream::connect(waiting.local_addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(DOMAIN).unwrap();
    let handshake = tokio_rustls::TlsConnector::from(roots.clone()).connect(name, stream);
    assert!(
        handshake.await.is_err(),
        "a handshake before any certificate"
    );
    let no_certificate = "relay_tls_handshake_failures_total{reason=\"no_certificate\"}";
    await_metric(&waiting, no_certificate, 1, &pebble).await;
    waiting.shutdown().await;

    // With pebble as the directory: issued over http-01, served, and cached.
    let relay = relay(acme_config(
        &pebble.directory,
        &pebble.https_ca_file(),
        &cache,
        tls_port,
        Some(http_port),
    ))
    .await;
    await_metric(&relay, ISSUED, 1, &pebble).await;
    exchange_over_wss(&relay, &roots, "acme-http").await;
    let text = scrape(&relay).await;
    let expiry = format!("relay_tls_certificate_expiry_timestamp_seconds{{name=\"{DOMAIN}\"}}");
    assert!(series(&text, &expiry) > 1_700_000_000, "{text}");
    // The Host check takes the ACME names.
    let wrong = wss_request(
        &relay,
        &roots,
        "GET /readyz HTTP/1.1\r\nHost: other.test\r\n\r\n",
    )
    .await;
    assert!(wrong.starts_with("HTTP/1.1 421 "), "{wrong}");
    let ready = wss_request(
        &relay,
        &roots,
        &format!("GET /readyz HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(ready.starts_with("HTTP/1.1 200 "), "{ready}");
    // The http-01 listener serves nothing but challenges.
    let other = http(
        relay.http_addr().unwrap(),
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(other.starts_with("HTTP/1.1 404 "), "{other}");
    relay.shutdown().await;

    // A restart serves the cached certificate at once, with no order.
    let restarted = support::relay(acme_config(
        &pebble.directory,
        &pebble.https_ca_file(),
        &cache,
        tls_port,
        Some(http_port),
    ))
    .await;
    exchange_over_wss(&restarted, &roots, "acme-cached").await;
    let text = scrape(&restarted).await;
    assert_eq!(series(&text, ISSUED), 0, "{text}");
    assert_eq!(series(&text, FAILED), 0, "{text}");
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_issues_a_certificate_on_the_tls_listener() {
    let test = "tls_alpn_01_issues_a_certificate_on_the_tls_listener";
    let (http_port, tls_port) = (free_port(), free_port());
    let Some(pebble) = Pebble::start(test, http_port, tls_port) else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let relay = relay(acme_config(
        &pebble.directory,
        &pebble.https_ca_file(),
        &cache.path().join("acme"),
        tls_port,
        None,
    ))
    .await;
    assert_eq!(relay.http_addr(), None);
    await_metric(&relay, ISSUED, 1, &pebble).await;
    let roots = pebble.issued_roots().await;
    exchange_over_wss(&relay, &roots, "acme-alpn").await;
    relay.shutdown().await;
}

#[tokio::test]
async fn a_cache_directory_others_can_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("open");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = acme_config(
        "https://localhost:1/dir",
        Path::new("none.pem"),
        &cache,
        0,
        None,
    );
    let error = match relay_server::start(config).await {
        Ok(_) => panic!("started with a readable cache"),
        Err(error) => error,
    };
    assert!(error.to_string().contains("others can read it"), "{error}");
    // A new one is created 0700.
    let fresh = dir.path().join("fresh").join("acme");
    let config = acme_config(
        "https://localhost:1/dir",
        Path::new("none.pem"),
        &fresh,
        0,
        None,
    );
    let relay = relay(config).await;
    let mode = std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    relay.shutdown().await;
}

/// One request over TLS to `relay` as `DOMAIN`; the whole response.
async fn wss_request(relay: &Relay, roots: &Arc<rustls::ClientConfig>, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tcp = tokio::net::TcpStream::connect(relay.local_addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(DOMAIN).unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(roots.clone())
        .connect(name, tcp)
        .await
        .expect("handshake");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_certificate_past_two_thirds_of_its_life_is_served_then_renewed() {
    let test = "a_cached_certificate_past_two_thirds_of_its_life_is_served_then_renewed";
    let (http_port, tls_port) = (free_port(), free_port());
    let Some(pebble) = Pebble::start(test, http_port, tls_port) else {
        return;
    };
    // A cached certificate for the name, valid from 2000 until two days from now: usable, and
    // long past two thirds of its lifetime.
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("acme");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let y2000 = 946_684_800;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![DOMAIN.to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = params.not_before + Duration::from_secs(now - y2000 + 2 * 86_400);
    let old = params.self_signed(&key).unwrap();
    std::fs::write(cache.join("certificate.pem"), old.pem()).unwrap();
    std::fs::write(cache.join("certificate-key.pem"), key.serialize_pem()).unwrap();

    let relay = relay(acme_config(
        &pebble.directory,
        &pebble.https_ca_file(),
        &cache,
        tls_port,
        Some(http_port),
    ))
    .await;
    await_metric(&relay, ISSUED, 1, &pebble).await;
    // The cached one was put in place first, then the renewed one.
    let loaded = "relay_tls_certificate_loads_total{outcome=\"loaded\"}";
    assert_eq!(metric(&relay, loaded).await, 2);
    let roots = pebble.issued_roots().await;
    exchange_over_wss(&relay, &roots, "acme-renewed").await;
    let text = scrape(&relay).await;
    let expiry = format!("relay_tls_certificate_expiry_timestamp_seconds{{name=\"{DOMAIN}\"}}");
    assert!(series(&text, &expiry) > now + 2 * 86_400, "{text}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_binary_takes_the_acme_flags_and_logs_why_it_is_not_ready_until_issued() {
    let test = "the_relay_binary_takes_the_acme_flags_and_logs_why_it_is_not_ready_until_issued";
    let (http_port, tls_port) = (free_port(), free_port());
    let Some(pebble) = Pebble::start(test, http_port, tls_port) else {
        return;
    };
    let cache = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--listen", &format!("127.0.0.1:{tls_port}")])
        .args(["--metrics-listen", "off", "--acme-domain", DOMAIN])
        .arg("--acme-cache")
        .arg(cache.path().join("acme"))
        .args(["--acme-directory", &pebble.directory])
        .arg("--acme-ca-file")
        .arg(pebble.https_ca_file())
        .args(["--acme-contact", "mailto:ops@relay.pebble.test"])
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start relay");
    let stderr = collect_stderr(&mut child);
    let addr = support::printed_address(&support::printed_lines(&mut child, 1)[0], "wss://");
    let roots = pebble.issued_roots().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(DOMAIN).unwrap();
        let connector = tokio_rustls::TlsConnector::from(roots.clone());
        if connector.connect(name, tcp).await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", pebble.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
    let log = stderr.join().unwrap();
    let waiting = log
        .find("no TLS certificate yet: not ready")
        .unwrap_or_else(|| panic!("{log}"));
    let issued = log
        .find("TLS certificate issued by ACME")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(waiting < issued, "{log}");
}
