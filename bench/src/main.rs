//! `sessiond-bench`: the same session workload against sessiond (over gRPC, and over its
//! HTTP/JSON API as `sessiond-http`), etcd and Redis, each started on loopback by the driver
//! itself, with a table, JSON and a chart of the results.

mod backend;
mod chart;
mod driver;
mod report;
mod scale;
mod servers;

use anyhow::Context;
use backend::Backend;
use clap::{Parser, Subcommand};
use driver::{DriveOptions, PhaseResult};
use report::{Machine, Run};
use servers::{which, Servers};
use sessiond_workload::Phase;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "sessiond-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start each store, run the phases at each worker count, stop it; print the table.
    Run(RunArgs),
    /// Load a 3-node sessiond cluster with N sessions; measure memory, disk, the restart of
    /// a node and a fresh node's catch-up by snapshot.
    Scale {
        #[arg(long, default_value_t = 1_000_000)]
        sessions: u64,
        #[arg(long, default_value_t = 64)]
        workers: usize,
        #[arg(long, default_value_t = sessiond_workload::DEFAULT_DATA_BYTES)]
        data_bytes: usize,
        /// Upper bound on the whole run, seconds.
        #[arg(long, default_value_t = 1800)]
        max_seconds: u64,
        #[arg(long)]
        sessiond_bin: Option<PathBuf>,
        #[arg(long = "sessiond-flag", allow_hyphen_values = true)]
        sessiond_flags: Vec<String>,
        /// Run sessiond without TLS and authentication (`--insecure`).
        #[arg(long)]
        plaintext: bool,
    },
    /// Draw the chart of a JSON result file.
    Chart {
        json: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Worker count to draw (default: the largest in the file).
        #[arg(long)]
        workers: Option<usize>,
        #[arg(long, default_value = DEFAULT_FONT)]
        font: PathBuf,
    },
}

const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

#[derive(clap::Args)]
struct RunArgs {
    /// Stores to run, in order: sessiond (gRPC), sessiond-http (the same cluster over the
    /// HTTP/JSON API), etcd, redis.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "sessiond,sessiond-http,etcd,redis"
    )]
    backends: Vec<String>,
    /// Concurrent workers; several values run the phases once per value.
    #[arg(long, value_delimiter = ',', default_value = "64")]
    workers: Vec<usize>,
    /// Length of each phase, seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Phases to run (default: create, rotate, get, get_stale, mixed, revoke).
    #[arg(long, value_delimiter = ',')]
    phases: Vec<String>,
    #[arg(long, default_value_t = sessiond_workload::DEFAULT_DATA_BYTES)]
    data_bytes: usize,
    /// Sessions each worker creates before the phases, untimed.
    #[arg(long, default_value_t = 16)]
    prefill: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw the chart (largest worker count) here, as PNG.
    #[arg(long)]
    chart: Option<PathBuf>,
    #[arg(long, default_value = DEFAULT_FONT)]
    font: PathBuf,
    /// The sessiond binary (default: next to this one).
    #[arg(long)]
    sessiond_bin: Option<PathBuf>,
    #[arg(long, default_value = "etcd")]
    etcd_bin: String,
    #[arg(long, default_value = "redis-server")]
    redis_bin: String,
    /// Extra `sessiond serve` flags, e.g. "--max-batch=512" (repeatable).
    #[arg(long = "sessiond-flag", allow_hyphen_values = true)]
    sessiond_flags: Vec<String>,
    /// Fail (exit 1) when a store asked for is not installed, instead of skipping it.
    #[arg(long)]
    require_all: bool,
    /// Run sessiond without TLS and authentication (`--insecure`), to measure what they cost.
    /// By default it runs as shipped: TLS, client certificates.
    #[arg(long)]
    plaintext: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    match real_main().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sessiond-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn real_main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Run(args) => run(args).await,
        Command::Scale {
            sessions,
            workers,
            data_bytes,
            max_seconds,
            sessiond_bin,
            sessiond_flags,
            plaintext,
        } => {
            let bin = sessiond_bin_or_default(sessiond_bin.as_ref())?;
            let r = scale::run(
                &bin,
                &sessiond_flags,
                sessions,
                workers,
                data_bytes,
                Duration::from_secs(max_seconds),
                plaintext,
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Chart {
            json,
            out,
            workers,
            font,
        } => {
            let run: Run = serde_json::from_str(
                &std::fs::read_to_string(&json)
                    .with_context(|| format!("reading {}", json.display()))?,
            )?;
            chart::load_font(&font)?;
            draw(&run.results, workers, &out)?;
            println!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn draw(results: &[PhaseResult], workers: Option<usize>, out: &Path) -> anyhow::Result<()> {
    let w = workers
        .or_else(|| results.iter().map(|r| r.workers).max())
        .context("no results")?;
    let these: Vec<PhaseResult> = results.iter().filter(|r| r.workers == w).cloned().collect();
    chart::draw(&these, out)
}

/// The sessiond binary: as given, or the one next to this binary.
fn sessiond_bin_or_default(given: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    let bin = match given {
        Some(b) => b.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory")?
            .join("sessiond"),
    };
    anyhow::ensure!(bin.is_file(), "no sessiond binary at {}", bin.display());
    Ok(bin)
}

fn phases(names: &[String]) -> anyhow::Result<Vec<Phase>> {
    let all = Phase::standard();
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|n| {
            all.iter()
                .find(|p| &p.name == n)
                .cloned()
                .with_context(|| format!("unknown phase {n}"))
        })
        .collect()
}

/// Start a store's servers and connect to them, waiting (bounded) until it serves.
async fn start(name: &str, args: &RunArgs) -> anyhow::Result<(Servers, Backend, String)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    match name {
        "sessiond" | "sessiond-http" => {
            let bin = sessiond_bin_or_default(args.sessiond_bin.as_ref())?;
            let servers = Servers::sessiond(&bin, 3, &args.sessiond_flags, args.plaintext)?;
            let (mut backend, protocol) = if name == "sessiond" {
                let b = backend::sessiond::Sessiond::connect(
                    &servers.endpoints,
                    servers.client_tls()?,
                )?;
                (Backend::Sessiond(b), "gRPC through the client crate (one HTTP/2 connection per node shared by the workers)")
            } else {
                let b = backend::http::Http::connect(&servers.endpoints, servers.client_rustls()?)?;
                (
                    Backend::SessiondHttp(b),
                    "the HTTP/JSON API (HTTP/1.1 keep-alive, one connection per worker and node)",
                )
            };
            ready(&mut backend, deadline).await?;
            let note = format!(
                "{name}: 3 nodes on loopback, {}, every write replicated and synced (fsync of the Raft log) before it is acknowledged, linearizable gets (ReadIndex); get_stale reads the receiving node's state; calls over {protocol}{}",
                if args.plaintext { "plaintext without authentication (--insecure)" } else { "TLS on client and peer ports, client certificates" },
                if args.sessiond_flags.is_empty() { String::new() } else { format!("; flags {}", args.sessiond_flags.join(" ")) }
            );
            Ok((servers, backend, note))
        }
        "etcd" => {
            let bin = which(&args.etcd_bin).context("etcd is not installed")?;
            let servers = Servers::etcd(&bin, 3)?;
            let backend = loop {
                match backend::etcd::Etcd::connect(&servers.endpoints).await {
                    Ok(b) => break Backend::Etcd(Box::new(b)),
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            let mut backend = backend;
            ready(&mut backend, deadline).await?;
            Ok((servers, backend, "etcd: 3 members on loopback, fsync on (etcd's only mode), linearizable ranges; rotation is one compare-and-swap transaction on the old token key's mod revision, revoke revokes the session's lease".into()))
        }
        "redis" => {
            let bin = which(&args.redis_bin).context("redis-server is not installed")?;
            let servers = Servers::redis(&bin)?;
            let backend = loop {
                match backend::redis::Redis::connect(&servers.endpoints[0]).await {
                    Ok(b) => break Backend::Redis(b),
                    Err(e) if Instant::now() > deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            let mut backend = backend;
            ready(&mut backend, deadline).await?;
            Ok((servers, backend, "redis: ONE node, AOF appendfsync everysec — not replicated, not linearizable, up to ~1 s of acknowledged writes lost on a crash; rotation, update and revoke are Lua scripts".into()))
        }
        other => anyhow::bail!("unknown store {other} (sessiond, sessiond-http, etcd, redis)"),
    }
}

/// Retry creates until the store serves a run of them in a row (leader elected, and every
/// member a client may be balanced onto is up).
async fn ready(backend: &mut Backend, deadline: Instant) -> anyhow::Result<()> {
    let mut in_a_row = 0;
    while in_a_row < 20 {
        match backend.create("bench-ready", b"ready").await {
            Ok(_) => in_a_row += 1,
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{} did not become ready", backend.name())))
            }
            Err(_) => {
                in_a_row = 0;
                tokio::time::sleep(Duration::from_millis(200)).await
            }
        }
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.seconds <= 600.0,
        "--seconds must be in (0, 600]"
    );
    anyhow::ensure!(
        args.workers.iter().all(|w| (1..=1024).contains(w)),
        "--workers must be in 1..=1024"
    );
    let phases = phases(&args.phases)?;
    let mut run = Run {
        machine: Machine::here(),
        seconds_per_phase: args.seconds,
        data_bytes: args.data_bytes,
        stores: Vec::new(),
        unavailable: Vec::new(),
        results: Vec::new(),
    };
    for name in &args.backends {
        for &workers in &args.workers {
            let (mut servers, backend, note) = match start(name, &args).await {
                Ok(x) => x,
                Err(e) => {
                    let why = format!("{name}: {e:#}");
                    eprintln!("skipping {why}");
                    if args.require_all {
                        anyhow::bail!(why);
                    }
                    run.unavailable.push(why);
                    break;
                }
            };
            if !run.stores.contains(&note) {
                run.stores.push(note);
            }
            eprintln!("{name}: {} phases at W={workers}", phases.len());
            let opts = DriveOptions {
                workers,
                seconds: args.seconds,
                data_bytes: args.data_bytes,
                prefill: args.prefill,
                seed: 7,
            };
            let results = driver::drive(&backend, &mut servers, &phases, &opts).await;
            drop(backend);
            servers.stop().await;
            let results = results?;
            for r in &results {
                eprintln!(
                    "  {:<10} {:>9.0} ops/s  p99 {:>8.2} ms  errors {}",
                    r.phase,
                    r.ops_per_sec,
                    r.p99_us as f64 / 1000.0,
                    r.errors
                );
            }
            run.results.extend(results);
        }
    }
    println!("{}", report::table(&run));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&run)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.chart {
        chart::load_font(&args.font)?;
        draw(&run.results, None, path)?;
    }
    // A phase in which every operation failed means the mapping or the setup is broken.
    let broken: Vec<String> = run
        .results
        .iter()
        .filter(|r| r.ops == 0)
        .map(|r| format!("{} {} W={}", r.backend, r.phase, r.workers))
        .collect();
    if !broken.is_empty() {
        eprintln!("no operation succeeded in: {}", broken.join(", "));
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
