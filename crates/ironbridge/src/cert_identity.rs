//! Client-certificate identity for the hooks. The TLS listeners identify a verified client
//! certificate by its SHA-256 fingerprint (what the broker passes to the hooks as
//! `cert_fingerprint`) and its subject Common Name; [`CertNames`] remembers the CN of each
//! certificate in use, and [`CertIdentityHooks`] wraps the broker's hooks to fill in
//! `ConnectRequest::cert_common_name` and to implement `[tls] use_identity_as_username`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use broker::hooks::{BoxFuture, ConnectRequest, Hooks, Identity, Intercept};
use broker::Message;
use mqtt_codec::ReasonCode;
use rustls_pki_types::CertificateDer;

/// A verified client certificate, as the hooks know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub fingerprint: String,
    /// The subject's Common Name, if it has a printable one.
    pub common_name: Option<String>,
}

impl ClientCert {
    /// Identifies a certificate (already verified by the TLS layer).
    pub fn from_der(der: &CertificateDer<'_>) -> ClientCert {
        let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        let fingerprint = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let common_name = webpki::EndEntityCert::try_from(der)
            .ok()
            .and_then(|cert| subject_common_name(cert.subject()));
        ClientCert {
            fingerprint,
            common_name,
        }
    }
}

/// The Common Names of the client certificates of connected clients, by fingerprint. The
/// fingerprint is a hash of the whole certificate, subject included, so an entry can only
/// ever hold that certificate's own CN.
#[derive(Clone, Default)]
pub struct CertNames {
    names: Arc<Mutex<NameTable>>,
}

/// Fingerprint → (CN, number of connections using the certificate).
type NameTable = HashMap<String, (Arc<str>, usize)>;

/// Keeps a certificate's entry in [`CertNames`] while its connection lives.
pub struct CertNameGuard {
    names: CertNames,
    fingerprint: String,
}

impl CertNames {
    /// Records `cert`'s CN until the guard is dropped (`None` if it has no CN).
    pub fn register(&self, cert: &ClientCert) -> Option<CertNameGuard> {
        let cn = cert.common_name.as_deref()?;
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names
            .entry(cert.fingerprint.clone())
            .or_insert_with(|| (Arc::from(cn), 0))
            .1 += 1;
        Some(CertNameGuard {
            names: self.clone(),
            fingerprint: cert.fingerprint.clone(),
        })
    }

    /// The CN of the connected certificate with this fingerprint.
    pub fn common_name(&self, fingerprint: &str) -> Option<Arc<str>> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.get(fingerprint).map(|(cn, _)| cn.clone())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.names.lock().unwrap().len()
    }
}

impl Drop for CertNameGuard {
    fn drop(&mut self) {
        let mut names = self.names.names.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = names.get_mut(&self.fingerprint) {
            entry.1 -= 1;
            if entry.1 == 0 {
                names.remove(&self.fingerprint);
            }
        }
    }
}

/// Wraps the broker's hooks for TLS clients: adds the certificate's CN to the connect request
/// and, with `use_identity_as_username`, lets a verified certificate alone authenticate the
/// client as its CN (or fingerprint). Clients without a certificate go through `inner` as
/// before; authorisation always does, so ACL rules apply to certificate users by name.
pub struct CertIdentityHooks {
    inner: Arc<dyn Hooks>,
    names: CertNames,
    use_identity_as_username: bool,
}

impl CertIdentityHooks {
    /// Wraps `inner`, looking certificates' names up in `names`.
    pub fn new(
        inner: Arc<dyn Hooks>,
        names: CertNames,
        use_identity_as_username: bool,
    ) -> CertIdentityHooks {
        CertIdentityHooks {
            inner,
            names,
            use_identity_as_username,
        }
    }
}

impl Hooks for CertIdentityHooks {
    fn authenticate<'a>(
        &'a self,
        req: ConnectRequest<'a>,
    ) -> BoxFuture<'a, Result<Identity, ReasonCode>> {
        Box::pin(async move {
            let cn = req.cert_fingerprint.and_then(|f| self.names.common_name(f));
            let req = ConnectRequest {
                cert_common_name: cn.as_deref().or(req.cert_common_name),
                ..req
            };
            if self.use_identity_as_username {
                if let Some(fingerprint) = req.cert_fingerprint {
                    let name = req.cert_common_name.unwrap_or(fingerprint);
                    tracing::debug!(client_id = %req.client_id, username = %name, "authenticated by client certificate");
                    return Ok(Identity::new(Some(name)));
                }
            }
            self.inner.authenticate(req).await
        })
    }

    fn authorize_publish(&self, id: &Identity, client_id: &str, topic: &str) -> bool {
        self.inner.authorize_publish(id, client_id, topic)
    }

    fn authorize_subscribe(&self, id: &Identity, client_id: &str, filter: &str) -> bool {
        self.inner.authorize_subscribe(id, client_id, filter)
    }

    fn intercept(&self, id: &Identity, client_id: &str, msg: &Message) -> Intercept {
        self.inner.intercept(id, client_id, msg)
    }

    fn on_connected(&self, id: &Identity, client_id: &str) {
        self.inner.on_connected(id, client_id)
    }

    fn on_subscribed(&self, id: &Identity, client_id: &str, filter: &str) {
        self.inner.on_subscribed(id, client_id, filter)
    }

    fn on_delivered(&self, id: &Identity, client_id: &str, msg: &Message) {
        self.inner.on_delivered(id, client_id, msg)
    }

    fn on_disconnected(&self, id: &Identity, client_id: &str) {
        self.inner.on_disconnected(id, client_id)
    }
}

/// The first Common Name (OID 2.5.4.3) in a DER `Name` whose outer SEQUENCE header is already
/// stripped (as webpki's `Cert::subject` gives it), if it is a UTF8String, PrintableString or
/// IA5String. Anything malformed gives `None`.
fn subject_common_name(mut rdns: &[u8]) -> Option<String> {
    const SET: u8 = 0x31;
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    while !rdns.is_empty() {
        let (set, rest) = der_element(rdns, SET)?;
        rdns = rest;
        let mut attrs = set;
        while !attrs.is_empty() {
            let (attr, rest) = der_element(attrs, SEQUENCE)?;
            attrs = rest;
            let (oid, value) = der_element(attr, OID)?;
            if oid != CN_OID {
                continue;
            }
            let (&tag, _) = value.split_first()?;
            let (text, _) = der_element(value, tag)?;
            return match tag {
                0x0c | 0x13 | 0x16 => String::from_utf8(text.to_vec()).ok(),
                _ => None,
            };
        }
    }
    None
}

/// Splits one DER element with tag `tag` off the front of `input`: (contents, rest).
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, input) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let (bytes, rest) = input.split_at(n);
        input = rest;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    (input.len() >= len).then(|| input.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rdn(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        let mut attr = vec![0x06, oid.len() as u8];
        attr.extend_from_slice(oid);
        attr.extend_from_slice(&[tag, value.len() as u8]);
        attr.extend_from_slice(value);
        let mut seq = vec![0x30, attr.len() as u8];
        seq.extend(attr);
        let mut set = vec![0x31, seq.len() as u8];
        set.extend(seq);
        set
    }

    #[test]
    fn common_name_is_found_after_other_attributes() {
        let mut name = rdn(&[0x55, 0x04, 0x06], 0x13, b"DE");
        name.extend(rdn(&[0x55, 0x04, 0x0a], 0x0c, b"Acme"));
        name.extend(rdn(&[0x55, 0x04, 0x03], 0x0c, b"device-1"));
        assert_eq!(subject_common_name(&name).as_deref(), Some("device-1"));
        assert_eq!(
            subject_common_name(&rdn(&[0x55, 0x04, 0x03], 0x13, b"pump")).as_deref(),
            Some("pump")
        );
    }

    #[test]
    fn no_or_unusual_common_name_is_none() {
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(
            subject_common_name(&rdn(&[0x55, 0x04, 0x0a], 0x0c, b"Acme")),
            None
        );
        // BMPString is not decoded.
        assert_eq!(
            subject_common_name(&rdn(&[0x55, 0x04, 0x03], 0x1e, &[0, b'a'])),
            None
        );
    }

    #[test]
    fn malformed_names_are_none_not_panics() {
        let good = rdn(&[0x55, 0x04, 0x03], 0x0c, b"device-1");
        for cut in 0..good.len() {
            assert_eq!(subject_common_name(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(
            subject_common_name(&[0x31, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(subject_common_name(&[0x31, 0x80]), None);
        assert_eq!(der_element(&[0x04, 0x82, 0x01, 0x00, 1, 2], 0x04), None);
        assert_eq!(
            der_element(&[0x04, 0x81, 0x02, 7, 8, 9], 0x04),
            Some((&[7u8, 8][..], &[9u8][..]))
        );
    }

    #[test]
    fn names_live_while_a_connection_holds_them() {
        let names = CertNames::default();
        let cert = ClientCert {
            fingerprint: "ab".into(),
            common_name: Some("device-1".into()),
        };
        let a = names.register(&cert).unwrap();
        let b = names.register(&cert).unwrap();
        assert_eq!(names.common_name("ab").as_deref(), Some("device-1"));
        drop(a);
        assert_eq!(names.common_name("ab").as_deref(), Some("device-1"));
        drop(b);
        assert_eq!(names.common_name("ab"), None);
        assert_eq!(names.len(), 0);
        let nameless = ClientCert {
            fingerprint: "cd".into(),
            common_name: None,
        };
        assert!(names.register(&nameless).is_none());
    }
}
