//! Which endpoint a call goes to. Writes and linearizable reads are served by the leader, so a
//! client keeps what answers taught it about the nodes behind its endpoints: the node each
//! endpoint reaches (every answer names its node) and the leader a node named (by id, by
//! advertised address, or both). Calls any node serves go round the endpoints; an endpoint that
//! failed is skipped for a while.
//!
//! Transport-neutral on purpose: the gRPC [`Client`](crate::Client) and an HTTP/JSON client
//! (the benchmark driver's) read the same facts from metadata or headers and must route alike.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The routing state of one client: shared by all its calls (cheap to consult, one lock).
#[derive(Debug)]
pub struct Routing {
    /// The endpoints as given (`host:port`, or with a scheme).
    endpoints: Vec<String>,
    known: Mutex<Known>,
    /// Round-robin position for calls any node may serve.
    next: AtomicUsize,
}

/// What answers taught about the nodes behind the endpoints.
#[derive(Debug, Default)]
struct Known {
    /// By endpoint index: the node id its last answer named.
    ids: Vec<Option<u64>>,
    /// By endpoint index: skipped until then.
    down_until: Vec<Option<Instant>>,
    /// The endpoint leader-only calls go to.
    leader: Option<usize>,
    /// The node id of the leader last named, so that an endpoint found to reach that node
    /// later becomes `leader`.
    leader_id: Option<u64>,
}

/// An endpoint or advertised address without its scheme or trailing slash: the forms
/// `http://host:port/` and `host:port` name the same node.
fn bare(a: &str) -> &str {
    a.split_once("://")
        .map_or(a, |(_, rest)| rest)
        .trim_end_matches('/')
}

impl Routing {
    /// Routing over `endpoints`, nothing known yet.
    pub fn new<I, S>(endpoints: I) -> Routing
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let endpoints: Vec<String> = endpoints.into_iter().map(Into::into).collect();
        let n = endpoints.len();
        Routing {
            endpoints,
            known: Mutex::new(Known {
                ids: vec![None; n],
                down_until: vec![None; n],
                ..Known::default()
            }),
            next: AtomicUsize::new(0),
        }
    }

    /// The number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether there are no endpoints (every pick is then 0).
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Endpoint `i` as given.
    pub fn endpoint(&self, i: usize) -> Option<&str> {
        self.endpoints.get(i).map(String::as_str)
    }

    /// The endpoint for the next attempt: the leader's when `prefer_leader` and it is known
    /// and not skipped; else the next endpoint round the others that is not skipped; else (all
    /// skipped) the next one anyway.
    pub fn pick(&self, prefer_leader: bool) -> usize {
        let n = self.endpoints.len().max(1);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let Ok(k) = self.known.lock() else {
            return start % n;
        };
        let now = Instant::now();
        let up = |i: usize| {
            k.down_until
                .get(i)
                .copied()
                .flatten()
                .is_none_or(|t| t <= now)
        };
        if prefer_leader {
            if let Some(l) = k.leader.filter(|&l| up(l)) {
                return l;
            }
        }
        (0..n)
            .map(|j| (start + j) % n)
            .find(|&i| up(i))
            .unwrap_or(start % n)
    }

    /// The endpoint leader-only calls go to now, if one is known.
    pub fn leader(&self) -> Option<usize> {
        self.known.lock().ok().and_then(|k| k.leader)
    }

    /// An answer came from endpoint `i` and named the node that gave it (`None`: it named
    /// none, which teaches nothing). The endpoint becomes the leader's if that node is the
    /// leader last named, and stops being it if it reaches another node.
    pub fn answered(&self, i: usize, node: Option<u64>) {
        let Some(id) = node else {
            return;
        };
        let Ok(mut k) = self.known.lock() else {
            return;
        };
        if let Some(slot) = k.ids.get_mut(i) {
            *slot = Some(id);
        }
        match k.leader_id {
            Some(l) if l == id && k.leader.is_none() => k.leader = Some(i),
            Some(l) if l != id && k.leader == Some(i) => k.leader = None,
            _ => {}
        }
    }

    /// A node named the leader: by node id, its advertised client address, or both. The
    /// endpoint known to reach that node id is the leader's, else the endpoint spelt like the
    /// address (unless known to reach another node), else none: leader-only calls then go
    /// round the endpoints until one is found to reach the leader. Naming nothing changes
    /// nothing.
    pub fn leader_named(&self, id: Option<u64>, addr: Option<&str>) {
        if id.is_none() && addr.is_none() {
            return;
        }
        let spelt = addr.and_then(|a| self.endpoint_at(a));
        let Ok(mut k) = self.known.lock() else {
            return;
        };
        let by_id = id.and_then(|id| k.ids.iter().position(|n| *n == Some(id)));
        let by_addr = spelt.filter(|&e| match (id, k.ids.get(e).copied().flatten()) {
            (Some(want), Some(reached)) => want == reached,
            _ => true,
        });
        k.leader_id = id;
        k.leader = by_id.or(by_addr);
    }

    /// Endpoint `i` failed or named no leader: leader-only calls stop going there, so the
    /// next attempt goes round the others.
    pub fn forget_leader(&self, i: usize) {
        if let Ok(mut k) = self.known.lock() {
            if k.leader == Some(i) {
                k.leader = None;
            }
        }
    }

    /// Skip endpoint `i` for `period` (and forget it as the leader), so the next attempts go
    /// elsewhere instead of waiting on the same silent connection.
    pub fn skip_for(&self, i: usize, period: Duration) {
        if let Ok(mut k) = self.known.lock() {
            if let Some(slot) = k.down_until.get_mut(i) {
                *slot = Some(Instant::now() + period);
            }
            if k.leader == Some(i) {
                k.leader = None;
            }
        }
    }

    /// The endpoint spelt like a node's advertised client address, scheme and trailing slash
    /// aside.
    pub fn endpoint_at(&self, advertised: &str) -> Option<usize> {
        let want = bare(advertised);
        self.endpoints.iter().position(|e| bare(e) == want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn three() -> Routing {
        Routing::new([
            "http://127.0.0.1:7001",
            "127.0.0.1:7002",
            "https://n3:7003/",
        ])
    }

    #[test]
    fn an_address_finds_its_endpoint_whatever_the_scheme() {
        let r = three();
        assert_eq!(r.endpoint_at("127.0.0.1:7001"), Some(0));
        assert_eq!(r.endpoint_at("http://127.0.0.1:7002/"), Some(1));
        assert_eq!(r.endpoint_at("n3:7003"), Some(2));
        assert_eq!(r.endpoint_at("127.0.0.1:7009"), None);
        assert_eq!(r.endpoint(2), Some("https://n3:7003/"));
        assert_eq!(r.endpoint(3), None);
    }

    #[test]
    fn a_leader_named_by_id_is_found_once_an_endpoint_answers_for_it() {
        let r = three();
        r.leader_named(Some(3), None);
        assert_eq!(r.leader(), None, "no endpoint known to reach node 3");
        r.answered(0, Some(1));
        assert_eq!(r.leader(), None);
        r.answered(2, Some(3));
        assert_eq!(r.leader(), Some(2));
        assert!((0..6).all(|_| r.pick(true) == 2));
        // Endpoint 2 turns out to reach another node (a restart behind a load balancer).
        r.answered(2, Some(4));
        assert_eq!(r.leader(), None);
    }

    #[test]
    fn an_address_spelt_like_an_endpoint_of_another_node_is_not_trusted() {
        let r = three();
        r.answered(1, Some(2));
        r.leader_named(Some(7), Some("127.0.0.1:7002"));
        assert_eq!(r.leader(), None);
        r.leader_named(None, Some("127.0.0.1:7002"));
        assert_eq!(r.leader(), Some(1));
        r.leader_named(None, None);
        assert_eq!(r.leader(), Some(1), "naming nothing changes nothing");
    }

    #[test]
    fn skipped_endpoints_are_not_picked_until_their_time_is_up() {
        let r = three();
        r.answered(0, Some(1));
        r.leader_named(Some(1), None);
        assert_eq!(r.pick(true), 0);
        r.skip_for(0, Duration::from_secs(60));
        assert_eq!(r.leader(), None);
        let picked: BTreeSet<usize> = (0..9).map(|_| r.pick(true)).collect();
        assert_eq!(picked, BTreeSet::from([1, 2]));
        r.skip_for(1, Duration::from_secs(60));
        r.skip_for(2, Duration::ZERO);
        assert!((0..6).all(|_| r.pick(false) == 2));
        // Every endpoint skipped: calls still go somewhere.
        r.skip_for(2, Duration::from_secs(60));
        let picked: BTreeSet<usize> = (0..9).map(|_| r.pick(false)).collect();
        assert_eq!(picked, BTreeSet::from([0, 1, 2]));
    }

    #[test]
    fn calls_any_node_serves_go_round_every_endpoint() {
        let r = three();
        r.answered(2, Some(3));
        r.leader_named(Some(3), None);
        let picked: BTreeSet<usize> = (0..9).map(|_| r.pick(false)).collect();
        assert_eq!(picked, BTreeSet::from([0, 1, 2]));
        r.forget_leader(1);
        assert_eq!(
            r.leader(),
            Some(2),
            "forgetting another endpoint changes nothing"
        );
        r.forget_leader(2);
        assert_eq!(r.leader(), None);
    }
}
