//! The client IP a request is attributed to (for the rate limit and logs): the TCP peer, the
//! right-most `X-Forwarded-For` entry, or the source of the connection's PROXY header, as
//! `--client-ip` says. A header that is not configured is ignored: a client cannot choose its own
//! IP by sending one.

use crate::config::ClientIpSource;
use hyper::HeaderMap;
use std::net::{IpAddr, SocketAddr};

/// Where a connection came from, as the listener saw it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The source address of the connection's PROXY header, if it carried one.
    pub proxied: Option<IpAddr>,
}

/// The client IP of a request with `headers` on a connection from `origin`.
pub(crate) fn client_ip(source: ClientIpSource, origin: Origin, headers: &HeaderMap) -> IpAddr {
    match source {
        ClientIpSource::Peer => origin.peer.ip(),
        ClientIpSource::ProxyProtocol => origin.proxied.unwrap_or(origin.peer.ip()),
        ClientIpSource::XForwardedFor => forwarded_for(headers).unwrap_or_else(|| origin.peer.ip()),
    }
}

/// The right-most entry of the last `X-Forwarded-For` header: the address our own load balancer
/// saw (entries to its left were written by the client and prove nothing).
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let value = headers.get_all("x-forwarded-for").iter().next_back()?;
    let entry = value.to_str().ok()?.rsplit(',').next()?.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            peer: "10.0.0.1:5000".parse().unwrap(),
            proxied: Some("192.0.2.7".parse().unwrap()),
        }
    }

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in xff {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn peer_mode_ignores_forwarded_for_and_proxy_headers() {
        let ip = client_ip(ClientIpSource::Peer, origin(), &headers(&["203.0.113.9"]));
        assert_eq!(ip, "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_for_mode_takes_the_right_most_entry_of_the_last_header() {
        let h = headers(&["1.1.1.1", "6.6.6.6, 203.0.113.9"]);
        let ip = client_ip(ClientIpSource::XForwardedFor, origin(), &h);
        assert_eq!(ip, "203.0.113.9".parse::<IpAddr>().unwrap());
        let h = headers(&["[2001:db8::1]:443"]);
        let ip = client_ip(ClientIpSource::XForwardedFor, origin(), &h);
        assert_eq!(ip, "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_for_mode_falls_back_to_the_peer_without_a_usable_header() {
        for h in [headers(&[]), headers(&["not an ip"])] {
            let ip = client_ip(ClientIpSource::XForwardedFor, origin(), &h);
            assert_eq!(ip, "10.0.0.1".parse::<IpAddr>().unwrap());
        }
    }

    #[test]
    fn proxy_mode_takes_the_proxy_header_source() {
        let ip = client_ip(
            ClientIpSource::ProxyProtocol,
            origin(),
            &headers(&["6.6.6.6"]),
        );
        assert_eq!(ip, "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
