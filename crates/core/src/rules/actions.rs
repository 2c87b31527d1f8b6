//! What rules do: one [`ActionHandler`] trait, handlers built by name (`alarm`, `rpc`,
//! `attribute`, `publish`, `webhook`, `log`; `email` and `sms` in notify.rs), and the runner
//! that takes the engine's jobs. An action that fails is recorded on its rule (`last_error`) and
//! in `action_failures` (the dead-letter record: the action, the device, the error, the
//! payload), and counted in `rule_action_failures_total`. Webhooks are retried with backoff
//! before that.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rusqlite::params;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::engine::{Job, Phase};
use super::model::Action;
use super::notify::{EmailAction, Notifications, SmsAction};
use crate::db::now_ms;
use crate::error::Result;
use crate::Platform;

/// A boxed future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs one kind of action.
pub trait ActionHandler: Send + Sync {
    /// Carries out `action` for `job`; `Err` is the reason it failed (recorded on the rule).
    fn run<'a>(
        &'a self,
        job: &'a Job,
        action: &'a Action,
    ) -> BoxFuture<'a, std::result::Result<(), String>>;
}

/// The handlers, by action type name.
pub struct ActionRunner {
    platform: Arc<Platform>,
    handlers: HashMap<&'static str, Arc<dyn ActionHandler>>,
}

/// The MQTT broker, for `publish` (set once the broker exists).
pub type BrokerCell = Arc<OnceLock<broker::Broker>>;

impl ActionRunner {
    /// The standard handlers; `notify` holds the senders built from `[notify]`.
    pub fn new(platform: Arc<Platform>, broker: BrokerCell, notify: Notifications) -> ActionRunner {
        let mut handlers: HashMap<&'static str, Arc<dyn ActionHandler>> = HashMap::new();
        handlers.insert("alarm", Arc::new(AlarmAction(platform.clone())));
        handlers.insert("rpc", Arc::new(RpcAction(platform.clone())));
        handlers.insert("attribute", Arc::new(AttributeAction(platform.clone())));
        handlers.insert("publish", Arc::new(PublishAction(broker)));
        handlers.insert("webhook", Arc::new(WebhookAction::default()));
        handlers.insert("log", Arc::new(LogAction));
        handlers.insert("email", Arc::new(EmailAction(notify.mailer)));
        handlers.insert("sms", Arc::new(SmsAction(notify.sms)));
        ActionRunner { platform, handlers }
    }

    /// Takes jobs until the channel closes. Alarm actions run here, one after the other, so
    /// that a rule's raise and clear reach the alarm in the order the engine decided them (as
    /// tasks, a clear could overtake the raise before it and leave the alarm wrong); every other
    /// action (webhook, email, RPC, ...) runs in its own task.
    pub async fn run(self: Arc<Self>, mut jobs: tokio::sync::mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = jobs.recv().await {
            metrics::histogram!("rule_job_wait_seconds").record(job.made.elapsed().as_secs_f64());
            let job = Arc::new(job);
            for (i, action) in job.rule.rule.spec.actions.iter().enumerate() {
                // Clearing undoes alarms; the other actions happen when the rule fires.
                let is_alarm = matches!(action, Action::Alarm { .. });
                if job.phase == Phase::Clear && !is_alarm {
                    continue;
                }
                if is_alarm {
                    self.run_one(&job, i).await;
                } else {
                    let (me, job) = (self.clone(), job.clone());
                    tokio::spawn(async move { me.run_one(&job, i).await });
                }
            }
        }
    }

    /// Runs action `i` of a job, timing it and recording a failure.
    async fn run_one(&self, job: &Job, i: usize) {
        let action = &job.rule.rule.spec.actions[i];
        let name = type_name(action);
        let Some(handler) = self.handlers.get(name) else {
            return;
        };
        let started = std::time::Instant::now();
        let result = handler.run(job, action).await;
        metrics::histogram!("rule_action_seconds", "action" => name)
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            self.failed(job, name, &e);
        }
    }

    fn failed(&self, job: &Job, action: &str, error: &str) {
        metrics::counter!("rule_action_failures_total", "action" => action.to_string())
            .increment(1);
        tracing::warn!(rule = %job.rule.rule.id, device = %job.device.id, action, error, "rule action failed");
        let rules = &self.platform.rules.store;
        let msg = format!("{action} for device {}: {error}", job.device.name);
        let _ = rules.record_error(&job.rule.rule.id, &msg);
        let r = self.platform.db.conn().execute(
            "INSERT INTO action_failures (rule_id, device_id, action, error, payload, ts_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                job.rule.rule.id,
                job.device.id,
                action,
                error,
                payload(job).to_string(),
                now_ms()
            ],
        );
        if let Err(e) = r {
            tracing::warn!(error = %e, "recording a failed action");
        }
    }
}

/// A failed action as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionFailure {
    pub id: i64,
    pub rule: String,
    pub device: String,
    pub action: String,
    pub error: String,
    pub payload: Value,
    pub ts: i64,
}

/// The dead-letter table.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS action_failures (
    id INTEGER PRIMARY KEY, rule_id TEXT NOT NULL REFERENCES rules(id) ON DELETE CASCADE,
    device_id TEXT NOT NULL, action TEXT NOT NULL, error TEXT NOT NULL, payload TEXT NOT NULL,
    ts_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS action_failures_rule ON action_failures (rule_id, id);";

/// A rule's failed actions, newest first.
pub fn failures(platform: &Platform, rule: &str, limit: usize) -> Result<Vec<ActionFailure>> {
    let conn = platform.db.conn();
    let mut st = conn.prepare(
        "SELECT id, rule_id, device_id, action, error, payload, ts_ms FROM action_failures
         WHERE rule_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = st.query_map(params![rule, limit.clamp(1, 1000) as i64], |r| {
        let payload: String = r.get(5)?;
        Ok(ActionFailure {
            id: r.get(0)?,
            rule: r.get(1)?,
            device: r.get(2)?,
            action: r.get(3)?,
            error: r.get(4)?,
            payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
            ts: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn type_name(a: &Action) -> &'static str {
    match a {
        Action::Alarm { .. } => "alarm",
        Action::Rpc { .. } => "rpc",
        Action::Attribute { .. } => "attribute",
        Action::Publish { .. } => "publish",
        Action::Webhook { .. } => "webhook",
        Action::Log { .. } => "log",
        Action::Email { .. } => "email",
        Action::Sms { .. } => "sms",
    }
}

/// The default JSON of a job (webhook body, publish payload).
pub fn payload(job: &Job) -> Value {
    json!({
        "rule": job.rule.rule.spec.name,
        "rule_id": job.rule.rule.id,
        "device": job.device.id,
        "device_name": job.device.name,
        "ts": job.ts,
        "phase": if job.phase == Phase::Fire { "fire" } else { "clear" },
        "values": job.values,
    })
}

/// Fills `{{device.name}}`, `{{device.id}}`, `{{rule.name}}`, `{{ts}}`, `{{phase}}` and
/// `{{KEY}}` (a value the condition saw) in a template; unknown names are left as they are.
pub fn render(template: &str, job: &Job) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = after[..end].trim();
        let value = match name {
            "device.name" => Some(job.device.name.clone()),
            "device.id" => Some(job.device.id.clone()),
            "rule.name" => Some(job.rule.rule.spec.name.clone()),
            "ts" => Some(job.ts.to_string()),
            "phase" => Some(
                if job.phase == Phase::Fire {
                    "fire"
                } else {
                    "clear"
                }
                .to_string(),
            ),
            key => job.values.get(key).map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
        };
        match value {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

struct AlarmAction(Arc<Platform>);

impl ActionHandler for AlarmAction {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        action: &'a Action,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let Action::Alarm { alarm, severity } = action else {
                return Err("not an alarm action".into());
            };
            let details =
                json!({"rule": job.rule.rule.spec.name, "values": job.values, "ts": job.ts});
            let alarms = &self.0.alarms;
            match job.phase {
                Phase::Fire => alarms
                    .raise(
                        &job.device.tenant,
                        &job.device.id,
                        alarm,
                        *severity,
                        details,
                    )
                    .map(|_| ()),
                Phase::Clear => alarms
                    .clear(&job.device.id, alarm, Some(details))
                    .map(|_| ()),
            }
            .map_err(|e| e.to_string())
        })
    }
}

/// The target device of an rpc/attribute action: `device` (resolved when the rule was saved)
/// or the job's device.
fn target<'a>(job: &'a Job, device: &'a Option<String>) -> std::result::Result<&'a str, String> {
    match device {
        None => Ok(&job.device.id),
        Some(name) => job
            .rule
            .devices
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| format!("target device {name:?} is unknown")),
    }
}

struct RpcAction(Arc<Platform>);

impl ActionHandler for RpcAction {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        action: &'a Action,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let Action::Rpc {
                method,
                params,
                device,
            } = action
            else {
                return Err("not an rpc action".into());
            };
            let to = target(job, device)?;
            // Persistent: the command waits for a device that is offline right now.
            let req = crate::rpc::RpcRequest {
                method: method.clone(),
                params: params.clone(),
                timeout_ms: None,
                oneway: false,
                persistent: true,
                ttl_ms: Some(3_600_000),
            };
            let r = self.0.rpc.call(to, req).await.map_err(|e| e.to_string())?;
            match r.status.as_str() {
                "FAILED" | "EXPIRED" | "TIMEOUT" => Err(format!("RPC {} ended {}", r.id, r.status)),
                _ => Ok(()),
            }
        })
    }
}

struct AttributeAction(Arc<Platform>);

impl ActionHandler for AttributeAction {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        action: &'a Action,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let Action::Attribute { values, device } = action else {
                return Err("not an attribute action".into());
            };
            let to = target(job, device)?;
            self.0
                .set_shared(to, values.clone())
                .map_err(|e| e.to_string())
        })
    }
}

struct PublishAction(BrokerCell);

impl ActionHandler for PublishAction {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        action: &'a Action,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let Action::Publish {
                topic,
                payload: template,
                qos,
                retain,
            } = action
            else {
                return Err("not a publish action".into());
            };
            let broker = self.0.get().ok_or("the MQTT broker is not running")?;
            let body = match template {
                Some(t) => render(t, job),
                None => payload(job).to_string(),
            };
            let qos = mqtt_codec::QoS::from_u8(*qos).ok_or("qos is 0, 1 or 2")?;
            let msg = broker::Message::new(
                Arc::from(job.device.tenant.as_str()),
                Arc::from(render(topic, job).as_str()),
                bytes::Bytes::from(body),
                qos,
                *retain,
            );
            broker.publish(msg);
            Ok(())
        })
    }
}

/// Webhook retries: attempts and the first backoff (doubling).
#[derive(Debug, Clone)]
pub struct WebhookAction {
    pub attempts: u32,
    pub backoff: Duration,
}

impl Default for WebhookAction {
    fn default() -> Self {
        WebhookAction {
            attempts: 4,
            backoff: Duration::from_millis(500),
        }
    }
}

impl ActionHandler for WebhookAction {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        action: &'a Action,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let Action::Webhook { url, body } = action else {
                return Err("not a webhook action".into());
            };
            let body = match body {
                Some(t) => render(t, job),
                None => payload(job).to_string(),
            };
            let mut wait = self.backoff;
            let mut last = String::new();
            for attempt in 1..=self.attempts.max(1) {
                let (url, body) = (url.clone(), body.clone());
                let sent = tokio::task::spawn_blocking(move || post(&url, &body)).await;
                match sent {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e)) => last = e,
                    Err(e) => last = e.to_string(),
                }
                if attempt < self.attempts {
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
            Err(format!("{} attempts: {last}", self.attempts.max(1)))
        })
    }
}

/// One POST; a non-2xx answer is a failure.
fn post(url: &str, body: &str) -> std::result::Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let res = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .map_err(|e| e.to_string())?;
    let status = res.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {}", status.as_u16()))
    }
}

struct LogAction;

impl ActionHandler for LogAction {
    fn run<'a>(
        &'a self,
        job: &'a Job,
        action: &'a Action,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async move {
            let Action::Log { message } = action else {
                return Err("not a log action".into());
            };
            let text = message
                .as_deref()
                .map(|m| render(m, job))
                .unwrap_or_else(|| payload(job).to_string());
            tracing::info!(rule = %job.rule.rule.spec.name, device = %job.device.name, "{text}");
            Ok(())
        })
    }
}
