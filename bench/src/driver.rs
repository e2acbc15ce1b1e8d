//! Running phases: W workers, each with its own sessions and its own clone of the backend,
//! loop over the phase's mix until the phase's time is up; latencies go into one histogram
//! per phase, and the servers' CPU time is read before and after.

use crate::backend::{Backend, Handle};
use crate::servers::Servers;
use anyhow::Context;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sessiond_workload::{Op, Phase};
use std::time::{Duration, Instant};

/// One phase's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseResult {
    pub backend: String,
    pub phase: String,
    pub workers: usize,
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    /// Server CPU seconds (every process of the store) per 1 000 operations.
    pub cpu_s_per_kop: f64,
    /// Resident memory of the store's processes at the end of the phase, MiB.
    pub server_rss_mib: f64,
    /// The first error seen, to tell a misconfiguration from a hiccup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// How a backend is driven.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    pub workers: usize,
    pub seconds: f64,
    pub data_bytes: usize,
    /// Sessions each worker creates before the first phase (untimed), so phases that need
    /// sessions have some even when `create` does not run first.
    pub prefill: usize,
    pub seed: u64,
}

struct Worker {
    backend: Backend,
    rng: StdRng,
    pool: Vec<Handle>,
    /// This worker's index and how many sessions it created: each login is a new user, so
    /// no per-user session cap comes into play.
    index: usize,
    created: u64,
    data_bytes: usize,
}

struct Tally {
    hist: Histogram<u64>,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            // 1 µs to 60 s at 3 significant digits.
            hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            ops: 0,
            errors: 0,
            first_error: None,
        })
    }
}

impl Worker {
    fn data(&mut self) -> Vec<u8> {
        sessiond_workload::session_data(&mut self.rng, self.data_bytes)
    }

    fn next_user(&mut self) -> String {
        self.created += 1;
        sessiond_workload::user_id("bench", (self.index as u64) << 32 | self.created)
    }

    fn pick(&mut self) -> Option<usize> {
        (!self.pool.is_empty()).then(|| self.rng.random_range(0..self.pool.len()))
    }

    /// Do one `op`; `None` when the worker has no session left to do it on.
    async fn one(&mut self, op: Op, mixed: bool) -> Option<anyhow::Result<()>> {
        Some(match op {
            Op::Create => {
                let data = self.data();
                let user = self.next_user();
                match self.backend.create(&user, &data).await {
                    Ok(h) => {
                        self.pool.push(h);
                        // In the web mix a login comes with a logout, so the live set stays.
                        if mixed && self.pool.len() > 1 {
                            let old = self.pool.swap_remove(0);
                            self.backend.revoke(&old).await
                        } else {
                            Ok(())
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Get | Op::GetStale => {
                let i = self.pick()?;
                let h = self.pool[i].clone();
                self.backend.get(&h, op == Op::GetStale).await
            }
            Op::Rotate => {
                let i = self.pick()?;
                let mut h = self.pool[i].clone();
                let r = self.backend.rotate(&mut h).await;
                self.pool[i] = h;
                r
            }
            Op::Update => {
                let i = self.pick()?;
                let mut h = self.pool[i].clone();
                let data = self.data();
                let r = self.backend.update(&mut h, &data).await;
                self.pool[i] = h;
                r
            }
            Op::Revoke | Op::RevokeUser => {
                let h = self.pool.pop()?;
                self.backend.revoke(&h).await
            }
        })
    }

    async fn phase(mut self, phase: Phase, until: Instant) -> (Worker, anyhow::Result<Tally>) {
        let mut tally = match Tally::new() {
            Ok(t) => t,
            Err(e) => return (self, Err(e)),
        };
        let mixed = phase.mix.weights.len() > 1;
        while Instant::now() < until {
            let op = phase.mix.draw(&mut self.rng);
            let started = Instant::now();
            let Some(r) = self.one(op, mixed).await else {
                break;
            };
            let us = started.elapsed().as_micros().clamp(1, 60_000_000) as u64;
            match r {
                Ok(()) => {
                    tally.ops += 1;
                    let _ = tally.hist.record(us);
                }
                Err(e) => {
                    tally.errors += 1;
                    if tally.first_error.is_none() {
                        tally.first_error = Some(format!("{}: {e:#}", op.name()));
                    }
                }
            }
        }
        (self, Ok(tally))
    }
}

/// Run `phases` in order against one store; results in the same order. Phases the store
/// has no honest mapping for are skipped.
pub async fn drive(
    backend: &Backend,
    servers: &mut Servers,
    phases: &[Phase],
    opts: &DriveOptions,
) -> anyhow::Result<Vec<PhaseResult>> {
    let mut workers = Vec::new();
    for w in 0..opts.workers {
        let mut worker = Worker {
            backend: backend.clone(),
            rng: StdRng::seed_from_u64(opts.seed.wrapping_add(w as u64)),
            pool: Vec::new(),
            index: w,
            created: 0,
            data_bytes: opts.data_bytes,
        };
        for _ in 0..opts.prefill {
            let data = worker.data();
            let user = worker.next_user();
            let h = worker
                .backend
                .create(&user, &data)
                .await
                .with_context(|| format!("{}: prefilling sessions", backend.name()))?;
            worker.pool.push(h);
        }
        workers.push(worker);
    }
    let mut results = Vec::new();
    for phase in phases {
        if phase
            .mix
            .weights
            .iter()
            .any(|(op, _)| !backend.supports(*op))
        {
            continue;
        }
        let cpu0 = servers.cpu_seconds();
        let started = Instant::now();
        let until = started + Duration::from_secs_f64(opts.seconds);
        let tasks: Vec<_> = workers
            .drain(..)
            .map(|w| tokio::spawn(w.phase(phase.clone(), until)))
            .collect();
        let mut hist = Tally::new()?;
        for t in tasks {
            let (w, tally) = t.await.context("a worker panicked")?;
            workers.push(w);
            let tally = tally?;
            hist.hist.add(&tally.hist)?;
            hist.ops += tally.ops;
            hist.errors += tally.errors;
            if hist.first_error.is_none() {
                hist.first_error = tally.first_error;
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu = servers.cpu_seconds() - cpu0;
        anyhow::ensure!(
            servers.all_running(),
            "{}: a server process exited during {}",
            backend.name(),
            phase.name
        );
        let q = |p: f64| hist.hist.value_at_quantile(p);
        results.push(PhaseResult {
            backend: backend.name().to_string(),
            phase: phase.name.clone(),
            workers: opts.workers,
            ops: hist.ops,
            errors: hist.errors,
            seconds,
            ops_per_sec: hist.ops as f64 / seconds.max(1e-9),
            p50_us: q(0.50),
            p99_us: q(0.99),
            p999_us: q(0.999),
            cpu_s_per_kop: if hist.ops > 0 {
                cpu / hist.ops as f64 * 1000.0
            } else {
                0.0
            },
            server_rss_mib: servers.rss_bytes() as f64 / (1024.0 * 1024.0),
            first_error: hist.first_error,
        });
    }
    Ok(results)
}
