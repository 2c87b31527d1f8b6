//! Backtesting: a rule replayed over stored telemetry, before it is enabled. Each device in the
//! rule's scope goes through the same state machine as live evaluation (`engine::transition`),
//! from a fresh state, message by message (grouped by timestamp); the result lists when the
//! rule would have fired and cleared. Nothing is stored and no action runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value as Json};
use utoipa::ToSchema;

use super::compile::{
    cel_val, device_value, merged_json, numbers, to_cel, DeviceValues, EvalInput, EvalVars,
    BUILTIN_VARIABLES,
};
use super::engine::{transition, Phase, StoreHistory};
use super::model::{RuleSpec, Trigger};
use super::store::DeviceRuleState;
use super::Target;
use crate::error::{CoreError, Result};
use crate::model::{Device, DeviceQuery};
use crate::Platform;

/// At most this many devices are replayed.
pub const MAX_DEVICES: usize = 1000;
/// At most this many points per device.
pub const MAX_POINTS: usize = 1_000_000;

/// When the rule would have fired or cleared.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BacktestHit {
    pub device: String,
    pub device_name: String,
    pub ts: i64,
    /// `fire` or `clear`.
    pub phase: String,
    /// The values the condition saw.
    pub values: Map<String, Json>,
}

/// A backtest's outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Backtest {
    pub hits: Vec<BacktestHit>,
    pub devices: usize,
    /// Timestamps evaluated.
    pub evaluations: usize,
    /// Evaluations that failed (a key not yet seen, a type error).
    pub errors: usize,
    pub first_error: Option<String>,
}

/// Replays `spec` over `[from, to]` for the devices of its scope in `tenant`.
pub fn backtest(
    p: &Platform,
    tenant: &str,
    spec: &RuleSpec,
    from: i64,
    to: i64,
) -> Result<Backtest> {
    if from > to {
        return Err(CoreError::Invalid("from must not be after to".into()));
    }
    if spec.trigger != Trigger::Telemetry {
        return Err(CoreError::Invalid(
            "backtests replay telemetry: the rule's trigger must be telemetry".into(),
        ));
    }
    let rule = p.rules.dry_compile(&p.registry, tenant, spec)?;
    let devices = devices_in_scope(p, tenant, &rule.target)?;
    let mut keys: Vec<String> = Vec::new();
    for prog in std::iter::once(&rule.condition).chain(rule.clear.as_ref()) {
        let refs = prog.references();
        keys.extend(
            refs.variables()
                .into_iter()
                .filter(|v| !BUILTIN_VARIABLES.contains(v))
                .map(str::to_string),
        );
    }
    keys.sort();
    keys.dedup();
    let history: Arc<dyn super::compile::History> = Arc::new(StoreHistory(p.telemetry.clone()));
    let mut out = Backtest {
        hits: Vec::new(),
        devices: devices.len(),
        evaluations: 0,
        errors: 0,
        first_error: None,
    };
    for d in devices {
        let series = p
            .telemetry
            .range(&d.id, &keys, from, to, MAX_POINTS, false)
            .map_err(|e| CoreError::Store(e.to_string()))?;
        let mut by_ts: BTreeMap<i64, Vec<(String, Json)>> = BTreeMap::new();
        for (k, samples) in series {
            for s in samples {
                by_ts
                    .entry(s.ts)
                    .or_default()
                    .push((k.clone(), s.value.to_json()));
            }
        }
        let attributes = cel_val(to_cel(&Json::Object(Map::new())));
        let device = cel_val(device_value(&d.id, &d.name, &d.profile, true));
        let (tenant, device_id): (Arc<str>, Arc<str>) =
            (d.tenant.as_str().into(), d.id.as_str().into());
        let mut values = DeviceValues::default();
        let none = DeviceValues::default();
        let mut state = DeviceRuleState::default();
        for (ts, incoming) in by_ts {
            for (k, v) in &incoming {
                values.set(k, ts, v);
            }
            let input = EvalInput {
                tenant: tenant.clone(),
                device: device_id.clone(),
                ts,
                values: Arc::new(numbers([&values, &none])),
                history: history.clone(),
                lookups: p.rules.lookups.clone(),
            };
            let vars = EvalVars::new(
                [&values, &none],
                attributes.as_ref(),
                device.as_ref(),
                input,
            );
            out.evaluations += 1;
            let mut failed = None;
            let eval = |prog: &cel::Program| match p.rules.cel.eval(prog, &vars) {
                Ok(b) => Some(b),
                Err(e) => {
                    failed = Some(e.to_string());
                    None
                }
            };
            match transition(&rule, state, ts, eval) {
                Some((next, phase)) => {
                    state = next;
                    if let Some(phase) = phase {
                        out.hits.push(BacktestHit {
                            device: d.id.clone(),
                            device_name: d.name.clone(),
                            ts,
                            phase: if phase == Phase::Fire {
                                "fire"
                            } else {
                                "clear"
                            }
                            .into(),
                            values: merged_json([&values, &none]),
                        });
                    }
                }
                None => {
                    out.errors += 1;
                    if out.first_error.is_none() {
                        out.first_error = failed.map(|e| format!("device {}: {e}", d.name));
                    }
                }
            }
        }
    }
    Ok(out)
}

fn devices_in_scope(p: &Platform, tenant: &str, target: &Target) -> Result<Vec<Device>> {
    Ok(match target {
        Target::Device(id) => vec![p.registry.device(id)?],
        Target::Profile(profile) => {
            let q = DeviceQuery {
                profile: Some(profile.clone()),
                limit: MAX_DEVICES,
                ..Default::default()
            };
            p.registry.find_devices(tenant, &q)?.0
        }
        Target::Tenant => {
            let q = DeviceQuery {
                limit: MAX_DEVICES,
                ..Default::default()
            };
            p.registry.find_devices(tenant, &q)?.0
        }
    })
}
