//! The operator-managed access file: which principals exist, their roles, and the hashes of
//! their bearer credentials.
//!
//! ```toml
//! # principals known by client certificate (name = certificate CN) or by bearer credential
//! [[principal]]
//! name = "web"
//! roles = ["app"]
//! credentials = ["sha256:<64 hex digits>"]   # optional; hashes of bearer secrets
//!
//! [[principal]]
//! name = "ops"
//! roles = ["operator"]
//! ```
//!
//! Only SHA-256 hashes of bearer secrets are stored, so the file (and a backup of it) gives
//! nobody a credential. A plain unsalted hash is enough because the secrets are 256 random
//! bits ([`new_credential`]): there is no dictionary to precompute. Presented secrets are
//! compared against every stored hash in constant time.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use toml::Spanned;

use crate::error::{Error, Result};
use crate::role::{Principal, Role, RoleSet};

/// The prefix of every bearer secret [`new_credential`] makes: it lets secret scanners and
/// people recognise a sessiond credential, and lets the access-file loader refuse a secret
/// pasted where its hash belongs.
pub const SECRET_PREFIX: &str = "sd_";

/// The prefix of a credential line in the access file.
const HASH_PREFIX: &str = "sha256:";

/// A bearer secret, as handed to a client once. Its `Debug` never shows it, and it has no
/// `Display`: reading it takes an explicit [`BearerSecret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct BearerSecret(String);

impl BearerSecret {
    /// The secret itself, to print once for the operator or to send in
    /// `authorization: Bearer <secret>`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerSecret(<redacted>)")
    }
}

/// The SHA-256 hash of a bearer secret, as the access file stores it (`sha256:<hex>`).
/// Not secret in itself, but its `Debug` shows nothing either: log lines have no use for it.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialHash([u8; 32]);

impl CredentialHash {
    /// The hash of a presented secret.
    pub fn of(secret: &str) -> Self {
        CredentialHash(Sha256::digest(secret.as_bytes()).into())
    }

    /// The line to put in a principal's `credentials`: `sha256:<64 lowercase hex digits>`.
    pub fn to_line(&self) -> String {
        format!("{HASH_PREFIX}{}", hex::encode(self.0))
    }

    fn parse(line: &str) -> Option<Self> {
        let digits = line.strip_prefix(HASH_PREFIX)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(digits, &mut out).ok()?;
        Some(CredentialHash(out))
    }
}

impl fmt::Debug for CredentialHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CredentialHash(<redacted>)")
    }
}

/// Makes a new bearer credential: 32 bytes from the system random number generator (ring's,
/// through rustls), URL-safe base64 without padding, prefixed with [`SECRET_PREFIX`]. Returns
/// the secret (give it to the client, then forget it) and the line to add to the principal's
/// `credentials` in the access file.
pub fn new_credential() -> Result<(BearerSecret, String)> {
    let mut bytes = [0u8; 32];
    crate::tls::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::Random)?;
    let secret = format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let line = CredentialHash::of(&secret).to_line();
    Ok((BearerSecret(secret), line))
}

/// The secret of an `authorization` header value of the bearer scheme (`Bearer <secret>`,
/// scheme case-insensitive as RFC 6750 has it), or `None` for any other value.
pub fn bearer_from_header(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let secret = rest.trim();
    (!secret.is_empty()).then_some(secret)
}

/// One principal of the access file.
struct Entry {
    name: String,
    roles: RoleSet,
    credentials: Vec<CredentialHash>,
}

/// The parsed access file. Its `Debug` lists names and roles and only the number of
/// credentials.
pub struct AccessList {
    entries: Vec<Entry>,
}

impl fmt::Debug for AccessList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for e in &self.entries {
            list.entry(&format_args!(
                "{} roles={:?} credentials={}",
                e.name,
                e.roles,
                e.credentials.len()
            ));
        }
        list.finish()
    }
}

/// The file's form. Unknown keys are refused so a typo (`role = ...`) is an error, not a
/// principal silently without roles.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    #[serde(default)]
    principal: Vec<EntryForm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryForm {
    name: Spanned<String>,
    roles: Vec<Spanned<String>>,
    #[serde(default)]
    credentials: Vec<Spanned<String>>,
}

impl AccessList {
    /// Reads and checks the access file. Errors name the file and, when known, the line.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<Self> {
        let fail = |span: Option<std::ops::Range<usize>>, message: String| Error::AccessFile {
            path: path.to_owned(),
            line: span.map(|s| line_of(text, s.start)),
            message,
        };
        let form: FileForm =
            toml::from_str(text).map_err(|e| fail(e.span(), elide_quoted(e.message())))?;

        let mut entries: Vec<Entry> = Vec::with_capacity(form.principal.len());
        for p in form.principal {
            let name = p.name.get_ref();
            if name.is_empty() {
                return Err(fail(Some(p.name.span()), "empty principal name".into()));
            }
            if entries.iter().any(|e| &e.name == name) {
                return Err(fail(
                    Some(p.name.span()),
                    format!("principal `{}` is listed twice", shown(name)),
                ));
            }
            let mut roles = RoleSet::empty();
            for r in &p.roles {
                let role: Role = r.get_ref().parse().map_err(|_| {
                    fail(
                        Some(r.span()),
                        format!(
                            "principal `{}`: unknown role `{}` (expected app, watch or operator)",
                            shown(name),
                            shown(r.get_ref())
                        ),
                    )
                })?;
                roles.insert(role);
            }
            let mut credentials = Vec::with_capacity(p.credentials.len());
            for (i, c) in p.credentials.iter().enumerate() {
                let hash = CredentialHash::parse(c.get_ref()).ok_or_else(|| {
                    let message = if c.get_ref().starts_with(SECRET_PREFIX) {
                        format!(
                            "principal `{}`: credential #{} is a bearer secret, not its hash: \
                             store only sha256:<hex> and replace that secret",
                            shown(name),
                            i + 1
                        )
                    } else {
                        format!(
                            "principal `{}`: credential #{} is not of the form \
                             sha256:<64 hex digits>",
                            shown(name),
                            i + 1
                        )
                    };
                    fail(Some(c.span()), message)
                })?;
                if let Some(other) = entries.iter().find(|e| e.credentials.contains(&hash)) {
                    return Err(fail(
                        Some(c.span()),
                        format!(
                            "principal `{}`: credential #{} is also a credential of `{}`",
                            shown(name),
                            i + 1,
                            shown(&other.name)
                        ),
                    ));
                }
                if credentials.contains(&hash) {
                    return Err(fail(
                        Some(c.span()),
                        format!(
                            "principal `{}`: credential #{} is listed twice",
                            shown(name),
                            i + 1
                        ),
                    ));
                }
                credentials.push(hash);
            }
            entries.push(Entry {
                name: p.name.into_inner(),
                roles,
                credentials,
            });
        }
        Ok(AccessList { entries })
    }

    /// The principal a presented bearer secret belongs to, or `None`. The secret is hashed and
    /// compared with every stored hash in constant time, without stopping at a match, so the
    /// time taken says nothing about which hash (or how much of one) matched.
    pub fn authenticate_bearer(&self, secret: &str) -> Option<Principal> {
        let presented = CredentialHash::of(secret);
        let mut matched = subtle::Choice::from(0);
        // 1 + the index of the matching entry; the loader refuses a hash shared by two entries.
        let mut found = 0u32;
        for (i, entry) in self.entries.iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX - 1) + 1;
            for stored in &entry.credentials {
                let eq = stored.0.ct_eq(&presented.0);
                found = u32::conditional_select(&found, &index, eq & !matched);
                matched |= eq;
            }
        }
        if !bool::from(matched) {
            return None;
        }
        let entry = self
            .entries
            .get(usize::try_from(found).ok()?.checked_sub(1)?)?;
        Some(Principal {
            name: entry.name.clone(),
            roles: entry.roles,
        })
    }

    /// The principal of a verified client certificate whose common name is `name`: its roles
    /// if the access file lists the name, no roles otherwise (authenticated, permitted
    /// nothing, which the gRPC layer answers with `PERMISSION_DENIED`).
    pub fn for_certificate_name(&self, name: &str) -> Principal {
        let roles = self
            .entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.roles)
            .unwrap_or_default();
        Principal {
            name: name.to_owned(),
            roles,
        }
    }

    /// The number of principals listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file lists no principal.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The access file, reloadable: the node calls [`AccessStore::reload`] on SIGHUP, and every
/// call authenticates against the list current at that moment. A reload that fails keeps the
/// old list.
pub struct AccessStore {
    path: PathBuf,
    current: RwLock<Arc<AccessList>>,
}

impl fmt::Debug for AccessStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessStore")
            .field("path", &self.path)
            .field("principals", &self.current().len())
            .finish()
    }
}

impl AccessStore {
    /// Loads the access file at `path`.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let list = AccessList::load(&path)?;
        Ok(AccessStore {
            path,
            current: RwLock::new(Arc::new(list)),
        })
    }

    /// Re-reads the file; replaces the list only if the whole file is valid, otherwise keeps
    /// the old one and returns the error.
    pub fn reload(&self) -> Result<()> {
        match AccessList::load(&self.path) {
            Ok(list) => {
                let principals = list.len();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(list);
                tracing::info!(path = %self.path.display(), principals, "access file reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "access file not reloaded; keeping the previous one");
                Err(e)
            }
        }
    }

    /// The list in force now.
    pub fn current(&self) -> Arc<AccessList> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// [`AccessList::authenticate_bearer`] on the list in force now.
    pub fn authenticate_bearer(&self, secret: &str) -> Option<Principal> {
        self.current().authenticate_bearer(secret)
    }

    /// [`AccessList::for_certificate_name`] on the list in force now.
    pub fn for_certificate_name(&self, name: &str) -> Principal {
        self.current().for_certificate_name(name)
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// `s` if it cannot be one of our secrets (short, without the secret prefix), else a
/// placeholder. Used for strings from the file that an error message repeats.
fn shown(s: &str) -> &str {
    if s.len() <= 24 && !s.contains(SECRET_PREFIX) {
        s
    } else {
        "<elided>"
    }
}

/// A TOML/serde error message with every quoted (`"..."`) or back-quoted (`` `...` ``)
/// segment that could be a secret elided. serde quotes the offending input in such messages
/// (`invalid type: string "…", expected a sequence`), and a secret pasted in the wrong place
/// must not end up in a log line.
fn elide_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=start]);
        let after = &rest[start + 1..];
        match after.find(quote) {
            Some(end) => {
                out.push_str(shown(&after[..end]));
                out.push(quote);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(shown(after));
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AccessList> {
        AccessList::parse(Path::new("/etc/sessiond/access.toml"), text)
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_from_header("Bearer sd_abc"), Some("sd_abc"));
        assert_eq!(bearer_from_header("bearer  sd_abc "), Some("sd_abc"));
        assert_eq!(bearer_from_header("Basic dXNlcg=="), None);
        assert_eq!(bearer_from_header("Bearer "), None);
        assert_eq!(bearer_from_header("Bearer"), None);
    }

    #[test]
    fn new_credentials_are_random_prefixed_and_hash_to_their_line() {
        let (a, line_a) = new_credential().unwrap();
        let (b, _) = new_credential().unwrap();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(SECRET_PREFIX));
        // 32 bytes → 43 base64 characters without padding.
        assert_eq!(a.expose().len(), SECRET_PREFIX.len() + 43);
        assert_eq!(line_a, CredentialHash::of(a.expose()).to_line());
        assert!(line_a.starts_with("sha256:") && line_a.len() == 7 + 64);
    }

    #[test]
    fn line_numbers_and_elision() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(
            elide_quoted("invalid type: string \"sd_0123456789abcdef\", expected `name`"),
            "invalid type: string \"<elided>\", expected `name`"
        );
        assert_eq!(elide_quoted("unterminated \"abc"), "unterminated \"abc");
    }

    #[test]
    fn duplicates_are_refused() {
        let (_, line) = new_credential().unwrap();
        let twice = format!(
            "[[principal]]\nname = \"a\"\nroles = []\ncredentials = [\"{line}\"]\n\
             [[principal]]\nname = \"b\"\nroles = []\ncredentials = [\"{line}\"]\n"
        );
        let e = parse(&twice).unwrap_err().to_string();
        assert!(
            e.contains(":8:") && e.contains("also a credential of `a`"),
            "{e}"
        );
        let e = parse(
            "[[principal]]\nname = \"a\"\nroles = []\n[[principal]]\nname = \"a\"\nroles = []\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("listed twice"), "{e}");
    }
}
