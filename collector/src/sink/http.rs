//! Zipkin's HTTP collector: `POST /api/v2/spans` (JSON) or
//! `POST /api/v1/spans` (`application/x-thrift`, a TBinaryProtocol
//! `list<Span>`).
//!
//! The client is `ureq`: blocking and small (no async runtime), which fits a
//! sink that owns a worker thread and sends one request at a time. `https://`
//! URLs use rustls (ring), trusting Mozilla's roots (webpki-roots) or, with
//! [`ZipkinHttpSink::with_tls`] and [`tls_trusting`] (`--zipkin-ca`), only the
//! CA certificates of a PEM file, as a private cluster CA needs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::{Sink, SinkError};
use crate::model::Span;
use crate::tbinary;
#[cfg(test)]
use crate::v1::V1Span;

/// The body format a Zipkin HTTP sink sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpFormat {
    /// v2 JSON to `/api/v2/spans`.
    JsonV2,
    /// v1 Thrift to `/api/v1/spans`.
    ThriftV1,
}

/// Sends batches to a Zipkin server over HTTP.
pub struct ZipkinHttpSink {
    url: String,
    format: HttpFormat,
    agent: ureq::Agent,
}

/// Why the TLS settings of a Zipkin HTTP sink could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HttpTlsError {
    /// The CA file could not be read or holds no usable certificate.
    #[error("CA certificates {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// rustls on ring, the back end ureq 2 itself uses. Explicit, because the
/// process default is ambiguous when several rustls back ends are linked
/// in. (rustls 0.23.48 deprecates it as ring has no post-quantum key
/// exchange; aws-lc-rs would add a C/CMake build for that alone.)
#[allow(deprecated)]
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client configuration trusting only the CA certificates of the PEM
/// file `ca` (e.g. the cluster's CA), for [`ZipkinHttpSink::with_tls`].
pub fn tls_trusting(ca: &Path) -> Result<Arc<rustls::ClientConfig>, HttpTlsError> {
    let bad = |reason: String| HttpTlsError::Ca {
        path: ca.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| bad(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    let provider = ring_provider();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

impl ZipkinHttpSink {
    /// A sink for the Zipkin server at `base` (e.g. `http://127.0.0.1:9411`
    /// or `https://zipkin.example:9411`, verified against Mozilla's roots).
    pub fn new(base: &str, format: HttpFormat) -> ZipkinHttpSink {
        ZipkinHttpSink::build(base, format, ureq::AgentBuilder::new())
    }

    /// A sink whose `https://` connections use `tls` (see [`tls_trusting`]).
    pub fn with_tls(
        base: &str,
        format: HttpFormat,
        tls: Arc<rustls::ClientConfig>,
    ) -> ZipkinHttpSink {
        ZipkinHttpSink::build(base, format, ureq::AgentBuilder::new().tls_config(tls))
    }

    fn build(base: &str, format: HttpFormat, agent: ureq::AgentBuilder) -> ZipkinHttpSink {
        ZipkinHttpSink {
            // A URL `endpoint` refuses is kept as given: every post then
            // fails and is counted (the collector checks its URLs at start).
            url: endpoint(base, format).unwrap_or_else(|_| base.to_string()),
            format,
            agent: agent
                .timeout_connect(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .build(),
        }
    }

    /// Where it posts.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// The URL a sink for `given` posts to: a Zipkin base URL
/// (`http://zipkin:9411`, also under a path prefix) gets the format's
/// endpoint appended; the full endpoint (`…/api/v2/spans`, the form
/// OpenTelemetry's Zipkin exporter takes) is used as it is. Anything else
/// under `/api/` (another endpoint, or the other format's) is refused,
/// saying what to give.
pub fn endpoint(given: &str, format: HttpFormat) -> Result<String, String> {
    let (path, other, flag) = match format {
        HttpFormat::JsonV2 => ("/api/v2/spans", "/api/v1/spans", "json"),
        HttpFormat::ThriftV1 => ("/api/v1/spans", "/api/v2/spans", "thrift"),
    };
    let url = given.trim_end_matches('/');
    let Some(rest) = given
        .strip_prefix("http://")
        .or_else(|| given.strip_prefix("https://"))
    else {
        return Err(format!(
            "Zipkin URL `{given}` must start with http:// or https:// (e.g. http://zipkin:9411)"
        ));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("Zipkin URL `{given}` has no host"));
    }
    if url.ends_with(path) {
        return Ok(url.to_string());
    }
    if url.ends_with(other) {
        return Err(format!(
            "Zipkin URL `{given}` is the endpoint of the other format, but --zipkin-format \
             {flag} posts to {path}: give the base URL (e.g. http://zipkin:9411)"
        ));
    }
    if url.contains("/api/") {
        return Err(format!(
            "Zipkin URL `{given}` names an API path: give the base URL (e.g. \
             http://zipkin:9411) or the endpoint itself (…{path})"
        ));
    }
    Ok(format!("{url}{path}"))
}

/// Encodes a batch: (body, content type, spans that could not be encoded).
fn encode(format: HttpFormat, batch: &[Span]) -> (Vec<u8>, &'static str, Vec<String>) {
    match format {
        HttpFormat::JsonV2 => (
            // Serialising the model cannot fail: only strings, numbers and maps with string keys.
            serde_json::to_vec(batch).expect("spans serialise"),
            "application/json",
            Vec::new(),
        ),
        HttpFormat::ThriftV1 => {
            let (spans, bad) = super::to_v1(batch);
            (
                tbinary::encode_span_list(&spans),
                "application/x-thrift",
                bad,
            )
        }
    }
}

impl Sink for ZipkinHttpSink {
    fn send(&mut self, batch: &[Span]) -> Result<(), SinkError> {
        let (body, content_type, bad) = encode(self.format, batch);
        if bad.len() < batch.len() {
            let res = self
                .agent
                .post(&self.url)
                .set("Content-Type", content_type)
                .send_bytes(&body);
            match res {
                Ok(_) => {}
                // Zipkin answers 4xx for input it will never accept.
                Err(ureq::Error::Status(code, r))
                    if (400..500).contains(&code) && code != 408 && code != 429 =>
                {
                    return Err(SinkError::Rejected {
                        spans: batch.len(),
                        reason: format!("{} answered {code}: {}", self.url, body_text(r)),
                    })
                }
                Err(ureq::Error::Status(code, r)) => {
                    return Err(SinkError::Retry(format!(
                        "{} answered {code}: {}",
                        self.url,
                        body_text(r)
                    )))
                }
                Err(e) => return Err(SinkError::Retry(format!("{}: {e}", self.url))),
            }
        }
        super::rejected_if_any(bad)
    }
}

/// The start of an error response's body, for the log.
fn body_text(r: ureq::Response) -> String {
    let mut s = String::new();
    let _ = r.into_reader().take(512).read_to_string(&mut s);
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn the_endpoint_may_be_given_whole_or_as_a_base() {
        let json = HttpFormat::JsonV2;
        let thrift = HttpFormat::ThriftV1;
        for (given, format, want) in [
            ("http://z:9411", json, "http://z:9411/api/v2/spans"),
            ("http://z:9411/", json, "http://z:9411/api/v2/spans"),
            (
                "http://z:9411/api/v2/spans",
                json,
                "http://z:9411/api/v2/spans",
            ),
            (
                "https://z/zipkin/api/v2/spans/",
                json,
                "https://z/zipkin/api/v2/spans",
            ),
            ("https://z/zipkin", thrift, "https://z/zipkin/api/v1/spans"),
            (
                "http://z:9411/api/v1/spans",
                thrift,
                "http://z:9411/api/v1/spans",
            ),
        ] {
            assert_eq!(endpoint(given, format).as_deref(), Ok(want), "{given}");
        }
        for (given, format, says) in [
            ("http://z:9411/api/v1/spans", json, "other format"),
            ("http://z:9411/api/v2/spans", thrift, "other format"),
            ("http://z:9411/api/v2", json, "names an API path"),
            ("z:9411", json, "must start with http://"),
            ("http://", json, "no host"),
        ] {
            let e = endpoint(given, format).unwrap_err();
            assert!(e.contains(says), "{given}: {e}");
        }
    }

    /// A one-request HTTP server answering `status`; returns what it got.
    fn serve_once(status: u16) -> (String, std::thread::JoinHandle<(String, Vec<u8>)>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let mut s = s;
            write!(
                s,
                "HTTP/1.1 {status} X\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope"
            )
            .unwrap();
            (head, body)
        });
        (base, h)
    }

    fn span() -> Span {
        Span {
            trace_id: "00000000000000aa".into(),
            id: "00000000000000bb".into(),
            timestamp: Some(1),
            ..Span::default()
        }
    }

    #[test]
    fn posts_json_v2() {
        let (base, h) = serve_once(202);
        let mut sink = ZipkinHttpSink::new(&format!("{base}/"), HttpFormat::JsonV2);
        sink.send(&[span()]).unwrap();
        let (head, body) = h.join().unwrap();
        assert!(head.starts_with("POST /api/v2/spans "), "{head}");
        assert!(head
            .to_ascii_lowercase()
            .contains("content-type: application/json"));
        let back: Vec<Span> = serde_json::from_slice(&body).unwrap();
        assert_eq!(back, vec![span()]);
    }

    #[test]
    fn posts_thrift_v1_and_classifies_errors() {
        let (base, h) = serve_once(500);
        let mut sink = ZipkinHttpSink::new(&base, HttpFormat::ThriftV1);
        let e = sink.send(&[span()]).unwrap_err();
        assert!(
            matches!(e, SinkError::Retry(ref m) if m.contains("500")),
            "{e}"
        );
        let (head, body) = h.join().unwrap();
        assert!(head.starts_with("POST /api/v1/spans "), "{head}");
        assert!(head
            .to_ascii_lowercase()
            .contains("content-type: application/x-thrift"));
        assert_eq!(
            body,
            tbinary::encode_span_list(&[V1Span::from_v2(&span()).unwrap()])
        );

        let (base, h) = serve_once(400);
        let mut sink = ZipkinHttpSink::new(&base, HttpFormat::ThriftV1);
        let mut bad = span();
        bad.id = "zz".into();
        let e = sink.send(&[span(), bad]).unwrap_err();
        assert!(
            matches!(e, SinkError::Rejected { spans: 2, ref reason } if reason.contains("nope")),
            "{e}"
        );
        h.join().unwrap();

        // Nobody listening: transient.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut sink = ZipkinHttpSink::new(&format!("http://127.0.0.1:{port}"), HttpFormat::JsonV2);
        assert!(matches!(sink.send(&[span()]), Err(SinkError::Retry(_))));
    }

    /// What a test server got: request head and body.
    type Request = (String, Vec<u8>);

    /// A one-request https server (a certificate for 127.0.0.1 made by
    /// rcgen) answering 202; returns its base URL, the CA file trusting it,
    /// and what it got (`None` when the client gave up on the handshake).
    fn serve_https_once(dir: &Path) -> (String, PathBuf, std::thread::JoinHandle<Option<Request>>) {
        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, key.cert.pem()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![key.cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(key.key_pair.serialize_der().into()),
            )
            .unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("https://{}", l.local_addr().unwrap());
        let h = std::thread::spawn(move || {
            let (tcp, _) = l.accept().unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut r = BufReader::new(&mut tls);
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                // The handshake happens on the first read: a client refusing
                // the certificate ends here.
                if r.read_line(&mut line).is_err() {
                    return None;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" || line.is_empty() {
                    break;
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            write!(
                tls,
                "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            tls.flush().unwrap();
            tls.conn.send_close_notify();
            let _ = tls.flush();
            Some((head, body))
        });
        (base, ca, h)
    }

    #[test]
    fn posts_over_https_trusting_the_given_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        let (base, ca, h) = serve_https_once(dir.path());
        let mut sink =
            ZipkinHttpSink::with_tls(&base, HttpFormat::JsonV2, tls_trusting(&ca).unwrap());
        sink.send(&[span()]).unwrap();
        let (head, body) = h.join().unwrap().expect("a request over TLS");
        assert!(head.starts_with("POST /api/v2/spans "), "{head}");
        let back: Vec<Span> = serde_json::from_slice(&body).unwrap();
        assert_eq!(back, vec![span()]);

        // Mozilla's roots do not vouch for a self-signed certificate: the
        // sink refuses the server (transient: the certificate may be fixed).
        let (base, _, h) = serve_https_once(dir.path());
        let mut sink = ZipkinHttpSink::new(&base, HttpFormat::JsonV2);
        let e = sink.send(&[span()]).unwrap_err();
        assert!(
            matches!(e, SinkError::Retry(ref m) if m.contains("certificate")),
            "{e}"
        );
        assert!(h.join().unwrap().is_none());

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = tls_trusting(&empty).unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn unencodable_spans_are_rejected_the_rest_sent() {
        let (base, h) = serve_once(202);
        let mut sink = ZipkinHttpSink::new(&base, HttpFormat::ThriftV1);
        let mut bad = span();
        bad.trace_id = "not hex".into();
        let e = sink.send(&[span(), bad]).unwrap_err();
        assert!(matches!(e, SinkError::Rejected { spans: 1, .. }), "{e}");
        let (_, body) = h.join().unwrap();
        assert_eq!(
            body,
            tbinary::encode_span_list(&[V1Span::from_v2(&span()).unwrap()])
        );
    }
}
