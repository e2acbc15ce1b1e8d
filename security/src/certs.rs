//! Making a cluster's certificates and seal key, the way `cockroach cert` does: one command
//! per file set, PEM files in a directory, keys readable by their owner only.
//!
//! Files (names fixed, so operators and `sessiond dev` agree):
//!
//! | file | what |
//! | --- | --- |
//! | `ca.crt`, `ca.key` | the cluster CA (CN `sessiond CA <8 random hex digits>`, ECDSA P-256, 10 years, may sign leaves only) |
//! | `node-<id>.crt`, `node-<id>.key` | node `<id>`: SAN `node-<id>.sessiond` plus the given hosts, serverAuth + clientAuth (a node is both ends of peer connections), 5 years |
//! | `client-<name>.crt`, `client-<name>.key` | a client principal: CN `<name>`, clientAuth only, 5 years |
//! | `seal.key` | 32 random bytes in hex, the same on every node of a cluster |
//!
//! Nothing is ever overwritten ([`Error::Exists`]): a second `create_ca` must not silently
//! replace the key every certificate of the cluster hangs on. Key files are created with mode
//! 0600 from the start (no window in which they are readable by others).

use std::fmt;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData as _, SanType,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use x509_parser::asn1_rs::Tag;
use x509_parser::extensions::ParsedExtension;

use crate::error::{Error, Result};
use crate::identity;
use crate::tls::TlsFiles;

/// The CA certificate's file name.
pub const CA_CERT: &str = "ca.crt";
/// The CA key's file name.
pub const CA_KEY: &str = "ca.key";
/// The seal key's file name.
pub const SEAL_KEY: &str = "seal.key";

const CA_YEARS: i32 = 10;
const LEAF_YEARS: i32 = 5;

/// The certificate file name of node `id`: `node-<id>.crt`.
pub fn node_cert_file(id: u64) -> String {
    format!("node-{id}.crt")
}

/// The key file name of node `id`: `node-<id>.key`.
pub fn node_key_file(id: u64) -> String {
    format!("node-{id}.key")
}

/// The certificate file name of client `name`: `client-<name>.crt`.
pub fn client_cert_file(name: &str) -> String {
    format!("client-{name}.crt")
}

/// The key file name of client `name`: `client-<name>.key`.
pub fn client_key_file(name: &str) -> String {
    format!("client-{name}.key")
}

/// A CA able to sign: its certificate and its key. `Debug` shows the certificate path only.
pub struct Ca {
    cert_path: PathBuf,
    cert_der: CertificateDer<'static>,
    subject_raw: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads `ca.crt` and `ca.key` from `dir` (made by [`create_ca`] or by any PKI, as long
    /// as the subject uses printable, UTF-8 or IA5 strings). Checks the certificate is a CA
    /// and the key is its key.
    pub fn load(dir: &Path) -> Result<Ca> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let cert_pem = read(&cert_path)?;
        let cert_der = CertificateDer::pem_slice_iter(&cert_pem)
            .next()
            .ok_or_else(|| cert_err(&cert_path, "no PEM certificate"))?
            .map_err(|_| cert_err(&cert_path, "not a valid PEM certificate"))?;
        let key_pem = String::from_utf8(read(&key_path)?)
            .map_err(|_| key_err(&key_path, "not a PEM private key"))?;
        warn_if_readable_by_others(&key_path);
        let key = KeyPair::from_pem(&key_pem).map_err(|_| {
            key_err(
                &key_path,
                "not a PEM private key of a supported kind (PKCS#8 ECDSA P-256/P-384, Ed25519 or RSA)",
            )
        })?;

        let (_, parsed) = x509_parser::parse_x509_certificate(cert_der.as_ref())
            .map_err(|_| cert_err(&cert_path, "not a valid X.509 certificate"))?;
        if !parsed.is_ca() {
            return Err(cert_err(
                &cert_path,
                "not a CA certificate (basicConstraints CA:false)",
            ));
        }
        if parsed.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(Error::KeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(parsed.subject()).ok_or_else(|| {
            cert_err(
                &cert_path,
                "the subject uses a form this tool cannot reproduce as an issuer name",
            )
        })?;
        params.key_identifier_method = parsed
            .extensions()
            .iter()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => {
                    Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
                }
                _ => None,
            })
            .unwrap_or(KeyIdMethod::Sha256);
        let subject_raw = parsed.subject().as_raw().to_vec();
        Ok(Ca {
            cert_path,
            cert_der: cert_der.clone(),
            subject_raw,
            issuer: Issuer::new(params, key),
        })
    }

    /// The path of the CA certificate (what nodes and clients trust).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Signs `params` for a new key; checks that the new certificate's issuer is this CA's
    /// subject byte for byte (a loaded CA's name is rebuilt, and a mismatch would make every
    /// certificate it signs fail verification).
    fn sign(&self, what: &str, params: &CertificateParams) -> Result<(String, String)> {
        let key = KeyPair::generate().map_err(|e| generate_err(what, e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| generate_err(what, e))?;
        let issuer_matches = x509_parser::parse_x509_certificate(cert.der().as_ref())
            .map(|(_, c)| c.issuer().as_raw() == self.subject_raw.as_slice())
            .unwrap_or(false);
        if !issuer_matches {
            return Err(Error::Generate {
                what: what.to_owned(),
                reason: format!(
                    "the issuer name of {} could not be reproduced exactly",
                    self.cert_path.display()
                ),
            });
        }
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Creates a new CA in `dir`: `ca.crt` and `ca.key` (0600). The CA may sign end-entity
/// certificates only (path length 0).
pub fn create_ca(dir: &Path) -> Result<Ca> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    refuse_existing(&[&cert_path, &key_path])?;

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "sessiond");
    // A name of its own (random suffix): two CAs with one name (an old and a new one during
    // a rotation, or two clusters) would make a certificate of one look like a forgery by
    // the other instead of a stranger, and operators could not tell them apart.
    let mut suffix = [0u8; 4];
    crate::tls::provider()
        .secure_random
        .fill(&mut suffix)
        .map_err(|_| Error::Random)?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("sessiond CA {}", hex::encode(suffix)),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_YEARS);

    let key = KeyPair::generate().map_err(|e| generate_err("the CA", e))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| generate_err("the CA", e))?;
    let subject_raw = x509_parser::parse_x509_certificate(cert.der().as_ref())
        .map(|(_, c)| c.subject().as_raw().to_vec())
        .map_err(|_| Error::Generate {
            what: "the CA".into(),
            reason: "the generated certificate does not parse".into(),
        })?;
    write_new(&cert_path, cert.pem().as_bytes(), 0o644)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    Ok(Ca {
        cert_path,
        cert_der: cert.der().clone(),
        subject_raw,
        issuer: Issuer::new(params, key),
    })
}

/// Creates `node-<id>.crt` and `node-<id>.key` (0600) in `dir`, signed by `ca`. The
/// certificate names `node-<id>.sessiond` (what peers dial and check) and every host given
/// (IP addresses and DNS names clients use to reach the node). Returns the files to load with
/// [`crate::tls::TlsStore::load`] (its `ca` is `ca`'s certificate path).
pub fn create_node<S: AsRef<str>>(
    dir: &Path,
    ca: &Ca,
    id: u64,
    hosts: impl IntoIterator<Item = S>,
) -> Result<TlsFiles> {
    let what = format!("the certificate of node {id}");
    let cert_path = dir.join(node_cert_file(id));
    let key_path = dir.join(node_key_file(id));
    refuse_existing(&[&cert_path, &key_path])?;

    let own = identity::node_dns_name(id);
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "sessiond");
    params
        .distinguished_name
        .push(DnType::CommonName, own.as_str());
    params.subject_alt_names = vec![dns_san(&what, &own)?];
    for host in hosts {
        let host = host.as_ref().trim();
        if host == own {
            continue;
        }
        if identity::node_id_of_dns_name(host).is_some() {
            return Err(Error::Generate {
                what,
                reason: format!("host {host} is another node's name"),
            });
        }
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => dns_san(&what, host)?,
        };
        if !params.subject_alt_names.contains(&san) {
            params.subject_alt_names.push(san);
        }
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_YEARS);

    let (cert, key) = ca.sign(&what, &params)?;
    write_new(&cert_path, cert.as_bytes(), 0o644)?;
    write_new(&key_path, key.as_bytes(), 0o600)?;
    Ok(TlsFiles {
        ca: ca.cert_path.clone(),
        cert: cert_path,
        key: key_path,
    })
}

/// Creates `client-<name>.crt` and `client-<name>.key` (0600) in `dir`, signed by `ca`: a
/// client certificate of principal `name` (subject CN), good for client authentication only,
/// so it can neither serve as a node nor join the peer port. `name` is 1 to 64 characters of
/// `A-Z a-z 0-9 . _ -` (it becomes part of a file name).
pub fn create_client(dir: &Path, ca: &Ca, name: &str) -> Result<TlsFiles> {
    let what = format!("the certificate of client {name:?}");
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with('.');
    if !valid {
        return Err(Error::Generate {
            what,
            reason:
                "a client name is 1 to 64 characters of A-Z a-z 0-9 . _ - (not starting with .)"
                    .into(),
        });
    }
    let cert_path = dir.join(client_cert_file(name));
    let key_path = dir.join(client_key_file(name));
    refuse_existing(&[&cert_path, &key_path])?;

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, LEAF_YEARS);

    let (cert, key) = ca.sign(&what, &params)?;
    write_new(&cert_path, cert.as_bytes(), 0o644)?;
    write_new(&key_path, key.as_bytes(), 0o600)?;
    Ok(TlsFiles {
        ca: ca.cert_path.clone(),
        cert: cert_path,
        key: key_path,
    })
}

/// The key every node of a cluster shares to seal replayed tokens. `Debug` shows nothing of
/// it.
#[derive(Clone, PartialEq, Eq)]
pub struct SealKey([u8; 32]);

impl SealKey {
    /// The 32 key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

/// Creates `seal.key` (0600) in `dir`: 32 random bytes as 64 hex digits and a newline. Copy
/// the same file to every node of the cluster. Returns its path.
pub fn create_seal_key(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(SEAL_KEY);
    refuse_existing(&[&path])?;
    let mut bytes = [0u8; 32];
    crate::tls::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::Random)?;
    let mut text = hex::encode(bytes);
    text.push('\n');
    write_new(&path, text.as_bytes(), 0o600)?;
    Ok(path)
}

/// Reads a seal key file: 64 hex digits, surrounding white space ignored.
pub fn load_seal_key(path: &Path) -> Result<SealKey> {
    let bytes = read(path)?;
    warn_if_readable_by_others(path);
    let bad = || Error::SealKey {
        path: path.to_owned(),
        reason: "must hold exactly 64 hexadecimal digits (32 bytes)",
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad())?.trim();
    let mut key = [0u8; 32];
    hex::decode_to_slice(text, &mut key).map_err(|_| bad())?;
    Ok(SealKey(key))
}

/// Reads a whole file, naming it on failure.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Logs a warning if a key file is readable by group or others. Not refused: some secret
/// stores mount files 0644 inside a private volume.
pub(crate) fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "key file is accessible by group or others; chmod 600 it");
        }
    }
}

fn cert_err(path: &Path, reason: &str) -> Error {
    Error::Certificate {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

fn key_err(path: &Path, reason: &'static str) -> Error {
    Error::PrivateKey {
        path: path.to_owned(),
        reason,
    }
}

fn generate_err(what: &str, e: rcgen::Error) -> Error {
    Error::Generate {
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

fn dns_san(what: &str, name: &str) -> Result<SanType> {
    let ia5 = name.to_owned().try_into().map_err(|_| Error::Generate {
        what: what.to_owned(),
        reason: format!("host {name:?} is neither an IP address nor a DNS name"),
    })?;
    Ok(SanType::DnsName(ia5))
}

fn refuse_existing(paths: &[&Path]) -> Result<()> {
    for path in paths {
        if path.exists() {
            return Err(Error::Exists {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Creates `path` (refusing an existing file) with `mode` from the start, writes and syncs.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Exists {
                    path: path.to_owned(),
                }
            } else {
                io(e)
            }
        })?;
    // The umask may have cleared bits of `mode` (never added any): set it exactly.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

/// The subject of a CA as rcgen needs it to sign: one attribute per RDN, in order, with the
/// same string types (so the issuer name of signed certificates is the subject byte for byte).
fn distinguished_name(name: &x509_parser::x509::X509Name<'_>) -> Option<DistinguishedName> {
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let attr = attrs.next()?;
        if attrs.next().is_some() {
            return None;
        }
        let oid: Vec<u64> = attr.attr_type().iter()?.collect();
        let text = std::str::from_utf8(attr.as_slice()).ok()?;
        let value = match attr.attr_value().tag() {
            Tag::PrintableString => DnValue::PrintableString(text.try_into().ok()?),
            Tag::Ia5String => DnValue::Ia5String(text.try_into().ok()?),
            Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
            _ => return None,
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Some(dn)
}

/// Valid from yesterday (clocks of a cluster disagree a little) for `years` years.
fn set_validity(params: &mut CertificateParams, years: i32) {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0) - 1);
    // Day 28 at most: every month has one in every year.
    let d = d.min(28);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    params.not_after = rcgen::date_time_ymd(y + years, m, d);
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), after Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    (
        i32::try_from(y).unwrap_or(1970),
        u8::try_from(m).unwrap_or(1),
        u8::try_from(d).unwrap_or(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }
}
