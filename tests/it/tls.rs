//! TLS against a local HTTPS fake: a CA and server certificates generated in the test
//! (rcgen), served with tokio-rustls in front of the teams fake (a TLS-terminating TCP
//! proxy). Trusted with `ca_file`, refused without it, refused for a certificate of another
//! host name. No option turns verification off.

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::fakes::Fake;
use crate::fakes::teams::FakeTeams;
use crate::harness::*;

/// A test CA: its PEM, and an issuer to sign server certificates with.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A server certificate for `names` (DNS names or IP addresses), and its key.
    fn signed(&self, names: &[&str]) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "rostersync test server");
        let cert = params.signed_by(&key, &self.issuer).expect("server cert");
        (cert, key)
    }

    /// A server certificate for `names`: (cert, key) PEMs.
    pub fn server_pems(&self, names: &[&str]) -> (String, String) {
        let (cert, key) = self.signed(names);
        (cert.pem(), key.serialize_pem())
    }
}

pub fn ca() -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "rostersync test CA");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).expect("CA cert");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate for `names` (DNS names or IP addresses), signed by `ca`.
fn server_cert(ca: &Ca, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let (cert, key) = ca.signed(names);
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    (cert.der().clone(), der)
}

/// Serves TLS with this certificate on a free 127.0.0.1 port, forwarding the decrypted
/// bytes to `backend` (a plain-HTTP fake). Runs until the test process ends.
fn tls_proxy(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    backend: SocketAddr,
) -> u16 {
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A refused handshake (the client does not trust us) just ends here.
                    let Ok(mut tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
    });
    port
}

fn setup() -> (Arc<FakeTeams>, Env, Ca) {
    let fake = FakeTeams::start_with_ids_in_source();
    fake.set_rate_limit(None);
    let env = Env::new(fake.clone());
    (fake, env, ca())
}

/// The backend address of the fake (its `base_url` is `http://127.0.0.1:PORT/v1`).
fn backend(fake: &FakeTeams) -> SocketAddr {
    let url = fake.base_url();
    let hostport = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    hostport.parse().expect("fake address")
}

#[test]
fn https_trusted_with_ca_file_refused_without_it_and_for_another_host() {
    let (fake, mut env, ca) = setup();
    let (cert, key) = server_cert(&ca, &["localhost", "127.0.0.1"]);
    let port = tls_proxy(cert, key, backend(&fake));
    std::fs::write(env.path("ca.pem"), &ca.pem).unwrap();
    let groups = vec![
        g("Tier 1", &[&email(1), &email(2)]),
        g("Tier 2", &[&email(3)]),
    ];
    env.write_source(&groups);

    // Without ca_file: the system roots do not know our CA. Exit 1, the certificate error
    // named, nothing reached the fake.
    env.set_target_extra(&format!(
        "base_url = \"https://localhost:{port}/v1\"\nmax_retries = 1\nretry_base = \"10ms\""
    ));
    let r = env.sync().expect(1);
    assert!(
        r.stderr.to_lowercase().contains("certificate"),
        "names the certificate problem: {}",
        r.stderr
    );
    assert!(fake.requests().is_empty(), "nothing got through");
    assert!(
        cert_line(&r.stderr).contains("invalid peer certificate: UnknownIssuer"),
        "rostersync's own message names it: {}",
        r.stderr
    );
    eprintln!("[tls] without ca_file: {}", cert_line(&r.stderr));
    let c = env.run(&["check"]);
    assert_eq!(c.code, 0, "check does not connect: {}", c.stdout);

    // With ca_file: trusted, by name and by IP address. Each host is asked something
    // (`--full` reads every group back): after the first run converged, a plain run would
    // have nothing to send, and the second host would never be tried.
    for host in ["localhost", "127.0.0.1"] {
        env.set_target_extra(&format!(
            "base_url = \"https://{host}:{port}/v1\"\nca_file = \"ca.pem\"\nmax_retries = 1\nretry_base = \"10ms\""
        ));
        fake.clear_requests();
        env.run(&["sync", "--full"]).expect(0);
        env.assert_converged(&groups);
        assert!(
            fake.requests().len() >= groups.len(),
            "{host}: requests got through the TLS proxy: {:?}",
            fake.requests()
        );
    }

    // A certificate from the same CA, but for another host name: refused even with ca_file.
    let (cert, key) = server_cert(&ca, &["other.example"]);
    let wrong = tls_proxy(cert, key, backend(&fake));
    fake.clear_requests();
    env.set_target_extra(&format!(
        "base_url = \"https://localhost:{wrong}/v1\"\nca_file = \"ca.pem\"\nmax_retries = 1\nretry_base = \"10ms\""
    ));
    let r = env.run(&["sync", "--full"]).expect(1);
    assert!(
        cert_line(&r.stderr).contains("certificate not valid for name"),
        "names the host name mismatch: {}",
        r.stderr
    );
    eprintln!("[tls] wrong host name: {}", cert_line(&r.stderr));
    assert!(fake.requests().is_empty(), "nothing got through");
}

/// There is no key that turns verification off: the config refuses any such key.
#[test]
fn no_option_turns_verification_off() {
    let (_fake, mut env, _ca) = setup();
    env.write_source(&[g("Tier 1", &[&email(1)])]);
    for key in [
        "insecure = true",
        "tls_verify = false",
        "danger_accept_invalid_certs = true",
        "verify_tls = false",
    ] {
        env.set_target_extra(key);
        let r = env.run(&["check"]).expect(2);
        let name = key.split(' ').next().unwrap();
        assert!(r.stderr.contains(name), "{key}: {}", r.stderr);
    }
}

/// rostersync's own first log line about a failed operation that names the certificate
/// (not the TLS library's log).
fn cert_line(stderr: &str) -> &str {
    stderr
        .lines()
        .find(|l| l.contains("rostersync::") && l.contains("certificate"))
        .unwrap_or("")
}
