//! The store against a real 3-node cluster (TLS and authentication on): actix-session's
//! middleware over it through a whole login/use/renew/logout workflow, and the races a
//! key-value store gets wrong — a logout racing saves, a cookie whose token was rotated
//! elsewhere.

use actix_session::config::PersistentSession;
use actix_session::storage::{SessionKey, SessionStore};
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::{time::Duration, Cookie, Key};
use actix_web::{test, web, App, HttpResponse};
use sessiond_actix::SessiondStore;
use sessiond_client::{Client, Consistency};
use sessiond_tests::TestCluster;
use std::collections::HashMap;

fn client(c: &TestCluster) -> Client {
    let endpoints: Vec<String> = c.nodes.iter().map(|n| n.client_addr.clone()).collect();
    c.client_builder(endpoints).build().expect("client")
}

async fn sessions_of(client: &Client, user: &str) -> usize {
    client
        .list_user_sessions(user, Consistency::Linearizable)
        .await
        .expect("list")
        .len()
}

async fn index(session: Session) -> actix_web::Result<HttpResponse> {
    let n: Option<u32> = session.get("counter")?;
    let user: Option<String> = session.get("user_id")?;
    Ok(HttpResponse::Ok().body(match (n, user) {
        (Some(n), Some(u)) => format!("{u} {n}"),
        (Some(n), None) => format!("anonymous {n}"),
        _ => "none".to_string(),
    }))
}

async fn count(session: Session) -> actix_web::Result<HttpResponse> {
    let n: u32 = session.get("counter")?.unwrap_or(0) + 1;
    session.insert("counter", n)?;
    Ok(HttpResponse::Ok().body(n.to_string()))
}

async fn login(user: web::Path<String>, session: Session) -> actix_web::Result<HttpResponse> {
    session.renew();
    session.insert("user_id", user.into_inner())?;
    session.insert("counter", 0u32)?;
    Ok(HttpResponse::Ok().finish())
}

async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().finish()
}

/// The session cookie a response sets, if any.
fn cookie_of(r: &actix_web::dev::ServiceResponse) -> Option<Cookie<'static>> {
    r.response()
        .cookies()
        .find(|c| c.name() == "id")
        .map(|c| c.into_owned())
}

async fn body(r: actix_web::dev::ServiceResponse) -> String {
    String::from_utf8(test::read_body(r).await.to_vec()).expect("utf-8")
}

#[actix_web::test]
async fn the_middleware_logs_in_counts_renews_and_logs_out() {
    let c = TestCluster::start3().await;
    let client = client(&c);
    let store = SessiondStore::new(client.clone());
    let app = test::init_service(
        App::new()
            .wrap(
                SessionMiddleware::builder(store, Key::generate())
                    .cookie_secure(false)
                    .session_lifecycle(PersistentSession::default().session_ttl(Duration::hours(1)))
                    .build(),
            )
            .route("/", web::get().to(index))
            .route("/count", web::post().to(count))
            .route("/login/{user}", web::post().to(login))
            .route("/logout", web::post().to(logout)),
    )
    .await;
    let get = |cookie: Option<&Cookie<'static>>| {
        let mut r = test::TestRequest::get().uri("/");
        if let Some(c) = cookie {
            r = r.cookie(c.clone());
        }
        r.to_request()
    };
    let post = |uri: &str, cookie: Option<&Cookie<'static>>| {
        let mut r = test::TestRequest::post().uri(uri);
        if let Some(c) = cookie {
            r = r.cookie(c.clone());
        }
        r.to_request()
    };

    // Nothing in the session: nothing stored, no cookie.
    let r = test::call_service(&app, get(None)).await;
    assert!(cookie_of(&r).is_none());
    assert_eq!(body(r).await, "none");

    // Login: a session under the user, its idle timeout the TTL.
    let r = test::call_service(&app, post("/login/ann", None)).await;
    assert!(r.status().is_success());
    let first = cookie_of(&r).expect("a session cookie");
    assert_eq!(first.max_age(), Some(Duration::hours(1)));
    let listed = client
        .list_user_sessions("ann", Consistency::Linearizable)
        .await
        .expect("list");
    assert_eq!(listed.len(), 1, "created under the user's id");
    assert_eq!(listed[0].idle_timeout_ms, 3_600_000);

    for want in 1..=3 {
        let r = test::call_service(&app, post("/count", Some(&first))).await;
        assert_eq!(body(r).await, want.to_string());
    }
    let r = test::call_service(&app, get(Some(&first))).await;
    assert_eq!(body(r).await, "ann 3");

    // Renew (login again): a new session; the old cookie opens nothing any more.
    let r = test::call_service(&app, post("/login/ann", Some(&first))).await;
    let second = cookie_of(&r).expect("a new cookie");
    assert_ne!(second.value(), first.value());
    assert_eq!(
        sessions_of(&client, "ann").await,
        1,
        "the old session was revoked"
    );
    let r = test::call_service(&app, get(Some(&first))).await;
    assert_eq!(body(r).await, "none");
    let r = test::call_service(&app, get(Some(&second))).await;
    assert_eq!(body(r).await, "ann 0");

    // Logout: the cookie is cleared and the session is gone for good.
    let r = test::call_service(&app, post("/logout", Some(&second))).await;
    let cleared = cookie_of(&r).expect("a removal cookie");
    assert_eq!(cleared.max_age(), Some(Duration::ZERO));
    assert_eq!(sessions_of(&client, "ann").await, 0);
    let r = test::call_service(&app, get(Some(&second))).await;
    assert_eq!(body(r).await, "none");

    // A late request with the logged-out cookie that changes the state starts over: a new,
    // anonymous session, not the old one with its counter.
    let r = test::call_service(&app, post("/count", Some(&second))).await;
    let fresh = cookie_of(&r).expect("a fresh session's cookie");
    assert_eq!(body(r).await, "1");
    assert_ne!(fresh.value(), second.value());
    assert_eq!(
        sessions_of(&client, "ann").await,
        0,
        "ann was not logged back in"
    );
}

/// Another value of the same key (`SessionKey` is not `Clone`).
fn again_key(k: &SessionKey) -> SessionKey {
    SessionKey::try_from(k.as_ref().to_owned()).expect("a key")
}

fn state(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::to_string(v).expect("json")))
        .collect()
}

#[actix_web::test]
async fn saves_racing_a_logout_never_bring_the_session_back() {
    let c = TestCluster::start3().await;
    let client = client(&c);
    let store = SessiondStore::new(client.clone());
    let ttl = Duration::seconds(2);
    for round in 0..5 {
        let user = format!("zed{round}");
        let key = store
            .save(state(&[("user_id", &user), ("n", "0")]), &ttl)
            .await
            .expect("save");
        let v = client
            .get_session(key.as_ref(), Consistency::Linearizable, false)
            .await
            .expect("saved");
        assert_eq!(
            v.session.idle_timeout_ms, 2_000,
            "the TTL is the idle timeout"
        );
        let token = key.as_ref().to_owned();
        let saves = (0..16).map(|i| {
            let store = store.clone();
            let token = token.clone();
            async move {
                let key = SessionKey::try_from(token).expect("key");
                store
                    .update(key, state(&[("n", &i.to_string())]), &ttl)
                    .await
                    .map(|k| k.as_ref().to_owned())
            }
        });
        let logout = store.delete(&key);
        let (saved, logged_out) =
            futures::future::join(futures::future::join_all(saves), logout).await;
        logged_out.expect("logout");
        for s in saved {
            let k = s.expect("a save racing a logout is dropped, not an error");
            assert_eq!(k, token, "no save moved the cookie to another session");
        }
        assert_eq!(store.load(&key).await.expect("load"), None);
        assert_eq!(sessions_of(&client, &user).await, 0, "round {round}");
        // And once more after the logout, as a slow request would.
        let k = store
            .update(again_key(&key), state(&[("n", "99")]), &ttl)
            .await
            .expect("dropped");
        assert_eq!(k.as_ref(), token);
        assert_eq!(store.load(&key).await.expect("load"), None);
        assert_eq!(sessions_of(&client, &user).await, 0);
    }
}

#[actix_web::test]
async fn a_cookie_rotated_elsewhere_moves_to_the_shared_successor() {
    let c = TestCluster::start3().await;
    let client = client(&c);
    let store = SessiondStore::new(client.clone());
    let ttl = Duration::hours(1);
    let key = store
        .save(state(&[("user_id", "yan"), ("cart", "0")]), &ttl)
        .await
        .expect("save");
    // The app rotated the token through the client (say at a privilege change), in a request
    // whose answer another tab has not seen.
    let successor = client
        .rotate_token(key.as_ref())
        .await
        .expect("rotate")
        .token;
    // The other tab still holds the old token: it loads (grace window) and its save lands on
    // the session, moving its cookie to the same successor.
    let loaded = store.load(&key).await.expect("load").expect("in grace");
    assert_eq!(loaded.get("cart").map(String::as_str), Some("\"0\""));
    let moved = store
        .update(
            again_key(&key),
            state(&[("user_id", "yan"), ("cart", "1")]),
            &ttl,
        )
        .await
        .expect("update");
    assert_eq!(moved.as_ref(), successor);
    let again = store
        .update(
            again_key(&key),
            state(&[("user_id", "yan"), ("cart", "2")]),
            &ttl,
        )
        .await
        .expect("a third tab");
    assert_eq!(again.as_ref(), successor, "every holder gets one successor");
    let now = store.load(&moved).await.expect("load").expect("live");
    assert_eq!(now.get("cart").map(String::as_str), Some("\"2\""));
    assert_eq!(sessions_of(&client, "yan").await, 1, "no second session");
}

/// The cases a store for actix-session must get right, called directly as the middleware calls
/// them: unknown and malformed keys load nothing, state round-trips unchanged, data the store
/// cannot read is a deserialization error (not a logout), an idle TTL expires the session and
/// `update_ttl` slides it, and a save after the session ended stays dropped.
#[actix_web::test]
async fn the_store_keeps_the_contract_actix_session_expects() {
    use actix_session::storage::LoadError;
    let c = TestCluster::start3().await;
    let client = client(&c);
    let store = SessiondStore::new(client.clone());
    let hour = Duration::hours(1);

    // Keys that name no session: a cookie that is no token, and a token of a deleted session.
    let junk = SessionKey::try_from("not-a-sessiond-token".to_owned()).expect("key");
    assert_eq!(store.load(&junk).await.expect("junk loads nothing"), None);
    let gone = store
        .save(state(&[("user_id", "uma")]), &hour)
        .await
        .expect("save");
    store.delete(&gone).await.expect("delete");
    store
        .delete(&gone)
        .await
        .expect("a second delete is no error");
    assert_eq!(
        store.load(&gone).await.expect("deleted loads nothing"),
        None
    );

    // Round trip: every value as actix-session wrote it (JSON text of any shape).
    let mut written = state(&[("user_id", "uma"), ("name", "Ü \"quoted\" ✓")]);
    written.insert("n".into(), "42".into());
    written.insert("list".into(), "[1,{\"a\":null}]".into());
    let k = store.save(written.clone(), &hour).await.expect("save");
    assert_eq!(store.load(&k).await.expect("load"), Some(written.clone()));
    written.insert("n".into(), "43".into());
    written.remove("list");
    let k2 = store
        .update(again_key(&k), written.clone(), &hour)
        .await
        .expect("update");
    assert_eq!(k2.as_ref(), k.as_ref(), "an update keeps the key");
    assert_eq!(store.load(&k).await.expect("load"), Some(written));

    // A session another application wrote with data that is not a JSON map.
    let foreign = client
        .create_session(sessiond_client::NewSession {
            user_id: "uma".into(),
            data: vec![0xff, 0x00, 0x01],
            ..Default::default()
        })
        .await
        .expect("create");
    let fk = SessionKey::try_from(foreign.token).expect("key");
    assert!(matches!(
        store.load(&fk).await,
        Err(LoadError::Deserialization(_))
    ));

    // The TTL is an idle timeout: untouched, the session expires; touched, it lives on.
    let ttl = Duration::seconds(2);
    let idle = store
        .save(state(&[("user_id", "uma")]), &ttl)
        .await
        .expect("save");
    let kept = store
        .save(state(&[("user_id", "uma")]), &ttl)
        .await
        .expect("save");
    for _ in 0..8 {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        store.update_ttl(&kept, &ttl).await.expect("update_ttl");
    }
    assert!(
        store.load(&kept).await.expect("load").is_some(),
        "touched every 0.5 s for 4 s, a 2 s idle session is alive"
    );
    assert_eq!(store.load(&idle).await.expect("load"), None, "expired");
    // Saves and touches of the expired session change nothing and are no errors.
    store
        .update_ttl(&idle, &ttl)
        .await
        .expect("touch of an expired session");
    let k3 = store
        .update(again_key(&idle), state(&[("n", "1")]), &ttl)
        .await
        .expect("update of an expired session");
    assert_eq!(k3.as_ref(), idle.as_ref());
    assert_eq!(
        store.load(&idle).await.expect("load"),
        None,
        "not brought back"
    );
}
