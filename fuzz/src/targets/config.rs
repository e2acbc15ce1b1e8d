//! Target 5: the TOML configuration file of `sessiond serve` (`node/src/config.rs`), parsed
//! and resolved with the flags into a node's configuration, and the `--initial-cluster` list.
//!
//! Input: the first byte chooses (bit 0) between the rest as the file's text as it is, and a
//! recipe of `key = value` lines — the file's own keys with values of the right type, the
//! wrong type, or out of range — then damaged a little; bit 1 sets `--insecure`.
//!
//! Asserted: no panic, only a typed error; a configuration that resolves satisfies every
//! rule `resolve` promises (ids and sizes above zero, election timeouts above the heartbeat,
//! a rotation interval no shorter than the grace window, a policy the state machine accepts,
//! the node in its own initial cluster, TLS material or `--insecure` but not both).

use crate::input::{mutate, Source};
use crate::targets::snapshot::TempDir;
use sessiond::config::{parse_initial_cluster, NodeConfig, Security, ServeArgs};
use std::cell::RefCell;

/// The file's keys: the long flag names with `_`.
pub const KEYS: [&str; 45] = [
    "node_id",
    "data_dir",
    "client_addr",
    "peer_addr",
    "advertise_client_addr",
    "advertise_peer_addr",
    "metrics_addr",
    "initial_cluster",
    "log_format",
    "grace_window_ms",
    "rotation_min_interval_ms",
    "reuse_policy",
    "retired_generations",
    "max_sessions_per_user",
    "cap_policy",
    "dedup_window_ms",
    "default_idle_timeout_ms",
    "default_absolute_timeout_ms",
    "max_data_bytes",
    "heartbeat_ms",
    "election_timeout_min_ms",
    "election_timeout_max_ms",
    "snapshot_logs",
    "keep_logs",
    "expiry_interval_ms",
    "max_batch",
    "max_inflight_batches",
    "request_timeout_ms",
    "stale_read_bound_ms",
    "max_clock_skew_ms",
    "write_buffer_mib",
    "block_cache_mib",
    "worker_threads",
    "certs_dir",
    "ca_cert",
    "cert",
    "key",
    "access_file",
    "seal_key",
    "insecure",
    "metrics_tls",
    "node_id_from_ordinal",
    "pod_name",
    "peer_domain",
    "initial_cluster_size",
];

pub fn run(input: &[u8]) {
    let mut src = Source::new(input);
    let selector = src.u8();
    let insecure = selector & 2 == 2;
    let text = if selector & 1 == 0 {
        String::from_utf8_lossy(src.rest()).into_owned()
    } else {
        let mut b = recipe(&mut src).into_bytes();
        mutate(&mut b, &mut src);
        String::from_utf8_lossy(&b).into_owned()
    };
    check(&text, insecure);
}

/// Resolve a configuration from `text` as the file, and parse `text` as an initial cluster.
pub fn check(text: &str, insecure: bool) {
    thread_local! {
        static DIR: RefCell<Option<TempDir>> = const { RefCell::new(None) };
    }
    let path = DIR.with(|d| {
        d.borrow_mut()
            .get_or_insert_with(|| TempDir::new("config"))
            .path()
            .join("node.toml")
    });
    std::fs::write(&path, text).expect("write the config file");
    let args = ServeArgs {
        config: Some(path),
        insecure,
        ..ServeArgs::default()
    };
    if let Ok(cfg) = args.resolve() {
        valid(&cfg, insecure);
    }
    if let Ok(members) = parse_initial_cluster(text) {
        for (id, addr) in &members {
            assert!(*id > 0, "initial cluster id 0 accepted");
            assert!(addr.contains(':'), "initial cluster address without a port");
        }
    }
}

/// What `resolve` promises of a configuration it returns.
fn valid(c: &NodeConfig, insecure_flag: bool) {
    assert!(c.node_id > 0);
    assert!(c.heartbeat_ms > 0 && c.election_timeout_min_ms > c.heartbeat_ms);
    assert!(c.election_timeout_max_ms > c.election_timeout_min_ms);
    assert!(c.max_batch >= 1 && c.max_inflight_batches >= 1);
    assert!(c.store.write_buffer_mib >= 1 && c.store.block_cache_mib >= 1);
    assert!(c.worker_threads != Some(0));
    assert!(c.snapshot_logs >= 1 && c.expiry_interval_ms >= 10);
    assert!(c.request_timeout_ms >= 1 && c.max_clock_skew_ms >= 1);
    assert!(c.policy.rotation_min_interval_ms >= c.policy.grace_window_ms);
    assert!(
        sessiond_state::limits::policy(&c.policy).is_ok(),
        "a policy the state machine refuses: {:?}",
        c.policy
    );
    assert!(c.initial_cluster.is_empty() || c.initial_cluster.contains_key(&c.node_id));
    if insecure_flag {
        assert_eq!(c.security, Security::Insecure);
    }
    if c.metrics_tls {
        assert!(matches!(c.security, Security::Tls(_)));
    }
}

fn value(src: &mut Source<'_>, key: &str) -> String {
    let n = |src: &mut Source<'_>| match src.u8() % 5 {
        0 => "0".to_string(),
        1 => src.interesting_u64().to_string(),
        2 => format!("-{}", src.u8()),
        3 => (u64::from(src.u16()) + 1).to_string(),
        _ => src
            .pick(&[
                "18446744073709551615",
                "9223372036854775808",
                "4294967296",
                "1e3",
                "0x10",
            ])
            .to_string(),
    };
    let addr = |src: &mut Source<'_>| {
        format!(
            "\"{}\"",
            src.pick(&[
                "127.0.0.1:7001",
                "[::1]:1",
                "0.0.0.0:0",
                "host:1",
                "1.2.3.4",
                ""
            ])
        )
    };
    if src.one_in(8) {
        // A value of some other type.
        return src
            .pick(&[
                "true",
                "\"x\"",
                "[1, 2]",
                "{ a = 1 }",
                "1.5",
                "1979-05-27",
                "nan",
            ])
            .to_string();
    }
    match key {
        "client_addr" | "peer_addr" | "metrics_addr" => addr(src),
        "initial_cluster" => format!(
            "\"{}\"",
            src.pick(&[
                "1=127.0.0.1:7101",
                "1=a:1,2=b:2,3=c:3",
                "2=a:1",
                "0=a:1",
                "1=a:1,1=b:2",
                "1=nohost",
                "x=a:1",
                ",,",
                "",
            ])
        ),
        "log_format" => format!("\"{}\"", src.pick(&["text", "json", "xml"])),
        "reuse_policy" => format!("\"{}\"", src.pick(&["revoke", "reject", "ignore"])),
        "cap_policy" => format!("\"{}\"", src.pick(&["evict", "refuse", "oldest"])),
        "insecure" | "metrics_tls" | "node_id_from_ordinal" => {
            src.pick(&["true", "false"]).to_string()
        }
        "pod_name" => format!(
            "\"{}\"",
            src.pick(&[
                "sessiond-0",
                "sessiond-2",
                "sessiond",
                "-1",
                "a-99999999999999999999",
                ""
            ])
        ),
        "peer_domain" => format!(
            "\"{}\"",
            src.pick(&["sessiond-peers.default.svc", "a..b", "", "x:1"])
        ),
        "data_dir" | "certs_dir" | "ca_cert" | "cert" | "key" | "access_file" | "seal_key" => {
            format!("\"/tmp/{}\"", src.string(8).replace(['"', '\\'], ""))
        }
        "advertise_client_addr" | "advertise_peer_addr" => format!("\"{}\"", src.string(12)),
        _ => n(src),
    }
}

/// A configuration file: mostly the keys a node needs, then any.
pub fn recipe(src: &mut Source<'_>) -> String {
    let mut text = String::new();
    if !src.one_in(8) {
        text.push_str("node_id = 1\ndata_dir = \"/tmp/sessiond-fuzz\"\n");
        text.push_str("client_addr = \"127.0.0.1:7001\"\npeer_addr = \"127.0.0.1:7101\"\n");
    }
    for _ in 0..src.below(8) {
        let key = if src.one_in(16) {
            src.string(8)
        } else {
            src.pick(&KEYS).to_string()
        };
        let value = value(src, &key);
        text.push_str(&format!("{key} = {value}\n"));
    }
    text
}
