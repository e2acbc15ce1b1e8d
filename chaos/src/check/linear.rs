//! Linearizability of one session's sub-history: the Wing & Gong search with Lowe's
//! memoisation (a linearized set plus a model state already explored is never explored
//! again), extended with nondeterministic model steps and optional `info` operations.
//!
//! Operations are entries in a doubly linked list of call and return events in time order
//! (calls before returns at equal times, so touching intervals count as concurrent). A call
//! may be linearized when it comes before every pending return; reaching a return means that
//! op had to be linearized already, so the search backtracks. `info` ops have no return
//! (they may take effect at any time after their call) and need not be linearized at all.

use super::model::{fit, step, Ctx, MOp, State};
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

/// How the search ended.
#[derive(Debug)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists. `blocked`: the op whose completion could not be reached
    /// (index into the ops), at the deepest point the search got to; `prefix`: the ops
    /// linearized there, in order; `state`: the model state after them.
    Violation {
        blocked: Option<usize>,
        prefix: Vec<usize>,
        state: State,
    },
    /// The budget of explored states ran out.
    Unknown {
        explored: u64,
    },
}

struct Frame {
    op: usize,
    prev_state: State,
    prev_clock: u64,
    alts: Vec<State>,
}

/// A 128-bit digest of (linearized set, state): the memo holds digests, not states, so a
/// budget of millions of states stays within tens of megabytes.
fn digest(bits: &[u64], s: &State) -> u128 {
    let mut h1 = std::collections::hash_map::DefaultHasher::new();
    bits.hash(&mut h1);
    s.hash(&mut h1);
    let mut h2 = std::collections::hash_map::DefaultHasher::new();
    0x9e37_79b9_7f4a_7c15u64.hash(&mut h2);
    s.hash(&mut h2);
    bits.hash(&mut h2);
    ((h1.finish() as u128) << 64) | h2.finish() as u128
}

/// Search for a linearization of `ops` from `init`, exploring at most `budget` states.
pub fn search(ctx: &Ctx, ops: &[MOp], init: State, budget: u64) -> Verdict {
    let n = ops.len();
    // Entries: (time, is_return, op). Calls sort before returns at equal times.
    let mut entries: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        entries.push((op.invoke, false, i));
        if op.definite() {
            entries.push((op.complete.max(op.invoke), true, i));
        }
    }
    entries.sort();
    let m = entries.len();
    let head = m;
    let mut next: Vec<usize> = (0..=m).map(|i| if i == m { 0 } else { i + 1 }).collect();
    let mut prev: Vec<usize> = (0..=m).map(|i| if i == 0 { m } else { i - 1 }).collect();
    if m == 0 {
        next[head] = head;
        prev[head] = head;
    } else {
        next[m - 1] = head;
        prev[head] = m - 1;
    }
    let mut call_of = vec![0usize; n];
    let mut ret_of: Vec<Option<usize>> = vec![None; n];
    for (e, &(_, is_ret, i)) in entries.iter().enumerate() {
        if is_ret {
            ret_of[i] = Some(e);
        } else {
            call_of[i] = e;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, q) = (prev[e], next[e]);
        next[p] = q;
        prev[q] = p;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, e: usize| {
        let (p, q) = (prev[e], next[e]);
        next[p] = e;
        prev[q] = e;
    };

    let mut remaining = ops.iter().filter(|o| o.definite()).count();
    let mut bits = vec![0u64; n.div_ceil(64).max(1)];
    let mut cache: HashSet<u128> = HashSet::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut state = init;
    let mut clock = 0u64;
    let mut entry = next[head];
    let mut answers = Vec::new();
    let mut best: Option<(usize, Option<usize>, Vec<usize>, State)> = None;

    'outer: loop {
        if remaining == 0 {
            return Verdict::Linearizable;
        }
        if entry != head && !entries[entry].1 {
            let i = entries[entry].2;
            let op = &ops[i];
            let a = op.invoke.max(clock);
            let b = op.complete.max(a);
            step(ctx, &state, op, a, b, &mut answers);
            let mut cands: Vec<State> = Vec::new();
            for (ans, st) in answers.drain(..) {
                let mut st = st;
                if !fit(op, &ans, &mut st) {
                    continue;
                }
                // An info op that changes nothing is no better than leaving it out.
                if !op.definite() && st == state {
                    continue;
                }
                if !cands.contains(&st) {
                    cands.push(st);
                }
            }
            bits[i / 64] |= 1 << (i % 64);
            let mut chosen = None;
            while !cands.is_empty() {
                let st = cands.remove(0);
                if cache.insert(digest(&bits, &st)) {
                    chosen = Some(st);
                    break;
                }
            }
            if cache.len() as u64 > budget {
                return Verdict::Unknown {
                    explored: cache.len() as u64,
                };
            }
            match chosen {
                Some(st) => {
                    let prev_state = std::mem::replace(&mut state, st);
                    stack.push(Frame {
                        op: i,
                        prev_state,
                        prev_clock: clock,
                        alts: cands,
                    });
                    clock = clock.max(op.invoke);
                    unlink(&mut next, &mut prev, call_of[i]);
                    if let Some(r) = ret_of[i] {
                        unlink(&mut next, &mut prev, r);
                    }
                    if op.definite() {
                        remaining -= 1;
                    }
                    entry = next[head];
                }
                None => {
                    bits[i / 64] &= !(1 << (i % 64));
                    entry = next[entry];
                }
            }
            continue;
        }

        // A return (or the end): backtrack.
        let blocked = (entry != head).then(|| entries[entry].2);
        if best.as_ref().is_none_or(|(d, ..)| stack.len() > *d) {
            best = Some((
                stack.len(),
                blocked,
                stack.iter().map(|f| f.op).collect(),
                state.clone(),
            ));
        }
        {
            let Some(mut f) = stack.pop() else {
                let (_, blocked, prefix, state) = best.unwrap_or((0, blocked, Vec::new(), state));
                return Verdict::Violation {
                    blocked,
                    prefix,
                    state,
                };
            };
            while let Some(alt) = f.alts.pop() {
                if cache.insert(digest(&bits, &alt)) {
                    if cache.len() as u64 > budget {
                        return Verdict::Unknown {
                            explored: cache.len() as u64,
                        };
                    }
                    state = alt;
                    stack.push(f);
                    entry = next[head];
                    continue 'outer;
                }
            }
            state = f.prev_state;
            clock = f.prev_clock;
            let i = f.op;
            if let Some(r) = ret_of[i] {
                relink(&mut next, &mut prev, r);
            }
            relink(&mut next, &mut prev, call_of[i]);
            bits[i / 64] &= !(1 << (i % 64));
            if ops[i].definite() {
                remaining += 1;
            }
            entry = next[call_of[i]];
            continue 'outer;
        }
    }
}
