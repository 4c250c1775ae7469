//! The dashboard's HTTP side: a few fixed paths over plain HTTP/1.1, no keep-alive.
//!
//! | path | what |
//! |---|---|
//! | `/` | the page (`assets/index.html`) |
//! | `/dashboard.css`, `/dashboard.js` | its style and script |
//! | `/events` | server-sent events: a snapshot, then what changed (see below) |
//! | `/state.json` | the same snapshot once, for scripts and `curl` |
//!
//! Read-only by construction: GET and HEAD only (anything else is `405`), and no path
//! changes anything. Bounded: at most
//! [`DASHBOARD_CONNECTIONS`](crate::defaults::DASHBOARD_CONNECTIONS) at once (more are told
//! `503` at once), a request head of at most [`DASHBOARD_MAX_REQUEST`] bytes read within
//! [`DASHBOARD_IO_TIMEOUT`], and a page that stops reading is dropped after the same
//! timeout. The assets are embedded in the binary (a classroom may have no internet), and
//! served with a Content-Security-Policy that allows nothing but them. A Host header that
//! names another site is refused, so a web page elsewhere cannot read the dashboard
//! through a browser on the teacher's laptop (DNS rebinding).
//!
//! The event stream sends one `update` event per push, its `id:` the sequence number of
//! the newest happening in it. A page that reconnects sends it back (`Last-Event-ID`, which
//! EventSource does by itself) and gets every card and the happenings it missed.
//!
//! Hand-written rather than a web framework, like the metrics endpoint: five paths, one
//! method, no bodies to parse. What a framework would add (routing, keep-alive, HTTP/2)
//! this needs none of, and a Pi hosting the proxy pays for none of it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Dashboard;
use crate::defaults::{
    DASHBOARD_IO_TIMEOUT, DASHBOARD_KEEPALIVE, DASHBOARD_MAX_REQUEST, DASHBOARD_PUSH_INTERVAL,
};
use crate::shared::now_ms;

const INDEX: &str = include_str!("assets/index.html");
const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");

/// Only this page's own assets and its own event stream.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What a request asks for, once read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    Asset {
        content_type: &'static str,
        body: &'static str,
    },
    Events {
        last_event_id: Option<u64>,
    },
    State,
    NotFound,
    MethodNotAllowed,
    /// The Host header names a site that is not this machine.
    WrongHost,
    Bad,
}

/// Whether `host` (a Host header, port included) names this machine by an address or as
/// `localhost`, or a LAN name (`*.local`, `*.lan`, a bare hostname): names a site on the
/// internet (DNS rebinding) always have a dot and a public suffix.
pub(crate) fn host_ok(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest
            .split(']')
            .next()
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    name == "localhost"
        || name.ends_with(".localhost")
        || ((name.ends_with(".local") || name.ends_with(".lan") || !name.contains('.'))
            && name.split('.').all(label_ok))
}

/// Parses a request head (everything up to the blank line).
pub(crate) fn route(head: &str) -> Route {
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Route::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Bad;
    }
    let mut host = None;
    let mut last_event_id = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("host") {
            host = Some(value.trim().to_string());
        } else if name.eq_ignore_ascii_case("last-event-id") {
            last_event_id = value.trim().parse().ok();
        }
    }
    if method != "GET" && method != "HEAD" {
        return Route::MethodNotAllowed;
    }
    // HTTP/1.1 requires a Host; without one, we cannot tell where the page came from.
    if !host.as_deref().is_some_and(host_ok) {
        return Route::WrongHost;
    }
    let path = target.split(['?', '#']).next().unwrap_or("");
    match path {
        "/" | "/index.html" => Route::Asset {
            content_type: "text/html; charset=utf-8",
            body: INDEX,
        },
        "/dashboard.css" => Route::Asset {
            content_type: "text/css; charset=utf-8",
            body: CSS,
        },
        "/dashboard.js" => Route::Asset {
            content_type: "text/javascript; charset=utf-8",
            body: JS,
        },
        "/events" => Route::Events { last_event_id },
        "/state.json" => Route::State,
        _ => Route::NotFound,
    }
}

/// Serves the dashboard on `listener` until `shutdown`; every connection task is tracked
/// and awaited before this returns.
pub async fn serve(listener: TcpListener, dashboard: Arc<Dashboard>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(dashboard.max_connections.max(1)));
    let tasks = TaskTracker::new();
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    log::debug!("dashboard accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let stop = shutdown.clone();
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // Full: say so at once, without reading, and within a bound.
            tasks.spawn(async move {
                let _ = tokio::time::timeout(
                    DASHBOARD_IO_TIMEOUT,
                    respond(
                        &mut stream,
                        "503 Service Unavailable",
                        "text/plain; charset=utf-8",
                        b"too many dashboard viewers at once; close one and reload\n",
                        false,
                    ),
                )
                .await;
            });
            continue;
        };
        let dashboard = dashboard.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = connection(stream, peer, &dashboard, &stop) => {}
            }
            drop(permit);
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Reads the head of a request, bounded in size and time. `None`: the client went away,
/// was too slow, or sent too much (then it was told so).
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = async {
        loop {
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                return if end > DASHBOARD_MAX_REQUEST {
                    Err(true)
                } else {
                    Ok(())
                };
            }
            if head.len() > DASHBOARD_MAX_REQUEST {
                return Err(true);
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Err(false),
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    match tokio::time::timeout(DASHBOARD_IO_TIMEOUT, read).await {
        Ok(Ok(())) => {}
        Ok(Err(true)) => {
            let _ = respond(
                stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"request too large\n",
                false,
            )
            .await;
            return None;
        }
        _ => return None,
    }
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(head.len());
    Some(String::from_utf8_lossy(&head[..end]).into_owned())
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    dashboard: &Dashboard,
    stop: &CancellationToken,
) {
    let Some(head) = read_head(&mut stream).await else {
        return;
    };
    let head_only = head.starts_with("HEAD ");
    let route = route(&head);
    let t = DASHBOARD_IO_TIMEOUT;
    let _ = match route {
        Route::Asset { content_type, body } => {
            tokio::time::timeout(t, respond(&mut stream, "200 OK", content_type, body.as_bytes(), head_only)).await
        }
        Route::State => {
            let body = dashboard.feed().update_since(None, 0).to_json(now_ms()).to_string();
            tokio::time::timeout(
                t,
                respond(&mut stream, "200 OK", "application/json", body.as_bytes(), head_only),
            )
            .await
        }
        Route::Events { last_event_id } if !head_only => {
            log::debug!("dashboard page connected from {peer}");
            dashboard.pages.inc();
            events(&mut stream, dashboard, last_event_id, stop).await;
            dashboard.pages.dec();
            log::debug!("dashboard page from {peer} went away");
            return;
        }
        Route::Events { .. } => {
            tokio::time::timeout(t, respond(&mut stream, "200 OK", "text/event-stream", b"", true)).await
        }
        Route::NotFound => {
            tokio::time::timeout(
                t,
                respond(
                    &mut stream,
                    "404 Not Found",
                    "text/plain; charset=utf-8",
                    b"no such page; the dashboard is at /\n",
                    head_only,
                ),
            )
            .await
        }
        Route::MethodNotAllowed => {
            tokio::time::timeout(
                t,
                respond(
                    &mut stream,
                    "405 Method Not Allowed",
                    "text/plain; charset=utf-8",
                    b"the dashboard is read-only: GET and HEAD only\n",
                    false,
                ),
            )
            .await
        }
        Route::WrongHost => {
            tokio::time::timeout(
                t,
                respond(
                    &mut stream,
                    "421 Misdirected Request",
                    "text/plain; charset=utf-8",
                    b"open the dashboard by this machine's address (http://IP:PORT/), localhost or its .local name\n",
                    false,
                ),
            )
            .await
        }
        Route::Bad => {
            tokio::time::timeout(
                t,
                respond(&mut stream, "400 Bad Request", "text/plain", b"not an HTTP/1 request\n", false),
            )
            .await
        }
    };
}

/// The event stream: a snapshot, then an update whenever something changed (at most every
/// [`DASHBOARD_PUSH_INTERVAL`]), and a keep-alive comment when nothing did.
async fn events(
    stream: &mut TcpStream,
    dashboard: &Dashboard,
    last_event_id: Option<u64>,
    stop: &CancellationToken,
) {
    // The page sends nothing more; reading tells us at once when it goes away, so its slot
    // is freed then, not at the next write. Whatever it does send is read and dropped.
    let (mut rd, mut stream) = stream.split();
    let mut scratch = [0u8; 256];
    let stream = &mut stream;
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
                X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\nretry: 1000\n\n";
    if write(stream, head.as_bytes()).await.is_err() {
        return;
    }
    let mut changed = dashboard.subscribe();
    let first = dashboard.feed().update_since(None, last_event_id.unwrap_or(0));
    let (mut version, mut seq) = (first.version, first.seq);
    if write(stream, sse(&first).as_bytes()).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            c = changed.changed() => if c.is_err() { return },
            r = rd.read(&mut scratch) => if matches!(r, Ok(0) | Err(_)) { return } else { continue },
            _ = tokio::time::sleep(DASHBOARD_KEEPALIVE) => {
                if write(stream, b": keep-alive\n\n").await.is_err() {
                    return;
                }
                continue;
            }
        }
        let update = dashboard.feed().update_since(Some(version), seq);
        (version, seq) = (update.version, update.seq);
        if !update.is_empty() && write(stream, sse(&update).as_bytes()).await.is_err() {
            return;
        }
        // Pacing: what changes meanwhile goes in the next update, as one.
        let pause = tokio::time::sleep(DASHBOARD_PUSH_INTERVAL);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = rd.read(&mut scratch) => if matches!(r, Ok(0) | Err(_)) { return },
                _ = &mut pause => break,
            }
        }
    }
}

fn sse(update: &super::Update) -> String {
    // JSON has no raw newlines, so one `data:` line holds it.
    format!(
        "event: update\nid: {}\ndata: {}\n\n",
        update.seq,
        update.to_json(now_ms())
    )
}

async fn write<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(DASHBOARD_IO_TIMEOUT, w.write_all(bytes)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the page stopped reading",
        )),
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: {CSP}\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\nCache-Control: no-cache\r\n{}Connection: close\r\n\r\n",
        body.len(),
        if status.starts_with("405") {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        },
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(
        max: usize,
    ) -> (
        SocketAddr,
        Arc<Dashboard>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dashboard = Arc::new(Dashboard::new(max));
        let stop = CancellationToken::new();
        let run = tokio::spawn(serve(listener, dashboard.clone(), stop.clone()));
        (addr, dashboard, stop, run)
    }

    async fn ask(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n")
    }

    #[tokio::test]
    async fn pages_are_served_and_bad_paths_are_404() {
        let (addr, _, stop, run) = start(8).await;
        let page = ask(addr, &get("/")).await;
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        assert!(
            page.contains("Content-Security-Policy: default-src 'none'"),
            "{page}"
        );
        assert!(page.ends_with(INDEX));
        assert!(ask(addr, &get("/dashboard.js?v=1")).await.ends_with(JS));
        assert!(ask(addr, &get("/dashboard.css")).await.contains("text/css"));
        let state = ask(addr, &get("/state.json")).await;
        let body = state.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["full"], true);
        for bad in ["/nope", "/../etc/passwd", "/dashboard.js/", "/EVENTS", "//"] {
            let r = ask(addr, &get(bad)).await;
            assert!(r.starts_with("HTTP/1.1 404"), "{bad}: {r}");
        }
        let head = ask(addr, "HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        assert!(ask(addr, "hello\r\n\r\n").await.starts_with("HTTP/1.1 400"));
        let huge = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(DASHBOARD_MAX_REQUEST + 10)
        );
        assert!(ask(addr, &huge).await.starts_with("HTTP/1.1 431"));
        stop.cancel();
        run.await.unwrap();
    }

    #[tokio::test]
    async fn it_is_read_only_and_refuses_other_sites() {
        let (addr, _, stop, run) = start(8).await;
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT"] {
            let r = ask(
                addr,
                &format!("{method} / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"),
            )
            .await;
            assert!(r.starts_with("HTTP/1.1 405"), "{method}: {r}");
            assert!(r.contains("Allow: GET, HEAD"), "{r}");
        }
        let r = ask(addr, "GET / HTTP/1.1\r\nHost: evil.example.com\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 421"), "{r}");
        let r = ask(addr, "GET / HTTP/1.1\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 421"), "no Host: {r}");
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "teacher.local",
            "teacher-laptop:8080",
            "10.0.0.5",
        ] {
            assert!(host_ok(ok), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:8080",
            "127.0.0.1.nip.io",
            "a.b.local.evil.com",
            "[nope]:1",
            "",
        ] {
            assert!(!host_ok(bad), "{bad}");
        }
        stop.cancel();
        run.await.unwrap();
    }

    #[tokio::test]
    async fn connections_are_bounded() {
        let (addr, dashboard, stop, run) = start(2).await;
        // Two pages hold the two slots with their event streams.
        let mut pages = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(get("/events").as_bytes()).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = String::new();
            while !got.contains("event: update") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
            assert!(
                got.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream"),
                "{got}"
            );
            pages.push(s);
        }
        // A third is told at once, not queued.
        let r = ask(addr, &get("/")).await;
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        // A change reaches the open pages.
        dashboard.change(|f| f.push(serde_json::json!({"type": "grant"})));
        let mut buf = vec![0u8; 4096];
        let n = pages[0].read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.contains("id: 1") && text.contains("\"grant\""), "{text}");
        // One page closes: its slot is free again.
        drop(pages.pop());
        let mut served = false;
        for _ in 0..100 {
            if ask(addr, &get("/")).await.starts_with("HTTP/1.1 200") {
                served = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(served, "a closed page's slot is given back");
        stop.cancel();
        run.await.unwrap();
    }

    #[tokio::test]
    async fn a_reconnecting_page_gets_only_what_it_missed() {
        let (addr, dashboard, stop, run) = start(4).await;
        for i in 0..5 {
            dashboard.change(|f| f.push(serde_json::json!({"type": "grant", "n": i})));
        }
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /events HTTP/1.1\r\nHost: localhost\r\nLast-Event-ID: 3\r\n\r\n")
            .await
            .unwrap();
        let mut got = String::new();
        let mut buf = vec![0u8; 8192];
        while !got.contains("\n\nevent: update") && !got.ends_with("}\n\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let data = got.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["reset"], false);
        let seqs: Vec<u64> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, [4, 5], "only what it missed");
        assert!(got.contains("id: 5"));
        stop.cancel();
        run.await.unwrap();
    }
}
