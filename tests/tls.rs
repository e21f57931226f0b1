//! TLS between nodes (`raft.tls-enabled yes`): a cluster whose nodes reach
//! each other only at their Redis TLS ports, with certificates made here
//! for each test: a cluster CA, one certificate per node, and a rogue CA.

mod common;

use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::symm::Cipher;
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509NameBuilder, X509};

use common::*;

struct Cert {
    cert: X509,
    key: PKey<Private>,
}

/// A certificate for `cn`, signed by `issuer` (or by itself: a CA).
fn make_cert(cn: &str, issuer: Option<&Cert>) -> Cert {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let serial = BigNum::from_u32(rand_serial())
        .unwrap()
        .to_asn1_integer()
        .unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name()))
        .unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    if issuer.is_none() {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(KeyUsage::new().key_cert_sign().crl_sign().build().unwrap())
            .unwrap();
    }
    b.sign(issuer.map_or(&key, |i| &i.key), MessageDigest::sha256())
        .unwrap();
    Cert {
        cert: b.build(),
        key,
    }
}

fn rand_serial() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    t ^ N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Certificates written as PEM files into a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Cert,
    rogue: Cert,
}

impl Pki {
    fn new() -> Pki {
        let p = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: make_cert("cluster-ca", None),
            rogue: make_cert("rogue-ca", None),
        };
        std::fs::write(p.path("ca.crt"), p.ca.cert.to_pem().unwrap()).unwrap();
        std::fs::write(p.path("rogue-ca.crt"), p.rogue.cert.to_pem().unwrap()).unwrap();
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `<name>.crt` and `<name>.key` signed by `ca`; with `pass`
    /// the key is encrypted with it.
    fn issue(&self, name: &str, ca: &Cert, pass: Option<&str>) -> (String, String) {
        let c = make_cert(name, Some(ca));
        let (crt, key) = (
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&crt, c.cert.to_pem().unwrap()).unwrap();
        let pem = match pass {
            Some(p) => c
                .key
                .private_key_to_pem_pkcs8_passphrase(Cipher::aes_256_cbc(), p.as_bytes())
                .unwrap(),
            None => c.key.private_key_to_pem_pkcs8().unwrap(),
        };
        std::fs::write(&key, pem).unwrap();
        (s(&crt), s(&key))
    }

    /// Redis's TLS settings for a node with a certificate from `ca`,
    /// trusting `trusted`, and the module's tls-enabled.
    fn node_args(&self, name: &str, ca: &Cert, trusted: &str) -> Vec<String> {
        let (crt, key) = self.issue(name, ca, None);
        let mut a = tls_args(&crt, &key, &s(&self.path(trusted)));
        a.extend(["--raft.tls-enabled".into(), "yes".into()]);
        a
    }
}

/// Whether the server under test has TLS; a note when it has not.
fn tls_server() -> bool {
    let yes = server_has_tls();
    if !yes {
        println!("SKIPPED: {} was built without TLS", server_bin());
    }
    yes
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn tls_args(crt: &str, key: &str, ca: &str) -> Vec<String> {
    [
        "--tls-cert-file",
        crt,
        "--tls-key-file",
        key,
        "--tls-ca-cert-file",
        ca,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn start(args: &[String]) -> Node {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start_tls(&a)
}

fn voters(n: &Node) -> String {
    n.info_field("num_voting_nodes")
}

#[test]
fn tls_cluster_forms_replicates_proxies_and_fails_over() {
    if !tls_server() {
        return;
    }
    let pki = Pki::new();
    // Node 1 trusts a hashed CA directory (tls-ca-cert-dir); node 2
    // presents a separate client certificate (tls-client-*); node 3's key
    // is encrypted (tls-key-file-pass).
    let (crt1, key1) = pki.issue("node1", &pki.ca, None);
    let ca_dir = pki.path("ca-dir");
    std::fs::create_dir(&ca_dir).unwrap();
    let hash = pki.ca.cert.subject_name_hash();
    std::fs::write(
        ca_dir.join(format!("{hash:08x}.0")),
        pki.ca.cert.to_pem().unwrap(),
    )
    .unwrap();
    let n1 = start(&[
        "--tls-cert-file".into(),
        crt1,
        "--tls-key-file".into(),
        key1,
        "--tls-ca-cert-dir".into(),
        s(&ca_dir),
        "--raft.tls-enabled".into(),
        "yes".into(),
    ]);
    let mut a2 = pki.node_args("node2", &pki.ca, "ca.crt");
    let (ccrt, ckey) = pki.issue("node2-client", &pki.ca, None);
    a2.extend([
        "--tls-client-cert-file".into(),
        ccrt,
        "--tls-client-key-file".into(),
        ckey,
    ]);
    let (crt3, key3) = pki.issue("node3", &pki.ca, Some("s3cret"));
    let mut a3 = tls_args(&crt3, &key3, &s(&pki.path("ca.crt")));
    a3.extend(
        ["--tls-key-file-pass", "s3cret", "--raft.tls-enabled", "yes"]
            .iter()
            .map(|a| a.to_string()),
    );

    // Node 1 first, with data and a compacted log: the others catch up
    // through a snapshot, which travels on a connection of its own.
    let r = n1.cmd(&["RAFT.CLUSTER", "INIT"]);
    assert!(
        matches!(&r, RespValue::Simple(s) if s.starts_with("OK ")),
        "INIT: {r:?}"
    );
    for i in 0..50 {
        assert!(ok(&n1.cmd(&["SET", &format!("k{i}"), "before"])));
    }
    assert!(ok(&n1.cmd(&["RAFT.DEBUG", "COMPACT"])));
    let (n2, n3) = (start(&a2), start(&a3));
    for n in [&n2, &n3] {
        let r = n.cmd(&["RAFT.CLUSTER", "JOIN", &n1.node_addr()]);
        assert!(ok(&r), "JOIN over TLS: {r:?}; log:\n{}", n.log());
    }
    let mut c = Cluster {
        nodes: vec![n1, n2, n3],
    };
    let l = c.wait_leader();
    assert_eq!(voters(&c.nodes[l]), "3");
    for n in &c.nodes[1..] {
        assert!(
            n.info_field("snapshots_received").parse::<u64>().unwrap() >= 1,
            "{}",
            n.info()
        );
    }

    // Writes on the leader reach every node.
    for i in 0..50 {
        assert!(ok(&c.nodes[l].cmd(&["SET", &format!("k{i}"), "after"])));
    }
    c.assert_same_dataset();
    for n in &c.nodes {
        let v = bulk(&n.cmd(&["RAFT.DEBUG", "EXEC", "GET", "k49"]));
        assert_eq!(v.as_deref(), Some("after"), "on {}", n.addr());
    }

    // A follower forwards a write to the leader over TLS.
    let f = (l + 1) % 3;
    assert!(ok(&c.nodes[f].cmd(&[
        "CONFIG",
        "SET",
        "raft.follower-proxy",
        "yes"
    ])));
    let r = c.nodes[f].cmd(&["SET", "proxied", "1"]);
    assert!(ok(&r), "proxied SET: {r:?}");

    // The leader dies: the others elect one and go on.
    c.nodes[l].kill9();
    let l2 = c.wait_leader();
    assert_ne!(l2, l);
    let r = c.nodes[l2].cmd(&["SET", "after-failover", "yes"]);
    assert!(ok(&r), "write after failover: {r:?}");
    // The old leader comes back over TLS and catches up.
    c.nodes[l].launch();
    c.wait_leader();
    c.assert_same_dataset();
    let v = bulk(&c.nodes[l].cmd(&["RAFT.DEBUG", "EXEC", "GET", "after-failover"]));
    assert_eq!(v.as_deref(), Some("yes"));
}

#[test]
fn a_node_with_a_certificate_from_another_ca_is_kept_out() {
    if !tls_server() {
        return;
    }
    let pki = Pki::new();
    let n1 = start(&pki.node_args("node1", &pki.ca, "ca.crt"));
    let r = n1.cmd(&["RAFT.CLUSTER", "INIT"]);
    assert!(
        matches!(&r, RespValue::Simple(s) if s.starts_with("OK ")),
        "{r:?}"
    );

    let join = |n: &Node| -> String {
        let r = n.cmd(&["RAFT.CLUSTER", "JOIN", &n1.node_addr()]);
        err_text(&r)
            .unwrap_or_else(|| panic!("JOIN of a rogue node succeeded: {r:?}"))
            .to_string()
    };
    let quick = ["--raft.join-timeout".to_string(), "2000".into()];

    // Signed by a rogue CA, trusting the cluster's: the cluster's Redis
    // refuses its certificate.
    let mut a = pki.node_args("rogue1", &pki.rogue, "ca.crt");
    a.extend(quick.clone());
    let rogue1 = start(&a);
    let e = join(&rogue1);
    assert!(e.contains("refused this node's certificate"), "{e}");
    assert!(
        rogue1.log().contains("refused this node's certificate"),
        "{}",
        rogue1.log()
    );
    wait_for(10, "the cluster's log to say why", || {
        n1.log()
            .contains("Error accepting a client connection: error:0A000086:SSL routines::certificate verify failed")
            .then_some(())
    });

    // Trusting only its own CA: it refuses the cluster's certificate.
    let mut a = pki.node_args("rogue2", &pki.rogue, "rogue-ca.crt");
    a.extend(quick);
    let rogue2 = start(&a);
    let refusals = || {
        n1.log()
            .matches("Error accepting a client connection")
            .count()
    };
    let before = refusals();
    let e = join(&rogue2);
    assert!(e.contains("certificate is not trusted"), "{e}");
    assert!(
        rogue2.log().contains("certificate is not trusted"),
        "{}",
        rogue2.log()
    );
    // Usually "tlsv1 alert unknown ca"; the closing client's reset may
    // overtake its alert, and Redis then logs the reset.
    wait_for(
        10,
        "the cluster's log to show the failed handshakes",
        || (refusals() > before).then_some(()),
    );

    // Neither got in.
    assert_eq!(voters(&n1), "1");
    assert_eq!(n1.info_field("num_nodes"), "1");
    for r in [&rogue1, &rogue2] {
        assert_eq!(r.info_field("state"), "uninitialized");
    }

    // Given a certificate from the cluster's CA at run time (as Redis takes
    // its own), the first one joins: the refusal was the certificate's.
    let (crt, key) = pki.issue("rogue1-fixed", &pki.ca, None);
    let r = rogue1.cmd(&["CONFIG", "SET", "tls-cert-file", &crt, "tls-key-file", &key]);
    assert!(ok(&r), "{r:?}");
    assert!(ok(&rogue1.cmd(&[
        "CONFIG",
        "SET",
        "raft.join-timeout",
        "30000"
    ])));
    let r = rogue1.cmd(&["RAFT.CLUSTER", "JOIN", &n1.node_addr()]);
    assert!(
        ok(&r),
        "JOIN with a good certificate: {r:?}; log:\n{}",
        rogue1.log()
    );
    assert_eq!(voters(&n1), "2");
}

/// What the transport does when a peer's socket is full: a write that
/// takes only part (TLS: OpenSSL keeps a record it could not send), then
/// the rest with waiting; every reply must come back whole and in order.
#[test]
fn tls_writes_cut_short_by_a_full_socket_resume_intact() {
    if !tls_server() {
        return;
    }
    let pki = Pki::new();
    let (crt, key) = pki.issue("node1", &pki.ca, None);
    let ca = s(&pki.path("ca.crt"));
    let n = start(&tls_args(&crt, &key, &ca));
    let tls = redisraft::tls::TlsSettings {
        ca_cert_file: ca,
        cert_file: crt,
        key_file: key,
        ..Default::default()
    }
    .context()
    .unwrap();
    let t = std::time::Duration::from_secs(30);
    let mut c = Connection::connect_with(&n.node_addr(), t, t, None, Some(&tls)).unwrap();
    let payloads: Vec<Vec<u8>> = (0..400u32)
        .map(|i| vec![b'a' + (i % 26) as u8; 64 * 1024])
        .collect();
    let mut out = Vec::new();
    for p in &payloads {
        redisraft::resp::encode_command(&[b"ECHO", p], &mut out);
    }
    // A stopped server reads nothing: the socket fills up.
    n.signal("-STOP");
    let sent = c.try_write(&out).unwrap();
    n.signal("-CONT");
    assert!(sent < out.len(), "25 MiB went into the socket at once");
    c.write_all(&out[sent..]).unwrap();
    for (i, p) in payloads.iter().enumerate() {
        let r = c.recv().unwrap();
        assert!(r == RespValue::Bulk(Some(p.clone())), "reply {i} differs");
    }
    assert!(matches!(c.try_recv(true), Ok(None)));
}

#[test]
fn tls_enabled_without_a_tls_port_refuses_to_load() {
    if !tls_server() {
        return;
    }
    let pki = Pki::new();
    let mut args = pki.node_args("node1", &pki.ca, "ca.crt");
    args.extend(["--port".into(), free_port().to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("redis.log");
    let mut child = ChildGuard(
        std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", ""])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .arg("--loadmodule")
            .arg(module_path())
            .args(&args)
            .spawn()
            .unwrap(),
    );
    let status = wait_for(20, "redis-server to refuse the module", || {
        child.0.try_wait().unwrap()
    });
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("refusing to load: tls-enabled yes needs Redis's tls-port"),
        "{text}"
    );
}
