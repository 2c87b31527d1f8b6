//! The enabled rules indexed the way the engine asks for them: tenant → trigger → scope
//! (tenant-wide, by profile id, by device id). One event costs a few hash lookups instead of a
//! walk over every rule. The index is immutable and rebuilt whenever a rule is installed or
//! deleted (rare next to events); the engine holds an `Arc` of the current one.

use std::collections::HashMap;
use std::sync::Arc;

use super::model::Trigger;
use super::{CompiledRule, Target};

/// Rules of one tenant and trigger, by scope.
#[derive(Default)]
struct Scoped {
    tenant: Vec<Arc<CompiledRule>>,
    profile: HashMap<String, Vec<Arc<CompiledRule>>>,
    device: HashMap<String, Vec<Arc<CompiledRule>>>,
}

/// The event triggers (schedules are kept apart).
const TRIGGERS: [Trigger; 3] = [Trigger::Telemetry, Trigger::Attributes, Trigger::Status];

fn slot(trigger: Trigger) -> Option<usize> {
    TRIGGERS.iter().position(|t| *t == trigger)
}

/// A snapshot of the enabled rules.
#[derive(Default)]
pub struct RuleIndex {
    tenants: HashMap<String, [Scoped; 3]>,
    scheduled: Vec<Arc<CompiledRule>>,
    /// Every enabled rule's install key (see [`CompiledRule::key`]).
    keys: std::collections::HashSet<u64>,
    /// Changes with every rebuild.
    pub generation: u64,
    /// Whether an enabled rule calls a function that reads the history (window functions).
    pub reads_history: bool,
}

impl RuleIndex {
    /// The index of `rules` (disabled ones are left out).
    pub fn build<'a>(
        rules: impl IntoIterator<Item = &'a Arc<CompiledRule>>,
        generation: u64,
    ) -> RuleIndex {
        let mut ix = RuleIndex {
            generation,
            ..Default::default()
        };
        for r in rules.into_iter().filter(|r| r.rule.spec.enabled) {
            ix.keys.insert(r.key);
            ix.reads_history |= r.uses_functions;
            if r.schedule.is_some() {
                ix.scheduled.push(r.clone());
            }
            let Some(slot) = slot(r.rule.spec.trigger) else {
                continue;
            };
            let scoped = &mut ix.tenants.entry(r.rule.tenant.clone()).or_default()[slot];
            match &r.target {
                Target::Tenant => scoped.tenant.push(r.clone()),
                Target::Profile(p) => scoped.profile.entry(p.clone()).or_default().push(r.clone()),
                Target::Device(d) => scoped.device.entry(d.clone()).or_default().push(r.clone()),
            }
        }
        ix
    }

    /// Whether `tenant` has any enabled rule for `trigger` (before looking the device up).
    pub fn has(&self, tenant: &str, trigger: Trigger) -> bool {
        let Some(s) = slot(trigger) else {
            return false;
        };
        self.tenants.get(tenant).is_some_and(|t| {
            let s = &t[s];
            !s.tenant.is_empty() || !s.profile.is_empty() || !s.device.is_empty()
        })
    }

    /// The enabled rules of `tenant` for `trigger` whose scope covers the device.
    pub fn matching<'a>(
        &'a self,
        tenant: &str,
        trigger: Trigger,
        profile: &str,
        device: &str,
    ) -> impl Iterator<Item = &'a Arc<CompiledRule>> + 'a {
        let scoped = slot(trigger).and_then(|s| self.tenants.get(tenant).map(|t| &t[s]));
        let (all, by_profile, by_device) = match scoped {
            Some(s) => (
                s.tenant.as_slice(),
                s.profile.get(profile).map(Vec::as_slice).unwrap_or(&[]),
                s.device.get(device).map(Vec::as_slice).unwrap_or(&[]),
            ),
            None => (&[][..], &[][..], &[][..]),
        };
        all.iter().chain(by_profile).chain(by_device)
    }

    /// The enabled scheduled rules of every tenant.
    pub fn scheduled(&self) -> &[Arc<CompiledRule>] {
        &self.scheduled
    }

    /// Whether any rule is enabled.
    pub fn any(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Whether the rule installed as `key` is still current and enabled.
    pub fn current(&self, key: u64) -> bool {
        self.keys.contains(&key)
    }
}
