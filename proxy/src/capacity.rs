//! How many connections the proxy keeps: a profile per kind of machine it runs on, and the
//! operator's overrides, checked before the proxy starts.
//!
//! ```
//! use wtd_proxy::capacity::{ConnectionLimits, Deployment};
//! let limits = ConnectionLimits::for_deployment(Deployment::Laptop)
//!     .with_overrides(None, Some(16))
//!     .unwrap();
//! assert_eq!((limits.max_connections, limits.max_connections_per_ip), (1024, 16));
//! ```

use std::fmt;

use crate::defaults;

/// The kind of machine hosting the proxy; it picks the default connection limits (the
/// numbers and their reasons are in [`crate::defaults`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deployment {
    /// A Raspberry Pi (sized for a 512 MB Pi Zero 2 W): 128 connections, 32 per address.
    #[default]
    Pi,
    /// A teacher's laptop (4 GB or more): 1,024 connections, 64 per address.
    Laptop,
}

impl fmt::Display for Deployment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Deployment::Pi => "pi",
            Deployment::Laptop => "laptop",
        })
    }
}

/// The two connection limits the proxy enforces before spending a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections kept at once (handshaking or established); more are refused.
    pub max_connections: usize,
    /// Connections kept at once from one IP address; more from it are refused.
    pub max_connections_per_ip: usize,
}

/// The operator asked for limits the proxy cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// A limit of zero would refuse everyone, which is never what was meant.
    #[error("{which} is 0, which would refuse every connection; use at least 1 (or leave it out for the deployment's default)")]
    Zero { which: &'static str },
    /// The per-address limit is above the total, so it would never bite.
    #[error("max_connections_per_ip ({per_ip}) is above max_connections ({total}); one address could then take every slot. Lower the first or raise the second")]
    PerIpAboveTotal { per_ip: usize, total: usize },
}

impl ConnectionLimits {
    /// The defaults for `deployment`.
    pub fn for_deployment(deployment: Deployment) -> Self {
        match deployment {
            Deployment::Pi => ConnectionLimits {
                max_connections: defaults::PI_MAX_CONNECTIONS,
                max_connections_per_ip: defaults::PI_MAX_CONNECTIONS_PER_IP,
            },
            Deployment::Laptop => ConnectionLimits {
                max_connections: defaults::LAPTOP_MAX_CONNECTIONS,
                max_connections_per_ip: defaults::LAPTOP_MAX_CONNECTIONS_PER_IP,
            },
        }
    }

    /// These limits with the operator's values where given, checked.
    pub fn with_overrides(
        self,
        max_connections: Option<usize>,
        per_ip: Option<usize>,
    ) -> Result<Self, LimitsError> {
        let limits = ConnectionLimits {
            max_connections: max_connections.unwrap_or(self.max_connections),
            max_connections_per_ip: per_ip.unwrap_or(self.max_connections_per_ip),
        };
        limits.check()?;
        Ok(limits)
    }

    /// Refuses limits that would refuse everyone or never bite.
    pub fn check(&self) -> Result<(), LimitsError> {
        if self.max_connections == 0 {
            return Err(LimitsError::Zero {
                which: "max_connections",
            });
        }
        if self.max_connections_per_ip == 0 {
            return Err(LimitsError::Zero {
                which: "max_connections_per_ip",
            });
        }
        if self.max_connections_per_ip > self.max_connections {
            return Err(LimitsError::PerIpAboveTotal {
                per_ip: self.max_connections_per_ip,
                total: self.max_connections,
            });
        }
        Ok(())
    }

    /// The transport limits with these two applied.
    pub fn apply(&self, limits: &mut wtd_transport::Limits) {
        limits.max_connections = self.max_connections;
        limits.max_connections_per_ip = self.max_connections_per_ip;
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::for_deployment(Deployment::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_deployment_has_usable_limits() {
        for d in [Deployment::Pi, Deployment::Laptop] {
            let l = ConnectionLimits::for_deployment(d);
            assert_eq!(l.check(), Ok(()), "{d}");
            let mut t = wtd_transport::Limits::default();
            l.apply(&mut t);
            assert_eq!(t.max_connections, l.max_connections);
        }
    }

    #[test]
    fn the_pi_default_is_what_the_transport_defaults_to() {
        // One default, not two that drift: the transport's own defaults are the Pi's.
        let t = wtd_transport::Limits::default();
        assert_eq!(
            ConnectionLimits::default(),
            ConnectionLimits {
                max_connections: t.max_connections,
                max_connections_per_ip: t.max_connections_per_ip,
            }
        );
    }

    #[test]
    fn a_laptop_keeps_more_than_a_pi() {
        let pi = ConnectionLimits::for_deployment(Deployment::Pi);
        let laptop = ConnectionLimits::for_deployment(Deployment::Laptop);
        assert!(laptop.max_connections > pi.max_connections);
        assert!(laptop.max_connections_per_ip >= pi.max_connections_per_ip);
    }

    #[test]
    fn overrides_replace_only_what_they_name() {
        let pi = ConnectionLimits::for_deployment(Deployment::Pi);
        assert_eq!(pi.with_overrides(None, None), Ok(pi));
        let l = pi.with_overrides(Some(64), None).unwrap();
        assert_eq!((l.max_connections, l.max_connections_per_ip), (64, 32));
    }

    #[test]
    fn zero_limits_are_refused() {
        let pi = ConnectionLimits::default();
        assert_eq!(
            pi.with_overrides(Some(0), None),
            Err(LimitsError::Zero {
                which: "max_connections"
            })
        );
        assert_eq!(
            pi.with_overrides(None, Some(0)),
            Err(LimitsError::Zero {
                which: "max_connections_per_ip"
            })
        );
    }

    #[test]
    fn a_per_address_limit_above_the_total_is_refused() {
        let err = ConnectionLimits::default()
            .with_overrides(Some(10), Some(11))
            .unwrap_err();
        assert_eq!(
            err,
            LimitsError::PerIpAboveTotal {
                per_ip: 11,
                total: 10
            }
        );
        assert!(err.to_string().contains("Lower the first or raise the second"));
        // Equal is fine: a proxy for one NAT'd room.
        assert!(ConnectionLimits::default()
            .with_overrides(Some(10), Some(10))
            .is_ok());
    }
}
