//! State files read back from disk, and config files, through the same code the agent, the
//! proxy and the CLI use: the input is written to a scratch file, then opened for real.

use std::cell::RefCell;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use wtd_agent::owner_logs::OwnerLogs;
use wtd_agent::{AgentConfig, Catalogue};
use wtd_keys::{OwnerKey, SecretKey};
use wtd_store::logfile::LogFile;

thread_local! {
    static SCRATCH: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// This thread's scratch directory, one per process and thread, in /dev/shm when there is
/// one (a RAM disk: the stores fsync every write, which on a real disk would make fuzzing
/// the file targets a hundred times slower), else the system temp dir. [`remove_scratch`]
/// deletes it.
pub fn scratch() -> PathBuf {
    SCRATCH.with(|s| {
        s.borrow_mut()
            .get_or_insert_with(|| {
                let shm = Path::new("/dev/shm");
                let base = if shm.is_dir() {
                    shm.to_path_buf()
                } else {
                    std::env::temp_dir()
                };
                let dir = base.join(format!(
                    "wtd-fuzz-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                fs::create_dir_all(&dir).expect("scratch dir");
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod scratch");
                dir
            })
            .clone()
    })
}

/// Deletes this thread's scratch directory.
pub fn remove_scratch() {
    if let Some(dir) = SCRATCH.with(|s| s.borrow_mut().take()) {
        let _ = fs::remove_dir_all(dir);
    }
}

/// An empty directory `name` in the scratch dir.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = scratch().join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch subdir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

fn write(path: &Path, data: &[u8]) {
    fs::write(path, data).expect("write scratch file");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// The owner every fuzzed log claims to belong to. (Entries signed by anyone else are
/// refused, which is one of the branches worth reaching.)
pub fn fuzz_owner() -> OwnerKey {
    OwnerKey(SecretKey::from_seed(&[7; 32]).public())
}

/// An owner log file (`wtd_store::logfile`), opened by the store, by the agent's set of
/// logs and by the proxy's log store. Whatever is accepted, with any torn tail cut off,
/// opens again cleanly to the same log.
pub fn open_owner_log(data: &[u8]) {
    let owner = fuzz_owner();
    let dir = fresh_dir("logs");
    let path = wtd_agent::owner_logs::log_path(&dir, &owner);
    write(&path, data);
    let first = LogFile::open(&path, owner);
    if let Ok((file, report)) = first {
        let head = file.log().head();
        assert!(report.torn_tail_bytes <= data.len() as u64);
        drop(file);
        let on_disk = fs::read(&path).expect("read back");
        // Only a torn tail is ever cut; an empty file, or one whose very header was torn,
        // is started afresh with the header.
        let header = b"WTDLOG1\n";
        if header.starts_with(data) {
            assert_eq!(on_disk, header);
        } else {
            assert!(data.starts_with(&on_disk), "only a tail is ever cut");
        }
        let (again, report) = LogFile::open(&path, owner).expect("what opened once opens again");
        assert_eq!(report.torn_tail_bytes, 0, "the torn tail was cut the first time");
        assert_eq!(again.log().head(), head);
    }
    // Sealed opens (`wtd_keys::seal`) read exactly what a plain open reads: the first
    // verifies everything and seals, the second trusts the seal; both agree with a plain
    // open of the same bytes.
    let key = wtd_keys::seal::SealKey::derive(&wtd_keys::SecretKey::from_seed(&[5; 32]));
    let _ = fs::remove_file(wtd_store::logfile::seal_path(&path));
    write(&path, data);
    let plain = LogFile::open(&path, owner).map(|(f, _)| f.log().head());
    for _ in 0..2 {
        write(&path, data);
        let sealed = LogFile::open_sealed(&path, owner, &key).map(|(f, _)| f.log().head());
        assert_eq!(sealed.is_ok(), plain.is_ok(), "a seal changes no verdict");
        if let (Ok(a), Ok(b)) = (&sealed, &plain) {
            assert_eq!(a, b, "a seal changes nothing read");
        }
    }
    // The agent's and the proxy's own openers, on the original bytes.
    write(&path, data);
    let _ = OwnerLogs::open(&dir, &[owner], &key);
    write(&path, data);
    let _ = wtd_proxy::logs::LogStore::open(&dir);
}

/// The other state files: an identity key, the keyring, received grants, issued
/// enrollment tokens, the time floor.
pub fn open_state_files(data: &[u8]) {
    let dir = fresh_dir("state");
    let identity = dir.join("identity.key");
    write(&identity, data);
    if let Ok(key) = wtd_store::identity::load(&identity) {
        assert_eq!(
            SecretKey::from_text(&key.to_text()).expect("re-reads").public(),
            key.public()
        );
    }
    let floor = dir.join("time-floor");
    write(&floor, data);
    let _ = wtd_store::floor::load(&floor);
    let keyring = dir.join("keyring.toml");
    write(&keyring, data);
    let _ = wtd_store::keyring::Keyring::load(&keyring);
    let received = fresh_dir("received");
    write(&received.join("x.grant"), data);
    if let Ok((grants, damaged)) = wtd_store::grants::list(&received) {
        assert_eq!(grants.len() + damaged.len(), 1, "one file, one verdict");
    }
    let enroll = fresh_dir("enroll");
    write(&enroll.join("x.toml"), data);
    let _ = wtd_store::enroll::list(&enroll);
}

/// Config files: agent.toml, a mission file, proxy.toml.
pub fn parse_configs(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = AgentConfig::from_toml(text) {
        assert!(
            config.validate().is_ok(),
            "from_toml accepted what validate refuses"
        );
    }
    let missions = fresh_dir("missions");
    write(&missions.join("m.toml"), data);
    let catalogue = Catalogue::load(&missions);
    // The built-in `sys` mission, plus at most the one in the file.
    assert!(catalogue.missions().len() <= 2);
    let _ = wtd_proxy::cli::check_config_text(text);
}

/// A signed event log file (`wtd_store::eventfile`), as the agent and the proxy open theirs:
/// whatever is accepted, with any torn tail cut off, opens again cleanly to the same head.
pub fn open_event_log(data: &[u8]) {
    use wtd_keys::event::LogId;
    use wtd_store::eventfile::EventFile;
    let id = LogId {
        publisher: wtd_keys::AgentId(SecretKey::from_seed(&[7; 32]).public()),
        mission: wtd_keys::MissionName::new("fuzz").expect("a name"),
    };
    let dir = fresh_dir("events");
    let path = dir.join("fuzz.events");
    write(&path, data);
    if let Ok(opened) = EventFile::open(&path, id.clone()) {
        assert!(opened.torn_tail_bytes <= data.len() as u64);
        let head = opened.file.log().head();
        drop(opened);
        let again = EventFile::open(&path, id).expect("what opened once opens again");
        assert_eq!(again.torn_tail_bytes, 0, "the torn tail was cut the first time");
        assert_eq!(again.file.log().head(), head);
    }
}
