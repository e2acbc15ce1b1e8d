//! Leader loss under load and a restarted node catching up.

use sessiond_proto::v1::*;
use sessiond_tests::{req, wait_for, TestCluster};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Create with retries against every node, always with the same request id, until acknowledged
/// or the deadline passes.
async fn create_with_retries(
    clients: &[sessiond_proto::v1::sessions_client::SessionsClient<tonic::transport::Channel>],
    request: CreateSessionRequest,
    deadline: Instant,
) -> Option<CreateSessionResponse> {
    let mut attempt = 0usize;
    while Instant::now() < deadline {
        let mut c = clients[attempt % clients.len()].clone();
        attempt += 1;
        match tokio::time::timeout(Duration::from_secs(3), c.create_session(request.clone())).await
        {
            Ok(Ok(r)) => return Some(r.into_inner()),
            Ok(Err(s)) if s.code() == tonic::Code::InvalidArgument => panic!("refused: {s:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_killed_mid_load_loses_no_acknowledged_write() {
    let mut c = TestCluster::start3().await;
    let clients = vec![c.client(0).await, c.client(1).await, c.client(2).await];
    let acked = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut tasks = Vec::new();
    for w in 0..4 {
        let clients = clients.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let r = req::create(&format!("load-{w}"), format!("{w}-{i}").as_bytes());
                if let Some(ok) = create_with_retries(&clients, r, deadline).await {
                    acked.lock().await.push(ok.token);
                }
            }
        }));
    }
    // Kill the leader while the writers run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old = c.leader().await;
    c.kill(old);
    for t in tasks {
        t.await.unwrap();
    }
    let new = c.leader().await;
    assert_ne!(new, old, "a new leader was elected");
    let acked = acked.lock().await.clone();
    assert_eq!(
        acked.len(),
        200,
        "every create was acknowledged within the deadline"
    );
    let mut l = c.client(new).await;
    for t in &acked {
        l.get_session(req::get(t))
            .await
            .expect("acknowledged create is readable");
    }
    // No create was applied twice: each writer's user holds exactly its 50 sessions.
    for w in 0..4 {
        let list = l
            .list_user_sessions(ListUserSessionsRequest {
                user_id: format!("load-{w}"),
                consistency: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.sessions.len(), 50);
    }

    // The killed node restarts from its data directory and catches up.
    c.restart(old);
    let leader_applied = c.status(new).await.unwrap().applied_index;
    wait_for(
        Duration::from_secs(20),
        "restarted node to catch up",
        || {
            let c = &c;
            async move {
                let s = c.status(old).await?;
                (s.applied_index >= leader_applied).then_some(())
            }
        },
    )
    .await;
    let mut back = c.client(old).await;
    let last = acked.last().unwrap().clone();
    wait_for(
        Duration::from_secs(10),
        "stale read on the restarted node",
        || {
            let mut back = back.clone();
            let last = last.clone();
            async move { back.get_session(req::get_stale(&last)).await.ok() }
        },
    )
    .await;
    back.get_session(req::get(&acked[0])).await.unwrap();
}
