//! HTTP for the simulator: a tiny async HTTP/1.1 client (one request per connection) and the
//! provisioning of devices through the management API as an administrator: tenant and profile
//! created when missing, devices created or, when one of that name exists, found and given a
//! new access token (so a second run reuses the same devices).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::SimError;

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// One request with `Connection: close`; gives up after `timeout`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Response, SimError> {
    let fail = |e: String| SimError::Http(format!("{method} {path} on {addr}: {e}"));
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let auth = bearer
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| fail("timed out".into()))?
        .map_err(|e| fail(e.to_string()))?;
    parse_response(&raw).ok_or_else(|| fail("malformed response".into()))
}

/// Status and body of a whole HTTP/1.1 response (chunked bodies decoded).
fn parse_response(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n")?;
            let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.push_str(after.get(..n)?);
            rest = after.get(n + 2..)?;
        }
        out
    } else {
        body.to_string()
    };
    Some(Response { status, body })
}

/// How the simulator authenticates to the management API.
#[derive(Debug, Clone)]
pub enum AdminAuth {
    /// A bearer token given as is.
    Token(String),
    /// A user name and password to log in with.
    Login { user: String, password: String },
}

/// The management API as an administrator.
pub struct Admin {
    pub http: SocketAddr,
    token: String,
}

const API_TIMEOUT: Duration = Duration::from_secs(15);

impl Admin {
    /// Logs in (or takes the given token).
    pub async fn connect(http: SocketAddr, auth: &AdminAuth) -> Result<Admin, SimError> {
        let token = match auth {
            AdminAuth::Token(t) => t.clone(),
            AdminAuth::Login { user, password } => {
                let body = json!({"username": user, "password": password}).to_string();
                let r = request(
                    http,
                    "POST",
                    "/api/v1/auth/login",
                    None,
                    Some(&body),
                    API_TIMEOUT,
                )
                .await?;
                r.json()["token"]
                    .as_str()
                    .filter(|_| r.status == 200)
                    .ok_or_else(|| {
                        SimError::Provision(format!("login as {user}: {} {}", r.status, r.body))
                    })?
                    .to_string()
            }
        };
        Ok(Admin { http, token })
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Response, SimError> {
        let body = body.map(|b| b.to_string());
        request(
            self.http,
            method,
            path,
            Some(&self.token),
            body.as_deref(),
            API_TIMEOUT,
        )
        .await
    }

    /// Creates `what` with a POST unless it exists (201 or 409 are both fine).
    async fn ensure(&self, path: &str, body: Value, what: &str) -> Result<(), SimError> {
        let r = self.call("POST", path, Some(body)).await?;
        match r.status {
            200 | 201 | 409 => Ok(()),
            s => Err(SimError::Provision(format!(
                "creating {what}: {s} {}",
                r.body
            ))),
        }
    }

    /// Creates the tenant `name` when missing. A tenant administrator may not create tenants
    /// (403): then the tenant is taken as given, and creating the devices says if it is wrong.
    pub async fn ensure_tenant(&self, name: &str) -> Result<(), SimError> {
        let r = self
            .call("POST", "/api/v1/tenants", Some(json!({"name": name})))
            .await?;
        match r.status {
            200 | 201 | 403 | 409 => Ok(()),
            s => Err(SimError::Provision(format!(
                "creating tenant {name}: {s} {}",
                r.body
            ))),
        }
    }

    /// Creates the device profile `name` in `tenant` when missing.
    pub async fn ensure_profile(&self, tenant: Option<&str>, name: &str) -> Result<(), SimError> {
        let mut body = json!({"name": name});
        if let Some(t) = tenant {
            body["tenant"] = json!(t);
        }
        self.ensure("/api/v1/profiles", body, &format!("profile {name}"))
            .await
    }

    /// The access token of device `name` (profile `profile`), created if needed; an existing
    /// device gets a new token (the previous one stops working).
    pub async fn device_token(
        &self,
        tenant: Option<&str>,
        name: &str,
        profile: &str,
    ) -> Result<String, SimError> {
        let mut body = json!({"name": name, "profile": profile, "label": "simulated"});
        if let Some(t) = tenant {
            body["tenant"] = json!(t);
        }
        let r = self.call("POST", "/api/v1/devices", Some(body)).await?;
        let id = match r.status {
            201 => return token_of(&r, name),
            409 => self.find_device(tenant, name).await?,
            s => {
                return Err(SimError::Provision(format!(
                    "creating device {name}: {s} {}",
                    r.body
                )))
            }
        };
        let r = self
            .call(
                "POST",
                &format!("/api/v1/devices/{id}/credentials"),
                Some(json!({"type": "access_token"})),
            )
            .await?;
        if r.status != 200 {
            return Err(SimError::Provision(format!(
                "new token for {name}: {} {}",
                r.status, r.body
            )));
        }
        token_of(&r, name)
    }

    /// The id of the device called exactly `name`.
    async fn find_device(&self, tenant: Option<&str>, name: &str) -> Result<String, SimError> {
        let mut path = format!("/api/v1/devices?q={}&limit=1000", encode(name));
        if let Some(t) = tenant {
            path.push_str(&format!("&tenant={}", encode(t)));
        }
        let r = self.call("GET", &path, None).await?;
        r.json()["data"]
            .as_array()
            .and_then(|ds| ds.iter().find(|d| d["name"] == name))
            .and_then(|d| d["id"].as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                SimError::Provision(format!(
                    "device {name} exists but was not found: {} {}",
                    r.status, r.body
                ))
            })
    }
}

fn token_of(r: &Response, name: &str) -> Result<String, SimError> {
    r.json()["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| SimError::Provision(format!("no access token for {name}: {}", r.body)))
}

/// Percent-encodes a query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse_response(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_str()), (201, "{}"));
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.json(), json!({"a": 1}));
        assert!(parse_response(b"garbage").is_none());
        assert_eq!(encode("farm 1/ä"), "farm%201%2F%C3%A4");
    }
}
