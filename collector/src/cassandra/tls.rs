//! TLS to Cassandra's native port (`client_encryption_options`), through
//! the system OpenSSL: the node's certificate is verified against the
//! configured CA (or the system's CAs) and against the IP address the
//! driver connects to; a client certificate is presented when configured
//! (for `require_client_auth`).

use std::path::{Path, PathBuf};

use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslConnectorBuilder, SslMethod, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use scylla::client::session::OpenSsl010Config;

use super::CassandraError;

/// How to speak TLS to Cassandra.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CassandraTls {
    /// PEM file of the CA certificate(s) to trust instead of the system's
    /// (a self-signed node certificate can be given here directly).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) and its unencrypted PEM private key,
    /// for nodes with `require_client_auth: true`.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, CassandraError> {
    std::fs::read(path).map_err(|e| CassandraError::Tls(format!("{what} {}: {e}", path.display())))
}

fn bad(what: &str, path: &Path, e: impl std::fmt::Display) -> CassandraError {
    CassandraError::Tls(format!("{what} {}: {e}", path.display()))
}

impl CassandraTls {
    /// Reads the files and builds the OpenSSL connector; errors name the
    /// file and what is wrong with it, so a collector can refuse a bad
    /// configuration at startup.
    pub fn connector(&self) -> Result<SslConnectorBuilder, CassandraError> {
        let mut builder = SslConnector::builder(SslMethod::tls_client())
            .map_err(|e| CassandraError::Tls(format!("OpenSSL: {e}")))?;
        builder.set_verify(SslVerifyMode::PEER);
        if let Some(path) = &self.ca_file {
            let certs = X509::stack_from_pem(&read("CA file", path)?)
                .map_err(|e| bad("CA file", path, e))?;
            if certs.is_empty() {
                return Err(bad("CA file", path, "no PEM certificate in it"));
            }
            // Only this CA: the system's store is not consulted.
            let mut store = X509StoreBuilder::new().map_err(|e| bad("CA file", path, e))?;
            for c in certs {
                store.add_cert(c).map_err(|e| bad("CA file", path, e))?;
            }
            builder.set_cert_store(store.build());
        }
        if let Some((cert, key)) = &self.client_cert {
            let chain = X509::stack_from_pem(&read("client certificate", cert)?)
                .map_err(|e| bad("client certificate", cert, e))?;
            let mut chain = chain.into_iter();
            let leaf = chain
                .next()
                .ok_or_else(|| bad("client certificate", cert, "no PEM certificate in it"))?;
            builder
                .set_certificate(&leaf)
                .map_err(|e| bad("client certificate", cert, e))?;
            for c in chain {
                builder
                    .add_extra_chain_cert(c)
                    .map_err(|e| bad("client certificate", cert, e))?;
            }
            let pkey = PKey::private_key_from_pem(&read("client key", key)?)
                .map_err(|e| bad("client key", key, e))?;
            let mismatch = |e| {
                bad(
                    "client key",
                    key,
                    format!("does not match {}: {e}", cert.display()),
                )
            };
            builder.set_private_key(&pkey).map_err(mismatch)?;
            builder.check_private_key().map_err(mismatch)?;
        }
        Ok(builder)
    }

    /// The driver's TLS context (see [`CassandraTls::connector`]).
    pub(super) fn context(&self) -> Result<OpenSsl010Config, CassandraError> {
        Ok(OpenSsl010Config::new(self.connector()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::x509::X509NameBuilder;

    /// A self-signed certificate and its key, PEM.
    fn self_signed(cn: &str) -> (Vec<u8>, Vec<u8>) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        (
            b.build().to_pem().unwrap(),
            key.private_key_to_pem_pkcs8().unwrap(),
        )
    }

    fn error_of(tls: &CassandraTls) -> String {
        match tls.connector() {
            Ok(_) => panic!("{tls:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn builds_with_a_ca_and_a_matching_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = self_signed("ca");
        let (cert, key) = self_signed("client");
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("ca.pem"), ca).unwrap();
        std::fs::write(p("client.pem"), cert).unwrap();
        std::fs::write(p("client.key"), key).unwrap();
        let tls = CassandraTls {
            ca_file: Some(p("ca.pem")),
            client_cert: Some((p("client.pem"), p("client.key"))),
        };
        tls.context().expect("a valid TLS configuration");
        // Neither file is required: system CAs, no client certificate.
        CassandraTls::default().context().expect("defaults");
    }

    #[test]
    fn bad_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let missing = CassandraTls {
            ca_file: Some(p("nope.pem")),
            client_cert: None,
        };
        let e = error_of(&missing);
        assert!(e.contains("CA file") && e.contains("nope.pem"), "{e}");

        std::fs::write(p("garbage.pem"), "not a certificate").unwrap();
        let garbage = CassandraTls {
            ca_file: Some(p("garbage.pem")),
            client_cert: None,
        };
        let e = error_of(&garbage);
        assert!(e.contains("garbage.pem"), "{e}");

        // A key that belongs to another certificate.
        let (cert, _) = self_signed("one");
        let (_, other_key) = self_signed("two");
        std::fs::write(p("c.pem"), cert).unwrap();
        std::fs::write(p("k.pem"), other_key).unwrap();
        let mismatch = CassandraTls {
            ca_file: None,
            client_cert: Some((p("c.pem"), p("k.pem"))),
        };
        let e = error_of(&mismatch);
        assert!(
            e.contains("client key") && e.contains("does not match"),
            "{e}"
        );
    }
}
