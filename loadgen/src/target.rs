//! The thing under load: a URL on this machine (loopback only), or a relay started in this
//! process; its resident memory from `/proc/PID/status`; and this process's descriptor limit.

#[cfg(feature = "in-process")]
use relay_server as server;
use std::net::SocketAddr;

/// A relay running inside the load generator (`--in-process`; needs the `in-process` feature).
pub struct InProcess {
    #[cfg(feature = "in-process")]
    relay: server::Relay,
    /// Built without the feature there is no relay to hold: no `InProcess` exists.
    #[cfg(not(feature = "in-process"))]
    never: std::convert::Infallible,
}

impl InProcess {
    /// Starts the relay on a free loopback port with the protocol's defaults except `max_phones`
    /// (0 = unlimited). The only place that knows `relay_server`'s start-up API.
    ///
    /// # Errors
    ///
    /// If it cannot bind, or this binary was built without the `in-process` feature.
    #[cfg(feature = "in-process")]
    pub async fn start(max_phones: usize) -> std::io::Result<InProcess> {
        let config = server::RelayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_phones,
            // Every load connection comes from loopback: no per-IP limit, no connection cap, and
            // no metrics listener on the default port.
            rate_burst: 0,
            max_connections: 0,
            metrics_listen: None,
            ..server::RelayConfig::default()
        };
        Ok(InProcess {
            relay: server::start(config).await?,
        })
    }

    /// Starts the relay — except that this binary was built without it.
    ///
    /// # Errors
    ///
    /// Always: the relay is not in this binary.
    #[cfg(not(feature = "in-process"))]
    pub async fn start(_max_phones: usize) -> std::io::Result<InProcess> {
        Err(std::io::Error::other(
            "this relay-loadgen was built without the relay \
             (cargo run -p relay-loadgen --features in-process -- --in-process ...)",
        ))
    }

    /// Its URL, `ws://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        #[cfg(not(feature = "in-process"))]
        match self.never {}
        #[cfg(feature = "in-process")]
        format!("ws://{}", self.relay.local_addr())
    }

    /// Shuts it down (closing whatever is still connected).
    pub async fn stop(self) {
        #[cfg(not(feature = "in-process"))]
        match self.never {}
        #[cfg(feature = "in-process")]
        self.relay.shutdown().await;
    }
}

/// Where a `ws://host:port` or `wss://host:port` URL points: the address to connect to and the
/// URL without a path.
///
/// # Errors
///
/// If it is neither `ws://` nor `wss://`, has a path, does not resolve, or resolves to an address that is not
/// loopback (this tool loads only targets on this machine).
pub async fn resolve(url: &str) -> Result<(SocketAddr, String), String> {
    let base = url.trim_end_matches('/');
    let (authority, default_port) = match (base.strip_prefix("ws://"), base.strip_prefix("wss://"))
    {
        (Some(authority), _) => (authority, 80),
        (_, Some(authority)) => (authority, 443),
        _ => {
            return Err(format!(
                "--url {url:?}: only ws:// and wss:// URLs are supported"
            ));
        }
    };
    if authority.contains('/') {
        return Err(format!(
            "--url {url:?}: give the relay's base URL without a path (the paths are /v1/server and /v1/client)"
        ));
    }
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| format!("--url {url:?}: cannot resolve {with_port}: {e}"))?
        .collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("--url {url:?}: {with_port} resolves to nothing"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--url {url:?} resolves to {addr}, which is not a loopback address: relay-loadgen only loads targets on this machine"
        ));
    }
    Ok((addr, base.to_owned()))
}

/// The resident set size of process `pid` in KiB (`VmRSS` in `/proc/PID/status`).
///
/// # Errors
///
/// If the file cannot be read or has no `VmRSS` line (e.g. the process is gone).
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    parse_rss(&status).ok_or_else(|| format!("{path} has no VmRSS line"))
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// This process's soft limit on open files (`Max open files` in `/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files(&limits)
}

fn parse_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_from_the_vmrss_line() {
        let status = "Name:\trelay\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_rss(status), Some(12345));
        assert_eq!(parse_rss("Name:\tzombie\n"), None);
    }

    #[test]
    fn this_process_has_a_readable_rss_and_descriptor_limit() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(open_files_limit().unwrap() > 0);
    }

    #[test]
    fn the_open_files_limit_is_the_soft_column() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            20000                20000                files\n";
        assert_eq!(parse_open_files(limits), Some(20000));
    }

    #[tokio::test]
    async fn only_loopback_ws_urls_are_accepted() {
        let (addr, base) = resolve("ws://127.0.0.1:9/").await.unwrap();
        assert_eq!(addr, SocketAddr::from(([127, 0, 0, 1], 9)));
        assert_eq!(base, "ws://127.0.0.1:9");
        assert!(resolve("ws://127.0.0.1:9/v1/server").await.is_err());
        assert!(resolve("http://127.0.0.1:9").await.is_err());
        let err = resolve("ws://192.0.2.1:80").await.unwrap_err();
        assert!(err.contains("not a loopback"), "{err}");
    }
}
