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
use crate::cluster::{Cluster, NodeId, NodeSpec};
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
    let created = login(&rec, &client, "probe.login", b"before".to_vec(), None)
        .await
        .context("create before the partition")?;
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

/// What the clock probe saw.
pub struct ClockProbeResult {
    pub events: Vec<Event>,
    /// Sessions that a read called expired (or gone) right after the leader's clock jumped.
    pub expired_early: usize,
}

/// The clock scenario: sessions with hour-long timeouts exist; the leader's wall clock jumps
/// a day ahead; a write makes the leader stamp an entry; then every session is read
/// linearizably. A stamp that follows the voters' clocks changes nothing; a stamp taken from
/// the leader's own clock expires every session — which the checker must reject, because
/// each read is an hour before the session's deadline.
pub async fn leader_clock_ahead<C: Cluster>(cluster: &mut C) -> anyhow::Result<ClockProbeResult> {
    const SESSIONS: usize = 5;
    const DAY_MS: i64 = 86_400_000;
    let rec = Recorder::new(Clock::start());
    let nodes = cluster.nodes();
    let leader = nemesis::wait_for_leader(&nodes, Duration::from_secs(30))
        .await
        .context("no leader before the probe")?;
    let opts = BrowserOptions::default();
    let everyone: Vec<String> = nodes.iter().map(|n| n.endpoint.clone()).collect();
    let client = tab_client(&everyone, 0, false, &opts)?;
    let hour = Duration::from_millis(crate::policy::LONG_SESSION_MS);
    let mut sessions = Vec::new();
    for i in 0..=SESSIONS {
        if i == SESSIONS {
            // The jump, then one more write for the leader to stamp.
            cluster.set_clock_offset(leader, DAY_MS).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let data = format!("clock-{i}").into_bytes();
        let created = login(&rec, &client, "probe.login", data, Some(hour))
            .await
            .with_context(|| format!("create {i}"))?;
        if i < SESSIONS {
            sessions.push((created.session.id, created.token));
        }
    }
    // Let the leader's sweeper act on whatever time it now believes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut expired_early = 0;
    for (id, token) in &sessions {
        if !read(&rec, &client, "probe.reader", id, token, false).await {
            expired_early += 1;
        }
    }
    cluster.set_clock_offset(leader, 0).await?;
    let mut events = rec.take();
    events.sort_by_key(|e| (e.invoke_ns, e.complete_ns));
    Ok(ClockProbeResult {
        events,
        expired_early,
    })
}

/// What the lagging-follower probe saw.
pub struct LagProbeResult {
    pub events: Vec<Event>,
    /// STALE reads the catching-up follower answered with the revoked session.
    pub stale_valid: usize,
    /// STALE reads it answered at all (either way).
    pub answered: usize,
}

/// Concurrent STALE readers of the lagging-follower probe.
const READERS: usize = 8;

/// The lagging-follower scenario: a follower is cut off; through the majority, `backlog`
/// sessions are created one by one (one log entry each) and then a session the follower
/// knows is revoked; after the stale-read bound has passed, the follower is healed and read
/// STALE, pinned, as fast as it answers, while it catches up. A follower that serves only
/// once it has applied what the leader told it answers REVOKED (or forwards); one counted
/// fresh while behind validates the revoked token — beyond the bound, which the checker must
/// reject. Run it on a cluster that keeps its log (no snapshot install shortcut).
pub async fn lagging_follower<C: Cluster>(
    cluster: &mut C,
    backlog: usize,
) -> anyhow::Result<LagProbeResult> {
    let rec = Recorder::new(Clock::start());
    let nodes = cluster.nodes();
    let leader = nemesis::wait_for_leader(&nodes, Duration::from_secs(30))
        .await
        .context("no leader before the probe")?;
    let follower = nodes
        .iter()
        .find(|n| n.id != leader)
        .context("no follower")?
        .clone();
    let opts = BrowserOptions::default();
    let rest: Vec<NodeSpec> = nodes
        .iter()
        .filter(|n| n.id != follower.id)
        .cloned()
        .collect();
    let majority = tab_client(
        &rest.iter().map(|n| n.endpoint.clone()).collect::<Vec<_>>(),
        0,
        false,
        &opts,
    )?;
    let pinned = tab_client(std::slice::from_ref(&follower.endpoint), 0, true, &opts)?;

    let hour = Duration::from_millis(crate::policy::LONG_SESSION_MS);
    let created = login(&rec, &majority, "probe.login", b"lag".to_vec(), Some(hour)).await?;
    let session = created.session.id.clone();
    let token = created.token.clone();
    // The follower has it before it is cut off.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pinned
        .get_session(&token, Consistency::Stale, false)
        .await
        .is_err()
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the follower never served the session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let rest_ids: Vec<u64> = rest.iter().map(|n| n.id).collect();
    cluster.partition(&[vec![follower.id], rest_ids]).await?;
    for i in 0..backlog {
        majority
            .create_session(NewSession {
                user_id: format!("backlog-{i}"),
                data: vec![b'x'; 256],
                attributes: HashMap::new(),
                idle_timeout: Some(hour),
                absolute_timeout: Some(hour),
            })
            .await
            .context("backlog create")?;
    }
    let call = Call::new(
        &rec,
        "probe.logout",
        Some(&session),
        op::REVOKE,
        Args {
            user: Some(USER.into()),
            token: Some(fingerprint(token.as_bytes())),
            ..Args::default()
        },
    );
    match majority
        .revoke_session(SessionRef::Token(token.clone()), "logout")
        .await
    {
        Ok(already) => call.finish(
            &rec,
            Outcome::Ok,
            crate::history::Value {
                already_revoked: Some(already),
                ..Default::default()
            },
        ),
        Err(e) => {
            let (o, v) = error_value(&e);
            call.finish(&rec, o, v);
            anyhow::bail!("revoke through the majority: {e}");
        }
    }
    // Past the bound (and the skew the checker allows), heal and read while it catches up.
    let wait = crate::policy::STALE_READ_BOUND_MS + crate::policy::CLOCK_SKEW_MS + 200;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    cluster.heal().await?;
    // Several readers at once: a read that waits on the way to the leader must not leave the
    // catch-up unobserved.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let readers = (0..READERS).map(|r| {
        let (rec, pinned, session, token) =
            (rec.clone(), pinned.clone(), session.clone(), token.clone());
        tokio::spawn(async move {
            let (mut valid, mut answered) = (0usize, 0usize);
            while tokio::time::Instant::now() < until {
                let call = Call::new(
                    &rec,
                    &format!("probe.follower{r}"),
                    Some(&session),
                    op::GET,
                    Args {
                        user: Some(USER.into()),
                        token: Some(fingerprint(token.as_bytes())),
                        consistency: Some("stale".into()),
                        ..Args::default()
                    },
                );
                let res = pinned.get_session(&token, Consistency::Stale, false).await;
                valid += usize::from(res.is_ok());
                let (outcome, value) = read_value(&res);
                answered += usize::from(outcome != Outcome::Info);
                call.finish(&rec, outcome, value);
            }
            (valid, answered)
        })
    });
    let (mut stale_valid, mut answered) = (0, 0);
    for r in futures::future::join_all(readers).await {
        let (v, a) = r.context("a reader panicked")?;
        stale_valid += v;
        answered += a;
    }
    let mut events = rec.take();
    events.sort_by_key(|e| (e.invoke_ns, e.complete_ns));
    Ok(LagProbeResult {
        events,
        stale_valid,
        answered,
    })
}

/// What the late-commit probe saw.
pub struct LateCommitResult {
    pub events: Vec<Event>,
    /// The other tab's previous token was judged a reuse (`TOKEN_REUSED`) right after the
    /// rotation became visible.
    pub judged_reuse: bool,
    /// The other tab's answer, for the test's message.
    pub answer: String,
}

/// The late-commit scenario, on five nodes. The leader and one follower, A, are cut off
/// from the other three, which are cut off from each other (so nobody can be elected
/// meanwhile). A tab rotates through the leader: the entry reaches A, not a majority. After
/// more than a grace window, the leader is cut off and A is made the only node that can win
/// (the other three reach only A): A commits the rotation with its first entry. Another tab
/// then presents the previous token through A. The rotation has just become visible, so the
/// token is inside its grace window: superseded, not a reuse — although the rotation's stamp
/// is older than the grace window.
pub async fn late_commit<C: Cluster>(cluster: &mut C) -> anyhow::Result<LateCommitResult> {
    let rec = Recorder::new(Clock::start());
    let nodes = cluster.nodes();
    anyhow::ensure!(nodes.len() == 5, "the late-commit probe needs five nodes");
    let leader = nemesis::wait_for_leader(&nodes, Duration::from_secs(30))
        .await
        .context("no leader before the probe")?;
    let spec = |id| nodes.iter().find(|n| n.id == id).cloned();
    let others: Vec<NodeId> = nodes
        .iter()
        .map(|n| n.id)
        .filter(|&i| i != leader)
        .collect();
    let (a, rest) = others.split_first().context("no follower")?;
    let a_spec = spec(*a).context("follower A")?;
    let opts = BrowserOptions::default();
    let everyone: Vec<String> = nodes.iter().map(|n| n.endpoint.clone()).collect();
    let client = tab_client(&everyone, 0, false, &opts)?;
    let hour = Duration::from_millis(crate::policy::LONG_SESSION_MS);
    let created = login(&rec, &client, "probe.login", b"late".to_vec(), Some(hour)).await?;
    let session = created.session.id.clone();
    let old = created.token.clone();
    // Every node has the session before the cut.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut groups = vec![vec![leader, *a]];
    groups.extend(rest.iter().map(|&n| vec![n]));
    cluster.partition(&groups).await?;
    let at_leader = tab_client(&[spec(leader).context("leader")?.endpoint], 0, true, &opts)?;
    let rotation = {
        let (rec, old, session) = (rec.clone(), old.clone(), session.clone());
        tokio::spawn(async move {
            let call = Call::new(
                &rec,
                "probe.rotate",
                Some(&session),
                op::ROTATE,
                Args {
                    user: Some(USER.into()),
                    token: Some(fingerprint(old.as_bytes())),
                    ..Args::default()
                },
            );
            match at_leader.rotate_token(&old).await {
                Ok(rot) => {
                    let mut v = session_value(&rot.session);
                    v.token = Some(fingerprint(rot.token.as_bytes()));
                    v.rotated = Some(rot.rotated);
                    v.replayed = Some(rot.replayed);
                    call.finish(&rec, Outcome::Ok, v);
                }
                Err(e) => {
                    let (o, v) = error_value(&e);
                    call.finish(&rec, o, v);
                }
            }
        })
    };
    let grace = crate::policy::GRACE_WINDOW_MS;
    tokio::time::sleep(Duration::from_millis(grace + grace / 2)).await;

    // Only A can win now: the leader is alone, the other three reach only A.
    cluster.partition(&[vec![leader], others.clone()]).await?;
    for &x in rest {
        for &y in rest {
            if x != y {
                cluster.cut_one_way(x, y).await?;
            }
        }
    }
    let elected = nemesis::wait_for_leader(std::slice::from_ref(&a_spec), Duration::from_secs(30))
        .await
        .context("A was not elected")?;
    anyhow::ensure!(elected == *a, "node {elected} leads instead of A");

    let other_tab = tab_client(std::slice::from_ref(&a_spec.endpoint), 0, true, &opts)?;
    let call = Call::new(
        &rec,
        "probe.other-tab",
        Some(&session),
        op::GET,
        Args {
            user: Some(USER.into()),
            token: Some(fingerprint(old.as_bytes())),
            ..Args::default()
        },
    );
    let r = other_tab
        .get_session(&old, Consistency::Linearizable, false)
        .await;
    let answer = format!("{r:?}");
    let judged_reuse = matches!(r, Err(sessiond_client::Error::TokenReused));
    let (outcome, value) = read_value(&r);
    call.finish(&rec, outcome, value);

    cluster.heal().await?;
    let _ = tokio::time::timeout(Duration::from_secs(20), rotation).await;
    let mut events = rec.take();
    events.sort_by_key(|e| (e.invoke_ns, e.complete_ns));
    Ok(LateCommitResult {
        events,
        judged_reuse,
        answer,
    })
}

/// A recorded create of a session of the probe's user.
async fn login(
    rec: &Recorder,
    client: &Client,
    process: &str,
    data: Vec<u8>,
    lifetime: Option<Duration>,
) -> anyhow::Result<sessiond_client::Created> {
    let call = Call::new(
        rec,
        process,
        None,
        op::CREATE,
        Args {
            user: Some(USER.into()),
            data: Some(fingerprint(&data)),
            ..Args::default()
        },
    );
    let r = client
        .create_session(NewSession {
            user_id: USER.into(),
            data,
            attributes: HashMap::new(),
            idle_timeout: lifetime,
            absolute_timeout: lifetime,
        })
        .await;
    match r {
        Ok(created) => {
            let mut call = call;
            call.event.session = Some(created.session.id.clone());
            let mut v = session_value(&created.session);
            v.token = Some(fingerprint(created.token.as_bytes()));
            v.replayed = Some(created.replayed);
            call.finish(rec, Outcome::Ok, v);
            Ok(created)
        }
        Err(e) => {
            let (o, v) = error_value(&e);
            call.finish(rec, o, v);
            anyhow::bail!("create: {e}")
        }
    }
}
