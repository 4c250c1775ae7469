//! What one load sample costs: the work the agent does for every heartbeat.
//!
//! ```text
//! cargo run --release -p wtd-agent --example load_cost [samples]
//! ```
//!
//! Prints a table: wall time and CPU time (user + system, from `/proc/self/stat`) per call
//! of `LoadSampler::sample` (CPU usage + RAM from /proc, the load average), of a Pi sensor
//! reading, and of `LoadSampler::new`, plus what that costs at one heartbeat per second as
//! a share of one core. A benchmark, not a test: it asserts nothing.

use std::time::{Duration, Instant};

use wtd_agent::load::LoadSampler;
use wtd_agent::sensors::{self, PiSensors, SensorPaths};

fn main() {
    let samples: u32 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000);

    let (new_wall, new_cpu) = measure(20, || {
        std::hint::black_box(LoadSampler::new(None));
    });
    let mut sampler = LoadSampler::new(None);
    let pi = PiSensors::default();
    let (sample_wall, sample_cpu) = measure(samples, || {
        std::hint::black_box(sampler.sample(&pi));
    });
    let paths = SensorPaths::system();
    let (sensors_wall, sensors_cpu) = measure(samples, || {
        std::hint::black_box(sensors::read(&paths));
    });

    println!(
        "{:<34} {:>12} {:>12} {:>22}",
        "operation", "wall/call", "cpu/call", "share of a core at 1 Hz"
    );
    let row = |name: &str, wall: Duration, cpu: Duration, per_second: f64| {
        println!(
            "{:<34} {:>10.1}us {:>10.1}us {:>21.4}%",
            name,
            wall.as_secs_f64() * 1e6,
            cpu.as_secs_f64() * 1e6,
            cpu.as_secs_f64() * per_second * 100.0
        );
    };
    row("LoadSampler::new (once)", new_wall, new_cpu, 0.0);
    row("LoadSampler::sample (every beat)", sample_wall, sample_cpu, 1.0);
    row("sensors::read (every 10 s)", sensors_wall, sensors_cpu, 0.1);
    let last = sampler.sample(&sensors::read(&paths));
    println!("\nlast sample: {last:?}");
}

/// Mean wall time and mean CPU time of `f` over `n` calls.
fn measure(n: u32, mut f: impl FnMut()) -> (Duration, Duration) {
    let cpu0 = cpu_time();
    let wall0 = Instant::now();
    for _ in 0..n {
        f();
    }
    let wall = wall0.elapsed() / n;
    let cpu = cpu_time().saturating_sub(cpu0) / n;
    (wall, cpu)
}

/// This process's user + system CPU time so far, from `/proc/self/stat` (Linux only).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect();
    // utime and stime are fields 14 and 15 of the file, 12 and 13 after the name.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    // USER_HZ is 100 on every Linux wtd runs on.
    Duration::from_millis(ticks * 10)
}
