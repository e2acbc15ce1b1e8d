//! etcd v3: a session is a key per token holding the record, attached to a lease (expiry),
//! plus a user-index key under `u/<user>/`. Rotation is one transaction that compares the
//! old token key's mod revision and writes the new token key and the old one marked with
//! its successor; an update is the same compare on the token key; revoke revokes the lease,
//! which deletes every key of the session. Gets are linearizable ranges. etcd has no
//! per-key TTL, so a rotated-away token lives (marked) as long as its session's lease.

use super::{new_token, Handle, IDLE_TIMEOUT_SECS};
use anyhow::Context;
use etcd_client::{Client, Compare, CompareOp, KvClient, LeaseClient, PutOptions, Txn, TxnOp};

#[derive(Clone)]
pub struct Etcd {
    kv: KvClient,
    lease: LeaseClient,
}

/// The stored record: version, successor token (empty while current), user, data.
fn record(version: u64, successor: &str, user: &str, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + successor.len() + user.len() + data.len());
    v.extend_from_slice(&version.to_be_bytes());
    v.push(successor.len() as u8);
    v.extend_from_slice(successor.as_bytes());
    v.push(user.len() as u8);
    v.extend_from_slice(user.as_bytes());
    v.extend_from_slice(data);
    v
}

/// (version, successor, data) of a record.
fn parse(v: &[u8]) -> anyhow::Result<(u64, String, Vec<u8>)> {
    let version = u64::from_be_bytes(v.get(..8).context("short record")?.try_into()?);
    let sl = *v.get(8).context("short record")? as usize;
    let succ = String::from_utf8(v.get(9..9 + sl).context("short record")?.to_vec())?;
    let ul = *v.get(9 + sl).context("short record")? as usize;
    let data = v.get(10 + sl + ul..).context("short record")?.to_vec();
    Ok((version, succ, data))
}

fn key(token: &str) -> String {
    format!("s/{token}")
}

impl Etcd {
    pub async fn connect(endpoints: &[String]) -> anyhow::Result<Etcd> {
        let client = Client::connect(endpoints, None).await?;
        Ok(Etcd {
            kv: client.kv_client(),
            lease: client.lease_client(),
        })
    }

    pub async fn create(&mut self, user: &str, data: &[u8]) -> anyhow::Result<Handle> {
        let lease = self.lease.grant(IDLE_TIMEOUT_SECS, None).await?.id();
        let token = new_token();
        let id = new_token();
        let opts = || Some(PutOptions::new().with_lease(lease));
        let txn = Txn::new().and_then([
            TxnOp::put(key(&token), record(1, "", user, data), opts()),
            TxnOp::put(format!("u/{user}/{id}"), token.as_bytes(), opts()),
        ]);
        let r = self.kv.txn(txn).await?;
        let revision = r.header().context("no header")?.revision();
        Ok(Handle {
            token,
            user: user.to_string(),
            version: 1,
            revision,
            lease,
            data: data.to_vec(),
        })
    }

    pub async fn get(&mut self, h: &Handle) -> anyhow::Result<()> {
        let r = self.kv.get(key(&h.token), None).await?;
        let kv = r.kvs().first().context("no such session")?;
        parse(kv.value())?;
        Ok(())
    }

    /// One transaction when the worker's cached revision is current (the common case: the
    /// application wrote the session last); a range first when it is not.
    pub async fn rotate(&mut self, h: &mut Handle) -> anyhow::Result<()> {
        if !self.try_rotate(h).await? {
            let current = self.kv.get(key(&h.token), None).await?;
            let kv = current.kvs().first().context("no such session")?;
            let (version, succ, data) = parse(kv.value())?;
            anyhow::ensure!(succ.is_empty(), "token already rotated");
            h.revision = kv.mod_revision();
            h.version = version;
            h.data = data;
            anyhow::ensure!(self.try_rotate(h).await?, "lost a rotation race");
        }
        Ok(())
    }

    async fn try_rotate(&mut self, h: &mut Handle) -> anyhow::Result<bool> {
        let old = key(&h.token);
        let next = new_token();
        let opts = || Some(PutOptions::new().with_lease(h.lease));
        let txn = Txn::new()
            .when([Compare::mod_revision(
                old.clone(),
                CompareOp::Equal,
                h.revision,
            )])
            .and_then([
                TxnOp::put(
                    key(&next),
                    record(h.version + 1, "", &h.user, &h.data),
                    opts(),
                ),
                TxnOp::put(old, record(h.version, &next, &h.user, &h.data), opts()),
            ]);
        let r = self.kv.txn(txn).await?;
        if !r.succeeded() {
            return Ok(false);
        }
        h.revision = r.header().context("no header")?.revision();
        h.token = next;
        h.version += 1;
        Ok(true)
    }

    pub async fn update(&mut self, h: &mut Handle, data: &[u8]) -> anyhow::Result<()> {
        let k = key(&h.token);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                k.clone(),
                CompareOp::Equal,
                h.revision,
            )])
            .and_then([TxnOp::put(
                k,
                record(h.version + 1, "", &h.user, data),
                Some(PutOptions::new().with_lease(h.lease)),
            )]);
        let r = self.kv.txn(txn).await?;
        anyhow::ensure!(r.succeeded(), "version conflict");
        h.revision = r.header().context("no header")?.revision();
        h.version += 1;
        h.data = data.to_vec();
        Ok(())
    }

    pub async fn revoke(&mut self, h: &Handle) -> anyhow::Result<()> {
        self.lease.revoke(h.lease).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = record(7, "next", "alice", b"data");
        assert_eq!(parse(&r).unwrap(), (7, "next".into(), b"data".to_vec()));
        assert!(parse(&r[..5]).is_err());
    }
}
