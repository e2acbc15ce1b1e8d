//! The HTTP/JSON adapter of the sessions core, served on the client port beside gRPC: for
//! applications whose stack has no gRPC (browsers' backends in Python, Node, Elixir, Lua) and
//! for `curl`. Every call is `POST /v1/...` with the request message as canonical proto3 JSON
//! (the serde impls are generated from the `.proto` files) and answers the response message
//! the same way; [`ROUTES`] lists them. The caller comes from the same authentication layer as
//! gRPC calls, and the same [`SessionsCore`] serves both, so both answer alike.
//!
//! Errors are the `ErrorDetail` as JSON with the HTTP status conventional for the gRPC code
//! ([`http_status`]); clients match on its `code`. `WatchRevocations` answers NDJSON: one
//! `Revocation` per line, and on failure a last line `{"error": ErrorDetail}`.
//!
//! Tokens travel in bodies only, never in a path or query string (which proxies log).

use super::caller::Caller;
use super::error::{self, ApiError, Kind};
use super::route::{Served, MAX_CLIENT_MESSAGE_BYTES};
use super::sessions::SessionsCore;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sessiond_proto::v1 as pb;
use std::future::Future;

/// Each route of the JSON API and the `Sessions` method it calls (the metrics label it shares
/// with that method's gRPC calls).
pub const ROUTES: [(&str, &str); 9] = [
    ("/v1/sessions/create", "CreateSession"),
    ("/v1/sessions/get", "GetSession"),
    ("/v1/sessions/rotate", "RotateToken"),
    ("/v1/sessions/update", "UpdateSession"),
    ("/v1/sessions/touch", "TouchSession"),
    ("/v1/sessions/revoke", "RevokeSession"),
    ("/v1/users/revoke", "RevokeUserSessions"),
    ("/v1/users/list", "ListUserSessions"),
    ("/v1/revocations/watch", "WatchRevocations"),
];

/// The media type of every request and unary answer.
pub const JSON: &str = "application/json";

/// The media type of the revocation feed: one JSON object per line.
pub const NDJSON: &str = "application/x-ndjson";

/// A JSON body may hold base64 of a largest message (4 bytes for 3) plus field names.
const MAX_JSON_BODY_BYTES: usize = MAX_CLIENT_MESSAGE_BYTES / 3 * 4 + 64 * 1024;

/// The HTTP status for an error of `kind`: the mapping gRPC gateways use, so that HTTP
/// tooling (retries on 503, alerts on 5xx) reads it as expected.
pub fn http_status(kind: Kind) -> StatusCode {
    match kind {
        Kind::InvalidArgument | Kind::FailedPrecondition | Kind::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Unauthenticated => StatusCode::UNAUTHORIZED,
        Kind::PermissionDenied => StatusCode::FORBIDDEN,
        Kind::Aborted => StatusCode::CONFLICT,
        Kind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        // What nginx and gRPC gateways answer for a request the client gave up on.
        Kind::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Kind::Internal | Kind::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The JSON body of an error: its `ErrorDetail`.
pub fn error_body(e: &ApiError) -> Bytes {
    // An ErrorDetail holds strings and integers only: serialising it cannot fail.
    serde_json::to_vec(&e.detail).map_or_else(|_| Bytes::new(), Bytes::from)
}

/// The answer for an error: its status and `ErrorDetail` as JSON, with a `WWW-Authenticate`
/// challenge for a missing credential. Generic over the body so that the authentication
/// layer answers its refusals exactly as the handlers answer errors.
pub fn error_answer<RB>(e: &ApiError, body: impl FnOnce(Bytes) -> RB) -> http::Response<RB> {
    let mut r = http::Response::new(body(error_body(e)));
    *r.status_mut() = http_status(e.kind);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    if e.kind == Kind::Unauthenticated {
        h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// [`error_answer`] with axum's body, for the handlers.
pub fn error_response(e: ApiError) -> Response {
    error_answer(&e, Body::from)
}

/// The router of every JSON route, for the client port's listener (behind its layers).
pub fn router(core: SessionsCore) -> Router {
    Router::new()
        .route(ROUTES[0].0, post(create))
        .route(ROUTES[1].0, post(get))
        .route(ROUTES[2].0, post(rotate))
        .route(ROUTES[3].0, post(update))
        .route(ROUTES[4].0, post(touch))
        .route(ROUTES[5].0, post(revoke))
        .route(ROUTES[6].0, post(revoke_user))
        .route(ROUTES[7].0, post(list))
        .route(ROUTES[8].0, post(watch))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY_BYTES))
        .with_state(core)
}

/// The answer for a path no route or service serves: a gRPC `UNIMPLEMENTED` to gRPC callers,
/// a 404 with a JSON error to others. Its code is unspecified on purpose: `NOT_FOUND` means
/// "no such session" to clients, which a mistyped URL must not look like.
pub async fn fallback(headers: HeaderMap) -> Response {
    if is_grpc(&headers) {
        let (parts, ()) = tonic::Status::unimplemented("")
            .into_http::<()>()
            .into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let e = ApiError::new(
        Kind::NotFound,
        pb::ErrorDetail {
            code: pb::ErrorCode::Unspecified as i32,
            message: "no such route: the JSON API is POST /v1/sessions/{create,get,rotate,update,\
                      touch,revoke}, /v1/users/{revoke,list}, /v1/revocations/watch"
                .into(),
            ..Default::default()
        },
    );
    error_response(e)
}

/// Whether a request is a gRPC call (by its content type).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The request message of a JSON body. An empty body is the empty message (`{}`). Errors
/// name the message and where the body went wrong, never what it held: a token in the
/// wrong field must not come back in an error text.
fn parse<T: DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: &Bytes,
    what: &str,
) -> Result<T, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case(JSON) {
            return Err(error::invalid(format!(
                "the body must be {JSON} (a {what} in proto3 JSON)"
            )));
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        let class = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "not valid JSON"
            }
            _ => "not a valid value for its field (or an unknown field)",
        };
        error::invalid(format!(
            "the body is not a {what} in proto3 JSON: {class} at line {} column {}",
            e.line(),
            e.column()
        ))
    })
}

/// The answer for a served value, naming the leader it came from when forwarded.
fn respond<T: Serialize>(answer: Result<Served<T>, ApiError>) -> Response {
    let served = match answer {
        Ok(s) => s,
        Err(e) => return error_response(e),
    };
    let body = match serde_json::to_vec(&served.value) {
        Ok(b) => b,
        Err(_) => return error_response(error::internal("the answer could not be encoded")),
    };
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(JSON))],
        body,
    )
        .into_response();
    if let Some(leader) = served.leader_hint {
        let h = r.headers_mut();
        h.insert(sessiond_proto::LEADER_ID_KEY, HeaderValue::from(leader.id));
        if let Ok(v) = HeaderValue::try_from(leader.client_addr.as_str()) {
            h.insert(sessiond_proto::LEADER_KEY, v);
        }
    }
    r
}

/// The caller the authentication layer attached; without one nothing is served.
fn caller(ext: Option<Extension<Caller>>) -> Result<Caller, ApiError> {
    ext.map(|Extension(c)| c)
        .ok_or_else(|| error::unauthenticated("no authenticated caller"))
}

/// One unary call: authenticate, parse, serve with the core, answer.
async fn unary<Req, Resp, F, Fut>(
    ext: Option<Extension<Caller>>,
    headers: &HeaderMap,
    body: &Bytes,
    what: &str,
    serve: F,
) -> Response
where
    Req: DeserializeOwned + Default,
    Resp: Serialize,
    F: FnOnce(Caller, Req) -> Fut,
    Fut: Future<Output = Result<Served<Resp>, ApiError>>,
{
    let caller = match caller(ext) {
        Ok(c) => c,
        Err(e) => return error_response(e),
    };
    match parse::<Req>(headers, body, what) {
        Ok(req) => respond(serve(caller, req).await),
        Err(e) => error_response(e),
    }
}

/// A handler for one unary route: the request message's name (for errors) and the core's
/// method that serves it.
macro_rules! unary_route {
    ($handler:ident, $what:literal, $method:ident) => {
        async fn $handler(
            State(core): State<SessionsCore>,
            ext: Option<Extension<Caller>>,
            headers: HeaderMap,
            body: Bytes,
        ) -> Response {
            unary(ext, &headers, &body, $what, |c, r| async move {
                core.$method(&c, r).await
            })
            .await
        }
    };
}

unary_route!(create, "CreateSessionRequest", create);
unary_route!(get, "GetSessionRequest", get);
unary_route!(rotate, "RotateTokenRequest", rotate);
unary_route!(update, "UpdateSessionRequest", update);
unary_route!(touch, "TouchSessionRequest", touch);
unary_route!(revoke, "RevokeSessionRequest", revoke);
unary_route!(revoke_user, "RevokeUserSessionsRequest", revoke_user);
unary_route!(list, "ListUserSessionsRequest", list);

/// One line of the revocation feed.
fn line<T: Serialize>(value: &T) -> Bytes {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// The revocation feed as NDJSON; a failure after the answer started is its last line.
async fn watch(
    State(core): State<SessionsCore>,
    ext: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let caller = match caller(ext) {
        Ok(c) => c,
        Err(e) => return error_response(e),
    };
    let req: pb::WatchRevocationsRequest = match parse(&headers, &body, "WatchRevocationsRequest") {
        Ok(r) => r,
        Err(e) => return error_response(e),
    };
    let feed = match core.watch_revocations(&caller, req) {
        Ok(f) => f,
        Err(e) => return error_response(e),
    };
    #[derive(Serialize)]
    struct Failed<'a> {
        error: &'a pb::ErrorDetail,
    }
    // Deliver up to and including the first error, then end the answer.
    let lines = feed
        .scan(false, |failed, ev| {
            let out = match (*failed, ev) {
                (true, _) => None,
                (false, Ok(rev)) => Some(line(&rev)),
                (false, Err(e)) => {
                    *failed = true;
                    Some(line(&Failed { error: &e.detail }))
                }
            };
            futures::future::ready(out)
        })
        .map(Ok::<Bytes, std::convert::Infallible>);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON))],
        Body::from_stream(lines),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_a_conventional_status() {
        assert_eq!(http_status(Kind::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Kind::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status(Kind::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(http_status(Kind::Aborted), StatusCode::CONFLICT);
        assert_eq!(
            http_status(Kind::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(http_status(Kind::Cancelled).as_u16(), 499);
    }

    #[test]
    fn parse_errors_never_repeat_the_body() {
        let secret = "sdt1_0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH";
        let body = Bytes::from(format!(r#"{{"expectedVersion": "{secret}"}}"#));
        let e = parse::<pb::UpdateSessionRequest>(&HeaderMap::new(), &body, "UpdateSessionRequest")
            .expect_err("a token is not a version");
        assert!(!e.message().contains(secret), "{}", e.message());
        assert!(
            e.message().contains("UpdateSessionRequest"),
            "{}",
            e.message()
        );
        let body = Bytes::from(format!(r#"{{"token": "{secret}""#));
        let e = parse::<pb::GetSessionRequest>(&HeaderMap::new(), &body, "GetSessionRequest")
            .expect_err("cut short");
        assert!(!e.message().contains(secret), "{}", e.message());
    }

    #[test]
    fn bodies_are_proto3_json() {
        let r: pb::GetSessionRequest = parse(
            &HeaderMap::new(),
            &Bytes::from_static(br#"{"token":"t","consistency":"CONSISTENCY_STALE","touch":true}"#),
            "GetSessionRequest",
        )
        .expect("camelCase and enum names");
        assert_eq!(r.token, "t");
        assert_eq!(r.consistency, pb::Consistency::Stale as i32);
        assert!(r.touch);
        let r: pb::GetSessionRequest =
            parse(&HeaderMap::new(), &Bytes::new(), "GetSessionRequest").expect("empty is {}");
        assert_eq!(r, pb::GetSessionRequest::default());
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(parse::<pb::GetSessionRequest>(&h, &Bytes::from_static(b"{}"), "x").is_err());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(parse::<pb::GetSessionRequest>(&h, &Bytes::from_static(b"{}"), "x").is_ok());
        let created = pb::CreateSessionResponse {
            token: "t".into(),
            session: Some(pb::Session {
                version: 7,
                data: b"hi".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v: serde_json::Value = serde_json::to_value(&created).expect("responses serialise");
        assert_eq!(v["session"]["version"], "7", "uint64 as a string: {v}");
        assert_eq!(v["session"]["data"], "aGk=", "bytes as base64: {v}");
        assert!(v.get("replayed").is_none(), "defaults left out: {v}");
    }
}
