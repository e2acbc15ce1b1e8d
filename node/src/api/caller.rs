//! Who is calling: the authenticated principal the authentication layer (`crate::auth`) put
//! on the request, whether a peer node forwarded the call on that principal's behalf, and how
//! long the caller waits for the answer. Authorisation happens once, in the cores, through
//! [`Caller::require`].

use super::error::{self, ApiError};
use http::HeaderMap;
use sessiond_security::{Principal, Role};
use std::time::{Duration, Instant};

/// Metadata key of a forwarded call: the time (ms since the epoch, by the voters' median clock
/// as the forwarding node reckons it) after which the caller it was forwarded for has given
/// up. The leader
/// serves nothing past it: a call held up by a partition and delivered when it heals would
/// otherwise act long after its client retried elsewhere (a token presented inside its grace
/// window, judged outside it, revoking the session as reused).
pub const DEADLINE_KEY: &str = "sessiond-deadline-ms";

/// The gRPC header in which a client says how long it waits (e.g. `700m`, `5S`).
const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The caller of one API call.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// Forwarded by a peer node (authenticated by its node certificate, or any host when the
    /// node runs `--insecure`): the receiving node must not forward it again.
    pub forwarded: bool,
    /// When the call reached this node.
    pub arrived: Instant,
    /// How long the caller said it waits (`grpc-timeout`), from `arrived`.
    pub timeout: Option<Duration>,
    /// A forwarded call's deadline by the voters' median clock ([`DEADLINE_KEY`]).
    pub deadline_ms: Option<u64>,
}

impl Caller {
    /// A caller that reached this node directly.
    pub fn direct(principal: Principal) -> Caller {
        Caller {
            principal,
            forwarded: false,
            arrived: Instant::now(),
            timeout: None,
            deadline_ms: None,
        }
    }

    /// A call a peer node forwarded for `principal`.
    pub fn forwarded_for(principal: Principal) -> Caller {
        Caller {
            forwarded: true,
            ..Caller::direct(principal)
        }
    }

    /// The caller with the waiting time its headers state; the deadline is read only from a
    /// forwarded call (a node set it).
    pub fn with_timing(mut self, headers: &HeaderMap) -> Caller {
        let text = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
        self.timeout = text(GRPC_TIMEOUT).and_then(grpc_timeout);
        if self.forwarded {
            self.deadline_ms = text(DEADLINE_KEY).and_then(|v| v.parse().ok());
        }
        self
    }

    /// The principal's name: what request ids are scoped to.
    pub fn name(&self) -> &str {
        &self.principal.name
    }

    /// Refuse the call unless the principal holds `role` (an operator may do everything).
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.principal.may(role) {
            Ok(())
        } else {
            Err(error::permission_denied(format!(
                "principal {:?} does not hold the {role} role",
                self.principal.name
            )))
        }
    }

    /// How long the caller still waits, at most `cap`.
    pub fn remaining(&self, cap: Duration) -> Duration {
        match self.timeout {
            Some(t) => t.saturating_sub(self.arrived.elapsed()).min(cap),
            None => cap,
        }
    }

    /// Refuse to act at `now_ms` (the voters' median clock) for a forwarded caller that has
    /// given up.
    pub fn still_waiting(&self, now_ms: u64) -> Result<(), ApiError> {
        match self.deadline_ms {
            Some(d) if now_ms > d => Err(error::deadline_exceeded(
                "the forwarded call reached the leader after its caller's deadline",
            )),
            _ => Ok(()),
        }
    }
}

/// A `grpc-timeout` value: up to 8 digits and a unit (gRPC over HTTP/2, "Timeout").
fn grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at_checked(v.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_protocol_spells_them() {
        assert_eq!(grpc_timeout("700m"), Some(Duration::from_millis(700)));
        assert_eq!(grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(grpc_timeout("250u"), Some(Duration::from_micros(250)));
        assert_eq!(
            grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "5", "5s", "-5m", "123456789m", "5 m", "٣m"] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    fn caller(forwarded: bool, headers: &[(&'static str, &str)]) -> Caller {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, v.parse().unwrap());
        }
        let p = Principal {
            name: "app".into(),
            roles: Default::default(),
        };
        match forwarded {
            true => Caller::forwarded_for(p),
            false => Caller::direct(p),
        }
        .with_timing(&h)
    }

    #[test]
    fn a_forwarded_call_is_refused_past_its_deadline_only() {
        let c = caller(true, &[(DEADLINE_KEY, "1000")]);
        assert!(c.still_waiting(1000).is_ok());
        let e = c.still_waiting(1001).unwrap_err();
        assert_eq!(e.kind, error::Kind::DeadlineExceeded);
        // A client cannot set the deadline of a direct call; a garbled one is ignored.
        assert!(caller(false, &[(DEADLINE_KEY, "1000")])
            .still_waiting(u64::MAX)
            .is_ok());
        assert!(caller(true, &[(DEADLINE_KEY, "soon")])
            .still_waiting(u64::MAX)
            .is_ok());
    }

    #[test]
    fn what_remains_is_the_callers_timeout_less_the_time_spent_capped() {
        let cap = Duration::from_secs(5);
        assert_eq!(caller(false, &[]).remaining(cap), cap);
        let c = caller(false, &[(GRPC_TIMEOUT, "700m")]);
        let r = c.remaining(cap);
        assert!(r <= Duration::from_millis(700) && r > Duration::from_millis(0));
        assert_eq!(caller(false, &[(GRPC_TIMEOUT, "1H")]).remaining(cap), cap);
        let mut spent = caller(false, &[(GRPC_TIMEOUT, "1m")]);
        spent.arrived -= Duration::from_millis(5);
        assert_eq!(spent.remaining(cap), Duration::ZERO);
    }
}
