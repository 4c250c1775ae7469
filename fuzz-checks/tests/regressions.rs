//! Replays every input kept in `fuzz/regressions/<target>/` through its target's check, on
//! stable Rust, so every crash fuzzing ever found stays fixed. Also keeps the list of
//! targets here and in `fuzz/Cargo.toml` equal.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

#[test]
fn every_kept_input_passes_its_check() {
    let root = fuzz_dir().join("regressions");
    let mut replayed = 0;
    for dir in std::fs::read_dir(&root).expect("fuzz/regressions exists") {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let check = wtd_fuzz_checks::check(&name)
            .unwrap_or_else(|| panic!("fuzz/regressions/{name}: no fuzz target of that name"));
        for input in std::fs::read_dir(&dir).unwrap() {
            let path = input.unwrap().path();
            if path.file_name().is_some_and(|n| n == "README.md") {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            eprintln!("replaying {}", path.display());
            check(&data);
            replayed += 1;
        }
    }
    wtd_fuzz_checks::files::remove_scratch();
    println!("replayed {replayed} kept inputs");
    assert!(replayed > 0, "fuzz/regressions holds no input");
}

#[test]
fn every_target_is_in_fuzz_cargo_toml_and_back() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "wtd-fuzz")
        .collect();
    let targets: Vec<&str> = wtd_fuzz_checks::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        bins, targets,
        "fuzz/Cargo.toml [[bin]]s and wtd_fuzz_checks::TARGETS differ"
    );
    for name in &targets {
        let src = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&src).unwrap_or_else(|_| panic!("{} is missing", src.display()));
        assert!(
            text.contains(&format!("::{name}(")),
            "{} does not call its check",
            src.display()
        );
    }
}

#[test]
fn the_checks_survive_a_few_simple_inputs() {
    // Not a fuzzer: edges every decoder must take in its stride, on every machine.
    let inputs: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xff; 64],
        b"WTDLOG1\n".to_vec(),
        b"WTDLOG1\n\xff\xff\xff\xff".to_vec(),
        b"WTDLOG1\n\0\0\0\0\0\0\0\0\0\0\0\0".to_vec(),
        b"[mqtt]\nurl = \"mqtt://127.0.0.1\"\n".to_vec(),
        b"max_connections = 0\n".to_vec(),
        b"proxy = \"wtdt1\"\n".to_vec(),
        b"\0\0\0\x05hello".to_vec(),
    ];
    for (name, check) in wtd_fuzz_checks::TARGETS {
        for input in &inputs {
            eprintln!("{name} on {input:?}");
            check(input);
        }
    }
    wtd_fuzz_checks::files::remove_scratch();
}

#[test]
fn the_seeds_pass_and_are_what_they_claim() {
    for (target, name, bytes) in wtd_fuzz_checks::seeds::all() {
        wtd_fuzz_checks::check(target).expect("a target")(&bytes);
        eprintln!("seed {target}/{name} passes");
    }
    // The log seed is a real log: the store opens it whole, and every cut of it (a power
    // cut at any byte) still passes the check (cut tails, refusals, never a panic).
    let log = wtd_fuzz_checks::seeds::owner_log_file();
    let dir = wtd_fuzz_checks::files::scratch().join("seed");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("owner.log");
    std::fs::write(&path, &log).unwrap();
    let (file, report) =
        wtd_store::logfile::LogFile::open(&path, wtd_fuzz_checks::files::fuzz_owner()).unwrap();
    assert_eq!((file.log().entries().len(), report.torn_tail_bytes), (3, 0));
    drop(file);
    for cut in 0..log.len() {
        wtd_fuzz_checks::files::open_owner_log(&log[..cut]);
    }
    wtd_fuzz_checks::files::remove_scratch();
}
