//! The configuration's JSON Schema (`perfpilot schema`), derived from the config types
//! (schemars): their doc comments are its descriptions, their serde attributes its keys.
//!
//! What the derive cannot know is filled in from the code here: every default is the value of
//! [`Config::default`] (the loader's lowest layer), and a table the defaults fill is merged
//! key by key, so nothing in it is required (`[strategies.memory_purge.trigger]` with only
//! `above` is whole). Ranges are the loader's where a schema can say them (numbers: the
//! `range` attributes name the same constants as [`Config::validate`]); a duration's or a
//! ratio's bounds that depend on another key are the loader's alone.
//!
//! The schema is draft 7, which editors' TOML support (Taplo, "Even Better TOML") reads, with
//! every sub-schema inlined so that each key's default is its own.

use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::Config;

/// The JSON Schema of `perfpilot.toml`.
pub(crate) fn json_schema() -> Value {
    let mut settings = SchemaSettings::draft07();
    settings.inline_subschemas = true;
    let schema = settings.into_generator().into_root_schema_for::<Config>();
    let mut schema = schema.to_value();
    let defaults = serde_json::to_value(Config::default()).expect("the default config is JSON");
    fill_defaults(&mut schema, Some(&defaults));
    if let Some(root) = schema.as_object_mut() {
        root.insert("title".into(), "perfpilot.toml".into());
        root.insert(
            "description".into(),
            "The configuration of perfpilot, a self-tuning performance optimizer agent \
             (`perfpilot schema` prints this; docs/configuration.md lists every key)."
                .into(),
        );
    }
    schema
}

/// Sets each key's `default` to the value `defaults` has for it, and drops `required` from
/// every table the defaults fill (the loader merges a file onto them key by key).
fn fill_defaults(schema: &mut Value, defaults: Option<&Value>) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    if defaults.is_some_and(Value::is_object) {
        object.remove("required");
    }
    if let Some(Value::Object(properties)) = object.get_mut("properties") {
        for (key, property) in properties.iter_mut() {
            let default = defaults.and_then(|d| d.get(key));
            if let (Some(default), Some(property)) = (default, property.as_object_mut()) {
                if !default.is_object() {
                    property.insert("default".into(), default.clone());
                } else {
                    property.remove("default");
                }
            }
            fill_defaults(property, default);
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(variants)) = object.get_mut(key) {
            for variant in variants {
                fill_defaults(variant, defaults);
            }
        }
    }
    for key in ["additionalProperties", "items"] {
        if let Some(inner) = object.get_mut(key) {
            fill_defaults(inner, None);
        }
    }
}

/// One key of the configuration as the reference table shows it (docs/configuration.md,
/// written by the test of `cli::reference`).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeyRow {
    /// Its dotted path (`api.rate_limit.burst`; `NAME` for a table's own names).
    pub key: String,
    /// Its type as written in TOML.
    pub kind: String,
    /// Its default, as TOML; empty where it has none.
    pub default: String,
    /// Its allowed values or range, where the schema says them.
    pub range: String,
    /// Its description's first sentence.
    pub description: String,
}

/// Every key of the schema, depth first, in the order of the config types' fields.
#[cfg(test)]
pub(crate) fn keys(schema: &Value) -> Vec<KeyRow> {
    let mut rows = Vec::new();
    walk_keys(schema, "", &mut rows);
    rows
}

#[cfg(test)]
fn walk_keys(schema: &Value, prefix: &str, rows: &mut Vec<KeyRow>) {
    let object = schema.as_object();
    let required: Vec<&str> = object
        .and_then(|o| o.get("required"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if let Some(Value::Object(properties)) = object.and_then(|o| o.get("properties")) {
        for (key, property) in properties {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if is_table(property) {
                walk_keys(property, &path, rows);
            } else {
                let mut row = row(&path, property);
                if required.contains(&key.as_str()) {
                    row.default = "required".into();
                }
                rows.push(row);
                if let Some(items) = property.get("items").filter(|i| is_table(i)) {
                    walk_keys(items, &format!("{path}[]"), rows);
                }
            }
        }
    }
    if let Some(inner) = object
        .and_then(|o| o.get("additionalProperties"))
        .filter(|i| is_table(i))
    {
        walk_keys(inner, &format!("{prefix}.NAME"), rows);
    }
    for variant in object
        .and_then(|o| o.get("anyOf"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if is_table(variant) {
            walk_keys(variant, prefix, rows);
        }
    }
}

/// Whether `schema` is a TOML table of known keys or of named entries (a sub-tree of keys),
/// not a value.
#[cfg(test)]
fn is_table(schema: &Value) -> bool {
    let object = schema.as_object();
    let has = |key| object.is_some_and(|o| o.contains_key(key));
    has("properties")
        || object
            .and_then(|o| o.get("additionalProperties"))
            .is_some_and(|a| a.get("properties").is_some())
        || object
            .and_then(|o| o.get("anyOf"))
            .and_then(Value::as_array)
            .is_some_and(|variants| variants.iter().any(|v| v.get("properties").is_some()))
}

#[cfg(test)]
fn row(path: &str, schema: &Value) -> KeyRow {
    let description = schema
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let first = description
        .split_once(". ")
        .map_or(description, |(first, _)| first)
        .trim_end_matches('.')
        .replace('\n', " ");
    let kind = kind(schema);
    let default = match schema.get("default") {
        // Durations as people write them ("1h", "30days"), not as the serializer does.
        Some(Value::String(text)) if kind == "duration" => {
            perfpilot_strategies::duration::parse(text)
                .map(|d| format!("{:?}", humantime::format_duration(d).to_string()))
                .unwrap_or_else(|_| format!("{text:?}"))
        }
        Some(value) => toml_value(value),
        None => String::new(),
    };
    KeyRow {
        key: path.to_owned(),
        kind,
        default,
        range: range(schema),
        description: first,
    }
}

/// The type a TOML writer sees: `duration`, `size`, `string`, `integer`, `number`, `bool`,
/// `array of ...`, `table`, or the one of several values.
#[cfg(test)]
fn kind(schema: &Value) -> String {
    let pattern = schema.get("pattern").and_then(Value::as_str);
    if pattern == Some(perfpilot_strategies::duration::PATTERN) {
        return "duration".into();
    }
    if pattern == Some(super::bytes::PATTERN) {
        return "size".into();
    }
    if schema.get("enum").is_some() || schema.get("oneOf").is_some() {
        return "string".into();
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let types: Vec<&str> = types.into_iter().filter(|t| *t != "null").collect();
    match types.as_slice() {
        ["array"] => {
            let item = schema.get("items").map(kind).unwrap_or_default();
            format!("array of {item}")
        }
        ["object"] => "table".into(),
        ["boolean"] => "bool".into(),
        [one] => (*one).into(),
        [] if schema.get("anyOf").is_some() => "string or table".into(),
        [] => "any".into(),
        many => many.join(" or "),
    }
}

/// The allowed values (`a`, `b`) or numeric bounds (`1..=10000`, `(0, 1]`) the schema gives.
#[cfg(test)]
fn range(schema: &Value) -> String {
    let values: Vec<&str> = match (schema.get("enum"), schema.get("oneOf")) {
        (Some(Value::Array(values)), _) => values.iter().filter_map(Value::as_str).collect(),
        (_, Some(Value::Array(variants))) => variants
            .iter()
            .filter_map(|v| v.get("const").or_else(|| v.get("enum")?.get(0)))
            .filter_map(Value::as_str)
            .collect(),
        _ => Vec::new(),
    };
    if !values.is_empty() {
        let signals: Vec<&str> = perfpilot_strategies::Signal::all()
            .map(perfpilot_strategies::Signal::name)
            .collect();
        if values == signals {
            return "a signal name ([signals.md](signals.md))".into();
        }
        return values
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ");
    }
    if schema.get("pattern").is_some() {
        return String::new();
    }
    let number = |key| schema.get(key).and_then(Value::as_f64);
    let show = |n: f64| {
        if n.fract() == 0.0 && n.abs() < 1e15 {
            format!("{}", n as i64)
        } else {
            format!("{n}")
        }
    };
    let low = number("exclusiveMinimum")
        .map(|n| format!("({}", show(n)))
        .or_else(|| number("minimum").map(|n| format!("[{}", show(n))));
    let high = number("exclusiveMaximum")
        .map(|n| format!("{})", show(n)))
        .or_else(|| number("maximum").map(|n| format!("{}]", show(n))));
    match (low, high) {
        (Some(low), Some(high)) => format!("{low}, {high}"),
        (Some(low), None) if low == "[0" => String::new(),
        (Some(low), None) => format!("{low}, ∞)"),
        (None, Some(high)) => format!("(-∞, {high}"),
        (None, None) => String::new(),
    }
}

/// A JSON value written as TOML (`"5s"`, `0.8`, `[]`).
#[cfg(test)]
fn toml_value(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{text:?}"),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml_value).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) if map.is_empty() => "{}".into(),
        Value::Object(map) => format!(
            "{{ {} }}",
            map.iter()
                .map(|(k, v)| format!("{k} = {}", toml_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
