//! `sessionctl`: operate a sessiond cluster and its sessions from the shell.
//!
//! Exit codes: 0 success; 2 usage; 3 not found or expired; 4 revoked or token reused;
//! 5 version conflict; 6 invalid argument or resource exhausted; 7 cluster unreachable or
//! unavailable.

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use sessiond_client::{
    duration, Certificate, Client, ClientTlsConfig, Consistency, Error, NewSession, Session,
    SessionRef,
};
use sessiond_proto::v1 as pb;
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "sessionctl", version, about = "Operate a sessiond cluster")]
struct Cli {
    /// Client addresses of the nodes, `host:port,host:port,...`.
    #[arg(
        long,
        env = "SESSIOND_ENDPOINTS",
        value_delimiter = ',',
        required = true
    )]
    endpoints: Vec<String>,
    /// One JSON object per result instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Connect with TLS; verify the server with this CA certificate (PEM) instead of the
    /// platform's roots.
    #[arg(long, global = true)]
    ca_cert: Option<std::path::PathBuf>,
    /// Connect with TLS using the platform's trusted roots.
    #[arg(long, global = true)]
    tls: bool,
    /// Give up on a command after this long (retries included).
    #[arg(long, default_value = "15s", value_parser = duration::parse, global = true)]
    timeout: Duration,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One row per member: role, term, leader, indexes.
    Status,
    /// Membership changes.
    #[command(subcommand)]
    Member(MemberCmd),
    /// Build a snapshot on the first endpoint's node.
    Snapshot,
    /// Session operations.
    #[command(subcommand)]
    Session(SessionCmd),
}

#[derive(Subcommand)]
enum MemberCmd {
    /// Add a node as a learner and wait until it has caught up.
    AddLearner {
        id: u64,
        client_addr: String,
        peer_addr: String,
    },
    /// Make a learner a voter.
    Promote { id: u64 },
    /// Remove a node from the cluster.
    Remove { id: u64 },
}

#[derive(Args)]
struct Rid {
    /// 16 bytes as 32 hex digits; reuse it to retry this exact command once.
    #[arg(long)]
    request_id: Option<String>,
}

#[derive(Subcommand)]
enum SessionCmd {
    Create {
        #[arg(long)]
        user: String,
        /// Data as text, or @FILE.
        #[arg(long)]
        data: Option<String>,
        /// key=value, repeatable.
        #[arg(long = "attr")]
        attrs: Vec<String>,
        #[arg(long, value_parser = duration::parse)]
        idle: Option<Duration>,
        #[arg(long, value_parser = duration::parse)]
        absolute: Option<Duration>,
        #[command(flatten)]
        rid: Rid,
    },
    Get {
        token: String,
        /// Serve from the receiving node's state.
        #[arg(long)]
        stale: bool,
        #[arg(long)]
        touch: bool,
    },
    Rotate {
        token: String,
        #[command(flatten)]
        rid: Rid,
    },
    Update {
        /// A token or a session id.
        session: String,
        #[arg(long)]
        data: String,
        #[arg(long, default_value_t = 0)]
        expect_version: u64,
        #[command(flatten)]
        rid: Rid,
    },
    Revoke {
        /// A token or a session id.
        session: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        rid: Rid,
    },
    List {
        #[arg(long)]
        user: String,
    },
    RevokeUser {
        user: String,
        #[arg(long)]
        except: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        rid: Rid,
    },
    /// Stream revocations until interrupted.
    Watch {
        #[arg(long, default_value_t = 0)]
        from_index: u64,
    },
}

/// A failure and the exit code it maps to.
struct Failure(u8, String);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound | Error::Expired => 3,
            Error::Revoked { .. } | Error::TokenReused => 4,
            Error::VersionConflict { .. } => 5,
            Error::InvalidArgument(_) | Error::ResourceExhausted(_) | Error::Config(_) => 6,
            Error::Unavailable(_) | Error::Timeout { .. } => 7,
        };
        Failure(code, e.to_string())
    }
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure(2, msg.into())
}

fn session_json(s: &Session) -> Value {
    json!({
        "id": s.id,
        "user_id": s.user_id,
        "generation": s.generation,
        "version": s.version,
        "data": String::from_utf8_lossy(&s.data),
        "attributes": s.attributes,
        "created_at_ms": s.created_at_ms,
        "last_active_at_ms": s.last_active_at_ms,
        "idle_timeout_ms": s.idle_timeout_ms,
        "absolute_expires_at_ms": s.absolute_expires_at_ms,
        "expires_at_ms": s.expires_at_ms,
    })
}

fn print(json_out: bool, v: Value) {
    if json_out {
        println!("{v}");
    } else if let Value::Object(map) = v {
        for (k, v) in map {
            match v {
                Value::Object(inner) => {
                    for (k2, v2) in inner {
                        println!("{k}.{k2}: {}", plain(&v2));
                    }
                }
                other => println!("{k}: {}", plain(&other)),
            }
        }
        println!();
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn target(s: &str) -> SessionRef {
    if s.starts_with("sdt1_") {
        SessionRef::Token(s.to_string())
    } else {
        SessionRef::Id(s.to_string())
    }
}

fn scoped(client: &Client, rid: &Rid) -> Result<Client, Failure> {
    match &rid.request_id {
        None => Ok(client.clone()),
        Some(h) => {
            let bytes = hex::decode(h).map_err(|_| usage("--request-id must be hex"))?;
            let arr: [u8; 16] = bytes
                .try_into()
                .map_err(|_| usage("--request-id must be 16 bytes (32 hex digits)"))?;
            Ok(client.with_request_id(arr))
        }
    }
}

fn role(r: i32) -> &'static str {
    match pb::Role::try_from(r).unwrap_or(pb::Role::Unspecified) {
        pb::Role::Leader => "leader",
        pb::Role::Follower => "follower",
        pb::Role::Candidate => "candidate",
        pb::Role::Learner => "learner",
        pb::Role::Shutdown => "shutdown",
        pb::Role::Unspecified => "unknown",
    }
}

async fn status(client: &Client, json_out: bool, timeout: Duration) -> Result<(), Failure> {
    let endpoints = client.endpoints();
    if !json_out {
        println!(
            "{:<4} {:<22} {:<22} {:<10} {:>5} {:>6} {:>8} {:>8} {:>9}",
            "ID", "CLIENT", "PEER", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "QUORUM_MS"
        );
    }
    let mut reached = 0;
    for (i, addr) in endpoints.iter().enumerate() {
        let Some(mut c) = client.cluster_client(i) else {
            continue;
        };
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(timeout);
        match tokio::time::timeout(timeout, c.status(req)).await {
            Ok(Ok(r)) => {
                reached += 1;
                let s = r.into_inner();
                let me = s.members.iter().find(|m| m.id == s.node_id);
                let peer = me.map(|m| m.peer_addr.clone()).unwrap_or_default();
                if json_out {
                    println!(
                        "{}",
                        json!({
                            "id": s.node_id, "client_addr": addr, "peer_addr": peer,
                            "role": role(s.role), "term": s.term, "leader": s.leader_id,
                            "commit_index": s.commit_index, "applied_index": s.applied_index,
                            "snapshot_index": s.snapshot_index, "purged_index": s.purged_index,
                            "millis_since_quorum_ack": s.millis_since_quorum_ack,
                            "voter": me.map(|m| m.voter).unwrap_or(false),
                            "members": s.members.iter().map(|m| json!({
                                "id": m.id, "client_addr": m.client_addr,
                                "peer_addr": m.peer_addr, "voter": m.voter,
                            })).collect::<Vec<_>>(),
                        })
                    );
                } else {
                    println!(
                        "{:<4} {:<22} {:<22} {:<10} {:>5} {:>6} {:>8} {:>8} {:>9}",
                        s.node_id,
                        addr,
                        peer,
                        role(s.role),
                        s.term,
                        s.leader_id,
                        s.commit_index,
                        s.applied_index,
                        s.millis_since_quorum_ack
                    );
                }
            }
            _ => {
                if json_out {
                    println!("{}", json!({ "client_addr": addr, "error": "unreachable" }));
                } else {
                    println!("{:<4} {:<22} unreachable", "-", addr);
                }
            }
        }
    }
    if reached == 0 {
        return Err(Failure(7, "no endpoint answered".into()));
    }
    Ok(())
}

/// The current voters, asked of the first endpoint that answers.
async fn voters(client: &Client) -> Result<Vec<u64>, Failure> {
    for i in 0..client.endpoints().len() {
        if let Some(mut c) = client.cluster_client(i) {
            if let Ok(r) = c.status(pb::StatusRequest {}).await {
                return Ok(r
                    .into_inner()
                    .members
                    .iter()
                    .filter(|m| m.voter)
                    .map(|m| m.id)
                    .collect());
            }
        }
    }
    Err(Failure(7, "no endpoint answered".into()))
}

async fn membership(
    client: &Client,
    json_out: bool,
    call: impl AsyncFn(
        sessiond_proto::v1::cluster_client::ClusterClient<tonic::transport::Channel>,
    ) -> Result<tonic::Response<pb::MembershipResponse>, tonic::Status>,
) -> Result<(), Failure> {
    let mut last = Failure(7, "no endpoint answered".into());
    for i in 0..client.endpoints().len() {
        let Some(c) = client.cluster_client(i) else {
            continue;
        };
        match call(c).await {
            Ok(r) => {
                let r = r.into_inner();
                print(
                    json_out,
                    json!({
                        "log_index": r.log_index,
                        "members": r.members.iter().map(|m| json!({
                            "id": m.id, "client_addr": m.client_addr,
                            "peer_addr": m.peer_addr, "voter": m.voter,
                        })).collect::<Vec<_>>(),
                    }),
                );
                return Ok(());
            }
            Err(s) => {
                let e = Error::from(s);
                if !e.retryable() {
                    return Err(e.into());
                }
                last = e.into();
            }
        }
    }
    Err(last)
}

/// Make `voters` the complete voter set (members left out are removed).
async fn set_voters(client: &Client, json_out: bool, voters: Vec<u64>) -> Result<(), Failure> {
    let req = pb::ChangeMembershipRequest {
        voters,
        retain: false,
    };
    membership(client, json_out, async |mut c| {
        c.change_membership(req.clone()).await
    })
    .await
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let mut builder = Client::builder(cli.endpoints.clone()).deadline(cli.timeout);
    if let Some(path) = &cli.ca_cert {
        let pem =
            std::fs::read(path).map_err(|e| usage(format!("reading {}: {e}", path.display())))?;
        builder = builder.tls(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)));
    } else if cli.tls {
        builder = builder.tls(ClientTlsConfig::new().with_native_roots());
    }
    let client = builder.build().map_err(Failure::from)?;
    let j = cli.json;
    match cli.command {
        Cmd::Status => status(&client, j, cli.timeout).await,
        Cmd::Snapshot => {
            let mut c = client
                .cluster_client(0)
                .ok_or_else(|| usage("no endpoint"))?;
            let r = c
                .trigger_snapshot(pb::TriggerSnapshotRequest {})
                .await
                .map_err(|s| Failure::from(Error::from(s)))?;
            print(
                j,
                json!({ "snapshot_index": r.into_inner().snapshot_index }),
            );
            Ok(())
        }
        Cmd::Member(MemberCmd::AddLearner {
            id,
            client_addr,
            peer_addr,
        }) => {
            let req = pb::AddLearnerRequest {
                node_id: id,
                client_addr,
                peer_addr,
                blocking: true,
            };
            membership(&client, j, async |mut c| c.add_learner(req.clone()).await).await
        }
        Cmd::Member(MemberCmd::Promote { id }) => {
            let mut v = voters(&client).await?;
            if !v.contains(&id) {
                v.push(id);
            }
            set_voters(&client, j, v).await
        }
        Cmd::Member(MemberCmd::Remove { id }) => {
            let v: Vec<u64> = voters(&client)
                .await?
                .into_iter()
                .filter(|v| *v != id)
                .collect();
            set_voters(&client, j, v).await
        }
        Cmd::Session(cmd) => session_cmd(&client, j, cmd).await,
    }
}

async fn session_cmd(client: &Client, j: bool, cmd: SessionCmd) -> Result<(), Failure> {
    match cmd {
        SessionCmd::Create {
            user,
            data,
            attrs,
            idle,
            absolute,
            rid,
        } => {
            let data = match data {
                Some(d) => match d.strip_prefix('@') {
                    Some(path) => {
                        std::fs::read(path).map_err(|e| usage(format!("reading {path}: {e}")))?
                    }
                    None => d.into_bytes(),
                },
                None => Vec::new(),
            };
            let mut attributes = HashMap::new();
            for a in attrs {
                let (k, v) = a
                    .split_once('=')
                    .ok_or_else(|| usage("--attr takes key=value"))?;
                attributes.insert(k.to_string(), v.to_string());
            }
            let new = NewSession {
                user_id: user,
                data,
                attributes,
                idle_timeout: idle,
                absolute_timeout: absolute,
            };
            let r = scoped(client, &rid)?.create_session(new).await?;
            print(
                j,
                json!({ "token": r.token, "replayed": r.replayed, "session": session_json(&r.session) }),
            );
        }
        SessionCmd::Get {
            token,
            stale,
            touch,
        } => {
            let c = if stale {
                Consistency::Stale
            } else {
                Consistency::Linearizable
            };
            let r = client.get_session(&token, c, touch).await?;
            print(
                j,
                json!({ "superseded": r.superseded, "session": session_json(&r.session) }),
            );
        }
        SessionCmd::Rotate { token, rid } => {
            let r = scoped(client, &rid)?.rotate_token(&token).await?;
            print(
                j,
                json!({ "token": r.token, "rotated": r.rotated, "replayed": r.replayed,
                        "session": session_json(&r.session) }),
            );
        }
        SessionCmd::Update {
            session,
            data,
            expect_version,
            rid,
        } => {
            let s = scoped(client, &rid)?
                .update_session(
                    target(&session),
                    expect_version,
                    Some(data.into_bytes()),
                    None,
                )
                .await?;
            print(j, json!({ "session": session_json(&s) }));
        }
        SessionCmd::Revoke {
            session,
            reason,
            rid,
        } => {
            let already = scoped(client, &rid)?
                .revoke_session(target(&session), &reason)
                .await?;
            print(j, json!({ "revoked": true, "already_revoked": already }));
        }
        SessionCmd::List { user } => {
            for s in client
                .list_user_sessions(&user, Consistency::Linearizable)
                .await?
            {
                print(j, session_json(&s));
            }
        }
        SessionCmd::RevokeUser {
            user,
            except,
            reason,
            rid,
        } => {
            let ids = scoped(client, &rid)?
                .revoke_user_sessions(&user, except.as_deref(), &reason)
                .await?;
            print(j, json!({ "revoked_ids": ids }));
        }
        SessionCmd::Watch { from_index } => {
            let mut stream = client.watch_revocations(from_index).await?;
            loop {
                match stream.message().await {
                    Ok(Some(ev)) => print(
                        j,
                        json!({ "index": ev.index, "session_id": ev.session_id, "user_id": ev.user_id,
                                "reason": ev.reason, "revoked_at_ms": ev.revoked_at_ms }),
                    ),
                    Ok(None) => return Ok(()),
                    Err(s) => return Err(Error::from(s).into()),
                }
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("sessionctl: {msg}");
            ExitCode::from(code)
        }
    }
}
