//! The advert: what the agent tells the proxy about itself in its hello, and what `wtd ls`
//! shows. Built once at start from the config, the mission catalogue and the board model.
//!
//! The proxy refuses an advert that breaks the wire limits (`Advert::validate`), and a
//! refused advert would keep the agent out of the roster entirely. So everything here is
//! made to fit: warnings are cut to one line of at most 256 bytes and at most 16 of them,
//! and the model string is dropped if it does not fit.

use wtd_keys::AgentId;
use wtd_wire::defaults::{MAX_TEXT, MAX_WARNINGS};
use wtd_wire::{Advert, Key};

use crate::config::AgentConfig;
use crate::missions::Catalogue;

/// The software version reported in the advert, e.g. `wtd-agent 0.1.0`.
pub fn software() -> String {
    format!("wtd-agent {}", env!("CARGO_PKG_VERSION"))
}

/// Builds the advert. `model` is the board (`Raspberry Pi 4 Model B Rev 1.4`), if known;
/// `id` is this agent's, which an enrollment proof is bound to.
pub fn build(config: &AgentConfig, id: &AgentId, catalogue: &Catalogue, model: Option<String>) -> Advert {
    Advert {
        name: config.name.clone(),
        owners: config.owners.iter().map(|o| Key::from(*o.key())).collect(),
        missions: catalogue.infos(),
        tags: config.tags.clone(),
        model: model.filter(|m| m.len() <= MAX_TEXT && !m.chars().any(char::is_control)),
        software: software(),
        warnings: fit_warnings(catalogue.warnings()),
        enrollment: config.enroll.as_ref().map(|t| t.prove(id).into()),
    }
}

/// At most [`MAX_WARNINGS`] warnings, each one line of at most [`MAX_TEXT`] bytes. When
/// there are too many, the last slot says how many more are in the agent's log.
pub fn fit_warnings(warnings: &[String]) -> Vec<String> {
    let mut fitted: Vec<String> = warnings.iter().map(|w| fit_text(w)).collect();
    if fitted.len() > MAX_WARNINGS {
        let more = fitted.len() - (MAX_WARNINGS - 1);
        fitted.truncate(MAX_WARNINGS - 1);
        fitted.push(format!("... and {more} more warnings: see the agent's log"));
    }
    fitted
}

/// One line of at most [`MAX_TEXT`] bytes: control characters become spaces, and a long
/// text is cut at a character boundary and ends with `...`.
fn fit_text(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() <= MAX_TEXT {
        return line;
    }
    let mut end = MAX_TEXT - 3;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wtd_keys::{ProxyInfo, SecretKey};

    #[test]
    fn warnings_are_cut_to_fit() {
        let long = "é".repeat(200); // 400 bytes, 2 per char
        let fitted = fit_warnings(&[long, "two\nlines".into()]);
        assert!(fitted[0].len() <= MAX_TEXT && fitted[0].ends_with("..."));
        assert_eq!(fitted[1], "two lines");

        let many: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
        let fitted = fit_warnings(&many);
        assert_eq!(fitted.len(), MAX_WARNINGS);
        assert_eq!(fitted[MAX_WARNINGS - 2], "w14");
        assert_eq!(
            fitted[MAX_WARNINGS - 1],
            "... and 25 more warnings: see the agent's log"
        );
    }

    #[test]
    fn the_advert_passes_the_proxys_checks() {
        let proxy = ProxyInfo {
            id: SecretKey::from_seed(&[9; 32]).public().into(),
            addrs: vec!["127.0.0.1:1".parse().unwrap()],
        };
        let alice = SecretKey::from_seed(&[1; 32]).public().into();
        let config = AgentConfig {
            name: "pi-1".into(),
            tags: vec!["lab".into()],
            ..AgentConfig::new(proxy, vec![alice])
        };
        let mut catalogue = Catalogue::builtin();
        let me = AgentId(SecretKey::from_seed(&[3; 32]).public());
        let advert = build(&config, &me, &catalogue, Some("Raspberry Pi 4".into()));
        assert_eq!(advert.validate(), Ok(()));
        assert_eq!(advert.missions[0].name, "sys");
        assert_eq!(advert.model.as_deref(), Some("Raspberry Pi 4"));
        assert!(advert.software.starts_with("wtd-agent "));

        catalogue = Catalogue::load(std::path::Path::new("/dev/null"));
        let advert = build(&config, &me, &catalogue, Some("x".repeat(MAX_TEXT + 1)));
        assert_eq!(advert.model, None, "an oversized model is dropped, not refused");
        assert_eq!(advert.warnings.len(), 1);
        assert_eq!(advert.validate(), Ok(()));
        assert_eq!(advert.enrollment, None);

        // With a token: a proof for this agent's id, and never the token itself.
        let token = wtd_keys::EnrollmentToken::generate();
        let config = AgentConfig {
            enroll: Some(token.clone()),
            ..config
        };
        let advert = build(&config, &me, &catalogue, None);
        let proof: wtd_keys::EnrollProof = advert.enrollment.unwrap().into();
        assert!(token.verifies(&proof, &me));
        let other = AgentId(SecretKey::from_seed(&[4; 32]).public());
        assert!(!token.verifies(&proof, &other), "bound to this agent's id");
    }
}
