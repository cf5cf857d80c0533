//! Who may connect: TLS, mutual TLS with producer/reader identities, shared
//! tokens, and a relay that refuses to listen off loopback unprotected.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use blkkin::relay_client::{ReaderError, RelayReader};
use blkkin::tls::certs::{generate, CertRequest};
use blkkin::tls::{
    server_config, ClientAuth, ClientAuthOptions, ClientCerts, ClientStream, TokenTable,
};
use blkkin::wire::{self, ErrorCode, Frame, FrameBuffer, Role, Start};
use blkkin_relayd::{Config, Server};
use common::{cal, key, records, Relay};

/// A CA with a relay certificate for 127.0.0.1, producers node1 and node2,
/// and reader col; plus a second CA (`other/`) with its own reader col.
fn pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    generate(&CertRequest {
        out: dir.path().into(),
        new_ca: true,
        server: vec!["127.0.0.1".into(), "localhost".into()],
        producers: vec!["node1".into(), "node2".into()],
        readers: vec!["col".into()],
    })
    .unwrap();
    generate(&CertRequest {
        out: dir.path().join("other"),
        new_ca: true,
        readers: vec!["col".into()],
        ..Default::default()
    })
    .unwrap();
    dir
}

fn mtls(pki: &Path, mode: ClientCerts) -> impl FnOnce(&mut Config) + '_ {
    move |cfg: &mut Config| {
        cfg.security.tls = Some(
            server_config(
                &pki.join("server.pem"),
                &pki.join("server.key"),
                Some((&pki.join("ca.pem"), mode)),
            )
            .unwrap(),
        );
        cfg.security.client_certs = true;
    }
}

/// Client settings: TLS trusting `ca`, with `who`'s certificate if given.
fn client(pki: &Path, ca: &str, who: Option<&str>) -> ClientAuth {
    ClientAuth::from_options(&ClientAuthOptions {
        tls_ca: Some(pki.join(ca)),
        tls_cert: who.map(|w| pki.join(format!("{w}.pem"))),
        tls_key: who.map(|w| pki.join(format!("{w}.key"))),
        ..Default::default()
    })
    .unwrap()
}

/// A blocking client speaking frames over a [`ClientStream`].
struct Peer {
    s: ClientStream,
    fb: FrameBuffer,
}

impl Peer {
    fn connect(addr: &str, auth: &ClientAuth) -> Result<Peer, String> {
        let s =
            ClientStream::connect(addr, auth, Duration::from_secs(4)).map_err(|e| e.to_string())?;
        s.socket()
            .set_read_timeout(Some(Duration::from_secs(4)))
            .unwrap();
        Ok(Peer {
            s,
            fb: FrameBuffer::new(wire::DEFAULT_MAX_FRAME),
        })
    }

    fn send(&mut self, f: &Frame) -> std::io::Result<()> {
        let mut b = Vec::new();
        f.encode(&mut b);
        self.s.write_all(&b)
    }

    /// The next frame, or why there is none (closed, reset, TLS alert).
    fn recv(&mut self) -> Result<Frame, String> {
        let mut buf = [0u8; 16 << 10];
        loop {
            if let Some(f) = self.fb.next_frame().map_err(|e| e.to_string())? {
                return Ok(f);
            }
            match self.s.read(&mut buf) {
                Ok(0) => return Err("closed".into()),
                Ok(n) => self.fb.extend(&buf[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Says Hello; the relay's answer (Welcome, Error, or why none came).
    fn hello(&mut self, role: Role, name: &str, token: Option<&str>) -> Result<Frame, String> {
        self.send(&Frame::Hello {
            version: wire::VERSION,
            role,
            name: name.into(),
            token: token.map(str::to_string),
        })
        .map_err(|e| e.to_string())?;
        self.recv()
    }
}

fn is_welcome(r: &Result<Frame, String>) -> bool {
    matches!(r, Ok(Frame::Welcome { .. }))
}

fn denied(r: &Result<Frame, String>) -> String {
    match r {
        Ok(Frame::Error {
            code: ErrorCode::Denied,
            message,
        }) => message.clone(),
        other => panic!("expected Error{{Denied}}, got {other:?}"),
    }
}

/// A relay requiring client certificates of [`pki`]'s CA (its data
/// directory, the PKI, the relay).
async fn mtls_relay() -> (tempfile::TempDir, tempfile::TempDir, Relay) {
    let data = tempfile::tempdir().unwrap();
    let pki = pki();
    let relay = Relay::start_with(data.path(), mtls(pki.path(), ClientCerts::Required)).await;
    (data, pki, relay)
}

/// Runs blocking client code off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_producers_send_their_own_node_and_readers_read() {
    let (_data, pki, relay) = mtls_relay().await;
    let (p, addr) = (pki.path().to_path_buf(), relay.addr.to_string());
    blocking(move || {
        // The producer of node1 sends node1's stream; acknowledged.
        let mut prod = Peer::connect(&addr, &client(&p, "ca.pem", Some("producer-node1"))).unwrap();
        assert!(prod.s.is_tls());
        assert!(is_welcome(&prod.hello(Role::Consumer, "node1", None)));
        prod.send(&Frame::OpenStream {
            handle: 1,
            key: key("node1", 0),
            calibration: cal(),
        })
        .unwrap();
        assert_eq!(prod.recv(), Ok(Frame::Ack { handle: 1, next: 0 }));
        prod.send(&Frame::Records {
            handle: 1,
            first: 0,
            records: records(0, 5),
        })
        .unwrap();
        assert_eq!(prod.recv(), Ok(Frame::Ack { handle: 1, next: 5 }));

        // The reader reads them, over TLS, with its certificate.
        let mut r =
            RelayReader::connect_with(&addr, "col", &client(&p, "ca.pem", Some("reader-col")))
                .unwrap();
        r.subscribe(None, Start::Oldest).unwrap();
        let mut got = Vec::new();
        while got.len() < 5 {
            r.next_records(|s, rec| got.push((s.key.node.clone(), rec.position)))
                .unwrap();
        }
        assert_eq!(
            got,
            (0..5).map(|i| ("node1".to_string(), i)).collect::<Vec<_>>()
        );

        // The hijack: node1's producer opening node2's stream is refused, and
        // the connection closed.
        prod.send(&Frame::OpenStream {
            handle: 2,
            key: key("node2", 0),
            calibration: cal(),
        })
        .unwrap();
        let m = denied(&prod.recv());
        assert!(m.contains("only send streams of node `node1`"), "{m}");
        assert!(prod.recv().is_err(), "closed after the refusal");
    })
    .await;
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_a_valid_identity_are_refused() {
    let (_data, pki, relay) = mtls_relay().await;
    let (p, addr) = (pki.path().to_path_buf(), relay.addr.to_string());
    blocking(move || {
        // Plain TCP to a TLS relay: no Welcome.
        let mut plain = Peer::connect(&addr, &ClientAuth::default()).unwrap();
        let r = plain.hello(Role::Reader, "x", None);
        assert!(!is_welcome(&r), "{r:?}");

        // TLS without a client certificate, or with one of another CA.
        let other_ca = ClientAuth {
            // Trusts the relay, but presents a certificate of another CA.
            tls: client_config_mixed(&p),
            ..ClientAuth::default()
        };
        for auth in [client(&p, "ca.pem", None), other_ca] {
            let r = match RelayReader::connect_with(&addr, "col", &auth) {
                Ok(_) => panic!("a reader without a valid certificate was let in"),
                Err(e) => e.to_string(),
            };
            // The TLS layer refuses it (an alert, or the connection closed).
            assert!(
                r.contains("alert") || r.contains("ertificate") || r.contains("closed"),
                "{r}"
            );
        }

        // A reader's certificate cannot send; a producer's cannot read or
        // claim another node.
        let mut reader_as_consumer =
            Peer::connect(&addr, &client(&p, "ca.pem", Some("reader-col"))).unwrap();
        let m = denied(&reader_as_consumer.hello(Role::Consumer, "node1", None));
        assert!(m.contains("may not connect as a consumer"), "{m}");
        match RelayReader::connect_with(&addr, "x", &client(&p, "ca.pem", Some("producer-node1"))) {
            Err(ReaderError::Denied(m)) => {
                assert!(m.contains("may not connect as a reader"), "{m}")
            }
            Err(e) => panic!("expected Denied, got {e}"),
            Ok(_) => panic!("a producer's certificate was let in as a reader"),
        }
        let mut other_node =
            Peer::connect(&addr, &client(&p, "ca.pem", Some("producer-node1"))).unwrap();
        let m = denied(&other_node.hello(Role::Consumer, "node2", None));
        assert!(m.contains("may not connect as node `node2`"), "{m}");

        // None of them created anything.
        let mut r =
            RelayReader::connect_with(&addr, "col", &client(&p, "ca.pem", Some("reader-col")))
                .unwrap();
        assert!(r.list().unwrap().is_empty());
    })
    .await;
    relay.stop().await;
}

/// A client configuration trusting the relay's CA and presenting the other
/// CA's reader certificate.
fn client_config_mixed(p: &Path) -> Option<std::sync::Arc<blkkin::tls::ClientConfig>> {
    Some(
        blkkin::tls::client_config(
            &p.join("ca.pem"),
            Some((
                &p.join("other/reader-col.pem"),
                &p.join("other/reader-col.key"),
            )),
        )
        .unwrap(),
    )
}

fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_tokens_name_who_connects() {
    let data = tempfile::tempdir().unwrap();
    let table = data.path().join("tokens");
    write_private(
        &table,
        "producer node1 p1-0123456789abcdef\nreader col r1-0123456789abcdef\n",
    );
    let tokens = TokenTable::load(&table).unwrap();
    let relay = Relay::start_with(&data.path().join("relay"), move |cfg| {
        cfg.security.tokens = Some(tokens);
    })
    .await;
    let addr = relay.addr.to_string();
    blocking(move || {
        let plain = ClientAuth::default();
        let mut none = Peer::connect(&addr, &plain).unwrap();
        let m = denied(&none.hello(Role::Reader, "x", None));
        assert!(m.contains("authentication required"), "{m}");
        let mut wrong = Peer::connect(&addr, &plain).unwrap();
        let m = denied(&wrong.hello(Role::Reader, "x", Some("r1-0123456789abcdeX")));
        assert!(m.contains("unknown token"), "{m}");

        let with = |t: &str| ClientAuth {
            token: Some(t.into()),
            ..ClientAuth::default()
        };
        let mut r = RelayReader::connect_with(&addr, "col", &with("r1-0123456789abcdef")).unwrap();
        assert!(r.list().unwrap().is_empty());
        match RelayReader::connect_with(&addr, "col", &with("p1-0123456789abcdef")) {
            Err(ReaderError::Denied(_)) => {}
            other => panic!("a producer token read: {:?}", other.map(|_| ())),
        }

        let mut prod = Peer::connect(&addr, &plain).unwrap();
        assert!(is_welcome(&prod.hello(
            Role::Consumer,
            "node1",
            Some("p1-0123456789abcdef")
        )));
        prod.send(&Frame::OpenStream {
            handle: 7,
            key: key("node2", 1),
            calibration: cal(),
        })
        .unwrap();
        denied(&prod.recv());
        assert!(
            r.list().unwrap().is_empty(),
            "node2's stream was not created"
        );
    })
    .await;
    relay.stop().await;
}

#[tokio::test]
async fn a_relay_off_loopback_without_protection_does_not_start() {
    let data = tempfile::tempdir().unwrap();
    let cfg = Config::new("0.0.0.0:0".parse().unwrap(), data.path());
    let e = match Server::bind(cfg).await {
        Ok(_) => panic!("an open relay started on 0.0.0.0"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("not a loopback address"), "{e}");
    let mut cfg = Config::new("0.0.0.0:0".parse().unwrap(), data.path());
    cfg.security.insecure = true;
    Server::bind(cfg).await.expect("--insecure starts it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_finishes_the_tls_handshake_is_dropped() {
    let data = tempfile::tempdir().unwrap();
    let pki = pki();
    let p: PathBuf = pki.path().into();
    let relay = Relay::start_with(data.path(), |cfg| {
        mtls(&p, ClientCerts::Required)(cfg);
        cfg.frame_timeout = Duration::from_millis(300);
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let t0 = std::time::Instant::now();
    let n = tokio::time::timeout(
        common::STEP,
        tokio::io::AsyncReadExt::read(&mut s, &mut buf),
    )
    .await
    .expect("closed within the handshake timeout");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(t0.elapsed() >= Duration::from_millis(250));
    relay.stop().await;
}
