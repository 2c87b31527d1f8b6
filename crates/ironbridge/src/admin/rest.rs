//! The management API for admin commands that need a running server (`admin firmware`): a
//! small blocking HTTP/1.1 client (one request per connection, `http://` only), logged in as
//! a user or with a bearer token, and a multipart upload that streams a file with a progress
//! line on stderr.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use serde_json::{json, Value};

/// Where the server is and who we are.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The server's HTTP address.
    #[arg(long, env = "IRONBRIDGE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// User to log in as.
    #[arg(long, default_value = "admin")]
    pub user: String,
    /// That user's password.
    #[arg(long, env = "IRONBRIDGE_ADMIN_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// A bearer token instead of logging in.
    #[arg(long, env = "IRONBRIDGE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A logged-in connection to the management API.
pub struct Rest {
    host: String,
    token: String,
}

/// A response: status and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON, or the API's error message as an error for a status ≥ 400.
    pub fn json(self) -> anyhow::Result<Value> {
        let v: Value = serde_json::from_slice(&self.body).unwrap_or(Value::Null);
        if self.status >= 400 {
            let msg = v["error"]["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
            bail!("{} ({})", msg, self.status);
        }
        Ok(v)
    }
}

const TIMEOUT: Duration = Duration::from_secs(60);

impl Rest {
    /// Connects (logs in unless a token is given).
    pub fn connect(args: &ServerArgs) -> anyhow::Result<Rest> {
        let host = args
            .url
            .strip_prefix("http://")
            .ok_or_else(|| anyhow!("--url must be http://HOST:PORT, not {:?}", args.url))?
            .trim_end_matches('/')
            .to_string();
        if let Some(token) = &args.token {
            return Ok(Rest {
                host,
                token: token.clone(),
            });
        }
        let password = args.password.clone().ok_or_else(|| {
            anyhow!("give --password (or IRONBRIDGE_ADMIN_PASSWORD) or --token (IRONBRIDGE_TOKEN)")
        })?;
        let mut rest = Rest {
            host,
            token: String::new(),
        };
        let body = json!({"username": args.user, "password": password});
        let v = rest
            .call("POST", "/api/v1/auth/login", Some(&body))
            .with_context(|| format!("logging in as {}", args.user))?;
        rest.token = v["token"]
            .as_str()
            .ok_or_else(|| anyhow!("the login answer has no token"))?
            .to_string();
        Ok(rest)
    }

    /// A JSON request; the answer's JSON, or its error message.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let head = self.head(method, path, "application/json", body.len() as u64);
        let mut s = self.open()?;
        s.write_all(head.as_bytes())?;
        s.write_all(body.as_bytes())?;
        read_response(s)
            .with_context(|| format!("{method} {path}"))?
            .json()
            .with_context(|| format!("{method} {path}"))
    }

    /// Uploads `file` as the form field `file` after the text `fields`, printing progress.
    pub fn upload(
        &self,
        path: &str,
        fields: &[(&str, String)],
        file: &Path,
    ) -> anyhow::Result<Value> {
        let mut f = std::fs::File::open(file).with_context(|| format!("{}", file.display()))?;
        let size = f.metadata()?.len();
        let boundary = format!("ironbridge-{:016x}", rand_u64());
        let mut pre = String::new();
        for (name, value) in fields {
            pre.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        let filename = file
            .file_name()
            .map(|n| n.to_string_lossy().replace('"', ""))
            .unwrap_or_else(|| "image.bin".into());
        pre.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        ));
        let post = format!("\r\n--{boundary}--\r\n");
        let total = pre.len() as u64 + size + post.len() as u64;
        let ctype = format!("multipart/form-data; boundary={boundary}");
        let mut s = self.open()?;
        let mut progress = Progress::new(&filename, size);
        let mut send = || -> std::io::Result<()> {
            s.write_all(self.head("POST", path, &ctype, total).as_bytes())?;
            s.write_all(pre.as_bytes())?;
            let mut buf = vec![0u8; 256 << 10];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                s.write_all(&buf[..n])?;
                progress.advance(n as u64);
            }
            s.write_all(post.as_bytes())
        };
        let sent = send();
        progress.finish();
        // A server that refuses early (401, 413) closes while we write: its answer says why.
        match (sent, read_response(s)) {
            (_, Ok(r)) => r.json(),
            (Err(e), Err(_)) => {
                Err(e).context("the server closed the connection during the upload")
            }
            (Ok(()), Err(e)) => Err(e),
        }
    }

    fn open(&self) -> anyhow::Result<TcpStream> {
        let s = TcpStream::connect(&self.host)
            .with_context(|| format!("connecting to {}", self.host))?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        Ok(s)
    }

    fn head(&self, method: &str, path: &str, ctype: &str, len: u64) -> String {
        let auth = if self.token.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {}\r\n", self.token)
        };
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{auth}\
             Content-Type: {ctype}\r\nContent-Length: {len}\r\n\r\n",
            self.host
        )
    }
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

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u64::from_le_bytes(b)
}

/// Reads a whole `Connection: close` response (chunked bodies decoded).
fn read_response(mut s: TcpStream) -> anyhow::Result<Response> {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).context("reading the answer")?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed HTTP answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut body = raw[split + 4..].to_vec();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed status line"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = String::from_utf8_lossy(&rest[..eol]);
            let n = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
            if n == 0 || rest.len() < eol + 2 + n {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[(eol + 4 + n).min(rest.len())..];
        }
        body = out;
    }
    Ok(Response { status, body })
}

/// A progress line on stderr: `NAME  12.0/64.0 MiB  18%  9.5 MiB/s`, redrawn at most 10 times
/// a second.
struct Progress {
    name: String,
    total: u64,
    done: u64,
    start: Instant,
    drawn: Option<Instant>,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

impl Progress {
    fn new(name: &str, total: u64) -> Progress {
        Progress {
            name: name.to_string(),
            total,
            done: 0,
            start: Instant::now(),
            drawn: None,
        }
    }

    fn advance(&mut self, n: u64) {
        self.done += n;
        if self
            .drawn
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100))
        {
            self.draw();
        }
    }

    fn draw(&mut self) {
        self.drawn = Some(Instant::now());
        let pct = (self.done * 100).checked_div(self.total).unwrap_or(100);
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let width = 30usize;
        let filled = (pct as usize * width) / 100;
        eprint!(
            "\r{}  [{}{}]  {:.1}/{:.1} MiB  {:>3}%  {:.1} MiB/s ",
            self.name,
            "#".repeat(filled),
            "-".repeat(width - filled),
            mib(self.done),
            mib(self.total),
            pct,
            mib(self.done) / secs
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&mut self) {
        self.draw();
        eprintln!();
    }
}
