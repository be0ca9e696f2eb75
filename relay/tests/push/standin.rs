//! Stand-ins for Google's OAuth token endpoint and FCM's HTTP v1 API, served over TLS by the
//! test (a test CA and a certificate for 127.0.0.1 made by rcgen, tokio-rustls, hyper), checking
//! what the real ones would: the token endpoint verifies the JWT's RS256 signature with the
//! service account's public key and its claims; FCM checks the project, the bearer token (one
//! the token endpoint issued and has not revoked: else 401) and the message's shape.
//!
//! FCM answers by the registration token's prefix, so each test picks its replies: `ok-` 200,
//! `gone-` 404 `UNREGISTERED`, `unreg-` 400 with the `UNREGISTERED` error code, `bad-` 400
//! `INVALID_ARGUMENT`, `down-` 503, `stall-` 200 once [`Google::release`] is called, `mute-` never.
//! Everything is counted; nothing here sleeps.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use ring::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The project the test service account is for.
pub const PROJECT: &str = "relay-test-project";
/// The test service account's e-mail.
pub const EMAIL: &str = "relay-push@relay-test-project.iam.gserviceaccount.com";
/// FCM's scope.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// A 2048-bit RSA key made once per test process by `openssl genpkey` (PKCS#8 PEM, as Google
/// issues them).
pub fn rsa_key_pem() -> &'static str {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let out = std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl genpkey runs");
        assert!(out.status.success(), "openssl genpkey failed");
        String::from_utf8(out.stdout).expect("PEM is ASCII")
    })
}

/// The public half of [`rsa_key_pem`] (PKCS#1 `RSAPublicKey` DER, what ring verifies with).
fn public_key() -> Vec<u8> {
    let der = PrivateKeyDer::from_pem_slice(rsa_key_pem().as_bytes()).expect("PEM key");
    let PrivateKeyDer::Pkcs8(der) = der else {
        panic!("openssl genpkey writes PKCS#8")
    };
    let pair = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("RSA key");
    pair.public_key().as_ref().to_vec()
}

/// What the stand-ins saw.
#[derive(Default)]
pub struct Seen {
    /// Grants answered with an access token.
    pub token_fetches: AtomicUsize,
    /// Requests to `messages:send`, answered or not.
    pub fcm_requests: AtomicUsize,
    /// `messages:send` requests being handled now, and the most at once.
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    /// The registration tokens of the messages FCM accepted (200).
    pub delivered: Mutex<Vec<String>>,
    /// Everything a real Google would have refused (the tests assert it stays empty).
    pub violations: Mutex<Vec<String>>,
}

struct State {
    seen: Seen,
    public_key: Vec<u8>,
    token_uri: String,
    /// Access tokens issued and not revoked.
    valid: Mutex<Vec<String>>,
    /// The token endpoint answers 500.
    token_down: AtomicBool,
    /// FCM answers 401 whatever the bearer.
    always_401: AtomicBool,
    /// The `expires_in` of the access tokens issued.
    expires_in: AtomicU64,
    /// `stall-` messages wait until this turns true.
    released: watch::Sender<bool>,
}

/// Google's token endpoint and FCM on one TLS listener.
pub struct Google {
    state: Arc<State>,
    /// `https://127.0.0.1:PORT` (FCM's base URL, `--fcm-endpoint`).
    pub endpoint: String,
    /// The test CA's certificate, PEM (`--fcm-ca-file`).
    pub ca_file: PathBuf,
    /// A valid service-account file whose `token_uri` is the stand-in's.
    pub credentials: PathBuf,
    _task: tokio::task::JoinHandle<()>,
}

impl Google {
    /// Starts the stand-ins on a free loopback port; the files go into `dir`.
    pub async fn start(dir: &Path) -> Google {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "relay push test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write CA");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("leaf key DER"),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let endpoint = format!("https://{addr}");
        let token_uri = format!("{endpoint}/token");
        let credentials = dir.join("service-account.json");
        write_account(&credentials, &service_account(&token_uri));
        let state = Arc::new(State {
            seen: Seen::default(),
            public_key: public_key(),
            token_uri,
            valid: Mutex::new(Vec::new()),
            token_down: AtomicBool::new(false),
            always_401: AtomicBool::new(false),
            expires_in: AtomicU64::new(3599),
            released: watch::channel(false).0,
        });
        let task = tokio::spawn(serve(listener, acceptor, state.clone()));
        Google {
            state,
            endpoint,
            ca_file,
            credentials,
            _task: task,
        }
    }

    /// What the stand-ins saw.
    pub fn seen(&self) -> &Seen {
        &self.state.seen
    }

    /// The token endpoint answers 500 (`true`) or works (`false`).
    pub fn set_token_down(&self, down: bool) {
        self.state.token_down.store(down, Ordering::SeqCst);
    }

    /// FCM answers 401 to every bearer (`true`) or checks them (`false`).
    pub fn set_always_401(&self, on: bool) {
        self.state.always_401.store(on, Ordering::SeqCst);
    }

    /// The lifetime (`expires_in`, seconds) of the access tokens issued from now on.
    pub fn set_expires_in(&self, seconds: u64) {
        self.state.expires_in.store(seconds, Ordering::SeqCst);
    }

    /// Revokes every access token issued so far (FCM answers 401 to them).
    pub fn revoke_tokens(&self) {
        self.state.valid.lock().clear();
    }

    /// Lets every `stall-` message (waiting or still to come) through.
    pub fn release(&self) {
        self.state.released.send_replace(true);
    }

    /// The violations seen (should be none).
    pub fn violations(&self) -> Vec<String> {
        self.state.seen.violations.lock().clone()
    }
}

/// A service-account file's JSON with `token_uri`.
pub fn service_account(token_uri: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "0123456789abcdef",
        "private_key": rsa_key_pem(),
        "client_email": EMAIL,
        "client_id": "1234567890",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    })
}

/// Writes a service-account file.
pub fn write_account(path: &Path, json: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(json).unwrap()).expect("write account");
}

async fn serve(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

async fn answer(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let (head, body) = request.into_parts();
    let Ok(body) = body.collect().await else {
        return reply(400, "");
    };
    let body = body.to_bytes();
    if head.method != hyper::Method::POST {
        violation(state, format!("{} {path}", head.method));
        return reply(405, "");
    }
    if path == "/token" {
        grant(state, &head, &body)
    } else if path == format!("/v1/projects/{PROJECT}/messages:send") {
        state.seen.fcm_requests.fetch_add(1, Ordering::SeqCst);
        let now = state.seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let answer = send(state, &head, &body).await;
        state.seen.in_flight.fetch_sub(1, Ordering::SeqCst);
        answer
    } else {
        violation(state, format!("POST {path}"));
        reply(404, "")
    }
}

fn violation(state: &State, what: String) {
    state.seen.violations.lock().push(what);
}

/// The token endpoint: a JWT-bearer grant, checked as Google checks it.
fn grant(state: &State, head: &hyper::http::request::Parts, body: &[u8]) -> Response<Full<Bytes>> {
    let refuse = |what: String| {
        violation(state, format!("grant: {what}"));
        reply(400, r#"{"error":"invalid_grant"}"#)
    };
    if head
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        return refuse("not form-encoded".into());
    }
    let form = String::from_utf8_lossy(body).into_owned();
    let field = |name: &str| {
        form.split('&')
            .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            .map(|value| value.replace("%3A", ":").replace("%3a", ":"))
    };
    if field("grant_type").as_deref() != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return refuse(format!("grant_type in {form}"));
    }
    let Some(assertion) = field("assertion") else {
        return refuse("no assertion".into());
    };
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return refuse("not three JWT parts".into());
    };
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (Ok(header_json), Ok(claims_json), Ok(signature)) = (
        b64.decode(header),
        b64.decode(claims),
        b64.decode(signature),
    ) else {
        return refuse("not base64url".into());
    };
    let signed = format!("{header}.{claims}");
    if UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &state.public_key)
        .verify(signed.as_bytes(), &signature)
        .is_err()
    {
        return refuse("bad RS256 signature".into());
    }
    let header: serde_json::Value = serde_json::from_slice(&header_json).unwrap_or_default();
    let claims: serde_json::Value = serde_json::from_slice(&claims_json).unwrap_or_default();
    if header["alg"] != "RS256" {
        return refuse(format!("header {header}"));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
        return refuse(format!("claims {claims}"));
    };
    if claims["iss"] != EMAIL
        || claims["scope"] != SCOPE
        || claims["aud"] != state.token_uri.as_str()
        || exp <= iat
        || exp - iat > 3600
        || iat > now + 60
        || now > exp
    {
        return refuse(format!("claims {claims}"));
    }
    if state.token_down.load(Ordering::SeqCst) {
        return reply(500, r#"{"error":"internal_failure"}"#);
    }
    let n = state.seen.token_fetches.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("ya29.access-{n}");
    state.valid.lock().push(token.clone());
    let expires_in = state.expires_in.load(Ordering::SeqCst);
    reply(
        200,
        format!(r#"{{"access_token":"{token}","expires_in":{expires_in},"token_type":"Bearer"}}"#),
    )
}

/// FCM's `messages:send`.
async fn send(
    state: &State,
    head: &hyper::http::request::Parts,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let bearer = head
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    if state.always_401.load(Ordering::SeqCst) || !state.valid.lock().contains(&bearer) {
        return reply(401, r#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#);
    }
    let message: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let token = message["message"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let json = head
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        == Some("application/json");
    if token.is_empty() || message["message"]["android"]["priority"] != "HIGH" || !json {
        violation(state, format!("message {message}"));
        return reply(400, r#"{"error":{"code":400,"status":"INVALID_ARGUMENT"}}"#);
    }
    let prefix = token.split('-').next().unwrap_or_default();
    match prefix {
        "ok" => {}
        "stall" => {
            let mut released = state.released.subscribe();
            let _ = released.wait_for(|released| *released).await;
        }
        "mute" => std::future::pending::<()>().await,
        "gone" => {
            return reply(
                404,
                r#"{"error":{"code":404,"message":"Requested entity was not found.","status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#,
            );
        }
        "unreg" => {
            return reply(
                400,
                r#"{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#,
            );
        }
        "bad" => {
            return reply(
                400,
                r#"{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"INVALID_ARGUMENT"}]}}"#,
            );
        }
        "down" => return reply(503, r#"{"error":{"code":503,"status":"UNAVAILABLE"}}"#),
        "huge" => {
            // 64 KiB of padding, then the error code: a reader of the first 4 KiB cannot see it.
            let body = format!(
                r#"{{"padding":"{}","error":{{"code":400,"details":[{{"errorCode":"UNREGISTERED"}}]}}}}"#,
                "x".repeat(64 * 1024)
            );
            return reply(400, body);
        }
        "moved" => {
            let mut moved = reply(302, "");
            moved.headers_mut().insert(
                "location",
                hyper::header::HeaderValue::from_str(&format!(
                    "/v1/projects/{PROJECT}/messages:send?moved"
                ))
                .unwrap(),
            );
            return moved;
        }
        _ => {
            violation(state, format!("unexpected token {token}"));
            return reply(400, "");
        }
    }
    state.seen.delivered.lock().push(token);
    reply(
        200,
        format!(r#"{{"name":"projects/{PROJECT}/messages/0:1"}}"#),
    )
}
