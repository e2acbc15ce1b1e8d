//! A rotation a later leader committed: its grace window and rotation interval count from when
//! it became visible (that leader's `LeaderCommitted` entry), not from its proposer's stamp.

mod common;

use common::Sm;
use sessiond_state::codec::decode;
use sessiond_state::command::{Command, Reply, SessionError};
use sessiond_state::keys;
use sessiond_state::kv::{Cf, KvRead};
use sessiond_state::query;
use sessiond_state::record::{LateCommit, Policy};
use sessiond_state::token::Token;

const T0: u64 = 1_000_000;
const GRACE: u64 = 1_000;

fn policy() -> Policy {
    Policy {
        grace_window_ms: GRACE,
        rotation_min_interval_ms: GRACE,
        ..Policy::default()
    }
}

/// A session whose token `t0` was rotated to `t1` by the entry at the returned index, stamped
/// `T0 + 10` by a leader that was then cut off.
fn rotated_then_cut_off(sm: &mut Sm) -> (Token, Token, u64) {
    let (_, t0) = sm.create(T0, "u");
    let (t1, _) = sm.rotate(T0 + 10, &t0).unwrap();
    (t0, t1, sm.index)
}

/// The next leader's first entry, at `at`, saying it committed entries from `from_index` on.
fn leader_committed(sm: &mut Sm, at: u64, from_index: u64) {
    let out = sm.one(at, Command::LeaderCommitted { from_index });
    assert_eq!(out, Ok(Reply::LeaderCommitted));
}

#[test]
fn a_rotation_committed_late_keeps_its_grace_window_from_when_it_became_visible() {
    let mut sm = Sm::with_policy(policy());
    let (t0, t1, rotated) = rotated_then_cut_off(&mut sm);
    // Two seconds later (an election), the next leader commits it with its first entry.
    leader_committed(&mut sm, T0 + 2_000, rotated);
    let look = |sm: &Sm, at| query::by_token(&sm.kv, &t0.hash(), at).unwrap();
    assert_eq!(
        look(&sm, T0 + 2_500).map(|l| l.superseded),
        Ok(true),
        "half a second after it became visible the previous token is inside its window"
    );
    assert_eq!(
        look(&sm, T0 + 3_000).map(|_| ()),
        Err(SessionError::TokenReused),
        "the window is still half-open, one grace window after the late commit"
    );
    // The other tab rotates the previous token: it gets the same successor, nothing revoked.
    let (again, replayed) = sm.rotate(T0 + 2_500, &t0).unwrap();
    assert_eq!(again, t1);
    assert!(replayed);
}

#[test]
fn a_rotation_the_new_leader_knew_was_committed_keeps_its_own_time() {
    let mut sm = Sm::with_policy(policy());
    let (t0, _, rotated) = rotated_then_cut_off(&mut sm);
    // The new leader had been told the rotation's entry was committed: its range starts after.
    leader_committed(&mut sm, T0 + 2_000, rotated + 1);
    assert_eq!(
        query::by_token(&sm.kv, &t0.hash(), T0 + 2_500)
            .unwrap()
            .map(|_| ()),
        Err(SessionError::TokenReused)
    );
    assert!(matches!(
        sm.rotate(T0 + 2_500, &t0),
        Err(Err(SessionError::TokenReused))
    ));
}

#[test]
fn the_rotation_interval_also_counts_from_the_late_commit() {
    let mut sm = Sm::with_policy(policy());
    let (t0, t1, rotated) = rotated_then_cut_off(&mut sm);
    leader_committed(&mut sm, T0 + 2_000, rotated);
    // The tab that holds the successor rotates again at once: inside the interval, kept; so
    // the other tab's token stays one generation back, inside its window.
    let (kept, _) = sm.rotate(T0 + 2_100, &t1).unwrap();
    assert_eq!(kept, t1);
    assert_eq!(
        query::by_token(&sm.kv, &t0.hash(), T0 + 2_900)
            .unwrap()
            .map(|l| l.superseded),
        Ok(true)
    );
    // After the interval it rotates.
    let (t2, _) = sm.rotate(T0 + 3_000, &t1).unwrap();
    assert_ne!(t2, t1);
}

#[test]
fn a_later_commit_of_the_same_entries_does_not_move_the_window_again() {
    let mut sm = Sm::with_policy(policy());
    let (t0, _, rotated) = rotated_then_cut_off(&mut sm);
    leader_committed(&mut sm, T0 + 2_000, rotated);
    // A leader after that one, which had not heard of the commit either.
    leader_committed(&mut sm, T0 + 9_000, rotated);
    assert_eq!(
        query::by_token(&sm.kv, &t0.hash(), T0 + 9_500)
            .unwrap()
            .map(|_| ()),
        Err(SessionError::TokenReused),
        "visible since the first late commit"
    );
}

#[test]
fn an_empty_range_records_nothing_and_only_the_newest_are_kept() {
    let mut sm = Sm::with_policy(policy());
    // `from_index` at or past the entry itself: nothing was committed late.
    let next = sm.index + 1;
    leader_committed(&mut sm, T0, next);
    leader_committed(&mut sm, T0, next + 5);
    assert_eq!(late_commits(&sm), vec![]);
    for i in 0..(LateCommit::KEPT as u64 + 8) {
        leader_committed(&mut sm, T0 + i, 1);
    }
    let kept = late_commits(&sm);
    assert_eq!(kept.len(), LateCommit::KEPT);
    assert_eq!(
        kept.first().map(|l| l.at),
        Some(T0 + 8),
        "the oldest went first"
    );
    assert_eq!(kept.last().map(|l| l.to_index), Some(sm.index));
}

fn late_commits(sm: &Sm) -> Vec<LateCommit> {
    match sm.kv.get(Cf::Meta, keys::LATE_COMMITS).unwrap() {
        Some(b) => decode(&b).unwrap(),
        None => vec![],
    }
}
