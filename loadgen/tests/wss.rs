//! `relay-loadgen` against a `wss://` relay: a relay-server with TLS from certificate files in
//! this process, the load generator as a child process with worker processes, trusting the test
//! CA through `--ca-file`.

use relay_server::{RelayConfig, TlsConfig};
use std::process::Command;

/// A test CA (ECDSA P-256) and a leaf for `localhost` signed by it, all as PEM: (ca, cert, key).
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(params, ca_key);
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_loadgen_loads_a_wss_relay_from_worker_processes_trusting_its_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates();
    let [ca_file, cert_file, key_file] =
        ["ca.pem", "cert.pem", "key.pem"].map(|name| dir.path().join(name));
    std::fs::write(&ca_file, ca).unwrap();
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let relay = relay_server::start(RelayConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        rate_burst: 0,
        tls: Some(TlsConfig::files(&cert_file, &key_file)),
        ..RelayConfig::default()
    })
    .await
    .expect("a TLS relay starts");
    let url = format!("wss://localhost:{}", relay.local_addr().port());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_relay-loadgen"))
            .args([
                "--url",
                &url,
                "--procs",
                "2",
                "--binaries",
                "2",
                "--phones",
                "1",
            ])
            .args(["--rate", "40", "--duration", "500ms", "--json", "--ca-file"])
            .arg(&ca_file)
            .output()
            .expect("relay-loadgen runs")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_eq!(json["binaries_setup"]["accepted"], 2, "{json}");
    assert_eq!(json["phones_setup"]["accepted"], 2, "{json}");
    for direction in ["up", "down"] {
        let d = &json["step"][direction];
        assert!(d["sent"].as_u64().unwrap() > 0, "{json}");
        assert_eq!(d["received"], d["sent"], "{json}");
    }
    relay.shutdown().await;
}
