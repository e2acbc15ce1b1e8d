//! Redis (one node, AOF `everysec`: neither replicated nor linearizable, and up to a second
//! of acknowledged writes lost on a crash): a session is a hash per token with a TTL plus a
//! user-index set. Rotation, update and revoke are Lua scripts, so each is atomic and one
//! round trip; a get is one HMGET.

use super::{new_token, Handle, GRACE_SECS, IDLE_TIMEOUT_SECS};
use anyhow::Context;
use redis::aio::MultiplexedConnection;
use redis::Script;
use std::sync::Arc;

#[derive(Clone)]
pub struct Redis {
    con: MultiplexedConnection,
    scripts: Arc<Scripts>,
}

struct Scripts {
    create: Script,
    rotate: Script,
    update: Script,
    revoke: Script,
}

const CREATE: &str = r#"
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'user', ARGV[2], 'ver', 1, 'data', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
return 1
"#;

// KEYS: old token, new token. ARGV: ttl, grace. Returns the new version, or an error.
const ROTATE: &str = r#"
local f = redis.call('HMGET', KEYS[1], 'id', 'user', 'ver', 'data', 'succ')
if not f[1] then return redis.error_reply('NOT_FOUND') end
if f[5] then return redis.error_reply('ALREADY_ROTATED') end
local ver = tonumber(f[3]) + 1
redis.call('HSET', KEYS[2], 'id', f[1], 'user', f[2], 'ver', ver, 'data', f[4])
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'succ', KEYS[2])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return ver
"#;

// KEYS: token. ARGV: expected version, data. Returns the new version.
const UPDATE: &str = r#"
local v = redis.call('HGET', KEYS[1], 'ver')
if not v then return redis.error_reply('NOT_FOUND') end
if v ~= ARGV[1] then return redis.error_reply('VERSION_CONFLICT') end
local ver = tonumber(v) + 1
redis.call('HSET', KEYS[1], 'ver', ver, 'data', ARGV[2])
return ver
"#;

// KEYS: token, user index. Deletes the token and drops the session from the index.
const REVOKE: &str = r#"
local id = redis.call('HGET', KEYS[1], 'id')
redis.call('DEL', KEYS[1])
if id then redis.call('SREM', KEYS[2], id) end
return 1
"#;

fn key(token: &str) -> String {
    format!("s:{token}")
}

impl Redis {
    pub async fn connect(url: &str) -> anyhow::Result<Redis> {
        let client = redis::Client::open(url)?;
        let con = client.get_multiplexed_async_connection().await?;
        Ok(Redis {
            con,
            scripts: Arc::new(Scripts {
                create: Script::new(CREATE),
                rotate: Script::new(ROTATE),
                update: Script::new(UPDATE),
                revoke: Script::new(REVOKE),
            }),
        })
    }

    pub async fn create(&mut self, user: &str, data: &[u8]) -> anyhow::Result<Handle> {
        let token = new_token();
        let id = new_token();
        let _: i64 = self
            .scripts
            .create
            .key(key(&token))
            .key(format!("u:{user}"))
            .arg(&id)
            .arg(user)
            .arg(data)
            .arg(IDLE_TIMEOUT_SECS)
            .invoke_async(&mut self.con)
            .await?;
        Ok(Handle {
            token,
            user: user.to_string(),
            version: 1,
            ..Handle::default()
        })
    }

    pub async fn get(&mut self, h: &Handle) -> anyhow::Result<()> {
        let (ver, _data): (Option<u64>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(key(&h.token))
            .arg("ver")
            .arg("data")
            .query_async(&mut self.con)
            .await?;
        ver.context("no such session")?;
        Ok(())
    }

    pub async fn rotate(&mut self, h: &mut Handle) -> anyhow::Result<()> {
        let next = new_token();
        let ver: u64 = self
            .scripts
            .rotate
            .key(key(&h.token))
            .key(key(&next))
            .arg(IDLE_TIMEOUT_SECS)
            .arg(GRACE_SECS)
            .invoke_async(&mut self.con)
            .await?;
        h.token = next;
        h.version = ver;
        Ok(())
    }

    pub async fn update(&mut self, h: &mut Handle, data: &[u8]) -> anyhow::Result<()> {
        let ver: u64 = self
            .scripts
            .update
            .key(key(&h.token))
            .arg(h.version)
            .arg(data)
            .invoke_async(&mut self.con)
            .await?;
        h.version = ver;
        Ok(())
    }

    pub async fn revoke(&mut self, h: &Handle) -> anyhow::Result<()> {
        let _: i64 = self
            .scripts
            .revoke
            .key(key(&h.token))
            .key(format!("u:{}", h.user))
            .invoke_async(&mut self.con)
            .await?;
        Ok(())
    }
}
