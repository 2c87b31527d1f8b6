//! The registry's types: tenants, customers, device profiles, devices. Plain data, serialisable
//! as the REST API shows them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A tenant: a separate world of devices, users and topics.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created: i64,
    /// Telemetry older than this many days is dropped (profiles may say otherwise); `None`:
    /// kept until deleted.
    pub retention_days: Option<u32>,
}

/// A customer: a group of a tenant's devices.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Customer {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub created: i64,
}

/// What a device profile says about its devices.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(default)]
pub struct ProfileSpec {
    /// MQTT topic filters (in the tenant's space) a device may publish to besides the device API.
    pub allow_publish: Vec<String>,
    /// MQTT topic filters a device may subscribe to besides the device API.
    pub allow_subscribe: Vec<String>,
    /// HTTP/CoAP devices count as offline after this long without traffic.
    pub inactivity_timeout_ms: u64,
    /// Telemetry of its devices older than this many days is dropped (whole partitions);
    /// `None`: the tenant's retention.
    pub retention_days: Option<u32>,
    /// Declared telemetry keys and their types: a message with a value of another type for one
    /// of them is refused whole.
    pub telemetry_types: std::collections::BTreeMap<String, ValueType>,
}

/// A telemetry value's declared type.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// Any number.
    Number,
    /// A whole number.
    Integer,
    Boolean,
    String,
    /// A JSON object or array.
    Json,
}

impl ValueType {
    /// Whether `v` is of this type.
    pub fn admits(self, v: &serde_json::Value) -> bool {
        match self {
            ValueType::Number => v.is_number(),
            ValueType::Integer => v.is_i64() || v.is_u64(),
            ValueType::Boolean => v.is_boolean(),
            ValueType::String => v.is_string(),
            ValueType::Json => v.is_object() || v.is_array(),
        }
    }
}

impl Default for ProfileSpec {
    fn default() -> Self {
        ProfileSpec {
            allow_publish: Vec::new(),
            allow_subscribe: Vec::new(),
            inactivity_timeout_ms: 600_000,
            retention_days: None,
            telemetry_types: Default::default(),
        }
    }
}

/// A device profile.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Profile {
    pub id: String,
    pub tenant: String,
    pub name: String,
    #[serde(flatten)]
    pub spec: ProfileSpec,
    pub provision_key: Option<String>,
    pub created: i64,
}

/// A new profile's fields.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default)]
pub struct NewProfile {
    pub name: String,
    #[serde(flatten)]
    pub spec: ProfileSpec,
    pub provision_key: Option<String>,
    pub provision_secret: Option<String>,
}

/// A device.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Device {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub label: Option<String>,
    /// The profile's name.
    pub profile: String,
    #[serde(skip)]
    pub profile_id: String,
    pub customer: Option<String>,
    pub gateway: bool,
    /// The gateway that reported this device first (sub-devices).
    pub parent_gateway: Option<String>,
    pub iccid: Option<String>,
    pub imsi: Option<String>,
    pub msisdn: Option<String>,
    pub created: i64,
}

/// A new device's fields.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NewDevice {
    pub name: String,
    pub label: Option<String>,
    /// Profile id or name; `default` when absent.
    pub profile: Option<String>,
    /// Customer id or name.
    pub customer: Option<String>,
    pub gateway: bool,
    pub iccid: Option<String>,
    pub imsi: Option<String>,
    pub msisdn: Option<String>,
    /// Tenant id or name (the REST/CLI layer resolves it; ignored here).
    pub tenant: Option<String>,
}

/// Changes to a device (absent fields stay as they are).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceUpdate {
    /// A new label (`null` removes it).
    #[serde(deserialize_with = "some_option")]
    pub label: Option<Option<String>>,
    /// Customer id or name to assign the device to (`null` unassigns it).
    #[serde(deserialize_with = "some_option")]
    pub customer: Option<Option<String>>,
    /// Profile id or name.
    pub profile: Option<String>,
}

/// Tells a field given as `null` (`Some(None)`) from an absent one (`None`).
fn some_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// How to filter and sort a device list.
#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    /// Customer id.
    pub customer: Option<String>,
    /// Profile id or name.
    pub profile: Option<String>,
    /// Case-insensitive text in the name or label.
    pub text: Option<String>,
    pub gateway: Option<bool>,
    pub sort: DeviceSort,
    pub desc: bool,
    pub limit: usize,
    pub cursor: Option<String>,
}

/// A device list's order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceSort {
    #[default]
    Name,
    Created,
}
