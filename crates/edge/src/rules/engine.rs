//! The local rule engine: each reading updates its device's latest values, then every rule
//! watching the device evaluates its condition (or `clear`) over them and steps the platform's
//! state machine ([`transition`]: `for` measured in reading timestamps, `clear` hysteresis).
//! What fires or clears comes out as [`Firing`]s. Pure: no I/O, no clock; counters in
//! [`RuleStats`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ib_core::rules::compile::{
    cel_val, device_value, merged_json, CelVal, DeviceValues, EvalInput, EvalVars, History,
};
use ib_core::rules::engine::{transition, Phase};
use ib_core::rules::lookups::Lookups;
use ib_core::rules::store::DeviceRuleState;
use ib_core::rules::CompiledRule;
use serde_json::{Map, Value};

use super::LocalRules;
use crate::connector::{Reading, SubDevice};

/// A rule that fired or cleared for one device.
#[derive(Clone)]
pub struct Firing {
    pub rule: Arc<CompiledRule>,
    pub device: String,
    pub profile: String,
    /// The reading's time.
    pub ts: i64,
    pub phase: Phase,
    /// The device's values the condition saw.
    pub values: Map<String, Value>,
}

/// The rules' counters, reported in the gateway's health telemetry (`rules.fired`...).
#[derive(Debug, Default)]
pub struct RuleStats {
    pub fired: AtomicU64,
    pub cleared: AtomicU64,
    /// Actions that failed (an RPC refused or timed out, an SMS not sent).
    pub actions_failed: AtomicU64,
    /// Conditions that could not be evaluated (a key the device has not reported yet...).
    pub eval_errors: AtomicU64,
    /// Firings per rule, by name.
    pub per_rule: Vec<(String, AtomicU64)>,
}

impl RuleStats {
    /// Counters for these rules.
    pub fn new<'a>(names: impl Iterator<Item = &'a str>) -> RuleStats {
        RuleStats {
            per_rule: names.map(|n| (n.to_string(), AtomicU64::new(0))).collect(),
            ..Default::default()
        }
    }

    /// The counters as telemetry: `rules.fired`, `rules.cleared`, `rules.actions_failed`,
    /// `rules.eval_errors`, `rule.<name>.fired`.
    pub fn report(&self, out: &mut Map<String, Value>) {
        let r = Ordering::Relaxed;
        out.insert("rules.fired".into(), self.fired.load(r).into());
        out.insert("rules.cleared".into(), self.cleared.load(r).into());
        out.insert(
            "rules.actions_failed".into(),
            self.actions_failed.load(r).into(),
        );
        out.insert("rules.eval_errors".into(), self.eval_errors.load(r).into());
        for (name, n) in &self.per_rule {
            out.insert(format!("rule.{name}.fired"), n.load(r).into());
        }
    }

    fn count(&self, rule: &str, phase: Phase) {
        if phase == Phase::Clear {
            self.cleared.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.fired.fetch_add(1, Ordering::Relaxed);
        if let Some((_, n)) = self.per_rule.iter().find(|(n, _)| n == rule) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One sub-device as the conditions see it.
struct DeviceView {
    profile: String,
    latest: DeviceValues,
    /// The `device` variable.
    var: CelVal,
}

/// Readings in, firings out.
pub struct RuleEngine {
    rules: LocalRules,
    devices: HashMap<String, DeviceView>,
    states: HashMap<(usize, String), DeviceRuleState>,
    /// (rule, device) whose last evaluation failed: logged once until it succeeds again.
    failing: HashSet<(usize, String)>,
    empty: DeviceValues,
    attributes: CelVal,
    nothing: Arc<NoHistory>,
    stats: Arc<RuleStats>,
}

impl RuleEngine {
    /// An engine for `rules` over `devices`, counting into `stats`.
    pub fn new(rules: LocalRules, devices: &[SubDevice], stats: Arc<RuleStats>) -> RuleEngine {
        let devices = devices
            .iter()
            .map(|d| {
                let view = DeviceView {
                    profile: d.profile.clone(),
                    latest: DeviceValues::default(),
                    var: cel_val(device_value(&d.name, &d.name, &d.profile, true)),
                };
                (d.name.clone(), view)
            })
            .collect();
        RuleEngine {
            rules,
            devices,
            states: HashMap::new(),
            failing: HashSet::new(),
            empty: DeviceValues::default(),
            attributes: cel_val(ib_core::rules::compile::to_cel(&Value::Object(Map::new()))),
            nothing: Arc::new(NoHistory),
            stats,
        }
    }

    /// Takes in one reading; what fired or cleared because of it, in rule order.
    pub fn on_reading(&mut self, r: &Reading) -> Vec<Firing> {
        let Some(view) = self.devices.get_mut(&r.device) else {
            return Vec::new();
        };
        for (k, v) in &r.values {
            view.latest.set_newer(k, r.ts, v);
        }
        let watching: Vec<usize> = (0..self.rules.rules.len())
            .filter(|i| self.rules.rules[*i].devices.contains(&r.device))
            .collect();
        watching
            .into_iter()
            .filter_map(|i| self.step(i, &r.device, r.ts))
            .collect()
    }

    /// When a `for` wait ends next (ms), if any is running: a device reporting only changes
    /// sends nothing while its value stays, so the task calls [`RuleEngine::tick`] then.
    pub fn next_due(&self) -> Option<i64> {
        self.states
            .iter()
            .filter_map(|((i, _), st)| {
                Some(st.pending_since? + self.rules.rules[*i].compiled.for_ms)
            })
            .min()
    }

    /// Re-evaluates, at `now` (ms), the rules whose `for` wait has ended, over the devices'
    /// latest values.
    pub fn tick(&mut self, now: i64) -> Vec<Firing> {
        let mut due: Vec<(usize, String)> = self
            .states
            .iter()
            .filter(|((i, _), st)| {
                st.pending_since
                    .is_some_and(|p| p + self.rules.rules[*i].compiled.for_ms <= now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        due.sort();
        due.into_iter()
            .filter_map(|(i, d)| self.step(i, &d, now))
            .collect()
    }

    /// Evaluates rule `i` for `device` at `ts` and steps its state.
    fn step(&mut self, i: usize, device: &str, ts: i64) -> Option<Firing> {
        let view = self.devices.get(device)?;
        let rule = &self.rules.rules[i];
        let input = EvalInput {
            tenant: Arc::from(""),
            device: Arc::from(device),
            ts,
            values: Arc::new(HashMap::new()),
            history: self.nothing.clone(),
            lookups: self.nothing.clone(),
        };
        let vars = EvalVars::new(
            [&view.latest, &self.empty],
            self.attributes.as_ref(),
            view.var.as_ref(),
            input,
        );
        let key = (i, device.to_string());
        let before = self.states.get(&key).copied().unwrap_or_default();
        let mut error = None;
        let cel = &self.rules.cel;
        let stepped = transition(&rule.compiled, before, ts, |p| {
            cel.eval(p, &vars).map_err(|e| error = Some(e)).ok()
        });
        let Some((state, phase)) = stepped else {
            self.stats.eval_errors.fetch_add(1, Ordering::Relaxed);
            if self.failing.insert(key) {
                let e = error.map(|e| e.to_string()).unwrap_or_default();
                tracing::warn!(rule = %rule.compiled.id, device, error = %e,
                    "local rule: cannot evaluate (logged once until it can)");
            }
            return None;
        };
        self.failing.remove(&key);
        self.states.insert(key, state);
        let phase = phase?;
        self.stats.count(&rule.compiled.id, phase);
        Some(Firing {
            rule: rule.compiled.clone(),
            device: device.to_string(),
            profile: view.profile.clone(),
            ts,
            phase,
            values: merged_json([&view.latest, &self.empty]),
        })
    }
}

/// The edge keeps no history and has no lookups: the functions that read them are refused at
/// load (rules/mod.rs), so these are never called; they answer errors if they were.
struct NoHistory;

impl History for NoHistory {
    fn window(&self, _: &str, _: &str, _: i64, _: i64) -> ib_core::Result<Vec<(i64, f64)>> {
        Err(ib_core::CoreError::Invalid("no history at the edge".into()))
    }
    fn previous(&self, _: &str, _: &str, _: i64) -> ib_core::Result<Option<f64>> {
        Err(ib_core::CoreError::Invalid("no history at the edge".into()))
    }
}

impl Lookups for NoHistory {
    fn external(&self, _: &str, _: &str) -> Result<Value, String> {
        Err("no external sources at the edge".into())
    }
    fn inside(&self, _: &str, _: &str, _: f64, _: f64) -> Result<bool, String> {
        Err("no geofences at the edge".into())
    }
}
