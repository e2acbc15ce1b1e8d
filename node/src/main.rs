//! `sessiond`: run a node (`serve`), a local cluster (`dev`), make certificates (`certs`), back
//! up a stopped node (`backup`) or seed a new cluster's member from a backup (`restore`).

use clap::Parser;
use sessiond::config::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn init_tracing(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Test builds only: failpoints named in FAILPOINTS (see `store::disk`) stay armed while
    // the process runs.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    match cli.command {
        Command::Serve(args) => {
            let cfg = args.resolve()?;
            init_tracing(cfg.log_format);
            runtime(cfg.worker_threads)?.block_on(async {
                let node = sessiond::node::Node::start(cfg).await?;
                tokio::select! {
                    _ = sessiond::signal::shutdown() => {
                        tracing::info!("shutting down");
                        node.shutdown().await;
                        Ok(())
                    }
                    why = node.stopped() => {
                        tracing::error!(reason = %why, "raft stopped; exiting");
                        anyhow::bail!("raft stopped: {why}")
                    }
                }
            })
        }
        Command::Dev(args) => runtime(None)?.block_on(sessiond::dev::run(args)),
        Command::Certs(args) => sessiond::certs::run(args),
        Command::Backup(args) => runtime(Some(1))?.block_on(sessiond::recovery::backup(args)),
        Command::Restore(args) => runtime(Some(1))?.block_on(sessiond::recovery::restore(args)),
        Command::Openapi => {
            let doc = sessiond::api::openapi::document()?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(())
        }
    }
}

/// The multi-threaded runtime, with `workers` threads (default: one per core).
fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    Ok(b.build()?)
}
