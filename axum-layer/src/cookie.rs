//! The session cookie: reading it from `Cookie` headers and writing `Set-Cookie`.
//!
//! Cookie attributes have no escaping (RFC 6265 §4.1.1): a `;` in a path or a control
//! character in a domain would start another attribute or break the header. So every name and
//! attribute value is checked once, when the layer is built, and refused if it needs escaping;
//! the token itself is checked against the store's token form before it is ever written.

use crate::config::{ConfigError, CookieConfig, SameSite};
use axum::http::{header, HeaderMap, HeaderValue};
use std::fmt;

/// The store's token form (`sdt1_` and 43 base64url characters): anything else is not a
/// token this store issued, so it is never sent to the store nor written into a header.
pub(crate) const TOKEN_PREFIX: &str = "sdt1_";
const TOKEN_LEN: usize = 48;

/// A session token. Only this module and the layer see its text; it has no `Display`, and
/// its `Debug` is redacted so that no log line or error can carry it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Token(String);

impl Token {
    /// A token from text of the store's form, else `None`.
    pub(crate) fn parse(s: &str) -> Option<Token> {
        let well_formed = s.len() == TOKEN_LEN
            && s.starts_with(TOKEN_PREFIX)
            && s[TOKEN_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| Token(s.to_string()))
    }

    /// The text, for the store and the `Set-Cookie` header only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What the request's `Cookie` headers hold under the session cookie's name.
#[derive(Debug)]
pub(crate) enum Presented {
    /// No cookie of that name.
    None,
    /// A cookie of that name whose value is not a token: cleared, never sent to the store.
    Malformed,
    Token(Token),
}

/// The session cookie of a request. Browsers send the cookie with the most specific path
/// first when several share a name, so the first well-formed one wins.
pub(crate) fn read(headers: &HeaderMap, name: &str) -> Presented {
    let mut found = Presented::None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(text) = value.to_str() else {
            continue;
        };
        for pair in text.split(';') {
            let Some((k, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if k.trim() != name {
                continue;
            }
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            match Token::parse(v) {
                Some(t) => return Presented::Token(t),
                None => found = Presented::Malformed,
            }
        }
    }
    found
}

/// A cookie-name: an RFC 7230 token (visible ASCII except separators).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

/// A `Path` value: no control characters and no `;` (RFC 6265 `path-value`), absolute.
fn valid_path(s: &str) -> bool {
    s.starts_with('/') && s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b';')
}

/// A `Domain` value: a host name (letters, digits, `-`, `.`), optionally with a leading dot.
fn valid_domain(s: &str) -> bool {
    let host = s.strip_prefix('.').unwrap_or(s);
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !host.starts_with('.')
        && !host.contains("..")
}

/// Check a cookie configuration; the `Set-Cookie` attributes it makes (everything but the
/// value and `Max-Age`), computed once.
pub(crate) fn attributes(c: &CookieConfig) -> Result<String, ConfigError> {
    if !valid_name(&c.name) {
        return Err(ConfigError(format!(
            "cookie name {:?} is not an HTTP token",
            c.name
        )));
    }
    if !valid_path(&c.path) {
        return Err(ConfigError(format!(
            "cookie path {:?} must start with '/' and hold no ';' or control characters",
            c.path
        )));
    }
    if let Some(d) = &c.domain {
        if !valid_domain(d) {
            return Err(ConfigError(format!(
                "cookie domain {d:?} is not a host name"
            )));
        }
    }
    // What browsers would silently refuse is refused here instead.
    if c.same_site == SameSite::None && !c.secure {
        return Err(ConfigError(
            "SameSite=None needs Secure (browsers drop such a cookie otherwise)".into(),
        ));
    }
    if c.name.starts_with("__Secure-") && !c.secure {
        return Err(ConfigError("a __Secure- cookie needs Secure".into()));
    }
    if c.name.starts_with("__Host-") && (!c.secure || c.path != "/" || c.domain.is_some()) {
        return Err(ConfigError(
            "a __Host- cookie needs Secure, Path=/ and no Domain".into(),
        ));
    }
    let mut a = format!("; Path={}", c.path);
    if let Some(d) = &c.domain {
        a.push_str("; Domain=");
        a.push_str(d);
    }
    if c.secure {
        a.push_str("; Secure");
    }
    if c.http_only {
        a.push_str("; HttpOnly");
    }
    a.push_str(match c.same_site {
        SameSite::Strict => "; SameSite=Strict",
        SameSite::Lax => "; SameSite=Lax",
        SameSite::None => "; SameSite=None",
    });
    Ok(a)
}

/// `Set-Cookie` for `token`; without `max_age_s` a cookie that ends with the browser session.
pub(crate) fn set(
    name: &str,
    attributes: &str,
    token: &Token,
    max_age_s: Option<u64>,
) -> Option<HeaderValue> {
    let mut v = format!("{name}={}{attributes}", token.expose());
    if let Some(s) = max_age_s {
        v.push_str(&format!("; Max-Age={s}"));
    }
    let mut h = HeaderValue::from_str(&v).ok()?;
    h.set_sensitive(true);
    Some(h)
}

/// `Set-Cookie` that removes the cookie (same name, path and domain, already expired).
pub(crate) fn clear(name: &str, attributes: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{name}={attributes}; Max-Age=0")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "sdt1_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn reads_the_first_well_formed_cookie_of_the_name() {
        assert!(matches!(read(&headers(&[]), "sid"), Presented::None));
        assert!(matches!(
            read(&headers(&["a=b; sidx=1"]), "sid"),
            Presented::None
        ));
        assert!(matches!(
            read(&headers(&["a=b; sid=junk"]), "sid"),
            Presented::Malformed
        ));
        let two = format!("sid=junk; other=1; sid=\"{T}\"");
        match read(&headers(&["x=1", &two]), "sid") {
            Presented::Token(t) => assert_eq!(t.expose(), T),
            other => panic!("{other:?}"),
        }
        // One character too many, or outside base64url: not a token.
        assert!(Token::parse(&format!("{T}A")).is_none());
        assert!(Token::parse(&T.replace('A', "+")).is_none());
        assert_eq!(format!("{:?}", Token::parse(T)), "Some(Token(<redacted>))");
    }

    #[test]
    fn refuses_attributes_that_would_need_escaping() {
        let ok = CookieConfig::default();
        let a = attributes(&ok).unwrap();
        assert_eq!(a, "; Path=/; Secure; HttpOnly; SameSite=Lax");
        let with = |f: &dyn Fn(&mut CookieConfig)| {
            let mut c = CookieConfig::default();
            f(&mut c);
            attributes(&c)
        };
        assert!(with(&|c| c.name = "s id".into()).is_err());
        assert!(with(&|c| c.name = "sid;".into()).is_err());
        assert!(with(&|c| c.name = String::new()).is_err());
        assert!(with(&|c| c.path = "/a; Domain=evil".into()).is_err());
        assert!(with(&|c| c.path = "/a\nb".into()).is_err());
        assert!(with(&|c| c.path = "a".into()).is_err());
        assert!(with(&|c| c.domain = Some("evil;x".into())).is_err());
        assert!(with(&|c| c.domain = Some("a..b".into())).is_err());
        assert!(with(&|c| {
            c.same_site = SameSite::None;
            c.secure = false;
        })
        .is_err());
        assert!(with(&|c| c.name = "__Host-sid".into()).is_ok());
        assert!(with(&|c| {
            c.name = "__Host-sid".into();
            c.domain = Some("example.com".into());
        })
        .is_err());
        let full = with(&|c| {
            c.domain = Some(".example.com".into());
            c.path = "/app".into();
            c.http_only = false;
            c.same_site = SameSite::Strict;
        })
        .unwrap();
        assert_eq!(
            full,
            "; Path=/app; Domain=.example.com; Secure; SameSite=Strict"
        );
        let t = Token::parse(T).unwrap();
        assert_eq!(
            set("sid", &a, &t, Some(60)).unwrap().to_str().unwrap(),
            format!("sid={T}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=60")
        );
        assert_eq!(
            clear("sid", &a).unwrap().to_str().unwrap(),
            "sid=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
        );
    }
}
