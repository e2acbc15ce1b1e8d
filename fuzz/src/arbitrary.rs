//! Arbitrary but well-typed values of the state machine's log payload, drawn from fuzzer
//! bytes: what a leader could put into an entry, including values no leader would choose
//! (extreme times and limits, colliding ids, oversized strings).

use crate::input::Source;
use sessiond_state::command::{Batch, Command, Target};
use sessiond_state::record::{CapPolicy, Policy, ReusePolicy};
use sessiond_state::token::{RequestKey, SealedToken, SessionId, TokenHash};
use std::collections::BTreeMap;

/// Ids and token hashes that a state already holds, so that commands find something.
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub ids: Vec<SessionId>,
    pub tokens: Vec<TokenHash>,
    pub requests: Vec<RequestKey>,
    pub users: Vec<String>,
    pub stamp: u64,
}

fn id(src: &mut Source<'_>, known: &Known) -> SessionId {
    if !known.ids.is_empty() && src.bool() {
        return src.pick(&known.ids);
    }
    SessionId(src.array())
}

fn token(src: &mut Source<'_>, known: &Known) -> TokenHash {
    if !known.tokens.is_empty() && src.bool() {
        return src.pick(&known.tokens);
    }
    TokenHash(src.array())
}

fn request(src: &mut Source<'_>, known: &Known) -> RequestKey {
    if !known.requests.is_empty() && src.one_in(3) {
        return src.pick(&known.requests);
    }
    RequestKey([src.u8() % 8; 16])
}

fn user(src: &mut Source<'_>, known: &Known) -> String {
    if !known.users.is_empty() && src.bool() {
        return src.pick(&known.users);
    }
    match src.u8() % 8 {
        0 => "u".repeat(256 + src.below(3)),
        _ => src.string(6),
    }
}

fn target(src: &mut Source<'_>, known: &Known) -> Target {
    if src.bool() {
        Target::Token(token(src, known))
    } else {
        Target::Id(id(src, known))
    }
}

fn attributes(src: &mut Source<'_>) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    for _ in 0..src.below(4) {
        let k = src.string(5);
        let v = if src.one_in(16) {
            "v".repeat(5000)
        } else {
            src.string(8)
        };
        a.insert(k, v);
    }
    a
}

fn data(src: &mut Source<'_>) -> Vec<u8> {
    if src.one_in(16) {
        return vec![0xd7; 64 * 1024 + src.below(3) - 1];
    }
    src.bytes(24)
}

fn time(src: &mut Source<'_>) -> u64 {
    if src.bool() {
        u64::from(src.u16())
    } else {
        src.interesting_u64()
    }
}

/// Any policy, sensible or not.
pub fn policy(src: &mut Source<'_>) -> Policy {
    let d = Policy::default();
    let pick = |v: u64, src: &mut Source<'_>| if src.bool() { v } else { time(src) };
    Policy {
        grace_window_ms: pick(d.grace_window_ms, src),
        rotation_min_interval_ms: pick(d.rotation_min_interval_ms, src),
        reuse_policy: if src.bool() {
            ReusePolicy::Revoke
        } else {
            ReusePolicy::Reject
        },
        retired_generations: if src.bool() {
            d.retired_generations
        } else {
            src.u32()
        },
        max_sessions_per_user: if src.bool() {
            u32::from(src.u8() % 4)
        } else {
            src.u32()
        },
        cap_policy: if src.bool() {
            CapPolicy::EvictOldest
        } else {
            CapPolicy::Refuse
        },
        dedup_window_ms: pick(d.dedup_window_ms, src),
        default_idle_timeout_ms: pick(d.default_idle_timeout_ms, src),
        default_absolute_timeout_ms: pick(d.default_absolute_timeout_ms, src),
        max_idle_timeout_ms: pick(d.max_idle_timeout_ms, src),
        max_absolute_timeout_ms: pick(d.max_absolute_timeout_ms, src),
        max_data_bytes: if src.bool() {
            d.max_data_bytes
        } else {
            src.u32()
        },
        max_attributes_bytes: if src.bool() {
            d.max_attributes_bytes
        } else {
            src.u32()
        },
        touch_interval_ms: if src.bool() { None } else { Some(time(src)) },
    }
}

/// Any command.
pub fn command(src: &mut Source<'_>, known: &Known) -> Command {
    match src.u8() % 10 {
        0 => Command::Configure {
            policy: policy(src),
        },
        1 => Command::Create {
            request_id: request(src, known),
            id: id(src, known),
            token_hash: token(src, known),
            sealed_token: SealedToken(src.array()),
            user_id: user(src, known),
            data: data(src),
            attributes: attributes(src),
            idle_timeout_ms: src.bool().then(|| time(src)),
            absolute_timeout_ms: src.bool().then(|| time(src)),
        },
        2 => Command::Rotate {
            request_id: request(src, known),
            token_hash: token(src, known),
            new_token_hash: token(src, known),
            sealed_successor: SealedToken(src.array()),
        },
        3 => Command::Update {
            request_id: request(src, known),
            target: target(src, known),
            expected_version: if src.bool() {
                u64::from(src.u8() % 4)
            } else {
                src.interesting_u64()
            },
            data: src.bool().then(|| data(src)),
            attributes: src.bool().then(|| attributes(src)),
        },
        4 => Command::Touch {
            token_hash: token(src, known),
        },
        5 => Command::Revoke {
            request_id: request(src, known),
            target: target(src, known),
            reason: if src.one_in(8) {
                "r".repeat(129)
            } else {
                src.string(8)
            },
        },
        6 => Command::RevokeUser {
            request_id: request(src, known),
            user_id: user(src, known),
            except: src.bool().then(|| id(src, known)),
            reason: src.string(8),
        },
        7 => Command::ReportReuse {
            token_hash: token(src, known),
        },
        9 => Command::LeaderCommitted {
            from_index: if src.bool() {
                u64::from(src.u8() % 16)
            } else {
                src.interesting_u64()
            },
        },
        _ => Command::Expire {
            limit: if src.bool() {
                u32::from(src.u8())
            } else {
                src.u32()
            },
        },
    }
}

/// Any batch: a stamp near the state's time (or anywhere) and a few commands.
pub fn batch(src: &mut Source<'_>, known: &Known) -> Batch {
    let stamp_ms = match src.u8() % 4 {
        0 => time(src),
        1 => known.stamp.saturating_sub(u64::from(src.u16())),
        _ => known
            .stamp
            .saturating_add(u64::from(src.u32() % 100_000_000)),
    };
    let n = src.below(5);
    Batch {
        stamp_ms,
        commands: (0..n).map(|_| command(src, known)).collect(),
    }
}
