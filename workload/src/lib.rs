//! The session workload, defined once and shared by `sessiond-chaos` (which checks what the
//! store answers) and `sessiond-bench` (which measures how fast it answers).
//!
//! Both drive the same operations in the same proportions with the same session data, so a
//! benchmark number and a chaos verdict talk about one workload. [`ports`] hands out the
//! loopback ports every harness starts its clusters on.

use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One session operation, as an application's request handler issues it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Log in: a new session and its first token.
    Create,
    /// Validate the cookie on a request (linearizable).
    Get,
    /// Validate from the receiving node's applied state.
    GetStale,
    /// Rotate the token (refresh).
    Rotate,
    /// Save session data with compare-and-swap on the version.
    Update,
    /// Log out.
    Revoke,
    /// Log out everywhere.
    RevokeUser,
}

impl Op {
    /// Every operation, in a stable order.
    pub const ALL: [Op; 7] = [
        Op::Create,
        Op::Get,
        Op::GetStale,
        Op::Rotate,
        Op::Update,
        Op::Revoke,
        Op::RevokeUser,
    ];

    /// The name used in tables, JSON and histories.
    pub fn name(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Get => "get",
            Op::GetStale => "get_stale",
            Op::Rotate => "rotate",
            Op::Update => "update",
            Op::Revoke => "revoke",
            Op::RevokeUser => "revoke_user",
        }
    }
}

/// Relative weights of operations; drawing from a mix picks one in proportion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mix {
    pub weights: Vec<(Op, u32)>,
}

impl Mix {
    /// Only `op`.
    pub fn only(op: Op) -> Mix {
        Mix {
            weights: vec![(op, 1)],
        }
    }

    /// The benchmark's `mixed` phase: 90 % get, 7 % rotate, 2 % update, 1 % create+revoke
    /// (a login followed by a logout of some session, so the live set stays constant).
    pub fn web() -> Mix {
        Mix {
            weights: vec![
                (Op::Get, 900),
                (Op::Rotate, 70),
                (Op::Update, 20),
                (Op::Create, 10),
            ],
        }
    }

    /// What a browser tab does on each request in the chaos harness: mostly validation,
    /// frequent refreshes and saves, occasional logouts.
    pub fn browser() -> Mix {
        Mix {
            weights: vec![
                (Op::Get, 40),
                (Op::Rotate, 30),
                (Op::Update, 22),
                (Op::Revoke, 3),
                (Op::RevokeUser, 1),
            ],
        }
    }

    /// Draw one operation. An empty or all-zero mix draws `Op::Get`.
    pub fn draw<R: Rng + ?Sized>(&self, rng: &mut R) -> Op {
        let total: u64 = self.weights.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return Op::Get;
        }
        let mut pick = rng.random_range(0..total);
        for (op, w) in &self.weights {
            let w = u64::from(*w);
            if pick < w {
                return *op;
            }
            pick -= w;
        }
        Op::Get
    }
}

/// A benchmark phase: one mix run for a fixed time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub mix: Mix,
}

impl Phase {
    /// The standard phases, in the order they run: each op alone, the web mix, and last the
    /// logouts (which use up the sessions the earlier phases made).
    pub fn standard() -> Vec<Phase> {
        let single = |name: &str, op| Phase {
            name: name.to_string(),
            mix: Mix::only(op),
        };
        vec![
            single("create", Op::Create),
            single("rotate", Op::Rotate),
            single("get", Op::Get),
            single("get_stale", Op::GetStale),
            Phase {
                name: "mixed".into(),
                mix: Mix::web(),
            },
            single("revoke", Op::Revoke),
        ]
    }
}

/// Bytes of application data stored with each session unless told otherwise.
pub const DEFAULT_DATA_BYTES: usize = 256;

/// Session data of `len` bytes: random, so nothing downstream compresses it away.
pub fn session_data<R: Rng + ?Sized>(rng: &mut R, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

/// The user id of simulated user `n`.
pub fn user_id(prefix: &str, n: u64) -> String {
    format!("{prefix}-user-{n}")
}

/// How long a simulated browser waits before its next request: a short random think time,
/// so tabs of one user overlap without one tab monopolising the session.
pub fn think_time<R: Rng + ?Sized>(rng: &mut R, max: Duration) -> Duration {
    let max_us = max.as_micros().max(1) as u64;
    Duration::from_micros(rng.random_range(0..max_us))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn draws_follow_the_weights() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mix = Mix::web();
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..100_000 {
            *counts.entry(mix.draw(&mut rng)).or_insert(0u32) += 1;
        }
        let get = counts[&Op::Get] as f64 / 100_000.0;
        assert!((0.88..0.92).contains(&get), "get share {get}");
        assert!(!counts.contains_key(&Op::Revoke));
    }

    #[test]
    fn a_zero_mix_draws_get_and_only_draws_its_op() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let zero = Mix {
            weights: vec![(Op::Rotate, 0)],
        };
        assert_eq!(zero.draw(&mut rng), Op::Get);
        let only = Mix::only(Op::Revoke);
        assert!((0..100).all(|_| only.draw(&mut rng) == Op::Revoke));
    }

    #[test]
    fn session_data_has_the_asked_length_and_is_not_constant() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let d = session_data(&mut rng, DEFAULT_DATA_BYTES);
        assert_eq!(d.len(), 256);
        assert!(d.iter().any(|b| *b != d[0]));
    }
}

/// Loopback ports for the clusters the harnesses (tests, chaos, bench) start.
pub mod ports {
    use std::sync::atomic::{AtomicU16, Ordering};

    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);

    /// A loopback port nothing listens on, below the kernel's ephemeral range (32768 and up
    /// by default): a restarted node reuses its ports, and a port from that range may
    /// meanwhile have become the local end of some outgoing connection. Ports handed out by
    /// one process never repeat (until 12 000 have been); each process starts at a random
    /// offset, so concurrent test processes rarely meet.
    pub fn free() -> Option<u16> {
        let _ = NEXT.compare_exchange(
            0,
            1 + rand::random::<u16>() % SPAN,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        for _ in 0..SPAN {
            let n = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
            let port = LOW + n;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Some(port);
            }
        }
        None
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn ports_are_distinct_and_below_the_ephemeral_range() {
            let a: Vec<u16> = (0..50).filter_map(|_| super::free()).collect();
            assert_eq!(a.len(), 50);
            let mut b = a.clone();
            b.sort_unstable();
            b.dedup();
            assert_eq!(b.len(), 50, "{a:?}");
            assert!(a.iter().all(|p| (20_000..32_000).contains(p)), "{a:?}");
        }
    }
}
