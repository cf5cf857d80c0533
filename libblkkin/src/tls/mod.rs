//! TLS and authentication settings for relay connections (feature `tls`;
//! test certificates with feature `certs`).
//!
//! The relay (blkkin-relayd), the consumer and every reader (the
//! collector, `blkkin tail` and `status`) take their TLS and token settings
//! from here (docs/SECURITY.md):
//!
//! * rustls client and server configurations from PEM files; a server with
//!   a client CA requires client certificates (mutual TLS);
//! * identities in a client certificate's SAN URI ([`Identity`]:
//!   `blkkin:producer:<node>` or `blkkin:reader:<name>`): a producer may
//!   only say `Hello` as a consumer and open streams of its own node, a
//!   reader only read;
//! * a blocking client connection, plain or TLS, that one thread reads
//!   while another writes ([`ClientStream`]);
//! * shared tokens for small setups ([`TokenTable`], compared in constant
//!   time; a token file readable by others is refused);
//! * with `certs`, a test CA and server/producer/reader certificates
//!   ([`certs::generate`]).
//!
//! rustls with the `ring` provider, chosen explicitly (never the process
//! default, which panics when a build carries two providers).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
pub use rustls::{ClientConfig, ServerConfig};

#[cfg(feature = "certs")]
pub mod certs;
mod stream;

pub use stream::{ClientStream, ConnectError};

/// Why a TLS or authentication setting could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{0}: no certificate (expected a PEM \"BEGIN CERTIFICATE\" block)")]
    NoCert(PathBuf),
    /// A PEM file holds no private key.
    #[error("{0}: no private key (expected a PEM PKCS#8, PKCS#1 or SEC1 private key block)")]
    NoKey(PathBuf),
    /// A PEM file is malformed.
    #[error("{path}: malformed PEM: {message}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// rustls refused the certificates or key (e.g. a key that does not match the certificate).
    #[error("{context}: {source}")]
    Rustls {
        /// What was being built.
        context: &'static str,
        /// rustls' error.
        source: rustls::Error,
    },
    /// The client CA could not be used to verify clients.
    #[error("client CA {path}: {message}")]
    ClientCa {
        /// The CA file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A certificate could not be parsed or names no blkkin identity.
    #[error("client certificate: {0}")]
    Identity(String),
    /// A token file is malformed or unsafe.
    #[error("token file {path}: {message}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The options given do not make a setting.
    #[error("{0}")]
    Usage(String),
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    TlsError::BadPem {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(path.to_path_buf()));
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path)?;
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(k) => Ok(k),
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            Err(TlsError::NoKey(path.to_path_buf()))
        }
        Err(e) => Err(pem_error(path, e)),
    }
}

// Deprecated in rustls 0.23.48 only for lacking post-quantum key exchange;
// ring is this project's provider (no C toolchain beyond ring's own, no OpenSSL).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| TlsError::Rustls {
            context: "adding a CA certificate",
            source: e,
        })?;
    }
    Ok(roots)
}

/// A client configuration trusting the CA certificates of `ca`, presenting
/// `cert` (chain) and its `key` when given (mutual TLS).
pub fn client_config(
    ca: &Path,
    cert_key: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = roots(ca)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls {
            context: "protocol versions",
            source: e,
        })?
        .with_root_certificates(roots);
    let cfg = match cert_key {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Rustls {
                context: "client certificate and key",
                source: e,
            })?,
    };
    Ok(Arc::new(cfg))
}

/// Whether a relay with a client CA insists on client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// Every client must present a certificate signed by the CA.
    Required,
    /// A client may present one (checked against the CA if it does) or
    /// authenticate otherwise (a token).
    Optional,
}

/// A server configuration presenting `cert` (chain) with `key`; with
/// `client_ca`, clients' certificates are verified against it (mutual TLS).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<(&Path, ClientCerts)>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls {
            context: "protocol versions",
            source: e,
        })?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some((ca, mode)) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            );
            let verifier = match mode {
                ClientCerts::Required => verifier,
                ClientCerts::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| TlsError::ClientCa {
                path: ca.to_path_buf(),
                message: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let cfg = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| TlsError::Rustls {
            context: "server certificate and key",
            source: e,
        })?;
    Ok(Arc::new(cfg))
}

/// Who a peer is, from its certificate or its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A consumer daemon allowed to send the streams of this node.
    Producer(String),
    /// A reader (tail, status, collector) of this name.
    Reader(String),
}

impl Identity {
    /// Parses `blkkin:producer:<node>` or `blkkin:reader:<name>`.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix("blkkin:")?;
        let (role, name) = rest.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        match role {
            "producer" => Some(Identity::Producer(name.to_string())),
            "reader" => Some(Identity::Reader(name.to_string())),
            _ => None,
        }
    }

    /// The SAN URI naming this identity.
    pub fn uri(&self) -> String {
        match self {
            Identity::Producer(n) => format!("blkkin:producer:{n}"),
            Identity::Reader(n) => format!("blkkin:reader:{n}"),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// The blkkin identity of a (verified) client certificate: its one SAN URI
/// of the form `blkkin:<role>:<name>`. None, or two different ones, is an error.
pub fn identity_of(cert_der: &[u8]) -> Result<Identity, TlsError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| TlsError::Identity(format!("unparsable certificate: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::Identity(format!("bad subjectAltName: {e}")))?;
    let mut found: Option<Identity> = None;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        if let GeneralName::URI(uri) = name {
            if let Some(id) = Identity::from_uri(uri) {
                if found.as_ref().is_some_and(|f| *f != id) {
                    return Err(TlsError::Identity(
                        "the certificate names more than one blkkin identity".into(),
                    ));
                }
                found = Some(id);
            }
        }
    }
    found.ok_or_else(|| {
        TlsError::Identity(
            "no SAN URI blkkin:producer:<node> or blkkin:reader:<name> in the certificate".into(),
        )
    })
}

/// Compares two secrets in time independent of where they differ.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    // Lengths are not secret enough to matter (tokens are long and random);
    // the contents are compared in constant time.
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Fails if `path` can be read by other users (mode bits for "other").
fn check_private(path: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode();
    if mode & 0o007 != 0 {
        return Err(TlsError::TokenFile {
            path: path.to_path_buf(),
            message: format!(
                "readable or writable by every user (mode {:o}); chmod 600 it",
                mode & 0o777
            ),
        });
    }
    Ok(())
}

/// The relay's token file: lines `producer <node> <token>` or
/// `reader <name> <token>`; `#` starts a comment.
#[derive(Clone)]
pub struct TokenTable {
    entries: Vec<(Identity, String)>,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenTable")
            .field(
                "identities",
                &self.entries.iter().map(|e| &e.0).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Shortest token accepted (bytes): shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

impl TokenTable {
    /// Reads and checks a token file (which must not be world-accessible).
    pub fn load(path: &Path) -> Result<TokenTable, TlsError> {
        check_private(path)?;
        let text = String::from_utf8(read_file(path)?).map_err(|_| TlsError::TokenFile {
            path: path.to_path_buf(),
            message: "not UTF-8".into(),
        })?;
        TokenTable::parse(&text).map_err(|message| TlsError::TokenFile {
            path: path.to_path_buf(),
            message,
        })
    }

    /// Parses the text of a token file.
    pub fn parse(text: &str) -> Result<TokenTable, String> {
        let mut entries: Vec<(Identity, String)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let [role, name, token] = words[..] else {
                return Err(format!(
                    "line {}: expected `producer <node> <token>` or `reader <name> <token>`",
                    i + 1
                ));
            };
            let id = match role {
                "producer" => Identity::Producer(name.to_string()),
                "reader" => Identity::Reader(name.to_string()),
                other => {
                    return Err(format!(
                        "line {}: unknown role `{other}` (producer or reader)",
                        i + 1
                    ))
                }
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "line {}: token shorter than {MIN_TOKEN_LEN} characters",
                    i + 1
                ));
            }
            if entries.iter().any(|(_, t)| t == token) {
                return Err(format!("line {}: token used twice", i + 1));
            }
            entries.push((id, token.to_string()));
        }
        if entries.is_empty() {
            return Err("no token in the file".into());
        }
        Ok(TokenTable { entries })
    }

    /// The identity a token stands for. Every entry is compared (in
    /// constant time), whether or not an earlier one matched.
    pub fn identify(&self, token: &str) -> Option<Identity> {
        let mut found = None;
        for (id, t) in &self.entries {
            if secrets_equal(t.as_bytes(), token.as_bytes()) && found.is_none() {
                found = Some(id.clone());
            }
        }
        found
    }
}

/// Reads a client's token file: one line, the token (must not be world-accessible).
pub fn read_client_token(path: &Path) -> Result<String, TlsError> {
    check_private(path)?;
    let text = String::from_utf8(read_file(path)?).map_err(|_| TlsError::TokenFile {
        path: path.to_path_buf(),
        message: "not UTF-8".into(),
    })?;
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(TlsError::TokenFile {
            path: path.to_path_buf(),
            message: "expected one line holding the token".into(),
        });
    }
    Ok(token.to_string())
}

/// How a client connects to a relay: TLS settings and a token, each optional.
#[derive(Clone, Default)]
pub struct ClientAuth {
    /// TLS client configuration (None: plain TCP).
    pub tls: Option<Arc<ClientConfig>>,
    /// Name the relay's certificate must carry (None: the host part of the address).
    pub server_name: Option<String>,
    /// Token to send in `Hello` (shared-token mode).
    pub token: Option<String>,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAuth")
            .field("tls", &self.tls.is_some())
            .field("server_name", &self.server_name)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl ClientAuth {
    /// Builds the settings from the client options (`--tls-ca`, `--tls-cert`,
    /// `--tls-key`, `--token-file`, `--tls-server-name`). No option at all:
    /// plain TCP, as before.
    pub fn from_options(o: &ClientAuthOptions) -> Result<ClientAuth, TlsError> {
        let cert_key = match (&o.tls_cert, &o.tls_key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            (None, None) => None,
            _ => {
                return Err(TlsError::Usage(
                    "--tls-cert and --tls-key go together".into(),
                ))
            }
        };
        let tls = match &o.tls_ca {
            Some(ca) => Some(client_config(ca, cert_key)?),
            None if cert_key.is_some() || o.tls_server_name.is_some() => {
                return Err(TlsError::Usage(
                    "TLS needs --tls-ca (the CA that signed the relay's certificate)".into(),
                ))
            }
            None => None,
        };
        let token = o.token_file.as_deref().map(read_client_token).transpose()?;
        Ok(ClientAuth {
            tls,
            server_name: o.tls_server_name.clone(),
            token,
        })
    }

    /// The TLS server name for a connection to `addr` (host:port).
    pub fn server_name_for(&self, addr: &str) -> Result<ServerName<'static>, TlsError> {
        let host = match &self.server_name {
            Some(n) => n.as_str(),
            None => host_of(addr),
        };
        ServerName::try_from(host.to_string())
            .map_err(|_| TlsError::Usage(format!("`{host}` is not a valid TLS server name")))
    }
}

/// The host part of `host:port` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    }
}

/// The client options every relay client takes, as given on a command line
/// (with feature `daemon`, a clap argument group to flatten into one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "daemon", derive(clap::Args))]
pub struct ClientAuthOptions {
    /// Connect to the relay with TLS, trusting the CA certificate(s) in this
    /// PEM file to have signed the relay's certificate (docs/SECURITY.md).
    #[cfg_attr(
        feature = "daemon",
        arg(long, value_name = "PEM", help_heading = "Relay authentication")
    )]
    pub tls_ca: Option<PathBuf>,
    /// This client's certificate (PEM; mutual TLS): SAN URI
    /// blkkin:reader:<name> for a reader, blkkin:producer:<node> for a
    /// consumer (`blkkin certs`).
    #[cfg_attr(
        feature = "daemon",
        arg(
            long,
            value_name = "PEM",
            requires = "tls_key",
            help_heading = "Relay authentication"
        )
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[cfg_attr(
        feature = "daemon",
        arg(
            long,
            value_name = "PEM",
            requires = "tls_cert",
            help_heading = "Relay authentication"
        )
    )]
    pub tls_key: Option<PathBuf>,
    /// File holding this client's token, for a relay with a token file (one
    /// line; must not be readable by other users).
    #[cfg_attr(
        feature = "daemon",
        arg(long, value_name = "FILE", help_heading = "Relay authentication")
    )]
    pub token_file: Option<PathBuf>,
    /// Name the relay's certificate must carry [default: the host of the
    /// relay address].
    #[cfg_attr(
        feature = "daemon",
        arg(long, value_name = "NAME", help_heading = "Relay authentication")
    )]
    pub tls_server_name: Option<String>,
}

#[cfg(test)]
mod tests;
