//! TLS trust as a hospital's operators expect it: a server behind a TLS terminator whose
//! certificate a private CA signed is refused with a message that says it is a TLS refusal and
//! why, and trusted when the CA is named (`ca_file` of the node, `--ca-file` of `algonet test`:
//! `Api::trusting`) or is in the system's store (`SSL_CERT_FILE` here); a closed port says so.
//! Everything listens on 127.0.0.1.

use std::sync::Arc;

use algonet::api::client::{Api, ClientError};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

/// A private CA's certificate (PEM) and a TLS server on 127.0.0.1 with a certificate it signed,
/// answering every request with `{"version": "tls"}`; the server's API root.
async fn terminator() -> (String, String) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.clone().self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(Vec::<String>::new()).expect("params");
    leaf.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    let cert = leaf
        .signed_by(&key, &Issuer::new(ca, &ca_key))
        .expect("server certificate");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let body = r#"{"version": "tls"}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (ca_cert.pem(), format!("https://127.0.0.1:{port}/api"))
}

async fn version(api: &Api) -> Result<serde_json::Value, ClientError> {
    api.send(Method::GET, "/version", None, algonet::api::client::NO_BODY)
        .await
}

#[tokio::test]
async fn a_private_ca_is_trusted_when_named_and_refused_saying_why_when_not() {
    let (ca_pem, base) = terminator().await;
    let dir = std::env::temp_dir().join(format!("algonet-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = dir.join("hospital-ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("CA file");

    let refused = version(&Api::new(&base).expect("api"))
        .await
        .expect_err("an unknown CA");
    let said = refused.to_string();
    assert!(
        said.contains("TLS") && said.contains("UnknownIssuer"),
        "{said}"
    );

    let trusting = Api::trusting(&base, Some(&ca_file)).expect("api");
    assert_eq!(
        version(&trusting).await.expect("the named CA")["version"],
        "tls"
    );

    // The system's store: SSL_CERT_FILE names it here (set for this test binary alone).
    set_env("SSL_CERT_FILE", &ca_file);
    assert_eq!(
        version(&Api::new(&base).expect("api"))
            .await
            .expect("the system's store")["version"],
        "tls"
    );

    // A file that holds no certificate is refused where it is named.
    std::fs::write(dir.join("empty.pem"), "nothing").expect("write");
    assert!(Api::trusting(&base, Some(&dir.join("empty.pem"))).is_err());

    // A closed port says so.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let e = version(&Api::new(&format!("http://127.0.0.1:{port}/api")).expect("api"))
        .await
        .expect_err("closed");
    assert!(e.to_string().contains("connection refused"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sets an environment variable of this test binary, which runs this file's one test.
fn set_env(key: &str, value: &std::path::Path) {
    // SAFETY: this binary runs a single test; no other thread reads or writes the environment
    // while it is set.
    unsafe { std::env::set_var(key, value) };
}
