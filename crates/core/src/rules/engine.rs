//! Evaluation: device events from the bus, per timestamp, through every matching rule's state
//! machine. A rule fires when its condition has held (on every message) for `for`, measured by
//! the messages' timestamps, and clears when `clear` holds (or, without one, when the condition
//! no longer does). Firing and clearing become [`Job`]s for the action runner. State per
//! (rule, device) is kept in memory and written through to `rule_state` when it changes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value as Json};

use super::compile::{
    cel_val, device_value, merged_json, numbers, to_cel, CelVal, DeviceValues, EvalInput, EvalVars,
    History,
};
use super::index::RuleIndex;
use super::store::{DeviceRuleState, StateWrite};
use super::{CompiledRule, Target};
use crate::bus::{Event, EventKind};
use crate::db::Versioned;
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
    /// When the engine made it (the action runner measures its queueing).
    pub made: std::time::Instant,
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

/// What the engine keeps of a device between events, so that an event reads no database.
struct DeviceCache {
    device: Arc<Device>,
    /// The latest value of each key (by timestamp), kept up to date from telemetry events.
    latest: DeviceValues,
    /// The `device` variable and the `active` it was made with.
    var: (bool, CelVal),
    /// The merged attributes and the attribute version they were read at.
    attributes: Option<(u64, CelVal)>,
}

/// Devices kept at most (cleared when exceeded: a cache, not a registry).
const MAX_CACHED_DEVICES: usize = 200_000;

/// The evaluator (owned by one thread).
pub struct RuleEngine {
    platform: Arc<Platform>,
    history: Arc<dyn History>,
    /// State per (rule install key, device).
    states: HashMap<(u64, Arc<str>), DeviceRuleState>,
    /// Rule install keys whose stored states are loaded.
    loaded: HashSet<u64>,
    /// The index generation `states` was last pruned at.
    pruned_at: u64,
    devices: HashMap<Arc<str>, DeviceCache>,
    /// The registry version the device cache is valid for.
    registry_version: u64,
    /// The number of events lost before reaching the engine that the cache has seen.
    lost_seen: u64,
    /// Writes not yet handed over (see [`RuleEngine::take_writes`]).
    writes: Vec<StateWrite>,
    /// Next due time of each scheduled rule (by install key).
    due: HashMap<u64, i64>,
    no_attributes: CelVal,
}

/// Events lost between the bus and the engine (lagged or dropped): the engine's cached latest
/// values may have missed some, so it reloads them.
pub static LOST_EVENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl RuleEngine {
    /// An engine over the platform's rules and telemetry.
    pub fn new(platform: Arc<Platform>) -> RuleEngine {
        let history = Arc::new(StoreHistory(platform.telemetry.clone()));
        RuleEngine {
            platform,
            history,
            states: HashMap::new(),
            loaded: HashSet::new(),
            pruned_at: 0,
            devices: HashMap::new(),
            registry_version: 0,
            lost_seen: 0,
            writes: Vec::new(),
            due: HashMap::new(),
            no_attributes: cel_val(to_cel(&Json::Object(Map::new()))),
        }
    }

    /// Evaluates one event; returns the jobs it makes. State changes are queued: hand them to
    /// the store with [`RuleEngine::take_writes`] or [`RuleEngine::flush`].
    pub fn on_event(&mut self, event: &Event) -> Vec<Job> {
        let trigger = match &event.kind {
            EventKind::Telemetry(_) => Trigger::Telemetry,
            EventKind::Attributes(_) => Trigger::Attributes,
            EventKind::Connected { .. } | EventKind::Disconnected { .. } => Trigger::Status,
            _ => return Vec::new(),
        };
        self.check_caches();
        let index = self.platform.rules.index();
        self.prune(&index);
        if !index.has(&event.tenant, trigger) {
            // Still keep a cached device's latest values current.
            if let (EventKind::Telemetry(points), Some(c)) =
                (&event.kind, self.devices.get_mut(&*event.device))
            {
                for p in points {
                    c.latest.set_newer(&p.key, p.ts, &p.value);
                }
            }
            return Vec::new();
        }
        let Some(device) = self.cached(&event.device) else {
            return Vec::new(); // deleted meanwhile
        };
        let rules: Vec<Arc<CompiledRule>> = index
            .matching(&event.tenant, trigger, &device.profile_id, &device.id)
            .cloned()
            .collect();
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
        self.evaluate(&rules, &event.device, active, groups)
    }

    /// Runs the scheduled rules that are due at `now` over every device of their scope (with
    /// the devices' latest values); returns their jobs.
    pub fn tick(&mut self, now: i64) -> Vec<Job> {
        self.check_caches();
        let mut jobs = Vec::new();
        let index = self.platform.rules.index();
        self.prune(&index);
        for rule in index.scheduled() {
            let Some(next) = self.next_due(rule, now) else {
                continue;
            };
            if now < next {
                continue;
            }
            self.due.remove(&rule.key);
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
                let id: Arc<str> = Arc::from(d.id.as_str());
                if self.cached(&id).is_none() {
                    continue;
                }
                let mut groups = BTreeMap::new();
                groups.insert(now, Vec::new());
                jobs.extend(self.evaluate(std::slice::from_ref(rule), &id, None, groups));
            }
            self.next_due(rule, now);
        }
        jobs
    }

    /// The queued state writes, for the store ([`super::store::RuleStore::apply`]).
    pub fn take_writes(&mut self) -> Vec<StateWrite> {
        std::mem::take(&mut self.writes)
    }

    /// Applies the queued state writes now.
    pub fn flush(&mut self) {
        let writes = self.take_writes();
        if !writes.is_empty() {
            if let Err(e) = self.platform.rules.store.apply(&writes) {
                tracing::warn!(error = %e, "storing rule state");
            }
        }
    }

    /// Drops cached devices when the registry changed or events were lost.
    fn check_caches(&mut self) {
        let version = self.platform.db.version(Versioned::Registry);
        let lost = LOST_EVENTS.load(std::sync::atomic::Ordering::Relaxed);
        if version != self.registry_version
            || lost != self.lost_seen
            || self.devices.len() > MAX_CACHED_DEVICES
        {
            self.devices.clear();
            self.registry_version = version;
            self.lost_seen = lost;
        }
    }

    /// Forgets the state of rules that were changed, disabled or deleted.
    fn prune(&mut self, index: &RuleIndex) {
        if index.generation == self.pruned_at {
            return;
        }
        self.pruned_at = index.generation;
        self.states.retain(|(key, _), _| index.current(*key));
        self.loaded.retain(|key| index.current(*key));
        self.due.retain(|key, _| index.current(*key));
    }

    /// The device, its latest values loaded once from the store.
    fn cached(&mut self, id: &Arc<str>) -> Option<&Device> {
        if !self.devices.contains_key(id) {
            let device = self.platform.registry.device(id).ok()?;
            let mut latest = DeviceValues::default();
            if let Ok(l) = self.platform.telemetry.latest(id, None) {
                for (k, s) in l {
                    latest.set(&k, s.ts, &s.value.to_json());
                }
            }
            let var = device_value(&device.id, &device.name, &device.profile, false);
            self.devices.insert(
                id.clone(),
                DeviceCache {
                    device: Arc::new(device),
                    latest,
                    var: (false, cel_val(var)),
                    attributes: None,
                },
            );
        }
        self.devices.get(id).map(|c| &*c.device)
    }

    /// When a scheduled rule is due next (computed once per occurrence).
    fn next_due(&mut self, rule: &CompiledRule, now: i64) -> Option<i64> {
        if let Some(t) = self.due.get(&rule.key) {
            return Some(*t);
        }
        let next = rule.schedule.as_ref()?.next_after(now)?;
        self.due.insert(rule.key, next);
        Some(next)
    }

    /// Evaluates `rules` (already matched to the cached device) for each timestamp of `groups`.
    fn evaluate(
        &mut self,
        rules: &[Arc<CompiledRule>],
        device_id: &Arc<str>,
        active: Option<bool>,
        groups: BTreeMap<i64, Vec<(&str, &Json)>>,
    ) -> Vec<Job> {
        if rules.is_empty() {
            return Vec::new();
        }
        for r in rules {
            self.load_states(r);
        }
        let active = active.unwrap_or_else(|| self.platform.state.active(device_id));
        let attributes_version = self.platform.db.version(Versioned::Attributes);
        let wants_attributes = rules.iter().any(|r| r.uses_attributes);
        let wants_numbers = rules.iter().any(|r| r.uses_functions);
        let platform = self.platform.clone();
        let Some(cache) = self.devices.get_mut(device_id) else {
            return Vec::new();
        };
        let device = cache.device.clone();
        if cache.var.0 != active {
            let v = device_value(&device.id, &device.name, &device.profile, active);
            cache.var = (active, cel_val(v));
        }
        if wants_attributes
            && cache
                .attributes
                .as_ref()
                .is_none_or(|(v, _)| *v != attributes_version)
        {
            let merged = platform.attributes.merged(&device.id).unwrap_or_default();
            cache.attributes = Some((attributes_version, cel_val(to_cel(&Json::Object(merged)))));
        }
        let mut jobs = Vec::new();
        let mut older = DeviceValues::default();
        for (ts, incoming) in groups {
            // Values at least as new as the latest become the latest; older ones (a replay)
            // are seen by this timestamp's evaluation only.
            older.clear();
            for (k, v) in &incoming {
                if !cache.latest.set_newer(k, ts, v) {
                    older.set(k, ts, v);
                }
            }
            let layers = [&older, &cache.latest];
            let input = EvalInput {
                tenant: Arc::from(device.tenant.as_str()),
                device: device_id.clone(),
                ts,
                values: Arc::new(if wants_numbers {
                    numbers(layers)
                } else {
                    HashMap::new()
                }),
                history: self.history.clone(),
                lookups: platform.rules.lookups.clone(),
            };
            let attributes = match (&cache.attributes, wants_attributes) {
                (Some((_, a)), true) => a.as_ref(),
                _ => self.no_attributes.as_ref(),
            };
            let vars = EvalVars::new(layers, attributes, cache.var.1.as_ref(), input);
            for rule in rules {
                let key = (rule.key, device_id.clone());
                let before = self.states.get(&key).copied().unwrap_or_default();
                let Some((st, phase)) = transition(rule, before, ts, |p| {
                    match platform.rules.cel.eval(p, &vars) {
                        Ok(b) => Some(b),
                        Err(e) => {
                            metrics::counter!("rule_errors_total").increment(1);
                            self.writes.push(StateWrite::Error {
                                rule: rule.id.clone(),
                                message: format!("device {}: {e}", device.name),
                            });
                            None
                        }
                    }
                }) else {
                    continue;
                };
                if st != before {
                    self.states.insert(key, st);
                    self.writes.push(StateWrite::State {
                        rule: rule.id.clone(),
                        version: rule.rule.updated,
                        device: device_id.clone(),
                        state: st,
                    });
                }
                if let Some(phase) = phase {
                    if phase == Phase::Fire {
                        metrics::counter!("rule_fired_total").increment(1);
                        self.writes.push(StateWrite::Fired {
                            rule: rule.id.clone(),
                            ts,
                        });
                    }
                    jobs.push(Job {
                        rule: rule.clone(),
                        device: device.clone(),
                        ts,
                        values: merged_json(layers),
                        phase,
                        made: std::time::Instant::now(),
                    });
                }
            }
        }
        jobs
    }

    /// Loads a rule's stored per-device states the first time it is evaluated.
    fn load_states(&mut self, rule: &CompiledRule) {
        if !self.loaded.insert(rule.key) || rule.key == 0 {
            return;
        }
        if let Ok(states) = self.platform.rules.store.states(&rule.id) {
            for (d, s) in states {
                self.states.insert((rule.key, Arc::from(d.as_str())), s);
            }
        }
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

/// Events are published when their points are handed to the store, before they are committed:
/// when a rule reads the history (window functions), wait until the batch's devices' points are
/// readable, so that a window includes every point before the event. One barrier per device per
/// batch (a group commit's wait), none when no rule reads the history.
fn wait_for_history(platform: &Platform, batch: &[Arc<Event>]) {
    if !platform.rules.index().reads_history {
        return;
    }
    let mut seen = HashSet::new();
    let barriers: Vec<_> = batch
        .iter()
        .filter(|ev| matches!(ev.kind, EventKind::Telemetry(_)))
        .filter(|ev| seen.insert(ev.device.clone()))
        .map(|ev| platform.telemetry.barrier(&ev.device))
        .collect();
    for b in barriers {
        if let Err(e) = b.wait() {
            tracing::debug!(error = %e, "telemetry barrier");
        }
    }
}

/// Runs the engine on its own thread until the bus closes or `stop` changes; jobs go to `jobs`.
/// State writes go to a second thread that commits whatever has queued in one transaction, so
/// the engine never waits for the database (or a WAL checkpoint) on its hot path.
pub fn spawn(
    platform: Arc<Platform>,
    jobs: tokio::sync::mpsc::UnboundedSender<Job>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::thread::JoinHandle<()> {
    use std::sync::atomic::Ordering;
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
                                LOST_EVENTS.fetch_add(1, Ordering::Relaxed);
                                metrics::counter!("rule_events_dropped_total").increment(1);
                            }
                            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return,
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        LOST_EVENTS.fetch_add(n, Ordering::Relaxed);
                        metrics::counter!("rule_events_lagged_total").increment(n);
                        tracing::warn!(events = n, "the rule engine fell behind the bus");
                    }
                    Err(_) => return,
                },
                _ = stop.changed() => return,
            }
        }
    });
    let (writes_tx, writes_rx) = std::sync::mpsc::channel::<Vec<StateWrite>>();
    let writer_platform = platform.clone();
    std::thread::Builder::new()
        .name("rule-state".into())
        .spawn(move || {
            while let Ok(mut batch) = writes_rx.recv() {
                while let Ok(more) = writes_rx.try_recv() {
                    batch.extend(more);
                }
                if let Err(e) = writer_platform.rules.store.apply(&batch) {
                    tracing::warn!(error = %e, writes = batch.len(), "storing rule state");
                }
            }
        })
        .expect("spawning the rule state writer");
    std::thread::Builder::new()
        .name("rules".into())
        .spawn(move || {
            let mut engine = RuleEngine::new(platform.clone());
            let mut last_tick = 0;
            loop {
                let mut out = Vec::new();
                match events.recv_timeout(std::time::Duration::from_millis(250)) {
                    Ok(ev) => {
                        // Everything already queued, up to a bound, before writes go out.
                        let mut batch = vec![ev];
                        while batch.len() < 1024 {
                            match events.try_recv() {
                                Ok(ev) => batch.push(ev),
                                Err(_) => break,
                            }
                        }
                        if !platform.rules.any() {
                            batch.clear();
                        }
                        wait_for_history(&platform, &batch);
                        for ev in &batch {
                            let delay = (crate::db::now_ms() - ev.ts).max(0) as f64 / 1e3;
                            metrics::histogram!("rule_event_delay_seconds").record(delay);
                            let started = std::time::Instant::now();
                            out.extend(engine.on_event(ev));
                            metrics::histogram!("rule_event_seconds")
                                .record(started.elapsed().as_secs_f64());
                        }
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                }
                let now = crate::db::now_ms();
                if now - last_tick >= 250 {
                    last_tick = now;
                    out.extend(engine.tick(now));
                }
                let closed = out.into_iter().any(|job| jobs.send(job).is_err());
                let writes = engine.take_writes();
                if !writes.is_empty() && writes_tx.send(writes).is_err() {
                    break;
                }
                if closed {
                    break;
                }
            }
            let _ = writes_tx.send(engine.take_writes());
        })
        .expect("spawning the rules thread")
}
