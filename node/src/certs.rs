//! `sessiond certs`: make a cluster's CA, node and client certificates, bearer credentials
//! and seal key in one directory (the layout `--certs-dir` reads), one command per file set,
//! never overwriting a file. Client principals and credential hashes are added to the
//! directory's `access.toml`; bearer secrets are written once, to a file of the operator's
//! choosing (mode 0600), and never stored by the cluster.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use sessiond_security::certs::{self, Ca};
use sessiond_security::Role;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// The access file's name inside a certs directory.
pub const ACCESS_FILE: &str = "access.toml";

/// `sessiond certs <what>`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// The directory holding the cluster's certificates (created when missing).
    #[arg(
        long,
        env = "SESSIOND_CERTS_DIR",
        global = true,
        default_value = "certs"
    )]
    pub certs_dir: PathBuf,
    #[command(subcommand)]
    pub what: CertsCmd,
}

/// What `sessiond certs` creates.
#[derive(Debug, Subcommand)]
pub enum CertsCmd {
    /// The cluster CA: ca.crt and ca.key (keep ca.key off the nodes).
    Ca,
    /// A node's certificate and key: node-<id>.crt, node-<id>.key.
    Node {
        /// The node id the certificate names (`node-<id>.sessiond`).
        #[arg(long)]
        node_id: u64,
        /// Host names and IP addresses clients use to reach the node (repeatable).
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// A client certificate (CN = NAME) and the principal's roles in access.toml.
    Client {
        #[arg(long)]
        name: String,
        /// app, watch or operator (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
    },
    /// A bearer credential: the secret goes to --out (0600), its hash and the principal's
    /// roles to access.toml.
    Credential {
        #[arg(long)]
        name: String,
        /// app, watch or operator (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Where to write the secret (created, never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// The cluster's seal key (copy the same file to every node).
    SealKey,
    /// Everything a local cluster needs (what `sessiond dev` makes): CA, nodes 1..=N for the
    /// given hosts, the seal key, and client certificates for the given principals. Files
    /// that exist are kept.
    Local {
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[arg(long = "host", default_values_t = [String::from("127.0.0.1"), String::from("localhost")])]
        hosts: Vec<String>,
        /// NAME=ROLE[+ROLE...] (repeatable), e.g. `app=app`, `admin=app+watch+operator`.
        #[arg(long = "client", default_values_t = [String::from("dev=app+watch+operator")])]
        clients: Vec<String>,
    },
}

fn parse_roles(roles: &[String]) -> anyhow::Result<Vec<Role>> {
    roles
        .iter()
        .map(|r| {
            r.parse::<Role>().map_err(|_| {
                anyhow::anyhow!("unknown role `{r}` (expected app, watch or operator)")
            })
        })
        .collect()
}

/// A principal entry appended to `access.toml`; refuses a name already listed.
fn add_principal(
    dir: &Path,
    name: &str,
    roles: &[Role],
    credential: Option<&str>,
) -> anyhow::Result<()> {
    let path = dir.join(ACCESS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        bail!("a principal name is 1 to 64 characters of A-Z a-z 0-9 . _ -");
    }
    let roles = roles
        .iter()
        .map(|r| format!("\"{}\"", r.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut entry = format!("\n[[principal]]\nname = \"{name}\"\nroles = [{roles}]\n");
    if let Some(line) = credential {
        entry.push_str(&format!("credentials = [\"{line}\"]\n"));
    }
    let new = format!("{text}{entry}");
    // Refuse to leave a file the node would not load.
    let tmp = dir.join(format!(".{ACCESS_FILE}.new"));
    std::fs::write(&tmp, &new).with_context(|| format!("writing {}", tmp.display()))?;
    if let Err(e) = sessiond_security::access::AccessList::load(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        bail!("not added (is `{name}` already listed?): {e}");
    }
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Write a new file with mode 0600, refusing to overwrite.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{secret}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn load_or_create_ca(dir: &Path) -> anyhow::Result<Ca> {
    if dir.join(certs::CA_CERT).exists() {
        Ok(Ca::load(dir)?)
    } else {
        Ok(certs::create_ca(dir)?)
    }
}

/// Create the certificates of a local cluster in `dir`, keeping files that exist: the CA,
/// nodes `1..=nodes` for `hosts`, the seal key, and for each `(name, roles)` a client
/// certificate listed in the access file.
pub fn ensure_local(
    dir: &Path,
    nodes: u64,
    hosts: &[String],
    clients: &[(String, Vec<Role>)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = load_or_create_ca(dir)?;
    for id in 1..=nodes {
        if !dir.join(certs::node_cert_file(id)).exists() {
            certs::create_node(dir, &ca, id, hosts)?;
        }
    }
    if !dir.join(certs::SEAL_KEY).exists() {
        certs::create_seal_key(dir)?;
    }
    let access = dir.join(ACCESS_FILE);
    if !access.exists() {
        std::fs::write(
            &access,
            "# Principals: client certificate common names or bearer credentials, and roles.\n",
        )
        .with_context(|| format!("writing {}", access.display()))?;
    }
    for (name, roles) in clients {
        if !dir.join(certs::client_cert_file(name)).exists() {
            certs::create_client(dir, &ca, name)?;
            add_principal(dir, name, roles, None)?;
        }
    }
    Ok(())
}

/// Parse `NAME=ROLE[+ROLE...]`.
pub fn parse_client(spec: &str) -> anyhow::Result<(String, Vec<Role>)> {
    let (name, roles) = spec
        .split_once('=')
        .with_context(|| format!("`{spec}` is not NAME=ROLE[+ROLE...]"))?;
    let roles: Vec<String> = roles.split('+').map(str::to_owned).collect();
    Ok((name.to_owned(), parse_roles(&roles)?))
}

/// Run `sessiond certs`.
pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let dir = &args.certs_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    match args.what {
        CertsCmd::Ca => {
            certs::create_ca(dir)?;
            println!("created {}/ca.crt and ca.key", dir.display());
        }
        CertsCmd::Node { node_id, hosts } => {
            if node_id == 0 {
                bail!("--node-id must be greater than 0");
            }
            let ca = Ca::load(dir)?;
            let files = certs::create_node(dir, &ca, node_id, &hosts)?;
            println!(
                "created {} and {}",
                files.cert.display(),
                files.key.display()
            );
        }
        CertsCmd::Client { name, roles } => {
            let roles = parse_roles(&roles)?;
            let ca = Ca::load(dir)?;
            add_principal(dir, &name, &roles, None)?;
            let files = certs::create_client(dir, &ca, &name)?;
            println!(
                "created {} and {}",
                files.cert.display(),
                files.key.display()
            );
        }
        CertsCmd::Credential { name, roles, out } => {
            let roles = parse_roles(&roles)?;
            let (secret, line) = sessiond_security::access::new_credential()?;
            add_principal(dir, &name, &roles, Some(&line))?;
            write_secret(&out, secret.expose())?;
            println!(
                "added principal `{name}` to {}; its secret is in {} (send it as \
                 `authorization: Bearer <secret>`; reload the nodes with SIGHUP)",
                dir.join(ACCESS_FILE).display(),
                out.display()
            );
        }
        CertsCmd::SealKey => {
            let path = certs::create_seal_key(dir)?;
            println!("created {}", path.display());
        }
        CertsCmd::Local {
            nodes,
            hosts,
            clients,
        } => {
            let clients = clients
                .iter()
                .map(|c| parse_client(c))
                .collect::<anyhow::Result<Vec<_>>>()?;
            ensure_local(dir, nodes, &hosts, &clients)?;
            println!(
                "certificates of a local {nodes}-node cluster in {}",
                dir.display()
            );
        }
    }
    Ok(())
}
