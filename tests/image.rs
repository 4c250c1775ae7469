//! The Pi image (`image/build.sh`), booted whole under `qemu-system-aarch64 -M virt` (TCG):
//! its own kernel and initramfs (read from its boot partition), its systemd, its units, its
//! `wtd firstboot` reading `wtd.toml` from its FAT partition, its agent making its key on the
//! (virtual) card. The proxy and the people run here, on 127.0.0.1; the guest reaches the
//! host's 127.0.0.1 as 10.0.2.2 through qemu's user networking, so its `wtd.toml` gets a
//! ticket naming that address (and the proxy's key), while the people's tickets name
//! 127.0.0.1.
//!
//! What stands in for a Pi: the `virt` machine (no Pi firmware, no GPU, no Wi-Fi; a virtio
//! disk and network card instead of the SD card and Ethernet). Everything from the kernel up
//! is the image's.
//!
//! Needs the built image, so it is `#[ignore]`d in a plain `cargo test`; `scripts/test.sh`
//! builds it and runs this with `--ignored`, passing the raw image's path in `WTD_IMAGE`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestCluster, User};

/// A boot under TCG takes about half a minute here; generous, as everywhere.
const BOOT_LIMIT: Duration = Duration::from_secs(300);
/// Where the image's boot partition starts (image/build.sh puts it at 4 MiB).
const BOOT_OFFSET: &str = "@@4M";

fn image() -> PathBuf {
    let path = std::env::var_os("WTD_IMAGE")
        .map(PathBuf::from)
        .expect("set WTD_IMAGE to the raw .img image/build.sh printed");
    assert!(path.is_file(), "no image at {}", path.display());
    path
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image's boot partition, through mtools (no mount, no loop device).
struct BootPartition {
    image: PathBuf,
}

impl BootPartition {
    fn spec(&self) -> String {
        format!("{}{BOOT_OFFSET}", self.image.display())
    }

    fn list(&self) -> Vec<String> {
        run(Command::new("mdir").args(["-b", "-i", &self.spec(), "::/"]))
            .lines()
            .map(|l| l.trim_start_matches("::/").trim().to_string())
            .collect()
    }

    fn get(&self, name: &str, to: &Path) {
        run(Command::new("mcopy")
            .args(["-o", "-i", &self.spec(), &format!("::/{name}")])
            .arg(to));
    }

    fn put(&self, name: &str, text: &str, dir: &Path) {
        let tmp = dir.join(name);
        std::fs::write(&tmp, text).unwrap();
        run(Command::new("mcopy")
            .args(["-o", "-i", &self.spec()])
            .arg(&tmp)
            .arg(format!("::/{name}")));
    }
}

/// A qemu-system-aarch64 running the image; killed (a power cut) when dropped.
struct Guest {
    child: Child,
    serial: PathBuf,
    started: Instant,
}

impl Guest {
    /// `ssh_port`: the host's 127.0.0.1 port forwarded to the guest's SSH.
    fn boot(image: &Path, kernel: &Path, initrd: &Path, serial: &Path, ssh_port: u16) -> Guest {
        let _ = std::fs::remove_file(serial);
        let child = Command::new("qemu-system-aarch64")
            .args(["-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024"])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-kernel")
            .arg(kernel)
            .arg("-initrd")
            .arg(initrd)
            // The image's own command line says ttyS1/tty0 (the Pi's); virt's UART is ttyAMA0.
            .args([
                "-append",
                "console=ttyAMA0 root=LABEL=wtd-root rootfstype=ext4 rw rootwait fsck.repair=yes net.ifnames=0",
            ])
            .arg("-drive")
            .arg(format!("if=none,id=card,format=raw,file={}", image.display()))
            .args(["-device", "virtio-blk-pci,drive=card"])
            .arg("-netdev")
            .arg(format!("user,id=net,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"))
            .args(["-device", "virtio-net-pci,netdev=net"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu-system-aarch64 (apt-get install qemu-system-arm)");
        Guest {
            child,
            serial: serial.to_path_buf(),
            started: Instant::now(),
        }
    }

    fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    fn wait_console(&mut self, what: &str, needle: &str) {
        let limit = BOOT_LIMIT;
        let start = Instant::now();
        loop {
            if self.console().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "qemu exited ({status}) before {what}; console:\n{}",
                    self.console()
                );
            }
            assert!(
                start.elapsed() < limit,
                "timed out waiting for {what} ({needle:?}); console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn power_off(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.power_off();
    }
}

/// Waits until `who` sees an agent called `name` online; returns its `wtd ls` entry.
fn wait_listed(who: &User, name: &str, guest: &mut Guest) -> serde_json::Value {
    let start = Instant::now();
    loop {
        if let Some(a) = who.ls().into_iter().find(|a| a["name"] == name) {
            return a;
        }
        if let Ok(Some(status)) = guest.child.try_wait() {
            panic!("qemu exited ({status}); console:\n{}", guest.console());
        }
        assert!(
            start.elapsed() < BOOT_LIMIT,
            "the guest's agent never appeared in `wtd ls`; console:\n{}",
            guest.console()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until `call` succeeds (the grant has to reach the guest first); on a timeout, shows
/// the last refusal and the console.
fn wait_call(call: &dyn Fn() -> std::process::Output, guest: &Guest) {
    let start = Instant::now();
    loop {
        let out = call();
        if out.status.success() {
            return;
        }
        assert!(
            start.elapsed() < BOOT_LIMIT,
            "the granted call never succeeded; last: {:?} {}\nconsole:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr),
            guest.console()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `command` on the guest as root over SSH (the forwarded port), retrying until SSH
/// answers: sshd starts once `wtd firstboot` has applied `ssh_keys`.
fn ssh(key: &Path, port: u16, command: &str, guest: &Guest) -> String {
    let start = Instant::now();
    loop {
        let out = Command::new("ssh")
            .arg("-i")
            .arg(key)
            .args(["-p", &port.to_string()])
            .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20"])
            .args(["-o", "LogLevel=ERROR", "root@127.0.0.1", command])
            .output()
            .expect("ssh (apt-get install openssh-client)");
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        assert!(
            start.elapsed() < BOOT_LIMIT,
            "SSH to the guest never worked; last: {}\nconsole:\n{}",
            String::from_utf8_lossy(&out.stderr),
            guest.console()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn wtd_toml(ticket: &str, owner: &str, enroll: Option<&str>) -> String {
    let mut t = format!(
        "hostname = \"pi-qemu\"\nproxy = \"{ticket}\"\nowners = [\"{owner}\"]\ntags = [\"qemu\"]\nmissions = [\"demo\"]\n"
    );
    if let Some(token) = enroll {
        t.push_str(&format!("enroll = \"{token}\"\n"));
    }
    t
}

#[test]
#[ignore = "needs the built image and qemu-system-aarch64; run by scripts/test.sh"]
fn the_image_boots_enrolls_and_serves_and_survives_a_broken_wtd_toml() {
    let lab = TestCluster::new();
    // The card: a copy of the image, so the built one stays pristine.
    let card = lab.dir().join("card.img");
    run(Command::new("cp").arg("--sparse=always").arg(image()).arg(&card));
    // A card larger than the image, as every real one is: the root grows to fill it.
    let image_bytes = std::fs::metadata(&card).unwrap().len();
    run(Command::new("truncate").args(["-s", "+1G"]).arg(&card));
    let boot = BootPartition { image: card.clone() };
    let files = boot.list();
    let kernel_name = files
        .iter()
        .find(|f| f.starts_with("vmlinuz-"))
        .expect("a kernel on the boot partition");
    let initrd_name = files
        .iter()
        .find(|f| f.starts_with("initrd.img-"))
        .expect("an initramfs on the boot partition");
    let (kernel, initrd) = (lab.dir().join("vmlinuz"), lab.dir().join("initrd.img"));
    boot.get(kernel_name, &kernel);
    boot.get(initrd_name, &initrd);
    assert!(files.iter().any(|f| f == "wtd-example.toml"), "{files:?}");
    assert!(
        !files.iter().any(|f| f == "wtd.toml"),
        "the image must not ship a wtd.toml"
    );

    // The proxy on 127.0.0.1; the guest's ticket names 10.0.2.2 (the host, seen from qemu).
    let port = common::mosquitto::free_port();
    let proxy = lab.start_proxy_on(port, &[]);
    let guest_ticket = wtd_keys::Ticket {
        proxy: Some(wtd_keys::ProxyInfo {
            id: proxy.id,
            addrs: vec![format!("10.0.2.2:{port}").parse().unwrap()],
        }),
        grants: vec![],
    }
    .to_text();
    let alice = lab.user("alice");
    let alice_id = alice.init();
    alice.ok(["join", &proxy.ticket]);
    let out = alice.ok(["enroll", "new", "--label", "qemu card"]);
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("enroll = "))
        .expect("a token line")
        .trim_matches('"')
        .to_string();
    // Alice's SSH key, for root on the card (SSH is off without one).
    let key = lab.dir().join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f"])
        .arg(&key));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let with_ssh = format!(
        "{}ssh_keys = [\"{}\"]\n",
        wtd_toml(&guest_ticket, &alice_id, Some(&token)),
        public.trim()
    );
    boot.put("wtd.toml", &with_ssh, lab.dir());
    let ssh_port = common::mosquitto::free_port();

    // Boot 1: registered, adopted through its token, and serving a granted call.
    let serial = lab.dir().join("serial-1.log");
    let mut guest = Guest::boot(&card, &kernel, &initrd, &serial, ssh_port);
    let listed = wait_listed(&alice, "pi-qemu", &mut guest);
    let registered = guest.started.elapsed();
    println!("qemu start to registered in `wtd ls`: {registered:?}");
    let agent_id = listed["id"].as_str().expect("an id").to_string();
    assert_eq!(listed["tags"], serde_json::json!(["qemu"]), "{listed}");
    let console = guest.console();
    assert!(
        console.contains("wtd: applied /boot/firmware/wtd.toml: hostname pi-qemu"),
        "{console}"
    );

    let adopted = alice.ok(["adopt", "--pending"]);
    assert!(adopted.contains("Adopted pi-qemu"), "{adopted}");
    assert!(alice.ok(["enroll"]).contains(&format!("used by {agent_id}")));

    let bob = lab.user("bob");
    let bob_id = bob.init();
    bob.ok(["join", &proxy.ticket]);
    // A built-in function (no mission box) under Bob's grant of `sys`.
    let grant: serde_json::Value =
        serde_json::from_str(&alice.ok(["grant", &bob_id, "--mission", "sys", "--json"])).unwrap();
    bob.ok(["grants", "import", grant["ticket"].as_str().unwrap()]);
    let call = || bob.cli(["call", "sys/ping", "--agent", "pi-qemu", "--timeout", "60s"]);
    wait_call(&call, &guest);
    let out = call();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"pong\":true"),
        "{out:?}"
    );
    // An exec function (`/bin/cat`) in the mission box, under the hardened unit: the box
    // switches to the function's own user and runs it.
    let grant: serde_json::Value =
        serde_json::from_str(&alice.ok(["grant", &bob_id, "--mission", "demo", "--json"])).unwrap();
    bob.ok(["grants", "import", grant["ticket"].as_str().unwrap()]);
    let echo = bob.cli([
        "call",
        "demo/echo",
        "{\"from\":\"host\"}",
        "--agent",
        "pi-qemu",
        "--timeout",
        "60s",
    ]);
    assert!(
        echo.status.success() && String::from_utf8_lossy(&echo.stdout).contains("\"from\":\"host\""),
        "demo/echo on the image: exit {:?} {}{}\nconsole:\n{}",
        echo.status.code(),
        String::from_utf8_lossy(&echo.stdout).trim(),
        String::from_utf8_lossy(&echo.stderr).trim(),
        guest.console()
    );
    // SSH, with the key from wtd.toml: the agent runs, and the root filesystem grew to fill
    // the card (it was the image's size, about 480 MiB, plus a gigabyte of card).
    let out = ssh(
        &key,
        ssh_port,
        "systemctl is-active wtd-agent; df -B1M --output=size / | tail -n 1",
        &guest,
    );
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("active"), "{out}");
    let root_mib: u64 = lines
        .next()
        .unwrap_or_default()
        .trim()
        .parse()
        .expect("df's size");
    assert!(
        root_mib > image_bytes / (1 << 20),
        "the root filesystem did not grow to the card: {root_mib} MiB, the image {} MiB",
        image_bytes / (1 << 20)
    );
    assert!(
        guest.console().contains("wtd: grew the root partition"),
        "{}",
        guest.console()
    );
    // Where boot 1's time went, for the closing figures (`--nocapture` shows it; nothing is
    // asserted on it): systemd's own account, and the console kept as target/image-boot-1.log.
    let timing = ssh(
        &key,
        ssh_port,
        "systemd-analyze; systemd-analyze critical-chain wtd-agent.service; \
         systemd-analyze blame | head -n 15; \
         journalctl -b -o short-monotonic -u wtd-agent -u wtd-firstboot | head -n 30",
        &guest,
    );
    println!("boot 1, as systemd saw it:\n{timing}");
    let _ = std::fs::write(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/image-boot-1.log"),
        guest.console(),
    );
    // Mallory holds no grant: refused (exit 3) by the agent on the guest.
    let mallory = lab.user("mallory");
    mallory.init();
    mallory.ok(["join", &proxy.ticket]);
    let denied = mallory.cli(["call", "sys/ping", "--agent", "pi-qemu", "--timeout", "60s"]);
    assert_ne!(denied.status.code(), Some(0), "{denied:?}");
    guest.power_off();

    // Boot 2: a typo in wtd.toml. The console says exactly what is wrong; no agent starts.
    let broken = wtd_toml(&guest_ticket, &alice_id, None).replace("owners =", "owner =");
    boot.put("wtd.toml", &broken, lab.dir());
    let serial = lab.dir().join("serial-2.log");
    let mut guest = Guest::boot(&card, &kernel, &initrd, &serial, ssh_port);
    guest.wait_console(
        "the error on the serial console",
        "wtd: /boot/firmware/wtd.toml is wrong: TOML parse error at line 3, column 1",
    );
    guest.wait_console("the rest of the error", "the agent waits until this is fixed");
    let console = guest.console();
    assert!(
        console.contains("unknown field `owner`, expected one of `hostname`, `proxy`, `owners`"),
        "{console}"
    );
    assert!(
        console.contains("the agent waits until this is fixed"),
        "{console}"
    );
    assert!(
        !alice.agent_names().contains(&"pi-qemu".to_string()),
        "an agent started from a broken wtd.toml"
    );
    guest.power_off();

    // Fixed from "a laptop" (mtools on the card): the next boot applies it, and the agent
    // comes back with the key it made on the card at its first boot.
    boot.put("wtd.toml", &wtd_toml(&guest_ticket, &alice_id, None), lab.dir());
    let serial = lab.dir().join("serial-3.log");
    let mut guest = Guest::boot(&card, &kernel, &initrd, &serial, ssh_port);
    let listed = wait_listed(&alice, "pi-qemu", &mut guest);
    assert!(
        !guest.console().contains("wtd: grew the root partition"),
        "the root grew again although it fills the card:\n{}",
        guest.console()
    );
    assert_eq!(
        listed["id"].as_str(),
        Some(agent_id.as_str()),
        "the agent's key changed: {listed}"
    );
    wait_call(&call, &guest);
    guest.power_off();
}
