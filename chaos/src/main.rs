//! `sessiond-chaos`: run seeded chaos schedules against a cluster and check the histories,
//! or re-check a kept history.

use anyhow::Context;
use clap::{Parser, Subcommand};
use sessiond_chaos::browser::BrowserOptions;
use sessiond_chaos::check::{self, Budget};
use sessiond_chaos::history::{self, RunInfo};
use sessiond_chaos::run::{self, Layer, RunOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "sessiond-chaos", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run schedules: start a cluster per schedule, load it with browser tabs while the
    /// nemesis works, check the history. Exits 1 on any violation or unknown verdict.
    Run {
        #[arg(long, value_enum, default_value = "inproc")]
        layer: Layer,
        /// Cluster size (3 or 5).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 10)]
        schedules: u64,
        /// Length of each schedule's workload, in seconds.
        #[arg(long, default_value_t = 4.0)]
        seconds: f64,
        /// Seed of the first schedule (the next ones use seed+1, seed+2, …). Default: random.
        #[arg(long)]
        seed: Option<u64>,
        /// Where failed schedules keep their history, report, logs and seed.
        #[arg(long, default_value = "chaos-out")]
        out: PathBuf,
        /// Simulated users (each a browser with several tabs).
        #[arg(long, default_value_t = 4)]
        users: usize,
        #[arg(long, default_value_t = 3)]
        tabs: usize,
        /// Image of the container layer (built by deploy/build-image.sh).
        #[arg(long, default_value = run::DEFAULT_IMAGE)]
        image: String,
        /// Keep every wall clock right at the start. By default each schedule starts with one
        /// node's clock wrong (ahead or behind, up to a day) for its whole length.
        #[arg(long)]
        right_clocks: bool,
    },
    /// Re-check a history file (JSON lines). Reads run.json beside it when present.
    Check {
        history: PathBuf,
        /// Explored states per session before the verdict is "unknown".
        #[arg(long, default_value_t = Budget::default().max_states_per_session)]
        budget: u64,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,openraft=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    match real_main().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sessiond-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn real_main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Run {
            layer,
            nodes,
            schedules,
            seconds,
            seed,
            out,
            users,
            tabs,
            image,
            right_clocks,
        } => {
            if !(3..=5).contains(&nodes) {
                anyhow::bail!("--nodes must be 3, 4 or 5");
            }
            if !(seconds > 0.0 && seconds <= 600.0) {
                anyhow::bail!("--seconds must be in (0, 600]");
            }
            let seed = seed.unwrap_or_else(rand::random);
            println!("seed {seed}  layer {layer:?}  nodes {nodes}  schedules {schedules}  seconds {seconds}");
            let opts = RunOptions {
                layer,
                nodes,
                schedules,
                seconds,
                seed,
                out,
                browsers: BrowserOptions {
                    users,
                    tabs_per_user: tabs,
                    ..BrowserOptions::default()
                },
                image,
                wrong_clock: !right_clocks,
            };
            let totals = run::run(&opts).await?;
            println!("\n{}", totals.table());
            Ok(if totals.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Check {
            history: path,
            budget,
        } => {
            let events = history::read(&path)?;
            let info_path = path.with_file_name("run.json");
            let info: RunInfo = if info_path.exists() {
                serde_json::from_str(&std::fs::read_to_string(&info_path)?)
                    .with_context(|| format!("reading {}", info_path.display()))?
            } else {
                RunInfo::default()
            };
            let report = check::check(
                &events,
                &info,
                &Budget {
                    max_states_per_session: budget,
                },
            );
            println!(
                "sessions {}  operations {}  checker {} ms",
                report.sessions, report.ops, report.elapsed_ms
            );
            for (k, n) in report.by_kind() {
                println!("  {k:<22} {n:>6}");
            }
            for v in &report.violations {
                println!("{}: {:?}: {}", v.kind.name(), v.session, v.detail);
            }
            if !report.unknown.is_empty() {
                println!("unknown (budget exhausted): {:?}", report.unknown);
            }
            Ok(if report.passed() {
                println!("pass");
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
