//! The rule engine: rules (model.rs: the TOML/JSON shape; store.rs: rows and per-device state),
//! their CEL conditions (compile.rs), evaluation of device events into action jobs (engine.rs)
//! and the actions themselves behind one trait (actions.rs).
//!
//! Flow: the bus ─▶ [`engine::RuleEngine`] (one thread: per event, the tenant's rules whose scope
//! and trigger match, condition → state machine with `for` and `clear` → jobs) ─▶ channel ─▶
//! [`actions::ActionRunner`] (tokio: alarm, rpc, attribute, publish, webhook, log).

pub mod actions;
pub mod backtest;
pub mod compile;
pub mod engine;
pub mod index;
pub mod lookups;
pub mod model;
pub mod notify;
pub mod store;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cel::Program;
use parking_lot::RwLock;

use crate::error::{CoreError, Result};
use crate::model::ValueType;
use crate::registry::Registry;
use compile::Cel;
use model::{Action, RuleSpec};
use store::{Rule, RuleStore};

/// What a rule applies to, resolved to ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tenant,
    Profile(String),
    Device(String),
}

/// A rule ready to evaluate.
pub struct CompiledRule {
    /// Unique per installation: an updated rule is a new rule to the engine (its per-device
    /// state starts over). 0 for dry compilations.
    pub key: u64,
    /// `rule.id`, shared with the engine's state and writes.
    pub id: Arc<str>,
    pub rule: Rule,
    pub target: Target,
    pub condition: Program,
    pub clear: Option<Program>,
    pub for_ms: i64,
    /// Devices named by rpc/attribute actions, resolved to ids (name → id).
    pub devices: HashMap<String, String>,
    /// Whether the condition or clear reads `attributes` (else the engine does not load them).
    pub uses_attributes: bool,
    /// Whether the condition or clear calls a rule function (they read the values as numbers).
    pub uses_functions: bool,
    /// For `trigger = "schedule"`.
    pub schedule: Option<model::Schedule>,
}

/// The rules of the platform: storage, validation, and the compiled set the engine reads.
pub struct Rules {
    pub store: RuleStore,
    pub cel: Cel,
    /// External sources and geofences.
    pub lookups: Arc<lookups::RuleLookups>,
    compiled: RwLock<HashMap<String, Arc<CompiledRule>>>,
    /// The enabled rules as the engine reads them, rebuilt on every change.
    index: RwLock<Arc<index::RuleIndex>>,
}

/// Install keys of compiled rules (see [`CompiledRule::key`]).
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

impl Rules {
    /// Loads and compiles every stored rule; one that no longer compiles (its profile was
    /// deleted, say) is kept with its error and not evaluated.
    pub fn open(db: Arc<crate::db::Db>, registry: &Registry) -> Result<Rules> {
        let rules = Rules {
            lookups: Arc::new(lookups::RuleLookups::open(db.clone())?),
            store: RuleStore::new(db)?,
            cel: Cel::new(),
            compiled: RwLock::new(HashMap::new()),
            index: RwLock::default(),
        };
        for rule in rules.store.all()? {
            match rules.compile(registry, &rule.tenant, &rule.spec) {
                Ok(parts) => {
                    rules.install(rule, parts);
                }
                Err(e) => {
                    tracing::warn!(rule = %rule.id, error = %e, "rule not loaded");
                    rules.store.record_error(&rule.id, &e.to_string())?;
                }
            }
        }
        Ok(rules)
    }

    /// Validates and stores a new rule of `tenant`.
    pub fn create(&self, registry: &Registry, tenant: &str, spec: RuleSpec) -> Result<Rule> {
        let parts = self.compile(registry, tenant, &spec)?;
        let rule = self.store.insert(tenant, &spec)?;
        self.install(rule.clone(), parts);
        Ok(rule)
    }

    /// Validates and replaces a rule (its per-device state starts over).
    pub fn update(&self, registry: &Registry, id: &str, spec: RuleSpec) -> Result<Rule> {
        let old = self.store.get(id)?;
        let parts = self.compile(registry, &old.tenant, &spec)?;
        let rule = self.store.update(id, &spec)?;
        self.install(rule.clone(), parts);
        Ok(rule)
    }

    /// Compiles a rule without saving it (backtests).
    pub fn dry_compile(
        &self,
        registry: &Registry,
        tenant: &str,
        spec: &RuleSpec,
    ) -> Result<CompiledRule> {
        let parts = self.compile(registry, tenant, spec)?;
        Ok(CompiledRule {
            key: 0,
            id: Arc::from(""),
            for_ms: spec.for_ms(),
            rule: Rule {
                id: String::new(),
                tenant: tenant.to_string(),
                spec: spec.clone(),
                created: 0,
                updated: 0,
                last_error: None,
                last_error_ts: None,
                last_fired_ts: None,
            },
            target: parts.target,
            condition: parts.condition,
            clear: parts.clear,
            devices: parts.devices,
            uses_attributes: parts.uses_attributes,
            uses_functions: parts.uses_functions,
            schedule: parts.schedule,
        })
    }

    /// Deletes a rule.
    pub fn delete(&self, id: &str) -> Result<Rule> {
        let r = self.store.delete(id)?;
        let mut compiled = self.compiled.write();
        compiled.remove(id);
        self.reindex(&compiled);
        Ok(r)
    }

    /// The enabled rules, indexed for the engine (a snapshot: cheap to take, never changes).
    pub fn index(&self) -> Arc<index::RuleIndex> {
        self.index.read().clone()
    }

    /// Whether any rule is enabled (the engine skips work otherwise).
    pub fn any(&self) -> bool {
        self.index.read().any()
    }

    fn install(&self, rule: Rule, parts: Parts) {
        let compiled = CompiledRule {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            id: Arc::from(rule.id.as_str()),
            for_ms: rule.spec.for_ms(),
            rule,
            target: parts.target,
            condition: parts.condition,
            clear: parts.clear,
            devices: parts.devices,
            uses_attributes: parts.uses_attributes,
            uses_functions: parts.uses_functions,
            schedule: parts.schedule,
        };
        let mut all = self.compiled.write();
        all.insert(compiled.rule.id.clone(), Arc::new(compiled));
        self.reindex(&all);
    }

    /// Rebuilds the index (under the write lock of `compiled`, so rebuilds do not interleave).
    fn reindex(&self, compiled: &HashMap<String, Arc<CompiledRule>>) {
        let generation = self.index.read().generation + 1;
        let ix = index::RuleIndex::build(compiled.values(), generation);
        *self.index.write() = Arc::new(ix);
    }

    /// Everything that can be checked before a rule is saved.
    fn compile(&self, registry: &Registry, tenant: &str, spec: &RuleSpec) -> Result<Parts> {
        spec.check_shape()?;
        let (target, declared): (Target, Option<BTreeMap<String, ValueType>>) =
            match (&spec.scope.profile, &spec.scope.device) {
                (Some(p), _) => {
                    let p = registry.profile(tenant, p)?;
                    (Target::Profile(p.id), Some(p.spec.telemetry_types))
                }
                (_, Some(d)) => {
                    let d = registry.device_in(tenant, d)?;
                    let spec = registry.spec_of(&d)?;
                    (Target::Device(d.id), Some(spec.telemetry_types))
                }
                _ => (Target::Tenant, None),
            };
        let condition = self.cel.compile("condition", &spec.condition)?;
        self.cel.check("condition", &condition, declared.as_ref())?;
        let clear = match &spec.clear {
            Some(c) => {
                let p = self.cel.compile("clear", c)?;
                self.cel.check("clear", &p, declared.as_ref())?;
                Some(p)
            }
            None => None,
        };
        let mut devices = HashMap::new();
        for a in &spec.actions {
            if let Action::Rpc {
                device: Some(d), ..
            }
            | Action::Attribute {
                device: Some(d), ..
            } = a
            {
                let dev = registry.device_in(tenant, d).map_err(|_| {
                    CoreError::Invalid(format!(
                        "action target device {d:?} not found in the tenant"
                    ))
                })?;
                devices.insert(d.clone(), dev.id);
            }
        }
        let uses = |p: &Program| p.references().variables().contains(&"attributes");
        let uses_attributes = uses(&condition) || clear.as_ref().is_some_and(uses);
        let calls = |p: &Program| {
            let refs = p.references();
            compile::FUNCTIONS
                .iter()
                .any(|(f, _)| refs.functions().contains(f))
        };
        let uses_functions = calls(&condition) || clear.as_ref().is_some_and(calls);
        let schedule = spec
            .schedule
            .as_deref()
            .map(model::Schedule::parse)
            .transpose()?;
        Ok(Parts {
            target,
            condition,
            clear,
            devices,
            uses_attributes,
            uses_functions,
            schedule,
        })
    }
}

struct Parts {
    target: Target,
    condition: Program,
    clear: Option<Program>,
    devices: HashMap<String, String>,
    uses_attributes: bool,
    uses_functions: bool,
    schedule: Option<model::Schedule>,
}
