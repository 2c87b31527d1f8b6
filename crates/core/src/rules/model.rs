//! A rule as users write it: one shape in TOML (the edge's `[[rule]]` tables) and JSON (the
//! REST API), per DESIGN.md. Plain data plus parsing of durations; compiling the CEL is
//! `compile.rs`'s.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::error::{CoreError, Result};

/// What a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Every device of this profile (id or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// One device (id or name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Every device of the tenant.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tenant: bool,
}

/// What makes a rule look at a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Each telemetry message (per timestamp).
    #[default]
    Telemetry,
    /// Each client attribute update.
    Attributes,
    /// Connect, disconnect, inactivity (`active` is false).
    Status,
    /// At the times of `schedule` (cron, UTC), for every device in scope, with its latest values.
    Schedule,
}

pub use crate::alarms::Severity;

/// What a rule does when its condition starts holding (and, for alarms, stops).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Raises an alarm of this type on the device; clears it when the rule clears.
    Alarm { alarm: String, severity: Severity },
    /// Server-side RPC to the device (or `device`, another one of the tenant: sensor → actuator).
    Rpc {
        method: String,
        #[serde(default)]
        params: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
    /// Sets shared attributes (pushed to the device) on the device or `device`.
    Attribute {
        values: serde_json::Map<String, Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
    },
    /// Publishes to an MQTT topic in the tenant's topic space; `{{...}}` templates in the payload.
    Publish {
        topic: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
        #[serde(default)]
        qos: u8,
        #[serde(default)]
        retain: bool,
    },
    /// HTTP POST of a JSON body (`{{...}}` templates), retried with backoff.
    Webhook {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
    /// An email through `[notify.smtp]`; `{{...}}` templates in `subject` and `body` (defaults:
    /// "Rule NAME fired on DEVICE" and the values the condition saw).
    Email {
        to: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
    },
    /// A text message to an E.164 number (`+4917012345678`) through `[notify.sms]`; `{{...}}`
    /// templates in `text`.
    Sms {
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// A log line.
    Log {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

/// A rule (the body of `POST /api/v1/rules`, a `[[rule]]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub name: String,
    pub scope: Scope,
    #[serde(default)]
    pub trigger: Trigger,
    /// A cron expression (UTC; 5 fields, or 6 with seconds) for `trigger = "schedule"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// CEL over the device's values (incoming, then latest), `attributes`, `device`.
    pub condition: String,
    /// The condition must hold this long (`"30s"`, `"5m"`, `"1h"`) before the rule fires.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// Once fired, the rule clears when this holds (hysteresis); default: when the condition
    /// no longer holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<String>,
    pub actions: Vec<Action>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl RuleSpec {
    /// Checks what can be checked without the registry or CEL.
    pub fn check_shape(&self) -> Result<()> {
        let bad = |m: String| Err(CoreError::Invalid(m));
        if self.name.trim().is_empty() || self.name.len() > 255 {
            return bad("rule name must be 1 to 255 characters".into());
        }
        let scopes = [
            self.scope.profile.is_some(),
            self.scope.device.is_some(),
            self.scope.tenant,
        ];
        if scopes.iter().filter(|s| **s).count() != 1 {
            return bad(
                "scope is one of {profile = \"...\"}, {device = \"...\"}, {tenant = true}".into(),
            );
        }
        if self.actions.is_empty() {
            return bad("a rule needs at least one action".into());
        }
        if let Some(f) = &self.for_ {
            parse_duration(f)?;
        }
        match (self.trigger, &self.schedule) {
            (Trigger::Schedule, Some(cron)) => {
                Schedule::parse(cron)?;
            }
            (Trigger::Schedule, None) => {
                return bad("trigger \"schedule\" needs schedule = \"<cron expression>\"".into())
            }
            (_, Some(_)) => return bad("schedule is only for trigger \"schedule\"".into()),
            _ => {}
        }
        for a in &self.actions {
            match a {
                Action::Alarm { alarm, .. } if alarm.trim().is_empty() => {
                    return bad("an alarm action needs an alarm type".into())
                }
                Action::Rpc { method, .. } if method.is_empty() => {
                    return bad("an rpc action needs a method".into())
                }
                Action::Publish { topic, qos, .. } => {
                    if !mqtt_codec::topic::valid_topic_name(topic) {
                        return bad(format!("publish topic {topic:?} is not a valid topic name"));
                    }
                    if *qos > 2 {
                        return bad("publish qos is 0, 1 or 2".into());
                    }
                }
                Action::Webhook { url, .. }
                    if !(url.starts_with("http://") || url.starts_with("https://")) =>
                {
                    return bad(format!("webhook url {url:?} must be http:// or https://"));
                }
                Action::Attribute { values, .. } if values.is_empty() => {
                    return bad("an attribute action needs values".into())
                }
                Action::Email { to, .. } => {
                    if to.is_empty() || to.len() > super::notify::MAX_RECIPIENTS {
                        return bad(format!(
                            "an email action needs 1 to {} recipients in \"to\"",
                            super::notify::MAX_RECIPIENTS
                        ));
                    }
                    if let Some(a) = to.iter().find(|a| !super::notify::valid_email(a)) {
                        return bad(format!("email recipient {a:?} is not a mail address"));
                    }
                }
                Action::Sms { to, .. } if !super::notify::valid_e164(to) => {
                    return bad(format!(
                        "sms number {to:?} must be E.164: + and 7 to 15 digits (+4917012345678)"
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The `for` duration in milliseconds (0 without one).
    pub fn for_ms(&self) -> i64 {
        self.for_
            .as_deref()
            .and_then(|f| parse_duration(f).ok())
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A cron schedule (UTC).
#[derive(Debug, Clone)]
pub struct Schedule(croner::Cron);

impl Schedule {
    /// Parses a 5- or 6-field cron expression (or `@daily` and friends); one that never fires
    /// (`0 0 31 2 *`) is refused.
    pub fn parse(s: &str) -> Result<Schedule> {
        let cron = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(s.trim())
            .map_err(|e| CoreError::Invalid(format!("schedule {s:?}: {e}")))?;
        let sched = Schedule(cron);
        if sched.next_after(crate::db::now_ms()).is_none() {
            return Err(CoreError::Invalid(format!("schedule {s:?} never fires")));
        }
        Ok(sched)
    }

    /// The first time after `ms` (milliseconds since the epoch).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        use chrono::TimeZone;
        let now = chrono::Utc.timestamp_millis_opt(ms).single()?;
        self.0
            .find_next_occurrence(&now, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }
}

/// `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"2d"`, or combinations like `"1h30m"`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    humantime::parse_duration(s.trim()).map_err(|e| {
        CoreError::Invalid(format!(
            "duration {s:?}: {e} (e.g. \"30s\", \"5m\", \"1h\")"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IRRIGATION: &str = r#"
[[rule]]
name = "irrigate when dry and no rain"
scope = { profile = "soil-sensor" }
trigger = "telemetry"
condition = 'soil_moisture < 20.0 && external("weather").rain_mm < 1.0'
for = "5m"
clear = 'soil_moisture > 35.0'
actions = [
  { type = "rpc", method = "setPump", params = { on = true } },
  { type = "alarm", alarm = "Dry soil", severity = "MAJOR" },
  { type = "webhook", url = "http://127.0.0.1:9000/hook" },
]
"#;

    #[derive(Deserialize)]
    struct File {
        rule: Vec<RuleSpec>,
    }

    #[test]
    fn the_design_example_parses_from_toml_and_round_trips_as_json() {
        let f: File = toml::from_str(IRRIGATION).unwrap();
        let r = &f.rule[0];
        r.check_shape().unwrap();
        assert_eq!(r.for_ms(), 300_000);
        assert_eq!(r.scope.profile.as_deref(), Some("soil-sensor"));
        assert!(matches!(
            r.actions[1],
            Action::Alarm {
                severity: Severity::Major,
                ..
            }
        ));
        let json = serde_json::to_value(r).unwrap();
        assert_eq!(json["for"], "5m");
        let back: RuleSpec = serde_json::from_value(json).unwrap();
        assert_eq!(&back, r);
    }

    #[test]
    fn shape_errors_are_specific() {
        let f: File = toml::from_str(IRRIGATION).unwrap();
        let mut r = f.rule[0].clone();
        r.scope.tenant = true;
        assert!(r.check_shape().unwrap_err().to_string().contains("scope"));
        let mut r = f.rule[0].clone();
        r.for_ = Some("soon".into());
        assert!(r
            .check_shape()
            .unwrap_err()
            .to_string()
            .contains("duration"));
        let mut r = f.rule[0].clone();
        r.actions.clear();
        assert!(r.check_shape().is_err());
    }
}
