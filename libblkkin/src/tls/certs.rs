//! Test certificates for a cluster (feature `certs`; `blkkin certs`).
//!
//! A CA, a relay server certificate (SANs: host names and IP addresses) and
//! client certificates whose SAN URI is the blkkin [`Identity`]. Every file
//! is written 0600 in a 0700 directory. Good for tests and small clusters;
//! a site with its own PKI issues the same SANs from it.
//!
//! Files in the output directory: `ca.pem`/`ca.key`, `server.pem`/`server.key`,
//! `producer-<node>.pem`/`.key`, `reader-<name>.pem`/`.key`.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::Identity;

/// Why certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Writing or reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// rcgen refused a parameter (e.g. a name that is not a valid DNS name).
    #[error("{context}: {source}")]
    Rcgen {
        /// What was being made.
        context: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// Nothing to sign with.
    #[error("no CA in {0}: create one with --ca (writes ca.pem and ca.key)")]
    NoCa(PathBuf),
}

/// What to make.
#[derive(Debug, Clone, Default)]
pub struct CertRequest {
    /// Output directory (created 0700 if missing).
    pub out: PathBuf,
    /// Make a new CA (else sign with `ca.key` already in `out`).
    pub new_ca: bool,
    /// Host names and IP addresses of a relay server certificate to make.
    pub server: Vec<String>,
    /// Nodes to make producer certificates for.
    pub producers: Vec<String>,
    /// Names to make reader certificates for.
    pub readers: Vec<String>,
}

fn rc(context: impl Into<String>) -> impl FnOnce(rcgen::Error) -> CertError {
    let context = context.into();
    move |source| CertError::Rcgen { context, source }
}

/// The CA's parameters: always the same, so a CA key read back from disk
/// signs with the same issuer name.
fn ca_params() -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc("CA"))?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(DnType::CommonName, "blkkin cluster CA");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn write_private(path: &Path, contents: &str) -> Result<(), CertError> {
    let io = |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Makes what `req` asks for; returns the files written.
pub fn generate(req: &CertRequest) -> Result<Vec<PathBuf>, CertError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&req.out)
        .map_err(|source| CertError::Io {
            path: req.out.clone(),
            source,
        })?;
    let mut written = Vec::new();
    let mut put = |name: String, pem: String| -> Result<(), CertError> {
        let path = req.out.join(name);
        write_private(&path, &pem)?;
        written.push(path);
        Ok(())
    };
    let ca_key_path = req.out.join("ca.key");
    let ca_key = if req.new_ca {
        let key = KeyPair::generate().map_err(rc("CA key"))?;
        let cert = ca_params()?.self_signed(&key).map_err(rc("CA"))?;
        put("ca.pem".into(), cert.pem())?;
        put("ca.key".into(), key.serialize_pem())?;
        key
    } else {
        let pem =
            std::fs::read_to_string(&ca_key_path).map_err(|_| CertError::NoCa(req.out.clone()))?;
        KeyPair::from_pem(&pem).map_err(rc("reading ca.key"))?
    };
    let ca = ca_params()?.self_signed(&ca_key).map_err(rc("CA"))?;

    let mut leaf = |file: &str,
                    cn: &str,
                    sans: Vec<SanType>,
                    usage: ExtendedKeyUsagePurpose|
     -> Result<(), CertError> {
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc(cn))?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.subject_alt_names = sans;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().map_err(rc(cn))?;
        let cert = p.signed_by(&key, &ca, &ca_key).map_err(rc(cn))?;
        put(format!("{file}.pem"), cert.pem())?;
        put(format!("{file}.key"), key.serialize_pem())
    };

    if !req.server.is_empty() {
        let mut sans = Vec::new();
        for h in &req.server {
            sans.push(match h.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    h.clone()
                        .try_into()
                        .map_err(rc(format!("server name `{h}`")))?,
                ),
            });
        }
        leaf(
            "server",
            &req.server[0],
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
    }
    let clients = req
        .producers
        .iter()
        .map(|n| (format!("producer-{n}"), Identity::Producer(n.clone())))
        .chain(
            req.readers
                .iter()
                .map(|n| (format!("reader-{n}"), Identity::Reader(n.clone()))),
        );
    for (file, id) in clients {
        if file.contains('/') {
            return Err(CertError::Io {
                path: PathBuf::from(file),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "`/` in a name"),
            });
        }
        let uri = id
            .uri()
            .try_into()
            .map_err(rc(format!("identity `{id}`")))?;
        leaf(
            &file,
            &id.uri(),
            vec![SanType::URI(uri)],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
    }
    Ok(written)
}
