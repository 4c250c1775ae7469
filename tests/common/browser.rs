//! A real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`; `scripts/test.sh` installs both). Nothing is downloaded: chromedriver
//! runs on a free port on 127.0.0.1 and starts the installed browser.
//!
//! WebDriver is JSON over HTTP; the handful of commands used here are written with a small
//! HTTP/1.1 client over `std::net`, so the tests need no HTTP crate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where Debian puts them.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and one browser session, both ended when dropped.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

/// One HTTP request to chromedriver; the JSON answer.
fn request(port: u16, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // chromedriver keeps connections open whatever we ask: read the head, then exactly
    // Content-Length bytes.
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("chromedriver closed the connection"));
        }
        out.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&out[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no Content-Length: {head}")))?;
    while out.len() < head_end + length {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&out[head_end..]);
    serde_json::from_str(&body).map_err(|e| std::io::Error::other(format!("{e}: {body}")))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a window of `width` x `height`.
    pub fn start(log: &Path, width: u32, height: u32) -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's chromium and chromium-driver (bash scripts/test.sh does)"
            );
        }
        let port = free_port();
        let out = std::fs::File::create(log).expect("driver log");
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start chromedriver");
        let start = Instant::now();
        while request(port, "GET", "/status", None).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    // Tests run as root in CI, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--disable-extensions",
                    // Nothing leaves this machine: no updates, no safe-browsing lists.
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let answer = request(port, "POST", "/session", Some(&caps)).expect("new session");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused a session: {answer}"))
            .to_string();
        Browser {
            driver,
            port,
            session,
            _profile: profile,
        }
    }

    fn command(&self, method: &str, what: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}/{what}", self.session);
        let answer = request(self.port, method, &path, body).expect("webdriver");
        if answer["value"].get("error").is_some() {
            panic!("webdriver {what}: {answer}");
        }
        answer["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.command("POST", "url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body; `return` what you want) in the page.
    pub fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            "execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// The visible text of the first element matching `selector` ("" if none).
    pub fn text(&self, selector: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : '';",
            json!(selector)
        );
        self.eval(&script).as_str().unwrap_or_default().to_string()
    }

    /// How many elements match `selector`.
    pub fn count(&self, selector: &str) -> usize {
        let script = format!("return document.querySelectorAll({}).length;", json!(selector));
        self.eval(&script).as_u64().unwrap_or(0) as usize
    }

    /// Saves a PNG screenshot of the window at `path`.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.command("GET", "screenshot", None);
        let png = data_encoding::BASE64
            .decode(b64.as_str().expect("base64").as_bytes())
            .expect("a PNG in base64");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser; then its driver.
        let _ = request(self.port, "DELETE", &format!("/session/{}", self.session), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The workspace's target directory, where artifacts (screenshots) go.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}
