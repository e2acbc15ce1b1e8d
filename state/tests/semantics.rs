//! DESIGN §2 semantics of the state machine, one behaviour per test.

mod common;

use common::Sm;
use sessiond_state::command::{Command, Reply, SessionError, Successor, Target};
use sessiond_state::query;
use sessiond_state::record::{CapPolicy, Policy, ReusePolicy};

const T0: u64 = 1_000_000;

fn short_grace() -> Policy {
    Policy {
        grace_window_ms: 1_000,
        rotation_min_interval_ms: 1_000,
        ..Policy::default()
    }
}

#[test]
fn create_then_validate() {
    let mut sm = Sm::new();
    let (id, token) = sm.create(T0, "alice");
    let l = query::by_token(&sm.kv, &token.hash(), T0).unwrap().unwrap();
    assert_eq!(l.session.id, id);
    assert_eq!((l.session.generation, l.session.version), (0, 1));
    assert!(!l.superseded);
    assert_eq!(query::list_user(&sm.kv, "alice", T0).unwrap().len(), 1);
    assert!(query::list_user(&sm.kv, "alic", T0).unwrap().is_empty());
}

#[test]
fn first_rotation_happens_and_min_interval_keeps_the_token() {
    let mut sm = Sm::new();
    let (_, t0) = sm.create(T0, "u");
    let (t1, replayed) = sm.rotate(T0, &t0).unwrap();
    assert_ne!(t1, t0, "a fresh session's first rotation always happens");
    assert!(!replayed);
    let (same, _) = sm.rotate(T0 + 10, &t1).unwrap();
    assert_eq!(
        same, t1,
        "inside the minimum interval the current token stays"
    );
    let (t2, _) = sm.rotate(T0 + 30_000, &t1).unwrap();
    assert_ne!(t2, t1);
}

#[test]
fn racing_rotations_get_one_successor() {
    let mut sm = Sm::new();
    let (_, t0) = sm.create(T0, "u");
    // In one batch.
    let (a, _) = sm.rotate_cmd(&t0);
    let (b, _) = sm.rotate_cmd(&t0);
    let out = sm.apply(T0 + 1, vec![a, b]);
    let open = |o: &sessiond_state::command::Outcome| match o {
        Ok(Reply::Rotated {
            successor: Successor::Sealed(s),
            replayed,
            ..
        }) => (t0.open(s), *replayed),
        other => panic!("{other:?}"),
    };
    let (s1, r1) = open(&out[0]);
    let (s2, r2) = open(&out[1]);
    assert_eq!(s1, s2);
    assert!(!r1 && r2);
    // In a later batch, still inside the grace window.
    let (s3, r3) = sm.rotate(T0 + 5_000, &t0).unwrap();
    assert_eq!(s3, s1);
    assert!(r3);
    let l = query::by_token(&sm.kv, &t0.hash(), T0 + 5_000)
        .unwrap()
        .unwrap();
    assert!(l.superseded);
    assert_eq!(l.session.generation, 1);
}

#[test]
fn reuse_after_grace_revokes_or_rejects_by_policy() {
    let mut sm = Sm::with_policy(short_grace());
    let (_, t0) = sm.create(T0, "u");
    let (t1, _) = sm.rotate(T0, &t0).unwrap();
    let late = T0 + 1_000;
    assert_eq!(
        query::by_token(&sm.kv, &t0.hash(), late).unwrap(),
        Err(SessionError::TokenReused)
    );
    assert_eq!(
        sm.rotate(late, &t0).unwrap_err(),
        Err(SessionError::TokenReused)
    );
    assert_eq!(
        query::by_token(&sm.kv, &t1.hash(), late).unwrap(),
        Err(SessionError::Revoked {
            reason: "reuse_detected".into()
        })
    );

    let mut sm = Sm::with_policy(Policy {
        reuse_policy: ReusePolicy::Reject,
        ..short_grace()
    });
    let (_, t0) = sm.create(T0, "u");
    let (t1, _) = sm.rotate(T0, &t0).unwrap();
    let before = sm.kv.dump();
    let out = sm.one(
        T0 + 2_000,
        Command::ReportReuse {
            token_hash: t0.hash(),
        },
    );
    assert_eq!(out, Ok(Reply::ReuseHandled { revoked: false }));
    assert_eq!(
        sm.rotate(T0 + 2_000, &t0).unwrap_err(),
        Err(SessionError::TokenReused)
    );
    assert!(query::by_token(&sm.kv, &t1.hash(), T0 + 2_000)
        .unwrap()
        .is_ok());
    // Only the clock and the dedup row of the refused rotation changed.
    assert!(sm.kv.dump().len() >= before.len());
}

#[test]
fn older_generations_are_reuse_even_inside_a_grace_window() {
    let mut sm = Sm::with_policy(Policy {
        grace_window_ms: 60_000,
        rotation_min_interval_ms: 10,
        ..Policy::default()
    });
    let (_, t0) = sm.create(T0, "u");
    let (t1, _) = sm.rotate(T0, &t0).unwrap();
    let (_t2, _) = sm.rotate(T0 + 20, &t1).unwrap();
    assert_eq!(
        query::by_token(&sm.kv, &t1.hash(), T0 + 30)
            .unwrap()
            .map(|l| l.superseded),
        Ok(true)
    );
    assert_eq!(
        query::by_token(&sm.kv, &t0.hash(), T0 + 30).unwrap(),
        Err(SessionError::TokenReused)
    );
}

#[test]
fn revoke_leaves_a_tombstone_that_answers_for_every_token() {
    let mut sm = Sm::new();
    let (id, t0) = sm.create(T0, "u");
    let (t1, _) = sm.rotate(T0, &t0).unwrap();
    let out = sm.revoke(T0 + 1, Target::Token(t0.hash()), "");
    assert_eq!(
        out,
        Ok(Reply::Revoked {
            id,
            already: false,
            replayed: false
        })
    );
    let revoked = Err(SessionError::Revoked {
        reason: "logout".into(),
    });
    for t in [&t0, &t1] {
        assert_eq!(
            query::by_token(&sm.kv, &t.hash(), T0 + 2)
                .unwrap()
                .map(|_| ()),
            revoked.clone()
        );
        assert_eq!(
            sm.update(T0 + 2, Target::Token(t.hash()), 0, b"x")
                .map(|_| ()),
            revoked.clone()
        );
        assert_eq!(
            sm.rotate(T0 + 2, t).unwrap_err().map(|_| ()),
            revoked.clone()
        );
        assert_eq!(
            sm.one(
                T0 + 2,
                Command::Touch {
                    token_hash: t.hash()
                }
            )
            .map(|_| ()),
            revoked.clone()
        );
    }
    assert_eq!(
        sm.update(T0 + 2, Target::Id(id), 0, b"x").map(|_| ()),
        revoked
    );
    assert_eq!(
        sm.revoke(T0 + 3, Target::Id(id), "again"),
        Ok(Reply::Revoked {
            id,
            already: true,
            replayed: false
        })
    );
    assert!(query::list_user(&sm.kv, "u", T0 + 3).unwrap().is_empty());
    let feed = query::revocations_from(&sm.kv, 0, 10).unwrap();
    assert_eq!(feed.len(), 1);
    assert_eq!((feed[0].id, feed[0].reason.as_str()), (id, "logout"));
}

#[test]
fn update_is_compare_and_swap() {
    let mut sm = Sm::new();
    let (id, t) = sm.create(T0, "u");
    assert_eq!(
        sm.update(T0, Target::Token(t.hash()), 7, b"x"),
        Err(SessionError::VersionConflict { current: 1 })
    );
    match sm.update(T0, Target::Token(t.hash()), 1, b"x") {
        Ok(Reply::Updated { session, .. }) => {
            assert_eq!((session.version, session.data), (2, b"x".to_vec()))
        }
        other => panic!("{other:?}"),
    }
    match sm.update(T0, Target::Id(id), 0, b"y") {
        Ok(Reply::Updated { session, .. }) => assert_eq!(session.version, 3),
        other => panic!("{other:?}"),
    }
}

#[test]
fn per_user_cap_evicts_oldest_or_refuses() {
    let mut sm = Sm::with_policy(Policy {
        max_sessions_per_user: 2,
        ..Policy::default()
    });
    let (a, ta) = sm.create(T0, "u");
    let (_b, _) = sm.create(T0 + 1, "u");
    let (c, _, _) = sm.create_cmd("u", None);
    match sm.one(T0 + 2, c) {
        Ok(Reply::Created { evicted, .. }) => assert_eq!(evicted, vec![a]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        query::by_token(&sm.kv, &ta.hash(), T0 + 3)
            .unwrap()
            .map(|_| ()),
        Err(SessionError::Revoked {
            reason: "evicted".into()
        })
    );
    assert_eq!(query::list_user(&sm.kv, "u", T0 + 3).unwrap().len(), 2);

    let mut sm = Sm::with_policy(Policy {
        max_sessions_per_user: 1,
        cap_policy: CapPolicy::Refuse,
        ..Policy::default()
    });
    sm.create(T0, "u");
    let before = query::list_user(&sm.kv, "u", T0).unwrap();
    let (c, _, _) = sm.create_cmd("u", None);
    assert!(matches!(
        sm.one(T0, c),
        Err(SessionError::ResourceExhausted(_))
    ));
    assert_eq!(query::list_user(&sm.kv, "u", T0).unwrap(), before);
}

#[test]
fn dedup_replays_the_first_answer() {
    let mut sm = Sm::new();
    let (c, token, rid) = sm.create_cmd("u", None);
    let first = sm.one(T0, c.clone());
    let again = sm.one(T0 + 5, c);
    match (first, again) {
        (
            Ok(Reply::Created {
                session: s1,
                sealed_token: k1,
                replayed: false,
                ..
            }),
            Ok(Reply::Created {
                session: s2,
                sealed_token: k2,
                replayed: true,
                ..
            }),
        ) => {
            assert_eq!(s1, s2);
            assert_eq!(
                rid.open(&k2),
                token,
                "a retried create hands back the same token"
            );
            assert_eq!(k1, k2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        query::list_user(&sm.kv, "u", T0).unwrap().len(),
        1,
        "created once"
    );

    let (rot, _) = sm.rotate_cmd(&token);
    let r1 = sm.one(T0 + 10, rot.clone());
    let r2 = sm.one(T0 + 10, rot.clone());
    match (&r1, &r2) {
        (
            Ok(Reply::Rotated {
                successor: a,
                replayed: false,
                ..
            }),
            Ok(Reply::Rotated {
                successor: b,
                replayed: true,
                ..
            }),
        ) => assert_eq!(a, b),
        other => panic!("{other:?}"),
    }
    // The same request id for another operation is refused.
    let Command::Rotate { request_id, .. } = rot else {
        unreachable!()
    };
    let misuse = sm.one(
        T0 + 11,
        Command::Revoke {
            request_id,
            target: Target::Token(token.hash()),
            reason: String::new(),
        },
    );
    assert!(matches!(misuse, Err(SessionError::InvalidArgument(_))));
    // After the window the row is swept and the id is new again.
    let out = sm.one(T0 + 11 + 600_000, Command::Expire { limit: 100 });
    assert!(matches!(out, Ok(Reply::Expired { dedup, .. }) if dedup >= 2));
}

#[test]
fn expiry_answers_expired_until_swept_then_not_found() {
    let mut sm = Sm::new();
    let (c, t, _) = sm.create_cmd("u", Some(1_000));
    sm.one(T0, c).unwrap();
    let late = T0 + 1_000;
    assert_eq!(
        query::by_token(&sm.kv, &t.hash(), late)
            .unwrap()
            .map(|_| ()),
        Err(SessionError::Expired)
    );
    assert!(query::list_user(&sm.kv, "u", late).unwrap().is_empty());
    assert!(query::expiry_due(&sm.kv, late).unwrap());
    assert!(!query::expiry_due(&sm.kv, T0 + 999).unwrap());
    let out = sm.one(late, Command::Expire { limit: 100 });
    assert!(matches!(out, Ok(Reply::Expired { sessions: 1, .. })));
    assert_eq!(
        query::by_token(&sm.kv, &t.hash(), late)
            .unwrap()
            .map(|_| ()),
        Err(SessionError::NotFound)
    );
    // Nothing of the session is left but the dedup row of its create.
    assert!(sm.kv.dump().iter().all(|(cf, _, _)| matches!(
        cf,
        sessiond_state::kv::Cf::Meta
            | sessiond_state::kv::Cf::Dedup
            | sessiond_state::kv::Cf::Expiry
    )));
}

#[test]
fn tombstones_are_swept_at_absolute_expiry() {
    let mut sm = Sm::new();
    let (id, t) = sm.create(T0, "u");
    sm.revoke(T0, Target::Id(id), "x").unwrap();
    let abs = T0 + Policy::default().default_absolute_timeout_ms;
    sm.one(abs - 1, Command::Expire { limit: 100 }).unwrap();
    assert!(matches!(
        query::by_token(&sm.kv, &t.hash(), abs - 1).unwrap(),
        Err(SessionError::Revoked { .. })
    ));
    sm.one(abs, Command::Expire { limit: 100 }).unwrap();
    assert_eq!(
        query::by_token(&sm.kv, &t.hash(), abs).unwrap().map(|_| ()),
        Err(SessionError::NotFound)
    );
    assert!(query::revocations_from(&sm.kv, 0, 10).unwrap().is_empty());
}

#[test]
fn clock_never_goes_back() {
    let mut sm = Sm::new();
    sm.apply(T0, vec![]);
    sm.apply(T0 - 500, vec![]);
    assert_eq!(query::clock(&sm.kv).unwrap(), T0);
}

#[test]
fn bad_input_is_refused_without_a_write() {
    let mut sm = Sm::new();
    let (id, t) = sm.create(T0, "u");
    let before = sm.kv.dump();
    let (mut c, _, _) = sm.create_cmd(&"x".repeat(300), None);
    assert!(matches!(
        sm.apply(T0, vec![c.clone()]).remove(0),
        Err(SessionError::InvalidArgument(_))
    ));
    if let Command::Create { user_id, data, .. } = &mut c {
        *user_id = "ok".into();
        *data = vec![0; 64 * 1024 + 1];
    }
    assert!(matches!(
        sm.one(T0, c),
        Err(SessionError::InvalidArgument(_))
    ));
    let big = sm.update(T0, Target::Id(id), 0, &vec![0; 64 * 1024 + 1]);
    assert!(matches!(big, Err(SessionError::InvalidArgument(_))));
    // Only dedup rows (and their expiry rows) were added: no session state changed.
    let after = sm.kv.dump();
    let session_rows = |d: &Vec<(sessiond_state::kv::Cf, Vec<u8>, Vec<u8>)>| {
        d.iter()
            .filter(|(cf, _, _)| {
                matches!(
                    cf,
                    sessiond_state::kv::Cf::Sessions
                        | sessiond_state::kv::Cf::Tokens
                        | sessiond_state::kv::Cf::Users
                )
            })
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(session_rows(&before), session_rows(&after));
    assert!(query::by_token(&sm.kv, &t.hash(), T0).unwrap().is_ok());
}

#[test]
fn touch_writes_only_when_due() {
    let mut sm = Sm::new();
    let (c, t, _) = sm.create_cmd("u", Some(100_000));
    sm.one(T0, c).unwrap();
    // Touch interval: min(60 s, idle / 10) = 10 s.
    let early = sm.one(
        T0 + 9_999,
        Command::Touch {
            token_hash: t.hash(),
        },
    );
    assert!(matches!(early, Ok(Reply::Touched { written: false, .. })));
    let due = sm.one(
        T0 + 10_000,
        Command::Touch {
            token_hash: t.hash(),
        },
    );
    match due {
        Ok(Reply::Touched {
            written: true,
            session,
            ..
        }) => {
            assert_eq!(session.last_active_at, T0 + 10_000);
            assert_eq!(session.expires_at, T0 + 110_000);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn revoke_user_keeps_the_excepted_session() {
    let mut sm = Sm::new();
    let (a, _) = sm.create(T0, "u");
    let (b, tb) = sm.create(T0, "u");
    let (_, other) = sm.create(T0, "v");
    let rid = sm.rid();
    let out = sm.one(
        T0,
        Command::RevokeUser {
            request_id: rid.key(),
            user_id: "u".into(),
            except: Some(b),
            reason: "pw".into(),
        },
    );
    assert_eq!(
        out,
        Ok(Reply::RevokedUser {
            ids: vec![a],
            replayed: false
        })
    );
    assert!(query::by_token(&sm.kv, &tb.hash(), T0).unwrap().is_ok());
    assert!(query::by_token(&sm.kv, &other.hash(), T0).unwrap().is_ok());
}
