//! Local rules: `[[rule]]` tables in `edge.toml`, in the platform's dialect (the same
//! [`RuleSpec`] shape, the same CEL compiler and the same `for`/`clear` state machine from
//! `ib_core::rules`), run inside the edge on the sub-devices' readings, so that a control loop
//! (dry soil → pump on) keeps working while the uplink is down.
//!
//! What the edge does differently, decided at load time with an error naming the rule:
//! - conditions see the device's latest local values only (`attributes` is empty, `device` has
//!   `name`, `profile` and `active`); the rule functions that read the platform's history or
//!   lookups (`avg`, `min`, `max`, `sum`, `count`, `delta`, `rate`, `zscore`, `anomaly`,
//!   `hours_to`, `level_shift`, `external`, `inside`) are refused;
//! - `trigger` is `"telemetry"` only; `scope` names sub-devices of this gateway (`device`), a
//!   profile of its `[[modbus]]` devices (`profile`), or all of them (`tenant = true`);
//! - actions are `rpc` (to the rule's device or `device = "<sub-device>"`, through the
//!   connectors: a `[[modbus]]` device must have a `writes` entry for the method), `sms`
//!   (through the `[modem]`, refused without one), `log`, and `alarm` (telemetry
//!   `alarm.<type>` = true on firing, false on clearing, on the device); `attribute`,
//!   `publish`, `webhook` and `email` are refused. As on the platform, clearing undoes alarms
//!   only: the other actions run when a rule fires (switch a pump off with a second rule).
//!
//! # Layout
//! - this file: loading and checking;
//! - [`engine`]: readings → per-device state → firings (pure, no I/O, no clock);
//! - [`actions`]: the task that feeds the engine and carries out its firings in order.

pub mod actions;
pub mod engine;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ib_core::rules::compile::{Cel, FUNCTIONS};
use ib_core::rules::model::{Action, RuleSpec, Trigger};
use ib_core::rules::store::Rule;
use ib_core::rules::{CompiledRule, Target};
use serde::Deserialize;

use crate::config::EdgeConfig;
use crate::connector::SubDevice;
use crate::error::EdgeError;

/// A rule ready to run at the edge.
pub struct LocalRule {
    /// Compiled as the platform compiles it (the state machine takes this type).
    pub compiled: Arc<CompiledRule>,
    /// The sub-devices it watches.
    pub devices: HashSet<String>,
}

/// The enabled local rules and their compiler (which also evaluates them).
pub struct LocalRules {
    pub cel: Cel,
    pub rules: Vec<LocalRule>,
}

impl LocalRules {
    /// Whether there is nothing to run.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// What the rules may reach: the gateway's sub-devices and whether SMS can be sent.
pub struct Site<'a> {
    pub config: &'a EdgeConfig,
    pub devices: &'a [SubDevice],
    pub sms: bool,
}

/// Parses, checks and compiles `config.rule`; the first problem is an error naming the rule.
pub fn load(site: &Site) -> Result<LocalRules, EdgeError> {
    let cel = Cel::new();
    let mut rules = Vec::new();
    let mut names = HashSet::new();
    for (i, table) in site.config.rule.iter().enumerate() {
        let label = table
            .get("name")
            .and_then(|n| n.as_str())
            .map(|n| format!("[[rule]] #{} ({n:?})", i + 1))
            .unwrap_or_else(|| format!("[[rule]] #{}", i + 1));
        let bad = |m: String| EdgeError::Config(format!("{label}: {m}"));
        let spec = RuleSpec::deserialize(table.clone()).map_err(|e| bad(e.message().into()))?;
        if !names.insert(spec.name.clone()) {
            return Err(bad("name: used by another [[rule]]".into()));
        }
        let rule = compile(&cel, site, spec, i as u64).map_err(bad)?;
        if rule.compiled.rule.spec.enabled {
            rules.push(rule);
        }
    }
    Ok(LocalRules { cel, rules })
}

/// One rule, checked against the site.
fn compile(cel: &Cel, site: &Site, spec: RuleSpec, key: u64) -> Result<LocalRule, String> {
    spec.check_shape().map_err(|e| e.to_string())?;
    if spec.trigger != Trigger::Telemetry {
        let name = serde_json::to_string(&spec.trigger).unwrap_or_default();
        return Err(format!(
            "trigger: {name} is not run at the edge (only \"telemetry\")"
        ));
    }
    let devices = scope(site, &spec)?;
    let condition = cel
        .compile("condition", &spec.condition)
        .map_err(|e| e.to_string())?;
    cel.check("condition", &condition, None)
        .map_err(|e| e.to_string())?;
    local_only("condition", &condition)?;
    let clear = match &spec.clear {
        Some(c) => {
            let p = cel.compile("clear", c).map_err(|e| e.to_string())?;
            cel.check("clear", &p, None).map_err(|e| e.to_string())?;
            local_only("clear", &p)?;
            Some(p)
        }
        None => None,
    };
    for a in &spec.actions {
        action(site, a, &devices)?;
    }
    let compiled = CompiledRule {
        key,
        id: Arc::from(spec.name.as_str()),
        for_ms: spec.for_ms(),
        rule: Rule {
            id: spec.name.clone(),
            tenant: String::new(),
            spec,
            created: 0,
            updated: 0,
            last_error: None,
            last_error_ts: None,
            last_fired_ts: None,
        },
        target: Target::Tenant,
        condition,
        clear,
        devices: HashMap::new(),
        uses_attributes: false,
        uses_functions: false,
        schedule: None,
    };
    Ok(LocalRule {
        compiled: Arc::new(compiled),
        devices,
    })
}

/// The sub-devices a rule's scope names.
fn scope(site: &Site, spec: &RuleSpec) -> Result<HashSet<String>, String> {
    let all = || {
        site.devices
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let s = &spec.scope;
    let found: HashSet<String> = if let Some(d) = &s.device {
        if !site.devices.iter().any(|x| &x.name == d) {
            return Err(format!(
                "scope: device {d:?} is not a sub-device of this gateway (it has: {})",
                all()
            ));
        }
        HashSet::from([d.clone()])
    } else if let Some(p) = &s.profile {
        let found: HashSet<String> = site
            .devices
            .iter()
            .filter(|x| &x.profile == p)
            .map(|x| x.name.clone())
            .collect();
        if found.is_empty() {
            return Err(format!(
                "scope: no sub-device of this gateway has profile {p:?}"
            ));
        }
        found
    } else {
        site.devices.iter().map(|x| x.name.clone()).collect()
    };
    Ok(found)
}

/// Refuses the rule functions: they read the platform's history or lookups.
fn local_only(what: &str, program: &cel::Program) -> Result<(), String> {
    let refs = program.references();
    if let Some((f, _)) = FUNCTIONS.iter().find(|(f, _)| refs.functions().contains(f)) {
        return Err(format!(
            "{what}: {f}() reads the platform's history or lookups; at the edge a condition \
             sees the device's latest values only"
        ));
    }
    Ok(())
}

/// Whether the edge can carry out `a`.
fn action(site: &Site, a: &Action, in_scope: &HashSet<String>) -> Result<(), String> {
    match a {
        Action::Rpc { method, device, .. } => {
            if let Some(d) = device {
                if !site.devices.iter().any(|x| &x.name == d) {
                    return Err(format!(
                        "rpc action: device {d:?} is not a sub-device of this gateway"
                    ));
                }
            }
            // A Modbus device only knows the methods of its `writes`.
            let target = |name: &String| match device {
                Some(d) => d == name,
                None => in_scope.contains(name),
            };
            if let Some(m) = site
                .config
                .modbus
                .iter()
                .find(|m| target(&m.name) && !m.writes.iter().any(|w| &w.method == method))
            {
                return Err(format!(
                    "rpc action: [[modbus]] {:?} has no writes entry for method {method:?}",
                    m.name
                ));
            }
            Ok(())
        }
        Action::Sms { .. } if !site.sms => {
            Err("sms action: needs a [modem] to send through".into())
        }
        Action::Sms { .. } | Action::Log { .. } | Action::Alarm { .. } => Ok(()),
        Action::Attribute { .. } => Err(refused("attribute")),
        Action::Publish { .. } => Err(refused("publish")),
        Action::Webhook { .. } => Err(refused("webhook")),
        Action::Email { .. } => Err(refused("email")),
    }
}

fn refused(kind: &str) -> String {
    format!("{kind} action: not run at the edge (rpc, sms, log and alarm are)")
}
