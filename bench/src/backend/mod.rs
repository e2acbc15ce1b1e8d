//! The stores behind one set of session operations, each mapped as strongly as the store
//! honestly allows (see `docs/benchmarks.md` for the mappings). sessiond appears twice: through
//! its gRPC client crate and through its HTTP/JSON API, to compare the two protocols.

pub mod etcd;
pub mod http;
pub mod redis;
pub mod sessiond;

use sessiond_workload::Op;

/// What a worker holds for one of its sessions: the token its browser would carry and
/// what the store needs for the next compare-and-swap.
#[derive(Debug, Clone, Default)]
pub struct Handle {
    pub token: String,
    pub user: String,
    pub version: u64,
    /// etcd: the mod revision the worker last saw on the token's key.
    pub revision: i64,
    /// etcd: the lease every key of the session is attached to.
    pub lease: i64,
    /// etcd: the data the worker last wrote (a rotation copies it into the new token's key,
    /// and a transaction cannot read it server-side).
    pub data: Vec<u8>,
}

/// A connected store. Cheap to clone: every worker gets its own clone.
#[derive(Clone)]
pub enum Backend {
    Sessiond(sessiond::Sessiond),
    /// The same cluster as `Sessiond`, over the HTTP/JSON API.
    SessiondHttp(http::Http),
    // etcd's clients are large by value; boxed so every variant is a pointer or two.
    Etcd(Box<etcd::Etcd>),
    Redis(redis::Redis),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sessiond(_) => "sessiond",
            Backend::SessiondHttp(_) => "sessiond-http",
            Backend::Etcd(_) => "etcd",
            Backend::Redis(_) => "redis",
        }
    }

    /// Whether the store has an honest mapping of `op` (only sessiond has bounded-staleness
    /// follower reads).
    pub fn supports(&self, op: Op) -> bool {
        op != Op::GetStale || matches!(self, Backend::Sessiond(_) | Backend::SessiondHttp(_))
    }

    pub async fn create(&mut self, user: &str, data: &[u8]) -> anyhow::Result<Handle> {
        match self {
            Backend::Sessiond(b) => b.create(user, data).await,
            Backend::SessiondHttp(b) => b.create(user, data).await,
            Backend::Etcd(b) => b.create(user, data).await,
            Backend::Redis(b) => b.create(user, data).await,
        }
    }

    /// Validate the token; `stale` reads from the receiving node's state.
    pub async fn get(&mut self, h: &Handle, stale: bool) -> anyhow::Result<()> {
        match self {
            Backend::Sessiond(b) => b.get(h, stale).await,
            Backend::SessiondHttp(b) => b.get(h, stale).await,
            Backend::Etcd(b) => b.get(h).await,
            Backend::Redis(b) => b.get(h).await,
        }
    }

    /// Rotate the token; `h` holds the new one afterwards.
    pub async fn rotate(&mut self, h: &mut Handle) -> anyhow::Result<()> {
        match self {
            Backend::Sessiond(b) => b.rotate(h).await,
            Backend::SessiondHttp(b) => b.rotate(h).await,
            Backend::Etcd(b) => b.rotate(h).await,
            Backend::Redis(b) => b.rotate(h).await,
        }
    }

    /// Save new data with compare-and-swap on the version the worker last saw.
    pub async fn update(&mut self, h: &mut Handle, data: &[u8]) -> anyhow::Result<()> {
        match self {
            Backend::Sessiond(b) => b.update(h, data).await,
            Backend::SessiondHttp(b) => b.update(h, data).await,
            Backend::Etcd(b) => b.update(h, data).await,
            Backend::Redis(b) => b.update(h, data).await,
        }
    }

    pub async fn revoke(&mut self, h: &Handle) -> anyhow::Result<()> {
        match self {
            Backend::Sessiond(b) => b.revoke(h).await,
            Backend::SessiondHttp(b) => b.revoke(h).await,
            Backend::Etcd(b) => b.revoke(h).await,
            Backend::Redis(b) => b.revoke(h).await,
        }
    }
}

/// A new random token (32 bytes, base64url), as a session middleware mints them.
pub fn new_token() -> String {
    use base64::Engine;
    let raw: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// How long a session lives unless refreshed (the same for every store).
pub const IDLE_TIMEOUT_SECS: i64 = 1800;
/// How long a rotated-away token keeps answering (the grace window).
pub const GRACE_SECS: i64 = 10;
