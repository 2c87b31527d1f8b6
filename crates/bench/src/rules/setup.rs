//! `bench rules` set-up and tear-down over REST: profiles, devices and rules created and
//! deleted in parallel through a small blocking HTTP/1.1 client, and the server's counters.

use super::*;

/// What the set-up created.
pub(super) struct Made {
    profiles: Vec<String>,
    /// Device ids and access tokens, in device order.
    pub(super) devices: Vec<(String, String)>,
    rules: Vec<String>,
}

pub(super) fn create(
    a: &RulesArgs,
    plan: &Plan,
    password: &str,
    run: &str,
) -> Result<Made, BenchError> {
    let say = |m: String| {
        if !a.quiet {
            eprintln!("[rules] {m}");
        }
    };
    let token = login(a.http, password)?;
    let mut http = Http::new(a.http, Some(token.clone()));
    let mut profiles = Vec::new();
    for p in 0..plan.profiles {
        let body = json!({"name": format!("rules-bench-{run}-p{p}")});
        let v = http.created("/api/v1/profiles", &body)?;
        match v["id"].as_str() {
            Some(id) => profiles.push(id.to_string()),
            None => return Err(BenchError::Rules(format!("creating a profile: {v}"))),
        }
    }
    say(format!(
        "{} profiles; creating {} devices",
        profiles.len(),
        plan.devices
    ));
    let started = Instant::now();
    let devices = parallel(a, &token, plan.devices, |http, d| {
        let body = json!({"name": format!("rules-bench-{run}-d{d}"), "profile": profiles[d % plan.profiles]});
        let v = http.created("/api/v1/devices", &body)?;
        match (v["id"].as_str(), v["access_token"].as_str()) {
            (Some(id), Some(token)) => Ok((id.to_string(), token.to_string())),
            _ => Err(BenchError::Rules(format!("creating a device: {v}"))),
        }
    })?;
    say(format!(
        "{} devices in {:.1} s; creating {} rules",
        devices.len(),
        started.elapsed().as_secs_f64(),
        plan.rules + a.tenant_rules
    ));
    let rules = parallel(a, &token, plan.rules + a.tenant_rules, |http, r| {
        let body = if r < plan.rules {
            let (lo, hi) = Plan::band(r);
            json!({
                "name": format!("rules-bench-{run}-r{r}"),
                "scope": {"profile": profiles[r % plan.profiles]},
                "trigger": "telemetry",
                "condition": format!("temp > {lo}.0 && temp < {hi}.0"),
                "clear": "temp < 40.0",
                "actions": [{"type": "alarm", "alarm": format!("rules-bench r{r}"), "severity": "MAJOR"}],
            })
        } else {
            json!({
                "name": format!("rules-bench-{run}-t{}", r - plan.rules),
                "scope": {"tenant": true},
                "trigger": "telemetry",
                "condition": "temp > 1000000000.0",
                "actions": [{"type": "log"}],
            })
        };
        let v = http.created("/api/v1/rules", &body)?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| BenchError::Rules(format!("creating a rule: {v}")))
    })?;
    say(format!("{} rules", rules.len()));
    Ok(Made {
        profiles,
        devices,
        rules,
    })
}

/// Removes what [`create`] made: rules, devices (with their telemetry and alarms), profiles.
pub(super) fn delete(a: &RulesArgs, password: &str, made: &Made) -> Result<(), BenchError> {
    let token = login(a.http, password)?;
    let del = |what: &'static str, ids: &[String]| {
        parallel(a, &token, ids.len(), |http, i| {
            http.request("DELETE", &format!("/api/v1/{what}/{}", ids[i]), None)
                .map(|_| ())
        })
    };
    del("rules", &made.rules)?;
    let devices: Vec<String> = made.devices.iter().map(|(id, _)| id.clone()).collect();
    del("devices", &devices)?;
    del("profiles", &made.profiles)?;
    Ok(())
}

/// Runs `f(http, i)` for `i` in `0..n` over `--http-connections` threads; results in order.
pub(super) fn parallel<T: Send>(
    a: &RulesArgs,
    token: &str,
    n: usize,
    f: impl Fn(&mut Http, usize) -> Result<T, BenchError> + Sync,
) -> Result<Vec<T>, BenchError> {
    let workers = a.http_connections.clamp(1, 64);
    let results: Vec<Result<Vec<(usize, T)>, BenchError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let f = &f;
                s.spawn(move || {
                    let mut http = Http::new(a.http, Some(token.to_string()));
                    (w..n)
                        .step_by(workers)
                        .map(|i| f(&mut http, i).map(|t| (i, t)))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a worker panicked"))
            .collect()
    });
    let mut all = Vec::with_capacity(n);
    for r in results {
        all.extend(r?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

pub(super) fn login(addr: SocketAddr, password: &str) -> Result<String, BenchError> {
    let body = json!({"username": "admin", "password": password});
    let (status, v) = Http::new(addr, None).request("POST", "/api/v1/auth/login", Some(&body))?;
    match v["token"].as_str() {
        Some(t) if status == 200 => Ok(t.to_string()),
        _ => Err(BenchError::Rules(format!("login failed: {status} {v}"))),
    }
}

/// A small HTTP/1.1 client on one keep-alive loopback connection.
pub(super) struct Http {
    addr: SocketAddr,
    bearer: Option<String>,
    conn: Option<BufReader<TcpStream>>,
}

impl Http {
    fn new(addr: SocketAddr, bearer: Option<String>) -> Http {
        Http {
            addr,
            bearer,
            conn: None,
        }
    }

    /// A POST that must answer 201; its JSON body.
    fn created(&mut self, path: &str, body: &Value) -> Result<Value, BenchError> {
        match self.request("POST", path, Some(body))? {
            (201, v) => Ok(v),
            (status, v) => Err(BenchError::Rules(format!("POST {path}: {status} {v}"))),
        }
    }

    /// (status, JSON body or `null`); a 2xx is not required.
    fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), BenchError> {
        let body = body.map(Value::to_string).unwrap_or_default();
        // A kept-alive connection the server has closed fails before any answer: once more
        // on a fresh one.
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            match self.exchange(method, path, &body) {
                Ok((status, text)) => {
                    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
                    return Ok((status, v));
                }
                Err(e) => {
                    self.conn = None;
                    if !(reused && attempt == 0 && e.kind() == std::io::ErrorKind::UnexpectedEof) {
                        return Err(BenchError::Rules(format!(
                            "HTTP {method} {path} on {}: {e}",
                            self.addr
                        )));
                    }
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    fn exchange(&mut self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        use std::io::{Error, ErrorKind};
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(60)))?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().expect("connected");
        let auth = self
            .bearer
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let s = conn.get_mut();
        s.write_all(format!("{head}{body}").as_bytes())?;
        let mut line = String::new();
        if conn.read_line(&mut line)? == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "closed before answering",
            ));
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| Error::new(ErrorKind::InvalidData, format!("status line {line:?}")))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            conn.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                match k.as_str() {
                    "content-length" => length = v.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = v.eq_ignore_ascii_case("chunked"),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                conn.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| Error::new(ErrorKind::InvalidData, "chunk size"))?;
                let mut chunk = vec![0; size + 2];
                conn.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = length {
            out.resize(n, 0);
            conn.read_exact(&mut out)?;
        } else if status != 204 && status != 304 {
            conn.read_to_end(&mut out)?;
            close = true;
        }
        if close {
            self.conn = None;
        }
        Ok((status, String::from_utf8_lossy(&out).into_owned()))
    }
}

/// Sums of the [`COUNTERS`] in the server's `/metrics` (empty when it cannot be read).
pub(super) fn server_counters(addr: SocketAddr) -> BTreeMap<String, f64> {
    let Ok((200, text)) = Http::new(addr, None).exchange("GET", "/metrics", "") else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap_or("");
        if COUNTERS.contains(&name) {
            if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                *out.entry(name.to_string()).or_insert(0.0) += v;
            }
        }
    }
    out
}
