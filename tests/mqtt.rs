//! The cluster in Home Assistant, Node-RED and Grafana, against a real mosquitto: the
//! proxy's MQTT bridge (retained state, availability, last will, reconnects, discovery),
//! broker auth and TLS, and the Prometheus endpoint parsed by Python's prometheus_client.
//!
//! - `retained_state_availability_reconnect_and_discovery`: the main lab script.
//! - `username_and_password`: a broker that demands them; a wrong one is named in the log.
//! - `tls_with_a_ca_file`: a broker with a test CA; an untrusted CA is named in the log.
//! - `mission_events_only_for_allowed_missions_and_bounded`: handler events through the
//!   proxy's bridge, only for missions the owner lists; a flood is cut, calls go on.
//! - `the_proxy_checks_the_mission_events_it_publishes`: a raw agent: versions, missions it
//!   does not offer, the proxy's own budget, a name that is not a mission name.
//! - `an_agent_publishes_itself_when_no_proxy_bridges`: `[mqtt]` in agent.toml.
//! - `agent_metrics_move_and_the_grafana_dashboard_uses_only_real_metrics`: the agent's
//!   `/metrics`, and every metric `docs/grafana-dashboard.json` queries exists.
//! - `agents_that_never_return_are_cleared_after_a_proxy_restart`: the mirror remembered.

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::mosquitto::{free_port, Mosquitto};
use common::{wait_for, Agent, Daemon, TestCluster};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);

/// A proxy started with `args` (and a ticket to wait for).
fn start_proxy(lab: &TestCluster, args: &[&str]) -> common::Proxy {
    lab.start_proxy_on(0, args)
}

fn agent_id(a: &Agent) -> String {
    a.id()
}

/// Home Assistant's documented discovery fields, as a schema: what every config must have,
/// what each field must look like, and the topic layout.
fn validate_discovery(topic: &str, payload: &str, agent_mode: bool) -> Value {
    let parts: Vec<&str> = topic.split('/').collect();
    assert_eq!(
        parts.len(),
        5,
        "{topic}: <prefix>/<component>/<node_id>/<object_id>/config"
    );
    assert_eq!(parts[0], "homeassistant");
    assert!(
        ["sensor", "binary_sensor"].contains(&parts[1]),
        "{topic}: component"
    );
    let id_ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    assert!(
        id_ok(parts[2]) && id_ok(parts[3]),
        "{topic}: node_id and object_id are [a-zA-Z0-9_-]"
    );
    assert_eq!(parts[4], "config");
    let v: Value = serde_json::from_str(payload).unwrap_or_else(|e| panic!("{topic}: not JSON: {e}"));
    let obj = v.as_object().expect("a JSON object");
    for key in ["name", "unique_id", "state_topic", "device"] {
        assert!(obj.contains_key(key), "{topic}: `{key}` is required here");
    }
    // Every entity is greyed out by an availability topic, except an agent's own `online`
    // sensor when it publishes itself: that sensor's state *is* its availability.
    assert!(
        obj.contains_key("availability") || (parts[3] == "online" && agent_mode),
        "{topic}: `availability` is required here"
    );
    let uid = v["unique_id"].as_str().unwrap();
    assert_eq!(
        uid,
        format!("{}_{}", parts[2], parts[3]),
        "unique_id made of node and object"
    );
    let st = v["state_topic"].as_str().unwrap();
    assert!(
        !st.contains('+') && !st.contains('#'),
        "a state topic has no wildcards"
    );
    let dev = v["device"].as_object().unwrap();
    let ids = dev["identifiers"]
        .as_array()
        .expect("device.identifiers is a list");
    assert_eq!(ids[0], parts[2], "the device is identified by the node id");
    for k in ["name", "manufacturer", "model", "sw_version"] {
        assert!(dev[k].is_string(), "{topic}: device.{k}");
    }
    for a in v["availability"].as_array().map_or(&[][..], |a| a) {
        assert!(a["topic"].is_string());
        assert_eq!(a["payload_available"], "online");
        assert_eq!(a["payload_not_available"], "offline");
    }
    assert!(["all", "any", "latest"].contains(&v["availability_mode"].as_str().unwrap_or("latest")));
    let sensor_classes = ["temperature", "power_factor", "voltage"];
    let binary_classes = ["problem", "connectivity", "running"];
    if let Some(dc) = v.get("device_class").and_then(Value::as_str) {
        let ok = if parts[1] == "sensor" {
            sensor_classes.contains(&dc)
        } else {
            binary_classes.contains(&dc)
        };
        assert!(ok, "{topic}: device_class {dc}");
    }
    if parts[1] == "binary_sensor" {
        assert!(
            v["payload_on"].is_string() && v["payload_off"].is_string(),
            "{topic}: payload_on/off"
        );
    } else {
        assert!(
            v["value_template"].is_string(),
            "{topic}: a sensor reads the state JSON"
        );
        assert_eq!(v["state_class"], "measurement");
    }
    if v["device_class"] == "temperature" {
        assert_eq!(v["unit_of_measurement"], "°C");
    }
    v
}

fn scrape(addr: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("metrics port");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

fn python() -> PathBuf {
    std::env::var_os("WTD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python"))
}

/// Parses exposition text with Python's prometheus_client; returns {"name{labels}": value}.
fn parse_metrics(text: &str) -> serde_json::Map<String, Value> {
    let script = r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "python with prometheus_client (bash scripts/test.sh makes target/pyvenv, or set WTD_PYTHON)",
        );
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

fn metric(m: &serde_json::Map<String, Value>, key: &str) -> f64 {
    m.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no metric {key}; have {:?}", m.keys().collect::<Vec<_>>()))
}

#[test]
fn retained_state_availability_reconnect_and_discovery() {
    let lab = TestCluster::new();
    let mut broker = Mosquitto::start(&lab.dir().join("broker"), "allow_anonymous true");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let url = broker.url();
    let proxy = start_proxy(
        &lab,
        &[
            "--mqtt",
            &url,
            "--mqtt-cluster",
            "lab",
            "--metrics",
            &metrics_addr,
        ],
    );
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let bob = lab.user("bob");
    let bob_id = bob.init();
    bob.ok(["join", &proxy.ticket]);
    alice.ok(["keys", "add", "bob", &bob_id]);
    let mut pi1 = lab.add_agent(&proxy.ticket, "pi-one", &[&alice_id], "tags = [\"lab\"]");
    let pi2 = lab.add_agent(&proxy.ticket, "pi-two", &[&alice_id], "");
    let (id1, id2) = (agent_id(&pi1), agent_id(&pi2));

    // 1. Retained state for every agent, and the bridge online.
    for (id, name) in [(&id1, "pi-one"), (&id2, "pi-two")] {
        let topic = format!("wtd/lab/agents/{id}/state");
        wait_for("retained state", LIMIT, || broker.retained(&topic).is_some());
        let state: Value = serde_json::from_str(&broker.retained(&topic).unwrap()).unwrap();
        assert_eq!(state["name"], name);
        assert_eq!(state["id"], id.as_str());
        assert_eq!(state["online"], true);
        assert!(
            state["missions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "demo"),
            "{state}"
        );
        assert!(state["load1"].is_number() && state["last_seen_ms"].is_number());
        assert_eq!(
            broker
                .retained(&format!("wtd/lab/agents/{id}/availability"))
                .as_deref(),
            Some("online")
        );
    }
    assert_eq!(
        broker.retained("wtd/lab/bridge/status").as_deref(),
        Some("online")
    );

    // 2. Discovery configs validate against Home Assistant's documented fields.
    let configs = broker.retained_all("homeassistant/#");
    assert!(
        configs.len() >= 6,
        "at least load, cpu, online for each agent: {configs:?}"
    );
    let mut unique_ids: Vec<String> = configs
        .iter()
        .map(|(t, p)| {
            validate_discovery(t, p, false)["unique_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    unique_ids.sort();
    let before = unique_ids.clone();
    unique_ids.dedup();
    assert_eq!(before.len(), unique_ids.len(), "unique ids are unique");

    // 3. Metrics parse, and the relay counter moves as calls are made.
    let m = parse_metrics(&scrape(&metrics_addr));
    assert_eq!(metric(&m, "wtd_proxy_agents_online{}"), 2.0);
    assert_eq!(metric(&m, "wtd_proxy_mqtt_bridge_connected{}"), 1.0);
    let relays_before = metric(&m, "wtd_proxy_relays_total{}");
    let grant: Value =
        serde_json::from_str(&alice.ok(["grant", "bob", "--mission", "demo", "--json"])).unwrap();
    bob.ok(["grants", "import", grant["ticket"].as_str().unwrap()]);
    // Alice's grants reach only the agents she adopted.
    alice.ok(["adopt", "pi-one", "pi-two"]);
    wait_for("the agents to hear of their adoption", LIMIT, || {
        bob.cli(["call", "demo/echo", "{}", "--agent", "pi-one"])
            .status
            .success()
            && bob
                .cli(["call", "demo/echo", "{}", "--agent", "pi-two"])
                .status
                .success()
    });
    let events = broker.subscribe("wtd/lab/events", &lab.dir().join("events.txt"));
    for _ in 0..3 {
        bob.ok(["call", "demo/echo", r#"{"msg":"hi"}"#]);
    }
    wait_for("the relay counter to move", LIMIT, || {
        metric(&parse_metrics(&scrape(&metrics_addr)), "wtd_proxy_relays_total{}") >= relays_before + 3.0
    });
    let m = parse_metrics(&scrape(&metrics_addr));
    assert!(metric(&m, "wtd_proxy_relay_bytes_total{direction=to_agent}") > 0.0);
    assert!(metric(&m, "wtd_proxy_connections_total{}") >= 5.0);
    assert!(
        m.keys().any(|k| k.starts_with("wtd_proxy_agent_load1{agent=")),
        "per-agent gauges"
    );
    wait_for("call events on MQTT", LIMIT, || {
        events.read().contains("\"call_session\"")
    });
    drop(events);

    // 4. Killing an agent flips its availability to offline; the other stays online.
    pi1.daemon.kill();
    let avail1 = format!("wtd/lab/agents/{id1}/availability");
    wait_for("the killed agent offline", LIMIT, || {
        broker.retained(&avail1).as_deref() == Some("offline")
    });
    let state1: Value =
        serde_json::from_str(&broker.retained(&format!("wtd/lab/agents/{id1}/state")).unwrap()).unwrap();
    assert_eq!(state1["online"], false);
    assert_eq!(
        broker
            .retained(&format!("wtd/lab/agents/{id2}/availability"))
            .as_deref(),
        Some("online")
    );

    // 5. A broker restart (nothing persisted) resumes publishing and re-sends discovery.
    broker.restart();
    let state2 = format!("wtd/lab/agents/{id2}/state");
    wait_for("state again after the broker restart", LIMIT, || {
        broker.retained(&state2).is_some()
    });
    wait_for("discovery again after the broker restart", LIMIT, || {
        broker.retained_all("homeassistant/#").len() >= configs.len()
    });
    let mut after: Vec<String> = broker
        .retained_all("homeassistant/#")
        .iter()
        .map(|(t, p)| {
            validate_discovery(t, p, false)["unique_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    after.sort();
    assert_eq!(after, before, "the same unique ids after a reconnect");

    // 6. Home Assistant's birth message makes the bridge send discovery again.
    let (topic, _) = configs
        .iter()
        .find(|(t, _)| t.contains("/load/"))
        .unwrap()
        .clone();
    broker.publish(&topic, None, true);
    assert!(broker.retained(&topic).is_none());
    broker.publish("homeassistant/status", Some("online"), false);
    wait_for("discovery re-sent on Home Assistant's birth", LIMIT, || {
        broker.retained(&topic).is_some()
    });

    // 7. A killed proxy: the broker publishes its last will, and every entity reads offline.
    let mut proxy = proxy;
    proxy.daemon.kill();
    wait_for("the bridge's last will", Duration::from_secs(60), || {
        broker.retained("wtd/lab/bridge/status").as_deref() == Some("offline")
    });
    drop(pi2);
}

#[test]
fn username_and_password() {
    let lab = TestCluster::new();
    let dir = lab.dir().join("broker");
    std::fs::create_dir_all(&dir).unwrap();
    let passwd = dir.join("passwd");
    let ok = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwd)
        .args(["wtd", "right-horse"])
        .status()
        .expect("mosquitto_passwd");
    assert!(ok.success());
    let broker = Mosquitto::start(
        &dir,
        &format!("allow_anonymous false\npassword_file {}", passwd.display()),
    );
    let auth = ["-u", "wtd", "-P", "right-horse"];

    // Wrong password first: a clear error in the proxy's log, and nothing published.
    let wrong = lab.dir().join("wrong.password");
    std::fs::write(&wrong, "wrong-horse\n").unwrap();
    let conf = lab.dir().join("proxy.toml");
    let write_conf = |pw: &Path| {
        std::fs::write(
            &conf,
            format!(
                "[mqtt]\nurl = \"{}\"\ncluster = \"auth\"\nusername = \"wtd\"\npassword_file = \"{}\"\n",
                broker.url(),
                pw.display()
            ),
        )
        .unwrap()
    };
    write_conf(&wrong);
    let conf_s = conf.display().to_string();
    let mut proxy = start_proxy(&lab, &["--config", &conf_s]);
    wait_for("the refusal explained", LIMIT, || {
        proxy.daemon.output().contains("username or password")
    });
    assert!(broker.retained_with("wtd/auth/bridge/status", &auth).is_none());
    proxy.daemon.stop();

    let right = lab.dir().join("right.password");
    std::fs::write(&right, "right-horse\n").unwrap();
    write_conf(&right);
    let proxy = start_proxy(&lab, &["--config", &conf_s]);
    let alice = lab.user("alice");
    let alice_id = alice.init();
    let pi = lab.add_agent(&proxy.ticket, "pi-auth", &[&alice_id], "");
    let topic = format!("wtd/auth/agents/{}/state", pi.id());
    wait_for("state through an authenticated bridge", LIMIT, || {
        broker.retained_with(&topic, &auth).is_some()
    });
    assert!(
        !proxy.daemon.output().contains(&"right-horse".to_string()),
        "the password is never logged"
    );
}

/// A CA and a broker certificate for 127.0.0.1, written as PEM files.
fn make_ca(dir: &Path, name: &str) -> (PathBuf, rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    let path = dir.join(format!("{name}.pem"));
    std::fs::write(&path, cert.pem()).unwrap();
    (path, cert, key)
}

#[test]
fn tls_with_a_ca_file() {
    let lab = TestCluster::new();
    let dir = lab.dir().join("broker");
    std::fs::create_dir_all(&dir).unwrap();
    let (ca_file, ca, ca_key) = make_ca(&dir, "test-ca");
    let (other_ca_file, _, _) = make_ca(&dir, "other-ca");
    let server_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let server = params.signed_by(&server_key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    let broker = Mosquitto::start(
        &dir,
        &format!(
            "allow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}",
            ca_file.display(),
            dir.join("server.pem").display(),
            dir.join("server.key").display()
        ),
    );
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let conf = lab.dir().join("proxy.toml");
    let conf_s = conf.display().to_string();
    let write_conf = |ca: &Path| {
        std::fs::write(
            &conf,
            format!(
                "[mqtt]\nurl = \"{url}\"\ncluster = \"tls\"\nca_file = \"{}\"\n",
                ca.display()
            ),
        )
        .unwrap()
    };
    let sub = |topic: &str| {
        let out = std::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "--cafile"])
            .arg(&ca_file)
            .args(["-t", topic, "-C", "1", "-W", "2", "--retained-only"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };

    // An untrusted broker certificate: a clear error, nothing published.
    write_conf(&other_ca_file);
    let mut proxy = start_proxy(&lab, &["--config", &conf_s]);
    wait_for("the untrusted certificate explained", LIMIT, || {
        proxy.daemon.output().contains("certificate we do not trust")
    });
    assert!(sub("wtd/tls/bridge/status").is_empty());
    proxy.daemon.stop();

    // The right CA: verified, and publishing.
    write_conf(&ca_file);
    let proxy = start_proxy(&lab, &["--config", &conf_s]);
    let alice = lab.user("alice");
    let alice_id = alice.init();
    let pi = lab.add_agent(&proxy.ticket, "pi-tls", &[&alice_id], "");
    let topic = format!("wtd/tls/agents/{}/state", pi.id());
    wait_for("state over TLS", LIMIT, || !sub(&topic).is_empty());
    assert_eq!(sub("wtd/tls/bridge/status"), "online");
}

#[allow(dead_code)]
fn unused(_: &Daemon, _: &OsStr) {}

/// A mission file whose functions print mission events on stderr.
fn event_missions(dir: &Path) {
    let mission = |name: &str, functions: &[(&str, &str)]| {
        let mut text = format!("name = \"{name}\"\nversion = \"1\"\ndescription = \"events\"\n");
        for (f, script) in functions {
            text.push_str(&format!(
                "\n[[functions]]\nname = \"{f}\"\nexec = [\"/bin/sh\", \"-c\", {script:?}]\ntimeout = \"20s\"\n"
            ));
        }
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    };
    mission(
        "door",
        &[
            (
                "open",
                r#"echo 'wtd-event: {"open": true}' >&2; echo 'half way' >&2; echo '{}'"#,
            ),
            (
                "flood",
                r#"i=0; while [ $i -lt 3000 ]; do echo "wtd-event: flood $i" >&2; i=$((i+1)); done; echo '{}'"#,
            ),
        ],
    );
    mission(
        "noisy",
        &[("emit", r#"echo 'wtd-event: {"secret": 1}' >&2; echo '{}'"#)],
    );
}

#[test]
fn mission_events_only_for_allowed_missions_and_bounded() {
    let lab = TestCluster::new();
    let broker = Mosquitto::start(&lab.dir().join("broker"), "allow_anonymous true");
    let proxy = start_proxy(&lab, &["--mqtt", &broker.url(), "--mqtt-cluster", "ev"]);
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let bob = lab.user("bob");
    let bob_id = bob.init();
    bob.ok(["join", &proxy.ticket]);
    alice.ok(["keys", "add", "bob", &bob_id]);
    // The owner lets `door` publish; `noisy` is not listed, so it publishes nothing.
    let mut pi = lab.add_agent(
        &proxy.ticket,
        "pi-events",
        &[&alice_id],
        "mission_events = [\"door\"]",
    );
    event_missions(&pi.dir.join("missions"));
    pi.restart();
    alice.adopt(&pi);
    for mission in ["door", "noisy"] {
        let grant: Value =
            serde_json::from_str(&alice.ok(["grant", "bob", "--mission", mission, "--json"])).unwrap();
        bob.ok(["grants", "import", grant["ticket"].as_str().unwrap()]);
    }
    wait_for("the grants to reach the agent", LIMIT, || {
        bob.cli(["call", "door/open", "{}"]).status.success()
            && bob.cli(["call", "noisy/emit", "{}"]).status.success()
    });
    let log = lab.dir().join("mission-events.txt");
    let sub = broker.subscribe("wtd/ev/missions/#", &log);

    // 1. The mission not listed first, then the listed one: the second arriving (same path,
    //    in order) and not the first shows the first was never published.
    bob.ok(["call", "noisy/emit", "{}"]);
    let call = bob.cli(["call", "door/open", "{}"]);
    assert!(call.status.success());
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&call.stdout),
        String::from_utf8_lossy(&call.stderr)
    );
    assert!(
        !shown.contains("wtd-event"),
        "event lines are not progress: {shown}"
    );
    let read = || sub.read();
    wait_for("door's event on MQTT", LIMIT, || {
        read().contains("wtd/ev/missions/door/events")
    });
    let text = read();
    assert!(
        !text.contains("noisy"),
        "a mission not allowed publishes nothing: {text}"
    );
    let (_, payload) = text
        .lines()
        .find_map(|l| l.split_once('\t'))
        .expect("topic<TAB>payload");
    let event: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(event["type"], "mission_event");
    assert_eq!(event["mission"], "door");
    assert_eq!(event["function"], "open");
    assert_eq!(event["event"]["open"], true);
    assert_eq!(event["agent"], pi.id().as_str());

    // 2. A flood of 3000 events: the call and the next ones are answered, the agent stays
    //    online, and only the budget's worth is published.
    let flood_started = std::time::Instant::now();
    bob.ok(["call", "door/flood", "{}"]);
    bob.ok(["call", "door/open", "{}"]);
    let avail = format!("wtd/ev/agents/{}/availability", pi.id());
    assert_eq!(broker.retained(&avail).as_deref(), Some("online"));
    assert_eq!(alice.agent_names(), vec!["pi-events".to_string()]);
    wait_for("some of the flood on MQTT", LIMIT, || read().contains("flood"));
    std::thread::sleep(Duration::from_secs(1));
    let flooded = read().lines().filter(|l| l.contains("\"flood ")).count() as u64;
    let bound = 50 + 10 * (flood_started.elapsed().as_secs() + 1);
    assert!(
        (1..=bound).contains(&flooded),
        "a burst of 50 then 10/s at most: {flooded} published, bound {bound}"
    );
    drop(sub);
}

#[test]
fn an_agent_publishes_itself_when_no_proxy_bridges() {
    let lab = TestCluster::new();
    let broker = Mosquitto::start(&lab.dir().join("broker"), "allow_anonymous true");
    // A proxy without --mqtt: the agent's own [mqtt] is the only publisher.
    let proxy = start_proxy(&lab, &[]);
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let bob = lab.user("bob");
    let bob_id = bob.init();
    bob.ok(["join", &proxy.ticket]);
    alice.ok(["keys", "add", "bob", &bob_id]);
    let extra = format!(
        "mission_events = [\"door\"]\n[mqtt]\nurl = \"{}\"\ncluster = \"solo\"\nstate_interval = \"1s\"\n",
        broker.url()
    );
    let mut pi = lab.add_agent(&proxy.ticket, "pi-solo", &[&alice_id], &extra);
    event_missions(&pi.dir.join("missions"));
    pi.restart();
    let id = pi.id();

    // 1. Its state, availability and discovery, as the proxy bridge would publish them.
    let state_topic = format!("wtd/solo/agents/{id}/state");
    let avail = format!("wtd/solo/agents/{id}/availability");
    wait_for("the agent's own retained state", LIMIT, || {
        broker.retained(&state_topic).is_some()
    });
    let state: Value = serde_json::from_str(&broker.retained(&state_topic).unwrap()).unwrap();
    assert_eq!(
        (state["name"].as_str(), state["online"].as_bool()),
        (Some("pi-solo"), Some(true))
    );
    assert_eq!(broker.retained(&avail).as_deref(), Some("online"));
    let configs = broker.retained_all("homeassistant/#");
    assert!(configs.len() >= 3, "load, cpu, online: {configs:?}");
    for (t, p) in &configs {
        let v = validate_discovery(t, p, true);
        let topics: Vec<&str> = v["availability"]
            .as_array()
            .map_or(vec![], |a| a.iter().filter_map(|x| x["topic"].as_str()).collect());
        assert!(
            !topics.iter().any(|t| t.ends_with("bridge/status")),
            "no bridge to depend on: {t}"
        );
    }
    assert!(
        broker.retained("wtd/solo/bridge/status").is_none(),
        "no proxy bridge here"
    );

    // 2. Its mission events go straight to the broker; a mission not listed sends none.
    alice.adopt(&pi);
    for mission in ["door", "noisy"] {
        let grant: Value =
            serde_json::from_str(&alice.ok(["grant", "bob", "--mission", mission, "--json"])).unwrap();
        bob.ok(["grants", "import", grant["ticket"].as_str().unwrap()]);
    }
    let log = lab.dir().join("solo-events.txt");
    let sub = broker.subscribe("wtd/solo/missions/#", &log);
    wait_for("the grants to reach the agent", LIMIT, || {
        bob.cli(["call", "noisy/emit", "{}"]).status.success()
            && bob.cli(["call", "door/open", "{}"]).status.success()
    });
    let read = || sub.read();
    wait_for("door's event, published by the agent", LIMIT, || {
        read().contains("wtd/solo/missions/door/events")
    });
    assert!(!read().contains("noisy"), "{}", read());
    drop(sub);

    // 3. The state keeps coming (every state_interval), and a killed agent reads offline
    //    by its last will: nobody said goodbye for it.
    let seen = state["last_seen_ms"].as_u64().unwrap();
    wait_for("a newer state", LIMIT, || {
        broker
            .retained(&state_topic)
            .and_then(|s| serde_json::from_str::<Value>(&s).ok())
            .and_then(|v| v["last_seen_ms"].as_u64())
            .is_some_and(|t| t > seen)
    });
    pi.daemon.kill();
    wait_for("the agent's last will", Duration::from_secs(60), || {
        broker.retained(&avail).as_deref() == Some("offline")
    });
}

/// The metric family and sample names in exposition text, read by prometheus_client.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let script = r#"
import sys, json
from prometheus_client.openmetrics.parser import text_string_to_metric_families
names = set()
for fam in text_string_to_metric_families(sys.stdin.read()):
    names.add(fam.name)
    for s in fam.samples:
        names.add(s.name)
print(json.dumps(sorted(names)))
"#;
    let mut child = std::process::Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python with prometheus_client");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "prometheus_client could not parse:\n{text}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn agent_metrics_move_and_the_grafana_dashboard_uses_only_real_metrics() {
    let lab = TestCluster::new();
    let proxy_metrics = format!("127.0.0.1:{}", free_port());
    let proxy = start_proxy(&lab, &["--metrics", &proxy_metrics]);
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let bob = lab.user("bob");
    let bob_id = bob.init();
    bob.ok(["join", &proxy.ticket]);
    alice.ok(["keys", "add", "bob", &bob_id]);
    let agent_metrics = format!("127.0.0.1:{}", free_port());
    let extra = format!("mission_events = [\"door\"]\nmetrics = \"{agent_metrics}\"\n");
    let mut pi = lab.add_agent(&proxy.ticket, "pi-metrics", &[&alice_id], &extra);
    event_missions(&pi.dir.join("missions"));
    pi.restart();
    alice.adopt(&pi);
    // `noisy` once a minute: its second call is refused by the agent (rate_limited).
    for (mission, rate, burst) in [("door", "600/min", "100"), ("noisy", "1/min", "1")] {
        let grant: Value = serde_json::from_str(&alice.ok([
            "grant",
            "bob",
            "--mission",
            mission,
            "--rate",
            rate,
            "--burst",
            burst,
            "--json",
        ]))
        .unwrap();
        bob.ok(["grants", "import", grant["ticket"].as_str().unwrap()]);
    }
    wait_for("the grants to reach the agent", LIMIT, || {
        bob.cli(["call", "door/open", "{}"]).status.success()
    });
    wait_for("the agent's metrics endpoint", LIMIT, || {
        std::net::TcpStream::connect(&agent_metrics).is_ok()
    });

    // 1. The agent's metrics parse, and the counters move with each call.
    let key = "wtd_agent_calls_total{function=open,mission=door,outcome=ok}";
    let before = parse_metrics(&scrape(&agent_metrics));
    let ok_before = metric(&before, key);
    for _ in 0..3 {
        bob.ok(["call", "door/open", "{}"]);
    }
    bob.ok(["call", "noisy/emit", "{}"]);
    assert!(
        !bob.cli(["call", "noisy/emit", "{}"]).status.success(),
        "over the rate"
    );
    let m = parse_metrics(&scrape(&agent_metrics));
    assert_eq!(metric(&m, key), ok_before + 3.0);
    let hist = "wtd_agent_function_duration_seconds_count{function=open,mission=door}";
    assert_eq!(
        metric(&m, hist) - metric(&before, hist),
        3.0,
        "one duration per exec call"
    );
    assert!(
        metric(
            &m,
            "wtd_agent_function_duration_seconds_bucket{function=open,le=+Inf,mission=door}"
        ) >= 4.0
    );
    assert_eq!(
        metric(
            &m,
            "wtd_agent_calls_total{function=emit,mission=noisy,outcome=rate_limited}"
        ),
        1.0,
        "a refused call is counted by its kind"
    );
    assert!(metric(&m, "wtd_agent_mission_events_total{outcome=queued}") >= 4.0);
    assert!(metric(&m, "wtd_agent_mission_events_total{outcome=not_allowed}") >= 1.0);
    assert_eq!(metric(&m, "wtd_agent_calls_running{}"), 0.0);
    assert!(metric(&m, "wtd_agent_sessions_total{}") >= 5.0);
    assert!(
        metric(&m, "wtd_agent_start_time_seconds{}") > 1.6e9,
        "set at start"
    );

    // 2. Every metric the Grafana dashboard queries is one a real scrape has.
    let mut exported = metric_names(&scrape(&agent_metrics));
    exported.extend(metric_names(&scrape(&proxy_metrics)));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana-dashboard.json");
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("valid JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().map_or(&[][..], |t| t) {
            exprs.push(t["expr"].as_str().expect("every target has an expr").to_string());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut used = std::collections::BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("wtd_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            used.insert(name);
        }
    }
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics nobody exports: {missing:?}"
    );
    assert!(
        used.iter().any(|n| n.starts_with("wtd_agent_")) && used.iter().any(|n| n.starts_with("wtd_proxy_"))
    );
}

/// The Home Assistant configs the broker holds for agent `id` (by their device's serial).
fn configs_of(broker: &Mosquitto, id: &str) -> Vec<String> {
    broker
        .retained_all("homeassistant/#")
        .into_iter()
        .filter(|(_, p)| serde_json::from_str::<Value>(p).is_ok_and(|v| v["device"]["serial_number"] == id))
        .map(|(t, _)| t)
        .collect()
}

#[test]
fn agents_that_never_return_are_cleared_after_a_proxy_restart() {
    let lab = TestCluster::new();
    let broker = Mosquitto::start(&lab.dir().join("broker"), "allow_anonymous true");
    let conf = lab.dir().join("proxy.toml");
    std::fs::write(
        &conf,
        format!(
            "[mqtt]\nurl = \"{}\"\ncluster = \"re\"\nforget_after = \"4s\"\n",
            broker.url()
        ),
    )
    .unwrap();
    let conf = conf.display().to_string();
    let proxy = start_proxy(&lab, &["--config", &conf]);
    let alice = lab.user("alice");
    let alice_id = alice.init();
    let mut gone = lab.add_agent(&proxy.ticket, "pi-gone", &[&alice_id], "");
    let stays = lab.add_agent(&proxy.ticket, "pi-stays", &[&alice_id], "");
    let (gone_id, stays_id) = (gone.id(), stays.id());
    wait_for("both agents in Home Assistant", LIMIT, || {
        !configs_of(&broker, &gone_id).is_empty() && !configs_of(&broker, &stays_id).is_empty()
    });
    assert!(
        proxy.state_dir.join("mqtt-mirror.json").exists(),
        "what was published is saved"
    );

    // The proxy dies without seeing anyone leave, and pi-gone dies while it is down: the
    // broker still says pi-gone is online, and nobody will ever tell it otherwise but us.
    let port = proxy.addr.port();
    let mut proxy = proxy;
    proxy.daemon.kill();
    gone.daemon.kill();
    let gone_avail = format!("wtd/re/agents/{gone_id}/availability");
    assert_eq!(broker.retained(&gone_avail).as_deref(), Some("online"));
    let _proxy = lab.start_proxy_on(port, &["--config", &conf]);

    // Restarted: pi-gone reads offline at once, and is cleared forget_after later.
    wait_for("pi-gone offline after the restart", LIMIT, || {
        broker.retained(&gone_avail).as_deref() == Some("offline")
    });
    wait_for("pi-gone's configs cleared", LIMIT, || {
        configs_of(&broker, &gone_id).is_empty()
    });
    assert!(broker
        .retained(&format!("wtd/re/agents/{gone_id}/state"))
        .is_none());
    // pi-stays came back to the new proxy and keeps its place.
    wait_for("pi-stays online again", LIMIT, || {
        broker
            .retained(&format!("wtd/re/agents/{stays_id}/availability"))
            .as_deref()
            == Some("online")
    });
    assert!(!configs_of(&broker, &stays_id).is_empty());
    drop(stays);
}

#[test]
fn the_proxy_checks_the_mission_events_it_publishes() {
    use wtd_wire::*;
    let lab = TestCluster::new();
    let broker = Mosquitto::start(&lab.dir().join("broker"), "allow_anonymous true");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let proxy = start_proxy(
        &lab,
        &[
            "--mqtt",
            &broker.url(),
            "--mqtt-cluster",
            "raw",
            "--metrics",
            &metrics_addr,
        ],
    );
    let log = lab.dir().join("raw-events.txt");
    let sub = broker.subscribe("wtd/raw/missions/#", &log);
    let read = || sub.read();
    let advert = Advert {
        name: "raw-pi".into(),
        owners: vec![Key::from(wtd_keys::SecretKey::generate().public())],
        missions: vec![MissionInfo {
            name: "door".into(),
            version: "1".into(),
            description: String::new(),
            functions: vec![FunctionInfo {
                name: "watch".into(),
                description: String::new(),
                idempotent: true,
            }],
        }],
        tags: vec![],
        model: None,
        software: "raw".into(),
        warnings: vec![],
        enrollment: None,
    };
    let event = |mission: &str, line: &str| {
        encode(&FromAgent::MissionEvent(MissionEvent {
            mission: mission.into(),
            function: "watch".into(),
            line: line.into(),
        }))
    };
    // A worker thread: QUIC keeps sending while the test waits outside the runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (addr, proxy_key) = (proxy.addr, *proxy.id.key());
    let key = wtd_keys::SecretKey::generate();
    let client = {
        let _in_runtime = rt.enter();
        wtd_transport::Client::bind(&key, "127.0.0.1:0".parse().unwrap()).unwrap()
    };
    let hello = |version: u16| {
        let (client, advert) = (&client, advert.clone());
        async move {
            let conn = client.connect(addr, proxy_key).await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let hello = Open::Agent(AgentHello {
                version,
                advert,
                heads: vec![],
            });
            wtd_transport::write_frame(&mut send, &encode(&hello))
                .await
                .unwrap();
            let first = wtd_transport::read_frame(&mut recv, defaults::MAX_FRAME)
                .await
                .unwrap()
                .unwrap();
            (conn, send, recv, decode::<ToAgent>(&first).unwrap())
        }
    };

    // Versions: 2 is refused with the reason, 3 (no mission events) is still admitted.
    let (_, _, _, reply) = rt.block_on(hello(MIN_PROTOCOL_VERSION - 1));
    assert_eq!(
        reply,
        ToAgent::Refused(Refusal::VersionMismatch {
            proxy: PROTOCOL_VERSION
        })
    );
    let (old, _, _, reply) = rt.block_on(hello(MIN_PROTOCOL_VERSION));
    assert!(matches!(reply, ToAgent::Welcome { .. }), "{reply:?}");
    old.close(0u32.into(), b"bye");

    let (conn, send, mut recv, reply) = rt.block_on(hello(PROTOCOL_VERSION));
    assert!(matches!(reply, ToAgent::Welcome { .. }), "{reply:?}");
    // Heartbeats, as a real agent sends them, so the proxy never reaps this one as silent
    // while the test waits or floods (on a loaded machine that can take longer than the
    // proxy's silence limit). The control stream is shared, one frame at a time; the task is
    // aborted at the end, and ends by itself once the proxy closes the connection.
    let send = std::sync::Arc::new(tokio::sync::Mutex::new(send));
    let heartbeats = rt.spawn({
        let send = send.clone();
        async move {
            let beat = encode(&FromAgent::Heartbeat(Load::default()));
            let mut ticks = tokio::time::interval(Duration::from_millis(500));
            loop {
                ticks.tick().await;
                let mut send = send.lock().await;
                if wtd_transport::write_frame(&mut send, &beat).await.is_err() {
                    break;
                }
            }
        }
    });
    let write = |frame: Vec<u8>| {
        let send = send.clone();
        async move {
            let mut send = send.lock().await;
            wtd_transport::write_frame(&mut send, &frame).await.unwrap();
        }
    };
    rt.block_on(async {
        // A mission it does not offer, then one it does.
        write(event("other", "x")).await;
        write(event("door", r#"{"n": 0}"#)).await;
    });
    wait_for("door's event", LIMIT, || {
        read().contains("wtd/raw/missions/door/events")
    });
    assert!(
        !read().contains("other"),
        "only missions the agent offers: {}",
        read()
    );
    let m = parse_metrics(&scrape(&metrics_addr));
    assert_eq!(metric(&m, "wtd_proxy_mission_events_total{}"), 1.0);
    assert_eq!(metric(&m, "wtd_proxy_mission_events_dropped_total{}"), 1.0);

    // An agent that does not count: the proxy's own budget (a burst of 100, 20/s) cuts it.
    let started = std::time::Instant::now();
    rt.block_on(async {
        for n in 1..=1000 {
            write(event("door", &format!("flood {n}"))).await;
        }
    });
    wait_for("the flood's dropped events counted", LIMIT, || {
        metric(
            &parse_metrics(&scrape(&metrics_addr)),
            "wtd_proxy_mission_events_dropped_total{}",
        ) >= 800.0
    });
    let published = metric(
        &parse_metrics(&scrape(&metrics_addr)),
        "wtd_proxy_mission_events_total{}",
    ) - 1.0;
    let bound = 100.0 + 20.0 * (started.elapsed().as_secs_f64() + 1.0);
    assert!(published <= bound, "{published} published, bound {bound}");

    // A name that is not a mission name (it would be a topic wildcard): the agent is cut off.
    rt.block_on(async {
        write(event("door/#", "x")).await;
        let closed = tokio::time::timeout(LIMIT, async {
            while let Ok(Some(_)) = wtd_transport::read_frame(&mut recv, defaults::MAX_FRAME).await {}
        })
        .await;
        assert!(closed.is_ok(), "the proxy closes the connection");
        conn.close(0u32.into(), b"bye");
    });
    heartbeats.abort();
    assert!(!read().contains("door/#"));
    drop(sub);
}
