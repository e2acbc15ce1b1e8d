//! The sessions core: every `Sessions` operation as a function of the authenticated caller and
//! a typed request, answering a typed response or an [`ApiError`]. It parses and checks
//! requests, authorises the caller, draws the random values a command needs (ids, tokens),
//! proposes through the batcher or reads through the read barrier, and forwards leader-only
//! calls to the leader. It knows no transport: the gRPC adapter (`api::grpc`) and any other
//! adapter call these functions. The rules themselves live in `sessiond_state`.

use super::caller::Caller;
use super::convert;
use super::error::{self, ApiError};
use super::route::{Failure, Forward, Route, Router, Served};
use crate::batcher::{Proposer, POLICY_KEY};
use crate::observe::Observer;
use crate::reads::ReadBarrier;
use crate::store::StateReader;
use sessiond_proto::v1 as pb;
use sessiond_security::Role;
use sessiond_state::command::{Command, Outcome, Reply, SessionError, Successor, Target};
use sessiond_state::keys;
use sessiond_state::kv::{Cf, KvRead};
use sessiond_state::record::{Policy, ReusePolicy};
use sessiond_state::token::{RequestId, SealKey, SessionId, Token};
use sessiond_state::{limits, query};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;

/// Revocation events read per poll of the feed.
const WATCH_PAGE: usize = 1024;

/// Sessions per `ListUserSessions` page when the request names no size, and at most.
const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;
/// Session bytes per page (by `query::page_bytes`): an answer stays well below the 4 MiB that
/// gRPC clients accept by default, whatever the sessions hold.
const MAX_PAGE_BYTES: usize = 3 * 1024 * 1024;

/// The opaque page token for a cursor: created_at and session id, hex. Public so that the
/// fuzz targets (`fuzz/`) can check that [`page_cursor`] reads back what it writes.
#[doc(hidden)]
pub fn page_token((created_at, id): query::PageCursor) -> String {
    let mut b = created_at.to_be_bytes().to_vec();
    b.extend_from_slice(&id.0);
    hex::encode(b)
}

/// The cursor a page token names (`None` for the empty token); a malformed token is refused.
/// Public so that the fuzz targets (`fuzz/`) check what a handler checks, on any input.
#[doc(hidden)]
pub fn page_cursor(token: &str) -> Result<Option<query::PageCursor>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let malformed = || error::invalid("malformed page_token");
    let b = hex::decode(token).map_err(|_| malformed())?;
    let (t, id) = (
        b.get(..8).ok_or_else(malformed)?,
        b.get(8..).ok_or_else(malformed)?,
    );
    let created_at = u64::from_be_bytes(t.try_into().map_err(|_| malformed())?);
    let id: [u8; 16] = id.try_into().map_err(|_| malformed())?;
    Ok(Some((created_at, SessionId(id))))
}

/// The revocation feed as the core hands it to an adapter.
pub type RevocationStream = Pin<Box<dyn Stream<Item = Result<pb::Revocation, ApiError>> + Send>>;

/// The sessions core of one node.
#[derive(Clone)]
pub struct SessionsCore {
    pub(crate) router: Router,
    pub(crate) proposer: Proposer,
    pub(crate) reads: ReadBarrier,
    pub(crate) state: StateReader,
    /// Used until the cluster's own policy has been applied.
    pub(crate) bootstrap_policy: Policy,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) freshness: crate::freshness::Freshness,
    pub(crate) clocks: crate::clock::Clocks,
    /// Seals a created session's token in its dedup row; the same on every node.
    pub(crate) seal_key: SealKey,
}

fn random<const N: usize>() -> [u8; N] {
    rand::random()
}

/// A request's `request_id`, checked. Public so that the fuzz targets (`fuzz/`) check what a
/// handler checks, on any input.
#[doc(hidden)]
pub fn request_id(bytes: &[u8]) -> Result<RequestId, ApiError> {
    RequestId::from_slice(bytes).map_err(error::format)
}

fn unexpected(reply: &Reply) -> Failure {
    tracing::error!(
        ?reply,
        "state machine answered with an unexpected reply kind"
    );
    Failure::Error(error::internal("unexpected reply from the state machine"))
}

/// The session a request names, by token or id, checked. Public so that the fuzz targets
/// (`fuzz/`) check what a handler checks, on any input.
#[doc(hidden)]
pub fn target(r: Option<&pb::SessionRef>) -> Result<(Target, Option<Token>), ApiError> {
    match r.and_then(|r| r.by.as_ref()) {
        Some(pb::session_ref::By::Token(t)) => {
            let token = Token::parse(t).map_err(error::format)?;
            Ok((Target::Token(token.hash()), Some(token)))
        }
        Some(pb::session_ref::By::Id(id)) => Ok((
            Target::Id(SessionId::parse(id).map_err(error::format)?),
            None,
        )),
        None => Err(error::invalid("session (token or id) is required")),
    }
}

impl SessionsCore {
    /// Serve a leader-only request: here when this node leads, else forwarded to the leader
    /// with the caller's identity. `local` runs only here, on a borrowed request.
    async fn leader_only<R: Forward>(
        &self,
        caller: &Caller,
        req: R,
        local: impl AsyncFnOnce(&R) -> Result<R::Answer, Failure>,
    ) -> Result<Served<R::Answer>, ApiError> {
        let (leader_id, leader) = match self.router.route(caller.forwarded)? {
            Route::Forward(ch, addr) => {
                return self
                    .router
                    .forward(ch, addr, caller, req, self.clocks.median_now())
                    .await
            }
            Route::Local => {
                self.served_in_time(caller)?;
                match local(&req).await {
                    Ok(v) => return Ok(Served::here(v)),
                    Err(Failure::Error(e)) => return Err(e),
                    Err(Failure::NotLeader { leader_id, leader }) => (leader_id, leader),
                }
            }
        };
        match self
            .router
            .forward_to(caller.forwarded, leader_id, leader)?
        {
            Route::Forward(ch, addr) => {
                self.router
                    .forward(ch, addr, caller, req, self.clocks.median_now())
                    .await
            }
            Route::Local => Err(error::unavailable("leadership is changing", None)),
        }
    }

    /// Refuse a forwarded call whose caller's deadline has passed by the voters' median clock
    /// as this node reckons it (see [`crate::clock::Clocks::median_now`]; not reckoned yet:
    /// served). A direct call carries no deadline and costs nothing here.
    fn served_in_time(&self, caller: &Caller) -> Result<(), ApiError> {
        if caller.deadline_ms.is_none() {
            return Ok(());
        }
        match self.clocks.median_now() {
            Some(now) => caller.still_waiting(now),
            None => Ok(()),
        }
    }

    fn policy(&self) -> Result<Policy, ApiError> {
        let view = self.state.view();
        match KvRead::get(&view, Cf::Meta, POLICY_KEY) {
            Ok(Some(_)) => query::policy(&view).map_err(error::storage),
            Ok(None) => Ok(self.bootstrap_policy.clone()),
            Err(e) => Err(error::storage(e)),
        }
    }

    /// Whether a `STALE` read may be answered from this node's applied state now (see
    /// [`crate::freshness`]).
    fn stale_allowed(&self) -> bool {
        let local = crate::freshness::local(self.router.raft(), self.state.applied_index());
        self.freshness.fresh(local)
    }

    /// Time for judging expiry on reads: the replicated time advanced by the monotonic clock
    /// since it was applied here (see [`crate::clock`]).
    fn now(&self) -> Result<u64, ApiError> {
        let clock = query::clock(&self.state.view()).map_err(error::storage)?;
        Ok(self.clocks.read_now(clock))
    }

    /// Refuse a mutation of a session this cluster has never heard of without writing it to
    /// the log. The local check is free; only when it says "unknown" is it repeated after a
    /// leadership check, so a session created by a write not yet applied here is not missed.
    async fn known(&self, target: &Target) -> Result<(), Failure> {
        let exists = |view: &crate::store::StateView<'_>| -> Result<bool, ApiError> {
            let found = match target {
                Target::Token(h) => view.get(Cf::Tokens, &keys::token(h)),
                Target::Id(id) => {
                    view.get(Cf::Sessions, &keys::session(id))
                        .and_then(|s| match s {
                            Some(_) => Ok(Some(Vec::new())),
                            None => view.get(Cf::Tombstones, &keys::session(id)),
                        })
                }
            };
            found.map(|v| v.is_some()).map_err(error::storage)
        };
        if exists(&self.state.view())? {
            return Ok(());
        }
        self.reads.confirm().await?;
        if exists(&self.state.view())? {
            return Ok(());
        }
        Err(Failure::Error(error::session(SessionError::NotFound)))
    }

    async fn propose(&self, op: &'static str, command: Command) -> Result<Reply, Failure> {
        let outcome: Outcome = self.proposer.propose(command).await?;
        self.observer.outcome(op, &outcome);
        outcome.map_err(|e| Failure::Error(error::session(e)))
    }

    /// `CreateSession`.
    pub async fn create(
        &self,
        caller: &Caller,
        req: pb::CreateSessionRequest,
    ) -> Result<Served<pb::CreateSessionResponse>, ApiError> {
        caller.require(Role::App)?;
        request_id(&req.request_id)?;
        self.leader_only(caller, req, async |r| self.create_local(caller, r).await)
            .await
    }

    async fn create_local(
        &self,
        caller: &Caller,
        req: &pb::CreateSessionRequest,
    ) -> Result<pb::CreateSessionResponse, Failure> {
        let rid = request_id(&req.request_id)?;
        let policy = self.policy()?;
        let attributes = convert::attributes(req.attributes.clone());
        let check = || -> Result<_, SessionError> {
            limits::user_id(&req.user_id)?;
            limits::data(&policy, &req.data)?;
            limits::attributes(&policy, &attributes)?;
            limits::timeouts(
                &policy,
                convert::nonzero(req.idle_timeout_ms),
                convert::nonzero(req.absolute_timeout_ms),
            )
        };
        check().map_err(error::session)?;
        let token = Token::from_bytes(random());
        let id = SessionId(random());
        let command = Command::Create {
            request_id: rid.key(caller.name()),
            id,
            token_hash: token.hash(),
            sealed_token: rid.seal(&self.seal_key, &id, &token),
            user_id: req.user_id.clone(),
            data: req.data.clone(),
            attributes,
            idle_timeout_ms: convert::nonzero(req.idle_timeout_ms),
            absolute_timeout_ms: convert::nonzero(req.absolute_timeout_ms),
        };
        match self.propose("create", command).await? {
            Reply::Created {
                session,
                sealed_token,
                replayed,
                ..
            } => Ok(pb::CreateSessionResponse {
                session: Some(convert::session(&session)),
                // A replay answers with the first create's session, whose id sealed the token.
                token: rid
                    .open(&self.seal_key, &session.id, &sealed_token)
                    .expose(),
                replayed,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// `GetSession`: linearizable through the leader, or `STALE` from this node while it is
    /// fresh.
    pub async fn get(
        &self,
        caller: &Caller,
        mut req: pb::GetSessionRequest,
    ) -> Result<Served<pb::GetSessionResponse>, ApiError> {
        caller.require(Role::App)?;
        let token = Token::parse(&req.token).map_err(error::format)?;
        if req.consistency == pb::Consistency::Stale as i32 && self.stale_allowed() {
            // Served here. A touch that is due, or a reuse to record, is a write: those go
            // to the leader as the equivalent leader-only call.
            match self.get_local(&token, req.touch, false, None).await {
                Ok(r) => return Ok(Served::here(r)),
                Err(Failure::Error(e)) => return Err(e),
                Err(Failure::NotLeader { .. }) => {}
            }
            req.consistency = pb::Consistency::Linearizable as i32;
        }
        let touch = req.touch;
        self.leader_only(caller, req, async |_| {
            self.get_local(&token, touch, true, Some(caller)).await
        })
        .await
    }

    /// Validate a token against local state; `linearizable` first confirms leadership. A
    /// forwarded read whose caller's deadline passed while leadership was being confirmed
    /// judges nothing: a reuse it found would revoke the session for a
    /// request its client abandoned.
    async fn get_local(
        &self,
        token: &Token,
        touch: bool,
        linearizable: bool,
        caller: Option<&Caller>,
    ) -> Result<pb::GetSessionResponse, Failure> {
        if linearizable {
            self.reads.confirm().await?;
        }
        let now = self.now()?;
        if let Some(caller) = caller {
            self.served_in_time(caller)?;
        }
        let lookup =
            query::by_token(&self.state.view(), &token.hash(), now).map_err(error::storage)?;
        match lookup {
            Ok(l) => {
                if touch && l.touch_due {
                    let t = self.touch_write(token).await?;
                    return Ok(pb::GetSessionResponse {
                        session: t.session,
                        superseded: t.superseded,
                    });
                }
                self.observer.read("get", l.superseded);
                Ok(pb::GetSessionResponse {
                    session: Some(convert::session(&(&l.session).into())),
                    superseded: l.superseded,
                })
            }
            Err(SessionError::TokenReused) => {
                self.report_reuse(token).await?;
                Err(Failure::Error(error::session(SessionError::TokenReused)))
            }
            Err(e) => Err(Failure::Error(error::session(e))),
        }
    }

    /// Record a detected reuse (revokes the session under the `revoke` policy).
    async fn report_reuse(&self, token: &Token) -> Result<(), Failure> {
        if self.policy()?.reuse_policy != ReusePolicy::Revoke {
            return Ok(());
        }
        self.propose(
            "report_reuse",
            Command::ReportReuse {
                token_hash: token.hash(),
            },
        )
        .await
        .map(|_| ())
    }

    async fn touch_write(&self, token: &Token) -> Result<pb::TouchSessionResponse, Failure> {
        match self
            .propose(
                "touch",
                Command::Touch {
                    token_hash: token.hash(),
                },
            )
            .await?
        {
            Reply::Touched {
                session,
                superseded,
                ..
            } => Ok(pb::TouchSessionResponse {
                session: Some(convert::session(&session)),
                superseded,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// `TouchSession`.
    pub async fn touch(
        &self,
        caller: &Caller,
        req: pb::TouchSessionRequest,
    ) -> Result<Served<pb::TouchSessionResponse>, ApiError> {
        caller.require(Role::App)?;
        let token = Token::parse(&req.token).map_err(error::format)?;
        self.leader_only(caller, req, async |_| {
            let got = self.get_local(&token, true, true, Some(caller)).await?;
            Ok(pb::TouchSessionResponse {
                session: got.session,
                superseded: got.superseded,
            })
        })
        .await
    }

    /// `RotateToken`.
    pub async fn rotate(
        &self,
        caller: &Caller,
        req: pb::RotateTokenRequest,
    ) -> Result<Served<pb::RotateTokenResponse>, ApiError> {
        caller.require(Role::App)?;
        Token::parse(&req.token).map_err(error::format)?;
        request_id(&req.request_id)?;
        self.leader_only(caller, req, async |r| self.rotate_local(caller, r).await)
            .await
    }

    async fn rotate_local(
        &self,
        caller: &Caller,
        req: &pb::RotateTokenRequest,
    ) -> Result<pb::RotateTokenResponse, Failure> {
        let token = Token::parse(&req.token).map_err(error::format)?;
        let rid = request_id(&req.request_id)?;
        self.known(&Target::Token(token.hash())).await?;
        let successor = Token::from_bytes(random());
        let command = Command::Rotate {
            request_id: rid.key(caller.name()),
            token_hash: token.hash(),
            new_token_hash: successor.hash(),
            sealed_successor: token.seal(&successor),
        };
        match self.propose("rotate", command).await? {
            Reply::Rotated {
                session,
                successor,
                replayed,
            } => {
                let (next, rotated) = match successor {
                    Successor::Sealed(sealed) => (token.open(&sealed), true),
                    Successor::Unchanged => (token.clone(), false),
                };
                Ok(pb::RotateTokenResponse {
                    session: Some(convert::session(&session)),
                    token: next.expose(),
                    rotated,
                    replayed,
                })
            }
            other => Err(unexpected(&other)),
        }
    }

    /// `UpdateSession`.
    pub async fn update(
        &self,
        caller: &Caller,
        req: pb::UpdateSessionRequest,
    ) -> Result<Served<pb::UpdateSessionResponse>, ApiError> {
        caller.require(Role::App)?;
        target(req.session.as_ref())?;
        request_id(&req.request_id)?;
        self.leader_only(caller, req, async |r| self.update_local(caller, r).await)
            .await
    }

    async fn update_local(
        &self,
        caller: &Caller,
        req: &pb::UpdateSessionRequest,
    ) -> Result<pb::UpdateSessionResponse, Failure> {
        let (target, _) = target(req.session.as_ref())?;
        let rid = request_id(&req.request_id)?;
        let policy = self.policy()?;
        self.known(&target).await?;
        let attributes = req
            .attributes
            .as_ref()
            .map(|a| convert::attributes(a.entries.clone()));
        if let Some(d) = &req.data {
            limits::data(&policy, d).map_err(error::session)?;
        }
        if let Some(a) = &attributes {
            limits::attributes(&policy, a).map_err(error::session)?;
        }
        let command = Command::Update {
            request_id: rid.key(caller.name()),
            target,
            expected_version: req.expected_version,
            data: req.data.clone(),
            attributes,
        };
        match self.propose("update", command).await? {
            Reply::Updated { session, replayed } => Ok(pb::UpdateSessionResponse {
                session: Some(convert::session(&session)),
                replayed,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// `RevokeSession` (logout).
    pub async fn revoke(
        &self,
        caller: &Caller,
        req: pb::RevokeSessionRequest,
    ) -> Result<Served<pb::RevokeSessionResponse>, ApiError> {
        caller.require(Role::App)?;
        target(req.session.as_ref())?;
        request_id(&req.request_id)?;
        self.leader_only(caller, req, async |r| self.revoke_local(caller, r).await)
            .await
    }

    async fn revoke_local(
        &self,
        caller: &Caller,
        req: &pb::RevokeSessionRequest,
    ) -> Result<pb::RevokeSessionResponse, Failure> {
        let (target, _) = target(req.session.as_ref())?;
        let rid = request_id(&req.request_id)?;
        limits::reason(&req.reason).map_err(error::session)?;
        self.known(&target).await?;
        let command = Command::Revoke {
            request_id: rid.key(caller.name()),
            target,
            reason: req.reason.clone(),
        };
        match self.propose("revoke", command).await? {
            Reply::Revoked {
                id,
                already,
                replayed,
            } => Ok(pb::RevokeSessionResponse {
                id: id.to_string(),
                already_revoked: already,
                replayed,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// `RevokeUserSessions` ("log out everywhere").
    pub async fn revoke_user(
        &self,
        caller: &Caller,
        req: pb::RevokeUserSessionsRequest,
    ) -> Result<Served<pb::RevokeUserSessionsResponse>, ApiError> {
        caller.require(Role::App)?;
        request_id(&req.request_id)?;
        self.leader_only(caller, req, async |r| {
            self.revoke_user_local(caller, r).await
        })
        .await
    }

    async fn revoke_user_local(
        &self,
        caller: &Caller,
        req: &pb::RevokeUserSessionsRequest,
    ) -> Result<pb::RevokeUserSessionsResponse, Failure> {
        let rid = request_id(&req.request_id)?;
        limits::user_id(&req.user_id).map_err(error::session)?;
        limits::reason(&req.reason).map_err(error::session)?;
        let except = if req.except_id.is_empty() {
            None
        } else {
            Some(SessionId::parse(&req.except_id).map_err(error::format)?)
        };
        let command = Command::RevokeUser {
            request_id: rid.key(caller.name()),
            user_id: req.user_id.clone(),
            except,
            reason: req.reason.clone(),
        };
        match self.propose("revoke_user", command).await? {
            Reply::RevokedUser { ids, replayed } => Ok(pb::RevokeUserSessionsResponse {
                revoked_ids: ids.iter().map(|i| i.to_string()).collect(),
                replayed,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// `ListUserSessions`.
    pub async fn list(
        &self,
        caller: &Caller,
        req: pb::ListUserSessionsRequest,
    ) -> Result<Served<pb::ListUserSessionsResponse>, ApiError> {
        caller.require(Role::App)?;
        limits::user_id(&req.user_id).map_err(error::session)?;
        page_cursor(&req.page_token)?;
        if req.consistency == pb::Consistency::Stale as i32 && self.stale_allowed() {
            return match self.list_local(&req, false).await {
                Ok(r) => Ok(Served::here(r)),
                Err(Failure::Error(e)) => Err(e),
                Err(Failure::NotLeader { .. }) => Err(error::unavailable("not serving", None)),
            };
        }
        self.leader_only(caller, req, async |r| self.list_local(r, true).await)
            .await
    }

    async fn list_local(
        &self,
        req: &pb::ListUserSessionsRequest,
        linearizable: bool,
    ) -> Result<pb::ListUserSessionsResponse, Failure> {
        limits::user_id(&req.user_id).map_err(error::session)?;
        let after = page_cursor(&req.page_token)?;
        let size = match req.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => (n as usize).min(MAX_PAGE_SIZE),
        };
        if linearizable {
            self.reads.confirm().await?;
        }
        let now = self.now()?;
        let page = query::list_user_page(
            &self.state.view(),
            &req.user_id,
            now,
            after,
            size,
            MAX_PAGE_BYTES,
        )
        .map_err(error::storage)?;
        Ok(pb::ListUserSessionsResponse {
            sessions: page.sessions.iter().map(convert::session).collect(),
            next_page_token: page.next.map(page_token).unwrap_or_default(),
        })
    }

    /// `WatchRevocations`: the revocation feed from `from_index` (0: from now on), served from
    /// this node's applied state.
    pub fn watch_revocations(
        &self,
        caller: &Caller,
        req: pb::WatchRevocationsRequest,
    ) -> Result<RevocationStream, ApiError> {
        caller.require(Role::Watch)?;
        let from = req.from_index;
        let state = self.state.clone();
        let mut applied = state.subscribe_applied();
        let mut cursor = query::FeedCursor::at(if from == 0 {
            state.applied_index() + 1
        } else {
            from
        });
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                // Mark the applied index as seen before reading, so an apply that lands after
                // the read wakes the wait below.
                let upto = *applied.borrow_and_update();
                // The cursor names an event inside its entry, so a page that ends inside an
                // entry holding more events than a page resumes there.
                let (page, next) = match query::revocations_page(&state.view(), cursor, WATCH_PAGE)
                {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(error::storage(e))).await;
                        return;
                    }
                };
                for ev in &page {
                    if tx.send(Ok(convert::revocation(ev))).await.is_err() {
                        return;
                    }
                }
                cursor = next;
                if page.len() == WATCH_PAGE {
                    // More may be waiting; let other tasks run between pages.
                    tokio::task::yield_now().await;
                    continue;
                }
                // The page was not full: every event in the view from the cursor on was sent,
                // and everything applied up to `upto` is in the view.
                cursor = cursor.max(query::FeedCursor::at(upto + 1));
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }
}
