//! `ironbridge demo`: the platform plus the six simulated fleets of `ironbridge sim` (farm,
//! factory, fleet, patients, vending, meters) running against this very server, with rules, a
//! geofence and one dashboard per fleet (`demo/*.json`) preloaded so that alarms and RPCs happen
//! on their own. Also the first demo's soil readings on `demo/#` for anyone watching with an
//! MQTT client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use broker::{Broker, Identity};
use clap::Parser;
use ib_core::Platform;
use mqtt_codec::QoS;
use serde_json::json;
use tokio::sync::watch;

/// The rules the demo starts with (idempotent: existing names are kept).
fn rules() -> Vec<serde_json::Value> {
    vec![
        json!({"name": "Dry soil: pump on", "scope": {"profile": "soil-sensor"},
            "condition": "soil_moisture < 20.0", "clear": "soil_moisture > 35.0",
            "actions": [{"type": "rpc", "method": "setPump", "params": {"on": true}},
                        {"type": "alarm", "alarm": "Dry soil", "severity": "MINOR"}]}),
        json!({"name": "Wet soil: pump off", "scope": {"profile": "soil-sensor"},
            "condition": "soil_moisture > 35.0 && pump == true",
            "actions": [{"type": "rpc", "method": "setPump", "params": {"on": false}}]}),
        json!({"name": "Vibration anomaly", "scope": {"profile": "machine"},
            "condition": "anomaly(\"vibration\", \"30m\") > 6.0",
            "actions": [{"type": "alarm", "alarm": "Vibration anomaly", "severity": "MAJOR"}]}),
        json!({"name": "Machine stopped", "scope": {"profile": "machine"},
            "condition": "power < 0.1", "clear": "power > 1.0",
            "actions": [{"type": "alarm", "alarm": "Machine stopped", "severity": "CRITICAL"}]}),
        json!({"name": "Unplanned stop", "scope": {"profile": "truck"},
            "condition": "speed < 1.0 && !inside(\"depot\")", "for": "2m", "clear": "speed > 5.0",
            "actions": [{"type": "alarm", "alarm": "Unplanned stop", "severity": "WARNING"}]}),
        json!({"name": "Tachycardia", "scope": {"profile": "wearable"},
            "condition": "heart_rate > 120.0", "for": "1m", "clear": "heart_rate < 100.0",
            "actions": [{"type": "alarm", "alarm": "High heart rate", "severity": "CRITICAL"}]}),
        json!({"name": "Low stock", "scope": {"profile": "vending-machine"},
            "condition": "stock_pct < 10.0", "clear": "stock_pct > 50.0",
            "actions": [{"type": "alarm", "alarm": "Low stock", "severity": "WARNING"},
                        {"type": "rpc", "method": "refill"}]}),
    ]
}

/// The demo's dashboards, one per simulated fleet: the simulator's device names (`farm-001`...,
/// `ironbridge sim all --devices 3`), keys and RPC methods.
pub const DASHBOARDS: [&str; 6] = [
    include_str!("demo/farm.json"),
    include_str!("demo/factory.json"),
    include_str!("demo/fleet.json"),
    include_str!("demo/patients.json"),
    include_str!("demo/vending.json"),
    include_str!("demo/meters.json"),
];

/// Creates the demo's profiles, geofence, rules and dashboards in the default tenant.
pub fn preload(p: &Platform) -> anyhow::Result<()> {
    let tenant = p.registry.tenant(ib_core::registry::DEFAULT)?;
    for name in [
        "soil-sensor",
        "machine",
        "truck",
        "wearable",
        "vending-machine",
        "smart-meter",
    ] {
        let new = ib_core::model::NewProfile {
            name: name.into(),
            ..Default::default()
        };
        match p.registry.create_profile(&tenant.id, new) {
            Ok(_) | Err(ib_core::CoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let depot = serde_json::from_value(json!({"name": "depot",
        "circle": {"lon": 13.405, "lat": 52.52, "radius_m": 400.0}}))?;
    match p.rules.lookups.create_geofence(&tenant.id, depot) {
        Ok(_) | Err(ib_core::CoreError::AlreadyExists(_)) => {}
        Err(e) => return Err(e.into()),
    }
    for r in rules() {
        let spec = serde_json::from_value(r)?;
        match p.rules.create(&p.registry, &tenant.id, spec) {
            Ok(_) | Err(ib_core::CoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for d in DASHBOARDS {
        let spec = serde_json::from_str(d)?;
        match p.dashboards.create(&tenant.id, &spec) {
            Ok(_) | Err(ib_core::CoreError::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[derive(Parser)]
struct SimCommand {
    #[command(flatten)]
    args: bench::sim::SimArgs,
}

/// Runs every simulated fleet against this server on its own thread (the simulator has its own
/// runtime and stops on Ctrl-C / SIGTERM like the server). `token` is an administrator's access
/// token for creating the devices.
pub fn start_fleets(http: SocketAddr, mqtt: SocketAddr, token: String) {
    let argv = [
        "sim",
        "all",
        "--http",
        &http.to_string(),
        "--mqtt",
        &mqtt.to_string(),
        "--devices",
        "3",
        "--interval",
        "2s",
        "--token",
        &token,
        "--quiet",
    ]
    .map(str::to_string);
    let cmd = match SimCommand::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "demo fleets");
            return;
        }
    };
    std::thread::Builder::new()
        .name("demo-fleets".into())
        .spawn(move || {
            if let Err(e) = bench::sim::run(cmd.args) {
                tracing::warn!(error = %e, "the demo's simulated fleets stopped");
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::error!(error = %e, "starting the demo fleets"));
}

/// Publishes simulated soil readings every second on `demo/irrigation/...` until shutdown.
pub async fn run(broker: Broker, mut shutdown: watch::Receiver<bool>) {
    let link = broker.link(
        "demo-irrigation-sim",
        Identity {
            superuser: true,
            ..Identity::new(None)
        },
    );
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut t: f64 = 0.0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        t += 1.0;
        for field in 1..=3 {
            // Moisture dries slowly and jumps back when irrigated; temperature follows the day.
            let phase = (t / 600.0 + f64::from(field)) % 1.0;
            let moisture = 40.0 - 25.0 * phase;
            let temperature =
                18.0 + 6.0 * (t / 3600.0 * std::f64::consts::TAU + f64::from(field)).sin();
            let payload =
                format!("{{\"soil_moisture\":{moisture:.1},\"temperature\":{temperature:.1}}}");
            let topic = format!("demo/irrigation/field-{field}/telemetry");
            if let Err(e) = link.publish(&topic, payload, QoS::AtMostOnce, false) {
                tracing::warn!(error = %e, "demo publish failed");
            }
        }
    }
}

/// An administrator's access token for the demo's own use.
pub fn admin_token(p: &Platform, auth: &Arc<api::auth::Auth>) -> Option<String> {
    let admin = p.accounts.user("admin").ok()?;
    auth.start_user_session(&admin).ok().map(|t| t.token)
}

#[cfg(test)]
mod tests {
    use super::DASHBOARDS;
    use ib_core::dashboards::DashboardSpec;

    #[test]
    fn the_dashboards_are_valid_and_name_the_simulated_devices() {
        for text in DASHBOARDS {
            let spec: DashboardSpec = serde_json::from_str(text).unwrap();
            spec.check()
                .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
            for w in &spec.widgets {
                for d in w.device.iter().chain(&w.devices) {
                    let scenario = spec.name.to_lowercase();
                    assert!(
                        d.starts_with(&format!("{scenario}-00")),
                        "{}: {d}",
                        spec.name
                    );
                }
            }
        }
    }
}
