//! Exactly-once mutations (docs/semantics.md): a request id is scoped to the principal that sent it
//! and bound to the request. A retry of the same request gets the first answer; the same id
//! with a different request is refused with `INVALID_ARGUMENT` and writes nothing, so the
//! first answer stays the one a true retry gets; another principal's id is another key.

mod common;

use common::{
    is_replay_of, is_reuse_refusal, replayed, seal_key, session_state, set_request_key, Sm,
    PRINCIPAL,
};
use proptest::prelude::*;
use sessiond_state::command::{Command, Outcome, Reply, SessionError, Target};
use sessiond_state::dedup::{REUSED_FOR_ANOTHER_OPERATION, REUSED_FOR_ANOTHER_REQUEST};
use sessiond_state::keys;
use sessiond_state::kv::{Cf, KvRead};
use sessiond_state::query;
use sessiond_state::token::{RequestId, SessionId, Token};
use std::collections::BTreeMap;

const T0: u64 = 1_000_000;
const OTHER_PRINCIPAL: &str = "billing";

fn reused() -> Outcome {
    Err(SessionError::InvalidArgument(
        REUSED_FOR_ANOTHER_REQUEST.into(),
    ))
}

#[test]
fn another_users_create_under_the_same_request_id_is_refused_and_writes_nothing() {
    let mut sm = Sm::new();
    let rid = sm.rid();
    let (alice, alice_token) = sm.create_as(&rid, PRINCIPAL, "alice", None);
    let first = sm.one(T0, alice.clone());
    let Ok(Reply::Created {
        session: alice_session,
        replayed: false,
        ..
    }) = first.clone()
    else {
        panic!("{first:?}")
    };
    let dedup_key = keys::dedup(&rid.key(PRINCIPAL));
    let alice_row = sm.kv.get(Cf::Dedup, &dedup_key).unwrap();
    assert!(alice_row.is_some());
    let before = sm.kv.dump();

    let (bob, bob_token) = sm.create_as(&rid, PRINCIPAL, "bob", None);
    // At the same time, so that not even the clock moves.
    assert_eq!(sm.one(T0, bob.clone()), reused());
    assert_eq!(sm.kv.dump(), before, "bob's attempt wrote nothing");
    assert_eq!(sm.kv.get(Cf::Dedup, &dedup_key).unwrap(), alice_row);
    assert!(query::list_user(&sm.kv, "bob", T0).unwrap().is_empty());
    assert_eq!(
        query::by_token(&sm.kv, &bob_token.hash(), T0)
            .unwrap()
            .map(|_| ()),
        Err(SessionError::NotFound)
    );
    let l = query::by_token(&sm.kv, &alice_token.hash(), T0)
        .unwrap()
        .unwrap();
    assert_eq!(
        l.session.id, alice_session.id,
        "alice's token still names her session"
    );
    assert_eq!(l.session.user_id, "alice");

    // Later (the clock moves, nothing else does), bob is refused again ...
    assert_eq!(sm.one(T0 + 5, bob), reused());
    let mut later = sm.kv.dump();
    later.retain(|(cf, k, _)| !(*cf == Cf::Meta && k.as_slice() == b"clock"));
    let mut earlier = before.clone();
    earlier.retain(|(cf, k, _)| !(*cf == Cf::Meta && k.as_slice() == b"clock"));
    assert_eq!(later, earlier);
    // ... and alice's retry, with the values a leader draws afresh, gets her first answer.
    let (retry, _) = sm.retry_create(&alice, &rid);
    match sm.one(T0 + 6, retry) {
        Ok(Reply::Created {
            session,
            sealed_token,
            replayed: true,
            ..
        }) => {
            assert_eq!(session, alice_session);
            assert_eq!(
                rid.open(&seal_key(), &session.id, &sealed_token),
                alice_token
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(query::list_user(&sm.kv, "alice", T0 + 6).unwrap().len(), 1);
}

#[test]
fn a_reuse_in_the_same_entry_writes_nothing_either() {
    let mut sm = Sm::new();
    let rid = sm.rid();
    let (alice, _) = sm.create_as(&rid, PRINCIPAL, "alice", None);
    let (bob, _) = sm.create_as(&rid, PRINCIPAL, "bob", None);
    let mut only_alice = sm.clone();
    let out = sm.apply(T0, vec![alice.clone(), bob]);
    let alone = only_alice.apply(T0, vec![alice]);
    assert_eq!(out[0], alone[0]);
    assert_eq!(out[1], reused());
    assert_eq!(sm.kv.dump(), only_alice.kv.dump());
}

#[test]
fn one_request_id_under_two_principals_is_two_requests() {
    let mut sm = Sm::new();
    let rid = sm.rid();
    // The very same request from two callers: neither is the other's retry.
    let (a, ta) = sm.create_as(&rid, PRINCIPAL, "alice", None);
    let (b, tb) = sm.create_as(&rid, OTHER_PRINCIPAL, "alice", None);
    let created = |o: Outcome| match o {
        Ok(Reply::Created {
            session,
            sealed_token,
            replayed,
            ..
        }) => (session, sealed_token, replayed),
        other => panic!("{other:?}"),
    };
    let (sa, ka, ra) = created(sm.one(T0, a.clone()));
    let (sb, kb, rb) = created(sm.one(T0, b.clone()));
    assert!(!ra && !rb, "no cross-principal replay");
    assert_ne!(sa.id, sb.id);
    assert_eq!(rid.open(&seal_key(), &sa.id, &ka), ta);
    assert_eq!(rid.open(&seal_key(), &sb.id, &kb), tb);
    assert_eq!(query::list_user(&sm.kv, "alice", T0).unwrap().len(), 2);
    for principal in [PRINCIPAL, OTHER_PRINCIPAL] {
        assert!(sm
            .kv
            .get(Cf::Dedup, &keys::dedup(&rid.key(principal)))
            .unwrap()
            .is_some());
    }
    // Each caller's retry gets its own first answer.
    let (ra, _) = sm.retry_create(&a, &rid);
    let (rb, _) = sm.retry_create(&b, &rid);
    assert_eq!(created(sm.one(T0 + 1, ra)), (sa, ka, true));
    assert_eq!(created(sm.one(T0 + 1, rb)), (sb, kb, true));

    // A different request under the other principal is no reuse either.
    let (c, _) = sm.create_as(&rid, "third", "bob", None);
    let (sc, _, rc) = created(sm.one(T0 + 2, c));
    assert!(!rc);
    assert_eq!(sc.user_id, "bob");
}

/// Two live sessions of user "u": their ids and tokens.
fn two_sessions(sm: &mut Sm) -> ([SessionId; 2], [Token; 2]) {
    let (a, ta) = sm.create(T0, "u");
    let (b, tb) = sm.create(T0, "u");
    ([a, b], [ta, tb])
}

/// `first` and its `retry` (same client fields, fresh leader draws) under one key, then each
/// of `changed` (one client field different) under the same key: the retry replays, every
/// change is refused without a write, and the retry still replays afterwards.
fn check_kind(sm: &mut Sm, first: Command, retry: Command, changed: Vec<Command>) {
    let answer = sm.one(T0 + 1, first.clone());
    assert!(!is_reuse_refusal(&answer), "{answer:?}");
    assert_eq!(sm.one(T0 + 1, retry.clone()), replayed(&answer));
    assert!(!changed.is_empty());
    for c in changed {
        assert_ne!(c, first);
        let before = sm.kv.dump();
        let out = sm.one(T0 + 1, c.clone());
        let want = if std::mem::discriminant(&c) == std::mem::discriminant(&first) {
            REUSED_FOR_ANOTHER_REQUEST
        } else {
            REUSED_FOR_ANOTHER_OPERATION
        };
        assert_eq!(
            out,
            Err(SessionError::InvalidArgument(want.into())),
            "{c:?} after {first:?}"
        );
        assert_eq!(sm.kv.dump(), before, "{c:?} wrote");
    }
    assert_eq!(sm.one(T0 + 2, retry), replayed(&answer));
}

#[test]
fn every_mutation_kind_replays_an_identical_retry_and_refuses_any_change() {
    // Create.
    let mut sm = Sm::new();
    let rid = sm.rid();
    let (first, _) = sm.create_as(&rid, PRINCIPAL, "alice", None);
    let (retry, _) = sm.retry_create(&first, &rid);
    let mut changed = Vec::new();
    for edit in 0..6 {
        let (mut c, _) = sm.retry_create(&first, &rid);
        let Command::Create {
            user_id,
            data,
            attributes,
            idle_timeout_ms,
            absolute_timeout_ms,
            ..
        } = &mut c
        else {
            unreachable!()
        };
        match edit {
            0 => *user_id = "bob".into(),
            1 => *data = b"datb".to_vec(),
            2 => *data = Vec::new(),
            3 => {
                attributes.insert("device".into(), "phone".into());
            }
            4 => *idle_timeout_ms = Some(60_000),
            _ => *absolute_timeout_ms = Some(3_600_000),
        }
        changed.push(c);
    }
    // The same key for another operation.
    changed.push(Command::Revoke {
        request_id: rid.key(PRINCIPAL),
        target: Target::Id(SessionId([0; 16])),
        reason: String::new(),
    });
    check_kind(&mut sm, first, retry, changed);

    // Rotate: only the presented token is the client's; the successor is drawn per attempt.
    let mut sm = Sm::new();
    let (_, [t0, t1]) = two_sessions(&mut sm);
    let rid = sm.rid();
    let (first, _) = sm.rotate_as(&rid, PRINCIPAL, &t0);
    let (retry, _) = sm.rotate_as(&rid, PRINCIPAL, &t0);
    assert_ne!(first, retry);
    let (other_token, _) = sm.rotate_as(&rid, PRINCIPAL, &t1);
    check_kind(&mut sm, first, retry, vec![other_token]);

    // Update.
    let mut sm = Sm::new();
    let ([s0, s1], [t0, _]) = two_sessions(&mut sm);
    let key = sm.rid().key(PRINCIPAL);
    let update = |target, expected_version, data: Option<&[u8]>, attributes| Command::Update {
        request_id: key,
        target,
        expected_version,
        data: data.map(<[u8]>::to_vec),
        attributes,
    };
    let first = update(Target::Id(s0), 0, Some(b"x"), None);
    check_kind(
        &mut sm,
        first.clone(),
        first,
        vec![
            update(Target::Id(s1), 0, Some(b"x"), None),
            // The same session, named another way, is another request.
            update(Target::Token(t0.hash()), 0, Some(b"x"), None),
            update(Target::Id(s0), 1, Some(b"x"), None),
            update(Target::Id(s0), 0, Some(b"y"), None),
            update(Target::Id(s0), 0, None, None),
            update(Target::Id(s0), 0, Some(b"x"), Some(BTreeMap::new())),
        ],
    );

    // Revoke.
    let mut sm = Sm::new();
    let ([s0, s1], [t0, _]) = two_sessions(&mut sm);
    let key = sm.rid().key(PRINCIPAL);
    let revoke = |target, reason: &str| Command::Revoke {
        request_id: key,
        target,
        reason: reason.into(),
    };
    let first = revoke(Target::Id(s0), "");
    check_kind(
        &mut sm,
        first.clone(),
        first,
        vec![
            revoke(Target::Id(s1), ""),
            revoke(Target::Token(t0.hash()), ""),
            revoke(Target::Id(s0), "bye"),
        ],
    );

    // RevokeUser.
    let mut sm = Sm::new();
    let ([s0, _], _) = two_sessions(&mut sm);
    let key = sm.rid().key(PRINCIPAL);
    let revoke_user = |user: &str, except, reason: &str| Command::RevokeUser {
        request_id: key,
        user_id: user.into(),
        except,
        reason: reason.into(),
    };
    let first = revoke_user("u", None, "pw");
    check_kind(
        &mut sm,
        first.clone(),
        first,
        vec![
            revoke_user("v", None, "pw"),
            revoke_user("u", Some(s0), "pw"),
            revoke_user("u", None, "pwd"),
        ],
    );
}

/// A request as the client words it; two are the same request exactly when they are equal.
#[derive(Debug, Clone, PartialEq)]
enum Req {
    Create {
        user: String,
        data: Vec<u8>,
        attributes: BTreeMap<String, String>,
        idle: Option<u64>,
        absolute: Option<u64>,
    },
    Rotate {
        token: usize,
    },
    Update {
        target: (usize, bool),
        expected: u64,
        data: Option<Vec<u8>>,
        attributes: Option<BTreeMap<String, String>>,
    },
    Revoke {
        target: (usize, bool),
        reason: String,
    },
    RevokeUser {
        user: String,
        except: Option<usize>,
        reason: String,
    },
}

/// Short strings over two letters, so that field boundaries can shift ("ab" + "" against
/// "a" + "b") and independent draws often coincide.
fn text() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "a", "b", "ab", "ba"]).prop_map(String::from)
}

fn attributes() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(text(), text(), 0..3)
}

fn timeout() -> impl Strategy<Value = Option<u64>> {
    prop::option::of(prop::sample::select(vec![60_000u64, 120_000]))
}

fn target() -> impl Strategy<Value = (usize, bool)> {
    (0usize..2, any::<bool>())
}

fn req() -> impl Strategy<Value = Req> {
    prop_oneof![
        (
            text(),
            prop::collection::vec(0u8..2, 0..3),
            attributes(),
            timeout(),
            timeout()
        )
            .prop_map(|(user, data, attributes, idle, absolute)| Req::Create {
                user,
                data,
                attributes,
                idle,
                absolute,
            }),
        (0usize..2).prop_map(|token| Req::Rotate { token }),
        (
            target(),
            0u64..3,
            prop::option::of(prop::collection::vec(0u8..2, 0..2)),
            prop::option::of(attributes())
        )
            .prop_map(|(target, expected, data, attributes)| Req::Update {
                target,
                expected,
                data,
                attributes,
            }),
        (target(), text()).prop_map(|(target, reason)| Req::Revoke { target, reason }),
        (text(), prop::option::of(0usize..2), text()).prop_map(|(user, except, reason)| {
            Req::RevokeUser {
                user,
                except,
                reason,
            }
        }),
    ]
}

/// `a` with field `field` taken from `b` when both are the same operation: pairs that differ
/// in at most one field.
fn splice(a: &Req, b: &Req, field: u8) -> Req {
    let mut out = a.clone();
    match (&mut out, b) {
        (
            Req::Create {
                user,
                data,
                attributes,
                idle,
                absolute,
            },
            Req::Create {
                user: u2,
                data: d2,
                attributes: a2,
                idle: i2,
                absolute: x2,
            },
        ) => match field % 5 {
            0 => *user = u2.clone(),
            1 => *data = d2.clone(),
            2 => *attributes = a2.clone(),
            3 => *idle = *i2,
            _ => *absolute = *x2,
        },
        (
            Req::Update {
                target,
                expected,
                data,
                attributes,
            },
            Req::Update {
                target: t2,
                expected: e2,
                data: d2,
                attributes: a2,
            },
        ) => match field % 4 {
            0 => *target = *t2,
            1 => *expected = *e2,
            2 => *data = d2.clone(),
            _ => *attributes = a2.clone(),
        },
        (
            Req::Revoke { target, reason },
            Req::Revoke {
                target: t2,
                reason: r2,
            },
        ) => match field % 2 {
            0 => *target = *t2,
            _ => *reason = r2.clone(),
        },
        (
            Req::RevokeUser {
                user,
                except,
                reason,
            },
            Req::RevokeUser {
                user: u2,
                except: e2,
                reason: r2,
            },
        ) => match field % 3 {
            0 => *user = u2.clone(),
            1 => *except = *e2,
            _ => *reason = r2.clone(),
        },
        _ => return b.clone(),
    }
    out
}

/// The second request of a pair: a retry, an independent request, or a one-field change.
fn pair() -> impl Strategy<Value = (Req, Req)> {
    (req(), req(), 0u8..3, any::<u8>()).prop_map(|(a, b, how, field)| {
        let second = match how {
            0 => a.clone(),
            1 => b,
            _ => splice(&a, &b, field),
        };
        (a, second)
    })
}

/// The command a leader proposes for `r` under `rid` from `principal`, drawing fresh values.
fn command(
    sm: &mut Sm,
    r: &Req,
    rid: &RequestId,
    principal: &str,
    ids: &[SessionId; 2],
    tokens: &[Token; 2],
) -> Command {
    let key = rid.key(principal);
    let target = |(i, by_id): (usize, bool)| {
        if by_id {
            Target::Id(ids[i])
        } else {
            Target::Token(tokens[i].hash())
        }
    };
    match r.clone() {
        Req::Create {
            user,
            data,
            attributes,
            idle,
            absolute,
        } => {
            let (mut c, _) = sm.create_as(rid, principal, &user, idle);
            if let Command::Create {
                data: d,
                attributes: a,
                absolute_timeout_ms,
                ..
            } = &mut c
            {
                *d = data;
                *a = attributes;
                *absolute_timeout_ms = absolute;
            }
            c
        }
        Req::Rotate { token } => sm.rotate_as(rid, principal, &tokens[token]).0,
        Req::Update {
            target: t,
            expected,
            data,
            attributes,
        } => Command::Update {
            request_id: key,
            target: target(t),
            expected_version: expected,
            data,
            attributes,
        },
        Req::Revoke { target: t, reason } => Command::Revoke {
            request_id: key,
            target: target(t),
            reason,
        },
        Req::RevokeUser {
            user,
            except,
            reason,
        } => Command::RevokeUser {
            request_id: key,
            user_id: user,
            except: except.map(|i| ids[i]),
            reason,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Two requests under one request id: from the same principal, the second is answered
    /// with the first's outcome (flagged replayed) iff it is the same operation with the same
    /// client fields, and refused otherwise; either way it writes nothing. From another
    /// principal it is a fresh request: the answer and the state are those of the same
    /// command under a never-used id. Afterwards the first request's retry still replays.
    #[test]
    fn reusing_a_request_id_replays_iff_it_is_the_same_request(
        (first, second) in pair(),
        same_principal in any::<bool>(),
    ) {
        let mut sm = Sm::new();
        let (a, ta) = sm.create(T0, "a");
        let (b, tb) = sm.create(T0, "a");
        let (ids, tokens) = ([a, b], [ta, tb]);
        let rid = sm.rid();
        let c1 = command(&mut sm, &first, &rid, PRINCIPAL, &ids, &tokens);
        let o1 = sm.one(T0 + 1, c1);
        prop_assert!(!is_reuse_refusal(&o1));

        let principal = if same_principal { PRINCIPAL } else { OTHER_PRINCIPAL };
        let c2 = command(&mut sm, &second, &rid, principal, &ids, &tokens);
        let mut reference = sm.clone();
        let mut fresh = c2.clone();
        set_request_key(&mut fresh, reference.rid().key(PRINCIPAL));
        let before = sm.kv.dump();
        let o2 = sm.one(T0 + 1, c2);
        if !same_principal {
            prop_assert_eq!(&o2, &reference.one(T0 + 1, fresh));
            prop_assert_eq!(session_state(&sm.kv), session_state(&reference.kv));
        } else if first == second {
            prop_assert_eq!(&o2, &replayed(&o1));
            prop_assert_eq!(sm.kv.dump(), before);
        } else {
            let same_op = std::mem::discriminant(&first) == std::mem::discriminant(&second);
            let want = if same_op { REUSED_FOR_ANOTHER_REQUEST } else { REUSED_FOR_ANOTHER_OPERATION };
            prop_assert_eq!(&o2, &Err(SessionError::InvalidArgument(want.into())));
            prop_assert_eq!(sm.kv.dump(), before);
        }

        // (A fresh request from the other principal may have written to the session since:
        // then the replay leaves out the content the request did not carry.)
        let again = command(&mut sm, &first, &rid, PRINCIPAL, &ids, &tokens);
        let o3 = sm.one(T0 + 2, again.clone());
        if same_principal {
            prop_assert_eq!(&o3, &replayed(&o1));
        } else {
            prop_assert!(is_replay_of(&o1, &again, &o3), "{:?} after {:?}", o3, o1);
        }
    }
}

/// Size in bytes of the dedup row for `rid`.
fn dedup_row_len(sm: &Sm, rid: &RequestId) -> usize {
    sm.kv
        .get(Cf::Dedup, &keys::dedup(&rid.key(PRINCIPAL)))
        .unwrap()
        .expect("a dedup row")
        .len()
}

/// A bound on a dedup row that holds no session content: ids, hashes, times and a user id.
const SMALL_ROW: usize = 512;

#[test]
fn dedup_rows_keep_no_session_content_and_replays_put_it_back() {
    let mut sm = Sm::new();
    let big = vec![0xAB; 64 * 1024];
    let attributes: BTreeMap<String, String> = [("k".to_string(), "v".repeat(4000))].into();

    // Create with 64 KiB of data and 4 KB of attributes.
    let rid = sm.rid();
    let (mut create, token) = sm.create_as(&rid, PRINCIPAL, "alice", None);
    if let Command::Create {
        data,
        attributes: a,
        ..
    } = &mut create
    {
        *data = big.clone();
        *a = attributes.clone();
    }
    let first = sm.one(T0, create.clone());
    let Ok(Reply::Created { session, .. }) = &first else {
        panic!("{first:?}")
    };
    let id = session.id;
    assert_eq!(session.data, big);
    let len = dedup_row_len(&sm, &rid);
    assert!(len < SMALL_ROW, "create's dedup row is {len} bytes");
    let (retry, _) = sm.retry_create(&create, &rid);
    let again = sm.one(T0 + 1, retry);
    assert_eq!(again, replayed(&first), "the same answer, data included");
    let Ok(Reply::Created {
        session,
        sealed_token,
        ..
    }) = &again
    else {
        panic!("{again:?}")
    };
    assert_eq!(rid.open(&seal_key(), &session.id, sealed_token), token);

    // Update with 64 KiB of new data (attributes unchanged, so not carried).
    let rid = sm.rid();
    let update = Command::Update {
        request_id: rid.key(PRINCIPAL),
        target: Target::Id(id),
        expected_version: 1,
        data: Some(vec![0xCD; 64 * 1024]),
        attributes: None,
    };
    let first = sm.one(T0 + 2, update.clone());
    assert!(
        matches!(&first, Ok(Reply::Updated { session, .. }) if session.attributes == attributes)
    );
    let len = dedup_row_len(&sm, &rid);
    assert!(len < SMALL_ROW, "update's dedup row is {len} bytes");
    assert_eq!(sm.one(T0 + 3, update), replayed(&first));

    // Rotate a session holding 64 KiB.
    let rid = sm.rid();
    let (rotate, _) = sm.rotate_as(&rid, PRINCIPAL, &token);
    let first = sm.one(T0 + 4, rotate);
    assert!(
        matches!(&first, Ok(Reply::Rotated { session, .. }) if session.data.len() == 64 * 1024)
    );
    let len = dedup_row_len(&sm, &rid);
    assert!(len < SMALL_ROW, "rotation's dedup row is {len} bytes");
    let (retry, _) = sm.rotate_as(&rid, PRINCIPAL, &token);
    assert_eq!(sm.one(T0 + 5, retry), replayed(&first));
}

/// The documented difference: once the session has been written to, a replay leaves out the
/// content the request did not carry, and still answers with the same ids, token and
/// deadlines.
#[test]
fn a_replay_after_the_session_changed_leaves_out_only_content_the_request_did_not_carry() {
    let mut sm = Sm::new();
    let (id, token) = sm.create(T0, "alice");
    let rid = sm.rid();
    let (rotate, _) = sm.rotate_as(&rid, PRINCIPAL, &token);
    let first = sm.one(T0 + 1, rotate);
    let Ok(Reply::Rotated {
        session: first_view,
        successor: first_successor,
        ..
    }) = first.clone()
    else {
        panic!("{first:?}")
    };
    assert_eq!(first_view.data, b"data");

    // An attributes-only update, then another write to the session.
    let update_rid = sm.rid();
    let update = Command::Update {
        request_id: update_rid.key(PRINCIPAL),
        target: Target::Id(id),
        expected_version: 0,
        data: None,
        attributes: Some([("a".to_string(), "b".to_string())].into()),
    };
    let first_update = sm.one(T0 + 2, update.clone());
    assert!(sm.update(T0 + 3, Target::Id(id), 0, b"new").is_ok());

    let (retry, _) = sm.rotate_as(&rid, PRINCIPAL, &token);
    let again = sm.one(T0 + 4, retry.clone());
    assert_ne!(again, replayed(&first));
    assert!(is_replay_of(&first, &retry, &again));
    let Ok(Reply::Rotated {
        session,
        successor,
        replayed: true,
    }) = again
    else {
        panic!("{again:?}")
    };
    assert_eq!(successor, first_successor, "the same successor token");
    assert_eq!(
        (session.id, session.generation, session.version),
        (first_view.id, first_view.generation, first_view.version)
    );
    assert_eq!(session.expires_at, first_view.expires_at);
    assert!(session.data.is_empty() && session.attributes.is_empty());

    let again = sm.one(T0 + 5, update.clone());
    assert!(is_replay_of(&first_update, &update, &again));
    let Ok(Reply::Updated { session, .. }) = again else {
        panic!("{again:?}")
    };
    assert!(session.data.is_empty(), "not carried, and changed since");
    assert_eq!(session.attributes.get("a").map(String::as_str), Some("b"));
}
