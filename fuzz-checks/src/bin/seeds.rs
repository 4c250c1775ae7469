//! `wtd-fuzz-seeds DIR`: writes every seed input to `DIR/<target>/<name>`.

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: wtd-fuzz-seeds DIR (seeds go to DIR/<target>/)");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    for (target, name, bytes) in wtd_fuzz_checks::seeds::all() {
        let target_dir = dir.join(target);
        std::fs::create_dir_all(&target_dir)?;
        std::fs::write(target_dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}
