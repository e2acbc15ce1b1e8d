//! A scripted scenario that pins down the one interleaving a stale read needs, so the
//! proof that the harness catches one does not depend on a random schedule landing on it.
//!
//! The leader is cut off from its peers; the majority elects a new leader; a tab saves new
//! data and rotates through the majority; then a tab that only knows the deposed leader
//! reads the session linearizably. A correct node cannot confirm its leadership and times
//! out (an `info` read, which proves nothing); a node that answers from its own frozen state
//! returns the old version — a read that the checker must reject, because it began after
//! the update and the rotation had been acknowledged.

use crate::browser::{
    error_value, read_value, session_value, tab_client, BrowserOptions, Call, Recorder,
};
use crate::cluster::{Cluster, NodeSpec};
use crate::history::{fingerprint, op, Args, Clock, Event, Outcome};
use crate::nemesis;
use anyhow::Context;
use sessiond_client::{Client, Consistency, NewSession, SessionRef};
use std::collections::HashMap;
use std::time::Duration;

/// What the probe saw (for the test's messages).
pub struct ProbeResult {
    pub events: Vec<Event>,
    /// The deposed leader's answer to the read: `Ok` means it served one.
    pub stale_read_served: bool,
}

const USER: &str = "probe-user";

/// Run the stale-read scenario on a started cluster; everything is healed at the end and
/// the session read back once more.
pub async fn stale_read<C: Cluster>(cluster: &mut C) -> anyhow::Result<ProbeResult> {
    let rec = Recorder::new(Clock::start());
    let nodes = cluster.nodes();
    let old = nemesis::wait_for_leader(&nodes, Duration::from_secs(30))
        .await
        .context("no leader before the probe")?;
    let endpoint = |id| -> anyhow::Result<String> {
        nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.endpoint.clone())
            .context("leader not among the nodes")
    };
    let opts = BrowserOptions::default();
    let everyone: Vec<String> = nodes.iter().map(|n| n.endpoint.clone()).collect();
    let client = tab_client(&everyone, 0, false, &opts)?;

    // Log in while the cluster is whole.
    let data = b"before".to_vec();
    let call = Call::new(
        &rec,
        "probe.login",
        None,
        op::CREATE,
        Args {
            user: Some(USER.into()),
            data: Some(fingerprint(&data)),
            ..Args::default()
        },
    );
    let created = client
        .create_session(NewSession {
            user_id: USER.into(),
            data,
            attributes: HashMap::new(),
            idle_timeout: None,
            absolute_timeout: None,
        })
        .await
        .context("create before the partition")?;
    let mut call = call;
    call.event.session = Some(created.session.id.clone());
    let mut v = session_value(&created.session);
    v.token = Some(fingerprint(created.token.as_bytes()));
    v.replayed = Some(created.replayed);
    call.finish(&rec, Outcome::Ok, v);
    let session = created.session.id.clone();

    // The old leader must have applied the create, or its stale answer would be NOT_FOUND.
    let stale = tab_client(&[endpoint(old)?], 0, true, &opts)?;
    let seen = stale
        .get_session(&created.token, Consistency::Linearizable, false)
        .await;
    anyhow::ensure!(seen.is_ok(), "old leader did not serve the new session");

    // Cut the leader off and wait for the majority's leader.
    let rest: Vec<NodeSpec> = nodes.iter().filter(|n| n.id != old).cloned().collect();
    let rest_ids: Vec<u64> = rest.iter().map(|n| n.id).collect();
    cluster.partition(&[vec![old], rest_ids]).await?;
    let new = nemesis::wait_for_leader(&rest, Duration::from_secs(30))
        .await
        .context("the majority elected no leader")?;
    anyhow::ensure!(
        new != old,
        "the isolated node is still the majority's leader"
    );
    let majority = tab_client(
        &rest.iter().map(|n| n.endpoint.clone()).collect::<Vec<_>>(),
        0,
        false,
        &opts,
    )?;

    // Save and rotate through the majority.
    let saved = b"after".to_vec();
    let call = Call::new(
        &rec,
        "probe.majority",
        Some(&session),
        op::UPDATE,
        Args {
            user: Some(USER.into()),
            token: Some(fingerprint(created.token.as_bytes())),
            expected_version: Some(created.session.version),
            data: Some(fingerprint(&saved)),
            ..Args::default()
        },
    );
    let r = majority
        .update_session(
            SessionRef::Token(created.token.clone()),
            created.session.version,
            Some(saved),
            None,
        )
        .await;
    match &r {
        Ok(s) => call.finish(&rec, Outcome::Ok, session_value(s)),
        Err(e) => {
            let (o, v) = error_value(e);
            call.finish(&rec, o, v)
        }
    }
    r.context("update through the majority")?;
    let call = Call::new(
        &rec,
        "probe.majority",
        Some(&session),
        op::ROTATE,
        Args {
            user: Some(USER.into()),
            token: Some(fingerprint(created.token.as_bytes())),
            ..Args::default()
        },
    );
    let rotated = majority.rotate_token(&created.token).await;
    let newest = match rotated {
        Ok(rot) => {
            let mut v = session_value(&rot.session);
            v.token = Some(fingerprint(rot.token.as_bytes()));
            v.rotated = Some(rot.rotated);
            v.replayed = Some(rot.replayed);
            call.finish(&rec, Outcome::Ok, v);
            rot.token
        }
        Err(e) => {
            let (o, v) = error_value(&e);
            call.finish(&rec, o, v);
            anyhow::bail!("rotate through the majority: {e}");
        }
    };

    // Now the tab that only knows the deposed leader reads, linearizably.
    let token = created.token.clone();
    let stale_read_served = read(&rec, &stale, "probe.pinned", &session, &token, false).await;

    // Heal, and read the newest token back once the cluster agrees on a leader.
    cluster.heal().await?;
    nemesis::wait_for_leader(&nodes, Duration::from_secs(30))
        .await
        .context("no leader after healing")?;
    read(&rec, &client, "final", &session, &newest, true).await;
    let mut events = rec.take();
    events.sort_by_key(|e| (e.invoke_ns, e.complete_ns));
    Ok(ProbeResult {
        events,
        stale_read_served,
    })
}

/// A recorded linearizable read of `token`; whether the store served it.
async fn read(
    rec: &Recorder,
    client: &Client,
    process: &str,
    session: &str,
    token: &str,
    final_read: bool,
) -> bool {
    let call = Call::new(
        rec,
        process,
        Some(session),
        op::GET,
        Args {
            user: Some(USER.into()),
            token: Some(fingerprint(token.as_bytes())),
            final_read,
            ..Args::default()
        },
    );
    let r = client
        .get_session(token, Consistency::Linearizable, false)
        .await;
    let served = r.is_ok();
    let (outcome, value) = read_value(&r);
    call.finish(rec, outcome, value);
    served
}
