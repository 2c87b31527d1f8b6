//! The management API as served by the binary: security headers, CORS off by default and on
//! for configured origins only, the client address in the audit log, and the API over HTTPS
//! (with Strict-Transport-Security).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use support::{login, start, Pki};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A raw HTTP/1.1 exchange: (status, lower-cased headers, body).
fn raw(addr: &str, request: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    parse(&out)
}

fn parse(out: &str) -> (u16, Vec<(String, String)>, String) {
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn preflight(addr: &str, origin: &str) -> (u16, Vec<(String, String)>, String) {
    raw(
        addr,
        &format!(
            "OPTIONS /api/v1/devices HTTP/1.1\r\nHost: {addr}\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n"
        ),
    )
}

#[test]
fn security_headers_and_no_cors_by_default() {
    let s = start("", &[]);
    let http = s.addr("http");
    for path in ["/api/v1/devices", "/healthz", "/api/v1/docs/"] {
        let (_, h, _) = raw(
            http,
            &format!("GET {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(
            header(&h, "x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(header(&h, "x-frame-options"), Some("DENY"), "{path}");
        assert!(header(&h, "content-security-policy")
            .unwrap()
            .contains("default-src 'self'"));
        assert_eq!(header(&h, "strict-transport-security"), None, "plain HTTP");
    }
    let (_, h, _) = preflight(http, "http://evil.example");
    assert_eq!(header(&h, "access-control-allow-origin"), None);
    // The login from this test's connection is audited with its address.
    let token = login(&s);
    let (status, _, body) = raw(
        http,
        &format!(
            "GET /api/v1/audit?action=login HTTP/1.1\r\nHost: {http}\r\n\
             Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"][0]["source"], "127.0.0.1", "{v}");
}

#[test]
fn cors_only_for_configured_origins() {
    let s = start("[api]\ncors_origins = [\"http://ops.example\"]\n", &[]);
    let http = s.addr("http");
    let (status, h, _) = preflight(http, "http://ops.example");
    assert!(status < 300, "{status}");
    assert_eq!(
        header(&h, "access-control-allow-origin"),
        Some("http://ops.example")
    );
    let methods = header(&h, "access-control-allow-methods")
        .unwrap()
        .to_ascii_uppercase();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let (_, h, _) = preflight(http, "http://evil.example");
    assert_eq!(header(&h, "access-control-allow-origin"), None);
}

#[tokio::test]
async fn the_api_over_https() {
    let pki = Pki::new();
    let config = format!(
        "[listeners]\nhttps = \"127.0.0.1:0\"\n{}",
        pki.tls_section("")
    );
    let s = start(&config, &["--mqtts", "127.0.0.1:0"]);
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(s.addr("https"))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let password = s.admin_password.clone().unwrap();
    let body = format!("{{\"username\":\"admin\",\"password\":\"{password}\"}}");
    let req = format!(
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.unwrap();
    let (status, h, body) = parse(&String::from_utf8_lossy(&out));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("refresh_token"), "{body}");
    assert!(header(&h, "strict-transport-security")
        .unwrap()
        .contains("max-age="));
}
