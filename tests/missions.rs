//! The example missions of `examples/missions/`, each run through a real local cluster: a
//! `wtd proxy` and three `wtd agent`s on 127.0.0.1 offering every example, and `wtd call`
//! (and the client scripts in `examples/missions/clients/`) run by their owner, Alice.
//!
//! One cluster serves every step (starting three agents costs seconds, and no step changes
//! the cluster: every call is by the agents' owner), so the steps run in one `#[test]`, in
//! order; a failing step names itself. What each shows:
//! - `every_example_mission_loads_without_a_warning`: the files are valid for the agent.
//! - `echo_*`: arguments in on stdin, answer out on stdout, stderr lines as progress.
//! - `sysinfo_*`: the machine's facts as JSON, true of this machine.
//! - `primes_*`: a count split across agents adds up to the known total; bad ranges refused.
//! - `pi_*`: darts gathered with `--all`; a seed repeats; bad arguments refused.
//! - `wordcount_*`: map on every agent, reduce on one, the known top words; bad parts refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{wait_for, Agent, Proxy, TestCluster, User};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(30);
const AGENTS: [&str; 3] = ["pi-1", "pi-2", "pi-3"];
const EXAMPLES: [&str; 7] = ["demo", "files", "echo", "sysinfo", "primes", "pi", "wordcount"];

/// The cluster; dropped at the end of the test, which stops its processes.
struct Lab {
    alice: User,
    _agents: Vec<Agent>,
    _proxy: Proxy,
    _lab: TestCluster,
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/missions")
}

impl Lab {
    fn new() -> Lab {
        let lab = TestCluster::new();
        let proxy = lab.start_proxy();
        let alice = lab.user("alice");
        let alice_id = alice.init();
        alice.ok(["join", &proxy.ticket]);
        let agents: Vec<Agent> = AGENTS
            .iter()
            .map(|name| {
                // The examples go into the agent's missions directory before it starts
                // (it reads them once, at start); the harness adds `demo`.
                let missions = lab.dir().join("agents").join(name).join("missions");
                std::fs::create_dir_all(&missions).unwrap();
                for mission in EXAMPLES {
                    let file = format!("{mission}.toml");
                    std::fs::copy(examples_dir().join(&file), missions.join(&file)).unwrap();
                }
                let agent = lab.add_agent(&proxy.ticket, name, &[&alice_id], "");
                alice.adopt(&agent);
                agent
            })
            .collect();
        wait_for("three agents with every example", LIMIT, || {
            let ls = alice.ls();
            ls.len() == 3
                && ls.iter().all(|a| {
                    a["missions"]
                        .as_array()
                        .is_some_and(|m| m.len() == 1 + EXAMPLES.len())
                })
        });
        Lab {
            alice,
            _agents: agents,
            _proxy: proxy,
            _lab: lab,
        }
    }
}

/// One step of the test: a check against the cluster.
type Step = fn(&Lab);

#[test]
fn the_example_missions_run_through_a_real_cluster() {
    let lab = Lab::new();
    let steps: [(&str, Step); 10] = [
        (
            "every_example_mission_loads_without_a_warning",
            every_example_mission_loads_without_a_warning,
        ),
        (
            "echo_returns_its_arguments_and_shows_progress",
            echo_returns_its_arguments_and_shows_progress,
        ),
        (
            "echo_countdown_streams_progress_lines_in_order_before_the_answer",
            echo_countdown_streams_progress_lines_in_order_before_the_answer,
        ),
        (
            "sysinfo_tells_the_truth_about_this_machine",
            sysinfo_tells_the_truth_about_this_machine,
        ),
        (
            "primes_split_across_three_agents_add_up_to_the_known_count",
            primes_split_across_three_agents_add_up_to_the_known_count,
        ),
        (
            "primes_refuses_bad_ranges_with_a_reason",
            primes_refuses_bad_ranges_with_a_reason,
        ),
        (
            "pi_darts_gathered_with_all_make_an_estimate",
            pi_darts_gathered_with_all_make_an_estimate,
        ),
        (
            "pi_refuses_bad_arguments_with_a_reason",
            pi_refuses_bad_arguments_with_a_reason,
        ),
        (
            "wordcount_map_on_every_agent_and_reduce_on_one_find_the_top_words",
            wordcount_map_on_every_agent_and_reduce_on_one_find_the_top_words,
        ),
        (
            "wordcount_refuses_what_is_not_a_map_result",
            wordcount_refuses_what_is_not_a_map_result,
        ),
    ];
    for (name, step) in steps {
        eprintln!("step: {name}");
        step(&lab);
    }
}

/// `wtd call args...` as Alice. On a machine so loaded that an agent missed its
/// heartbeats and left the roster for a moment ("no agent", exit 4), the call is made
/// again once all three are back: the missions are under test here, not the liveness
/// budget (benchmarked by scripts/bench-liveness.sh).
fn call(lab: &Lab, args: &[&str]) -> Output {
    let mut all = vec!["call"];
    all.extend_from_slice(args);
    let out = lab.alice.cli(&all);
    if out.status.code() != Some(4) {
        return out;
    }
    eprintln!(
        "wtd call {args:?}: {}; calling again once the agents are back",
        text(&out.stderr).trim()
    );
    wait_for("all three agents online", LIMIT, || lab.alice.ls().len() == 3);
    lab.alice.cli(&all)
}

/// `wtd call args...`, which must succeed; its stdout parsed as JSON.
fn call_json(lab: &Lab, args: &[&str]) -> Value {
    let out = call(lab, args);
    assert!(out.status.success(), "wtd call {args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&out.stdout)))
}

/// A call that must fail in the function (exit code 7), saying `why`.
fn refused(lab: &Lab, args: &[&str], why: &str) {
    let out = call(lab, args);
    assert_eq!(
        out.status.code(),
        Some(7),
        "wtd call {args:?}: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains(why),
        "wtd call {args:?}: {}",
        text(&out.stderr)
    );
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs a client script of `examples/missions/clients/` with Alice's `wtd`; its stdout.
fn client(lab: &Lab, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("WTD", common::wtd_bin())
        .env("WTD_HOME", &lab.alice.home)
        .output()
        .expect("run the client script");
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn clients() -> PathBuf {
    examples_dir().join("clients")
}

fn every_example_mission_loads_without_a_warning(lab: &Lab) {
    for agent in lab.alice.ls() {
        assert_eq!(agent["warnings"], Value::Array(vec![]), "{}", agent["name"]);
        let offered: Vec<&str> = agent["missions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        for mission in EXAMPLES {
            assert!(offered.contains(&mission), "{} lacks {mission}", agent["name"]);
        }
    }
}

fn echo_returns_its_arguments_and_shows_progress(lab: &Lab) {
    let out = call(lab, &["--agent", "pi-2", "echo/back", r#"{"msg":"hi"}"#]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), r#"{"msg":"hi"}"#);
    assert!(
        text(&out.stderr).contains("[pi-2] got my arguments on stdin; sending them back"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        call_json(lab, &["echo/shout", r#"{"msg":"hi"}"#]),
        serde_json::json!({"MSG": "HI"})
    );
}

fn echo_countdown_streams_progress_lines_in_order_before_the_answer(lab: &Lab) {
    let out = call(lab, &["--agent", "pi-1", "echo/countdown"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stderr), "[pi-1] 3...\n[pi-1] 2...\n[pi-1] 1...\n");
    assert_eq!(text(&out.stdout).trim(), r#"{"liftoff": true}"#);
}

fn sysinfo_tells_the_truth_about_this_machine(lab: &Lab) {
    let info = call_json(lab, &["sysinfo/show"]);
    let host = Command::new("uname").arg("-n").output().unwrap();
    assert_eq!(info["host"], text(&host.stdout).trim());
    assert_eq!(info["machine"], std::env::consts::ARCH);
    assert!(info["cpus"].as_u64().unwrap() >= 1, "{info}");
    assert!(info["uptime_s"].as_f64().unwrap() > 0.0, "{info}");
    assert!(info["load1"].as_f64().is_some(), "{info}");
    let total = info["mem_total_kb"].as_u64().unwrap();
    let available = info["mem_available_kb"].as_u64().unwrap();
    assert!(available > 0 && available <= total, "{info}");
    // A number where the machine has a sensor, null where it has none; never a string.
    let has_sensor = Path::new("/sys/class/thermal/thermal_zone0/temp").exists();
    assert_eq!(info["temperature_c"].is_number(), has_sensor, "{info}");
    assert_eq!(
        info["model"].is_string(),
        Path::new("/proc/device-tree/model").exists()
    );
    let temp = call_json(lab, &["sysinfo/temperature"]);
    assert_eq!(temp["temperature_c"].is_number(), has_sensor, "{temp}");
}

fn primes_split_across_three_agents_add_up_to_the_known_count(lab: &Lab) {
    // pi(10^6) = 78498, the largest prime below a million is 999983.
    let whole = call_json(lab, &["primes/count", r#"{"from": 0, "to": 1000000}"#]);
    assert_eq!(whole["count"], 78498);
    assert_eq!(whole["largest"], 999983);
    let edges = call_json(lab, &["primes/count", r#"{"from": 0, "to": 3}"#]);
    assert_eq!(
        (edges["count"].as_u64(), edges["largest"].as_u64()),
        (Some(1), Some(2))
    );
    let none = call_json(lab, &["primes/count", r#"{"from": 24, "to": 29}"#]);
    assert_eq!(
        (none["count"].as_u64(), none["largest"].is_null()),
        (Some(0), true)
    );

    let script = clients().join("split-primes.sh");
    let out = client(lab, "/bin/sh", &[script.to_str().unwrap(), "1000000"]);
    assert_eq!(
        out,
        "pi-1 counts [0, 333333)\npi-2 counts [333333, 666666)\npi-3 counts [666666, 1000000)\n\
         pi-1 found 28665\npi-2 found 25404\npi-3 found 24429\nprimes below 1000000: 78498\n"
    );
    // Only the agents named.
    let out = client(lab, "/bin/sh", &[script.to_str().unwrap(), "100", "pi-3"]);
    assert_eq!(out, "pi-3 counts [0, 100)\npi-3 found 25\nprimes below 100: 25\n");
}

fn primes_refuses_bad_ranges_with_a_reason(lab: &Lab) {
    refused(
        lab,
        &["primes/count", r#"{"from": 5, "to": 3}"#],
        "need 0 <= from <= to; got from=5, to=3",
    );
    refused(
        lab,
        &["primes/count", r#"{"from": -1, "to": 3}"#],
        "need 0 <= from <= to",
    );
    refused(
        lab,
        &["primes/count", r#"{"to": "ten"}"#],
        r#""from" and "to" must be whole numbers"#,
    );
    refused(
        lab,
        &["primes/count", r#"{"to": true}"#],
        r#""from" and "to" must be whole numbers"#,
    );
    refused(lab, &["primes/count", "[1, 2]"], "must be a JSON object");
    refused(
        lab,
        &["primes/count", r#"{"from": 0, "to": 10000001}"#],
        "at most 10000000 numbers per call; split the range",
    );
}

fn pi_darts_gathered_with_all_make_an_estimate(lab: &Lab) {
    let answers = call_json(lab, &["--all", "pi/darts", r#"{"darts": 20000}"#]);
    let answers = answers.as_array().unwrap();
    let mut names: Vec<&str> = answers.iter().map(|a| a["agent"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, AGENTS);
    for a in answers {
        assert_eq!(a["status"], "ok", "{a}");
        assert_eq!(a["output"]["darts"], 20000);
        // Four times the share inside a quarter circle: 20,000 darts land within 0.1 of pi
        // except with a probability far below one in a billion.
        let estimate = a["output"]["estimate"].as_f64().unwrap();
        assert!((estimate - std::f64::consts::PI).abs() < 0.1, "{a}");
    }

    // The same seed, the same darts, on every agent.
    let seeded = call_json(lab, &["--all", "pi/darts", r#"{"darts": 1000, "seed": 7}"#]);
    let inside: Vec<&Value> = seeded
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["output"]["inside"])
        .collect();
    assert!(inside.windows(2).all(|w| w[0] == w[1]), "{seeded}");

    // The client adds them up, reading the list on its stdin as from a pipe.
    let mut gather = Command::new("/usr/bin/python3")
        .arg(clients().join("gather-pi.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut gather.stdin.take().unwrap(),
        &serde_json::to_vec(answers).unwrap(),
    )
    .unwrap();
    let out = gather.wait_with_output().unwrap();
    let out = text(&out.stdout);
    assert!(
        out.contains("all together: ") && out.contains(" of 60000 darts inside, pi ~ 3.1"),
        "{out}"
    );
    for name in AGENTS {
        assert!(out.contains(&format!("{name}: ")), "{out}");
    }
}

fn pi_refuses_bad_arguments_with_a_reason(lab: &Lab) {
    refused(
        lab,
        &["pi/darts", r#"{"darts": 0}"#],
        r#""darts" must be a whole number from 1 to 5000000"#,
    );
    refused(
        lab,
        &["pi/darts", r#"{"darts": 5000001}"#],
        r#""darts" must be a whole number"#,
    );
    refused(
        lab,
        &["pi/darts", r#"{"darts": 2.5}"#],
        r#""darts" must be a whole number"#,
    );
    refused(
        lab,
        &["pi/darts", r#"{"seed": [1]}"#],
        r#""seed" must be a number or a string"#,
    );
    refused(lab, &["pi/darts", r#""many""#], "must be a JSON object");
}

fn wordcount_map_on_every_agent_and_reduce_on_one_find_the_top_words(lab: &Lab) {
    let map = call_json(
        lab,
        &[
            "wordcount/map",
            r#"{"text": "The cat and THE hat; don't 3 cats"}"#,
        ],
    );
    assert_eq!(
        map,
        serde_json::json!({"words": 7, "counts": {"and": 1, "cat": 1, "cats": 1, "don't": 1, "hat": 1, "the": 2}})
    );
    let parts = serde_json::json!({"parts": [map, {"words": 2, "counts": {"the": 1, "zebra": 1}}], "top": 2});
    let reduce = call_json(lab, &["wordcount/reduce", &parts.to_string()]);
    assert_eq!(
        reduce,
        serde_json::json!({"parts": 2, "words": 9, "distinct": 7, "top": [["the", 3], ["and", 1]]})
    );

    let text_file = examples_dir().join("texts/cluster.txt");
    let out = client(
        lab,
        "/usr/bin/python3",
        &[
            clients().join("mapreduce.py").to_str().unwrap(),
            text_file.to_str().unwrap(),
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 9, "{out}");
    for (line, agent) in lines.iter().zip(AGENTS) {
        assert!(line.starts_with(&format!("map    on {agent}: ")), "{out}");
    }
    // The whole text, counted by Python here, is what the cluster found.
    let words = std::fs::read_to_string(&text_file).unwrap().to_lowercase();
    let total = words
        .split(|c: char| !c.is_alphabetic() && c != '\'')
        .filter(|w| !w.is_empty())
        .count();
    assert!(lines[3].contains(&format!(": {total} words, ")), "{out}");
    assert_eq!(
        &lines[4..],
        [
            "    38  the",
            "    18  is",
            "    14  and",
            "    10  a",
            "    10  pi"
        ]
    );
}

fn wordcount_refuses_what_is_not_a_map_result(lab: &Lab) {
    refused(
        lab,
        &["wordcount/map", r#"{"words": "no text key"}"#],
        "give the text to count as a string",
    );
    refused(
        lab,
        &["wordcount/reduce", r#"{"parts": "x"}"#],
        "give the map results to merge as a list",
    );
    refused(
        lab,
        &["wordcount/reduce", r#"{"parts": [{"x": 1}]}"#],
        "part 0 is not a map result",
    );
    refused(
        lab,
        &["wordcount/reduce", r#"{"parts": [{"counts": {"a": -1}}]}"#],
        "part 0: the count of 'a' is not a whole number",
    );
    refused(
        lab,
        &["wordcount/reduce", r#"{"parts": [], "top": 0}"#],
        r#""top" must be a whole number"#,
    );
}
