//! Transport security and access control of sessiond.
//!
//! sessiond trusts no packet: peers authenticate each other with mutual TLS under the
//! cluster CA, and a peer certificate names its node id ([`identity::node_id_of`]), which
//! every Raft envelope on that connection must carry. Clients use TLS on the client port and
//! authenticate with a client certificate (principal = its common name) or a bearer
//! credential (`authorization: Bearer <secret>`, checked against hashes in the access file);
//! the access file gives each principal its roles ([`Role`]).
//!
//! - [`certs`]: generating the CA, node and client certificates and the seal key.
//! - [`tls`]: rustls configurations over a [`TlsStore`] that reloads (on SIGHUP) without a
//!   restart.
//! - [`identity`]: the node id or principal name a verified certificate names.
//! - [`access`]: the access file, bearer authentication, [`AccessStore`] (reloadable).
//! - [`role`]: roles and principals.
//!
//! Nothing here prints a key, a bearer secret or a credential hash: their types redact
//! `Debug`, and errors name the file and the problem only.

#![warn(missing_docs)]

pub mod access;
pub mod certs;
mod error;
pub mod identity;
pub mod role;
pub mod tls;

pub use access::{new_credential, AccessList, AccessStore, BearerSecret};
pub use error::{Error, Result};
pub use role::{Principal, Role, RoleSet};
pub use tls::{TlsFiles, TlsStore};
