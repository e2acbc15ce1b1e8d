//! Per-session sub-histories: which events concern which session.
//!
//! An event belongs to the session it names; a `create` whose answer was lost names none, and
//! is linked to the session of a create with the same request id (a retry is the same
//! session). A `revoke_user` belongs to every session of its user: for each it is one atomic
//! step that either revoked it or left it alone.

use crate::history::{op, Event, Outcome};
use std::collections::{BTreeMap, HashMap};

/// The events of one session.
#[derive(Debug, Clone)]
pub struct SessionEvents {
    pub id: String,
    pub user: Option<String>,
    /// Events naming this session (and creates linked to it), by invoke time.
    pub own: Vec<usize>,
    /// `revoke_user` events of its user, by invoke time.
    pub user_wide: Vec<usize>,
    /// The absolute deadline (store ms), from the create's answer or else the earliest any
    /// successful answer reported.
    pub deadline_ms: Option<u64>,
}

/// The history cut by session.
#[derive(Debug, Default)]
pub struct Split {
    pub sessions: Vec<SessionEvents>,
    /// Creates without a session id that no create with the same request id explains: they
    /// may have made a session the history never names.
    pub orphan_creates: Vec<usize>,
}

/// Cut the usable events (`usable[i]`) of `events` by session.
pub fn split(events: &[Event], usable: &[bool]) -> Split {
    let ok = |i: usize| usable.get(i).copied().unwrap_or(false);
    let mut by_id: BTreeMap<String, SessionEvents> = BTreeMap::new();
    let mut create_rid: HashMap<&str, &str> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if !ok(i) || e.op == op::NEMESIS || e.op == op::REVOKE_USER {
            continue;
        }
        let Some(id) = e.session.as_deref() else {
            continue;
        };
        let s = by_id
            .entry(id.to_string())
            .or_insert_with(|| SessionEvents {
                id: id.to_string(),
                user: None,
                own: Vec::new(),
                user_wide: Vec::new(),
                deadline_ms: None,
            });
        s.own.push(i);
        if e.op == op::CREATE {
            if let Some(r) = e.args.request_id.as_deref() {
                create_rid.entry(r).or_insert(id);
            }
        }
    }
    let mut orphan_creates = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if !ok(i) || e.op != op::CREATE || e.session.is_some() {
            continue;
        }
        let linked = e
            .args
            .request_id
            .as_deref()
            .and_then(|r| create_rid.get(r))
            .and_then(|id| by_id.get_mut(*id));
        match linked {
            Some(s) => s.own.push(i),
            None => orphan_creates.push(i),
        }
    }
    let mut by_user: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if ok(i) && e.op == op::REVOKE_USER {
            if let Some(u) = e.args.user.as_deref() {
                by_user.entry(u).or_default().push(i);
            }
        }
    }
    let mut sessions: Vec<SessionEvents> = by_id.into_values().collect();
    for s in &mut sessions {
        s.own.sort_by_key(|&i| (events[i].invoke_ns, i));
        let creates = s
            .own
            .iter()
            .map(|&i| &events[i])
            .filter(|e| e.op == op::CREATE);
        s.user = creates
            .clone()
            .find_map(|e| e.args.user.clone())
            .or_else(|| s.own.iter().find_map(|&i| events[i].args.user.clone()));
        s.deadline_ms = creates
            .filter(|e| e.result == Outcome::Ok)
            .find_map(|e| e.value.absolute_expires_at_ms)
            .or_else(|| {
                s.own
                    .iter()
                    .map(|&i| &events[i])
                    .filter(|e| e.result == Outcome::Ok)
                    .filter_map(|e| e.value.absolute_expires_at_ms)
                    .min()
            });
        if let Some(u) = s.user.as_deref() {
            if let Some(v) = by_user.get(u) {
                s.user_wide = v.clone();
                s.user_wide.sort_by_key(|&i| (events[i].invoke_ns, i));
            }
        }
    }
    Split {
        sessions,
        orphan_creates,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Args, Value};

    fn ev(op: &str, session: Option<&str>, user: &str, rid: Option<&str>, t: u64) -> Event {
        Event {
            process: "p".into(),
            session: session.map(str::to_string),
            op: op.into(),
            args: Args {
                user: Some(user.into()),
                request_id: rid.map(str::to_string),
                ..Args::default()
            },
            result: Outcome::Info,
            value: Value::default(),
            invoke_ns: t,
            complete_ns: t + 1,
        }
    }

    #[test]
    fn links_lost_creates_and_user_wide_revocations() {
        let events = vec![
            ev(op::CREATE, None, "u", Some("r1"), 1),
            ev(op::CREATE, Some("A"), "u", Some("r1"), 5),
            ev(op::CREATE, None, "u", Some("r2"), 6),
            ev(op::GET, Some("A"), "u", None, 7),
            ev(op::REVOKE_USER, None, "u", Some("r3"), 8),
            ev(op::REVOKE_USER, None, "v", Some("r4"), 9),
            ev(op::NEMESIS, None, "u", None, 2),
        ];
        let s = split(&events, &[true; 7]);
        assert_eq!(s.sessions.len(), 1);
        assert_eq!(s.sessions[0].own, vec![0, 1, 3]);
        assert_eq!(s.sessions[0].user_wide, vec![4]);
        assert_eq!(s.orphan_creates, vec![2]);
    }
}
