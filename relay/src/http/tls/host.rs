//! The Host check of the TLS listener (protocol, section "TLS"): with configured names, a request
//! whose host is not one of them gets 421 Misdirected Request with an empty body. The host is the
//! `Host` header, or the request target's authority when the header is absent (an absolute-form
//! target); compared case-insensitively, without its port and without a trailing dot. A request
//! with neither is misdirected too.

use hyper::Request;
use hyper::header::HOST;

/// A name as the check compares it: lower case, no trailing dot.
pub(crate) fn normalize(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The host part of a `Host` value or an authority: without its port; an IPv6 literal keeps
/// its brackets.
/// (`relay.example.com:443` → `relay.example.com`, `[::1]:8443` → `[::1]`).
pub(crate) fn strip_port(authority: &str) -> &str {
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Whether `req` is addressed to one of `names` (normalized); true when `names` is empty.
pub(crate) fn allowed<B>(names: &[String], req: &Request<B>) -> bool {
    if names.is_empty() {
        return true;
    }
    let header = req.headers().get(HOST).and_then(|v| v.to_str().ok());
    let host = header.or_else(|| req.uri().authority().map(|a| a.as_str()));
    let Some(host) = host else {
        return false;
    };
    let host = normalize(strip_port(host));
    names.contains(&host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec![normalize("relay.example.com"), normalize("Other.Example")]
    }

    fn request(host: Option<&str>, uri: &str) -> Request<()> {
        let mut builder = Request::get(uri);
        if let Some(host) = host {
            builder = builder.header(HOST, host);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn a_configured_name_passes_whatever_its_case_and_port() {
        for host in [
            "relay.example.com",
            "RELAY.example.Com",
            "relay.example.com:443",
            "relay.example.com.:8443",
            "other.example",
        ] {
            assert!(
                allowed(&names(), &request(Some(host), "/v1/client")),
                "{host}"
            );
        }
    }

    #[test]
    fn another_name_an_address_or_no_host_is_misdirected() {
        for host in [
            "evil.example",
            "relay.example.com.evil",
            "127.0.0.1:443",
            "[::1]",
        ] {
            assert!(!allowed(&names(), &request(Some(host), "/")), "{host}");
        }
        assert!(!allowed(&names(), &request(None, "/")));
    }

    #[test]
    fn without_a_host_header_the_targets_authority_counts() {
        assert!(allowed(
            &names(),
            &request(None, "https://relay.example.com:443/readyz")
        ));
        assert!(!allowed(
            &names(),
            &request(None, "https://evil.example/readyz")
        ));
    }

    #[test]
    fn ports_are_stripped_ipv6_literals_keep_their_brackets() {
        assert_eq!(strip_port("relay.example.com:443"), "relay.example.com");
        assert_eq!(strip_port("[::1]:8443"), "[::1]");
        assert_eq!(strip_port("relay.example.com"), "relay.example.com");
        assert_eq!(normalize("Relay.Example.COM."), "relay.example.com");
    }

    #[test]
    fn no_names_no_check() {
        assert!(allowed(&[], &request(Some("anything"), "/")));
        assert!(allowed(&[], &request(None, "/")));
    }
}
