//! sessiond through its client crate: every operation is one RPC, mutations replicated and
//! synced through Raft, gets linearizable (ReadIndex) unless stale.

use super::Handle;
use sessiond_client::{Client, Consistency, NewSession, SessionRef};

#[derive(Clone)]
pub struct Sessiond {
    client: Client,
}

impl Sessiond {
    /// A client of the nodes at `endpoints`, over TLS with `tls` when given.
    pub fn connect(
        endpoints: &[String],
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> anyhow::Result<Sessiond> {
        let builder = Client::builder(endpoints.to_vec());
        let builder = match tls {
            Some(tls) => builder.tls(tls),
            None => builder,
        };
        Ok(Sessiond {
            client: builder.build()?,
        })
    }

    pub async fn create(&mut self, user: &str, data: &[u8]) -> anyhow::Result<Handle> {
        let c = self
            .client
            .create_session(NewSession {
                user_id: user.to_string(),
                data: data.to_vec(),
                ..NewSession::default()
            })
            .await?;
        Ok(Handle {
            token: c.token,
            user: user.to_string(),
            version: c.session.version,
            ..Handle::default()
        })
    }

    pub async fn get(&mut self, h: &Handle, stale: bool) -> anyhow::Result<()> {
        let consistency = if stale {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        };
        self.client
            .get_session(&h.token, consistency, false)
            .await?;
        Ok(())
    }

    pub async fn rotate(&mut self, h: &mut Handle) -> anyhow::Result<()> {
        let r = self.client.rotate_token(&h.token).await?;
        h.token = r.token;
        h.version = r.session.version;
        Ok(())
    }

    pub async fn update(&mut self, h: &mut Handle, data: &[u8]) -> anyhow::Result<()> {
        let s = self
            .client
            .update_session(
                SessionRef::Token(h.token.clone()),
                h.version,
                Some(data.to_vec()),
                None,
            )
            .await?;
        h.version = s.version;
        Ok(())
    }

    pub async fn revoke(&mut self, h: &Handle) -> anyhow::Result<()> {
        self.client
            .revoke_session(SessionRef::Token(h.token.clone()), "logout")
            .await?;
        Ok(())
    }
}
