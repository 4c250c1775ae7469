//! `wtd receipts`: the receipts `wtd call --receipt` kept, and their offline check.
//!
//! ```text
//! wtd receipts                      # every kept receipt, checked, one line each
//! wtd receipts check FILE|req-...   # one receipt, checked, in full; exit 1 if it fails
//! ```
//!
//! A receipt is two signed records (the caller's call and the agent's result) with the
//! bytes they cover. Checking needs no key and no network: anyone given the file (and
//! knowing whose the two public ids are) can check it, with this same command.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use wtd_caller::Receipt;
use wtd_keys::call::VerifiedReceipt;
use wtd_keys::time::human_duration;

use crate::context::{now, Context};
use crate::exit::{self, Exit};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Check one receipt: a file, or the request id of one you kept.
    Check { receipt: String },
}

pub fn run(ctx: &Context, args: Args) -> anyhow::Result<()> {
    match args.command {
        None => list(&ctx.home.receipts(), args.json),
        Some(Command::Check { receipt }) => check(&ctx.home.receipts(), &receipt, args.json),
    }
}

/// Saves a receipt as `<request id>.json` in `dir`; returns the path.
pub fn save(dir: &Path, receipt: &Receipt) -> anyhow::Result<PathBuf> {
    let verified = receipt
        .verify()
        .context("refusing to keep a receipt that does not check out")?;
    wtd_store::atomic::ensure_dir(dir, 0o700)?;
    let path = dir.join(format!("{}.json", verified.call.call().request_id));
    wtd_store::atomic::write_atomic(&path, receipt.to_json().as_bytes(), 0o600)
        .with_context(|| format!("could not save the receipt in {}", path.display()))?;
    Ok(path)
}

fn read(path: &Path) -> anyhow::Result<Receipt> {
    let bytes = std::fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
    Ok(Receipt::from_json(&bytes)?)
}

fn summary(v: &VerifiedReceipt) -> serde_json::Value {
    let call = v.call.call();
    serde_json::json!({
        "request": call.request_id.to_string(),
        "caller": call.caller.to_string(),
        "agent": call.agent.to_string(),
        "function": format!("{}/{}", call.mission, call.function),
        "called_at_ms": call.issued_at.0,
        "status": v.result.status().to_string(),
        "finished_at_ms": v.result.finished_at().0,
    })
}

fn list(dir: &Path, json: bool) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("could not list {}", dir.display())),
    };
    files.sort();
    let mut rows = Vec::new();
    for path in &files {
        let checked = read(path).and_then(|r| Ok(r.verify()?));
        rows.push(match checked {
            Ok(v) => {
                let mut s = summary(&v);
                s["valid"] = true.into();
                s["file"] = path.display().to_string().into();
                s
            }
            Err(e) => serde_json::json!({ "file": path.display().to_string(), "valid": false, "error": format!("{e:#}") }),
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no receipts yet; `wtd call --receipt mission/function ...` keeps one");
        return Ok(());
    }
    let now = now();
    for r in &rows {
        if r["valid"] == true {
            let ago = now.0.saturating_sub(r["called_at_ms"].as_u64().unwrap_or(0));
            println!(
                "{}  {}  on {}  {}  {} ago  valid",
                r["request"].as_str().unwrap_or(""),
                r["function"].as_str().unwrap_or(""),
                short(r["agent"].as_str().unwrap_or("")),
                r["status"].as_str().unwrap_or(""),
                human_duration(ago),
            );
        } else {
            println!(
                "{}  DOES NOT CHECK OUT: {}",
                r["file"].as_str().unwrap_or(""),
                r["error"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn check(dir: &Path, which: &str, json: bool) -> anyhow::Result<()> {
    let path = if which.starts_with("req-") && !Path::new(which).exists() {
        dir.join(format!("{which}.json"))
    } else {
        PathBuf::from(which)
    };
    let receipt = read(&path)?;
    let v = receipt.verify().map_err(|e| {
        Exit::new(
            exit::FAILED,
            format!("{} does not check out: {e}", path.display()),
        )
    })?;
    let s = summary(&v);
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("valid receipt {}", s["request"].as_str().unwrap_or(""));
    println!(
        "  caller   {} (signed the call)",
        s["caller"].as_str().unwrap_or("")
    );
    println!(
        "  agent    {} (signed the result)",
        s["agent"].as_str().unwrap_or("")
    );
    println!("  called   {}", s["function"].as_str().unwrap_or(""));
    println!("  args     {}", String::from_utf8_lossy(&receipt.args));
    println!("  status   {}", s["status"].as_str().unwrap_or(""));
    println!(
        "  output   {}",
        String::from_utf8_lossy(&receipt.output).trim_end()
    );
    println!("compare the two ids with `wtd keys ls` or `wtd ls` to know whose they are");
    Ok(())
}
