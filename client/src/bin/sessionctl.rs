//! `sessionctl`: operate a sessiond cluster and its sessions from the shell.
//!
//! Exit codes: 0 success; 2 usage; 3 not found or expired; 4 revoked or token reused;
//! 5 version conflict; 6 invalid argument, resource exhausted or bad configuration;
//! 7 cluster unreachable or unavailable; 8 not authenticated, permission denied or TLS
//! handshake failed.
//!
//! A secured cluster needs `--ca-cert` and a credential (`--cert` + `--key`, or
//! `--token-file`); each flag also reads the variable `Client::from_env` reads
//! (`SESSIOND_CA`, `SESSIOND_CERT`, `SESSIOND_KEY`, `SESSIOND_TOKEN_FILE`).

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use sessiond_client::{
    duration, AuthChannel, Client, ClientTlsConfig, Consistency, Error, NewSession, SecurityFiles,
    Session, SessionRef, ENV_CA, ENV_CERT, ENV_KEY, ENV_TOKEN_FILE,
};
use sessiond_proto::v1 as pb;
use std::collections::HashMap;
use std::path::PathBuf;
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
    /// Connect with TLS; verify the nodes with this CA certificate (PEM, the cluster's
    /// `ca.crt`) instead of the platform's roots.
    #[arg(long, global = true, env = ENV_CA)]
    ca_cert: Option<PathBuf>,
    /// Authenticate with this client certificate (PEM, `client-<name>.crt`); needs `--key`.
    #[arg(long, global = true, env = ENV_CERT)]
    cert: Option<PathBuf>,
    /// The private key of `--cert` (PEM, `client-<name>.key`).
    #[arg(long, global = true, env = ENV_KEY)]
    key: Option<PathBuf>,
    /// Authenticate with the bearer secret held in this file (one line); sent over TLS only.
    #[arg(long, global = true, env = ENV_TOKEN_FILE)]
    token_file: Option<PathBuf>,
    /// Connect with TLS using the platform's trusted roots (when no `--ca-cert` is given).
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
    /// Write a consistent backup of the cluster's sessions to FILE (taken by the leader; every
    /// write acknowledged before the command is in it). Restore with `sessiond restore`.
    Backup { file: std::path::PathBuf },
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
            Error::Unauthenticated(_) | Error::PermissionDenied(_) | Error::Tls(_) => 8,
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

/// The header of `status`'s table.
fn status_header() -> String {
    format!(
        "{:<4} {:<22} {:<22} {:<10} {:>5} {:>6} {:>8} {:>8} {:>9} {:<8}",
        "ID",
        "CLIENT",
        "PEER",
        "ROLE",
        "TERM",
        "LEADER",
        "COMMIT",
        "APPLIED",
        "QUORUM_MS",
        "SECURITY"
    )
}

/// One row of `status`'s table: the node's commit index under COMMIT, its applied index
/// under APPLIED, and `INSECURE` when the node runs without TLS and authentication.
fn status_row(addr: &str, s: &pb::StatusResponse) -> String {
    let peer = s
        .members
        .iter()
        .find(|m| m.id == s.node_id)
        .map(|m| m.peer_addr.as_str())
        .unwrap_or_default();
    format!(
        "{:<4} {:<22} {:<22} {:<10} {:>5} {:>6} {:>8} {:>8} {:>9} {:<8}",
        s.node_id,
        addr,
        peer,
        role(s.role),
        s.term,
        s.leader_id,
        s.commit_index,
        s.applied_index,
        s.millis_since_quorum_ack,
        if s.insecure { "INSECURE" } else { "secure" },
    )
}

fn status_json(addr: &str, s: &pb::StatusResponse) -> Value {
    let me = s.members.iter().find(|m| m.id == s.node_id);
    json!({
        "id": s.node_id, "client_addr": addr,
        "peer_addr": me.map(|m| m.peer_addr.clone()).unwrap_or_default(),
        "role": role(s.role), "term": s.term, "leader": s.leader_id,
        "commit_index": s.commit_index, "applied_index": s.applied_index,
        "snapshot_index": s.snapshot_index, "purged_index": s.purged_index,
        "millis_since_quorum_ack": s.millis_since_quorum_ack,
        "insecure": s.insecure,
        "voter": me.map(|m| m.voter).unwrap_or(false),
        "members": s.members.iter().map(|m| json!({
            "id": m.id, "client_addr": m.client_addr,
            "peer_addr": m.peer_addr, "voter": m.voter,
        })).collect::<Vec<_>>(),
    })
}

async fn status(client: &Client, json_out: bool, timeout: Duration) -> Result<(), Failure> {
    let endpoints = client.endpoints();
    if !json_out {
        println!("{}", status_header());
    }
    let mut reached = 0;
    let mut last = Failure(7, "no endpoint answered".into());
    for (i, addr) in endpoints.iter().enumerate() {
        let Some(mut c) = client.cluster_client(i) else {
            continue;
        };
        let mut req = tonic::Request::new(pb::StatusRequest {});
        req.set_timeout(timeout);
        let why = match tokio::time::timeout(timeout, c.status(req)).await {
            Ok(Ok(r)) => {
                reached += 1;
                let s = r.into_inner();
                if json_out {
                    println!("{}", status_json(addr, &s));
                } else {
                    println!("{}", status_row(addr, &s));
                    if s.insecure {
                        eprintln!(
                            "sessionctl: warning: node {} ({addr}) runs --insecure: no TLS, \
                             no authentication",
                            s.node_id
                        );
                    }
                }
                continue;
            }
            Ok(Err(status)) => {
                let e = client.error_from(i, status).await;
                let why = e.to_string();
                last = e.into();
                why
            }
            Err(_) => format!("no answer within {timeout:?}"),
        };
        if json_out {
            println!("{}", json!({ "client_addr": addr, "error": why }));
        } else {
            println!("{:<4} {:<22} unreachable: {why}", "-", addr);
        }
    }
    if reached == 0 {
        return Err(last);
    }
    Ok(())
}

/// Stream a backup from the leader (other nodes name it; each endpoint is tried in turn), check
/// its length and checksum, and write it to `file` through a synced temporary file.
async fn backup(client: &Client, json_out: bool, file: &std::path::Path) -> Result<(), Failure> {
    use futures::StreamExt;
    use sha2::{Digest, Sha256};
    let mut last = Failure(7, "no endpoint answered".into());
    for i in 0..client.endpoints().len() {
        let Some(mut c) = client.cluster_client(i) else {
            continue;
        };
        let mut stream = match c.backup(pb::BackupRequest {}).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                let e = client.error_from(i, s).await;
                if !e.retryable() {
                    return Err(e.into());
                }
                last = e.into();
                continue;
            }
        };
        let (mut bytes, mut applied, mut total) = (Vec::new(), 0, 0);
        let mut broken = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    if bytes.is_empty() {
                        (applied, total) = (c.applied_index, c.total_bytes);
                    }
                    bytes.extend_from_slice(&c.data);
                }
                Err(s) => {
                    broken = Some(client.error_from(i, s).await);
                    break;
                }
            }
        }
        if let Some(e) = broken {
            last = e.into();
            continue;
        }
        let sound = bytes.len() as u64 == total
            && bytes.len() > 32
            && bytes.starts_with(b"SDBACKUP")
            && Sha256::digest(&bytes[..bytes.len() - 32]).as_slice() == &bytes[bytes.len() - 32..];
        if !sound {
            last = Failure(
                7,
                format!("the backup from endpoint {i} arrived damaged or cut short"),
            );
            continue;
        }
        let tmp = file.with_extension("tmp");
        let written = std::fs::File::create(&tmp)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, &bytes)?;
                f.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, file));
        if let Err(e) = written {
            return Err(Failure(6, format!("writing {}: {e}", file.display())));
        }
        let sha256: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        print(
            json_out,
            json!({ "file": file.display().to_string(), "applied_index": applied,
                    "bytes": bytes.len(), "sha256": sha256 }),
        );
        return Ok(());
    }
    Err(last)
}

async fn membership(
    client: &Client,
    json_out: bool,
    call: impl AsyncFn(
        sessiond_proto::v1::cluster_client::ClusterClient<AuthChannel>,
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
                let e = client.error_from(i, s).await;
                if !e.retryable() {
                    return Err(e.into());
                }
                last = e.into();
            }
        }
    }
    Err(last)
}

/// Add or remove voters by id: the leader applies the change to its current configuration,
/// so a lagging node's view or another operator's change at the same time is never undone.
async fn change_voters(
    client: &Client,
    json_out: bool,
    add_voters: Vec<u64>,
    remove_voters: Vec<u64>,
) -> Result<(), Failure> {
    let req = pb::ChangeMembershipRequest {
        voters: Vec::new(),
        retain: false,
        add_voters,
        remove_voters,
    };
    membership(client, json_out, async |mut c| {
        c.change_membership(req.clone()).await
    })
    .await
}

/// The client the flags describe: the same builder settings `Client::from_env` applies.
fn client(cli: &Cli) -> Result<Client, Error> {
    let mut builder = Client::builder(cli.endpoints.clone()).deadline(cli.timeout);
    if cli.tls && cli.ca_cert.is_none() {
        builder = builder.tls(ClientTlsConfig::new().with_native_roots());
    }
    builder
        .security_files(&SecurityFiles {
            ca_cert: cli.ca_cert.clone(),
            cert: cli.cert.clone(),
            key: cli.key.clone(),
            token_file: cli.token_file.clone(),
        })?
        .build()
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let client = client(&cli)?;
    let j = cli.json;
    match cli.command {
        Cmd::Status => status(&client, j, cli.timeout).await,
        Cmd::Backup { file } => backup(&client, j, &file).await,
        Cmd::Snapshot => {
            let mut c = client
                .cluster_client(0)
                .ok_or_else(|| usage("no endpoint"))?;
            match c.trigger_snapshot(pb::TriggerSnapshotRequest {}).await {
                Ok(r) => {
                    print(
                        j,
                        json!({ "snapshot_index": r.into_inner().snapshot_index }),
                    );
                    Ok(())
                }
                Err(s) => Err(client.error_from(0, s).await.into()),
            }
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
            change_voters(&client, j, vec![id], Vec::new()).await
        }
        Cmd::Member(MemberCmd::Remove { id }) => {
            change_voters(&client, j, Vec::new(), vec![id]).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(insecure: bool) -> pb::StatusResponse {
        pb::StatusResponse {
            node_id: 2,
            role: pb::Role::Follower as i32,
            term: 4,
            leader_id: 1,
            commit_index: 120,
            applied_index: 117,
            millis_since_quorum_ack: 0,
            insecure,
            members: vec![pb::Member {
                id: 2,
                client_addr: "10.0.0.2:7001".into(),
                peer_addr: "10.0.0.2:7101".into(),
                voter: true,
            }],
            ..Default::default()
        }
    }

    /// The value of column `name` in `row`.
    fn column(row: &str, name: &str) -> String {
        let header: Vec<String> = status_header()
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let at = header.iter().position(|h| h == name).unwrap();
        row.split_whitespace().nth(at).unwrap().to_string()
    }

    #[test]
    fn status_shows_commit_and_applied_in_their_columns_and_flags_insecure_nodes() {
        let row = status_row("10.0.0.2:7001", &status(false));
        assert_eq!(column(&row, "COMMIT"), "120");
        assert_eq!(column(&row, "APPLIED"), "117");
        assert_eq!(column(&row, "SECURITY"), "secure");
        let row = status_row("10.0.0.2:7001", &status(true));
        assert_eq!(column(&row, "SECURITY"), "INSECURE");
        let j = status_json("10.0.0.2:7001", &status(true));
        assert_eq!(j["commit_index"], 120);
        assert_eq!(j["applied_index"], 117);
        assert_eq!(j["insecure"], true);
    }

    #[tokio::test]
    async fn security_flags_go_through_the_library_checks() {
        let dir = std::env::temp_dir().join(format!(
            "sessionctl-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "app-secret\n").unwrap();
        let token = token.to_str().unwrap();

        let cli = Cli::try_parse_from([
            "sessionctl",
            "--endpoints",
            "127.0.0.1:7001",
            "status",
            "--token-file",
            token,
            "--tls",
        ])
        .unwrap();
        assert!(client(&cli).is_ok());

        // A certificate without its key: the library's error, naming both variables.
        let cli = Cli::try_parse_from([
            "sessionctl",
            "--endpoints",
            "127.0.0.1:7001",
            "--cert",
            token,
            "status",
        ])
        .unwrap();
        match client(&cli) {
            Err(Error::Config(m)) => assert!(m.contains(ENV_KEY), "{m}"),
            other => panic!("{:?}", other.err()),
        }
        let missing = dir.join("missing-ca.crt");
        let cli = Cli::try_parse_from([
            "sessionctl",
            "--endpoints",
            "127.0.0.1:7001",
            "--ca-cert",
            missing.to_str().unwrap(),
            "status",
        ])
        .unwrap();
        match client(&cli) {
            Err(Error::Config(m)) => assert!(m.contains("missing-ca.crt"), "{m}"),
            other => panic!("{:?}", other.err()),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
