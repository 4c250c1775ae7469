//! `wtd up`: a whole cluster on this machine, for trying wtd or teaching with it.
//!
//! Starts a proxy on 127.0.0.1 and N agents, each with its own identity and state under
//! one directory, offering the example missions of `examples/missions/`; makes you their
//! owner (creating your identity if needed): their configs name you, and your log adopts
//! them (it makes their keys first, so it knows their ids); grants you the example `demo`
//! mission; and waits for Ctrl-C, then stops everything
//! cleanly. As their owner you may call every mission they offer (`sys/info` too) without a
//! grant; the `demo` grant is there so you can try `wtd grant`'s output on yourself.
//!
//! The proxy serves the classroom dashboard (at http://127.0.0.1:8080/ unless told
//! otherwise), and the agents report their calls to it (`report_calls = true`), so the page
//! shows calls as they flow.
//!
//! The proxy and agents are this same binary (`wtd proxy`, `wtd agent`) run as child
//! processes, exactly as they run on real machines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use wtd_keys::{Ticket, UserKey};

use crate::context::{now, Context};
use crate::proxy;

/// The example missions every agent gets (`examples/missions/`, each explained in its
/// `.md` there): built into the binary, so `wtd up` works from an installed `wtd` alone.
const EXAMPLE_MISSIONS: [(&str, &str); 7] = [
    ("demo.toml", include_str!("../../../examples/missions/demo.toml")),
    (
        "files.toml",
        include_str!("../../../examples/missions/files.toml"),
    ),
    ("echo.toml", include_str!("../../../examples/missions/echo.toml")),
    (
        "sysinfo.toml",
        include_str!("../../../examples/missions/sysinfo.toml"),
    ),
    (
        "primes.toml",
        include_str!("../../../examples/missions/primes.toml"),
    ),
    ("pi.toml", include_str!("../../../examples/missions/pi.toml")),
    (
        "wordcount.toml",
        include_str!("../../../examples/missions/wordcount.toml"),
    ),
];

#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many agents to start.
    #[arg(long, default_value_t = 3)]
    pub agents: usize,
    /// Where the cluster keeps its files. Default: $WTD_HOME/up (or ~/.config/wtd/up).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The proxy's UDP port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Where the proxy serves the dashboard (port 0 picks a free one; 0.0.0.0:8080 shows it
    /// to the LAN too).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8080")]
    pub dashboard: std::net::SocketAddr,
    /// No dashboard (and the agents report no calls).
    #[arg(long)]
    pub no_dashboard: bool,
}

/// A child process, stopped with SIGTERM (then SIGKILL) when dropped.
struct Daemon {
    name: String,
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Already gone (it failed to start): nothing to stop, and `kill` would only
        // complain "No such process" under our own error.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop within 5 s; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, args: &[&std::ffi::OsStr], log: &Path) -> anyhow::Result<Daemon> {
    let exe = std::env::current_exe().context("finding the wtd binary")?;
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new(exe)
        .args(args)
        // The child arms a parent-death signal with this (see the `wtd` binary's main), so
        // it stops even when `wtd up` is killed with SIGKILL and cannot stop it.
        .env("WTD_EXIT_WITH_PARENT", std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Daemon {
        name: name.to_string(),
        child,
    })
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    if args.agents == 0 || args.agents > 64 {
        bail!("--agents takes 1 to 64");
    }
    let me = match wtd_store::identity::load_or_create(&ctx.home.identity())? {
        (key, true) => {
            println!(
                "Created your identity {} in {}",
                key.public(),
                ctx.home.dir().display()
            );
            key
        }
        (key, false) => key,
    };
    let dir = args.dir.clone().unwrap_or_else(|| ctx.home.dir().join("up"));
    wtd_store::atomic::ensure_dir(&dir, 0o700)?;
    let missions = dir.join("missions");
    wtd_store::atomic::ensure_dir(&missions, 0o755)?;
    for (file, text) in EXAMPLE_MISSIONS {
        wtd_store::atomic::write_atomic(&missions.join(file), text.as_bytes(), 0o644)?;
    }

    // The proxy.
    let proxy_state = dir.join("proxy");
    let ticket_file = proxy_state.join("ticket.txt");
    let _ = std::fs::remove_file(&ticket_file);
    let listen = format!("127.0.0.1:{}", args.port);
    let mut children = Vec::new();
    let proxy_log = dir.join("proxy.log");
    let dashboard = args.dashboard.to_string();
    let mut proxy_args: Vec<&std::ffi::OsStr> = vec![
        "proxy".as_ref(),
        "--listen".as_ref(),
        listen.as_ref(),
        "--state-dir".as_ref(),
        proxy_state.as_os_str(),
    ];
    if !args.no_dashboard {
        proxy_args.extend([
            std::ffi::OsStr::new("--dashboard"),
            std::ffi::OsStr::new(&dashboard),
        ]);
    }
    children.push(spawn("the proxy", &proxy_args, &proxy_log)?);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ticket_file.exists() {
        if let Ok(Some(status)) = children[0].child.try_wait() {
            // Its last words say why (a port in use, most often).
            let log = std::fs::read_to_string(&proxy_log).unwrap_or_default();
            if log.contains("could not serve the dashboard") {
                bail!(
                    "the dashboard's address {} is in use by another program (another `wtd up`, \
                     or a web server); nothing was started.\n\
                     Stop that program, or run `wtd up --dashboard 127.0.0.1:0` (any free port; \
                     the address is printed), or `wtd up --no-dashboard`.\nsee {}",
                    args.dashboard,
                    proxy_log.display()
                );
            }
            let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            bail!("the proxy exited ({status}): {last}\nsee {}", proxy_log.display());
        }
        if Instant::now() > deadline {
            bail!("the proxy did not start within 20 s; see {}", proxy_log.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let ticket = std::fs::read_to_string(&ticket_file)?.trim().to_string();
    // The proxy writes the dashboard's address before its ticket.
    let dashboard_url = if args.no_dashboard {
        None
    } else {
        Some(
            std::fs::read_to_string(proxy_state.join("dashboard.txt"))?
                .trim()
                .to_string(),
        )
    };
    let info = Ticket::from_text(&ticket)?
        .proxy
        .context("the proxy wrote a ticket without itself in it")?;
    proxy::save(&ctx.home.proxy(), &info)?;

    // The agents.
    let mut ids = Vec::new();
    for i in 1..=args.agents {
        let name = format!("pi-{i}");
        let agent_dir = dir.join(&name);
        wtd_store::atomic::ensure_dir(&agent_dir, 0o700)?;
        // The agent's key, made now (the agent would make it on its first start), so that
        // you can adopt it before it connects.
        let state = agent_dir.join("state");
        wtd_store::atomic::ensure_dir(&state, 0o700)?;
        let (key, _) = wtd_store::identity::load_or_create(&state.join("identity.key"))?;
        ids.push(wtd_keys::AgentId(key.public()));
        let config = agent_dir.join("agent.toml");
        let text = format!(
            "# Written by `wtd up`.\nname = \"{name}\"\nstate_dir = \"{}\"\nmissions_dir = \"{}\"\n\
             proxy = \"{ticket}\"\nowners = [\"{}\"]\ntags = [\"{}\"]\n\
             # Calls show on the proxy's dashboard (never their arguments or results).\n\
             report_calls = {}\n",
            agent_dir.join("state").display(),
            missions.display(),
            me.public(),
            if i % 2 == 1 { "odd" } else { "even" },
            !args.no_dashboard,
        );
        wtd_store::atomic::write_atomic(&config, text.as_bytes(), 0o600)?;
        children.push(spawn(
            &name,
            &["agent".as_ref(), "--config".as_ref(), config.as_os_str()],
            &agent_dir.join("agent.log"),
        )?);
    }

    // Adopt them: with their configs naming you, both sides agree they are yours.
    let adopted = crate::cmd::adopt::adopt(ctx, &me, &ids, &[])?;
    if adopted > 0 {
        println!("Adopted {adopted} agent(s).");
    }

    // Grant yourself the demo mission, unless an active grant is already there.
    let mine = UserKey(me.public());
    let has_grant = {
        let log = ctx.owner_log(&me)?;
        let revocations: Vec<_> = log.log().revocations().map(|r| r.revocation().clone()).collect();
        let revs: Vec<&wtd_keys::Revocation> = revocations.iter().collect();
        let found = log.log().grants().any(|g| {
            g.grant().subject == mine
                && g.grant().mission.as_str() == "demo"
                && crate::show::status(g.grant(), &revs, now()) == crate::show::Status::Active
        });
        found
    };
    if !has_grant {
        let keyring = ctx.keyring()?;
        let g = crate::cmd::grant::make(
            ctx,
            &me,
            &keyring,
            crate::cmd::grant::Args {
                who: Some(me.public().to_string()),
                class: None,
                until: None,
                label: None,
                mission: "demo".into(),
                rate: "600/min".into(),
                burst: None,
                concurrency: 16,
                expires: Some("7days".into()),
                agents: "all".into(),
                json: false,
            },
        )?;
        println!(
            "Granted yourself mission `demo` ({}, until {}).",
            g.grant().rate,
            crate::parse::format_time(g.grant().expires)
        );
    } else {
        crate::cmd::sync::publish_after_change(ctx, &me);
    }

    // Wait for every agent to show up.
    let runtime = proxy::runtime()?;
    let online = runtime.block_on(async {
        let (client, conn) = proxy::connect(&me, &info).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = proxy::roster(&conn).await.map_or(0, |agents| agents.len());
            if n >= args.agents || Instant::now() > deadline {
                proxy::goodbye(&client, &conn).await;
                return anyhow::Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })?;
    if online < args.agents {
        eprintln!(
            "warning: only {online} of {} agents came online; see the agent.log files in {}",
            args.agents,
            dir.display()
        );
    }

    println!();
    println!(
        "wtd is up: a proxy on {} and {online} agents, owned by you.",
        info.addrs[0]
    );
    println!("Files and logs: {}", dir.display());
    if let Some(url) = &dashboard_url {
        println!("Dashboard (put it on the projector): {url}");
    }
    println!();
    println!("Try, in another terminal:");
    println!("  wtd ls                    # the agents, their load and missions");
    println!("  wtd ls --watch            # live, like a dashboard");
    println!("  wtd call demo/echo '{{\"msg\":\"hi\"}}'   # runs on the least-loaded agent");
    println!("  wtd call --all pi/darts   # every agent estimates pi (examples/missions/)");
    println!();
    println!("Press Ctrl-C to stop everything.");

    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    println!("Stopping...");
    // Agents first (they say goodbye to the proxy), then the proxy.
    while let Some(child) = children.pop() {
        drop(child);
    }
    println!("Stopped.");
    Ok(())
}
