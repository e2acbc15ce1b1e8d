//! Generated files (modes, names, contents), loading errors, the seal key and the access file.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use sessiond_security::access::{AccessList, AccessStore, CredentialHash};
use sessiond_security::certs::{self, Ca};
use sessiond_security::tls::{TlsFiles, TlsStore};
use sessiond_security::{identity, new_credential, Error, Role};
use tempfile::TempDir;
use x509_parser::extensions::GeneralName;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn leaf(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

#[test]
fn key_files_are_mode_0600_and_certificates_0644() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let ca = certs::create_ca(dir).unwrap();
    let node = certs::create_node(dir, &ca, 3, ["db-3.internal"]).unwrap();
    let client = certs::create_client(dir, &ca, "web").unwrap();
    let seal = certs::create_seal_key(dir).unwrap();

    for key in ["ca.key", "node-3.key", "client-web.key", "seal.key"] {
        assert_eq!(mode(&dir.join(key)), 0o600, "{key}");
    }
    for cert in ["ca.crt", "node-3.crt", "client-web.crt"] {
        assert_eq!(mode(&dir.join(cert)), 0o644, "{cert}");
    }
    assert_eq!(node.cert, dir.join(certs::node_cert_file(3)));
    assert_eq!(node.key, dir.join(certs::node_key_file(3)));
    assert_eq!(client.cert, dir.join(certs::client_cert_file("web")));
    assert_eq!(node.ca, dir.join(certs::CA_CERT));
    assert_eq!(seal, dir.join(certs::SEAL_KEY));
}

#[test]
fn nothing_is_overwritten() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let ca = certs::create_ca(dir).unwrap();
    let before = std::fs::read(dir.join("ca.key")).unwrap();
    let e = certs::create_ca(dir).unwrap_err();
    assert!(
        matches!(&e, Error::Exists { path } if path.ends_with("ca.crt")),
        "{e:?}"
    );
    assert_eq!(std::fs::read(dir.join("ca.key")).unwrap(), before);

    certs::create_node(dir, &ca, 1, Vec::<String>::new()).unwrap();
    assert!(matches!(
        certs::create_node(dir, &ca, 1, Vec::<String>::new()),
        Err(Error::Exists { .. })
    ));
    certs::create_seal_key(dir).unwrap();
    assert!(matches!(
        certs::create_seal_key(dir),
        Err(Error::Exists { .. })
    ));
}

#[test]
fn certificates_name_what_they_should() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let ca = certs::create_ca(dir).unwrap();
    let node = certs::create_node(dir, &ca, 7, ["10.1.2.3", "db-7.internal", "::1"]).unwrap();
    let client = certs::create_client(dir, &ca, "billing").unwrap();

    let node_der = leaf(&node.cert);
    assert_eq!(identity::node_id_of(&node_der), Some(7));
    assert_eq!(
        identity::principal_name_of(&node_der).as_deref(),
        Some("node-7.sessiond")
    );
    let (_, parsed) = x509_parser::parse_x509_certificate(node_der.as_ref()).unwrap();
    let sans: Vec<String> = parsed
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(ip) => format!("ip:{ip:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(sans[0], "node-7.sessiond");
    assert!(sans.contains(&"db-7.internal".to_string()));
    assert!(sans.contains(&"ip:[10, 1, 2, 3]".to_string()), "{sans:?}");
    assert_eq!(sans.len(), 4);
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!parsed.is_ca());

    let client_der = leaf(&client.cert);
    assert_eq!(identity::node_id_of(&client_der), None);
    assert_eq!(
        identity::principal_name_of(&client_der).as_deref(),
        Some("billing")
    );
    let (_, parsed) = x509_parser::parse_x509_certificate(client_der.as_ref()).unwrap();
    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);

    let (_, parsed) = x509_parser::parse_x509_certificate(ca.cert_der().as_ref()).unwrap();
    assert!(parsed.is_ca());
    assert!(parsed.key_usage().unwrap().unwrap().value.key_cert_sign());
    assert_eq!(identity::node_id_of(ca.cert_der()), None);

    // A node certificate may not also name another node; a client name must be a plain name.
    assert!(certs::create_node(dir, &ca, 8, ["node-9.sessiond"]).is_err());
    assert!(certs::create_client(dir, &ca, "../etc/passwd").is_err());
    assert!(certs::create_client(dir, &ca, "").is_err());
}

#[test]
fn seal_key_round_trip_and_errors_name_the_file_not_the_content() {
    let tmp = TempDir::new().unwrap();
    let path = certs::create_seal_key(tmp.path()).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 64);
    let key = certs::load_seal_key(&path).unwrap();
    assert_eq!(hex::encode(key.bytes()), text.trim());
    let debug = format!("{key:?}");
    assert!(
        !debug.contains(text.trim()) && debug.contains("redacted"),
        "{debug}"
    );

    let bad = tmp.path().join("bad.key");
    std::fs::write(&bad, &text[..40]).unwrap();
    let e = certs::load_seal_key(&bad).unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(
        shown.contains("bad.key") && shown.contains("64 hexadecimal"),
        "{shown}"
    );
    assert!(!shown.contains(&text[..40]), "{shown}");

    let e = certs::load_seal_key(&tmp.path().join("missing.key")).unwrap_err();
    assert!(matches!(&e, Error::Io { path, .. } if path.ends_with("missing.key")));
}

#[test]
fn tls_store_errors_name_the_file() {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path();
    let ca = certs::create_ca(dir).unwrap();
    let files = certs::create_node(dir, &ca, 1, ["localhost"]).unwrap();

    let missing = TlsFiles {
        cert: dir.join("nope.crt"),
        ..files.clone()
    };
    let e = TlsStore::load(missing).unwrap_err();
    assert!(e.to_string().contains("nope.crt"), "{e}");

    // A certificate where the key should be: no private key found.
    let swapped = TlsFiles {
        key: files.cert.clone(),
        ..files.clone()
    };
    let e = TlsStore::load(swapped).unwrap_err();
    assert!(
        matches!(&e, Error::PrivateKey { path, .. } if path == &files.cert),
        "{e:?}"
    );

    // A key of another node.
    let other = certs::create_node(dir, &ca, 2, ["localhost"]).unwrap();
    let e = TlsStore::load(TlsFiles {
        key: other.key.clone(),
        ..files.clone()
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("node-2.key") && e.to_string().contains("node-1.crt"),
        "{e}"
    );

    // Ca::load refuses a key that is not the CA's.
    let elsewhere = tmp.path().join("other");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::copy(dir.join("ca.crt"), elsewhere.join("ca.crt")).unwrap();
    std::fs::copy(&files.key, elsewhere.join("ca.key")).unwrap();
    assert!(matches!(
        Ca::load(&elsewhere),
        Err(Error::KeyMismatch { .. })
    ));
    // Nor is a node certificate a CA.
    std::fs::copy(&files.cert, elsewhere.join("ca.crt")).unwrap();
    std::fs::copy(&files.key, elsewhere.join("ca.key")).unwrap();
    let e = Ca::load(&elsewhere).unwrap_err();
    assert!(e.to_string().contains("not a CA"), "{e}");
}

const ACCESS: &str = r#"
# principals known by client certificate (name = certificate CN) or by bearer credential
[[principal]]
name = "web"
roles = ["app"]
credentials = ["WEB"]

[[principal]]
name = "watcher"
roles = ["watch", "app"]

[[principal]]
name = "ops"
roles = ["operator"]
credentials = ["OPS1", "OPS2"]
"#;

#[test]
fn access_file_authenticates_bearer_secrets_and_certificate_names() {
    let (web, web_line) = new_credential().unwrap();
    let (ops1, ops1_line) = new_credential().unwrap();
    let (ops2, ops2_line) = new_credential().unwrap();
    let (stranger, _) = new_credential().unwrap();
    let text = ACCESS
        .replace("WEB", &web_line)
        .replace("OPS1", &ops1_line)
        .replace("OPS2", &ops2_line);
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("access.toml");
    std::fs::write(&path, text).unwrap();
    let list = AccessList::load(&path).unwrap();
    assert_eq!(list.len(), 3);

    let p = list.authenticate_bearer(web.expose()).unwrap();
    assert_eq!(p.name, "web");
    assert!(p.may(Role::App) && !p.may(Role::Watch) && !p.may(Role::Operator));
    assert_eq!(list.authenticate_bearer(ops2.expose()).unwrap().name, "ops");
    let ops = list.authenticate_bearer(ops1.expose()).unwrap();
    for role in Role::ALL {
        assert!(ops.may(role), "operator may {role}");
    }
    assert_eq!(list.authenticate_bearer(stranger.expose()), None);
    assert_eq!(list.authenticate_bearer(""), None);
    // The hash line is not a credential.
    assert_eq!(list.authenticate_bearer(&web_line), None);

    let watcher = list.for_certificate_name("watcher");
    assert!(watcher.may(Role::Watch) && watcher.may(Role::App) && !watcher.may(Role::Operator));
    let unknown = list.for_certificate_name("intruder");
    assert_eq!(unknown.name, "intruder");
    assert!(unknown.roles.is_empty());
    assert!(Role::ALL.iter().all(|r| !unknown.may(*r)));

    // No secret and no hash in any Debug output.
    let shown = format!("{web:?} {:?} {list:?}", CredentialHash::of(web.expose()));
    for s in [web.expose(), &web_line[7..], ops1.expose(), &ops1_line[7..]] {
        assert!(!shown.contains(s), "{shown}");
    }
    assert!(
        shown.contains("web") && shown.contains("credentials=1"),
        "{shown}"
    );
}

#[test]
fn bad_access_files_give_typed_errors_naming_the_file_and_line() {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("access.toml");
    let (secret, line) = new_credential().unwrap();
    let cases: [(String, usize, &str); 6] = [
        ("[[principal]\nname = \"x\"".into(), 1, ""),
        (
            "[[principal]]\nname = \"x\"\nroles = [\"admin\"]\n".into(),
            3,
            "unknown role `admin`",
        ),
        (
            "[[principal]]\nname = \"x\"\nrole = [\"app\"]\n".into(),
            3,
            "unknown field",
        ),
        (
            format!(
                "[[principal]]\nname = \"x\"\nroles = []\ncredentials = [\"{}\"]\n",
                secret.expose()
            ),
            4,
            "is a bearer secret, not its hash",
        ),
        (
            // The secret as a string where an array belongs: serde would quote it.
            format!(
                "[[principal]]\nname = \"x\"\nroles = []\ncredentials = \"{}\"\n",
                secret.expose()
            ),
            4,
            "invalid type",
        ),
        (
            format!(
                "[[principal]]\nname = \"x\"\nroles = []\ncredentials = [\"{}\"]\n",
                &line[..30]
            ),
            4,
            "not of the form sha256:<64 hex digits>",
        ),
    ];
    for (text, want_line, want) in cases {
        std::fs::write(&path, &text).unwrap();
        let e = AccessList::load(&path).unwrap_err();
        let Error::AccessFile {
            path: p,
            line: l,
            message,
        } = &e
        else {
            panic!("{e:?}");
        };
        assert_eq!(p, &path);
        assert_eq!(*l, Some(want_line), "{e}");
        assert!(message.contains(want), "{e}");
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("access.toml"), "{shown}");
        assert!(!shown.contains(secret.expose()), "{shown}");
        assert!(!shown.contains(&secret.expose()[3..20]), "{shown}");
    }
    // A secret pasted as a bare line (not even TOML).
    std::fs::write(&path, format!("{}\n", secret.expose())).unwrap();
    let e = AccessList::load(&path).unwrap_err();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(&secret.expose()[3..20]), "{shown}");
    assert!(shown.contains("access.toml:1"), "{shown}");
}

#[test]
fn access_store_reload_replaces_only_a_valid_file() {
    let tmp = TempDir::new().unwrap();
    let path = tmp.path().join("access.toml");
    let (secret, line) = new_credential().unwrap();
    std::fs::write(
        &path,
        format!("[[principal]]\nname = \"web\"\nroles = [\"app\"]\ncredentials = [\"{line}\"]\n"),
    )
    .unwrap();
    let store = AccessStore::load(&path).unwrap();
    assert_eq!(
        store.authenticate_bearer(secret.expose()).unwrap().name,
        "web"
    );

    // Broken: kept.
    std::fs::write(&path, "[[principal]]\nname = 1\n").unwrap();
    assert!(store.reload().is_err());
    assert_eq!(
        store.authenticate_bearer(secret.expose()).unwrap().name,
        "web"
    );

    // Valid, without the credential: revoked.
    std::fs::write(&path, "[[principal]]\nname = \"web\"\nroles = [\"app\"]\n").unwrap();
    store.reload().unwrap();
    assert_eq!(store.authenticate_bearer(secret.expose()), None);
    assert!(store.for_certificate_name("web").may(Role::App));
    assert!(!format!("{store:?}").contains(secret.expose()));
}
