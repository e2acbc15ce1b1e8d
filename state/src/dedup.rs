//! Exactly-once mutations: the outcome of every request id is remembered for the dedup
//! window, and a replay gets it back. Refusals are remembered too, so a retry can never turn
//! a refused request into an applied one.
//!
//! A request id is scoped to the principal that sent it (see [`RequestId::key`]) and bound to
//! a [`fingerprint`] of the request, so reusing an id for a different request is refused
//! rather than answered with the first request's outcome (the idempotency-key rule of
//! payment APIs). Such a refusal writes nothing: the first outcome stays the one a true retry
//! gets.
//!
//! A row keeps what a replay needs, not the session's content: the reply with every session
//! view's `data` and `attributes` left empty (ids, generation, version, times, deadlines, the
//! sealed token or successor, evicted or revoked ids), so a row stays small (a few hundred
//! bytes) whatever the session carries. A replay puts the content back:
//!
//! - what the request itself carried (a create's data and attributes, an update's new ones)
//!   comes from the retry, which the fingerprint proves carries the same values;
//! - what it did not carry (a rotation's view, an update's unchanged field) comes from the
//!   session record, while that record is still at the version the first answer reported
//!   (every write to a record raises its version, so the content is the first answer's);
//! - otherwise (the session has been written to, revoked or swept since) that content comes
//!   back empty. This is the one way a replay may differ from the first answer, chosen so
//!   that no row keeps up to 64 KiB of data plus attributes for the whole window: the
//!   client still gets what the retry is for (the session id, the token or successor, the
//!   version and the deadlines), and the content it did not send was not the request's
//!   result. `docs/semantics.md` describes replays for clients.
//!
//! [`RequestId::key`]: crate::token::RequestId::key

use crate::codec::encode;
use crate::command::{Command, Outcome, Reply, SessionError, SessionView, Target};
use crate::keys::{self, ExpiryKind};
use crate::kv::{Cf, KvRead, StorageError, Txn};
use crate::record::{DedupRow, OpKind};
use crate::tables;
use crate::token::RequestKey;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Why a remembered request id does not answer a request that differs from its first one.
pub const REUSED_FOR_ANOTHER_REQUEST: &str = "request_id reused for a different request";
/// Why a remembered request id does not answer a request of another operation.
pub const REUSED_FOR_ANOTHER_OPERATION: &str =
    "request_id was already used for a different operation";

/// A mutation as the dedup table sees it.
pub(crate) struct Request {
    pub key: RequestKey,
    pub op: OpKind,
    pub fingerprint: [u8; 32],
}

/// The request id, operation and fingerprint of `c`; `None` for commands without a request id.
pub(crate) fn request(c: &Command) -> Option<Request> {
    let (key, op) = match c {
        Command::Create { request_id, .. } => (*request_id, OpKind::Create),
        Command::Rotate { request_id, .. } => (*request_id, OpKind::Rotate),
        Command::Update { request_id, .. } => (*request_id, OpKind::Update),
        Command::Revoke { request_id, .. } => (*request_id, OpKind::Revoke),
        Command::RevokeUser { request_id, .. } => (*request_id, OpKind::RevokeUser),
        _ => return None,
    };
    Some(Request {
        key,
        op,
        fingerprint: fingerprint(c)?,
    })
}

/// What a retry of the same request has in common with the first attempt: a domain-separated
/// SHA-256 over the operation and every field the client chose, in an unambiguous encoding
/// (tags and length prefixes). The values the leader draws afresh for each attempt (a
/// create's id, token hash and sealed token; a rotation's successor) are left out, so a
/// retry still matches. `None` for commands that carry no request id.
///
/// Every field is named below, so a new field does not compile until it is sorted into the
/// client's or the leader's.
pub fn fingerprint(c: &Command) -> Option<[u8; 32]> {
    let mut f = Fingerprint::new();
    match c {
        Command::Create {
            request_id: _,
            id: _,
            token_hash: _,
            sealed_token: _,
            user_id,
            data,
            attributes,
            idle_timeout_ms,
            absolute_timeout_ms,
        } => {
            f.op(OpKind::Create);
            f.bytes(user_id.as_bytes());
            f.bytes(data);
            f.map(attributes);
            f.opt_u64(*idle_timeout_ms);
            f.opt_u64(*absolute_timeout_ms);
        }
        Command::Rotate {
            request_id: _,
            token_hash,
            new_token_hash: _,
            sealed_successor: _,
        } => {
            f.op(OpKind::Rotate);
            f.bytes(&token_hash.0);
        }
        Command::Update {
            request_id: _,
            target,
            expected_version,
            data,
            attributes,
        } => {
            f.op(OpKind::Update);
            f.target(target);
            f.u64(*expected_version);
            match data {
                None => f.tag(0),
                Some(d) => {
                    f.tag(1);
                    f.bytes(d);
                }
            }
            match attributes {
                None => f.tag(0),
                Some(a) => {
                    f.tag(1);
                    f.map(a);
                }
            }
        }
        Command::Revoke {
            request_id: _,
            target,
            reason,
        } => {
            f.op(OpKind::Revoke);
            f.target(target);
            f.bytes(reason.as_bytes());
        }
        Command::RevokeUser {
            request_id: _,
            user_id,
            except,
            reason,
        } => {
            f.op(OpKind::RevokeUser);
            f.bytes(user_id.as_bytes());
            match except {
                None => f.tag(0),
                Some(id) => {
                    f.tag(1);
                    f.bytes(&id.0);
                }
            }
            f.bytes(reason.as_bytes());
        }
        Command::Configure { .. }
        | Command::Touch { .. }
        | Command::ReportReuse { .. }
        | Command::Expire { .. }
        | Command::LeaderCommitted { .. } => return None,
    }
    Some(f.finish())
}

/// The canonical encoding, fed straight into the hash.
struct Fingerprint(Sha256);

impl Fingerprint {
    fn new() -> Self {
        let mut h = Sha256::new();
        h.update(b"sessiond request fingerprint v1\0");
        Fingerprint(h)
    }

    fn tag(&mut self, t: u8) {
        self.0.update([t]);
    }

    /// Fixed numbers rather than the enum's discriminants: the fingerprint is stored, so
    /// reordering `OpKind` must not change it.
    fn op(&mut self, op: OpKind) {
        self.tag(match op {
            OpKind::Create => 1,
            OpKind::Rotate => 2,
            OpKind::Update => 3,
            OpKind::Revoke => 4,
            OpKind::RevokeUser => 5,
        });
    }

    fn u64(&mut self, v: u64) {
        self.0.update(v.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.update(b);
    }

    fn opt_u64(&mut self, v: Option<u64>) {
        match v {
            None => self.tag(0),
            Some(v) => {
                self.tag(1);
                self.u64(v);
            }
        }
    }

    /// A `BTreeMap` iterates in key order, so equal maps encode equally.
    fn map(&mut self, m: &BTreeMap<String, String>) {
        self.u64(m.len() as u64);
        for (k, v) in m {
            self.bytes(k.as_bytes());
            self.bytes(v.as_bytes());
        }
    }

    fn target(&mut self, t: &Target) {
        match t {
            Target::Token(h) => {
                self.tag(0);
                self.bytes(&h.0);
            }
            Target::Id(id) => {
                self.tag(1);
                self.bytes(&id.0);
            }
        }
    }

    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// The answer for `req` (made from command `c`) if its key is remembered inside its window:
/// the first outcome (flagged replayed, its content put back as the module describes) for
/// the same request, a refusal for a different one. `None`: the request is fresh. Writes
/// nothing either way.
pub(crate) fn replay<R: KvRead + ?Sized>(
    kv: &R,
    req: &Request,
    c: &Command,
    now: u64,
) -> Result<Option<Outcome>, StorageError> {
    let Some(row) = tables::get::<DedupRow, _>(kv, Cf::Dedup, &keys::dedup(&req.key))? else {
        return Ok(None);
    };
    if row.expires_at <= now {
        return Ok(None);
    }
    if row.op != req.op {
        return Ok(Some(Err(SessionError::InvalidArgument(
            REUSED_FOR_ANOTHER_OPERATION.into(),
        ))));
    }
    if row.fingerprint != req.fingerprint {
        return Ok(Some(Err(SessionError::InvalidArgument(
            REUSED_FOR_ANOTHER_REQUEST.into(),
        ))));
    }
    let outcome = match row.outcome {
        Ok(reply) => Ok(refill(kv, c, reply)?),
        Err(e) => Err(e),
    };
    Ok(Some(mark_replayed(outcome)))
}

/// Remember `outcome` for `req` until `now + window`, without session content (see the
/// module). Only for a request [`replay`] found fresh: it replaces whatever row (one past its
/// window) the key still has.
pub(crate) fn remember<R: KvRead + ?Sized>(
    txn: &mut Txn<'_, R>,
    req: &Request,
    outcome: &Outcome,
    now: u64,
    window: u64,
) -> Result<(), StorageError> {
    let key = &req.key;
    let k = keys::dedup(key);
    if let Some(old) = tables::get::<DedupRow, _>(txn, Cf::Dedup, &k)? {
        txn.delete(
            Cf::Expiry,
            keys::expiry(ExpiryKind::Dedup, old.expires_at, &key.0),
        );
    }
    let row = DedupRow {
        request_id: *key,
        op: req.op,
        fingerprint: req.fingerprint,
        expires_at: now.saturating_add(window),
        outcome: match outcome {
            Ok(reply) => Ok(without_content(reply)),
            Err(e) => Err(e.clone()),
        },
    };
    txn.put(
        Cf::Expiry,
        keys::expiry(ExpiryKind::Dedup, row.expires_at, &key.0),
        Vec::new(),
    );
    txn.put(Cf::Dedup, k, encode(&row));
    Ok(())
}

fn mark_replayed(outcome: Outcome) -> Outcome {
    outcome.map(Reply::into_replayed)
}

/// `reply` as a dedup row keeps it: every session view without data and attributes.
fn without_content(reply: &Reply) -> Reply {
    let bare = |v: &SessionView| SessionView {
        id: v.id,
        user_id: v.user_id.clone(),
        generation: v.generation,
        version: v.version,
        data: Vec::new(),
        attributes: BTreeMap::new(),
        created_at: v.created_at,
        last_active_at: v.last_active_at,
        idle_timeout_ms: v.idle_timeout_ms,
        absolute_expires_at: v.absolute_expires_at,
        expires_at: v.expires_at,
    };
    match reply {
        Reply::Created {
            session,
            sealed_token,
            evicted,
            replayed,
        } => Reply::Created {
            session: bare(session),
            sealed_token: *sealed_token,
            evicted: evicted.clone(),
            replayed: *replayed,
        },
        Reply::Rotated {
            session,
            successor,
            replayed,
        } => Reply::Rotated {
            session: bare(session),
            successor: *successor,
            replayed: *replayed,
        },
        Reply::Updated { session, replayed } => Reply::Updated {
            session: bare(session),
            replayed: *replayed,
        },
        // Never remembered (a touch carries no request id), but kept bare all the same.
        Reply::Touched {
            session,
            written,
            superseded,
        } => Reply::Touched {
            session: bare(session),
            written: *written,
            superseded: *superseded,
        },
        other @ (Reply::Configured
        | Reply::Revoked { .. }
        | Reply::RevokedUser { .. }
        | Reply::ReuseHandled { .. }
        | Reply::Expired { .. }
        | Reply::LeaderCommitted) => other.clone(),
    }
}

/// Put back the content [`without_content`] left out of a remembered reply to `c` (a retry
/// of the first request): from `c` where it carries it, else from the session record while it
/// is still at the version the reply reports, else none.
fn refill<R: KvRead + ?Sized>(kv: &R, c: &Command, reply: Reply) -> Result<Reply, StorageError> {
    Ok(match reply {
        Reply::Created {
            mut session,
            sealed_token,
            evicted,
            replayed,
        } => {
            if let Command::Create {
                data, attributes, ..
            } = c
            {
                session.data = data.clone();
                session.attributes = attributes.clone();
            }
            Reply::Created {
                session,
                sealed_token,
                evicted,
                replayed,
            }
        }
        Reply::Updated {
            mut session,
            replayed,
        } => {
            let (data, attributes) = match c {
                Command::Update {
                    data, attributes, ..
                } => (data.as_ref(), attributes.as_ref()),
                _ => (None, None),
            };
            let unchanged = match (data, attributes) {
                (Some(_), Some(_)) => None,
                _ => unchanged(kv, &session)?,
            };
            let (old_data, old_attributes) = unchanged.unwrap_or_default();
            session.data = data.cloned().unwrap_or(old_data);
            session.attributes = attributes.cloned().unwrap_or(old_attributes);
            Reply::Updated { session, replayed }
        }
        Reply::Rotated {
            mut session,
            successor,
            replayed,
        } => {
            (session.data, session.attributes) = unchanged(kv, &session)?.unwrap_or_default();
            Reply::Rotated {
                session,
                successor,
                replayed,
            }
        }
        other => other,
    })
}

/// A session's data and attributes: what a dedup row leaves out.
type Content = (Vec<u8>, BTreeMap<String, String>);

/// The data and attributes of the session `view` shows, if its record is still the one the
/// view was taken from: same creation and same version (every write raises the version).
fn unchanged<R: KvRead + ?Sized>(
    kv: &R,
    view: &SessionView,
) -> Result<Option<Content>, StorageError> {
    Ok(tables::session(kv, &view.id)?
        .filter(|r| r.version == view.version && r.created_at == view.created_at)
        .map(|r| (r.data, r.attributes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Policy;
    use crate::token::{SealedToken, SessionId, TokenHash};

    fn create(user: &str, data: &[u8], attributes: &[(&str, &str)]) -> Command {
        Command::Create {
            request_id: RequestKey([1; 16]),
            id: SessionId([2; 16]),
            token_hash: TokenHash([3; 32]),
            sealed_token: SealedToken([4; 32]),
            user_id: user.into(),
            data: data.to_vec(),
            attributes: attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            idle_timeout_ms: None,
            absolute_timeout_ms: None,
        }
    }

    fn update(data: Option<&[u8]>, attributes: Option<&[(&str, &str)]>) -> Command {
        Command::Update {
            request_id: RequestKey([1; 16]),
            target: Target::Id(SessionId([2; 16])),
            expected_version: 0,
            data: data.map(<[u8]>::to_vec),
            attributes: attributes.map(|a| {
                a.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
        }
    }

    fn fp(c: &Command) -> [u8; 32] {
        fingerprint(c).expect("a mutation with a request id")
    }

    #[test]
    fn fingerprints_ignore_what_the_leader_draws_and_the_request_key() {
        let a = create("u", b"d", &[]);
        let mut b = a.clone();
        if let Command::Create {
            request_id,
            id,
            token_hash,
            sealed_token,
            ..
        } = &mut b
        {
            *request_id = RequestKey([9; 16]);
            *id = SessionId([9; 16]);
            *token_hash = TokenHash([9; 32]);
            *sealed_token = SealedToken([9; 32]);
        }
        assert_eq!(fp(&a), fp(&b));
        let rotate = |new: u8| Command::Rotate {
            request_id: RequestKey([1; 16]),
            token_hash: TokenHash([5; 32]),
            new_token_hash: TokenHash([new; 32]),
            sealed_successor: SealedToken([new; 32]),
        };
        assert_eq!(fp(&rotate(6)), fp(&rotate(7)));
        for c in [
            Command::Configure {
                policy: Policy::default(),
            },
            Command::Touch {
                token_hash: TokenHash([5; 32]),
            },
            Command::ReportReuse {
                token_hash: TokenHash([5; 32]),
            },
            Command::Expire { limit: 1 },
        ] {
            assert_eq!(fingerprint(&c), None);
        }
    }

    #[test]
    fn fingerprints_are_unambiguous() {
        // Field boundaries.
        assert_ne!(fp(&create("ab", b"c", &[])), fp(&create("a", b"bc", &[])));
        assert_ne!(
            fp(&create("u", b"", &[("ab", "c")])),
            fp(&create("u", b"", &[("a", "bc")]))
        );
        // Absent is not empty.
        assert_ne!(fp(&update(None, None)), fp(&update(Some(b""), None)));
        assert_ne!(fp(&update(None, None)), fp(&update(None, Some(&[]))));
        assert_ne!(fp(&update(Some(b""), None)), fp(&update(None, Some(&[]))));
        // A token and an id are different targets even where their bytes agree.
        let revoke = |target| Command::Revoke {
            request_id: RequestKey([1; 16]),
            target,
            reason: String::new(),
        };
        assert_ne!(
            fp(&revoke(Target::Id(SessionId([0; 16])))),
            fp(&revoke(Target::Token(TokenHash([0; 32]))))
        );
        // The operation is part of it.
        let revoke_user = Command::RevokeUser {
            request_id: RequestKey([1; 16]),
            user_id: String::new(),
            except: None,
            reason: String::new(),
        };
        assert_ne!(
            fp(&revoke(Target::Id(SessionId([0; 16])))),
            fp(&revoke_user)
        );
        // Timeouts: which one, and absent versus given.
        let timeouts = |idle, absolute| match create("u", b"", &[]) {
            Command::Create {
                request_id,
                id,
                token_hash,
                sealed_token,
                user_id,
                data,
                attributes,
                ..
            } => Command::Create {
                request_id,
                id,
                token_hash,
                sealed_token,
                user_id,
                data,
                attributes,
                idle_timeout_ms: idle,
                absolute_timeout_ms: absolute,
            },
            other => other,
        };
        assert_ne!(fp(&timeouts(Some(5), None)), fp(&timeouts(None, Some(5))));
        assert_ne!(fp(&timeouts(None, None)), fp(&timeouts(Some(0), None)));
    }
}
