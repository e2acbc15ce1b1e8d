//! What a run prints and writes: a terminal table, a JSON document, and the chart.

use crate::driver::PhaseResult;
use serde::{Deserialize, Serialize};

/// A whole run, as `--json` writes it and `chart` reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub machine: Machine,
    pub seconds_per_phase: f64,
    pub data_bytes: usize,
    /// Notes on each store's setup (durability, replication), shown under the table.
    pub stores: Vec<String>,
    /// Stores that were asked for but could not run, and why.
    pub unavailable: Vec<String>,
    pub results: Vec<PhaseResult>,
}

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn here() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0 / 1024.0)
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            cpu_model,
            memory_gib,
            kernel,
        }
    }
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The terminal (and markdown-compatible) table.
pub fn table(run: &Run) -> String {
    let mut s = format!(
        "machine: {} CPUs ({}), {:.0} GiB, Linux {}; {} s per phase, {} B of session data\n\n",
        run.machine.cpus,
        run.machine.cpu_model,
        run.machine.memory_gib,
        run.machine.kernel,
        run.seconds_per_phase,
        run.data_bytes
    );
    s.push_str(
        "| store | phase | W | ops/s | p50 ms | p99 ms | p99.9 ms | errors | CPU s / 1000 ops |\n",
    );
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in &run.results {
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {:.3} |\n",
            r.backend,
            r.phase,
            r.workers,
            r.ops_per_sec,
            ms(r.p50_us),
            ms(r.p99_us),
            ms(r.p999_us),
            r.errors,
            r.cpu_s_per_kop
        ));
    }
    s.push('\n');
    for n in &run.stores {
        s.push_str(&format!("- {n}\n"));
    }
    for n in &run.unavailable {
        s.push_str(&format!("- not run: {n}\n"));
    }
    for r in run.results.iter().filter(|r| r.errors > 0) {
        if let Some(e) = &r.first_error {
            s.push_str(&format!(
                "- {} {} W={}: {} errors, first: {e}\n",
                r.backend, r.phase, r.workers, r.errors
            ));
        }
    }
    s
}
