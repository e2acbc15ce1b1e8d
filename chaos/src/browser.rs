//! The workload: simulated users, each a browser with several tabs sharing one cookie jar.
//!
//! Tabs validate, rotate, save with compare-and-swap and log out, concurrently. What comes
//! back is applied to the jar in *arrival* order, after a random delay for some responses (so
//! Set-Cookie headers arrive out of order); some responses are thrown away after the store
//! answered (the lost-response case) and the request is retried with the same request id,
//! as the client crate does after a timeout. Every call is recorded in the history.

use crate::history::{error, fingerprint, op, Args, Clock, Event, Outcome, Value};
use crate::policy;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sessiond_client::{Client, Consistency, Error, NewSession, Session, SessionRef, Validated};
use sessiond_workload::{Mix, Op};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the simulated browsers behave.
#[derive(Debug, Clone)]
pub struct BrowserOptions {
    pub users: usize,
    pub tabs_per_user: usize,
    /// Longest think time between two requests of one tab.
    pub think: Duration,
    /// Chance that a response is delayed before it reaches the jar.
    pub delay_chance: f64,
    pub max_delay: Duration,
    /// Chance that a mutation's response is dropped (then retried with its request id).
    pub drop_chance: f64,
    /// Chance that a tab deliberately replays an old token (an attacker's move).
    pub replay_chance: f64,
    /// Chance that a login asks for a short-lived session (to exercise expiry).
    pub short_session_chance: f64,
    /// Per-attempt timeout and overall deadline of each client call.
    pub request_timeout: Duration,
    pub deadline: Duration,
    /// How many tabs of each browser talk to one node only, like a web server that only
    /// knows its local sessiond: they keep asking a node that is cut off or deposed, which
    /// is where stale reads would show.
    pub pinned_tabs: usize,
}

impl Default for BrowserOptions {
    fn default() -> Self {
        BrowserOptions {
            users: 4,
            tabs_per_user: 3,
            think: Duration::from_millis(40),
            delay_chance: 0.15,
            max_delay: Duration::from_millis(250),
            drop_chance: 0.04,
            replay_chance: 0.005,
            short_session_chance: 0.2,
            request_timeout: Duration::from_millis(700),
            deadline: Duration::from_millis(2500),
            pinned_tabs: 1,
        }
    }
}

/// The cookie: which session the browser is logged into and with which token.
#[derive(Debug, Clone)]
struct Cookie {
    session: String,
    token: String,
    /// The version last seen, for compare-and-swap saves.
    version: u64,
}

/// Everything the harness learned about sessions: every token by generation (for replays
/// and final reads). Secrets stay in memory; the history holds fingerprints.
#[derive(Default)]
pub struct Known {
    tokens: Mutex<HashMap<String, BTreeMap<u64, String>>>,
    users: Mutex<HashMap<String, String>>,
}

impl Known {
    fn learn(&self, session: &Session, token: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.entry(session.id.clone())
                .or_default()
                .insert(session.generation, token.to_string());
        }
        if let Ok(mut u) = self.users.lock() {
            u.insert(session.id.clone(), session.user_id.clone());
        }
    }

    /// A token at least two generations older than the newest known one.
    fn old_token(&self, session: &str) -> Option<String> {
        let t = self.tokens.lock().ok()?;
        let gens = t.get(session)?;
        let newest = *gens.keys().next_back()?;
        gens.range(..newest.saturating_sub(1))
            .next_back()
            .map(|(_, tok)| tok.clone())
    }

    /// Each session with its newest known token and user.
    pub fn newest(&self) -> Vec<(String, String, String)> {
        let (Ok(t), Ok(u)) = (self.tokens.lock(), self.users.lock()) else {
            return Vec::new();
        };
        t.iter()
            .filter_map(|(id, gens)| {
                let tok = gens.values().next_back()?;
                Some((
                    id.clone(),
                    tok.clone(),
                    u.get(id).cloned().unwrap_or_default(),
                ))
            })
            .collect()
    }
}

/// Where events are collected.
#[derive(Clone)]
pub struct Recorder {
    pub clock: Clock,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    pub fn new(clock: Clock) -> Recorder {
        Recorder {
            clock,
            events: Arc::default(),
        }
    }

    pub fn push(&self, e: Event) {
        if let Ok(mut v) = self.events.lock() {
            v.push(e);
        }
    }

    /// Everything recorded, in completion order.
    pub fn take(&self) -> Vec<Event> {
        let mut v = self
            .events
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        v.sort_by_key(|e| (e.complete_ns, e.invoke_ns));
        v
    }
}

/// A recorded call in progress.
pub(crate) struct Call {
    pub(crate) event: Event,
}

impl Call {
    pub(crate) fn new(
        rec: &Recorder,
        process: &str,
        session: Option<&str>,
        op: &str,
        args: Args,
    ) -> Call {
        Call {
            event: Event {
                process: process.to_string(),
                session: session.map(str::to_string),
                op: op.to_string(),
                args,
                result: Outcome::Info,
                value: Value::default(),
                invoke_ns: rec.clock.now_ns(),
                complete_ns: 0,
            },
        }
    }

    pub(crate) fn finish(mut self, rec: &Recorder, result: Outcome, value: Value) {
        self.event.result = result;
        self.event.value = value;
        self.event.complete_ns = rec.clock.now_ns();
        rec.push(self.event);
    }
}

pub(crate) fn session_value(s: &Session) -> Value {
    Value {
        generation: Some(s.generation),
        version: Some(s.version),
        data: Some(fingerprint(&s.data)),
        expires_at_ms: Some(s.expires_at_ms),
        absolute_expires_at_ms: Some(s.absolute_expires_at_ms),
        ..Value::default()
    }
}

/// How a validation's answer is recorded.
pub(crate) fn read_value(r: &Result<Validated, Error>) -> (Outcome, Value) {
    match r {
        Ok(v) => {
            let mut val = session_value(&v.session);
            val.superseded = Some(v.superseded);
            (Outcome::Ok, val)
        }
        Err(e) => error_value(e),
    }
}

/// How an error is recorded: a definite refusal is `fail`, anything else `info`.
pub(crate) fn error_value(e: &Error) -> (Outcome, Value) {
    let fail = |code: &str| {
        (
            Outcome::Fail,
            Value {
                error: Some(code.to_string()),
                ..Value::default()
            },
        )
    };
    match e {
        Error::NotFound => fail(error::NOT_FOUND),
        Error::Expired => fail(error::EXPIRED),
        Error::Revoked { reason } => {
            let (o, mut v) = fail(error::REVOKED);
            v.reason = Some(reason.clone());
            (o, v)
        }
        Error::TokenReused => fail(error::TOKEN_REUSED),
        Error::VersionConflict { current } => {
            let (o, mut v) = fail(error::VERSION_CONFLICT);
            v.current_version = Some(*current);
            (o, v)
        }
        Error::InvalidArgument(_) => fail(error::INVALID_ARGUMENT),
        Error::ResourceExhausted(_) => fail(error::RESOURCE_EXHAUSTED),
        // The harness's credentials are valid, so these are never expected; an outcome the
        // history does not know is the safe reading.
        Error::Unavailable(_)
        | Error::Timeout { .. }
        | Error::Config(_)
        | Error::Unauthenticated(_)
        | Error::PermissionDenied(_)
        | Error::Tls(_) => (
            Outcome::Info,
            Value {
                error: Some(error::TIMEOUT.into()),
                ..Value::default()
            },
        ),
    }
}

/// Whether an error means the browser is logged out of that session.
fn logs_out(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound | Error::Expired | Error::Revoked { .. } | Error::TokenReused
    )
}

/// One browser: its tabs share `jar`.
struct Browser {
    user: String,
    jar: Mutex<Option<Cookie>>,
    known: Arc<Known>,
    rec: Recorder,
    opts: BrowserOptions,
}

impl Browser {
    fn cookie(&self) -> Option<Cookie> {
        self.jar.lock().ok().and_then(|j| j.clone())
    }

    /// Apply a response to the jar, if the jar still holds that session.
    fn set_cookie(&self, session: &str, f: impl FnOnce(&mut Option<Cookie>)) {
        if let Ok(mut j) = self.jar.lock() {
            if j.as_ref().is_some_and(|c| c.session == session) {
                f(&mut j);
            }
        }
    }

    /// A response on its way to the jar: sometimes it takes a detour first.
    async fn arrive(&self, rng: &mut StdRng) {
        if rng.random_bool(self.opts.delay_chance) {
            let us = self.opts.max_delay.as_micros().max(1) as u64;
            tokio::time::sleep(Duration::from_micros(rng.random_range(0..us))).await;
        }
    }

    /// Whether to throw this (successful) mutation response away and retry.
    fn drop_it(&self, rng: &mut StdRng) -> bool {
        rng.random_bool(self.opts.drop_chance)
    }

    async fn tab(self: Arc<Self>, client: Client, process: String, seed: u64, until: Duration) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mix = Mix::browser();
        let stop = tokio::time::Instant::now() + until;
        while tokio::time::Instant::now() < stop {
            let think = self.opts.think.as_micros().max(1) as u64;
            tokio::time::sleep(Duration::from_micros(rng.random_range(0..think))).await;
            let Some(cookie) = self.cookie() else {
                self.login(&client, &process, &mut rng).await;
                continue;
            };
            if rng.random_bool(self.opts.replay_chance) {
                if let Some(old) = self.known.old_token(&cookie.session) {
                    self.get(&client, &process, &cookie, &old, true, &mut rng)
                        .await;
                    continue;
                }
            }
            match mix.draw(&mut rng) {
                Op::Get | Op::GetStale | Op::Create => {
                    let token = cookie.token.clone();
                    self.get(&client, &process, &cookie, &token, false, &mut rng)
                        .await
                }
                Op::Rotate => self.rotate(&client, &process, &cookie, &mut rng).await,
                Op::Update => self.update(&client, &process, &cookie, &mut rng).await,
                Op::Revoke => self.revoke(&client, &process, &cookie, &mut rng).await,
                Op::RevokeUser => self.revoke_user(&client, &process, &cookie, &mut rng).await,
            }
        }
    }

    async fn login(&self, client: &Client, process: &str, rng: &mut StdRng) {
        let data = sessiond_workload::session_data(rng, 32);
        let short = rng.random_bool(self.opts.short_session_chance);
        let lifetime = if short {
            policy::SHORT_SESSION_MS
        } else {
            policy::LONG_SESSION_MS
        };
        let rid: [u8; 16] = rng.random();
        let args = Args {
            user: Some(self.user.clone()),
            data: Some(fingerprint(&data)),
            request_id: Some(hex::encode(rid)),
            ..Args::default()
        };
        let new = NewSession {
            user_id: self.user.clone(),
            data,
            attributes: HashMap::new(),
            idle_timeout: Some(Duration::from_millis(policy::LONG_SESSION_MS)),
            absolute_timeout: Some(Duration::from_millis(lifetime)),
        };
        let c = client.with_request_id(rid);
        loop {
            let call = Call::new(&self.rec, process, None, op::CREATE, args.clone());
            let r = c.create_session(new.clone()).await;
            match r {
                Ok(created) => {
                    self.known.learn(&created.session, &created.token);
                    let mut call = call;
                    call.event.session = Some(created.session.id.clone());
                    if self.drop_it(rng) {
                        call.finish(&self.rec, Outcome::Info, dropped());
                        continue;
                    }
                    self.arrive(rng).await;
                    let mut v = session_value(&created.session);
                    v.token = Some(fingerprint(created.token.as_bytes()));
                    v.replayed = Some(created.replayed);
                    call.finish(&self.rec, Outcome::Ok, v);
                    if let Ok(mut j) = self.jar.lock() {
                        *j = Some(Cookie {
                            session: created.session.id.clone(),
                            token: created.token.clone(),
                            version: created.session.version,
                        });
                    }
                }
                Err(e) => {
                    let (o, v) = error_value(&e);
                    call.finish(&self.rec, o, v);
                }
            }
            return;
        }
    }

    async fn get(
        &self,
        client: &Client,
        process: &str,
        cookie: &Cookie,
        token: &str,
        replay: bool,
        rng: &mut StdRng,
    ) {
        let args = Args {
            user: Some(self.user.clone()),
            token: Some(fingerprint(token.as_bytes())),
            replay,
            ..Args::default()
        };
        let call = Call::new(&self.rec, process, Some(&cookie.session), op::GET, args);
        let r = client
            .get_session(token, Consistency::Linearizable, false)
            .await;
        self.arrive(rng).await;
        match r {
            Ok(v) => {
                let mut val = session_value(&v.session);
                val.superseded = Some(v.superseded);
                call.finish(&self.rec, Outcome::Ok, val);
                let version = v.session.version;
                self.set_cookie(&cookie.session, |j| {
                    if let Some(c) = j {
                        c.version = version;
                    }
                });
                if v.superseded && !replay {
                    // The page learns it holds the previous token: switch to the current one.
                    self.rotate(client, process, cookie, rng).await;
                }
            }
            Err(e) => {
                let (o, v) = error_value(&e);
                call.finish(&self.rec, o, v);
                if logs_out(&e) {
                    self.set_cookie(&cookie.session, |j| *j = None);
                }
            }
        }
    }

    async fn rotate(&self, client: &Client, process: &str, cookie: &Cookie, rng: &mut StdRng) {
        let rid: [u8; 16] = rng.random();
        let args = Args {
            user: Some(self.user.clone()),
            token: Some(fingerprint(cookie.token.as_bytes())),
            request_id: Some(hex::encode(rid)),
            ..Args::default()
        };
        let c = client.with_request_id(rid);
        loop {
            let call = Call::new(
                &self.rec,
                process,
                Some(&cookie.session),
                op::ROTATE,
                args.clone(),
            );
            let r = c.rotate_token(&cookie.token).await;
            if let Ok(rot) = &r {
                self.known.learn(&rot.session, &rot.token);
                if self.drop_it(rng) {
                    call.finish(&self.rec, Outcome::Info, dropped());
                    continue;
                }
            }
            self.arrive(rng).await;
            match r {
                Ok(rot) => {
                    let mut v = session_value(&rot.session);
                    v.token = Some(fingerprint(rot.token.as_bytes()));
                    v.rotated = Some(rot.rotated);
                    v.replayed = Some(rot.replayed);
                    call.finish(&self.rec, Outcome::Ok, v);
                    self.set_cookie(&cookie.session, |j| {
                        if let Some(c) = j {
                            c.token = rot.token.clone();
                            c.version = rot.session.version;
                        }
                    });
                }
                Err(e) => {
                    let (o, v) = error_value(&e);
                    call.finish(&self.rec, o, v);
                    if logs_out(&e) {
                        self.set_cookie(&cookie.session, |j| *j = None);
                    }
                }
            }
            return;
        }
    }

    async fn update(&self, client: &Client, process: &str, cookie: &Cookie, rng: &mut StdRng) {
        let rid: [u8; 16] = rng.random();
        let data = sessiond_workload::session_data(rng, 32);
        let expected = if rng.random_bool(0.1) {
            0
        } else {
            cookie.version
        };
        let by_id = rng.random_bool(0.1);
        let target = if by_id {
            SessionRef::Id(cookie.session.clone())
        } else {
            SessionRef::Token(cookie.token.clone())
        };
        let args = Args {
            user: Some(self.user.clone()),
            token: (!by_id).then(|| fingerprint(cookie.token.as_bytes())),
            by_id,
            expected_version: Some(expected),
            data: Some(fingerprint(&data)),
            request_id: Some(hex::encode(rid)),
            ..Args::default()
        };
        let c = client.with_request_id(rid);
        loop {
            let call = Call::new(
                &self.rec,
                process,
                Some(&cookie.session),
                op::UPDATE,
                args.clone(),
            );
            let r = c
                .update_session(target.clone(), expected, Some(data.clone()), None)
                .await;
            if r.is_ok() && self.drop_it(rng) {
                call.finish(&self.rec, Outcome::Info, dropped());
                continue;
            }
            self.arrive(rng).await;
            match r {
                Ok(s) => {
                    call.finish(&self.rec, Outcome::Ok, session_value(&s));
                    self.set_cookie(&cookie.session, |j| {
                        if let Some(c) = j {
                            c.version = s.version;
                        }
                    });
                }
                Err(e) => {
                    let (o, v) = error_value(&e);
                    call.finish(&self.rec, o, v);
                    if let Error::VersionConflict { current } = e {
                        self.set_cookie(&cookie.session, |j| {
                            if let Some(c) = j {
                                c.version = current;
                            }
                        });
                    } else if logs_out(&e) {
                        self.set_cookie(&cookie.session, |j| *j = None);
                    }
                }
            }
            return;
        }
    }

    async fn revoke(&self, client: &Client, process: &str, cookie: &Cookie, rng: &mut StdRng) {
        let rid: [u8; 16] = rng.random();
        let by_id = rng.random_bool(0.2);
        let target = if by_id {
            SessionRef::Id(cookie.session.clone())
        } else {
            SessionRef::Token(cookie.token.clone())
        };
        let args = Args {
            user: Some(self.user.clone()),
            token: (!by_id).then(|| fingerprint(cookie.token.as_bytes())),
            by_id,
            request_id: Some(hex::encode(rid)),
            ..Args::default()
        };
        let c = client.with_request_id(rid);
        loop {
            let call = Call::new(
                &self.rec,
                process,
                Some(&cookie.session),
                op::REVOKE,
                args.clone(),
            );
            let r = c.revoke_session(target.clone(), "logout").await;
            if r.is_ok() && self.drop_it(rng) {
                call.finish(&self.rec, Outcome::Info, dropped());
                continue;
            }
            self.arrive(rng).await;
            match r {
                Ok(already) => {
                    call.finish(
                        &self.rec,
                        Outcome::Ok,
                        Value {
                            already_revoked: Some(already),
                            ..Value::default()
                        },
                    );
                    self.set_cookie(&cookie.session, |j| *j = None);
                }
                Err(e) => {
                    let (o, v) = error_value(&e);
                    call.finish(&self.rec, o, v);
                    if logs_out(&e) {
                        self.set_cookie(&cookie.session, |j| *j = None);
                    }
                }
            }
            return;
        }
    }

    async fn revoke_user(&self, client: &Client, process: &str, cookie: &Cookie, rng: &mut StdRng) {
        let rid: [u8; 16] = rng.random();
        let except = rng.random_bool(0.3).then(|| cookie.session.clone());
        let args = Args {
            user: Some(self.user.clone()),
            except: except.clone(),
            request_id: Some(hex::encode(rid)),
            ..Args::default()
        };
        let c = client.with_request_id(rid);
        loop {
            let call = Call::new(&self.rec, process, None, op::REVOKE_USER, args.clone());
            let r = c
                .revoke_user_sessions(&self.user, except.as_deref(), "logout_everywhere")
                .await;
            if r.is_ok() && self.drop_it(rng) {
                call.finish(&self.rec, Outcome::Info, dropped());
                continue;
            }
            self.arrive(rng).await;
            match r {
                Ok(ids) => {
                    call.finish(
                        &self.rec,
                        Outcome::Ok,
                        Value {
                            revoked_ids: Some(ids),
                            ..Value::default()
                        },
                    );
                    if except.is_none() {
                        self.set_cookie(&cookie.session, |j| *j = None);
                    }
                }
                Err(e) => {
                    let (o, v) = error_value(&e);
                    call.finish(&self.rec, o, v);
                }
            }
            return;
        }
    }
}

fn dropped() -> Value {
    Value {
        error: Some(error::DROPPED.into()),
        ..Value::default()
    }
}

/// A client for one tab, preferring endpoint `first` (so tabs spread over the nodes); a
/// `pinned` tab knows that endpoint only.
pub fn tab_client(
    endpoints: &[String],
    first: usize,
    pinned: bool,
    opts: &BrowserOptions,
) -> anyhow::Result<Client> {
    let mut eps = endpoints.to_vec();
    if !eps.is_empty() {
        let k = first % eps.len();
        eps.rotate_left(k);
    }
    if pinned {
        eps.truncate(1);
    }
    Ok(Client::builder(eps)
        .tls(crate::secure::client_tls()?)
        .connect_timeout(Duration::from_millis(300))
        .request_timeout(opts.request_timeout)
        .deadline(opts.deadline)
        .build()?)
}

/// Run every browser for `length`; returns what the harness learned (for final reads).
pub async fn run(
    endpoints: &[String],
    opts: &BrowserOptions,
    seed: u64,
    rec: &Recorder,
    length: Duration,
) -> anyhow::Result<Arc<Known>> {
    let known = Arc::new(Known::default());
    let mut tasks = Vec::new();
    let mut n = 0usize;
    for u in 0..opts.users {
        let browser = Arc::new(Browser {
            user: sessiond_workload::user_id(&format!("chaos{seed:x}"), u as u64),
            jar: Mutex::new(None),
            known: known.clone(),
            rec: rec.clone(),
            opts: opts.clone(),
        });
        for t in 0..opts.tabs_per_user {
            // Pinned tabs spread over the nodes by user.
            let pinned = t + opts.pinned_tabs >= opts.tabs_per_user;
            let first = if pinned { u } else { n };
            let client = tab_client(endpoints, first, pinned, opts)?;
            n += 1;
            let process = format!("u{u}.t{t}");
            let tab_seed = seed
                .wrapping_mul(1_000_003)
                .wrapping_add((u * 97 + t) as u64);
            tasks.push(tokio::spawn(
                browser.clone().tab(client, process, tab_seed, length),
            ));
        }
    }
    for t in tasks {
        t.await?;
    }
    Ok(known)
}

/// After healing: read every known session with its newest token, linearizably, retrying
/// until the store answers (an `info` final read proves nothing).
pub async fn final_reads(
    endpoints: &[String],
    known: &Known,
    rec: &Recorder,
) -> anyhow::Result<()> {
    let opts = BrowserOptions {
        request_timeout: Duration::from_secs(2),
        deadline: Duration::from_secs(10),
        ..BrowserOptions::default()
    };
    let client = tab_client(endpoints, 0, false, &opts)?;
    for (session, token, user) in known.newest() {
        let args = Args {
            user: Some(user),
            token: Some(fingerprint(token.as_bytes())),
            final_read: true,
            ..Args::default()
        };
        let call = Call::new(rec, "final", Some(&session), op::GET, args);
        let r = client
            .get_session(&token, Consistency::Linearizable, false)
            .await;
        let (outcome, value) = read_value(&r);
        call.finish(rec, outcome, value);
    }
    Ok(())
}
