//! CEL for rules: compiling a condition (syntax errors with line and column), checking it at
//! save time (unknown functions, undeclared keys when the profile declares its keys, type
//! errors found by a trial evaluation over sample values), and evaluating it per device with
//! the built-in functions.
//!
//! Values: numbers are doubles (`temp > 30` and `temp > 30.0` both work; write `1.0` in
//! arithmetic), booleans, strings, JSON objects as maps. Variables: every telemetry key of the
//! device (the incoming value, else its latest), `attributes` (client, shared and server
//! attributes merged), `device` (`id`, `name`, `profile`, `active`), `ts` (ms of the message).
//! Functions: `avg|min|max|sum|count(key, "5m")` over the window ending at the message,
//! `delta(key)` (change since the previous value), `rate(key, "1m")` (change per second over
//! the window), `zscore(key, "1h")` (how many standard deviations the value is from the
//! window's mean), `external("name")` (the tenant's external source, its last JSON),
//! `inside("name")` (the device's `latitude`/`longitude` inside the tenant's geofence),
//! `anomaly(key, "1h")` (the value's robust z-score against the window: median and MAD),
//! `hours_to(key, threshold, "24h")` (hours until the window's trend reaches the threshold;
//! infinity when it does not head there), `level_shift(key, "6h")` (the latest change of level
//! in the window, after minus before, found by change-point detection; 0 without one).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::objects::{Key, Map};
use cel::{Context, Env, ExecutionError, FunctionContext, Program, Value};
use serde_json::Value as Json;

use crate::error::{CoreError, Result};
use crate::model::ValueType;

/// Functions the rules add to CEL's standard library, with their arity.
pub const FUNCTIONS: &[(&str, usize)] = &[
    ("avg", 2),
    ("min", 2),
    ("max", 2),
    ("sum", 2),
    ("count", 2),
    ("delta", 1),
    ("rate", 2),
    ("zscore", 2),
    ("external", 1),
    ("inside", 1),
    ("anomaly", 2),
    ("hours_to", 3),
    ("level_shift", 2),
];

/// Variables every condition may use besides telemetry keys.
pub const BUILTIN_VARIABLES: &[&str] = &["attributes", "device", "ts"];

/// What a condition's functions read: the device's history.
pub trait History: Send + Sync {
    /// Numeric values of `key` in `[from, to]`, oldest first.
    fn window(&self, device: &str, key: &str, from: i64, to: i64) -> Result<Vec<(i64, f64)>>;
    /// The last numeric value of `key` strictly before `before`.
    fn previous(&self, device: &str, key: &str, before: i64) -> Result<Option<f64>>;
}

/// One evaluation's data, reached by the functions through the `__eval` variable.
#[derive(Clone)]
pub struct EvalInput {
    pub tenant: Arc<str>,
    pub device: Arc<str>,
    pub ts: i64,
    /// The values at `ts` (incoming over latest).
    pub values: Arc<HashMap<String, f64>>,
    pub history: Arc<dyn History>,
    pub lookups: Arc<dyn super::lookups::Lookups>,
}

impl std::fmt::Debug for EvalInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EvalInput({}, {})", self.device, self.ts)
    }
}

impl PartialEq for EvalInput {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for EvalInput {}

impl cel::objects::Opaque for EvalInput {
    fn runtime_type_name(&self) -> &str {
        "ironbridge.EvalInput"
    }
}

/// The compiler and the parent evaluation context (standard library plus our functions).
pub struct Cel {
    env: Arc<Env>,
    parent: Context<'static, 'static>,
}

impl Default for Cel {
    fn default() -> Self {
        Cel::new()
    }
}

fn input(ftx: &FunctionContext) -> std::result::Result<Arc<EvalInput>, ExecutionError> {
    let v = ftx
        .ptx
        .get_variable("__eval")
        .ok_or_else(|| ftx.error("no evaluation input"))?;
    match Value::try_from(v.as_ref())? {
        Value::Opaque(o) => o
            .downcast_ref::<EvalInput>()
            .map(|i| Arc::new(i.clone()))
            .ok_or_else(|| ftx.error("bad evaluation input")),
        _ => Err(ftx.error("bad evaluation input")),
    }
}

fn window_ms(ftx: &FunctionContext, w: &str) -> std::result::Result<i64, ExecutionError> {
    super::model::parse_duration(w)
        .map(|d| d.as_millis() as i64)
        .map_err(|e| ftx.error(e.to_string()))
}

/// The window's values of `key` for the evaluating device.
fn values(
    ftx: &FunctionContext,
    key: &str,
    window: &str,
) -> std::result::Result<(Arc<EvalInput>, Vec<f64>), ExecutionError> {
    let (inp, pts) = points(ftx, key, window)?;
    Ok((inp, pts.into_iter().map(|(_, v)| v).collect()))
}

/// Timestamped numbers.
type Points = Vec<(i64, f64)>;

/// The window's points of `key`, with the value being evaluated when the store does not have
/// it yet.
fn points(
    ftx: &FunctionContext,
    key: &str,
    window: &str,
) -> std::result::Result<(Arc<EvalInput>, Points), ExecutionError> {
    let inp = input(ftx)?;
    let w = window_ms(ftx, window)?;
    let mut pts = inp
        .history
        .window(&inp.device, key, inp.ts - w, inp.ts)
        .map_err(|e| ftx.error(e.to_string()))?;
    if let Some(v) = inp.values.get(key) {
        if pts.last().is_none_or(|p| p.0 < inp.ts) {
            pts.push((inp.ts, *v));
        }
    }
    Ok((inp, pts))
}

fn need(ftx: &FunctionContext, key: &str, v: &[f64]) -> std::result::Result<(), ExecutionError> {
    if v.is_empty() {
        return Err(ftx.error(format!("no values of {key:?} in the window")));
    }
    Ok(())
}

fn aggregate(
    name: &'static str,
) -> impl Fn(&FunctionContext, Arc<String>, Arc<String>) -> std::result::Result<f64, ExecutionError>
{
    move |ftx, key, window| {
        let (_, v) = values(ftx, &key, &window)?;
        if name == "count" {
            return Ok(v.len() as f64);
        }
        if name == "sum" {
            return Ok(v.iter().sum());
        }
        need(ftx, &key, &v)?;
        Ok(match name {
            "avg" => v.iter().sum::<f64>() / v.len() as f64,
            "min" => v.iter().copied().fold(f64::INFINITY, f64::min),
            _ => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

impl Cel {
    /// The environment with the rule functions registered.
    pub fn new() -> Cel {
        let env = Arc::new(Env::stdlib());
        let mut parent = Context::with_env(env.clone());
        for name in ["avg", "min", "max", "sum", "count"] {
            parent
                .add_function(name, aggregate(name))
                .expect("a fresh function name");
        }
        parent
            .add_function("delta", |ftx: &FunctionContext, key: Arc<String>| {
                let inp = input(ftx)?;
                let now = *inp
                    .values
                    .get(key.as_str())
                    .ok_or_else(|| ftx.error(format!("no value of {key:?}")))?;
                let prev = inp
                    .history
                    .previous(&inp.device, &key, inp.ts)
                    .map_err(|e| ftx.error(e.to_string()))?;
                Ok::<f64, ExecutionError>(prev.map(|p| now - p).unwrap_or(0.0))
            })
            .expect("a fresh function name");
        parent
            .add_function(
                "rate",
                |ftx: &FunctionContext, key: Arc<String>, window: Arc<String>| {
                    let inp = input(ftx)?;
                    let w = window_ms(ftx, &window)?;
                    let pts = inp
                        .history
                        .window(&inp.device, &key, inp.ts - w, inp.ts)
                        .map_err(|e| ftx.error(e.to_string()))?;
                    match (pts.first(), pts.last()) {
                        (Some(a), Some(b)) if b.0 > a.0 => {
                            Ok::<f64, ExecutionError>((b.1 - a.1) / ((b.0 - a.0) as f64 / 1000.0))
                        }
                        _ => Ok(0.0),
                    }
                },
            )
            .expect("a fresh function name");
        parent
            .add_function(
                "zscore",
                |ftx: &FunctionContext, key: Arc<String>, window: Arc<String>| {
                    let (inp, v) = values(ftx, &key, &window)?;
                    need(ftx, &key, &v)?;
                    let now = inp
                        .values
                        .get(key.as_str())
                        .copied()
                        .unwrap_or(v[v.len() - 1]);
                    let mean = v.iter().sum::<f64>() / v.len() as f64;
                    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
                    let sd = var.sqrt();
                    Ok::<f64, ExecutionError>(if sd > 0.0 { (now - mean) / sd } else { 0.0 })
                },
            )
            .expect("a fresh function name");
        parent
            .add_function(
                "anomaly",
                |ftx: &FunctionContext, key: Arc<String>, window: Arc<String>| {
                    let (inp, pts) = points(ftx, &key, &window)?;
                    let score = crate::analytics::anomalies(&pts, 0.0)
                        .into_iter()
                        .find(|a| a.ts == inp.ts)
                        .map(|a| a.score.abs())
                        .unwrap_or(0.0);
                    Ok::<f64, ExecutionError>(score)
                },
            )
            .expect("a fresh function name");
        parent
            .add_function(
                "hours_to",
                |ftx: &FunctionContext, key: Arc<String>, threshold: f64, window: Arc<String>| {
                    let (inp, pts) = points(ftx, &key, &window)?;
                    Ok::<f64, ExecutionError>(
                        crate::analytics::time_to_threshold(&pts, threshold)
                            .map(|t| ((t.eta_ts - inp.ts) as f64 / 3_600_000.0).max(0.0))
                            .unwrap_or(f64::INFINITY),
                    )
                },
            )
            .expect("a fresh function name");
        parent
            .add_function(
                "level_shift",
                |ftx: &FunctionContext, key: Arc<String>, window: Arc<String>| {
                    use crate::analytics::changepoint as cp;
                    let (_, pts) = points(ftx, &key, &window)?;
                    let newest = &pts[pts.len().saturating_sub(cp::MAX_POINTS)..];
                    let cps = cp::change_points(newest, cp::DEFAULT_PENALTY, cp::DEFAULT_MIN_SIZE)
                        .map_err(|e| ftx.error(e.to_string()))?;
                    Ok::<f64, ExecutionError>(cps.last().map(|c| c.after - c.before).unwrap_or(0.0))
                },
            )
            .expect("a fresh function name");
        parent
            .add_function("external", |ftx: &FunctionContext, name: Arc<String>| {
                let inp = input(ftx)?;
                let v = inp
                    .lookups
                    .external(&inp.tenant, &name)
                    .map_err(|e| ftx.error(e))?;
                Ok::<Value, ExecutionError>(to_cel(&v))
            })
            .expect("a fresh function name");
        parent
            .add_function("inside", |ftx: &FunctionContext, name: Arc<String>| {
                let inp = input(ftx)?;
                let coord = |names: &[&str]| names.iter().find_map(|k| inp.values.get(*k).copied());
                let (Some(lat), Some(lon)) = (
                    coord(&["latitude", "lat"]),
                    coord(&["longitude", "lon", "lng"]),
                ) else {
                    return Err(ftx.error("inside() needs the device's latitude and longitude"));
                };
                inp.lookups
                    .inside(&inp.tenant, &name, lon, lat)
                    .map_err(|e| ftx.error(e))
            })
            .expect("a fresh function name");
        Cel { env, parent }
    }

    /// Compiles an expression; a syntax error names its line and column.
    pub fn compile(&self, what: &str, src: &str) -> Result<Program> {
        if src.trim().is_empty() {
            return Err(CoreError::Invalid(format!("{what} is empty")));
        }
        if src.len() > 4096 {
            return Err(CoreError::Invalid(format!(
                "{what} is longer than 4096 bytes"
            )));
        }
        self.env.compile(src).map_err(|errs| {
            let first = errs
                .errors
                .first()
                .map(|e| format!("line {}, column {}: {}", e.pos.0, e.pos.1, e.msg))
                .unwrap_or_else(|| errs.to_string());
            CoreError::Invalid(format!("{what}: {first}"))
        })
    }

    /// Checks a compiled expression before it is saved: only known functions; with `declared`
    /// keys (the profile's), only those keys; and a trial evaluation over sample values must give
    /// a boolean without a type error.
    pub fn check(
        &self,
        what: &str,
        program: &Program,
        declared: Option<&BTreeMap<String, ValueType>>,
    ) -> Result<()> {
        let refs = program.references();
        for f in refs.functions() {
            let ours = FUNCTIONS.iter().any(|(n, _)| *n == f);
            // Operators are named like `_&&_`, `!_`, `@in`.
            let operator = f.starts_with(['_', '@']) || f.ends_with('_');
            if !ours && !STDLIB.contains(&f) && !operator {
                return Err(CoreError::Invalid(format!(
                    "{what}: unknown function {f:?} (rule functions: avg, min, max, sum, count, delta, rate, zscore, anomaly, hours_to, level_shift, external, inside)"
                )));
            }
        }
        let mut sample = self.parent.new_inner_scope();
        let mut values = HashMap::new();
        for v in refs.variables() {
            if BUILTIN_VARIABLES.contains(&v) {
                continue;
            }
            let ty = match declared {
                Some(d) if !d.is_empty() => match d.get(v) {
                    Some(t) => *t,
                    None => {
                        return Err(CoreError::Invalid(format!(
                            "{what}: unknown key {v:?}: the profile declares {}",
                            d.keys().cloned().collect::<Vec<_>>().join(", ")
                        )))
                    }
                },
                _ => ValueType::Number,
            };
            let value = match ty {
                ValueType::Number | ValueType::Integer => {
                    values.insert(v.to_string(), 1.0);
                    Value::Float(1.0)
                }
                ValueType::Boolean => Value::Bool(false),
                ValueType::String => Value::String(Arc::new(String::new())),
                ValueType::Json => Value::Map(Map::from(HashMap::<Key, Value>::new())),
            };
            sample.add_variable_from_value(v, value);
        }
        // inside() reads the position from the values, not from variables.
        for k in ["latitude", "longitude"] {
            values.entry(k.to_string()).or_insert(1.0);
        }
        sample.add_variable_from_value("ts", Value::Float(0.0));
        sample.add_variable_from_value(
            "attributes",
            Value::Map(Map::from(HashMap::<Key, Value>::new())),
        );
        sample.add_variable_from_value("device", device_value("", "", "", false));
        sample.add_variable_from_value(
            "__eval",
            Value::Opaque(Arc::new(EvalInput {
                tenant: Arc::from(""),
                device: Arc::from(""),
                ts: 0,
                values: Arc::new(values),
                history: Arc::new(SampleHistory),
                lookups: Arc::new(SampleHistory),
            })),
        );
        match program.execute(&sample) {
            Ok(Value::Bool(_)) => Ok(()),
            Ok(other) => Err(CoreError::Invalid(format!(
                "{what} must be true or false, not {}",
                type_name(&other)
            ))),
            // Missing map keys (attributes, JSON values) are only known at run time.
            Err(ExecutionError::NoSuchKey(_)) => Ok(()),
            Err(e) => Err(CoreError::Invalid(format!("{what}: {e}"))),
        }
    }

    /// Evaluates a condition for one device at one time. Nothing is copied into the context:
    /// the program reads `vars` through a variable resolver, so this costs what the program
    /// does, however many values the device has.
    pub fn eval(&self, program: &Program, vars: &EvalVars) -> Result<bool> {
        // The parent's variables are 'static; a child scope may borrow shorter-lived ones.
        let parent: &Context<'_, '_> = &self.parent;
        let mut ctx = parent.new_inner_scope();
        ctx.set_variable_resolver(vars);
        match program.execute(&ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(CoreError::Invalid(format!(
                "the condition gave {}, not true or false",
                type_name(&other)
            ))),
            Err(e) => Err(CoreError::Invalid(e.to_string())),
        }
    }
}

/// A value in the form the interpreter reads variables in, made once and borrowed by every
/// evaluation that reads it.
pub type CelVal = Box<dyn Val>;

/// `v` as a [`CelVal`] (a value CEL cannot hold as a variable becomes null).
pub fn cel_val(v: Value) -> CelVal {
    CelVal::try_from(v).unwrap_or_else(|_| CelVal::try_from(Value::Null).expect("null"))
}

/// A device's values by key, as variables.
pub type Values = HashMap<String, CelVal>;

/// The variables of one evaluation, read by the interpreter as it needs them (a
/// [`VariableResolver`]): the built-ins (`ts`, `attributes`, `device`, and the functions' input),
/// then the telemetry keys of `values`, first layer first (incoming values before latest ones).
pub struct EvalVars<'a> {
    pub values: [&'a DeviceValues; 2],
    pub attributes: &'a dyn Val,
    pub device: &'a dyn Val,
    ts: CelVal,
    eval: CelVal,
}

impl<'a> EvalVars<'a> {
    /// The variables at `input.ts`.
    pub fn new(
        values: [&'a DeviceValues; 2],
        attributes: &'a dyn Val,
        device: &'a dyn Val,
        input: EvalInput,
    ) -> EvalVars<'a> {
        EvalVars {
            values,
            attributes,
            device,
            ts: cel_val(Value::Float(input.ts as f64)),
            eval: cel_val(Value::Opaque(Arc::new(input))),
        }
    }
}

impl VariableResolver for EvalVars<'_> {
    fn resolve<'b>(&'b self, name: &str) -> Option<CowVal<'b, 'b>> {
        let v: &dyn Val = match name {
            "ts" => self.ts.as_ref(),
            "attributes" => self.attributes,
            "device" => self.device,
            "__eval" => self.eval.as_ref(),
            _ => self.values.iter().find_map(|l| l.vals.get(name))?.as_ref(),
        };
        Some(CowVal::Borrowed(v))
    }
}

/// A device's telemetry values in the forms evaluation needs: JSON with its timestamp (for the
/// functions' numbers and the values a job reports) and CEL variables.
#[derive(Default)]
pub struct DeviceValues {
    pub json: BTreeMap<String, (i64, Json)>,
    pub vals: Values,
}

impl DeviceValues {
    /// Sets `key` to `v` (seen at `ts`).
    pub fn set(&mut self, key: &str, ts: i64, v: &Json) {
        self.vals.insert(key.to_string(), cel_val(to_cel(v)));
        self.json.insert(key.to_string(), (ts, v.clone()));
    }

    /// Sets `key` unless the value held is newer than `ts`; whether it did.
    pub fn set_newer(&mut self, key: &str, ts: i64, v: &Json) -> bool {
        if self.json.get(key).is_some_and(|(t, _)| *t > ts) {
            return false;
        }
        self.set(key, ts, v);
        true
    }

    pub fn clear(&mut self) {
        self.json.clear();
        self.vals.clear();
    }
}

/// The numbers among `layers` (first layer first): the functions' input.
pub fn numbers(layers: [&DeviceValues; 2]) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for l in layers.iter().rev() {
        out.extend(
            l.json
                .iter()
                .filter_map(|(k, (_, v))| v.as_f64().map(|f| (k.clone(), f))),
        );
    }
    out
}

/// The values of `layers` (first layer first) as one JSON object: what a job reports.
pub fn merged_json(layers: [&DeviceValues; 2]) -> serde_json::Map<String, Json> {
    let mut out = serde_json::Map::new();
    for l in layers.iter().rev() {
        out.extend(l.json.iter().map(|(k, (_, v))| (k.clone(), v.clone())));
    }
    out
}

/// A JSON value as CEL (numbers as doubles).
pub fn to_cel(v: &Json) -> Value {
    match v {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(a) => Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Json::Object(o) => Value::Map(Map::from(
            o.iter()
                .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                .collect::<HashMap<Key, Value>>(),
        )),
    }
}

/// The `device` variable.
pub fn device_value(id: &str, name: &str, profile: &str, active: bool) -> Value {
    let mut m = HashMap::<Key, Value>::new();
    for (k, v) in [("id", id), ("name", name), ("profile", profile)] {
        m.insert(
            Key::String(Arc::new(k.into())),
            Value::String(Arc::new(v.into())),
        );
    }
    m.insert(Key::String(Arc::new("active".into())), Value::Bool(active));
    Value::Map(Map::from(m))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::UInt(_) | Value::Float(_) => "a number",
        Value::String(_) => "a string",
        Value::List(_) => "a list",
        Value::Map(_) => "a map",
        _ => "another type",
    }
}

/// History for the save-time trial: one sample value everywhere.
struct SampleHistory;

impl History for SampleHistory {
    fn window(&self, _: &str, _: &str, _: i64, to: i64) -> Result<Vec<(i64, f64)>> {
        Ok(vec![(to, 1.0)])
    }
    fn previous(&self, _: &str, _: &str, _: i64) -> Result<Option<f64>> {
        Ok(Some(1.0))
    }
}

impl super::lookups::Lookups for SampleHistory {
    fn external(&self, _: &str, _: &str) -> std::result::Result<Json, String> {
        Ok(Json::Object(Default::default()))
    }
    fn inside(&self, _: &str, _: &str, _: f64, _: f64) -> std::result::Result<bool, String> {
        Ok(false)
    }
}

/// CEL's standard functions (cel 0.15), allowed in conditions.
const STDLIB: &[&str] = &[
    "contains",
    "size",
    "has",
    "map",
    "filter",
    "all",
    "exists",
    "exists_one",
    "int",
    "uint",
    "double",
    "string",
    "bytes",
    "bool",
    "type",
    "duration",
    "timestamp",
    "startsWith",
    "endsWith",
    "matches",
    "max",
    "min",
    "dyn",
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDayOfMonth",
    "getDate",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
];

#[cfg(test)]
mod tests {
    use super::*;

    struct Ramp;

    impl History for Ramp {
        fn window(&self, _: &str, _: &str, from: i64, to: i64) -> Result<Vec<(i64, f64)>> {
            // One value per second, equal to the second.
            Ok((from / 1000..=to / 1000)
                .map(|s| (s * 1000, s as f64))
                .collect())
        }
        fn previous(&self, _: &str, _: &str, before: i64) -> Result<Option<f64>> {
            Ok(Some((before / 1000 - 1) as f64))
        }
    }

    /// Evaluates `program` for device d1 at `ts` with `values`.
    fn eval(cel: &Cel, program: &Program, values: &[(&str, f64)], ts: i64) -> Result<bool> {
        let mut dv = DeviceValues::default();
        for (k, v) in values {
            dv.set(k, ts, &serde_json::json!(v));
        }
        let none = DeviceValues::default();
        let attributes = cel_val(to_cel(&serde_json::json!({"limit": 25.0})));
        let device = cel_val(device_value("d1", "pump", "default", true));
        let input = EvalInput {
            tenant: Arc::from("t"),
            device: Arc::from("d1"),
            ts,
            values: Arc::new(numbers([&dv, &none])),
            history: Arc::new(Ramp),
            lookups: Arc::new(SampleHistory),
        };
        let vars = EvalVars::new([&dv, &none], attributes.as_ref(), device.as_ref(), input);
        cel.eval(program, &vars)
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let cel = Cel::new();
        let e = cel
            .compile("condition", "temp > 30.0 &&")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1, column 15"), "{e}");
    }

    #[test]
    fn save_time_checks() {
        let cel = Cel::new();
        let check = |src: &str, declared: Option<&BTreeMap<String, ValueType>>| {
            let p = cel.compile("condition", src)?;
            cel.check("condition", &p, declared)
        };
        check("temp > 30 && avg('temp', '5m') < 40.0", None).unwrap();
        assert!(check("bogus(temp)", None)
            .unwrap_err()
            .to_string()
            .contains("unknown function"));
        assert!(
            check("temp + 1", None).is_err(),
            "int + double is a type error"
        );
        assert!(check("temp * 2.0", None)
            .unwrap_err()
            .to_string()
            .contains("true or false"));
        let declared: BTreeMap<String, ValueType> = [
            ("temp".to_string(), ValueType::Number),
            ("door".to_string(), ValueType::Boolean),
        ]
        .into();
        check("temp > 3.0 && !door", Some(&declared)).unwrap();
        let e = check("humidity > 3.0", Some(&declared))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key \"humidity\""), "{e}");
        assert!(
            check("door > 3.0", Some(&declared)).is_err(),
            "bool > number"
        );
        check("attributes.limit < temp", None).unwrap();
    }

    #[test]
    fn evaluation_with_functions() {
        let cel = Cel::new();
        let ts = 100_000;
        let run = |src: &str, vals: &[(&str, f64)]| {
            let p = cel.compile("c", src).unwrap();
            eval(&cel, &p, vals, ts)
        };
        assert!(run("temp > attributes.limit", &[("temp", 30.0)]).unwrap());
        // Window 10 s ending at 100 s: 90..=100.
        assert!(run("avg('temp', '10s') == 95.0", &[]).unwrap());
        assert!(run(
            "count('temp', '10s') == 11.0 && min('temp','10s') == 90.0",
            &[]
        )
        .unwrap());
        assert!(run("delta('temp') == 2.0", &[("temp", 101.0)]).unwrap());
        assert!(run("rate('temp', '10s') == 1.0", &[]).unwrap());
        assert!(run("zscore('temp', '10s') > 1.5", &[("temp", 100.0)]).unwrap());
        assert!(run("device.name == 'pump' && ts == 100000.0", &[]).unwrap());
        // To a change-in-mean model a steady ramp is a staircase of small upward shifts.
        assert!(run("level_shift('temp', '1m') > 0.0", &[]).unwrap());
        assert!(
            run("level_shift('temp', '3s') == 0.0", &[]).unwrap(),
            "too short"
        );
        assert!(run("pressure > 1.0", &[])
            .unwrap_err()
            .to_string()
            .contains("pressure"));
    }
}
