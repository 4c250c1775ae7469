//! The load report sent with every heartbeat: how busy this machine is, and how the Pi is
//! doing (temperature, power/thermal throttling).
//!
//! Two sources, sampled at two speeds:
//! - [`LoadSampler`] reads the load average, CPU and memory from `/proc` on every
//!   heartbeat. It keeps one `sysinfo::System` and refreshes only CPU usage and RAM:
//!   never processes or disks, which would cost a Pi Zero far more than the whole agent.
//!   CPU usage is the change since the previous sample, so the first one reads 0.
//! - [`poll_sensors`] reads the Pi sensors ([`crate::sensors`]) every 10 s on a blocking
//!   thread, because a reading may run `vcgencmd`, which can take seconds, and the agent's
//!   single async thread must never stall (it also keeps the QUIC connection alive).

use std::time::Duration;

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, System};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wtd_wire::Load;

use crate::sensors::{self, PiSensors, SensorPaths};

/// Samples this machine's load. Keep one for the life of the agent: CPU usage is computed
/// from the difference between two samples.
#[derive(Debug)]
pub struct LoadSampler {
    /// The one sysinfo handle. Created empty, and only CPU and RAM are ever refreshed.
    system: System,
    /// The test seam from the config: when set, reported instead of the real load.
    pinned: Option<f32>,
}

impl LoadSampler {
    /// A sampler; `pinned` is the config's `test_pinned_load`.
    pub fn new(pinned: Option<f32>) -> Self {
        let mut system = System::new();
        // The baseline the first real sample's CPU usage is measured against.
        system.refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage());
        LoadSampler { system, pinned }
    }

    /// Reads the load now, adding the latest Pi sensor reading `pi`.
    pub fn sample(&mut self, pi: &PiSensors) -> Load {
        self.system
            .refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage());
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let (load1, cpu_percent) = match self.pinned {
            Some(pinned) => (pinned, pinned),
            None => (System::load_average().one as f32, self.system.global_cpu_usage()),
        };
        Load {
            load1,
            cpu_percent,
            mem_used_kb: self.system.used_memory() / 1024,
            mem_total_kb: self.system.total_memory() / 1024,
            temperature_c: pi.temperature_c,
            throttled: pi.throttled.map(|t| t.raw),
        }
    }
}

/// Reads the Pi sensors every `interval` into `latest` until `shutdown`. Readers always see
/// the most recent reading; a reading that fails is `None` fields, never an error.
pub async fn poll_sensors(
    paths: SensorPaths,
    interval: Duration,
    latest: watch::Sender<PiSensors>,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let paths = paths.clone();
        // Awaited right here, so the blocking read is owned by this loop. If the agent stops
        // mid-read, the read still ends on its own within `sensors::VCGENCMD_TIMEOUT`.
        let reading = tokio::select! {
            _ = shutdown.cancelled() => return,
            reading = tokio::task::spawn_blocking(move || sensors::read(&paths)) => reading,
        };
        match reading {
            Ok(reading) => {
                latest.send_replace(reading);
            }
            Err(e) => log::warn!("reading the Pi sensors failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::ThrottleFlags;

    #[test]
    fn samples_are_plausible() {
        let mut sampler = LoadSampler::new(None);
        let load = sampler.sample(&PiSensors::default());
        assert!(load.mem_total_kb > 0, "every machine has memory");
        assert!(load.mem_used_kb <= load.mem_total_kb);
        assert!((0.0..=100.0).contains(&load.cpu_percent), "{}", load.cpu_percent);
        assert!(load.load1 >= 0.0);
        assert_eq!((load.temperature_c, load.throttled), (None, None));
    }

    #[test]
    fn the_test_seam_pins_load_and_cpu() {
        let mut sampler = LoadSampler::new(Some(7.5));
        let pi = PiSensors {
            temperature_c: Some(48.3),
            throttled: Some(ThrottleFlags::from_raw(0x50005)),
            model: None,
        };
        let load = sampler.sample(&pi);
        assert_eq!((load.load1, load.cpu_percent), (7.5, 7.5));
        assert!(load.mem_total_kb > 0, "memory is still real");
        assert_eq!(load.temperature_c, Some(48.3));
        assert_eq!(load.throttled, Some(0x50005));
    }
}
