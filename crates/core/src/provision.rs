//! Device self-provisioning (ThingsBoard's protocol): a device presents its profile's provision
//! key and secret with a name and receives credentials for a new device of that profile.

use serde_json::{json, Value};

use crate::credentials::{self, NewCredential};
use crate::error::CoreError;
use crate::model::NewDevice;
use crate::payload;
use crate::Platform;

fn failure(status: &str, msg: impl Into<String>) -> Value {
    json!({ "status": status, "errorMsg": msg.into() })
}

impl Platform {
    /// Handles a provisioning request body; the answer always is a JSON status object.
    pub fn provision(&self, body: &[u8]) -> Value {
        let v = match payload::json(body) {
            Ok(v) => v,
            Err(e) => return failure("FAILURE", e.to_string()),
        };
        let field = |k: &str| v.get(k).and_then(Value::as_str);
        let (Some(key), Some(secret)) =
            (field("provisionDeviceKey"), field("provisionDeviceSecret"))
        else {
            return failure(
                "FAILURE",
                "provisionDeviceKey and provisionDeviceSecret are required",
            );
        };
        let profile = match self.registry.profile_by_provision_key(key) {
            Ok(Some((p, hash))) if credentials::sha256_hex(secret) == hash => p,
            Ok(_) => {
                tracing::info!(key, "provisioning refused: unknown key or wrong secret");
                return failure("NOT_FOUND", "unknown provision key or wrong secret");
            }
            Err(e) => return failure("FAILURE", e.to_string()),
        };
        let name = field("deviceName")
            .map(str::to_string)
            .unwrap_or_else(|| format!("provisioned-{}", credentials::generate_token()));
        let new = NewDevice {
            name: name.clone(),
            profile: Some(profile.id.clone()),
            ..NewDevice::default()
        };
        let device = match self.registry.insert_device(&profile.tenant, &new, None) {
            Ok(d) => d,
            Err(CoreError::AlreadyExists(_)) => {
                return failure("FAILURE", format!("device {name:?} already exists"))
            }
            Err(e) => return failure("FAILURE", e.to_string()),
        };
        let kind = field("credentialsType").unwrap_or("ACCESS_TOKEN");
        let result = match kind {
            "MQTT_BASIC" => {
                let cred = NewCredential::MqttBasic {
                    client_id: field("clientId").map(str::to_string),
                    username: field("username").map(str::to_string),
                    password: field("password").map(str::to_string),
                    grace_s: 0,
                };
                self.credentials.set(&device.id, cred).map(|_| {
                    json!({"clientId": field("clientId"), "userName": field("username"), "password": field("password")})
                })
            }
            _ => {
                let cred = NewCredential::AccessToken {
                    token: field("token").map(str::to_string),
                    grace_s: 0,
                };
                self.credentials.set(&device.id, cred).map(|t| json!(t))
            }
        };
        match result {
            Ok(value) => {
                tracing::info!(device = %device.id, name = %name, profile = %profile.name, "device provisioned");
                json!({"status": "SUCCESS", "credentialsType": if kind == "MQTT_BASIC" { "MQTT_BASIC" } else { "ACCESS_TOKEN" }, "credentialsValue": value})
            }
            Err(e) => {
                let _ = self.registry.delete_device(&device.id);
                failure("FAILURE", e.to_string())
            }
        }
    }
}
