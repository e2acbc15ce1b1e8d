//! State-machine types to wire types and back.

use sessiond_proto::v1 as pb;
use sessiond_state::command::SessionView;
use sessiond_state::record::RevocationEvent;
use std::collections::{BTreeMap, HashMap};

/// A session as sent to clients.
pub fn session(v: &SessionView) -> pb::Session {
    pb::Session {
        id: v.id.to_string(),
        user_id: v.user_id.clone(),
        generation: v.generation,
        version: v.version,
        data: v.data.clone(),
        attributes: v
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        created_at_ms: v.created_at,
        last_active_at_ms: v.last_active_at,
        idle_timeout_ms: v.idle_timeout_ms,
        absolute_expires_at_ms: v.absolute_expires_at,
        expires_at_ms: v.expires_at,
    }
}

/// A revocation as sent to watchers.
pub fn revocation(e: &RevocationEvent) -> pb::Revocation {
    pb::Revocation {
        index: e.index,
        session_id: e.id.to_string(),
        user_id: e.user_id.clone(),
        reason: e.reason.clone(),
        revoked_at_ms: e.revoked_at,
    }
}

/// Attributes in the state machine's deterministic order.
pub fn attributes(m: HashMap<String, String>) -> BTreeMap<String, String> {
    m.into_iter().collect()
}

/// `0` on the wire means "not set".
pub fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}
