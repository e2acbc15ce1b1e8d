//! Prometheus metrics of a node: what the request path observes (outcomes, batching, shared
//! reads, latency) and gauges read from Raft and storage when `/metrics` is scraped.

use crate::batcher::BatchObserver;
use crate::observe::Observer;
use crate::raft_types::Raft;
use crate::reads::ReadObserver;
use crate::store::StateReader;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use sessiond_state::command::{Outcome, Reply, SessionError};
use sessiond_state::kv::Cf;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Every metric of one node, registered in its own registry.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    batch_size: Histogram,
    reads_per_check: Histogram,
    grace_hits: IntCounter,
    reuse_detected: IntCounter,
    blocked_resurrections: IntCounter,
    dedup_replays: IntCounter,
    swept: IntCounterVec,
    raft: IntGaugeVec,
    replication_lag: IntGaugeVec,
    is_leader: IntGauge,
    rows: IntGaugeVec,
    table_bytes: IntGaugeVec,
    auth_refused: IntCounterVec,
    insecure: IntGauge,
    clock_skew: IntGauge,
    clock_skewed: IntGauge,
    /// Full paths of the client port's methods: the only values of the `method` label.
    methods: std::collections::HashSet<String>,
}

/// Every `/package.Service/Method` path of the project's services, from the descriptor set.
fn method_paths() -> std::collections::HashSet<String> {
    use prost::Message;
    let Ok(set) = prost_types::FileDescriptorSet::decode(sessiond_proto::FILE_DESCRIPTOR_SET)
    else {
        return Default::default();
    };
    set.file
        .iter()
        .flat_map(|f| {
            let package = f.package().to_string();
            f.service.iter().flat_map(move |s| {
                let service = format!("{package}.{}", s.name());
                s.method
                    .iter()
                    .map(move |m| format!("/{service}/{}", m.name()))
            })
        })
        .collect()
}

fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Ok(_) => "ok",
        Err(SessionError::NotFound) => "not_found",
        Err(SessionError::Expired) => "expired",
        Err(SessionError::Revoked { .. }) => "revoked",
        Err(SessionError::TokenReused) => "token_reused",
        Err(SessionError::VersionConflict { .. }) => "version_conflict",
        Err(SessionError::InvalidArgument(_)) => "invalid_argument",
        Err(SessionError::ResourceExhausted(_)) => "resource_exhausted",
    }
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("sessiond".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "commands_total",
                "Commands applied, by operation and outcome",
            ),
            &["op", "outcome"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new("rpc_duration_seconds", "gRPC call latency on this node")
                .buckets(prometheus::exponential_buckets(0.0002, 2.0, 16)?),
            &["method"],
        )?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new("batch_commands", "Commands per proposed log entry")
                .buckets(prometheus::exponential_buckets(1.0, 2.0, 11)?),
        )?;
        let reads_per_check = Histogram::with_opts(
            HistogramOpts::new(
                "reads_per_leadership_check",
                "Linearizable reads sharing one check",
            )
            .buckets(prometheus::exponential_buckets(1.0, 2.0, 11)?),
        )?;
        let grace_hits = IntCounter::new(
            "grace_window_hits_total",
            "Previous-generation tokens accepted inside their grace window",
        )?;
        let reuse_detected = IntCounter::new(
            "reuse_detected_total",
            "Presentations of rotated-away tokens",
        )?;
        let blocked_resurrections = IntCounter::new(
            "blocked_resurrections_total",
            "Writes refused because the session was revoked",
        )?;
        let dedup_replays = IntCounter::new(
            "dedup_replays_total",
            "Mutations answered from the dedup table",
        )?;
        let swept = IntCounterVec::new(
            Opts::new(
                "expired_swept_total",
                "Rows removed by expiry sweeps, by kind",
            ),
            &["kind"],
        )?;
        let raft = IntGaugeVec::new(
            Opts::new(
                "raft",
                "Raft state of this node by field: term, last_log_index, applied_index, \
                 snapshot_index, purged_index, apply_lag, voters; quorum_ack_age_ms (leader only)",
            ),
            &["field"],
        )?;
        let replication_lag = IntGaugeVec::new(
            Opts::new(
                "replication_lag_entries",
                "Entries each member is behind (leader only)",
            ),
            &["node"],
        )?;
        let is_leader = IntGauge::new("is_leader", "1 while this node leads")?;
        let rows = IntGaugeVec::new(
            Opts::new("rows_estimate", "Estimated rows per table"),
            &["table"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(reads_per_check.clone()))?;
        registry.register(Box::new(grace_hits.clone()))?;
        registry.register(Box::new(reuse_detected.clone()))?;
        registry.register(Box::new(blocked_resurrections.clone()))?;
        registry.register(Box::new(dedup_replays.clone()))?;
        registry.register(Box::new(swept.clone()))?;
        registry.register(Box::new(raft.clone()))?;
        registry.register(Box::new(replication_lag.clone()))?;
        registry.register(Box::new(is_leader.clone()))?;
        let table_bytes = IntGaugeVec::new(
            Opts::new(
                "table_bytes",
                "Bytes per RocksDB column family (live SST files plus memtables)",
            ),
            &["table"],
        )?;
        registry.register(Box::new(rows.clone()))?;
        registry.register(Box::new(table_bytes.clone()))?;
        let auth_refused = IntCounterVec::new(
            Opts::new(
                "auth_refused_total",
                "Calls refused before any handler ran, by reason",
            ),
            &["reason"],
        )?;
        let insecure = IntGauge::new(
            "insecure",
            "1 when the node runs --insecure: no TLS, no authentication",
        )?;
        let clock_skew = IntGauge::new(
            "clock_skew_ms",
            "This node's wall clock minus the voters' median clock, last measured",
        )?;
        let clock_skewed = IntGauge::new(
            "clock_skewed",
            "1 while this node's clock is further from the voters' median than \
             --max-clock-skew-ms (it then never drives replicated time)",
        )?;
        // When this process created its metrics: a supervisor restarting the node (a failed
        // fsync, a stopped Raft, a crash) shows as a change between scrapes. Set once, kept
        // by the registry only.
        let start_time = IntGauge::new(
            "start_time_seconds",
            "When this node's process started, in Unix seconds (a change means a restart)",
        )?;
        start_time.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        );
        registry.register(Box::new(start_time.clone()))?;
        registry.register(Box::new(clock_skew.clone()))?;
        registry.register(Box::new(clock_skewed.clone()))?;
        registry.register(Box::new(auth_refused.clone()))?;
        registry.register(Box::new(insecure.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            latency,
            batch_size,
            reads_per_check,
            grace_hits,
            reuse_detected,
            blocked_resurrections,
            dedup_replays,
            swept,
            raft,
            replication_lag,
            is_leader,
            rows,
            table_bytes,
            auth_refused,
            insecure,
            clock_skew,
            clock_skewed,
            methods: method_paths(),
        })
    }

    /// Count a call the authentication layer refused (the label is the failure kind only,
    /// never anything the caller presented).
    pub fn auth_refused(&self, kind: crate::api::error::Kind) {
        let reason = match kind {
            crate::api::error::Kind::Unauthenticated => "unauthenticated",
            crate::api::error::Kind::PermissionDenied => "permission_denied",
            _ => "other",
        };
        self.auth_refused.with_label_values(&[reason]).inc();
    }

    /// Record that this node runs without TLS and authentication.
    pub fn set_insecure(&self, insecure: bool) {
        self.insecure.set(i64::from(insecure));
    }

    /// Refresh the gauges and render everything in the Prometheus text format.
    pub fn render(
        &self,
        raft: &Raft,
        state: &StateReader,
        clocks: &crate::clock::Clocks,
    ) -> String {
        self.clock_skew.set(clocks.skew_ms());
        self.clock_skewed.set(i64::from(clocks.skewed()));
        let m = raft.metrics().borrow().clone();
        let g = |field: &str, v: u64| {
            self.raft
                .with_label_values(&[field])
                .set(i64::try_from(v).unwrap_or(i64::MAX))
        };
        g("term", m.current_term);
        g("last_log_index", m.last_log_index.unwrap_or(0));
        g(
            "applied_index",
            m.last_applied.map(|l| l.index).unwrap_or(0),
        );
        g("snapshot_index", m.snapshot.map(|l| l.index).unwrap_or(0));
        g("purged_index", m.purged.map(|l| l.index).unwrap_or(0));
        g(
            "apply_lag",
            m.last_log_index
                .unwrap_or(0)
                .saturating_sub(m.last_applied.map(|l| l.index).unwrap_or(0)),
        );
        g(
            "voters",
            m.membership_config.membership().voter_ids().count() as u64,
        );
        // How long ago a majority last acknowledged this leader: near the heartbeat interval
        // while it is healthy, growing while it is cut off from its quorum. Leaders only.
        match (m.state, m.millis_since_quorum_ack) {
            (openraft::ServerState::Leader, Some(age)) => g("quorum_ack_age_ms", age),
            _ => {
                let _ = self.raft.remove_label_values(&["quorum_ack_age_ms"]);
            }
        }
        self.is_leader
            .set(i64::from(m.current_leader == Some(m.id)));
        self.replication_lag.reset();
        if let Some(r) = &m.replication {
            let last = m.last_log_index.unwrap_or(0);
            for (id, matched) in r.iter() {
                let at = matched.map(|l| l.index).unwrap_or(0);
                self.replication_lag
                    .with_label_values(&[&id.to_string()])
                    .set(i64::try_from(last.saturating_sub(at)).unwrap_or(i64::MAX));
            }
        }
        for (table, cf) in [("sessions", Cf::Sessions), ("tombstones", Cf::Tombstones)] {
            if let Some(n) = state.estimate_keys(cf) {
                self.rows
                    .with_label_values(&[table])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        for name in crate::store::family_names() {
            if let Some(n) = state.family_bytes(name) {
                self.table_bytes
                    .with_label_values(&[name])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// The `method` label of a request path: the method's name for the project's own methods,
    /// `other` for anything else, so that requests to made-up paths cannot grow the label set.
    /// A route of the HTTP/JSON API shares the label of the method it calls.
    fn method_label<'p>(&self, path: &'p str) -> &'p str {
        if let Some((_, method)) = crate::api::json::ROUTES.iter().find(|(p, _)| *p == path) {
            return method;
        }
        match self.methods.contains(path) {
            true => path.rsplit('/').next().unwrap_or("other"),
            false => "other",
        }
    }

    fn rpc_done(&self, path: &str, started: Instant) {
        let method = self.method_label(path);
        self.latency
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
    }
}

impl BatchObserver for Metrics {
    fn batch_proposed(&self, size: usize) {
        self.batch_size.observe(size as f64);
    }
}

impl ReadObserver for Metrics {
    fn check_shared(&self, readers: usize) {
        self.reads_per_check.observe(readers as f64);
    }
}

impl Observer for Metrics {
    fn outcome(&self, op: &'static str, outcome: &Outcome) {
        self.requests
            .with_label_values(&[op, outcome_label(outcome)])
            .inc();
        match outcome {
            Err(SessionError::TokenReused) => self.reuse_detected.inc(),
            Err(SessionError::Revoked { .. }) if matches!(op, "update" | "touch" | "rotate") => {
                self.blocked_resurrections.inc()
            }
            Ok(
                Reply::Created { replayed: true, .. }
                | Reply::Updated { replayed: true, .. }
                | Reply::Revoked { replayed: true, .. }
                | Reply::RevokedUser { replayed: true, .. },
            ) => self.dedup_replays.inc(),
            Ok(Reply::Rotated { replayed: true, .. }) => self.grace_hits.inc(),
            Ok(Reply::Touched {
                superseded: true, ..
            }) => self.grace_hits.inc(),
            Ok(Reply::Expired {
                sessions,
                tombstones,
                dedup,
            }) => {
                self.swept
                    .with_label_values(&["session"])
                    .inc_by(u64::from(*sessions));
                self.swept
                    .with_label_values(&["tombstone"])
                    .inc_by(u64::from(*tombstones));
                self.swept
                    .with_label_values(&["dedup"])
                    .inc_by(u64::from(*dedup));
            }
            _ => {}
        }
    }

    fn read(&self, _op: &'static str, superseded: bool) {
        if superseded {
            self.grace_hits.inc();
        }
    }
}

/// Tower layer timing every call on the client port (gRPC and HTTP/JSON).
#[derive(Clone)]
pub struct TimingLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for TimingLayer {
    type Service = Timed<S>;
    fn layer(&self, inner: S) -> Timed<S> {
        Timed {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// See [`TimingLayer`].
#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower::Service<http::Request<B>> for Timed<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            metrics.rpc_done(&path, started);
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method_labels(m: &Metrics) -> std::collections::BTreeSet<String> {
        m.registry
            .gather()
            .iter()
            .filter(|f| f.name() == "sessiond_rpc_duration_seconds")
            .flat_map(|f| f.get_metric().iter())
            .flat_map(|m| m.get_label().iter())
            .filter(|l| l.name() == "method")
            .map(|l| l.value().to_string())
            .collect()
    }

    #[test]
    fn the_start_time_is_exported_and_recent() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as f64;
        let m = Metrics::new().expect("metrics");
        let started = m
            .registry
            .gather()
            .iter()
            .find(|f| f.name() == "sessiond_start_time_seconds")
            .and_then(|f| f.get_metric().first().map(|m| m.get_gauge().get_value()))
            .expect("sessiond_start_time_seconds");
        assert!((started - now).abs() < 60.0, "{started} vs {now}");
    }

    #[test]
    fn made_up_paths_share_one_label() {
        let m = Metrics::new().expect("metrics");
        for i in 0..500 {
            m.rpc_done(&format!("/sessiond.v1.Sessions/Nope{i}"), Instant::now());
            m.rpc_done(&format!("/x{i}/y"), Instant::now());
        }
        m.rpc_done("/sessiond.v1.Sessions/GetSession", Instant::now());
        m.rpc_done("/sessiond.v1.Cluster/Status", Instant::now());
        m.rpc_done("/v1/sessions/get", Instant::now());
        let labels = method_labels(&m);
        let expected: std::collections::BTreeSet<String> = ["GetSession", "Status", "other"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(labels, expected);
    }

    #[test]
    fn every_method_of_the_services_is_known() {
        let paths = method_paths();
        for p in [
            "/sessiond.v1.Sessions/CreateSession",
            "/sessiond.v1.Sessions/WatchRevocations",
            "/sessiond.v1.Cluster/Status",
            "/sessiond.v1.Raft/AppendEntries",
        ] {
            assert!(paths.contains(p), "{p} missing from {paths:?}");
        }
    }
}
