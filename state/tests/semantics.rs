//! The semantics of the state machine (docs/semantics.md), one behaviour per test.

mod common;

use common::{seal_key, session_state, Sm, PRINCIPAL};
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
    let before = session_state(&sm.kv);
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
    assert_eq!(
        sm.update(T0 + 2_000, Target::Token(t0.hash()), 0, b"x"),
        Err(SessionError::TokenReused)
    );
    assert_eq!(
        sm.one(
            T0 + 2_000,
            Command::Touch {
                token_hash: t0.hash()
            }
        ),
        Err(SessionError::TokenReused)
    );
    assert_eq!(
        sm.revoke(T0 + 2_000, Target::Token(t0.hash()), ""),
        Err(SessionError::TokenReused)
    );
    assert!(query::by_token(&sm.kv, &t1.hash(), T0 + 2_000)
        .unwrap()
        .is_ok());
    assert_eq!(
        session_state(&sm.kv),
        before,
        "under `reject` a reuse writes nothing but the dedup rows"
    );
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
                rid.open(&seal_key(), &s2.id, &k2),
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
    let before = session_state(&sm.kv);
    let (c, _, _) = sm.create_cmd(&"x".repeat(300), None);
    assert!(matches!(
        sm.one(T0, c),
        Err(SessionError::InvalidArgument(_))
    ));
    // A fresh request id: reusing the first one would only replay the first refusal.
    let (mut c, _, _) = sm.create_cmd("ok", None);
    if let Command::Create { data, .. } = &mut c {
        *data = vec![0; 64 * 1024 + 1];
    }
    assert!(matches!(
        sm.one(T0, c),
        Err(SessionError::InvalidArgument(_))
    ));
    let big = sm.update(T0, Target::Id(id), 0, &vec![0; 64 * 1024 + 1]);
    assert!(matches!(big, Err(SessionError::InvalidArgument(_))));
    assert_eq!(
        session_state(&sm.kv),
        before,
        "refused input writes nothing but the dedup rows"
    );
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
            request_id: rid.key(PRINCIPAL),
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

#[test]
fn nothing_recreates_a_revoked_id_or_reuses_a_token() {
    let mut sm = Sm::new();
    let (id, t) = sm.create(T0, "u");
    sm.revoke(T0, Target::Id(id), "").unwrap();
    let (mut same_id, _, _) = sm.create_cmd("u", None);
    if let Command::Create { id: i, .. } = &mut same_id {
        *i = id;
    }
    assert!(matches!(
        sm.one(T0 + 1, same_id),
        Err(SessionError::InvalidArgument(_))
    ));
    let (mut same_token, _, _) = sm.create_cmd("u", None);
    if let Command::Create { token_hash, .. } = &mut same_token {
        *token_hash = t.hash();
    }
    assert!(matches!(
        sm.one(T0 + 1, same_token),
        Err(SessionError::InvalidArgument(_))
    ));
    assert_eq!(
        query::by_id(&sm.kv, &id, T0 + 1).unwrap().map(|_| ()),
        Err(SessionError::Revoked {
            reason: "logout".into()
        })
    );
    assert!(query::list_user(&sm.kv, "u", T0 + 1).unwrap().is_empty());
}

#[test]
fn the_grace_window_is_half_open() {
    let mut sm = Sm::with_policy(short_grace());
    let (_, t0) = sm.create(T0, "u");
    sm.rotate(T0 + 10, &t0).unwrap();
    let at = |ms| query::by_token(&sm.kv, &t0.hash(), T0 + 10 + ms).unwrap();
    assert_eq!(at(999).map(|l| l.superseded), Ok(true));
    assert_eq!(at(1_000).map(|_| ()), Err(SessionError::TokenReused));
}

#[test]
fn a_superseded_token_can_save_and_log_out() {
    let mut sm = Sm::new();
    let (id, t0) = sm.create(T0, "u");
    let (t1, _) = sm.rotate(T0, &t0).unwrap();
    match sm.update(T0 + 1, Target::Token(t0.hash()), 2, b"tab") {
        Ok(Reply::Updated { session, .. }) => {
            assert_eq!((session.version, session.data), (3, b"tab".to_vec()))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sm.revoke(T0 + 2, Target::Token(t0.hash()), "bye"),
        Ok(Reply::Revoked {
            id,
            already: false,
            replayed: false
        })
    );
    assert_eq!(
        query::by_token(&sm.kv, &t1.hash(), T0 + 2)
            .unwrap()
            .map(|_| ()),
        Err(SessionError::Revoked {
            reason: "bye".into()
        })
    );
}

#[test]
fn update_replaces_attributes_whole_and_keeps_absent_fields() {
    let mut sm = Sm::new();
    let (c, t, _) = sm.create_cmd("u", None);
    let c = match c {
        Command::Create {
            request_id,
            id,
            token_hash,
            sealed_token,
            user_id,
            data,
            idle_timeout_ms,
            absolute_timeout_ms,
            ..
        } => Command::Create {
            request_id,
            id,
            token_hash,
            sealed_token,
            user_id,
            data,
            attributes: [("device", "phone"), ("ip", "10.0.0.1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            idle_timeout_ms,
            absolute_timeout_ms,
        },
        other => other,
    };
    sm.one(T0, c).unwrap();
    let rid = sm.rid();
    let out = sm.one(
        T0 + 1,
        Command::Update {
            request_id: rid.key(PRINCIPAL),
            target: Target::Token(t.hash()),
            expected_version: 1,
            data: None,
            attributes: Some([("device".to_string(), "laptop".to_string())].into()),
        },
    );
    match out {
        Ok(Reply::Updated { session, .. }) => {
            assert_eq!(session.data, b"data".to_vec(), "absent data is kept");
            assert_eq!(
                session.attributes,
                [("device".to_string(), "laptop".to_string())].into(),
                "attributes are replaced as a whole"
            );
            assert_eq!(session.last_active_at, T0 + 1);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn expired_but_unswept_sessions_can_still_be_revoked() {
    let mut sm = Sm::new();
    let (c, t, _) = sm.create_cmd("u", Some(1_000));
    let id = match sm.one(T0, c) {
        Ok(Reply::Created { session, .. }) => session.id,
        other => panic!("{other:?}"),
    };
    let (c, t2, _) = sm.create_cmd("u", Some(1_000));
    sm.one(T0, c).unwrap();
    let late = T0 + 5_000;
    assert_eq!(
        query::by_token(&sm.kv, &t.hash(), late)
            .unwrap()
            .map(|_| ()),
        Err(SessionError::Expired)
    );
    assert_eq!(
        sm.revoke(late, Target::Token(t.hash()), ""),
        Ok(Reply::Revoked {
            id,
            already: false,
            replayed: false
        })
    );
    // "Log out everywhere" reaches expired-but-unswept sessions too.
    let rid = sm.rid();
    match sm.one(
        late,
        Command::RevokeUser {
            request_id: rid.key(PRINCIPAL),
            user_id: "u".into(),
            except: None,
            reason: String::new(),
        },
    ) {
        Ok(Reply::RevokedUser { ids, .. }) => assert_eq!(ids.len(), 1),
        other => panic!("{other:?}"),
    }
    for t in [&t, &t2] {
        assert_eq!(
            query::by_token(&sm.kv, &t.hash(), late)
                .unwrap()
                .map(|_| ()),
            Err(SessionError::Revoked {
                reason: "logout".into()
            })
        );
    }
}

#[test]
fn a_policy_applies_from_the_next_command_and_bad_ones_are_refused() {
    let mut sm = Sm::new();
    let small = Policy {
        max_data_bytes: 4,
        ..Policy::default()
    };
    let (mut c, _, _) = sm.create_cmd("u", None);
    if let Command::Create { data, .. } = &mut c {
        *data = vec![0; 5];
    }
    let out = sm.apply(
        T0,
        vec![
            Command::Configure {
                policy: small.clone(),
            },
            c,
        ],
    );
    assert_eq!(out[0], Ok(Reply::Configured));
    assert!(matches!(out[1], Err(SessionError::InvalidArgument(_))));
    for bad in [
        Policy {
            dedup_window_ms: 0,
            ..small.clone()
        },
        Policy {
            max_sessions_per_user: 0,
            ..small.clone()
        },
        Policy {
            default_idle_timeout_ms: small.max_idle_timeout_ms + 1,
            ..small.clone()
        },
    ] {
        assert!(matches!(
            sm.one(T0, Command::Configure { policy: bad }),
            Err(SessionError::InvalidArgument(_))
        ));
    }
    assert_eq!(query::policy(&sm.kv).unwrap(), small);
}

#[test]
fn lowering_the_cap_evicts_as_many_as_needed() {
    let mut sm = Sm::new();
    let a = sm.create(T0, "u").0;
    let b = sm.create(T0 + 1, "u").0;
    let c = sm.create(T0 + 2, "u").0;
    sm.one(
        T0 + 3,
        Command::Configure {
            policy: Policy {
                max_sessions_per_user: 2,
                ..Policy::default()
            },
        },
    )
    .unwrap();
    let (cmd, _, _) = sm.create_cmd("u", None);
    let d = match sm.one(T0 + 4, cmd) {
        Ok(Reply::Created {
            evicted, session, ..
        }) => {
            assert_eq!(evicted, vec![a, b]);
            session.id
        }
        other => panic!("{other:?}"),
    };
    let live: Vec<_> = query::list_user(&sm.kv, "u", T0 + 4)
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live, vec![c, d], "oldest first");
    let feed = query::revocations_from(&sm.kv, 0, 10).unwrap();
    assert_eq!(
        feed.iter()
            .map(|e| (e.id, e.reason.as_str()))
            .collect::<Vec<_>>(),
        vec![(a, "evicted"), (b, "evicted")]
    );
}

#[test]
fn the_revocation_feed_is_in_log_order_and_resumable() {
    let mut sm = Sm::new();
    let a = sm.create(T0, "u").0;
    let b = sm.create(T0, "u").0;
    let c = sm.create(T0, "v").0;
    let (r1, r2) = (sm.rid(), sm.rid());
    sm.apply(
        T0 + 1,
        vec![
            Command::Revoke {
                request_id: r1.key(PRINCIPAL),
                target: Target::Id(b),
                reason: "one".into(),
            },
            Command::Revoke {
                request_id: r2.key(PRINCIPAL),
                target: Target::Id(a),
                reason: "two".into(),
            },
        ],
    );
    let first_index = sm.index;
    sm.revoke(T0 + 2, Target::Id(c), "three").unwrap();
    let feed = query::revocations_from(&sm.kv, 0, 10).unwrap();
    assert_eq!(
        feed.iter()
            .map(|e| (e.index, e.id, e.reason.as_str(), e.revoked_at))
            .collect::<Vec<_>>(),
        vec![
            (first_index, b, "one", T0 + 1),
            (first_index, a, "two", T0 + 1),
            (sm.index, c, "three", T0 + 2),
        ]
    );
    let rest = query::revocations_from(&sm.kv, first_index + 1, 10).unwrap();
    assert_eq!(rest.iter().map(|e| e.id).collect::<Vec<_>>(), vec![c]);
    assert_eq!(query::revocations_from(&sm.kv, 0, 1).unwrap().len(), 1);

    // Pages of one event walk through the entry that holds two, never repeating or
    // skipping one, and end where the feed ends.
    let mut cursor = query::FeedCursor::at(0);
    let mut walked = Vec::new();
    loop {
        let (page, next) = query::revocations_page(&sm.kv, cursor, 1).unwrap();
        if page.is_empty() {
            assert_eq!(next, cursor, "an empty page does not move the cursor");
            break;
        }
        assert!(next > cursor);
        walked.extend(page.iter().map(|e| e.id));
        cursor = next;
        assert!(walked.len() <= 3, "the walk must end");
    }
    assert_eq!(walked, vec![b, a, c]);
}

#[test]
fn a_request_id_is_fresh_again_after_its_window() {
    let mut sm = Sm::new();
    let (id, _) = sm.create(T0, "u");
    let rid = sm.rid();
    let save = |expected| Command::Update {
        request_id: rid.key(PRINCIPAL),
        target: Target::Id(id),
        expected_version: expected,
        data: Some(b"x".to_vec()),
        attributes: None,
    };
    let version = |o| match o {
        Ok(Reply::Updated { session, replayed }) => (session.version, replayed),
        other => panic!("{other:?}"),
    };
    assert_eq!(version(sm.one(T0, save(0))), (2, false));
    let window = Policy::default().dedup_window_ms;
    assert_eq!(version(sm.one(T0 + window - 1, save(0))), (2, true));
    // Not swept yet, but past its window: the row no longer answers.
    assert_eq!(version(sm.one(T0 + window, save(0))), (3, false));
    assert_eq!(version(sm.one(T0 + window + 1, save(0))), (3, true));
}

#[test]
fn validity_is_judged_at_state_machine_time_not_the_stamp() {
    let mut sm = Sm::new();
    let (c, t, _) = sm.create_cmd("u", Some(1_000));
    sm.one(T0, c).unwrap();
    sm.apply(T0 + 5_000, vec![]);
    // A leader with a slow clock stamps an earlier time: the session is expired anyway.
    assert_eq!(
        sm.one(
            T0,
            Command::Touch {
                token_hash: t.hash()
            }
        ),
        Err(SessionError::Expired)
    );
    assert_eq!(
        sm.one(T0, Command::Expire { limit: 10 }),
        Ok(Reply::Expired {
            sessions: 1,
            tombstones: 0,
            dedup: 0
        })
    );
}

#[test]
fn the_sweep_limit_counts_rows_of_every_kind() {
    let mut sm = Sm::new();
    // Due at the same time: a session's idle deadline, and its create's dedup row.
    let (c, _, _) = sm.create_cmd("u", Some(Policy::default().dedup_window_ms));
    sm.one(T0, c).unwrap();
    let due = T0 + Policy::default().dedup_window_ms;
    assert_eq!(
        sm.one(due, Command::Expire { limit: 1 }),
        Ok(Reply::Expired {
            sessions: 1,
            tombstones: 0,
            dedup: 0
        })
    );
    assert!(query::expiry_due(&sm.kv, due).unwrap());
    assert_eq!(
        sm.one(due, Command::Expire { limit: 1 }),
        Ok(Reply::Expired {
            sessions: 0,
            tombstones: 0,
            dedup: 1
        })
    );
    assert!(!query::expiry_due(&sm.kv, due).unwrap());
}
