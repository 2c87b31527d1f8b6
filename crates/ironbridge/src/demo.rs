//! The demo's simulated devices: a first fleet (soil sensors of a smart irrigation site)
//! publishing through an in-process link, so a newcomer sees live data with any MQTT client.
//! The full simulator (`ironbridge sim`, six use cases) comes with the dashboard issue.

use std::time::Duration;

use broker::{Broker, Identity};
use mqtt_codec::QoS;
use tokio::sync::watch;

/// Publishes simulated soil readings every second until shutdown.
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
