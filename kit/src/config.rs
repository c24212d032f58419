//! Config objects with one source of truth: the backend's config type.
//!
//! The JSON Schema that `describe` lists is derived from the type
//! (`#[derive(JsonSchema)]`: doc comments become descriptions, serde
//! defaults become `default`, `#[schemars(range(..))]` and `length(..)`
//! become bounds). [`parse`] then checks a config against that same schema
//! before serde sees it: the top level must be an object, every key must be
//! one of its properties, and every value must be inside its bounds. So
//! `describe`, the unknown-key check and the range checks cannot disagree,
//! and every backend words the same mistake the same way.

use bext_locking::PluginError;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The longest timeout a backend accepts by default: an hour. A longer one
/// is a typo, and would let a hung server hang the host that long.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// The JSON Schema of config type `C`, as `describe` lists it: draft 7,
/// inlined, `additionalProperties: false` (unknown keys are refused), and
/// without the `null` that serde's optional fields would add (leaving a
/// key out is how a default is asked for).
pub fn schema<C: JsonSchema>() -> Value {
    let settings = SchemaSettings::draft07().with(|s| {
        s.meta_schema = None;
        s.inline_subschemas = true;
    });
    let mut value = settings.into_generator().into_root_schema_for::<C>().to_value();
    if let Value::Object(root) = &mut value {
        root.remove("title");
        one_line(root);
        if root.get("type").and_then(Value::as_str) == Some("object") {
            root.insert("additionalProperties".into(), Value::Bool(false));
        }
        if let Some(Value::Object(props)) = root.get_mut("properties") {
            props.values_mut().for_each(tidy_property);
        }
    }
    value
}

/// Doc comments wrap; a description is one line of text.
fn one_line(schema: &mut Map<String, Value>) {
    if let Some(Value::String(d)) = schema.get_mut("description") {
        *d = d.split_whitespace().collect::<Vec<_>>().join(" ");
    }
}

/// Drops what only says how Rust stores a value (`format: uint64`) and the
/// `null` alternative of optional fields.
fn tidy_property(p: &mut Value) {
    let Value::Object(p) = p else { return };
    one_line(p);
    if p.get("type").and_then(Value::as_str).is_some_and(|t| t == "integer" || t == "number")
        || p.get("type").and_then(Value::as_array).is_some()
    {
        p.remove("format");
    }
    if let Some(Value::Array(types)) = p.get_mut("type") {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types.remove(0);
            p.insert("type".into(), only);
        }
        p.remove("format");
    }
    // An optional enum or struct is `anyOf: [its schema, {type: null}]`.
    if let Some(Value::Array(any)) = p.get("anyOf") {
        let non_null: Vec<&Value> =
            any.iter().filter(|s| s.get("type").and_then(Value::as_str) != Some("null")).collect();
        if non_null.len() == 1 && any.len() == 2 {
            if let Value::Object(inner) = non_null[0].clone() {
                p.remove("anyOf");
                for (k, v) in inner {
                    p.entry(k).or_insert(v);
                }
            }
        }
    }
    if p.get("default") == Some(&Value::Null) {
        p.remove("default");
    }
}

/// Parses a config object strictly against `C`'s schema (see the module
/// docs). Every failure is `invalid_argument`, naming the key at fault.
pub fn parse<C: DeserializeOwned + JsonSchema>(text: &str) -> Result<C, PluginError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| PluginError::invalid(format!("config is not valid JSON: {e}")))?;
    parse_value(value)
}

/// [`parse`] for a config already read as JSON.
pub fn parse_value<C: DeserializeOwned + JsonSchema>(value: Value) -> Result<C, PluginError> {
    check(&value, &schema::<C>())?;
    serde_json::from_value(value).map_err(|e| PluginError::invalid(format!("bad config: {e}")))
}

/// Checks a config built in Rust against its own schema, as [`parse`]
/// checks one that arrives as JSON.
pub fn check_config<C: Serialize + JsonSchema>(config: &C) -> Result<(), PluginError> {
    let value = serde_json::to_value(config)
        .map_err(|e| PluginError::invalid(format!("bad config: {e}")))?;
    // `None` fields serialize as null, which means "the default" here.
    let value = match value {
        Value::Object(map) => {
            Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    };
    check(&value, &schema::<C>())
}

/// Checks that `value` is an object whose keys are all properties of
/// `schema`, each inside the bounds the schema gives it.
pub fn check(value: &Value, schema: &Value) -> Result<(), PluginError> {
    let Value::Object(map) = value else {
        return Err(PluginError::invalid("config must be a JSON object"));
    };
    let known = schema.get("properties").and_then(Value::as_object);
    for (key, v) in map {
        let Some(property) = known.and_then(|k| k.get(key)) else {
            return Err(PluginError::invalid(unknown_key(key, known)));
        };
        check_bounds(key, v, property).map_err(PluginError::invalid)?;
    }
    Ok(())
}

fn unknown_key(key: &str, known: Option<&Map<String, Value>>) -> String {
    let mut names: Vec<&str> =
        known.map(|k| k.keys().map(String::as_str).collect()).unwrap_or_default();
    names.sort_unstable();
    let list = if names.is_empty() { "none".to_owned() } else { names.join(", ") };
    format!("unknown config key `{key}`; known keys: {list}")
}

/// The schema's bounds on one value: numbers, string lengths, list sizes.
/// Types are left to serde, whose messages name them.
fn check_bounds(name: &str, v: &Value, s: &Value) -> Result<(), String> {
    let bound = |k: &str| s.get(k).filter(|b| b.is_number());
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            let (min, max) = (bound("minimum"), bound("maximum"));
            let (above, below) = (bound("exclusiveMinimum"), bound("exclusiveMaximum"));
            let f = |b: &Value| b.as_f64().unwrap_or(f64::NAN);
            let ok = min.is_none_or(|b| x >= f(b))
                && max.is_none_or(|b| x <= f(b))
                && above.is_none_or(|b| x > f(b))
                && below.is_none_or(|b| x < f(b));
            if ok {
                return Ok(());
            }
            let lower =
                min.map(|b| format!("at least {b}")).or(above.map(|b| format!("above {b}")));
            let upper = max.map(|b| format!("at most {b}")).or(below.map(|b| format!("below {b}")));
            let range = match (min, max, lower, upper) {
                (Some(lo), Some(hi), _, _) => format!("{lo} to {hi}"),
                (_, _, Some(l), Some(u)) => format!("{l} and {u}"),
                (_, _, l, u) => l.or(u).unwrap_or_default(),
            };
            Err(format!("{name} is {n}; it must be {range}"))
        }
        Value::String(text) => sized(
            name,
            text.chars().count(),
            s,
            "minLength",
            "maxLength",
            ["character", "characters"],
        ),
        Value::Array(items) => {
            sized(name, items.len(), s, "minItems", "maxItems", ["entry", "entries"])
        }
        _ => Ok(()),
    }
}

fn sized(
    name: &str,
    len: usize,
    s: &Value,
    min: &str,
    max: &str,
    unit: [&str; 2],
) -> Result<(), String> {
    let units = |n: u64| unit[usize::from(n != 1)];
    let get = |k: &str| s.get(k).and_then(Value::as_u64);
    let (lo, hi) = (get(min), get(max));
    let len64 = len as u64;
    if lo.is_none_or(|lo| len64 >= lo) && hi.is_none_or(|hi| len64 <= hi) {
        return Ok(());
    }
    if len == 0 {
        let lo = lo.unwrap_or(1);
        return Err(format!("{name} is empty; it needs at least {lo} {}", units(lo)));
    }
    let range = match (lo, hi) {
        (Some(lo), Some(hi)) => format!("{lo} to {hi}"),
        (Some(lo), None) => format!("at least {lo}"),
        (None, Some(hi)) => format!("at most {hi}"),
        (None, None) => unreachable!("checked above"),
    };
    Err(format!("{name} has {len} {}; it must have {range}", units(len64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bext_locking::ErrorKind;
    use serde::{Deserialize, Serialize};

    /// A test config.
    #[derive(Deserialize, Serialize, JsonSchema, Debug)]
    #[allow(dead_code)]
    struct Cfg {
        /// Where the
        /// locks live.
        path: String,
        /// How long to wait.
        #[serde(default = "busy")]
        #[schemars(range(min = 1, max = 600_000))]
        busy_timeout_ms: u64,
        /// A share of the TTL.
        #[serde(default)]
        #[schemars(range(min = 0), extend("exclusiveMaximum" = 0.5))]
        drift: Option<f64>,
        /// Servers.
        #[serde(default)]
        #[schemars(length(min = 1))]
        urls: Option<Vec<String>>,
    }

    fn busy() -> u64 {
        5_000
    }

    fn err(json: &str) -> String {
        let e = parse::<Cfg>(json).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{json}");
        e.message
    }

    #[test]
    fn the_schema_comes_from_the_type() {
        let s = schema::<Cfg>();
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"], serde_json::json!(["path"]));
        let p = &s["properties"];
        assert_eq!(p["path"]["description"], "Where the locks live.");
        assert_eq!(p["busy_timeout_ms"]["type"], "integer");
        assert_eq!(p["busy_timeout_ms"]["default"], 5000);
        assert_eq!(p["busy_timeout_ms"]["minimum"], 1);
        assert_eq!(p["busy_timeout_ms"]["maximum"], 600000);
        assert!(p["busy_timeout_ms"].get("format").is_none());
        assert_eq!(p["drift"]["type"], "number");
        assert_eq!(p["urls"]["type"], "array");
        assert_eq!(p["urls"]["minItems"], 1);
        assert!(s.get("$schema").is_none() && s.get("title").is_none());
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = err(r#"{"path":"x","paht":"y"}"#);
        assert_eq!(e, "unknown config key `paht`; known keys: busy_timeout_ms, drift, path, urls");
    }

    #[test]
    fn bounds_come_from_the_schema() {
        assert_eq!(
            err(r#"{"path":"p","busy_timeout_ms":0}"#),
            "busy_timeout_ms is 0; it must be 1 to 600000"
        );
        assert!(
            err(r#"{"path":"p","busy_timeout_ms":600001}"#).contains("busy_timeout_ms is 600001")
        );
        assert!(err(r#"{"path":"p","busy_timeout_ms":-1}"#).contains("busy_timeout_ms is -1"));
        assert_eq!(
            err(r#"{"path":"p","drift":0.5}"#),
            "drift is 0.5; it must be at least 0 and below 0.5"
        );
        assert_eq!(err(r#"{"path":"p","urls":[]}"#), "urls is empty; it needs at least 1 entry");
        assert!(
            parse::<Cfg>(r#"{"path":"p","busy_timeout_ms":600000,"drift":0,"urls":["a"]}"#).is_ok()
        );
        let built = Cfg { path: "p".into(), busy_timeout_ms: 0, drift: None, urls: None };
        assert_eq!(
            check_config(&built).unwrap_err().message,
            "busy_timeout_ms is 0; it must be 1 to 600000"
        );
        assert!(check_config(&Cfg { busy_timeout_ms: 1, ..built }).is_ok());
    }

    #[test]
    fn wrong_shapes_are_invalid() {
        for bad in
            ["[]", "\"x\"", "{", r#"{"path":5}"#, "{}", r#"{"path":"p","busy_timeout_ms":"9"}"#]
        {
            err(bad);
        }
        assert!(err("[1]").contains("must be a JSON object"));
        assert!(err("{").contains("not valid JSON"));
    }
}
