//! One wake, sent: FCM's HTTP v1 `messages:send` for a registration token, with the cached
//! access token (fetched again once if FCM answers 401), and the reply sorted into the outcome
//! `relay_push_wakes_total` counts.

use super::credentials::ServiceAccount;
use super::https::{CallError, Https, Reply};
use super::oauth::Tokens;
use crate::metrics::WakeOutcome;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Request, StatusCode, Uri};
use std::fmt;
use std::sync::Arc;

/// What became of a send, with what a log line may say about it.
#[derive(Debug)]
pub(super) struct Sent {
    /// The outcome counted.
    pub outcome: WakeOutcome,
    /// Why, for the log (a status, a timeout, hyper's error): never a token.
    pub detail: Detail,
}

/// The log's view of a send's end.
#[derive(Debug)]
pub(super) enum Detail {
    /// FCM answered with this status.
    Status(u16),
    /// FCM gave no answer.
    Call(CallError),
    /// No access token.
    Token(super::oauth::FetchError),
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detail::Status(status) => write!(f, "FCM answered {status}"),
            Detail::Call(error) => write!(f, "FCM: {error}"),
            Detail::Token(error) => error.fmt(f),
        }
    }
}

/// Sends wakes for one service account.
pub(super) struct Fcm {
    https: Https,
    account: ServiceAccount,
    send: Uri,
    tokens: Tokens,
}

impl Fcm {
    /// The sender posting to `send` (`{endpoint}/v1/projects/{project_id}/messages:send`, see
    /// [`send_uri`]).
    pub(super) fn new(https: Https, account: ServiceAccount, send: Uri) -> Fcm {
        Fcm {
            https,
            account,
            send,
            tokens: Tokens::new(),
        }
    }

    /// Sends one wake to the phone whose FCM registration token is `token`.
    pub(super) async fn send(&self, token: &str) -> Sent {
        let body = Bytes::from(
            serde_json::json!({"message": {"token": token, "android": {"priority": "HIGH"}}})
                .to_string(),
        );
        let mut refreshed = false;
        loop {
            let access = match self.tokens.get(&self.https, &self.account).await {
                Ok(access) => access,
                Err(error) => {
                    return Sent {
                        outcome: WakeOutcome::TokenFetchFailed,
                        detail: Detail::Token(error),
                    };
                }
            };
            let reply = match self.post(&access, body.clone()).await {
                Ok(reply) => reply,
                Err(error) => {
                    return Sent {
                        outcome: WakeOutcome::SendFailed,
                        detail: Detail::Call(error),
                    };
                }
            };
            if reply.status == StatusCode::UNAUTHORIZED && !refreshed {
                // The access token was revoked or expired early: fetch another, once.
                self.tokens.forget(&access).await;
                refreshed = true;
                continue;
            }
            return Sent {
                outcome: classify(&reply),
                detail: Detail::Status(reply.status.as_u16()),
            };
        }
    }

    async fn post(&self, access: &Arc<str>, body: Bytes) -> Result<Reply, CallError> {
        let bearer = HeaderValue::from_str(&format!("Bearer {access}"))
            .map_err(|_| CallError::Failed("the access token is not a header value".into()))?;
        let request = Request::post(self.send.clone())
            .header(AUTHORIZATION, bearer)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(body))
            .map_err(|_| CallError::Failed("the request could not be built".into()))?;
        self.https.call(request).await
    }
}

/// `{endpoint}/v1/projects/{project_id}/messages:send`; `Err` if that is not a URL (an
/// endpoint with a query or fragment).
pub(super) fn send_uri(endpoint: &Uri, project_id: &str) -> Result<Uri, &'static str> {
    if endpoint.query().is_some() {
        return Err("it has a query");
    }
    let base = endpoint.to_string();
    format!(
        "{}/v1/projects/{project_id}/messages:send",
        base.trim_end_matches('/')
    )
    .parse()
    .map_err(|_| "no URL can be made of it")
}

/// FCM's reply as an outcome: 2xx sent; 404 or an `UNREGISTERED` error code unregistered
/// (the token is stale: the app was uninstalled or its token rotated); other 4xx rejected; 5xx
/// (and a redirect, never followed) send_failed.
pub(super) fn classify(reply: &Reply) -> WakeOutcome {
    let status = reply.status;
    if status.is_success() {
        WakeOutcome::Sent
    } else if status == StatusCode::NOT_FOUND || unregistered(&reply.body) {
        WakeOutcome::Unregistered
    } else if status.is_client_error() {
        WakeOutcome::Rejected
    } else {
        WakeOutcome::SendFailed
    }
}

/// Whether FCM's error body carries the `UNREGISTERED` error code
/// (`{"error":{"details":[{"errorCode":"UNREGISTERED",…}]}}`) or status.
fn unregistered(body: &[u8]) -> bool {
    let Ok(reply) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let error = &reply["error"];
    error["status"] == "UNREGISTERED"
        || error["details"]
            .as_array()
            .is_some_and(|details| details.iter().any(|d| d["errorCode"] == "UNREGISTERED"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_send_url_is_the_endpoint_with_the_projects_path() {
        let at = |endpoint: &str| {
            send_uri(&endpoint.parse().unwrap(), "demo-1").map(|uri| uri.to_string())
        };
        let send = "https://fcm.googleapis.com/v1/projects/demo-1/messages:send";
        assert_eq!(at("https://fcm.googleapis.com").as_deref(), Ok(send));
        assert_eq!(at("https://fcm.googleapis.com/").as_deref(), Ok(send));
        assert_eq!(
            at("https://gw.example:8443/fcm/").as_deref(),
            Ok("https://gw.example:8443/fcm/v1/projects/demo-1/messages:send")
        );
        assert!(at("https://gw.example/?key=1").is_err());
    }

    #[test]
    fn replies_are_sorted_as_the_metric_documents() {
        let unregistered = r#"{"error":{"code":400,"status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#;
        assert_eq!(classify(&reply(200, "{}")), WakeOutcome::Sent);
        assert_eq!(classify(&reply(404, "")), WakeOutcome::Unregistered);
        assert_eq!(
            classify(&reply(400, unregistered)),
            WakeOutcome::Unregistered
        );
        assert_eq!(classify(&reply(400, "{}")), WakeOutcome::Rejected);
        assert_eq!(classify(&reply(403, "")), WakeOutcome::Rejected);
        assert_eq!(classify(&reply(429, "")), WakeOutcome::Rejected);
        assert_eq!(classify(&reply(500, "")), WakeOutcome::SendFailed);
        assert_eq!(classify(&reply(503, "")), WakeOutcome::SendFailed);
        assert_eq!(classify(&reply(302, "")), WakeOutcome::SendFailed);
    }
}
