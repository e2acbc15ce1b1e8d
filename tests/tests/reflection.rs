//! Server reflection on the client port, in both versions tools ask: v1 (grpcurl) and v1alpha
//! (grpcio-reflection, Postman, grpcui, older grpcurl). Each lists the services and describes
//! `sessiond.v1.Sessions`; both need a credential like every other call.

use sessiond_tests::{plaintext_channel, TestCluster};
use tokio_stream::StreamExt;
use tonic_reflection::pb::{v1, v1alpha};

const SERVICES: [&str; 3] = [
    "sessiond.v1.Sessions",
    "sessiond.v1.Cluster",
    "grpc.health.v1.Health",
];

/// Ask one reflection version (`$v`, the module of its generated types) over `$channel` to
/// list the services and to describe `sessiond.v1.Sessions`; assert both answers. The two
/// versions are the same protocol in two packages, so one body serves both.
macro_rules! reflect {
    ($v:ident, $channel:expr) => {{
        use $v::server_reflection_request::MessageRequest as Ask;
        use $v::server_reflection_response::MessageResponse as Answer;
        let ask = |r| $v::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(r),
        };
        let asks = vec![
            ask(Ask::ListServices(String::new())),
            ask(Ask::FileContainingSymbol("sessiond.v1.Sessions".into())),
        ];
        let mut answers = $v::server_reflection_client::ServerReflectionClient::new($channel)
            .server_reflection_info(tokio_stream::iter(asks))
            .await
            .expect(stringify!($v))
            .into_inner();
        match answers
            .next()
            .await
            .expect("an answer")
            .expect("ok")
            .message_response
        {
            Some(Answer::ListServicesResponse(l)) => {
                let names: Vec<String> = l.service.into_iter().map(|s| s.name).collect();
                for s in SERVICES {
                    let v = stringify!($v);
                    assert!(names.iter().any(|n| n == s), "{v}: {s} not in {names:?}");
                }
            }
            other => panic!("{} list: {other:?}", stringify!($v)),
        }
        match answers
            .next()
            .await
            .expect("an answer")
            .expect("ok")
            .message_response
        {
            Some(Answer::FileDescriptorResponse(f)) => assert!(!f.file_descriptor_proto.is_empty()),
            other => panic!("{} symbol: {other:?}", stringify!($v)),
        }
    }};
}

#[tokio::test(flavor = "multi_thread")]
async fn reflection_answers_in_v1_and_v1alpha() {
    let c = TestCluster::start3().await;
    reflect!(v1, c.channel_as(sessiond_tests::ADMIN, 0));
    reflect!(v1alpha, c.channel_as(sessiond_tests::ADMIN, 1));

    // Without a credential: refused.
    let mut anonymous = v1alpha::server_reflection_client::ServerReflectionClient::new(
        plaintext_channel(&c.nodes[0].client_addr),
    );
    let ask = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let r = anonymous
        .server_reflection_info(tokio_stream::iter(vec![ask]))
        .await;
    let refused = match r {
        Err(_) => true,
        Ok(s) => s.into_inner().next().await.is_none_or(|a| a.is_err()),
    };
    assert!(refused, "reflection without a credential answered");
}
