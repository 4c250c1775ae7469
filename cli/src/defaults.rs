//! The CLI's numbers, each with its reason.

/// How long `wtd join --lan` listens for proxies' announcements. An mDNS responder answers
/// a query within about a quarter of a second and repeats its announcement after one, so
/// three seconds catches every proxy on a quiet LAN with room for a busy classroom Wi-Fi,
/// and is short enough for a person waiting at a prompt.
pub const LAN_WAIT: &str = "3s";
