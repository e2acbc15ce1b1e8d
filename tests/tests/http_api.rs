//! The HTTP/JSON API on the client port, against a real 3-node cluster with TLS and
//! authentication on: every route, every error it can answer, and that the JSON form and the
//! gRPC form of one request get the same answer (they share one core and one request-id
//! space: a JSON call retried over gRPC with its request id is a replay).

use serde_json::{json, Value};
use sessiond_proto::v1::*;
use sessiond_tests::json_api::{b64, Answer, Auth, JsonClient};
use sessiond_tests::{code, req, rid, sessiond_certs, wait_for, TestCluster, ADMIN, WATCHER};
use std::time::Duration;

fn to_json<T: serde::Serialize>(m: &T) -> Value {
    serde_json::to_value(m).expect("messages serialise")
}

fn from_json<T: serde::de::DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not the message ({e}): {v}"))
}

/// The body of a 200 answer (panics, showing the answer, otherwise).
#[track_caller]
fn ok(a: &Answer) -> Value {
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json")
    );
    a.json()
}

/// `v` with `"replayed": true`: what a retry of a write answers.
fn replayed(mut v: Value) -> Value {
    v["replayed"] = Value::Bool(true);
    v
}

/// An error answer: its HTTP status and `ErrorDetail`.
#[track_caller]
fn err(a: &Answer) -> (u16, ErrorDetail) {
    assert_ne!(a.status, 200, "expected an error: {}", a.json());
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json"),
        "{a:?}"
    );
    (a.status, from_json(&a.json()))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_as_grpc_does() {
    let c = TestCluster::start3().await;
    let leader = c.leader().await;
    let http = JsonClient::new(
        &c.certs,
        &c.nodes[leader].client_addr,
        Auth::Certificate(ADMIN.into()),
    );
    let mut grpc = c.client(leader).await;

    // Create, written by hand as a curl user would; the gRPC retry with its request id is a
    // replay of the same answer.
    let rid1 = rid();
    let created = ok(&http
        .post(
            "/v1/sessions/create",
            &json!({"userId": "alice", "data": b64(b"hello"),
                    "attributes": {"device": "curl"}, "requestId": b64(&rid1)}),
        )
        .await);
    let token = created["token"].as_str().expect("a token").to_owned();
    let id = created["session"]["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["session"]["userId"], "alice");
    assert_eq!(created["session"]["data"], b64(b"hello"));
    assert_eq!(created["session"]["version"], "1", "uint64 as a string");
    let again = grpc
        .create_session(CreateSessionRequest {
            user_id: "alice".into(),
            data: b"hello".to_vec(),
            attributes: [("device".to_string(), "curl".to_string())].into(),
            request_id: rid1.clone(),
            ..Default::default()
        })
        .await
        .expect("replayed over gRPC")
        .into_inner();
    assert_eq!(to_json(&again), replayed(created.clone()));

    // Reads: the same answer either way.
    let get = req::get(&token);
    let by_json = ok(&http.post("/v1/sessions/get", &to_json(&get)).await);
    let by_grpc = grpc.get_session(get).await.expect("get").into_inner();
    assert_eq!(by_json, to_json(&by_grpc));
    assert!(by_json.get("superseded").is_none());

    // Rotate; the old token is then superseded, inside its grace window.
    let rotate = req::rotate(&token);
    let rotated = ok(&http.post("/v1/sessions/rotate", &to_json(&rotate)).await);
    assert_eq!(rotated["rotated"], true);
    let token2 = rotated["token"].as_str().expect("successor").to_owned();
    assert_ne!(token2, token);
    let retried = grpc.rotate_token(rotate).await.expect("retry").into_inner();
    assert_eq!(to_json(&retried), replayed(rotated.clone()));
    let old = ok(&http
        .post(
            "/v1/sessions/get",
            &json!({"token": token, "consistency": "CONSISTENCY_STALE"}),
        )
        .await);
    assert_eq!(old["superseded"], true, "{old}");

    // Update with a version check, by id.
    let update = UpdateSessionRequest {
        session: req::by_id(&id),
        expected_version: 2,
        data: Some(b"v3".to_vec()),
        attributes: Some(AttributeMap {
            entries: [("theme".to_string(), "dark".to_string())].into(),
        }),
        request_id: rid(),
    };
    let updated = ok(&http.post("/v1/sessions/update", &to_json(&update)).await);
    assert_eq!(updated["session"]["version"], "3", "{updated}");
    assert_eq!(updated["session"]["attributes"]["theme"], "dark");
    let retried = grpc
        .update_session(update)
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(to_json(&retried), replayed(updated.clone()));

    // Touch.
    let touched = ok(&http
        .post("/v1/sessions/touch", &json!({"token": token2}))
        .await);
    assert_eq!(touched["session"]["id"], id.as_str());

    // List: the same page either way.
    let list = ListUserSessionsRequest {
        user_id: "alice".into(),
        ..Default::default()
    };
    let listed = ok(&http.post("/v1/users/list", &to_json(&list)).await);
    let by_grpc = grpc
        .list_user_sessions(list)
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed, to_json(&by_grpc));
    assert_eq!(listed["sessions"].as_array().map(Vec::len), Some(1));

    // The revocation feed, from the first index: NDJSON lines as they are committed.
    let watcher = JsonClient::new(
        &c.certs,
        &c.nodes[leader].client_addr,
        Auth::Certificate(WATCHER.into()),
    );
    let mut feed = watcher
        .send(
            "/v1/revocations/watch",
            "application/json",
            r#"{"fromIndex": "1"}"#,
        )
        .await;
    assert_eq!(feed.status(), 200);
    assert_eq!(
        feed.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );

    // Revoke by token; the gRPC retry replays it.
    let revoke = RevokeSessionRequest {
        session: req::by_token(&token2),
        reason: "logout".into(),
        request_id: rid(),
    };
    let revoked = ok(&http.post("/v1/sessions/revoke", &to_json(&revoke)).await);
    assert_eq!(revoked["id"], id.as_str());
    let retried = grpc
        .revoke_session(revoke)
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(to_json(&retried), replayed(revoked.clone()));

    // Revoke a user's sessions but one.
    let mut bob = Vec::new();
    for _ in 0..3 {
        let r = ok(&http
            .post("/v1/sessions/create", &to_json(&req::create("bob", b"")))
            .await);
        bob.push(r["session"]["id"].as_str().expect("id").to_owned());
    }
    let revoke_user = RevokeUserSessionsRequest {
        user_id: "bob".into(),
        except_id: bob[0].clone(),
        reason: "password changed".into(),
        request_id: rid(),
    };
    let all_but = ok(&http.post("/v1/users/revoke", &to_json(&revoke_user)).await);
    let mut ids: Vec<&str> = all_but["revokedIds"]
        .as_array()
        .expect("ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    ids.sort();
    let mut want = vec![bob[1].as_str(), bob[2].as_str()];
    want.sort();
    assert_eq!(ids, want);
    let retried = grpc
        .revoke_user_sessions(revoke_user)
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(to_json(&retried), replayed(all_but.clone()));

    // The feed delivered the three revocations, one JSON object per line.
    let mut lines: Vec<Revocation> = Vec::new();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    use http_body_util::BodyExt;
    while lines.len() < 3 {
        let frame = tokio::time::timeout_at(deadline, feed.body_mut().frame())
            .await
            .unwrap_or_else(|_| panic!("revocations not delivered: {lines:?}"))
            .expect("feed open")
            .expect("a frame");
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(n) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=n).collect();
            let v: Value = serde_json::from_slice(&line).expect("a JSON line");
            lines.push(from_json(&v));
        }
    }
    assert_eq!(lines[0].session_id, id);
    assert_eq!(lines[0].reason, "logout");
    assert!(lines[1..]
        .iter()
        .all(|r| r.user_id == "bob" && r.reason == "password changed"));
    assert!(lines.windows(2).all(|w| w[0].index <= w[1].index));
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_are_error_details_with_the_conventional_status() {
    let c = TestCluster::builder(3)
        .flags(&[
            "--grace-window-ms",
            "300",
            "--max-sessions-per-user",
            "3",
            "--cap-policy",
            "refuse",
            // Expired sessions stay (unswept) long enough to be read as EXPIRED.
            "--expiry-interval-ms",
            "60000",
        ])
        .start()
        .await;
    let leader = c.leader().await;
    let addr = c.nodes[leader].client_addr.clone();
    let http = JsonClient::new(&c.certs, &addr, Auth::Certificate(ADMIN.into()));
    let mut grpc = c.client(leader).await;

    // Each case: the JSON answer's status and code, and the gRPC answer's code to the same
    // request.
    macro_rules! same_error {
        ($what:expr, $path:expr, $msg:expr, $call:ident, $status:expr, $code:expr) => {{
            let m = $msg;
            let (status, d) = err(&http.post($path, &to_json(&m)).await);
            assert_eq!((status, d.code()), ($status, $code), "{}: {d:?}", $what);
            let s = grpc.$call(m).await.expect_err($what);
            assert_eq!(code(&s), $code, "{} over gRPC: {s:?}", $what);
            d
        }};
    }

    let created: CreateSessionResponse = from_json(&ok(&http
        .post("/v1/sessions/create", &to_json(&req::create("carol", b"x")))
        .await));
    let token = created.token.clone();
    let id = created.session.expect("session").id;

    same_error!(
        "a malformed token",
        "/v1/sessions/get",
        req::get("not-a-token"),
        get_session,
        400,
        ErrorCode::InvalidArgument
    );
    same_error!(
        "an unknown session id",
        "/v1/sessions/update",
        UpdateSessionRequest {
            session: req::by_id("AAAAAAAAAAAAAAAAAAAAAA"),
            data: Some(vec![]),
            request_id: rid(),
            ..Default::default()
        },
        update_session,
        404,
        ErrorCode::NotFound
    );
    same_error!(
        "a request id of 3 bytes",
        "/v1/sessions/rotate",
        RotateTokenRequest {
            token: token.clone(),
            request_id: vec![1, 2, 3],
        },
        rotate_token,
        400,
        ErrorCode::InvalidArgument
    );
    let d = same_error!(
        "a stale expected version",
        "/v1/sessions/update",
        UpdateSessionRequest {
            session: req::by_token(&token),
            expected_version: 9,
            data: Some(b"y".to_vec()),
            request_id: rid(),
            ..Default::default()
        },
        update_session,
        409,
        ErrorCode::VersionConflict
    );
    assert_eq!(d.current_version, 1);

    // A token presented again after its grace window ended: reuse.
    let reused: CreateSessionResponse = from_json(&ok(&http
        .post("/v1/sessions/create", &to_json(&req::create("carol", b"")))
        .await));
    let rotated = ok(&http
        .post("/v1/sessions/rotate", &to_json(&req::rotate(&reused.token)))
        .await);
    assert_eq!(rotated["rotated"], true);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, d) = err(&http
        .post("/v1/sessions/rotate", &to_json(&req::rotate(&reused.token)))
        .await);
    assert_eq!((status, d.code()), (403, ErrorCode::TokenReused), "{d:?}");

    // A revoked session, with its reason.
    let other: CreateSessionResponse = from_json(&ok(&http
        .post("/v1/sessions/create", &to_json(&req::create("carol", b"")))
        .await));
    ok(&http
        .post(
            "/v1/sessions/revoke",
            &json!({"session": {"token": other.token}, "reason": "stolen", "requestId": b64(&rid())}),
        )
        .await);
    let d = same_error!(
        "a revoked session",
        "/v1/sessions/get",
        req::get(&other.token),
        get_session,
        403,
        ErrorCode::Revoked
    );
    assert_eq!(d.revoked_reason, "stolen");
    assert!(!d.message.contains(&other.token), "no token in error text");

    // A principal without the role.
    let watcher = JsonClient::new(&c.certs, &addr, Auth::Certificate(WATCHER.into()));
    let (status, d) = err(&watcher
        .post("/v1/sessions/create", &to_json(&req::create("dave", b"")))
        .await);
    assert_eq!(
        (status, d.code()),
        (403, ErrorCode::PermissionDenied),
        "{d:?}"
    );

    // No credential, and a credential that is not one: refused by the authentication layer
    // before any handler, in the same JSON form.
    let anonymous = JsonClient::new(&c.certs, &addr, Auth::None);
    let a = anonymous
        .post("/v1/sessions/get", &json!({"token": token}))
        .await;
    let (status, d) = err(&a);
    assert_eq!(
        (status, d.code()),
        (401, ErrorCode::Unauthenticated),
        "{d:?}"
    );
    assert_eq!(a.header("www-authenticate").as_deref(), Some("Bearer"));
    let forged = JsonClient::new(&c.certs, &addr, Auth::Bearer("sd_forged".into()));
    let (status, d) = err(&forged
        .post("/v1/sessions/get", &json!({"token": token}))
        .await);
    assert_eq!(
        (status, d.code()),
        (401, ErrorCode::Unauthenticated),
        "{d:?}"
    );

    // Bodies that are not a request: typed, and nothing of the body in the text.
    let (status, d) = err(&http
        .post_as(
            "/v1/sessions/get",
            "application/json",
            &format!("{{\"token\": \"{token}\""),
        )
        .await);
    assert_eq!((status, d.code()), (400, ErrorCode::InvalidArgument));
    assert!(!d.message.contains(&token), "{}", d.message);
    let (status, d) = err(&http
        .post_as(
            "/v1/sessions/update",
            "application/json",
            &format!("{{\"expectedVersion\": \"{token}\"}}"),
        )
        .await);
    assert_eq!((status, d.code()), (400, ErrorCode::InvalidArgument));
    assert!(!d.message.contains(&token), "{}", d.message);
    let (status, d) = err(&http.post_as("/v1/sessions/get", "text/plain", "{}").await);
    assert_eq!((status, d.code()), (400, ErrorCode::InvalidArgument));
    let (status, d) = err(&http
        .post_as(
            "/v1/sessions/get",
            "application/json",
            r#"{"token": "t", "nope": 1}"#,
        )
        .await);
    assert_eq!(
        (status, d.code()),
        (400, ErrorCode::InvalidArgument),
        "unknown fields are refused"
    );

    // Expired: a session idle past its timeout.
    let short = ok(&http
        .post(
            "/v1/sessions/create",
            &json!({"userId": "hal", "idleTimeoutMs": "300", "requestId": b64(&rid())}),
        )
        .await);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let d = same_error!(
        "an expired session",
        "/v1/sessions/get",
        req::get(short["token"].as_str().expect("token")),
        get_session,
        400,
        ErrorCode::Expired
    );
    assert!(d.message.contains("expired"), "{d:?}");

    // The per-user cap, with the refuse policy.
    for _ in 0..3 {
        ok(&http
            .post("/v1/sessions/create", &to_json(&req::create("gina", b"")))
            .await);
    }
    same_error!(
        "a create past the per-user cap",
        "/v1/sessions/create",
        req::create("gina", b""),
        create_session,
        429,
        ErrorCode::ResourceExhausted
    );

    // A body larger than any request may be: refused before it is read.
    let huge = format!(
        r#"{{"userId":"x","data":"{}"}}"#,
        "A".repeat(23 * 1024 * 1024)
    );
    let a = http
        .post_as("/v1/sessions/create", "application/json", &huge)
        .await;
    assert_eq!(a.status, 413, "{}", String::from_utf8_lossy(&a.body));

    // A path that is no route: 404, but not NOT_FOUND (which means "no such session").
    let (status, d) = err(&http.post("/v1/sessions/nope", &json!({})).await);
    assert_eq!((status, d.code()), (404, ErrorCode::Unspecified), "{d:?}");

    // None of the refusals above changed the session that was only read.
    let still = ok(&http
        .post("/v1/sessions/get", &json!({"token": token}))
        .await);
    assert_eq!(still["session"]["id"], id.as_str());
    assert_eq!(still["session"]["version"], "1", "{still}");
    assert_eq!(still["session"]["data"], b64(b"x"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_serves_json_and_names_the_leader() {
    let c = TestCluster::start3().await;
    let leader_id = c.leader_id().await;
    let follower = c.follower().await;
    let http = JsonClient::new(
        &c.certs,
        &c.nodes[follower].client_addr,
        Auth::Certificate(ADMIN.into()),
    );
    let a = http
        .post("/v1/sessions/create", &to_json(&req::create("erin", b"")))
        .await;
    let created = ok(&a);
    assert_eq!(a.header("sessiond-leader-id"), Some(leader_id.to_string()));
    assert_eq!(
        a.header("sessiond-node"),
        Some(c.nodes[follower].id.to_string())
    );
    let token = created["token"].as_str().expect("token");
    // A STALE read on the follower, once it has applied the create.
    let read = wait_for(Duration::from_secs(5), "the follower to apply", || {
        let http = http.clone();
        let body = json!({"token": token, "consistency": "CONSISTENCY_STALE"});
        async move {
            let a = http.post("/v1/sessions/get", &body).await;
            (a.status == 200).then_some(a)
        }
    })
    .await;
    assert_eq!(read.header("sessiond-leader-id"), None, "served locally");
    assert_eq!(read.json()["session"]["userId"], "erin");
    // HTTP/2 too, on the same port.
    let h2 = http.clone().http2();
    let a = h2.post("/v1/sessions/get", &json!({"token": token})).await;
    assert_eq!(ok(&a)["session"]["userId"], "erin");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bearer_credential_authenticates_json_calls() {
    let c = TestCluster::start3().await;
    let file = c.certs.join("web.secret");
    sessiond_certs(
        &c.certs,
        &[
            "credential",
            "--name",
            "web",
            "--role",
            "app",
            "--out",
            file.to_str().expect("path"),
        ],
    );
    for i in 0..c.nodes.len() {
        c.reload(i);
    }
    let secret = std::fs::read_to_string(&file)
        .expect("secret")
        .trim()
        .to_owned();
    let leader = c.leader().await;
    let http = JsonClient::new(
        &c.certs,
        &c.nodes[leader].client_addr,
        Auth::Bearer(secret.clone()),
    );
    let created = wait_for(
        Duration::from_secs(10),
        "the nodes to load the credential",
        || {
            let http = http.clone();
            async move {
                let a = http
                    .post("/v1/sessions/create", &to_json(&req::create("frank", b"")))
                    .await;
                (a.status == 200).then(|| a.json())
            }
        },
    )
    .await;
    assert!(created["token"].as_str().is_some_and(|t| !t.is_empty()));
    // The app role may not watch revocations.
    let (status, d) = err(&http.post("/v1/revocations/watch", &json!({})).await);
    assert_eq!(
        (status, d.code()),
        (403, ErrorCode::PermissionDenied),
        "{d:?}"
    );
}
