//! Evaluation: device events from the bus, per timestamp, through every matching rule's state
//! machine. A rule fires when its condition has held (on every message) for `for`, measured by
//! the messages' timestamps, and clears when `clear` holds (or, without one, when the condition
//! no longer does). Firing and clearing become [`Job`]s for the action runner. State per
//! (rule, device) is kept in memory and written through to `rule_state` when it changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::compile::{device_value, to_cel, EvalBase, EvalVars, History};
use super::store::DeviceRuleState;
use super::{CompiledRule, Target};
use crate::bus::{Event, EventKind};
use crate::error::Result;
use crate::model::Device;
use crate::rules::model::Trigger;
use crate::Platform;

/// Fired or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Fire,
    Clear,
}

/// Work for the action runner.
#[derive(Clone)]
pub struct Job {
    pub rule: Arc<CompiledRule>,
    pub device: Arc<Device>,
    pub ts: i64,
    /// The values the condition saw.
    pub values: Map<String, Json>,
    pub phase: Phase,
}

/// Telemetry history from the store, for the window functions.
pub struct StoreHistory(pub Arc<dyn store::TelemetryStore>);

impl History for StoreHistory {
    fn window(&self, device: &str, key: &str, from: i64, to: i64) -> Result<Vec<(i64, f64)>> {
        let series = self
            .0
            .range(device, &[key.to_string()], from, to, 100_000, false)
            .map_err(|e| crate::CoreError::Store(e.to_string()))?;
        Ok(series
            .into_iter()
            .flat_map(|(_, s)| s)
            .filter_map(|s| s.value.as_f64().map(|v| (s.ts, v)))
            .collect())
    }

    fn previous(&self, device: &str, key: &str, before: i64) -> Result<Option<f64>> {
        let series = self
            .0
            .range(device, &[key.to_string()], i64::MIN, before - 1, 1, true)
            .map_err(|e| crate::CoreError::Store(e.to_string()))?;
        Ok(series
            .into_iter()
            .flat_map(|(_, s)| s)
            .find_map(|s| s.value.as_f64()))
    }
}

/// The evaluator (owned by one thread).
pub struct RuleEngine {
    platform: Arc<Platform>,
    history: Arc<dyn History>,
    states: HashMap<(String, String), DeviceRuleState>,
    loaded: std::collections::HashSet<String>,
    /// Next due time of each scheduled rule.
    due: HashMap<String, i64>,
}

impl RuleEngine {
    /// An engine over the platform's rules and telemetry.
    pub fn new(platform: Arc<Platform>) -> RuleEngine {
        let history = Arc::new(StoreHistory(platform.telemetry.clone()));
        RuleEngine {
            platform,
            history,
            states: HashMap::new(),
            loaded: Default::default(),
            due: HashMap::new(),
        }
    }

    /// Evaluates one event; returns the jobs it makes.
    pub fn on_event(&mut self, event: &Event) -> Vec<Job> {
        let trigger = match &event.kind {
            EventKind::Telemetry(_) => Trigger::Telemetry,
            EventKind::Attributes(_) => Trigger::Attributes,
            EventKind::Connected { .. } | EventKind::Disconnected { .. } => Trigger::Status,
            _ => return Vec::new(),
        };
        let rules: Vec<_> = self
            .platform
            .rules
            .of_tenant(&event.tenant)
            .into_iter()
            .filter(|r| r.rule.spec.trigger == trigger)
            .collect();
        if rules.is_empty() {
            return Vec::new();
        }
        let device = match self.platform.registry.device(&event.device) {
            Ok(d) => Arc::new(d),
            Err(_) => return Vec::new(), // deleted meanwhile
        };
        let active = match &event.kind {
            EventKind::Connected { .. } => Some(true),
            EventKind::Disconnected { .. } => Some(false),
            _ => None,
        };
        let mut groups: BTreeMap<i64, Vec<(&str, &Json)>> = BTreeMap::new();
        match &event.kind {
            EventKind::Telemetry(points) => {
                for p in points {
                    groups.entry(p.ts).or_default().push((&p.key, &p.value));
                }
            }
            EventKind::Attributes(map) => {
                groups
                    .entry(event.ts)
                    .or_default()
                    .extend(map.iter().map(|(k, v)| (k.as_str(), v)));
            }
            _ => {
                groups.entry(event.ts).or_default();
            }
        }
        self.evaluate(&rules, device, active, groups)
    }

    /// Runs the scheduled rules that are due at `now` over every device of their scope (with
    /// the devices' latest values); returns their jobs.
    pub fn tick(&mut self, now: i64) -> Vec<Job> {
        let mut jobs = Vec::new();
        for rule in self.platform.rules.scheduled() {
            let id = rule.rule.id.clone();
            let Some(next) = self.next_due(&rule, now) else {
                continue;
            };
            if now < next {
                continue;
            }
            self.due.remove(&id);
            let q = crate::model::DeviceQuery {
                profile: match &rule.target {
                    Target::Profile(p) => Some(p.clone()),
                    _ => None,
                },
                limit: 1000,
                ..Default::default()
            };
            let devices = match &rule.target {
                Target::Device(d) => self.platform.registry.device(d).map(|d| vec![d]),
                _ => self
                    .platform
                    .registry
                    .find_devices(&rule.rule.tenant, &q)
                    .map(|(page, _)| page),
            };
            for d in devices.unwrap_or_default() {
                let mut groups = BTreeMap::new();
                groups.insert(now, Vec::new());
                jobs.extend(self.evaluate(std::slice::from_ref(&rule), Arc::new(d), None, groups));
            }
            self.next_due(&rule, now);
        }
        jobs
    }

    /// When a scheduled rule is due next (computed once per occurrence).
    fn next_due(&mut self, rule: &CompiledRule, now: i64) -> Option<i64> {
        if let Some(t) = self.due.get(&rule.rule.id) {
            return Some(*t);
        }
        let next = rule.schedule.as_ref()?.next_after(now)?;
        self.due.insert(rule.rule.id.clone(), next);
        Some(next)
    }

    /// Evaluates `rules` (already matched to the device) for each timestamp of `groups`.
    fn evaluate(
        &mut self,
        rules: &[Arc<CompiledRule>],
        device: Arc<Device>,
        active: Option<bool>,
        groups: BTreeMap<i64, Vec<(&str, &Json)>>,
    ) -> Vec<Job> {
        let rules: Vec<_> = rules
            .iter()
            .filter(|r| match &r.target {
                Target::Tenant => true,
                Target::Profile(p) => *p == device.profile_id,
                Target::Device(d) => *d == device.id,
            })
            .cloned()
            .collect();
        if rules.is_empty() {
            return Vec::new();
        }
        // The device's latest values, overlaid by each timestamp's incoming ones.
        let mut values: BTreeMap<String, Json> = self
            .platform
            .telemetry
            .latest(&device.id, None)
            .map(|l| l.into_iter().map(|(k, s)| (k, s.value.to_json())).collect())
            .unwrap_or_default();
        // Attributes are read only when a rule uses them.
        let attributes = if rules.iter().any(|r| r.uses_attributes) {
            self.attributes(&device.id)
        } else {
            to_cel(&Json::Object(Map::new()))
        };
        let active = active.unwrap_or_else(|| self.platform.state.active(&device.id));
        let base = EvalBase {
            tenant: Arc::from(device.tenant.as_str()),
            device: Arc::from(device.id.as_str()),
            attributes,
            device_var: device_value(&device.id, &device.name, &device.profile, active),
            history: self.history.clone(),
            lookups: self.platform.rules.lookups.clone(),
        };
        let mut jobs = Vec::new();
        for (ts, incoming) in groups {
            for (k, v) in incoming {
                values.insert(k.to_string(), v.clone());
            }
            let vars = base.at(ts, &values);
            for rule in &rules {
                if let Some(phase) = self.step(rule, &device.id, ts, &vars) {
                    jobs.push(Job {
                        rule: rule.clone(),
                        device: device.clone(),
                        ts,
                        values: values.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                        phase,
                    });
                }
            }
        }
        jobs
    }

    /// One rule, one device, one timestamp.
    fn step(
        &mut self,
        rule: &CompiledRule,
        device: &str,
        ts: i64,
        vars: &EvalVars,
    ) -> Option<Phase> {
        let id = &rule.rule.id;
        if self.loaded.insert(id.clone()) {
            if let Ok(states) = self.platform.rules.store.states(id) {
                for (d, s) in states {
                    self.states.insert((id.clone(), d), s);
                }
            }
        }
        let key = (id.clone(), device.to_string());
        let before = self.states.get(&key).copied().unwrap_or_default();
        let cel = &self.platform.rules.cel;
        let eval = |p: &cel::Program| match cel.eval(p, vars) {
            Ok(b) => Some(b),
            Err(e) => {
                metrics::counter!("rule_errors_total").increment(1);
                let msg = format!("device {device}: {e}");
                if let Err(e) = self.platform.rules.store.record_error(id, &msg) {
                    tracing::warn!(error = %e, "recording a rule error");
                }
                None
            }
        };
        let (st, phase) = transition(rule, before, ts, eval)?;
        if st != before {
            self.states.insert(key, st);
            if let Err(e) = self.platform.rules.store.set_state(id, device, st) {
                tracing::warn!(error = %e, rule = %id, "storing rule state");
            }
        }
        if phase == Some(Phase::Fire) {
            metrics::counter!("rule_fired_total").increment(1);
            let _ = self.platform.rules.store.record_fired(id, ts);
        }
        phase
    }

    fn attributes(&self, device: &str) -> cel::Value {
        let mut all = Map::new();
        for scope in crate::attributes::Scope::ALL {
            if let Ok(m) = self.platform.attributes.values(device, scope, None) {
                all.extend(m);
            }
        }
        to_cel(&Json::Object(all))
    }
}

/// The state machine of one rule for one device at one time: `eval` evaluates a program
/// (`None`: it failed, and nothing changes). Returns the new state and what happened.
pub fn transition(
    rule: &CompiledRule,
    before: DeviceRuleState,
    ts: i64,
    mut eval: impl FnMut(&cel::Program) -> Option<bool>,
) -> Option<(DeviceRuleState, Option<Phase>)> {
    let mut st = before;
    let mut phase = None;
    if !st.active {
        if eval(&rule.condition)? {
            let since = st.pending_since.unwrap_or(ts);
            if ts - since >= rule.for_ms {
                st = DeviceRuleState {
                    active: true,
                    pending_since: None,
                };
                phase = Some(Phase::Fire);
            } else {
                st.pending_since = Some(since);
            }
        } else {
            st.pending_since = None;
        }
    } else {
        let clears = match &rule.clear {
            Some(c) => eval(c)?,
            None => !eval(&rule.condition)?,
        };
        if clears {
            st = DeviceRuleState::default();
            phase = Some(Phase::Clear);
        }
    }
    Some((st, phase))
}

/// Runs the engine on its own thread until the bus closes or `stop` changes; jobs go to `jobs`.
pub fn spawn(
    platform: Arc<Platform>,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::thread::JoinHandle<()> {
    let mut rx = platform.bus.subscribe();
    let (tx, events) = std::sync::mpsc::sync_channel::<Arc<Event>>(65_536);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(ev) => {
                        // Never block a runtime worker: a full queue drops, counted and logged.
                        match tx.try_send(ev) {
                            Ok(()) => {}
                            Err(std::sync::mpsc::TrySendError::Full(_)) => {
                                metrics::counter!("rule_events_dropped_total").increment(1);
                            }
                            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        metrics::counter!("rule_events_lagged_total").increment(n);
                        tracing::warn!(events = n, "the rule engine fell behind the bus");
                    }
                    Err(_) => return,
                },
                _ = stop.changed() => return,
            }
        }
    });
    std::thread::Builder::new()
        .name("rules".into())
        .spawn(move || {
            let mut engine = RuleEngine::new(platform.clone());
            let mut last_tick = 0;
            loop {
                let got = events.recv_timeout(std::time::Duration::from_millis(250));
                let mut out = match got {
                    Ok(ev) if platform.rules.any() => engine.on_event(&ev),
                    Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Vec::new(),
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                };
                let now = crate::db::now_ms();
                if now - last_tick >= 250 {
                    last_tick = now;
                    out.extend(engine.tick(now));
                }
                for job in out {
                    if jobs.send(job).is_err() {
                        return;
                    }
                }
            }
        })
        .expect("spawning the rules thread")
}
