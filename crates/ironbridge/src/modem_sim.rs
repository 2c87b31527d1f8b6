//! `ironbridge modem-sim --port PTY` (hidden, for tests): the modem simulator of crates/modem
//! on a serial port (one end of a socat pty pair), driven by JSON lines on stdin and reporting
//! JSON lines on stdout, so the Python platform tests can stand in for a GSM modem.
//!
//! stdin: `{"deliver": {"from": "+49...", "text": "PUMP ON 1234"}}`, `{"silence": true}`,
//! `{"registration": 1}`. stdout: `{"event":"ready"}`, then `{"event":"submitted", "to",
//! "text", "coding", "part": [seq, total] | null, "reference", "status_report"}` for each
//! `AT+CMGS`, `{"event":"sms", "to", "text", "parts"}` for each whole message sent,
//! `{"event":"stored", "slots": [...]}`, `{"event":"deleted", "slot": n}`,
//! `{"event":"silenced", "on": bool}` once a `silence` took effect, `{"event":"pin", "right"}`
//! for each `AT+CPIN=` tried.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use modem::sim::{self, SimCommand, SimConfig, SimEvent};
use modem::text::Coding;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Flags of `modem-sim`.
#[derive(Debug, Clone, Args)]
pub struct ModemSimArgs {
    /// The serial port (a pty) the simulated modem answers on.
    #[arg(long)]
    pub port: PathBuf,
    #[arg(long, default_value_t = 115_200)]
    pub baud: u32,
    /// The PIN the simulated SIM asks for.
    #[arg(long)]
    pub pin: Option<String>,
    /// `AT+CREG?` answers "searching" this many times first.
    #[arg(long, default_value_t = 1)]
    pub searching: u32,
}

fn print(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn command(line: &str) -> anyhow::Result<SimCommand> {
    let v: Value = serde_json::from_str(line).context("not JSON")?;
    if let Some(d) = v.get("deliver") {
        let field = |k: &str| {
            d[k].as_str()
                .map(str::to_string)
                .with_context(|| format!("deliver.{k} must be a string"))
        };
        return Ok(SimCommand::Deliver {
            from: field("from")?,
            text: field("text")?,
        });
    }
    if let Some(s) = v.get("silence").and_then(Value::as_bool) {
        return Ok(SimCommand::Silence(s));
    }
    if let Some(r) = v.get("registration").and_then(Value::as_u64) {
        return Ok(SimCommand::Registration(u8::try_from(r)?));
    }
    anyhow::bail!("unknown command (deliver, silence, registration)")
}

fn event(e: SimEvent) -> Value {
    match e {
        SimEvent::Submitted {
            to,
            text,
            coding,
            concat,
            reference,
            status_report,
        } => json!({"event": "submitted", "to": to, "text": text,
            "coding": match coding { Coding::Gsm7 => "gsm7", Coding::Ucs2 => "ucs2", Coding::Data8 => "data8" },
            "part": concat.map(|c| json!([c.seq, c.total])), "reference": reference,
            "status_report": status_report}),
        SimEvent::Message { to, text, parts } => {
            json!({"event": "sms", "to": to, "text": text, "parts": parts})
        }
        SimEvent::Stored(slots) => json!({"event": "stored", "slots": slots}),
        SimEvent::Deleted(slot) => json!({"event": "deleted", "slot": slot}),
        SimEvent::Silenced(on) => json!({"event": "silenced", "on": on}),
        SimEvent::PinEntered { right } => json!({"event": "pin", "right": right}),
    }
}

/// Runs the simulator until it is killed or its port closes.
pub async fn run(args: ModemSimArgs) -> anyhow::Result<()> {
    let port = (modem::service::serial(args.port.clone(), args.baud))()
        .await
        .with_context(|| format!("opening {}", args.port.display()))?;
    let (control, control_rx) = mpsc::unbounded_channel();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let config = SimConfig {
        pin: args.pin,
        searching: args.searching,
        ..SimConfig::default()
    };
    let sim = tokio::spawn(sim::run(port, config, control_rx, events_tx));
    let stdin_control = control.clone();
    // a plain thread: stdin is blocking, and the simulator runs until killed even after EOF
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            match command(&line) {
                Ok(c) => {
                    let _ = stdin_control.send(c);
                }
                Err(e) => print(json!({"event": "error", "error": format!("{e:#}"), "line": line})),
            }
        }
        std::mem::forget(stdin_control);
    });
    print(json!({"event": "ready", "port": args.port}));
    while let Some(e) = events.recv().await {
        print(event(e));
    }
    drop(control);
    sim.await?.context("the simulated modem's port")?;
    Ok(())
}
