//! `admin firmware upload|list|assign|campaign ...`: OTA packages and campaigns through a
//! running server's management API (unlike the other admin commands, which work on the data
//! dir): an assignment must reach connected devices at once, and only the server's campaign
//! driver offers images. Uploads stream the file with a progress line on stderr.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Subcommand;
use serde_json::{json, Value};

use super::output::{or_dash, Output};
use super::rest::{encode, Rest, ServerArgs};

#[derive(Debug, clap::Args)]
pub struct FirmwareArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: FirmwareCommand,
}

#[derive(Debug, Subcommand)]
pub enum FirmwareCommand {
    /// Upload a package (SHA-256 computed by the server; a signature must verify with one of
    /// the tenant's keys).
    Upload {
        /// The image file.
        file: PathBuf,
        #[arg(long)]
        title: String,
        #[arg(long)]
        version: String,
        /// `firmware` or `software`.
        #[arg(long, default_value = "firmware")]
        kind: String,
        /// Device profile the package is meant for.
        #[arg(long)]
        profile: Option<String>,
        /// A file holding the 64-byte Ed25519 signature over the image (raw or base64).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// Tenant (system administrators).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List packages.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Assign a package (id or TITLE@VERSION) to a device (id or name).
    Assign { device: String, firmware: String },
    /// Staged rollouts.
    #[command(subcommand)]
    Campaign(CampaignCommand),
}

#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Create a campaign (it starts within a second).
    Create {
        name: String,
        /// The package: id or TITLE@VERSION.
        #[arg(long)]
        firmware: String,
        /// Target devices by id or name (comma-separated).
        #[arg(long, value_delimiter = ',')]
        devices: Vec<String>,
        /// Target the devices of a profile.
        #[arg(long)]
        profile: Option<String>,
        /// Target devices whose name starts with this.
        #[arg(long)]
        name_prefix: Option<String>,
        /// Target devices with an attribute value: KEY=VALUE (VALUE as JSON, else a string).
        #[arg(long)]
        attribute: Option<String>,
        /// Cumulative stage percentages (default 1,10,50,100).
        #[arg(long, value_delimiter = ',')]
        stages: Vec<f64>,
        /// Most devices offered the image per minute (default 60).
        #[arg(long)]
        rate: Option<u32>,
        /// Failure percentage of a stage above which the campaign halts (default 10).
        #[arg(long)]
        threshold: Option<f64>,
        /// Seconds after which a device without UPDATED or FAILED counts as failed.
        #[arg(long)]
        device_timeout: Option<u64>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List campaigns.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// A campaign with its stages.
    Show { id: String },
    /// Follow a campaign until it completes, halts or is cancelled (a line per change).
    Watch {
        id: String,
        /// Seconds between looks.
        #[arg(long, default_value_t = 2.0)]
        every: f64,
    },
    /// Pause a campaign.
    Pause { id: String },
    /// Resume a paused (or halted) campaign.
    Resume { id: String },
    /// Cancel a campaign for good.
    Cancel { id: String },
    /// A campaign's devices and their states.
    Devices {
        id: String,
        /// Only devices in this state (PENDING, ASSIGNED, UPDATED, FAILED, ...).
        #[arg(long)]
        state: Option<String>,
    },
}

/// Runs a firmware command against the server.
pub fn run(args: FirmwareArgs) -> anyhow::Result<Output> {
    let rest = Rest::connect(&args.server)?;
    match args.command {
        FirmwareCommand::Upload {
            file,
            title,
            version,
            kind,
            profile,
            signature,
            tenant,
        } => {
            let mut fields = vec![("title", title), ("version", version), ("kind", kind)];
            if let Some(p) = profile {
                fields.push(("profile", p));
            }
            if let Some(sig) = signature {
                let raw = std::fs::read(&sig).with_context(|| format!("{}", sig.display()))?;
                let b64 = if raw.len() == 64 {
                    base64(&raw)
                } else {
                    String::from_utf8_lossy(&raw).trim().to_string()
                };
                fields.push(("signature", b64));
            }
            let path = match tenant {
                Some(t) => format!("/api/v1/firmware?tenant={}", encode(&t)),
                None => "/api/v1/firmware".into(),
            };
            let p = rest.upload(&path, &fields, &file)?;
            let rows = json!([p.clone()]);
            Ok(packages(p, &rows))
        }
        FirmwareCommand::List { tenant } => {
            let v = rest.call("GET", &with_tenant("/api/v1/firmware", &tenant), None)?;
            Ok(packages(v["data"].clone(), &v["data"]))
        }
        FirmwareCommand::Assign { device, firmware } => {
            let d = device_id(&rest, &device)?;
            let fw = package_id(&rest, &firmware)?;
            let path = format!("/api/v1/devices/{d}/firmware");
            let v = rest.call("POST", &path, Some(&json!({"firmware_id": fw})))?;
            let text = format!(
                "assigned {} {} to {device}",
                v["package"]["title"].as_str().unwrap_or(""),
                v["package"]["version"].as_str().unwrap_or("")
            );
            Ok(Output::line(v, text))
        }
        FirmwareCommand::Campaign(c) => campaign(&rest, c),
    }
}

/// Standard base64 with padding (a signature for the form).
fn base64(raw: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in raw.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn with_tenant(path: &str, tenant: &Option<String>) -> String {
    match tenant {
        Some(t) => format!("{path}?tenant={}", encode(t)),
        None => path.to_string(),
    }
}

fn packages(json: Value, list: &Value) -> Output {
    let rows = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or("").to_string();
            vec![
                s("id"),
                s("kind"),
                s("title"),
                s("version"),
                p["size"].to_string(),
                s("checksum"),
                or_dash(p["signed_by"].as_str()),
            ]
        })
        .collect();
    let headers = [
        "ID",
        "KIND",
        "TITLE",
        "VERSION",
        "SIZE",
        "SHA-256",
        "SIGNED BY",
    ];
    Output::table(json, &headers, rows)
}

/// A device id from an id or a name.
fn device_id(rest: &Rest, device: &str) -> anyhow::Result<String> {
    if let Ok(d) = rest.call("GET", &format!("/api/v1/devices/{}", encode(device)), None) {
        if let Some(id) = d["id"].as_str() {
            return Ok(id.to_string());
        }
    }
    let page = rest.call(
        "GET",
        &format!("/api/v1/devices?q={}&limit=1000", encode(device)),
        None,
    )?;
    page["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["name"] == device)
        .and_then(|d| d["id"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("device {device:?} not found"))
}

/// A package id from an id or TITLE@VERSION.
fn package_id(rest: &Rest, firmware: &str) -> anyhow::Result<String> {
    let Some((title, version)) = firmware.split_once('@') else {
        return Ok(firmware.to_string());
    };
    let list = rest.call("GET", "/api/v1/firmware", None)?;
    list["data"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["title"] == title && p["version"] == version)
        .and_then(|p| p["id"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no package {title} {version}"))
}

fn campaign(rest: &Rest, c: CampaignCommand) -> anyhow::Result<Output> {
    let path = |id: &str, rest_: &str| format!("/api/v1/firmware/campaigns/{}{rest_}", encode(id));
    match c {
        CampaignCommand::Create {
            name,
            firmware,
            devices,
            profile,
            name_prefix,
            attribute,
            stages,
            rate,
            threshold,
            device_timeout,
            tenant,
        } => {
            let mut target = serde_json::Map::new();
            if !devices.is_empty() {
                target.insert("devices".into(), json!(devices));
            }
            if let Some(p) = profile {
                target.insert("profile".into(), json!(p));
            }
            if let Some(p) = name_prefix {
                target.insert("name_prefix".into(), json!(p));
            }
            if let Some(a) = attribute {
                let (k, v) = a
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--attribute is KEY=VALUE"))?;
                let v = serde_json::from_str(v).unwrap_or_else(|_| json!(v));
                target.insert("attribute".into(), json!({"key": k, "value": v}));
            }
            let mut body = json!({"name": name, "firmware_id": package_id(rest, &firmware)?,
                "target": target});
            let mut set = |k: &str, v: Value| body[k] = v;
            if !stages.is_empty() {
                set("stages", json!(stages));
            }
            if let Some(r) = rate {
                set("rate_per_minute", json!(r));
            }
            if let Some(t) = threshold {
                set("failure_threshold", json!(t));
            }
            if let Some(t) = device_timeout {
                set("device_timeout_s", json!(t));
            }
            if let Some(t) = tenant {
                set("tenant", json!(t));
            }
            let v = rest.call("POST", "/api/v1/firmware/campaigns", Some(&body))?;
            Ok(show(v))
        }
        CampaignCommand::List { tenant } => {
            let v = rest.call(
                "GET",
                &with_tenant("/api/v1/firmware/campaigns", &tenant),
                None,
            )?;
            let rows = v["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    vec![
                        c["id"].as_str().unwrap_or("").into(),
                        c["name"].as_str().unwrap_or("").into(),
                        c["state"].as_str().unwrap_or("").into(),
                        format!("{}/{}", c["stage"].as_u64().unwrap_or(0) + 1, stages_of(c)),
                        summary(&c["counts"]),
                    ]
                })
                .collect();
            let headers = ["ID", "NAME", "STATE", "STAGE", "DEVICES"];
            Ok(Output::table(v["data"].clone(), &headers, rows))
        }
        CampaignCommand::Show { id } => Ok(show(rest.call("GET", &path(&id, ""), None)?)),
        CampaignCommand::Watch { id, every } => {
            let mut last = String::new();
            loop {
                let v = rest.call("GET", &path(&id, ""), None)?;
                let line = format!(
                    "{}  stage {}/{}  {}",
                    v["state"].as_str().unwrap_or(""),
                    v["stage"].as_u64().unwrap_or(0) + 1,
                    stages_of(&v),
                    summary(&v["counts"])
                );
                if line != last {
                    println!("{line}");
                    last = line;
                }
                if matches!(
                    v["state"].as_str(),
                    Some("completed" | "halted" | "cancelled")
                ) {
                    return Ok(show(v));
                }
                std::thread::sleep(std::time::Duration::from_secs_f64(every.max(0.1)));
            }
        }
        CampaignCommand::Pause { id } => Ok(show(rest.call("POST", &path(&id, "/pause"), None)?)),
        CampaignCommand::Resume { id } => {
            Ok(show(rest.call("POST", &path(&id, "/resume"), None)?))
        }
        CampaignCommand::Cancel { id } => {
            Ok(show(rest.call("POST", &path(&id, "/cancel"), None)?))
        }
        CampaignCommand::Devices { id, state } => {
            let mut p = path(&id, "/devices");
            if let Some(s) = state {
                p = format!("{p}?state={}", encode(&s));
            }
            let v = rest.call("GET", &p, None)?;
            let rows = v["data"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    vec![
                        d["name"].as_str().unwrap_or("").into(),
                        (d["stage"].as_u64().unwrap_or(0) + 1).to_string(),
                        d["state"].as_str().unwrap_or("").into(),
                        or_dash(d["error"].as_str()),
                    ]
                })
                .collect();
            Ok(Output::table(
                v["data"].clone(),
                &["DEVICE", "STAGE", "STATE", "ERROR"],
                rows,
            ))
        }
    }
}

fn stages_of(c: &Value) -> usize {
    c["stages"].as_array().map_or(0, Vec::len)
}

/// `3 devices: 1 updated, 1 failed, 1 pending, ...` (non-zero counts only).
fn summary(counts: &Value) -> String {
    let n = |k: &str| counts[k].as_u64().unwrap_or(0);
    let parts: Vec<String> = ["updated", "failed", "in_progress", "assigned", "pending"]
        .iter()
        .filter(|k| n(k) > 0)
        .map(|k| format!("{} {}", n(k), k.replace('_', " ")))
        .collect();
    format!("{} devices: {}", n("devices"), parts.join(", "))
}

/// A campaign: a header line, the halt reason, a table of its stages.
fn show(v: Value) -> Output {
    let rows = v["stage_progress"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let n = |k: &str| s[k].as_u64().unwrap_or(0).to_string();
            vec![
                (s["stage"].as_u64().unwrap_or(0) + 1).to_string(),
                format!("{}%", s["percent"].as_f64().unwrap_or(0.0)),
                n("devices"),
                n("pending"),
                n("assigned"),
                n("in_progress"),
                n("updated"),
                n("failed"),
            ]
        })
        .collect();
    let headers = [
        "STAGE",
        "UP TO",
        "DEVICES",
        "PENDING",
        "ASSIGNED",
        "IN PROGRESS",
        "UPDATED",
        "FAILED",
    ];
    let title = format!(
        "campaign {} ({}): {}, stage {}/{}",
        v["name"].as_str().unwrap_or(""),
        v["id"].as_str().unwrap_or(""),
        v["state"].as_str().unwrap_or(""),
        v["stage"].as_u64().unwrap_or(0) + 1,
        stages_of(&v)
    );
    let reason = v["reason"].as_str().map(|r| format!("reason: {r}"));
    let table = Output::table(v.clone(), &headers, rows);
    let mut text = title;
    if let Some(r) = reason {
        text.push('\n');
        text.push_str(&r);
    }
    text.push('\n');
    text.push_str(&table.text);
    Output::line(v, text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
