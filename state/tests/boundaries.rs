//! Edges of the semantics (docs/semantics.md) that the one-behaviour-per-test suite in `semantics.rs` leaves open:
//! refusals that must not write, bounded retired generations, replays of refusals, precedence
//! between states, and the per-user cap's tie-breaks.

mod common;

use common::{Sm, PRINCIPAL};
use sessiond_state::command::{Command, Outcome, Reply, SessionError, Successor, Target};
use sessiond_state::kv::{Cf, KvRead};
use sessiond_state::query;
use sessiond_state::record::{CapPolicy, Policy, ReusePolicy};
use sessiond_state::token::SessionId;
use std::collections::BTreeMap;

const T0: u64 = 1_000_000;

fn short_grace() -> Policy {
    Policy {
        grace_window_ms: 1_000,
        rotation_min_interval_ms: 1_000,
        ..Policy::default()
    }
}

type Row = (Cf, Vec<u8>, Vec<u8>);

/// Rows added or changed between two dumps, and rows that disappeared.
fn diff(before: &[Row], after: &[Row]) -> (Vec<Row>, Vec<Row>) {
    let added = after
        .iter()
        .filter(|r| !before.contains(r))
        .cloned()
        .collect();
    let removed = before
        .iter()
        .filter(|r| !after.iter().any(|a| a.0 == r.0 && a.1 == r.1))
        .cloned()
        .collect();
    (added, removed)
}

/// Only the clock, dedup rows and their expiry rows (kind 2) may change.
fn only_bookkeeping(before: &[Row], after: &[Row]) {
    let (added, removed) = diff(before, after);
    assert!(removed.is_empty(), "rows disappeared: {removed:?}");
    for (cf, k, _) in &added {
        let ok = match cf {
            Cf::Meta => k.as_slice() == b"clock",
            Cf::Dedup => true,
            Cf::Expiry => k.first() == Some(&2),
            _ => false,
        };
        assert!(ok, "unexpected write in {cf:?}: {k:?}");
    }
}

fn count(sm: &Sm, cf: Cf) -> usize {
    sm.kv.scan(cf, &[], None, usize::MAX).unwrap().len()
}

fn revoked(reason: &str) -> Result<(), SessionError> {
    Err(SessionError::Revoked {
        reason: reason.into(),
    })
}

fn unit(o: Outcome) -> Result<(), SessionError> {
    o.map(|_| ())
}

#[test]
fn a_save_racing_a_logout_in_one_entry_does_not_resurrect() {
    let mut sm = Sm::new();
    let (id, t) = sm.create(T0, "u");
    let rid = sm.rid();
    let (rotate, _) = sm.rotate_cmd(&t);
    let revoke = Command::Revoke {
        request_id: rid.key(PRINCIPAL),
        target: Target::Id(id),
        reason: "bye".into(),
    };
    let save = |sm: &mut Sm, target| Command::Update {
        request_id: sm.rid().key(PRINCIPAL),
        target,
        expected_version: 1,
        data: Some(b"late save".to_vec()),
        attributes: None,
    };
    let by_token = save(&mut sm, Target::Token(t.hash()));
    let by_id = save(&mut sm, Target::Id(id));
    let out = sm.apply(
        T0 + 1,
        vec![
            revoke,
            by_token,
            by_id,
            Command::Touch {
                token_hash: t.hash(),
            },
            rotate,
        ],
    );
    assert!(matches!(out[0], Ok(Reply::Revoked { already: false, .. })));
    for o in &out[1..] {
        assert_eq!(unit(o.clone()), revoked("bye"));
    }
    assert_eq!(count(&sm, Cf::Sessions), 0);

    // Nothing re-creates the id either, even with a fresh token.
    let (mut c, _, _) = sm.create_cmd("u", None);
    if let Command::Create { id: cid, .. } = &mut c {
        *cid = id;
    }
    assert!(matches!(
        sm.one(T0 + 2, c),
        Err(SessionError::InvalidArgument(_))
    ));
    assert_eq!(
        query::by_id(&sm.kv, &id, T0 + 2).unwrap().map(|_| ()),
        revoked("bye")
    );
}

#[test]
fn create_and_logout_in_one_entry_under_a_cap_of_one() {
    // The shrunk case proptest once recorded for the replica property.
    let mut sm = Sm::with_policy(Policy {
        grace_window_ms: 0,
        rotation_min_interval_ms: 0,
        max_sessions_per_user: 1,
        dedup_window_ms: 4_000,
        default_absolute_timeout_ms: 20_000,
        ..Policy::default()
    });
    let (c, t, _) = sm.create_cmd("user1", None);
    let rid = sm.rid();
    let out = sm.apply(
        T0,
        vec![
            c,
            Command::Revoke {
                request_id: rid.key(PRINCIPAL),
                target: Target::Token(t.hash()),
                reason: String::new(),
            },
        ],
    );
    assert!(matches!(out[0], Ok(Reply::Created { .. })));
    assert!(matches!(out[1], Ok(Reply::Revoked { already: false, .. })));
    let (c, _, _) = sm.create_cmd("user1", None);
    match sm.one(T0, c) {
        Ok(Reply::Created { evicted, .. }) => assert!(evicted.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn retired_generations_are_bounded_and_forgotten_oldest_first() {
    let mut sm = Sm::with_policy(Policy {
        rotation_min_interval_ms: 0,
        ..Policy::default()
    });
    let keep = Policy::default().retired_generations as usize;
    let (_, t0) = sm.create(T0, "u");
    let mut tokens = vec![t0];
    for i in 0..keep + 6 {
        let cur = tokens.last().unwrap().clone();
        let (next, replayed) = sm.rotate(T0 + 1 + i as u64, &cur).unwrap();
        assert!(!replayed);
        assert_ne!(next, cur);
        tokens.push(next);
    }
    assert_eq!(count(&sm, Cf::Tokens), keep + 1);
    // Past the last grace window: every retired generation still known is a reuse.
    let now = T0 + 100_000;
    for (g, t) in tokens.iter().enumerate() {
        let got = query::by_token(&sm.kv, &t.hash(), now).unwrap();
        let want = if g < tokens.len() - 1 - keep {
            Err(SessionError::NotFound)
        } else if g + 1 < tokens.len() {
            Err(SessionError::TokenReused)
        } else {
            Ok(g as u64)
        };
        assert_eq!(got.map(|l| l.session.generation), want, "generation {g}");
    }
}

#[test]
fn a_refused_request_is_refused_again_on_retry() {
    let mut sm = Sm::new();
    let (id, _) = sm.create(T0, "u");
    let rid = sm.rid();
    let stale = Command::Update {
        request_id: rid.key(PRINCIPAL),
        target: Target::Id(id),
        expected_version: 5,
        data: Some(b"x".to_vec()),
        attributes: None,
    };
    let first = sm.one(T0, stale.clone());
    assert_eq!(first, Err(SessionError::VersionConflict { current: 1 }));
    // The session moves on to version 5, where the stale request would now match.
    for v in 1..5 {
        assert!(matches!(
            sm.update(T0 + v, Target::Id(id), v, b"y"),
            Ok(Reply::Updated { .. })
        ));
    }
    assert_eq!(
        sm.one(T0 + 10, stale),
        first,
        "the retry gets the first answer"
    );
    let s = query::by_id(&sm.kv, &id, T0 + 10).unwrap().unwrap();
    assert_eq!((s.version, s.data), (5, b"y".to_vec()));
}

#[test]
fn a_retried_save_is_not_applied_twice() {
    let mut sm = Sm::new();
    let (id, _) = sm.create(T0, "u");
    let rid = sm.rid();
    let a = Command::Update {
        request_id: rid.key(PRINCIPAL),
        target: Target::Id(id),
        expected_version: 0,
        data: Some(b"a".to_vec()),
        attributes: None,
    };
    let first = sm.one(T0, a.clone());
    sm.update(T0 + 1, Target::Id(id), 0, b"b").unwrap();
    match (first, sm.one(T0 + 2, a)) {
        (
            Ok(Reply::Updated {
                session: s1,
                replayed: false,
            }),
            Ok(Reply::Updated {
                session: s2,
                replayed: true,
            }),
        ) => assert_eq!((s1.version, &s1.data), (s2.version, &s2.data)),
        other => panic!("{other:?}"),
    }
    let s = query::by_id(&sm.kv, &id, T0 + 2).unwrap().unwrap();
    assert_eq!((s.version, s.data), (3, b"b".to_vec()));
}

#[test]
fn a_lost_rotation_response_is_recovered_by_retrying_even_after_later_rotations() {
    let mut sm = Sm::new();
    let (_, t0) = sm.create(T0, "u");
    let (lost, t1) = sm.rotate_cmd(&t0);
    let first = sm.one(T0, lost.clone());
    assert!(matches!(
        first,
        Ok(Reply::Rotated {
            replayed: false,
            ..
        })
    ));
    // Another tab rotates on after the minimum interval: t0 is now two generations behind.
    let (t2, _) = sm.rotate(T0 + 30_000, &t1).unwrap();
    assert_ne!(t2, t1);
    match sm.one(T0 + 31_000, lost) {
        Ok(Reply::Rotated {
            successor: Successor::Sealed(s),
            replayed: true,
            ..
        }) => assert_eq!(t0.open(&s), t1),
        other => panic!("{other:?}"),
    }
    assert!(query::by_token(&sm.kv, &t2.hash(), T0 + 31_000)
        .unwrap()
        .is_ok());
}

#[test]
fn eviction_takes_the_oldest_and_breaks_ties_by_id() {
    let mut sm = Sm::with_policy(Policy {
        max_sessions_per_user: 2,
        ..Policy::default()
    });
    let (a, _) = sm.create(T0, "u");
    let (b, _) = sm.create(T0, "u");
    let (c, _, _) = sm.create_cmd("u", None);
    match sm.one(T0, c) {
        Ok(Reply::Created { evicted, .. }) => assert_eq!(evicted, vec![a.min(b)]),
        other => panic!("{other:?}"),
    }
    let live: Vec<SessionId> = query::list_user(&sm.kv, "u", T0)
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live.len(), 2);
    assert!(live.contains(&a.max(b)));
}

#[test]
fn the_cap_counts_only_live_sessions() {
    let mut sm = Sm::with_policy(Policy {
        max_sessions_per_user: 1,
        cap_policy: CapPolicy::Refuse,
        ..Policy::default()
    });
    let (c, _, _) = sm.create_cmd("u", Some(1_000));
    sm.one(T0, c).unwrap();
    // Expired but not yet swept: it no longer holds a place.
    let (c, _, _) = sm.create_cmd("u", None);
    assert!(matches!(
        sm.one(T0 + 1_000, c),
        Ok(Reply::Created { ref evicted, .. }) if evicted.is_empty()
    ));
    let (c, _, _) = sm.create_cmd("u", None);
    assert!(matches!(
        sm.one(T0 + 1_000, c),
        Err(SessionError::ResourceExhausted(_))
    ));
}

#[test]
fn logout_with_a_reused_token_follows_the_reuse_policy() {
    for policy in [ReusePolicy::Revoke, ReusePolicy::Reject] {
        let mut sm = Sm::with_policy(Policy {
            reuse_policy: policy,
            ..short_grace()
        });
        let (_, t0) = sm.create(T0, "u");
        let (t1, _) = sm.rotate(T0, &t0).unwrap();
        let late = T0 + 1_000;
        let before = sm.kv.dump();
        assert_eq!(
            sm.revoke(late, Target::Token(t0.hash()), "logout"),
            Err(SessionError::TokenReused)
        );
        let now = query::by_token(&sm.kv, &t1.hash(), late).unwrap();
        match policy {
            ReusePolicy::Revoke => assert_eq!(now.map(|_| ()), revoked("reuse_detected")),
            ReusePolicy::Reject => {
                assert!(now.is_ok());
                only_bookkeeping(&before, &sm.kv.dump());
            }
        }
    }
}

#[test]
fn revoked_beats_expired_and_expired_beats_reuse() {
    let mut sm = Sm::with_policy(short_grace());
    let (c, t0, _) = sm.create_cmd("u", Some(5_000));
    sm.one(T0, c).unwrap();
    let (t1, _) = sm.rotate(T0, &t0).unwrap();
    let gone = T0 + 5_000;
    // t0 is a reuse, but the session is expired: it answers EXPIRED and nothing is revoked.
    assert_eq!(
        unit(sm.one(
            gone,
            Command::Touch {
                token_hash: t0.hash()
            }
        )),
        Err(SessionError::Expired)
    );
    assert_eq!(
        sm.one(
            gone,
            Command::ReportReuse {
                token_hash: t0.hash()
            }
        ),
        Ok(Reply::ReuseHandled { revoked: false })
    );
    assert_eq!(count(&sm, Cf::Tombstones), 0);
    // An expired, unswept session can still be logged out, and then answers REVOKED.
    assert!(matches!(
        sm.revoke(gone, Target::Token(t1.hash()), "late"),
        Ok(Reply::Revoked { already: false, .. })
    ));
    for t in [&t0, &t1] {
        assert_eq!(
            unit(sm.one(
                gone + 1,
                Command::Touch {
                    token_hash: t.hash()
                }
            )),
            revoked("late")
        );
    }
}

#[test]
fn invalid_input_writes_nothing_but_its_dedup_row() {
    let mut sm = Sm::new();
    let (id, t) = sm.create(T0, "u");
    let before = sm.kv.dump();
    let p = Policy::default();
    let mut refused = Vec::new();
    let spoilt = [
        Bad::User(String::new()),
        Bad::User("x".repeat(257)),
        Bad::Data(64 * 1024 + 1),
        Bad::Attribute(String::new(), "v".into()),
        Bad::Attribute("k".into(), "v".repeat(4096)),
        Bad::Idle(0),
        Bad::Idle(u64::MAX),
        Bad::Absolute(0),
    ];
    for bad in &spoilt {
        let (mut c, _, _) = sm.create_cmd("ok", None);
        bad.spoil(&mut c);
        refused.push(c);
    }
    let mut big_attrs = BTreeMap::new();
    big_attrs.insert("k".to_string(), "v".repeat(p.max_attributes_bytes as usize));
    refused.push(Command::Update {
        request_id: sm.rid().key(PRINCIPAL),
        target: Target::Token(t.hash()),
        expected_version: 0,
        data: None,
        attributes: Some(big_attrs),
    });
    refused.push(Command::Revoke {
        request_id: sm.rid().key(PRINCIPAL),
        target: Target::Id(id),
        reason: "r".repeat(129),
    });
    refused.push(Command::RevokeUser {
        request_id: sm.rid().key(PRINCIPAL),
        user_id: String::new(),
        except: None,
        reason: String::new(),
    });
    refused.push(Command::Configure {
        policy: Policy {
            retired_generations: 3,
            ..Policy::default()
        },
    });
    let n = refused.len();
    let out = sm.apply(T0 + 1, refused);
    assert_eq!(out.len(), n);
    for (i, o) in out.into_iter().enumerate() {
        assert!(
            matches!(o, Err(SessionError::InvalidArgument(_))),
            "command {i}: {o:?}"
        );
    }
    only_bookkeeping(&before, &sm.kv.dump());
    assert!(
        sm.kv.get(Cf::Meta, b"policy").unwrap().is_none(),
        "a refused policy is not stored"
    );
    assert!(query::by_token(&sm.kv, &t.hash(), T0 + 1).unwrap().is_ok());
}

/// One out-of-range field of a create.
enum Bad {
    User(String),
    Data(usize),
    Attribute(String, String),
    Idle(u64),
    Absolute(u64),
}

impl Bad {
    fn spoil(&self, c: &mut Command) {
        let Command::Create {
            user_id,
            data,
            attributes,
            idle_timeout_ms,
            absolute_timeout_ms,
            ..
        } = c
        else {
            unreachable!("only creates are spoilt")
        };
        match self {
            Bad::User(u) => *user_id = u.clone(),
            Bad::Data(n) => *data = vec![0; *n],
            Bad::Attribute(k, v) => {
                attributes.insert(k.clone(), v.clone());
            }
            Bad::Idle(ms) => *idle_timeout_ms = Some(*ms),
            Bad::Absolute(ms) => *absolute_timeout_ms = Some(*ms),
        }
    }
}

#[test]
fn a_successor_that_collides_with_a_known_token_is_refused() {
    let mut sm = Sm::new();
    let (_, ta) = sm.create(T0, "u");
    let (_, tb) = sm.create(T0, "v");
    let before = sm.kv.dump();
    let rid = sm.rid();
    let out = sm.one(
        T0 + 1,
        Command::Rotate {
            request_id: rid.key(PRINCIPAL),
            token_hash: ta.hash(),
            new_token_hash: tb.hash(),
            sealed_successor: ta.seal(&tb),
        },
    );
    assert!(matches!(out, Err(SessionError::InvalidArgument(_))));
    only_bookkeeping(&before, &sm.kv.dump());
}

#[test]
fn configure_stores_the_policy_under_its_key() {
    let mut sm = Sm::new();
    assert!(sm.kv.get(Cf::Meta, b"policy").unwrap().is_none());
    assert_eq!(query::policy(&sm.kv).unwrap(), Policy::default());
    let p = Policy {
        max_sessions_per_user: 7,
        ..Policy::default()
    };
    sm.one(T0, Command::Configure { policy: p.clone() })
        .unwrap();
    assert!(sm.kv.get(Cf::Meta, b"policy").unwrap().is_some());
    assert_eq!(query::policy(&sm.kv).unwrap(), p);
}

#[test]
fn the_sweep_honours_its_limit() {
    let mut sm = Sm::new();
    for _ in 0..5 {
        let (c, _, _) = sm.create_cmd("u", Some(1_000));
        sm.one(T0, c).unwrap();
    }
    let due = T0 + 1_000;
    assert!(query::expiry_due(&sm.kv, due).unwrap());
    assert_eq!(
        sm.one(due, Command::Expire { limit: 2 }),
        Ok(Reply::Expired {
            sessions: 2,
            tombstones: 0,
            dedup: 0
        })
    );
    assert_eq!(count(&sm, Cf::Sessions), 3);
    assert_eq!(
        sm.one(due, Command::Expire { limit: 100 }),
        Ok(Reply::Expired {
            sessions: 3,
            tombstones: 0,
            dedup: 0
        })
    );
    assert_eq!(count(&sm, Cf::Users), 0);
    assert_eq!(count(&sm, Cf::Tokens), 0);
    assert!(!query::expiry_due(&sm.kv, due).unwrap());
}

#[test]
fn activity_slides_the_deadline_and_the_sweep_respects_it() {
    let mut sm = Sm::new();
    let (c, t, _) = sm.create_cmd("u", Some(10_000));
    sm.one(T0, c).unwrap();
    sm.update(T0 + 9_000, Target::Token(t.hash()), 0, b"x")
        .unwrap();
    // The old deadline passes: nothing is due, nothing is swept.
    assert!(!query::expiry_due(&sm.kv, T0 + 10_000).unwrap());
    assert_eq!(
        sm.one(T0 + 10_000, Command::Expire { limit: 10 }),
        Ok(Reply::Expired {
            sessions: 0,
            tombstones: 0,
            dedup: 0
        })
    );
    assert!(query::by_token(&sm.kv, &t.hash(), T0 + 10_000)
        .unwrap()
        .is_ok());
    assert_eq!(
        query::by_token(&sm.kv, &t.hash(), T0 + 19_000)
            .unwrap()
            .map(|_| ()),
        Err(SessionError::Expired)
    );
}

#[test]
fn a_previous_token_touches_as_superseded() {
    let mut sm = Sm::new();
    let (c, t0, _) = sm.create_cmd("u", Some(100_000));
    sm.one(T0, c).unwrap();
    sm.rotate(T0, &t0).unwrap();
    let l = query::by_token(&sm.kv, &t0.hash(), T0 + 20_000)
        .unwrap()
        .unwrap();
    assert!(l.superseded && l.touch_due);
    match sm.one(
        T0 + 20_000,
        Command::Touch {
            token_hash: t0.hash(),
        },
    ) {
        Ok(Reply::Touched {
            written: true,
            superseded: true,
            session,
        }) => assert_eq!(session.last_active_at, T0 + 20_000),
        other => panic!("{other:?}"),
    }
    let l = query::by_token(&sm.kv, &t0.hash(), T0 + 20_001)
        .unwrap()
        .unwrap();
    assert!(!l.touch_due);
}

#[test]
fn commands_of_one_entry_share_one_time() {
    let mut sm = Sm::new();
    sm.apply(T0 + 50, vec![]);
    // A smaller stamp does not move time back, for any command of the entry.
    let (a, _, _) = sm.create_cmd("u", None);
    let (b, _, _) = sm.create_cmd("u", None);
    let out = sm.apply(T0, vec![a, b]);
    for o in out {
        match o {
            Ok(Reply::Created { session, .. }) => assert_eq!(session.created_at, T0 + 50),
            other => panic!("{other:?}"),
        }
    }
}
