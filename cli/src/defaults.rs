//! The CLI's numbers, each with its reason.

/// How long `wtd join --lan` listens for proxies' announcements. An mDNS responder answers
/// a query within about a quarter of a second and repeats its announcement after one, so
/// three seconds catches every proxy on a quiet LAN with room for a busy classroom Wi-Fi,
/// and is short enough for a person waiting at a prompt.
pub const LAN_WAIT: &str = "3s";

/// Students in one roster: as many grants as one set revocation can end
/// ([`wtd_keys::defaults::MAX_REVOKED_SET`]), so a whole lesson always ends in one record.
pub const MAX_ROSTER_STUDENTS: usize = wtd_keys::defaults::MAX_REVOKED_SET;

/// Largest roster file read: 512 lines of a name and an id are about 40 KiB; anything
/// much bigger is the wrong file, and is refused before it is read into memory.
pub const MAX_ROSTER_BYTES: u64 = 256 * 1024;
