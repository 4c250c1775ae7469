//! The soak, short: `scripts/soak.sh --seconds 60` against the `wtd` cargo built. A real
//! proxy and three real agents serve a mix of checked calls (echo, `--all`, receipts) and
//! grant/revocation cycles while agents are killed (-9) and stopped cleanly in turn. The
//! script fails, and so this test, if an answer is wrong, a revocation is lost, an agent
//! does not come back, or the proxy's or a steady agent's memory grows more than 10 %.
//! The 30-minute run is `bash scripts/soak.sh` (see docs/reliability.md).

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn a_minute_of_mixed_calls_while_agents_restart_is_all_correct_and_memory_stays_flat() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seconds = std::env::var("WTD_SOAK_SECONDS").unwrap_or_else(|_| "60".into());
    let out = Command::new("bash")
        .arg(root.join("scripts/soak.sh"))
        .args(["--seconds", &seconds, "--bin"])
        .arg(common::wtd_bin())
        .output()
        .expect("run scripts/soak.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "scripts/soak.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("every answer was right"),
        "the soak did not finish its checks:\n{stdout}"
    );
}
