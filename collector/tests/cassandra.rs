//! The Cassandra store against real servers: spans shaped like the demo
//! workload written by `CassandraSink` into a real Cassandra 5.0 node
//! (scripts/cassandra.sh), then read back through the real Zipkin server's
//! API (`STORAGE_TYPE=cassandra3`), and writes across a Cassandra restart.
//!
//! Needs java and mvn; fails when Cassandra cannot start unless
//! BLKKIN_SKIP_CASSANDRA=1 is set (then it logs a skip).

mod cassandra_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use blkkin_collector::cassandra::{
    BlockingCassandraSink, CassandraConfig, CassandraError, CassandraTls,
};
use blkkin_collector::model::{Annotation, Endpoint, Span, SpanKind};
use cassandra_support::{free_port, skip_cassandra, Cassandra, Zipkin};
use serde_json::Value;

const KEYSPACE: &str = "zipkin2";
const TRACES: usize = 12;
/// The storage tiers of the demo workload, caller first.
const SERVICES: [&str; 4] = ["client", "volume", "mapper", "blocker"];
/// The RPC each tier makes to the next.
const RPCS: [&str; 3] = ["write", "map", "block"];

fn endpoint(service: &str, port: u16) -> Option<Endpoint> {
    Some(Endpoint {
        service_name: Some(service.into()),
        ipv4: Some("127.0.0.1".into()),
        port: Some(port),
        ..Endpoint::default()
    })
}

fn is_slow(trace: usize) -> bool {
    trace % 4 == 1
}

fn fails(trace: usize) -> bool {
    trace % 3 == 2
}

/// One request through the stack: for each tier a CLIENT span and the
/// callee's SERVER half sharing its id (Zipkin v1 style), an annotation on
/// every server span, tags, and an `error` tag on the blocker when it fails.
fn demo_trace(trace: usize, start_us: u64) -> Vec<Span> {
    let trace_id = format!("{:016x}", 0xb1c0_0000_0000_0000u64 + trace as u64);
    let total = if is_slow(trace) { 250_000 } else { 3_000 };
    let mut spans = Vec::new();
    let mut parent: Option<String> = None;
    for (tier, rpc) in RPCS.iter().enumerate() {
        let id = format!("{:016x}", (trace as u64) << 8 | (tier as u64 + 1));
        let ts = start_us + tier as u64 * 100;
        let duration = total - tier as u64 * 200;
        let client = Span {
            trace_id: trace_id.clone(),
            parent_id: parent.clone(),
            id: id.clone(),
            kind: Some(SpanKind::Client),
            name: Some((*rpc).into()),
            timestamp: Some(ts),
            duration: Some(duration),
            local_endpoint: endpoint(SERVICES[tier], 7000 + tier as u16),
            remote_endpoint: endpoint(SERVICES[tier + 1], 7001 + tier as u16),
            tags: [("object".to_string(), format!("rbd_data.{trace}"))].into(),
            ..Span::default()
        };
        let mut server = Span {
            kind: Some(SpanKind::Server),
            shared: Some(true),
            timestamp: Some(ts + 20),
            duration: Some(duration - 40),
            local_endpoint: endpoint(SERVICES[tier + 1], 7001 + tier as u16),
            remote_endpoint: endpoint(SERVICES[tier], 7000 + tier as u16),
            annotations: vec![Annotation {
                timestamp: ts + 30,
                value: "queued".into(),
            }],
            tags: [("bytes".to_string(), "4096".to_string())].into(),
            ..client.clone()
        };
        if tier == 2 && fails(trace) {
            server.tags.insert("error".into(), "EIO".into());
        }
        spans.push(client);
        spans.push(server);
        parent = Some(id);
    }
    spans
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

fn config(port: u16) -> CassandraConfig {
    CassandraConfig {
        contact_points: vec![format!("127.0.0.1:{port}")],
        keyspace: KEYSPACE.into(),
        request_timeout: Duration::from_secs(5),
        ..CassandraConfig::default()
    }
}

/// Nothing listens: connecting fails with a clear error, no panic.
#[test]
fn connect_fails_clearly_when_cassandra_is_down() {
    let port = free_port();
    let err = match BlockingCassandraSink::connect(config(port)) {
        Ok(_) => panic!("connected to a port nobody listens on"),
        Err(e) => e,
    };
    assert!(matches!(err, CassandraError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")),
        "message names the contact point: {msg}"
    );
}

/// One Cassandra and one Zipkin for every scenario (they take tens of
/// seconds to start on a small machine).
#[test]
fn zipkin_browses_what_the_cassandra_sink_wrote() {
    if skip_cassandra() {
        return;
    }
    let t0 = Instant::now();
    // TLS offered on the native port next to plain TCP (`optional`), so the
    // TLS sink and the plain clients (Zipkin, the other sinks) share a node.
    let certs = tempfile::tempdir().expect("temp dir");
    let tls = TestCerts::generate(certs.path());
    let cassandra = Cassandra::start_with_yaml(&tls.client_encryption_yaml());
    let sink = BlockingCassandraSink::connect(config(cassandra.port))
        .expect("connect and create the schema");

    // Using an existing keyspace that lacks Zipkin's tables is refused.
    let missing = BlockingCassandraSink::connect(CassandraConfig {
        keyspace: "no_such_keyspace".into(),
        ensure_schema: false,
        ..config(cassandra.port)
    });
    match missing {
        Err(CassandraError::MissingSchema { keyspace, table }) => {
            assert_eq!(
                (keyspace.as_str(), table.as_str()),
                ("no_such_keyspace", "span")
            );
        }
        Err(e) => panic!("wrong error for a missing schema: {e}"),
        Ok(_) => panic!("a keyspace without Zipkin's tables was accepted"),
    }

    // Two collectors share the keyspace; each writes half of the workload
    // and both store their dependency counts into the same rows at once.
    let other = BlockingCassandraSink::connect(config(cassandra.port))
        .expect("a second collector uses the existing schema");
    let start = now_us() - 60_000_000;
    let traces: Vec<Vec<Span>> = (0..TRACES)
        .map(|t| demo_trace(t, start + t as u64 * 1_000))
        .collect();
    let (mine, theirs) = traces.split_at(TRACES / 2);
    let mine: Vec<Span> = mine.iter().flatten().cloned().collect();
    let theirs: Vec<Span> = theirs.iter().flatten().cloned().collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            // Two batches that split a trace, and a re-sent batch (a retry),
            // which must not duplicate rows or links.
            let (first, second) = mine.split_at(mine.len() / 2 + 1);
            sink.write(first).expect("write the first batch");
            sink.write(second).expect("write the second batch");
            sink.write(second).expect("write the second batch again");
            sink.flush_links().expect("store the dependency links");
        });
        s.spawn(|| {
            other.write(&theirs).expect("the other collector writes");
            other
                .flush_links()
                .expect("the other collector stores links");
        });
    });
    eprintln!("collector 1: {:?}", sink.stats());
    eprintln!("collector 2: {:?}", other.stats());
    drop(other);

    let zipkin = Zipkin::start(cassandra.port, KEYSPACE, cassandra.dir.path());
    check_zipkin_reads(&zipkin, &traces);
    eprintln!(
        "memory: cassandra {:?} MiB, zipkin {:?} MiB RSS; {:.1}s so far",
        cassandra.rss_mib(),
        zipkin.rss_mib(),
        t0.elapsed().as_secs_f64()
    );

    check_tls(&cassandra, &tls, &zipkin);
    check_writes_across_a_restart(&cassandra, &sink, &zipkin, &traces[0]);
    eprintln!("total {:.1}s", t0.elapsed().as_secs_f64());
}

fn check_zipkin_reads(zipkin: &Zipkin, traces: &[Vec<Span>]) {
    // Every trace, whole, with each span exactly once.
    for spans in traces {
        let id = &spans[0].trace_id;
        let got = zipkin.json(&format!("/api/v2/trace/{id}"));
        let got = got.as_array().expect("a trace is a list of spans");
        assert_eq!(got.len(), spans.len(), "trace {id}: {got:?}");
        let names: BTreeSet<&str> = got.iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(names, RPCS.iter().copied().collect(), "trace {id}");
        let kinds = got.iter().filter(|s| s["kind"] == "SERVER").count();
        assert_eq!(kinds, RPCS.len(), "trace {id}: server halves");
    }
    let all: BTreeSet<String> = traces.iter().map(|t| t[0].trace_id.clone()).collect();
    let query = |q: &str| zipkin.trace_ids(q);

    assert_eq!(query("serviceName=mapper"), all, "by service");
    assert_eq!(
        query("serviceName=blocker&spanName=block"),
        all,
        "by span name"
    );
    assert!(query("serviceName=blocker&spanName=write").is_empty());
    let slow: BTreeSet<String> = traces
        .iter()
        .enumerate()
        .filter(|(i, _)| is_slow(*i))
        .map(|(_, t)| t[0].trace_id.clone())
        .collect();
    assert!(!slow.is_empty() && slow.len() < all.len());
    assert_eq!(
        query("serviceName=client&minDuration=100000"),
        slow,
        "by minDuration"
    );
    let failing: BTreeSet<String> = traces
        .iter()
        .enumerate()
        .filter(|(i, _)| fails(*i))
        .map(|(_, t)| t[0].trace_id.clone())
        .collect();
    assert_eq!(
        query("serviceName=blocker&annotationQuery=error"),
        failing,
        "by tag key"
    );
    assert_eq!(
        query("serviceName=volume&annotationQuery=object%3Drbd_data.3"),
        BTreeSet::from([traces[3][0].trace_id.clone()]),
        "by tag value"
    );
    assert_eq!(
        query("serviceName=mapper&annotationQuery=queued"),
        all,
        "by annotation"
    );

    let services = zipkin.names("/api/v2/services");
    assert_eq!(services, ["blocker", "client", "mapper", "volume"]);
    let spans = zipkin.names("/api/v2/spans?serviceName=volume");
    assert_eq!(spans, ["map", "write"]);
    let remote = zipkin.names("/api/v2/remoteServices?serviceName=volume");
    assert_eq!(remote, ["client", "mapper"]);

    let end = now_us() / 1000 + 60_000;
    let (deps, edges) = zipkin.dependency_edges(end);
    let n = traces.len() as u64;
    let errors = failing.len() as u64;
    let want: BTreeMap<(String, String), (u64, u64)> = [
        (("client", "volume"), (n, 0)),
        (("volume", "mapper"), (n, 0)),
        (("mapper", "blocker"), (n, errors)),
    ]
    .into_iter()
    .map(|((p, c), v)| ((p.to_string(), c.to_string()), v))
    .collect();
    assert_eq!(edges, want, "dependency links: {deps}");
}

/// Cassandra goes away: a write fails with a clear error (no panic, no
/// hang); once it is back the same write succeeds and everything written
/// before the restart is still there.
fn check_writes_across_a_restart(
    cassandra: &Cassandra,
    sink: &BlockingCassandraSink,
    zipkin: &Zipkin,
    earlier: &[Span],
) {
    cassandra.stop();
    let late = demo_trace(TRACES + 1, now_us() - 1_000_000);
    let err = sink
        .write(&late)
        .expect_err("a write while Cassandra is down must fail");
    eprintln!("write while down: {err}");
    assert!(matches!(err, CassandraError::Write { .. }), "{err:?}");
    assert!(err.to_string().contains("Cassandra writes failed"), "{err}");

    cassandra.restart();
    let t = Instant::now();
    loop {
        match sink.write(&late) {
            Ok(()) => break,
            Err(e) if t.elapsed() < Duration::from_secs(90) => {
                eprintln!("write after restart not yet: {e}");
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => panic!("writes still fail 90s after Cassandra came back: {e}"),
        }
    }
    eprintln!(
        "writes succeed {:.1}s after Cassandra came back",
        t.elapsed().as_secs_f64()
    );
    for spans in [&late[..], earlier] {
        let id = &spans[0].trace_id;
        let t = Instant::now();
        loop {
            // Zipkin's own driver reconnects too; give it time.
            match zipkin.get(&format!("/api/v2/trace/{id}")) {
                Ok((200, body)) => {
                    let v: Value = serde_json::from_str(&body).expect("json");
                    assert_eq!(v.as_array().map(Vec::len), Some(spans.len()), "{id}");
                    break;
                }
                other if t.elapsed() < Duration::from_secs(90) => {
                    eprintln!("zipkin not reading {id} yet: {other:?}");
                    std::thread::sleep(Duration::from_secs(2));
                }
                other => panic!("Zipkin does not return {id}: {other:?}"),
            }
        }
    }
}

/// A self-signed node certificate for 127.0.0.1 (its own CA) in a PKCS12
/// keystore for Cassandra, and an unrelated CA a client must not accept.
struct TestCerts {
    keystore: PathBuf,
    ca: PathBuf,
    wrong_ca: PathBuf,
}

const KEYSTORE_PASSWORD: &str = "blkkin-test";

impl TestCerts {
    fn generate(dir: &Path) -> TestCerts {
        use openssl::asn1::Asn1Time;
        use openssl::bn::BigNum;
        use openssl::hash::MessageDigest;
        use openssl::pkcs12::Pkcs12;
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        use openssl::x509::extension::SubjectAlternativeName;
        use openssl::x509::{X509NameBuilder, X509};

        let self_signed = |cn: &str| {
            let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa key")).expect("pkey");
            let mut name = X509NameBuilder::new().expect("name");
            name.append_entry_by_text("CN", cn).expect("cn");
            let name = name.build();
            let mut b = X509::builder().expect("x509");
            b.set_version(2).expect("v3");
            let serial = BigNum::from_u32(1).and_then(|n| n.to_asn1_integer());
            b.set_serial_number(&serial.expect("serial"))
                .expect("serial");
            b.set_subject_name(&name).expect("subject");
            b.set_issuer_name(&name).expect("issuer");
            b.set_pubkey(&key).expect("pubkey");
            b.set_not_before(&Asn1Time::days_from_now(0).expect("now"))
                .expect("not before");
            b.set_not_after(&Asn1Time::days_from_now(2).expect("later"))
                .expect("not after");
            let san = SubjectAlternativeName::new()
                .ip("127.0.0.1")
                .dns("localhost")
                .build(&b.x509v3_context(None, None))
                .expect("subjectAltName");
            b.append_extension(san).expect("san");
            b.sign(&key, MessageDigest::sha256()).expect("sign");
            (b.build(), key)
        };
        let (cert, key) = self_signed("blkkin-test-cassandra");
        let (wrong, _) = self_signed("someone-else");
        let p12 = Pkcs12::builder()
            .name("cassandra")
            .pkey(&key)
            .cert(&cert)
            .build2(KEYSTORE_PASSWORD)
            .expect("pkcs12 keystore");
        let certs = TestCerts {
            keystore: dir.join("node.p12"),
            ca: dir.join("ca.pem"),
            wrong_ca: dir.join("wrong-ca.pem"),
        };
        std::fs::write(&certs.keystore, p12.to_der().expect("der")).expect("write keystore");
        std::fs::write(&certs.ca, cert.to_pem().expect("pem")).expect("write ca");
        std::fs::write(&certs.wrong_ca, wrong.to_pem().expect("pem")).expect("write ca");
        certs
    }

    fn client_encryption_yaml(&self) -> String {
        format!(
            "client_encryption_options:\n  enabled: true\n  optional: true\n  keystore: {}\n  keystore_password: {KEYSTORE_PASSWORD}\n  store_type: PKCS12\n  require_client_auth: false\n",
            self.keystore.display()
        )
    }
}

/// `--cassandra-tls`: with the node's CA a TLS sink connects and writes a
/// trace Zipkin then returns; with another CA the handshake is refused (so
/// TLS is really spoken and the certificate really checked).
fn check_tls(cassandra: &Cassandra, certs: &TestCerts, zipkin: &Zipkin) {
    let tls_config = |ca: &Path| CassandraConfig {
        ensure_schema: false,
        tls: Some(CassandraTls {
            ca_file: Some(ca.to_path_buf()),
            client_cert: None,
        }),
        ..config(cassandra.port)
    };
    match BlockingCassandraSink::connect(tls_config(&certs.wrong_ca)) {
        Ok(_) => panic!("a node certificate from an untrusted CA was accepted"),
        Err(e) => {
            eprintln!("TLS with the wrong CA: {e}");
            assert!(matches!(e, CassandraError::Connect { .. }), "{e:?}");
        }
    }
    let sink = BlockingCassandraSink::connect(tls_config(&certs.ca))
        .expect("connect over TLS with the node's CA");
    let spans = demo_trace(TRACES + 2, now_us() - 2_000_000);
    sink.write(&spans).expect("write over TLS");
    let id = &spans[0].trace_id;
    let got = zipkin.json(&format!("/api/v2/trace/{id}"));
    assert_eq!(
        got.as_array().map(Vec::len),
        Some(spans.len()),
        "the trace written over TLS: {got}"
    );
    eprintln!("TLS: trace {id} written over TLS and read back through Zipkin");
}
