use super::*;

#[test]
fn identities_are_parsed_from_san_uris() {
    assert_eq!(
        Identity::from_uri("blkkin:producer:node1"),
        Some(Identity::Producer("node1".into()))
    );
    assert_eq!(
        Identity::from_uri("blkkin:reader:c:1"),
        Some(Identity::Reader("c:1".into()))
    );
    for bad in [
        "blkkin:producer:",
        "blkkin:admin:x",
        "spiffe://x",
        "blkkin:reader",
    ] {
        assert_eq!(Identity::from_uri(bad), None, "{bad}");
    }
}

#[test]
fn a_token_table_maps_tokens_to_identities() {
    let t = TokenTable::parse(
        "# comment\nproducer node1 aaaaaaaaaaaaaaaaaaaa\n\nreader col1 bbbbbbbbbbbbbbbbbbbb # x\n",
    )
    .unwrap();
    assert_eq!(
        t.identify("aaaaaaaaaaaaaaaaaaaa"),
        Some(Identity::Producer("node1".into()))
    );
    assert_eq!(
        t.identify("bbbbbbbbbbbbbbbbbbbb"),
        Some(Identity::Reader("col1".into()))
    );
    assert_eq!(t.identify("bbbbbbbbbbbbbbbbbbbc"), None);
    assert_eq!(t.identify(""), None);
    assert!(!format!("{t:?}").contains("aaaa"), "Debug hides tokens");
}

#[test]
fn bad_token_files_are_named() {
    for (text, want) in [
        ("producer node1\n", "line 1: expected"),
        ("admin x aaaaaaaaaaaaaaaaaaaa\n", "unknown role `admin`"),
        ("reader x short\n", "shorter than 16"),
        (
            "reader x aaaaaaaaaaaaaaaaaaaa\nreader y aaaaaaaaaaaaaaaaaaaa\n",
            "line 2: token used twice",
        ),
        ("# nothing\n", "no token"),
    ] {
        let e = TokenTable::parse(text).unwrap_err();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn a_world_readable_token_file_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tokens");
    std::fs::write(&p, "reader x aaaaaaaaaaaaaaaaaaaa\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = TokenTable::load(&p).unwrap_err().to_string();
    assert!(e.contains("chmod 600"), "{e}");
    let e = read_client_token(&p).unwrap_err().to_string();
    assert!(e.contains("chmod 600"), "{e}");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    TokenTable::load(&p).unwrap();
}

#[test]
fn secrets_compare_equal_only_when_identical() {
    assert!(secrets_equal(b"abc", b"abc"));
    assert!(!secrets_equal(b"abc", b"abd"));
    assert!(!secrets_equal(b"abc", b"abcd"));
}

#[test]
fn missing_or_empty_pem_files_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    assert!(matches!(load_certs(&missing), Err(TlsError::Read { .. })));
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "hello\n").unwrap();
    assert!(matches!(load_certs(&empty), Err(TlsError::NoCert(_))));
    assert!(matches!(load_key(&empty), Err(TlsError::NoKey(_))));
}

#[test]
fn host_of_strips_the_port() {
    assert_eq!(host_of("relay1:7420"), "relay1");
    assert_eq!(host_of("[::1]:7420"), "::1");
    assert_eq!(host_of("relay1"), "relay1");
}

#[cfg(feature = "certs")]
#[test]
fn generated_certificates_load_and_carry_their_identity() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pki");
    certs::generate(&certs::CertRequest {
        out: out.clone(),
        new_ca: true,
        server: vec!["relay1".into(), "127.0.0.1".into()],
        producers: vec!["node1".into()],
        readers: vec![],
    })
    .unwrap();
    // A second run signs with the CA already there.
    certs::generate(&certs::CertRequest {
        out: out.clone(),
        readers: vec!["col1".into()],
        ..Default::default()
    })
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    for f in ["ca.key", "server.key", "reader-col1.pem"] {
        let mode = std::fs::metadata(out.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    server_config(
        &out.join("server.pem"),
        &out.join("server.key"),
        Some((&out.join("ca.pem"), ClientCerts::Required)),
    )
    .unwrap();
    client_config(
        &out.join("ca.pem"),
        Some((&out.join("reader-col1.pem"), &out.join("reader-col1.key"))),
    )
    .unwrap();
    let der = |f: &str| load_certs(&out.join(f)).unwrap().remove(0);
    assert_eq!(
        identity_of(&der("producer-node1.pem")).unwrap(),
        Identity::Producer("node1".into())
    );
    assert_eq!(
        identity_of(&der("reader-col1.pem")).unwrap(),
        Identity::Reader("col1".into())
    );
    assert!(identity_of(&der("server.pem")).is_err());
    // A key that is not the certificate's is refused.
    let e = server_config(&out.join("server.pem"), &out.join("ca.key"), None).unwrap_err();
    assert!(matches!(e, TlsError::Rustls { .. }), "{e}");
}
