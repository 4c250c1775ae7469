//! A real mosquitto broker for a test: its own config file, 127.0.0.1, a free port, stopped
//! by PID when dropped. Read and write topics with the real `mosquitto_sub`/`mosquitto_pub`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_for;

pub struct Mosquitto {
    pub port: u16,
    pub dir: PathBuf,
    conf: PathBuf,
    child: Option<Child>,
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mosquitto_bin() -> PathBuf {
    for p in ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("mosquitto is not installed: run `bash scripts/test.sh` (it installs the Debian package)");
}

impl Mosquitto {
    /// Starts mosquitto with `listener <port> 127.0.0.1` plus `extra` config lines.
    pub fn start(dir: &Path, extra: &str) -> Mosquitto {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        let text = format!(
            "listener {port} 127.0.0.1\npersistence false\nlog_dest file {}\nlog_type all\n{extra}\n",
            dir.join("mosquitto.log").display()
        );
        std::fs::write(&conf, text).unwrap();
        let mut m = Mosquitto {
            port,
            dir: dir.to_path_buf(),
            conf,
            child: None,
        };
        m.restart();
        m
    }

    /// (Re)starts it on the same port, with nothing retained (persistence is off).
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(mosquitto_bin())
            .args(["-c".as_ref(), self.conf.as_os_str()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let port = self.port;
        wait_for("mosquitto to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// Stops it (SIGKILL by PID) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The retained message on `topic`, if any (anonymous, plain), read with mosquitto_sub.
    pub fn retained(&self, topic: &str) -> Option<String> {
        self.retained_with(topic, &[])
    }

    pub fn retained_with(&self, topic: &str, auth: &[&str]) -> Option<String> {
        let port = self.port.to_string();
        let mut args = vec![
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            topic,
            "-C",
            "1",
            "-W",
            "2",
            "--retained-only",
        ];
        args.extend_from_slice(auth);
        let out = Command::new("mosquitto_sub")
            .args(&args)
            .output()
            .expect("run mosquitto_sub");
        let text = String::from_utf8_lossy(&out.stdout)
            .trim_end_matches('\n')
            .to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    }

    /// Every retained message under `filter` (a wildcard), as (topic, payload).
    pub fn retained_all(&self, filter: &str) -> Vec<(String, String)> {
        let port = self.port.to_string();
        let out = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                filter,
                "-W",
                "2",
                "--retained-only",
                "-F",
                "%t\t%p",
            ])
            .output()
            .expect("run mosquitto_sub");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(t, p)| (t.to_string(), p.to_string()))
            .collect()
    }

    /// Publishes with mosquitto_pub; `payload` None sends an empty (clearing) message.
    pub fn publish(&self, topic: &str, payload: Option<&str>, retain: bool) {
        let port = self.port.to_string();
        let mut args = vec!["-h", "127.0.0.1", "-p", &port, "-t", topic];
        match payload {
            Some(p) => args.extend(["-m", p]),
            None => args.push("-n"),
        }
        if retain {
            args.push("-r");
        }
        assert!(Command::new("mosquitto_pub")
            .args(&args)
            .status()
            .unwrap()
            .success());
    }

    /// Starts `mosquitto_sub` on `filter` in the background, its output (`topic<TAB>payload`
    /// lines) going to `out`, and returns once the subscription is live. Proof, not a sleep:
    /// the same `mosquitto_sub` also subscribes to a private probe topic, and this publishes
    /// there until the probe's line appears in `out` (the broker handles one client's
    /// subscriptions in order, so `filter` is live too). [`Subscription::read`] leaves the
    /// probe's lines out.
    pub fn subscribe(&self, filter: &str, out: &Path) -> Subscription {
        static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Outside `wtd/`, so no filter a test subscribes to can match it.
        let probe = format!("wtd-test-probe/{}-{n}", std::process::id());
        let port = self.port.to_string();
        let child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                filter,
                "-t",
                &probe,
                "-F",
                "%t\t%p",
            ])
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("run mosquitto_sub");
        let sub = Subscription {
            child,
            out: out.to_path_buf(),
            probe_line: format!("{probe}\t"),
        };
        let mut next_publish = std::time::Instant::now();
        wait_for("mosquitto_sub's subscription to be live", LIMIT, || {
            let raw = std::fs::read_to_string(&sub.out).unwrap_or_default();
            if raw.lines().any(|l| l.starts_with(&sub.probe_line)) {
                return true;
            }
            // Publish again now and then (not on every poll): one sent before the
            // subscription was made is simply lost.
            if std::time::Instant::now() >= next_publish {
                self.publish(&probe, Some("probe"), false);
                next_publish = std::time::Instant::now() + Duration::from_millis(200);
            }
            false
        });
        sub
    }
}

/// Longest wait for a `mosquitto_sub` to subscribe (generous: the machine may be loaded).
const LIMIT: Duration = Duration::from_secs(30);

/// A running `mosquitto_sub` (see [`Mosquitto::subscribe`]), killed by PID when dropped.
pub struct Subscription {
    child: Child,
    out: PathBuf,
    /// How the probe topic's lines start (`topic<TAB>`), to leave them out.
    probe_line: String,
}

impl Subscription {
    /// Every message received so far, `topic<TAB>payload` a line, without the probe's.
    pub fn read(&self) -> String {
        let raw = std::fs::read_to_string(&self.out).unwrap_or_default();
        raw.lines()
            .filter(|l| !l.starts_with(&self.probe_line))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}
