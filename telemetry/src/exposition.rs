//! `GET /metrics` over plain HTTP/1.1, for Prometheus (and anything else that scrapes).
//!
//! A dozen lines of HTTP rather than a web framework: one path, one method, no keep-alive,
//! a bounded request head and a timeout, so it costs a Pi nothing and cannot be used to
//! hold memory. Bind it to 127.0.0.1 (the default everywhere) unless the scraper runs
//! elsewhere: the numbers are not secret, but they are nobody else's business either.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::defaults::{HTTP_CONNECTIONS, HTTP_TIMEOUT, MAX_HTTP_REQUEST};

/// The content type of the OpenMetrics text format that `prometheus-client` writes;
/// Prometheus asks for it and parses it.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address is taken or not ours.
    #[error("could not listen for metrics on {addr}: {source} (is another wtd already using this port?)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds `addr`; call [`MetricsServer::run`] to serve.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    pub async fn bind(addr: SocketAddr) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        Ok(MetricsServer { listener })
    }

    /// Takes over a listener bound elsewhere (so the bind error can come at start-up).
    pub fn from_listener(listener: TcpListener) -> Self {
        MetricsServer { listener }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`; `render` produces the exposition text for each scrape.
    /// Every connection task is tracked and awaited before this returns.
    pub async fn run<F>(self, render: F, shutdown: CancellationToken)
    where
        F: Fn() -> String + Send + Sync + 'static,
    {
        let render = Arc::new(render);
        let slots = Arc::new(Semaphore::new(HTTP_CONNECTIONS));
        let tasks = TaskTracker::new();
        loop {
            let (stream, _) = tokio::select! {
                _ = shutdown.cancelled() => break,
                a = self.listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        log::debug!("metrics accept failed: {e}");
                        continue;
                    }
                },
            };
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            let render = render.clone();
            let stop = shutdown.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::timeout(HTTP_TIMEOUT, serve(stream, &*render)) => {}
                }
                drop(permit);
            });
        }
        tasks.close();
        tasks.wait().await;
    }
}

async fn serve(mut stream: TcpStream, render: &(dyn Fn() -> String + Send + Sync)) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HTTP_REQUEST {
            let _ = respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
            )
            .await;
            return;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let _ = match (method, path) {
        ("GET", "/metrics") => respond(&mut stream, "200 OK", CONTENT_TYPE, render().as_bytes()).await,
        ("GET", "/") => {
            respond(
                &mut stream,
                "200 OK",
                "text/plain",
                b"wtd metrics: GET /metrics\n",
            )
            .await
        }
        ("GET", _) => {
            respond(
                &mut stream,
                "404 Not Found",
                "text/plain",
                b"only /metrics here\n",
            )
            .await
        }
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", b"GET only\n").await,
    };
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_the_rest() {
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        let run = tokio::spawn(server.run(|| "# EOF\n".to_string(), stop.clone()));
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE) && ok.ends_with("# EOF\n"), "{ok}");
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));
        let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
        assert!(get(addr, &huge).await.starts_with("HTTP/1.1 431"));
        stop.cancel();
        run.await.unwrap();
    }
}
