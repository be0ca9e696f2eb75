//! OAuth 2.0 access tokens for FCM by the JWT-bearer grant (RFC 7523), as Google documents it
//! for service accounts: a JWT signed RS256 with the account's key, claims `iss` (the account's
//! e-mail), `scope` (FCM's), `aud` (the `token_uri`), `iat` and `exp` one hour apart, posted
//! form-encoded to the `token_uri`; the reply's `access_token` is cached until a minute before
//! its `expires_in`.
//!
//! The signature is ring's `RsaKeyPair` (RSA_PKCS1_SHA256), not a JWT crate: the grant needs one
//! signature over two base64url JSON parts, ring is already in the tree, and jsonwebtoken (the
//! well-kept one) signs with aws-lc-rs or RustCrypto since version 10, a second crypto library.

use super::credentials::ServiceAccount;
use super::https::{CallError, Https};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use ring::rand::SystemRandom;
use ring::signature::RSA_PKCS1_SHA256;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The scope FCM's HTTP v1 API requires.
pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// How long a signed assertion is valid (the most Google accepts).
const LIFETIME: Duration = Duration::from_secs(3600);

/// How long before its expiry a cached access token is replaced.
const MARGIN: Duration = Duration::from_secs(60);

/// Why no access token could be had.
#[derive(Debug)]
pub(super) enum FetchError {
    /// The assertion could not be signed (ring refused).
    Sign,
    /// The token endpoint gave no reply.
    Call(CallError),
    /// The token endpoint answered with this status.
    Status(u16),
    /// A 200 reply without a usable `access_token`.
    BadReply,
    /// The fetch this caller waited for failed.
    Shared,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Sign => f.write_str("the assertion could not be signed"),
            FetchError::Call(error) => write!(f, "token endpoint: {error}"),
            FetchError::Status(status) => write!(f, "token endpoint answered {status}"),
            FetchError::BadReply => f.write_str("token endpoint: no access_token in its reply"),
            FetchError::Shared => f.write_str("the token fetch this send waited for failed"),
        }
    }
}

/// An access token and when to replace it.
struct Cached {
    token: Arc<str>,
    refresh_at: Instant,
}

/// The cache's state, behind its lock.
#[derive(Default)]
struct State {
    cached: Option<Cached>,
    /// When the last fetch failed, if it did.
    failed_at: Option<Instant>,
}

/// The cached access token. Concurrent callers share one fetch rather than each making one:
/// the first fetches while holding the lock, the others wait for it and take its token, or its
/// failure (a caller that began waiting before a fetch failed does not try again at once, so
/// an unreachable token endpoint costs one time-out, not one per waiting send).
pub(super) struct Tokens {
    state: tokio::sync::Mutex<State>,
}

impl Tokens {
    /// An empty cache.
    pub(super) fn new() -> Self {
        Tokens {
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// The cached access token, or a new one fetched now (one fetch at a time).
    ///
    /// # Errors
    ///
    /// The fetch failed, or one that ended while this caller waited for it failed (nothing is
    /// cached then; a later caller tries again).
    pub(super) async fn get(
        &self,
        https: &Https,
        account: &ServiceAccount,
    ) -> Result<Arc<str>, FetchError> {
        let asked = Instant::now();
        let mut state = self.state.lock().await;
        if let Some(cached) = state
            .cached
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
        {
            return Ok(cached.token.clone());
        }
        if state.failed_at.is_some_and(|failed| failed >= asked) {
            return Err(FetchError::Shared);
        }
        state.cached = None;
        match fetch(https, account).await {
            Ok((token, expires_in)) => {
                let token: Arc<str> = token.into();
                state.cached = Some(Cached {
                    token: token.clone(),
                    refresh_at: Instant::now() + expires_in.saturating_sub(MARGIN),
                });
                state.failed_at = None;
                Ok(token)
            }
            Err(error) => {
                state.failed_at = Some(Instant::now());
                Err(error)
            }
        }
    }

    /// Forgets `used` if it is still the cached token (FCM refused it with 401): the next
    /// [`get`](Self::get) fetches a new one, once, however many sends saw the 401.
    pub(super) async fn forget(&self, used: &Arc<str>) {
        let mut state = self.state.lock().await;
        if state
            .cached
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(&c.token, used))
        {
            state.cached = None;
        }
    }
}

/// Posts a fresh assertion to the token endpoint: the access token and its lifetime.
async fn fetch(https: &Https, account: &ServiceAccount) -> Result<(String, Duration), FetchError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let assertion = assertion(account, now)?;
    // The grant type, form-encoded once here; the assertion is base64url and '.', which form
    // encoding leaves as they are.
    let body = format!(
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
    );
    let request = Request::post(account.token_uri.clone())
        .header(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| FetchError::BadReply)?;
    let reply = https.call(request).await.map_err(FetchError::Call)?;
    if !reply.status.is_success() {
        return Err(FetchError::Status(reply.status.as_u16()));
    }
    #[derive(serde::Deserialize)]
    struct Grant {
        access_token: String,
        expires_in: Option<u64>,
    }
    let grant: Grant = serde_json::from_slice(&reply.body).map_err(|_| FetchError::BadReply)?;
    // The token goes into a header: refuse what a header cannot carry.
    if grant.access_token.is_empty() || HeaderValue::from_str(&grant.access_token).is_err() {
        return Err(FetchError::BadReply);
    }
    let lifetime = Duration::from_secs(grant.expires_in.unwrap_or(LIFETIME.as_secs()));
    Ok((grant.access_token, lifetime))
}

/// The signed JWT (`header.claims.signature`, each base64url) for a grant made at `now`
/// (seconds since the epoch).
pub(super) fn assertion(account: &ServiceAccount, now: u64) -> Result<String, FetchError> {
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    let claims = serde_json::json!({
        "iss": account.client_email,
        "scope": SCOPE,
        "aud": account.token_uri.to_string(),
        "iat": now,
        "exp": now + LIFETIME.as_secs(),
    });
    let mut jwt = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; account.key.public().modulus_len()];
    account
        .key
        .sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            jwt.as_bytes(),
            &mut signature,
        )
        .map_err(|_| FetchError::Sign)?;
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(jwt)
}
