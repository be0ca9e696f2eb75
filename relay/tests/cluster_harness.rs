//! The cluster tests' own harness: the round-robin HAProxy configuration the end-to-end cluster
//! tests will put in front of three instances really alternates between its backends.

use relay_cluster_testkit as cluster_support;

use cluster_support::haproxy::Haproxy;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP backend that answers every request with its `name` and closes.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match socket.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// One request through `addr`; the body of the answer.
fn get(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(cluster_support::PATIENCE))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.rsplit("\r\n\r\n").next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_round_robin_alternates_between_its_backends() {
    let backends = [backend("one").await, backend("two").await];
    let Some(haproxy) = Haproxy::round_robin("haproxy_in_round_robin", &backends) else {
        return;
    };
    let addr = haproxy.addr();
    let answers =
        tokio::task::spawn_blocking(move || (0..6).map(|_| get(addr)).collect::<Vec<_>>())
            .await
            .unwrap();
    for pair in answers.windows(2) {
        assert_ne!(pair[0], pair[1], "not round-robin: {answers:?}");
    }
    assert!(answers.iter().any(|a| a == "one") && answers.iter().any(|a| a == "two"));
}
