//! Who a verified certificate names: a node id (peer certificates) or a principal name
//! (client certificates).
//!
//! Call these only on certificates rustls has verified (the leaf of
//! `peer_certificates()` after a completed handshake): parsing an unverified certificate
//! proves nothing.

use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The DNS suffix of node names: node 3 is `node-3.sessiond`.
pub const NODE_DNS_SUFFIX: &str = ".sessiond";

/// The DNS name a node's certificate carries and peers dial it by: `node-<id>.sessiond`.
pub fn node_dns_name(id: u64) -> String {
    format!("node-{id}{NODE_DNS_SUFFIX}")
}

/// The node id in a DNS name of the form `node-<id>.sessiond`, in canonical decimal (no sign,
/// no leading zero), so that one id has exactly one name.
pub(crate) fn node_id_of_dns_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("node-")?.strip_suffix(NODE_DNS_SUFFIX)?;
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

/// The node id a certificate names in its subject alternative names (`node-<id>.sessiond`),
/// or `None` if it names none, or names two different ids (ambiguous: refused).
///
/// The peer port uses it to bind a connection to a node id; the id in every Raft envelope
/// received on that connection must equal it.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Option<u64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    let mut id = None;
    for name in &san.value.general_names {
        if let GeneralName::DNSName(dns) = name {
            if let Some(found) = node_id_of_dns_name(dns) {
                match id {
                    None => id = Some(found),
                    Some(prev) if prev == found => {}
                    Some(_) => return None,
                }
            }
        }
    }
    id
}

/// The subject common name of a certificate (the principal name of a client certificate),
/// or `None` if it has none, more than one, or one that is not a string.
pub fn principal_name_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut names = parsed.subject().iter_common_name();
    let first = names.next()?;
    if names.next().is_some() {
        return None;
    }
    let name = first.as_str().ok()?;
    (!name.is_empty()).then(|| name.to_owned())
}

/// The leaf certificate the other end presented on a finished handshake, if any.
///
/// With tokio-rustls: `peer_leaf(stream.get_ref().1)` on a server or client `TlsStream`
/// (both connection types dereference to [`rustls::CommonState`]).
pub fn peer_leaf(conn: &rustls::CommonState) -> Option<&CertificateDer<'static>> {
    conn.peer_certificates()?.first()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_canonical() {
        assert_eq!(node_dns_name(3), "node-3.sessiond");
        assert_eq!(node_id_of_dns_name("node-3.sessiond"), Some(3));
        assert_eq!(node_id_of_dns_name("node-0.sessiond"), Some(0));
        assert_eq!(
            node_id_of_dns_name("node-18446744073709551615.sessiond"),
            Some(u64::MAX)
        );
        for bad in [
            "node-03.sessiond",
            "node-+3.sessiond",
            "node-.sessiond",
            "node-3.sessiond.evil",
            "xnode-3.sessiond",
            "node-3x.sessiond",
            "node-18446744073709551616.sessiond",
        ] {
            assert_eq!(node_id_of_dns_name(bad), None, "{bad}");
        }
    }
}
