//! The `Sessions` service: parses and checks requests, draws the random values a command
//! needs (ids, tokens), proposes through the batcher or reads through the read barrier, and
//! turns outcomes into responses. The rules themselves live in `sessiond_state`.

use super::convert;
use super::error;
use super::route::{is_forwarded, sessions_client, with_leader_hint, Failure, Route, Router};
use crate::batcher::{Proposer, POLICY_KEY};
use crate::clock::wall_ms;
use crate::observe::Observer;
use crate::reads::ReadBarrier;
use crate::store::StateReader;
use sessiond_proto::v1 as pb;
use sessiond_proto::v1::sessions_server::Sessions;
use sessiond_state::command::{Command, Outcome, Reply, SessionError, Successor, Target};
use sessiond_state::keys;
use sessiond_state::kv::{Cf, KvRead};
use sessiond_state::record::{Policy, ReusePolicy};
use sessiond_state::token::{RequestId, SessionId, Token};
use sessiond_state::{limits, query};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Revocation events read per poll of the feed.
const WATCH_PAGE: usize = 1024;

/// The `Sessions` service of one node.
#[derive(Clone)]
pub struct SessionsService {
    pub(crate) router: Router,
    pub(crate) proposer: Proposer,
    pub(crate) reads: ReadBarrier,
    pub(crate) state: StateReader,
    /// Used until the cluster's own policy has been applied.
    pub(crate) bootstrap_policy: Policy,
    pub(crate) observer: Arc<dyn Observer>,
    pub(crate) freshness: crate::freshness::Freshness,
}

/// Serve a leader-only request: here when this node leads, else forwarded to the leader.
/// `$local` borrows the request; forwarding moves it.
macro_rules! leader_only {
    ($self:ident, $forwarded:expr, $req:ident, $method:ident, $local:expr) => {{
        match $self.router.route($forwarded)? {
            Route::Forward(ch, leader) => {
                return with_leader_hint(
                    sessions_client(ch)
                        .$method($self.router.request($req))
                        .await,
                    &leader,
                )
            }
            Route::Local => {}
        }
        let local: Result<_, Failure> = $local;
        match local {
            Ok(resp) => Ok(Response::new(resp)),
            Err(Failure::Status(s)) => Err(s),
            Err(Failure::NotLeader { leader_id, leader }) => {
                match $self.router.forward_to($forwarded, leader_id, leader)? {
                    Route::Forward(ch, leader) => with_leader_hint(
                        sessions_client(ch)
                            .$method($self.router.request($req))
                            .await,
                        &leader,
                    ),
                    Route::Local => Err(error::unavailable("leadership is changing", None)),
                }
            }
        }
    }};
}

fn random<const N: usize>() -> [u8; N] {
    rand::random()
}

fn request_id(bytes: &[u8]) -> Result<RequestId, Status> {
    RequestId::from_slice(bytes).map_err(error::format)
}

fn unexpected(reply: &Reply) -> Failure {
    tracing::error!(
        ?reply,
        "state machine answered with an unexpected reply kind"
    );
    Failure::Status(Status::internal("unexpected reply from the state machine"))
}

fn target(r: Option<&pb::SessionRef>) -> Result<(Target, Option<Token>), Status> {
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

impl SessionsService {
    fn policy(&self) -> Result<Policy, Status> {
        let view = self.state.view();
        match sessiond_state::kv::KvRead::get(&view, Cf::Meta, POLICY_KEY) {
            Ok(Some(_)) => query::policy(&view).map_err(error::storage),
            Ok(None) => Ok(self.bootstrap_policy.clone()),
            Err(e) => Err(error::storage(e)),
        }
    }

    /// Time for judging expiry on reads: `max(local clock, state-machine time)`.
    fn now(&self) -> Result<u64, Status> {
        let clock = query::clock(&self.state.view()).map_err(error::storage)?;
        Ok(wall_ms().max(clock))
    }

    /// Refuse a mutation of a session this cluster has never heard of without writing it to
    /// the log. The local check is free; only when it says "unknown" is it repeated after a
    /// leadership check, so a session created by a write not yet applied here is not missed.
    async fn known(&self, target: &Target) -> Result<(), Failure> {
        let exists = |view: &crate::store::StateView<'_>| -> Result<bool, Status> {
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
        Err(Failure::Status(error::session(SessionError::NotFound)))
    }

    async fn propose(&self, op: &'static str, command: Command) -> Result<Reply, Failure> {
        let outcome: Outcome = self.proposer.propose(command).await?;
        self.observer.outcome(op, &outcome);
        outcome.map_err(|e| Failure::Status(error::session(e)))
    }

    async fn create_local(
        &self,
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
        let command = Command::Create {
            request_id: rid.key(),
            id: SessionId(random()),
            token_hash: token.hash(),
            sealed_token: rid.seal(&token),
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
                token: rid.open(&sealed_token).expose(),
                replayed,
            }),
            other => Err(unexpected(&other)),
        }
    }

    /// Validate a token against local state; `linearizable` first confirms leadership.
    async fn get_local(
        &self,
        token: &Token,
        touch: bool,
        linearizable: bool,
    ) -> Result<pb::GetSessionResponse, Failure> {
        if linearizable {
            self.reads.confirm().await?;
        }
        let now = self.now()?;
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
                Err(Failure::Status(error::session(SessionError::TokenReused)))
            }
            Err(e) => Err(Failure::Status(error::session(e))),
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

    async fn touch_local(&self, token: &Token) -> Result<pb::TouchSessionResponse, Failure> {
        let got = self.get_local(token, true, true).await?;
        Ok(pb::TouchSessionResponse {
            session: got.session,
            superseded: got.superseded,
        })
    }

    async fn rotate_local(
        &self,
        req: &pb::RotateTokenRequest,
    ) -> Result<pb::RotateTokenResponse, Failure> {
        let token = Token::parse(&req.token).map_err(error::format)?;
        let rid = request_id(&req.request_id)?;
        self.known(&Target::Token(token.hash())).await?;
        let successor = Token::from_bytes(random());
        let command = Command::Rotate {
            request_id: rid.key(),
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

    async fn update_local(
        &self,
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
            request_id: rid.key(),
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

    async fn revoke_local(
        &self,
        req: &pb::RevokeSessionRequest,
    ) -> Result<pb::RevokeSessionResponse, Failure> {
        let (target, _) = target(req.session.as_ref())?;
        let rid = request_id(&req.request_id)?;
        limits::reason(&req.reason).map_err(error::session)?;
        self.known(&target).await?;
        let command = Command::Revoke {
            request_id: rid.key(),
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

    async fn revoke_user_local(
        &self,
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
            request_id: rid.key(),
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

    async fn list_local(
        &self,
        user_id: &str,
        linearizable: bool,
    ) -> Result<pb::ListUserSessionsResponse, Failure> {
        limits::user_id(user_id).map_err(error::session)?;
        if linearizable {
            self.reads.confirm().await?;
        }
        let now = self.now()?;
        let sessions =
            query::list_user(&self.state.view(), user_id, now).map_err(error::storage)?;
        Ok(pb::ListUserSessionsResponse {
            sessions: sessions.iter().map(convert::session).collect(),
        })
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Revocation, Status>> + Send>>;

#[tonic::async_trait]
impl Sessions for SessionsService {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        request_id(&req.request_id)?;
        leader_only!(
            self,
            forwarded,
            req,
            create_session,
            self.create_local(&req).await
        )
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let token = Token::parse(&req.token).map_err(error::format)?;
        if req.consistency == pb::Consistency::Stale as i32 && self.freshness.fresh() {
            // Served here. A touch that is due, or a reuse to record, is a write: those go
            // to the leader as the equivalent leader-only call.
            match self.get_local(&token, req.touch, false).await {
                Ok(r) => return Ok(Response::new(r)),
                Err(Failure::Status(s)) => return Err(s),
                Err(Failure::NotLeader { .. }) => {}
            }
            let mut req = req;
            req.consistency = pb::Consistency::Linearizable as i32;
            return leader_only!(
                self,
                forwarded,
                req,
                get_session,
                self.get_local(&token, req.touch, true).await
            );
        }
        leader_only!(
            self,
            forwarded,
            req,
            get_session,
            self.get_local(&token, req.touch, true).await
        )
    }

    async fn rotate_token(
        &self,
        request: Request<pb::RotateTokenRequest>,
    ) -> Result<Response<pb::RotateTokenResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        Token::parse(&req.token).map_err(error::format)?;
        request_id(&req.request_id)?;
        leader_only!(
            self,
            forwarded,
            req,
            rotate_token,
            self.rotate_local(&req).await
        )
    }

    async fn update_session(
        &self,
        request: Request<pb::UpdateSessionRequest>,
    ) -> Result<Response<pb::UpdateSessionResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        target(req.session.as_ref())?;
        request_id(&req.request_id)?;
        leader_only!(
            self,
            forwarded,
            req,
            update_session,
            self.update_local(&req).await
        )
    }

    async fn touch_session(
        &self,
        request: Request<pb::TouchSessionRequest>,
    ) -> Result<Response<pb::TouchSessionResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        let token = Token::parse(&req.token).map_err(error::format)?;
        leader_only!(
            self,
            forwarded,
            req,
            touch_session,
            self.touch_local(&token).await
        )
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        target(req.session.as_ref())?;
        request_id(&req.request_id)?;
        leader_only!(
            self,
            forwarded,
            req,
            revoke_session,
            self.revoke_local(&req).await
        )
    }

    async fn revoke_user_sessions(
        &self,
        request: Request<pb::RevokeUserSessionsRequest>,
    ) -> Result<Response<pb::RevokeUserSessionsResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        request_id(&req.request_id)?;
        leader_only!(
            self,
            forwarded,
            req,
            revoke_user_sessions,
            self.revoke_user_local(&req).await
        )
    }

    async fn list_user_sessions(
        &self,
        request: Request<pb::ListUserSessionsRequest>,
    ) -> Result<Response<pb::ListUserSessionsResponse>, Status> {
        let forwarded = is_forwarded(&request);
        let req = request.into_inner();
        limits::user_id(&req.user_id).map_err(error::session)?;
        if req.consistency == pb::Consistency::Stale as i32 && self.freshness.fresh() {
            return match self.list_local(&req.user_id, false).await {
                Ok(r) => Ok(Response::new(r)),
                Err(Failure::Status(s)) => Err(s),
                Err(Failure::NotLeader { .. }) => Err(error::unavailable("not serving", None)),
            };
        }
        leader_only!(
            self,
            forwarded,
            req,
            list_user_sessions,
            self.list_local(&req.user_id, true).await
        )
    }

    type WatchRevocationsStream = WatchStream;

    async fn watch_revocations(
        &self,
        request: Request<pb::WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        let from = request.into_inner().from_index;
        let state = self.state.clone();
        let mut applied = state.subscribe_applied();
        let mut next = if from == 0 {
            state.applied_index() + 1
        } else {
            from
        };
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            // Events already sent at index `next` (a page may end inside one entry's events).
            let mut sent_at_next = 0usize;
            loop {
                // Mark the applied index as seen before reading, so an apply that lands after
                // the read wakes the wait below.
                let upto = *applied.borrow_and_update();
                let page = match query::revocations_from(&state.view(), next, WATCH_PAGE) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(error::storage(e))).await;
                        return;
                    }
                };
                let mut skipped = 0usize;
                for ev in &page {
                    if ev.index == next && skipped < sent_at_next {
                        skipped += 1;
                        continue;
                    }
                    if tx.send(Ok(convert::revocation(ev))).await.is_err() {
                        return;
                    }
                    if ev.index == next {
                        sent_at_next += 1;
                    } else {
                        next = ev.index;
                        sent_at_next = 1;
                    }
                }
                if page.len() == WATCH_PAGE {
                    continue;
                }
                // The page was not full: every event in the view from `next` on was sent.
                let last = page.last().map(|e| e.index).unwrap_or(0);
                next = next.max(upto.max(last) + 1);
                sent_at_next = 0;
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
