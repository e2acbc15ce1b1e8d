//! The `Cluster` operator service: status of this node, membership changes (forwarded to the
//! leader), and snapshots on demand.

use super::caller::Caller;
use super::error::{self, ApiError};
use super::grpc::{self, to_status};
use super::route::{Route, Router, MAX_CLIENT_MESSAGE_BYTES};
use crate::raft_types::{NodeId, NodeInfo, Raft};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use sessiond_proto::v1 as pb;
use sessiond_proto::v1::cluster_client::ClusterClient;
use sessiond_proto::v1::cluster_server::Cluster;
use sessiond_security::Role;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// How long `TriggerSnapshot` waits for the snapshot to be built.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(60);

/// The `Cluster` service of one node.
#[derive(Clone)]
pub struct ClusterService {
    pub(crate) id: NodeId,
    pub(crate) raft: Raft,
    pub(crate) router: Router,
    pub(crate) state: crate::store::StateReader,
    /// Reported in `Status`, so that an insecure node cannot go unnoticed.
    pub(crate) insecure: bool,
    /// Clock skew, for `Status`.
    pub(crate) clocks: crate::clock::Clocks,
    /// The commit index a follower was told, for `Status`.
    pub(crate) freshness: crate::freshness::Freshness,
}

/// The commit index as this node knows it. openraft 0.9 does not publish it: a leader derives
/// it from the voters' matched indexes (the highest index a majority holds, never below what
/// it applied); a follower reports the highest a leader told it.
fn commit_index(m: &openraft::RaftMetrics<NodeId, crate::raft_types::NodeInfo>, heard: u64) -> u64 {
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let Some(replication) = m.replication.as_ref() else {
        return heard.max(applied);
    };
    let own = m.last_log_index.unwrap_or(0);
    let mut matched: Vec<u64> = m
        .membership_config
        .membership()
        .voter_ids()
        .map(|id| match id == m.id {
            true => own,
            false => replication
                .get(&id)
                .and_then(|l| l.map(|l| l.index))
                .unwrap_or(0),
        })
        .collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    let majority = matched.len() / 2;
    matched.get(majority).copied().unwrap_or(0).max(applied)
}

fn cluster_client(ch: Channel) -> ClusterClient<Channel> {
    ClusterClient::new(ch)
        .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
}

/// The caller of a `Cluster` call, who must hold the operator role.
fn operator<T>(request: &Request<T>) -> Result<Caller, Status> {
    let caller = grpc::caller(request)?;
    caller.require(Role::Operator).map_err(to_status)?;
    Ok(caller)
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> Status {
    to_status(match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            error::not_leader(f.leader_id, f.leader_node.as_ref())
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            error::invalid(c.to_string())
        }
        other => error::unavailable(other.to_string(), None),
    })
}

/// The membership change a request asks for, checked against the leader's current members
/// (`known`) and voters. With no members given (before forwarding) only the request's shape
/// is checked. Adding or removing ids applies to the leader's current configuration, so two
/// operators at once, or a view read from a lagging node, cannot drop a voter by accident.
fn membership_change(
    req: &pb::ChangeMembershipRequest,
    known: &BTreeMap<NodeId, NodeInfo>,
    voters: &BTreeSet<NodeId>,
) -> Result<ChangeMembers<NodeId, NodeInfo>, ApiError> {
    let set = |ids: &[u64]| ids.iter().copied().collect::<BTreeSet<NodeId>>();
    let (all, add, remove) = (
        set(&req.voters),
        set(&req.add_voters),
        set(&req.remove_voters),
    );
    let given = [!all.is_empty(), !add.is_empty(), !remove.is_empty()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(error::invalid(
            "give exactly one of voters, add_voters or remove_voters",
        ));
    }
    if all.iter().chain(&add).chain(&remove).any(|id| *id == 0) {
        return Err(error::invalid("node ids are > 0"));
    }
    let checking = !known.is_empty();
    if checking {
        if let Some(unknown) = all.iter().chain(&add).find(|id| !known.contains_key(id)) {
            return Err(error::invalid(format!(
                "node {unknown} is not a member; add it as a learner first"
            )));
        }
        if let Some(absent) = remove.iter().find(|id| !voters.contains(id)) {
            return Err(error::invalid(format!("node {absent} is not a voter")));
        }
        if !remove.is_empty() && voters.difference(&remove).next().is_none() {
            return Err(error::invalid(
                "removing every voter would leave no cluster",
            ));
        }
    }
    Ok(if !add.is_empty() {
        ChangeMembers::AddVoterIds(add)
    } else if !remove.is_empty() {
        ChangeMembers::RemoveVoters(remove)
    } else {
        ChangeMembers::ReplaceAllVoters(all)
    })
}

impl ClusterService {
    fn members(&self) -> Vec<pb::Member> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        membership
            .nodes()
            .map(|(id, info)| pb::Member {
                id: *id,
                client_addr: info.client_addr.clone(),
                peer_addr: info.peer_addr.clone(),
                voter: voters.contains(id),
            })
            .collect()
    }

    fn membership_response(&self, log_index: u64) -> pb::MembershipResponse {
        pb::MembershipResponse {
            log_index,
            members: self.members(),
        }
    }
}

/// Chunks of a backup on the wire (well below the message limit).
const BACKUP_CHUNK_BYTES: usize = 1 << 20;

type BackupStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Cluster for ClusterService {
    type BackupStream = BackupStream;

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        operator(&request)?;
        // On the leader, once it has confirmed its leadership and applied everything
        // committed: every write acknowledged before this call is in the backup. Other nodes
        // name the leader (a stream is not forwarded).
        match self.raft.ensure_linearizable().await {
            Ok(_) => {}
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                return Err(to_status(error::not_leader(
                    f.leader_id,
                    f.leader_node.as_ref(),
                )))
            }
            Err(e) => return Err(to_status(error::unavailable(e.to_string(), None))),
        }
        let state = self.state.clone();
        let (applied_index, bytes) =
            tokio::task::spawn_blocking(move || crate::store::backup::of_state(&state))
                .await
                .map_err(|e| to_status(error::internal(e.to_string())))?
                .map_err(|e| {
                    to_status(error::storage(sessiond_state::kv::StorageError(
                        e.to_string(),
                    )))
                })?;
        tracing::info!(applied_index, bytes = bytes.len(), "backup taken");
        let total_bytes = bytes.len() as u64;
        let chunks: Vec<Result<pb::BackupChunk, Status>> = bytes
            .chunks(BACKUP_CHUNK_BYTES)
            .enumerate()
            .map(|(i, c)| {
                Ok(pb::BackupChunk {
                    data: c.to_vec(),
                    applied_index: if i == 0 { applied_index } else { 0 },
                    total_bytes: if i == 0 { total_bytes } else { 0 },
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        operator(&request)?;
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => pb::Role::Leader,
            ServerState::Follower => pb::Role::Follower,
            ServerState::Candidate => pb::Role::Candidate,
            ServerState::Learner => pb::Role::Learner,
            ServerState::Shutdown => pb::Role::Shutdown,
        };
        let leader = self.router.leader();
        let last_log = m.last_log_index.unwrap_or(0);
        let replication_lag: std::collections::HashMap<u64, u64> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, matched)| {
                        let at = matched.map(|l| l.index).unwrap_or(0);
                        (*id, last_log.saturating_sub(at))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        Ok(Response::new(pb::StatusResponse {
            node_id: self.id,
            role: role as i32,
            term: m.current_term,
            leader_id: leader.as_ref().map(|(id, _)| *id).unwrap_or(0),
            leader_addr: leader.map(|(_, i)| i.client_addr).unwrap_or_default(),
            commit_index: commit_index(&m, self.freshness.commit_heard()),
            applied_index: applied,
            last_log_index: last_log,
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            members: self.members(),
            replication_lag,
            millis_since_quorum_ack: m.millis_since_quorum_ack.unwrap_or(0),
            state_machine_time_ms: sessiond_state::query::clock(&self.state.view())
                .map_err(|e| to_status(error::storage(e)))?,
            insecure: self.insecure,
            clock_skew_ms: self.clocks.skew_ms(),
            clock_skewed: self.clocks.skewed(),
        }))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let caller = operator(&request)?;
        let req = request.into_inner();
        if req.node_id == 0 || req.client_addr.is_empty() || req.peer_addr.is_empty() {
            return Err(to_status(error::invalid(
                "node_id (> 0), client_addr and peer_addr are required",
            )));
        }
        if let Route::Forward(ch, _) = self.router.route(caller.forwarded).map_err(to_status)? {
            let req = self.router.request(&caller, req).map_err(to_status)?;
            return cluster_client(ch).add_learner(req).await;
        }
        let info = NodeInfo {
            client_addr: req.client_addr,
            peer_addr: req.peer_addr,
        };
        let resp = self
            .raft
            .add_learner(req.node_id, info, req.blocking)
            .await
            .map_err(membership_error)?;
        Ok(Response::new(self.membership_response(resp.log_id.index)))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let caller = operator(&request)?;
        let req = request.into_inner();
        // Checked here too (not only on the leader) so a malformed request fails at once.
        membership_change(&req, &BTreeMap::new(), &BTreeSet::new()).map_err(to_status)?;
        if let Route::Forward(ch, _) = self.router.route(caller.forwarded).map_err(to_status)? {
            let req = self.router.request(&caller, req).map_err(to_status)?;
            return cluster_client(ch).change_membership(req).await;
        }
        let (known, voters): (BTreeMap<NodeId, NodeInfo>, BTreeSet<NodeId>) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let membership = m.membership_config.membership();
            (
                membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
                membership.voter_ids().collect(),
            )
        };
        let change = membership_change(&req, &known, &voters).map_err(to_status)?;
        let resp = self
            .raft
            .change_membership(change, req.retain)
            .await
            .map_err(membership_error)?;
        Ok(Response::new(self.membership_response(resp.log_id.index)))
    }

    async fn trigger_snapshot(
        &self,
        request: Request<pb::TriggerSnapshotRequest>,
    ) -> Result<Response<pb::TriggerSnapshotResponse>, Status> {
        operator(&request)?;
        let applied = self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0);
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| to_status(error::unavailable(e.to_string(), None)))?;
        let mut rx = self.raft.metrics();
        let wait = async {
            loop {
                let at = rx
                    .borrow_and_update()
                    .snapshot
                    .map(|l| l.index)
                    .unwrap_or(0);
                if at >= applied {
                    return Ok(at);
                }
                if rx.changed().await.is_err() {
                    return Err(error::unavailable("node is shutting down", None));
                }
            }
        };
        match tokio::time::timeout(SNAPSHOT_WAIT, wait).await {
            Ok(Ok(index)) => Ok(Response::new(pb::TriggerSnapshotResponse {
                snapshot_index: index,
            })),
            Ok(Err(e)) => Err(to_status(e)),
            Err(_) => Err(to_status(error::unavailable(
                "snapshot not finished in time",
                None,
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(voters: &[u64], add: &[u64], remove: &[u64]) -> pb::ChangeMembershipRequest {
        pb::ChangeMembershipRequest {
            voters: voters.to_vec(),
            retain: false,
            add_voters: add.to_vec(),
            remove_voters: remove.to_vec(),
        }
    }

    fn members(ids: &[u64]) -> BTreeMap<NodeId, NodeInfo> {
        ids.iter()
            .map(|id| {
                let info = NodeInfo {
                    client_addr: format!("n{id}:7001"),
                    peer_addr: format!("n{id}:7101"),
                };
                (*id, info)
            })
            .collect()
    }

    #[test]
    fn changes_by_id_apply_to_the_leaders_voters() {
        let known = members(&[1, 2, 3, 4]);
        let voters: BTreeSet<NodeId> = [1, 2, 3].into();
        let change = |r| membership_change(&r, &known, &voters);
        assert!(matches!(
            change(req(&[], &[4], &[])),
            Ok(ChangeMembers::AddVoterIds(ids)) if ids == [4].into()
        ));
        assert!(matches!(
            change(req(&[], &[], &[2])),
            Ok(ChangeMembers::RemoveVoters(ids)) if ids == [2].into()
        ));
        assert!(matches!(
            change(req(&[1, 2, 4], &[], &[])),
            Ok(ChangeMembers::ReplaceAllVoters(ids)) if ids == [1, 2, 4].into()
        ));
        for bad in [
            req(&[], &[], &[]),
            req(&[1], &[4], &[]),
            req(&[], &[4], &[2]),
            req(&[], &[0], &[]),
            req(&[], &[9], &[]),
            req(&[1, 9], &[], &[]),
            req(&[], &[], &[4]),
            req(&[], &[], &[1, 2, 3]),
        ] {
            let e = change(bad.clone()).err();
            assert!(e.is_some(), "{bad:?} accepted");
        }
        // Before forwarding only the shape is checked: the leader knows the members.
        let unchecked = membership_change(&req(&[], &[9], &[]), &BTreeMap::new(), &BTreeSet::new());
        assert!(unchecked.is_ok());
    }
}
