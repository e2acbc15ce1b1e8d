//! The one error type of this crate.
//!
//! Every variant about a file names that file and says what is wrong with it, so an operator
//! can act on the message alone. No variant ever carries the content of a key, a bearer secret
//! or a credential line: messages that come from parsers which may quote their input (TOML,
//! PEM) are reduced to a position and a category first.

use std::path::PathBuf;

/// What went wrong while generating, loading or reloading security material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read, created or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// A file meant to hold certificates holds none, or one that cannot be used.
    #[error("{}: {reason}", path.display())]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong (never key material: certificates are public).
        reason: String,
    },

    /// A file meant to hold a private key holds none, or one that cannot be used. The reason
    /// is one of a few fixed sentences: nothing read from the file is repeated.
    #[error("{}: {reason}", path.display())]
    PrivateKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong, in a fixed sentence.
        reason: &'static str,
    },

    /// The private key does not belong to the certificate it was given with.
    #[error("{} does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },

    /// The access file is not valid TOML or not of the expected form.
    #[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    AccessFile {
        /// The access file.
        path: PathBuf,
        /// The line of the problem, when known (1-based).
        line: Option<usize>,
        /// What is wrong; any quoted input that could be a secret is elided.
        message: String,
    },

    /// The seal key file is not 64 hexadecimal digits.
    #[error("{}: {reason}", path.display())]
    SealKey {
        /// The seal key file.
        path: PathBuf,
        /// What is wrong, in a fixed sentence.
        reason: &'static str,
    },

    /// A certificate could not be generated (bad host name, signing failure).
    #[error("cannot generate {what}: {reason}")]
    Generate {
        /// Which certificate.
        what: String,
        /// Why.
        reason: String,
    },

    /// A file that would be created already exists: keys and certificates are never
    /// overwritten, so a CA key cannot be lost by running a command twice.
    #[error("{} already exists; remove it first to replace it", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },

    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,

    /// rustls refused to build a configuration from the loaded material.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
