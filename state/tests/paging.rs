//! Paged listing of a user's sessions: the pages, concatenated, are exactly the whole list,
//! whatever the page size and byte budget, and each page keeps to both.

mod common;

use common::Sm;
use proptest::prelude::*;
use sessiond_state::query::{self, page_bytes};

const T0: u64 = 1_000_000;

/// A user with `n` sessions created one millisecond apart, every third with a 10 ms idle
/// timeout (expired by `T0 + n + 100`); another user's sessions interleaved.
fn populated(n: usize) -> Sm {
    let mut sm = Sm::new();
    for i in 0..n {
        let idle = (i % 3 == 0).then_some(10);
        let (c, _, _) = sm.create_cmd("u", idle);
        sm.one(T0 + i as u64, c).expect("create");
        let (c, _, _) = sm.create_cmd("other", None);
        sm.one(T0 + i as u64, c).expect("create");
    }
    sm
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn pages_concatenate_to_the_whole_list(
        n in 0usize..40,
        max_count in 1usize..12,
        max_bytes in 1usize..2_000,
    ) {
        let sm = populated(n);
        let now = T0 + n as u64 + 100;
        let whole = query::list_user(&sm.kv, "u", now).expect("list");
        let mut paged = Vec::new();
        let mut after = None;
        for _ in 0..=n + 1 {
            let page = query::list_user_page(&sm.kv, "u", now, after, max_count, max_bytes)
                .expect("page");
            prop_assert!(page.sessions.len() <= max_count);
            let bytes: usize = page.sessions.iter().map(page_bytes).sum();
            prop_assert!(page.sessions.len() <= 1 || bytes <= max_bytes);
            paged.extend(page.sessions);
            match page.next {
                Some(c) => after = Some(c),
                None => break,
            }
        }
        prop_assert_eq!(paged, whole);
    }
}

#[test]
fn a_page_stops_at_its_count_and_names_where_the_next_starts() {
    let sm = populated(9);
    let now = T0 + 200;
    let first = query::list_user_page(&sm.kv, "u", now, None, 4, usize::MAX).expect("page");
    // 6 of 9 live (every third expired): 4, then 2.
    assert_eq!(first.sessions.len(), 4);
    let next = first.next.expect("more follow");
    assert_eq!(next, (first.sessions[3].created_at, first.sessions[3].id));
    let second = query::list_user_page(&sm.kv, "u", now, Some(next), 4, usize::MAX).expect("page");
    assert_eq!(second.sessions.len(), 2);
    assert_eq!(second.next, None);
    assert!(query::list_user_page(&sm.kv, "nobody", now, None, 4, 100)
        .expect("page")
        .sessions
        .is_empty());
}
