//! The session layer against a real 3-node cluster, driven over HTTP by browsers with cookie
//! jars.

mod common;

use axum::http::{header, Method, StatusCode};
use common::{config, start, Browser, Cart, FAST_ROTATION};
use sessiond_client::{Consistency, Error as StoreError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The store's view of a token: a linearizable read that does not touch.
async fn store_get(
    app: &common::App,
    token: &str,
) -> Result<sessiond_client::Validated, StoreError> {
    app.store
        .get_session(token, Consistency::Linearizable, false)
        .await
}

async fn stored_cart(app: &common::App, token: &str) -> (Option<Cart>, u64) {
    let s = store_get(app, token).await.expect("live session").session;
    let cart = (!s.data.is_empty()).then(|| serde_json::from_slice(&s.data).expect("cart JSON"));
    (cart, s.version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn login_whoami_logout() {
    let app = start(&[], config()).await;
    let b = Browser::new(app.addr);

    let r = b.get("/whoami").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.set_cookies.is_empty(),
        "no cookie, nothing to clear: {r:?}"
    );

    let login = b.post("/login?user=alice").await;
    assert_eq!(login.status, StatusCode::OK);
    let t0 = login.session_cookie().expect("login sets the cookie");
    assert!(t0.starts_with("sdt1_"), "the cookie holds a store token");
    let attrs = login.set_cookies[0].clone();
    for want in ["Path=/", "HttpOnly", "SameSite=Lax"] {
        assert!(attrs.contains(want), "{want} in {attrs}");
    }
    assert!(
        !attrs.contains("Secure"),
        "Secure is off in this config: {attrs}"
    );
    let max_age: u64 = attrs
        .split("; ")
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("Max-Age")
        .parse()
        .expect("Max-Age is a number");
    let record = store_get(&app, &t0).await.expect("session exists").session;
    let absolute_s = record
        .absolute_expires_at_ms
        .saturating_sub(record.created_at_ms)
        / 1000;
    assert!(
        max_age > 0 && max_age <= absolute_s + 1 && max_age + 60 >= absolute_s,
        "Max-Age {max_age} follows the absolute deadline ({absolute_s} s)"
    );
    assert_eq!(
        login
            .headers
            .get(header::CACHE_CONTROL)
            .map(|v| v.as_bytes()),
        Some(&b"no-store"[..]),
        "an answer carrying a token is not cached"
    );
    assert_eq!(record.user_id, "alice");

    let r = b.get("/whoami").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "alice"));
    assert!(
        r.set_cookies.is_empty(),
        "an unchanged token is not sent again"
    );
    let r = b.get("/debug").await;
    assert!(
        r.body.contains(&record.id) && !r.body.contains(&t0),
        "{}",
        r.body
    );

    let r = b.post("/logout").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.clears_cookie(), "logout clears the cookie: {r:?}");
    assert_eq!(b.cookie(), None);
    match store_get(&app, &t0).await {
        Err(StoreError::Revoked { reason }) => assert_eq!(reason, "logout"),
        other => panic!("the session is revoked after logout: {other:?}"),
    }
    assert_eq!(b.get("/whoami").await.status, StatusCode::UNAUTHORIZED);

    // A browser that kept the old cookie is anonymous, and the cookie is cleared.
    b.set_cookie(&t0);
    let r = b.get("/whoami").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.clears_cookie(), "{r:?}");
    // So is one with a cookie that is no token at all (never sent to the store).
    b.set_cookie("sdt1_not-a-token");
    let r = b.get("/whoami").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.clears_cookie(), "{r:?}");

    // Logout everywhere: every browser of the user, not another user's.
    let (laptop, phone, other) = (
        Browser::new(app.addr),
        Browser::new(app.addr),
        Browser::new(app.addr),
    );
    laptop.login("bob").await;
    phone.login("bob").await;
    other.login("carol").await;
    let r = laptop.post("/logout-everywhere").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "2"));
    assert!(r.clears_cookie());
    let r = phone.get("/whoami").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.clears_cookie(), "{r:?}");
    assert_eq!(other.get("/whoami").await.body, "carol");
    let left = app
        .store
        .list_user_sessions("bob", Consistency::Linearizable)
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relogin_replaces_the_session_and_keeps_the_new_cookie() {
    let app = start(&[], config()).await;
    let b = Browser::new(app.addr);
    let t0 = b.login("dora").await;
    assert_eq!(b.post("/cart/set?items=5").await.status, StatusCode::OK);

    // Logging in again (same user): a new session, the data comes along, the old one ends.
    let t1 = b.login("dora").await;
    assert_ne!(t0, t1);
    assert_eq!(b.get("/cart").await.body, "5");
    match store_get(&app, &t0).await {
        Err(StoreError::Revoked { reason }) => assert_eq!(reason, "relogin"),
        other => panic!("the replaced session is revoked: {other:?}"),
    }
    // A tab whose request still carries the old token is anonymous, but must not clear the
    // cookie: the browser holds the new session's by now.
    let late = Browser::new(app.addr);
    late.set_cookie(&t0);
    let r = late.get("/whoami").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.set_cookies.is_empty(), "{r:?}");
    assert_eq!(b.get("/whoami").await.body, "dora");

    // Another user logging in on this browser starts without the previous user's data.
    let t2 = b.login("eve").await;
    assert_eq!(b.get("/cart").await.body, "none");
    assert!(matches!(
        store_get(&app, &t1).await,
        Err(StoreError::Revoked { .. })
    ));
    assert_eq!(store_get(&app, &t2).await.unwrap().session.user_id, "eve");
}

/// Several tabs share one cookie jar and keep requesting while the schedule rotates the token
/// under them: nobody is logged out, and they end on one current token of one session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tabs_racing_rotations_stay_logged_in_and_converge() {
    let app = start(
        FAST_ROTATION,
        config().rotate_after(Some(Duration::from_millis(1000))),
    )
    .await;
    let b = Browser::new(app.addr);
    let t0 = b.login("frank").await;
    let until = Instant::now() + Duration::from_secs(8);
    // Rounds in which every tab sends at once, each request in flight for a different few
    // milliseconds: due rotations race each other, and requests carrying a token arrive
    // after another tab's request rotated it.
    let tabs_n = 4u64;
    let round = Arc::new(tokio::sync::Barrier::new(tabs_n as usize));
    let mut tabs = Vec::new();
    for n in 0..tabs_n {
        let tab = b.tab();
        let round = round.clone();
        tabs.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut failures = Vec::new();
            let mut i = 0u64;
            loop {
                round.wait().await;
                if Instant::now() >= until {
                    break;
                }
                let lag = Duration::from_millis((n * 5 + i * 3) % 20);
                let r = tab.go_late(Method::GET, "/whoami", lag).await;
                if r.status != StatusCode::OK || r.body != "frank" || r.clears_cookie() {
                    failures.push(format!("tab {n}: {r:?}"));
                }
                if let Some(t) = r.session_cookie() {
                    seen.push(t);
                }
                i += 1;
            }
            (seen, failures, i)
        }));
    }
    let mut tokens = HashSet::from([t0]);
    let mut requests = 0;
    for t in tabs {
        let (seen, failures, count) = t.await.expect("tab task");
        assert!(failures.is_empty(), "{failures:#?}");
        tokens.extend(seen);
        requests += count;
    }
    // One more request settles a token that was superseded at the very end.
    let r = b.get("/whoami").await;
    assert_eq!(r.status, StatusCode::OK);
    let last = b.cookie().expect("still logged in");
    let v = store_get(&app, &last)
        .await
        .expect("the jar's token is valid");
    assert!(!v.superseded, "the jar ends on the current token");
    assert!(
        v.session.generation >= 3,
        "the schedule rotated several times ({} generations, {requests} requests)",
        v.session.generation
    );
    // The settling request may itself have rotated: its token counts too. Racing rotations
    // of one token that forked would show more tokens than generations; a generation whose
    // token no response happened to carry (rotated again within one request) shows fewer.
    tokens.insert(last.clone());
    assert!(
        tokens.len() as u64 <= v.session.generation + 1,
        "every racing rotation of a token got the same successor: {} tokens seen for {} generations",
        tokens.len(),
        v.session.generation
    );
    let sessions = app
        .store
        .list_user_sessions("frank", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(sessions.len(), 1, "one session throughout");
}

/// An older `Set-Cookie` reaches the jar after a newer one: the older token is still accepted
/// within the grace window, and the next answer moves the browser back to the current one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_old_cookie_applied_late_still_works_and_converges() {
    let app = start(
        &[
            "--grace-window-ms",
            "5000",
            "--rotation-min-interval-ms",
            "5000",
        ],
        config().rotate_after(None),
    )
    .await;
    let b = Browser::new(app.addr);
    let login = b.send(Method::POST, "/login?user=gus").await;
    b.apply(&login);
    let t0 = login.session_cookie().expect("token");
    let rotation = b.send(Method::POST, "/rotate").await;
    assert_eq!(rotation.body, "rotated:true");
    let t1 = rotation.session_cookie().expect("successor");
    assert_ne!(t0, t1);

    // The newer answer arrives first, the login's after it.
    b.apply(&rotation);
    b.apply(&login);
    assert_eq!(b.cookie().as_deref(), Some(t0.as_str()));

    let r = b.get("/whoami").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "gus"));
    assert_eq!(
        r.session_cookie().as_deref(),
        Some(t1.as_str()),
        "the superseded token is moved to the shared successor"
    );
    let r = b.get("/whoami").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.set_cookies.is_empty(), "converged: {r:?}");
    let v = store_get(&app, &t1).await.unwrap();
    assert!(!v.superseded);
    assert_eq!(v.session.generation, 1, "no extra rotation");
}

/// Saves in flight when the user logs out: none of them brings the session back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logout_racing_saves_never_resurrects_the_session() {
    let app = start(&[], config()).await;
    let b = Browser::new(app.addr);
    let t0 = b.login("hana").await;
    assert_eq!(b.post("/cart/set?items=1").await.status, StatusCode::OK);

    let mut saves = Vec::new();
    for n in 0..6u64 {
        let tab = b.tab();
        saves.push(tokio::spawn(async move {
            // Staggered: some save before the logout, most after it.
            tokio::time::sleep(Duration::from_millis(n * 30)).await;
            tab.post(&format!("/cart/add?delay_ms={}", 100 + n * 50))
                .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    let out = b.post("/logout").await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(out.clears_cookie());
    for s in saves {
        let r = s.await.expect("save task");
        assert!(
            r.status == StatusCode::OK || r.status == StatusCode::UNAUTHORIZED,
            "{r:?}"
        );
        let set = r.session_cookie();
        assert!(
            set.is_none() || set.as_deref() == Some(""),
            "a save never hands out a token: {r:?}"
        );
    }
    // Whatever order the cookies arrived in, the session is gone for good.
    match store_get(&app, &t0).await {
        Err(StoreError::Revoked { reason }) => assert_eq!(reason, "logout"),
        other => panic!("revoked: {other:?}"),
    }
    b.set_cookie(&t0);
    let r = b.post("/cart/add").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.clears_cookie());
    assert_eq!(b.get("/whoami").await.status, StatusCode::UNAUTHORIZED);
    let left = app
        .store
        .list_user_sessions("hana", Consistency::Linearizable)
        .await
        .unwrap();
    assert!(left.is_empty(), "nothing re-created: {left:?}");
}

/// A response that rotated the token never reaches the browser; the retry, still holding the
/// old token, gets the very same successor (on demand and by schedule).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_rotation_response_retried_gets_the_same_token() {
    let app = start(
        &[
            "--grace-window-ms",
            "3000",
            "--rotation-min-interval-ms",
            "3000",
        ],
        config().rotate_after(Some(Duration::from_millis(1000))),
    )
    .await;
    let b = Browser::new(app.addr);
    let t0 = b.login("ivan").await;

    let lost = b.send(Method::POST, "/rotate").await;
    assert_eq!(lost.body, "rotated:true");
    let t1 = lost.session_cookie().expect("successor");
    assert_eq!(
        b.cookie().as_deref(),
        Some(t0.as_str()),
        "the answer was lost"
    );
    let retry = b.post("/rotate").await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(retry.session_cookie().as_deref(), Some(t1.as_str()));

    // By schedule: generation 1 is due 2 s after creation, and the store rotates again 3 s
    // after the last rotation.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let lost = b.send(Method::GET, "/whoami").await;
    assert_eq!(lost.status, StatusCode::OK);
    let t2 = lost.session_cookie().expect("a scheduled rotation");
    assert_ne!(t2, t1);
    let retry = b.get("/whoami").await;
    assert_eq!(retry.status, StatusCode::OK);
    assert_eq!(retry.session_cookie().as_deref(), Some(t2.as_str()));
    let v = store_get(&app, &t2).await.unwrap();
    assert_eq!(v.session.generation, 2);
    assert!(!v.superseded);
}

/// The documented conflict policy of the compare-and-set write-back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_back_conflicts_follow_the_policy() {
    // No touches and no schedule: only the writes of this test move the version.
    let app = start(&[], config().rotate_after(None).touch(false)).await;
    let b = Browser::new(app.addr);
    let t = b.login("jade").await;

    // Only changes are written.
    let (_, v0) = stored_cart(&app, &t).await;
    assert_eq!(b.get("/cart").await.body, "none");
    assert_eq!(stored_cart(&app, &t).await.1, v0, "a read writes nothing");
    b.post("/cart/set?items=3").await;
    assert_eq!(
        stored_cart(&app, &t).await,
        (Some(Cart { items: 3 }), v0 + 1)
    );
    b.post("/cart/set?items=3").await;
    assert_eq!(
        stored_cart(&app, &t).await.1,
        v0 + 1,
        "same value: no write"
    );

    // A whole-value set that lost to a concurrent write is written again: the last whole
    // value wins.
    let r = b.post("/cart/set-raced?items=42").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(stored_cart(&app, &t).await.0, Some(Cart { items: 42 }));

    // A modification that lost is made again on the value read back: nothing is lost.
    let r = b.post("/cart/add-raced?inject=1").await;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "runs:2"));
    assert_eq!(stored_cart(&app, &t).await.0, Some(Cart { items: 11 }));

    // Losing twice in a row is a conflict, and the concurrent write stands.
    let r = b.post("/cart/add-raced?inject=2").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{r:?}");
    assert_eq!(stored_cart(&app, &t).await.0, Some(Cart { items: 20 }));

    // Two tabs adding at once, both saving from the same version read: both count.
    let (x, y) = (b.tab(), b.tab());
    let (rx, ry) = tokio::join!(
        x.post("/cart/add?delay_ms=300"),
        y.post("/cart/add?delay_ms=300")
    );
    assert_eq!((rx.status, ry.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(stored_cart(&app, &t).await.0, Some(Cart { items: 22 }));
}

/// A store outage is a 503 and leaves the cookie alone; the same cookie works once the store
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unavailable_store_is_503_not_a_logout() {
    let mut app = start(&[], config()).await;
    let b = Browser::new(app.addr);
    let t = b.login("kim").await;
    assert_eq!(b.get("/whoami").await.body, "kim");

    // Two of three nodes down: no quorum, no fresh node for STALE reads.
    app.cluster.kill(0);
    app.cluster.kill(1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = b.get("/whoami").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
    assert!(
        r.set_cookies.is_empty(),
        "an outage clears no cookie: {r:?}"
    );
    assert_eq!(b.cookie().as_deref(), Some(t.as_str()));
    assert!(!r.body.contains(&t));

    app.cluster.start(0);
    app.cluster.start(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = b.get("/whoami").await;
        assert!(r.set_cookies.is_empty(), "{r:?}");
        if r.status == StatusCode::OK {
            assert_eq!(r.body, "kim");
            break;
        }
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
        assert!(Instant::now() < deadline, "the cluster did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(b.cookie().as_deref(), Some(t.as_str()));
}

/// STALE validation is served by any node, which may not have applied the write that issued
/// a token a moment ago (a login through another app instance, a rotation by another tab):
/// such a token is still never taken for a logged-out one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_just_issued_is_valid_at_once() {
    let app = start(&[], config().rotate_after(None)).await;
    for n in 0..100 {
        let b = Browser::new(app.addr);
        let mut conn = b.connect().await;
        let created = app
            .store
            .create_session(sessiond_client::NewSession::for_user(format!("user{n}")))
            .await
            .expect("create");
        b.set_cookie(&created.token);
        let r = b.send_on(&mut conn, Method::GET, "/whoami").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "right after the create ({n}): {r:?}"
        );
        assert!(r.set_cookies.is_empty(), "{r:?}");
        let next = app
            .store
            .rotate_token(&created.token)
            .await
            .expect("rotate");
        b.set_cookie(&next.token);
        let r = b.send_on(&mut conn, Method::GET, "/whoami").await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "right after the rotation ({n}): {r:?}"
        );
        assert!(r.set_cookies.is_empty(), "{r:?}");
    }
}
