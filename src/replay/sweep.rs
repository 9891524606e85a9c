//! `--sweep KEY=V1,V2,...`: one candidate per value, the candidate file with `KEY` set.

use std::collections::HashMap;

use crate::config::{load_from_str, Config, Overrides};

use super::ReplayError;

/// A sweep: a dotted key and its values, as given.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// The dotted key (`budgets.memory.goal`).
    pub key: String,
    /// Its values, as TOML values (`0.6`, `"30s"`).
    pub values: Vec<String>,
}

impl Sweep {
    /// Parses `KEY=V1,V2,...`.
    pub fn parse(text: &str) -> Result<Sweep, ReplayError> {
        let (key, values) = text
            .split_once('=')
            .ok_or_else(|| ReplayError::Sweep(format!("`{text}`: expected KEY=V1,V2,...")))?;
        let values: Vec<String> = values
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        if key.trim().is_empty() || values.is_empty() {
            return Err(ReplayError::Sweep(format!(
                "`{text}`: expected KEY=V1,V2,..."
            )));
        }
        Ok(Sweep {
            key: key.trim().to_owned(),
            values,
        })
    }

    /// The candidate `toml` (a configuration file's text) with the key set to `value`.
    pub fn candidate(&self, toml: &str, value: &str) -> Result<Config, ReplayError> {
        let mut table: toml::Table = toml
            .parse()
            .map_err(|e| ReplayError::Config(format!("not TOML: {e}")))?;
        let parsed: toml::Value = format!("value = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("value"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        let mut parts: Vec<&str> = self.key.split('.').collect();
        let last = parts
            .pop()
            .ok_or_else(|| ReplayError::Sweep(format!("`{}`: empty key", self.key)))?;
        let mut at = &mut table;
        for part in parts {
            at = at
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| {
                    ReplayError::Sweep(format!("`{}`: `{part}` is not a table", self.key))
                })?;
        }
        at.insert(last.to_owned(), parsed);
        let text = toml::to_string(&table)
            .map_err(|e| ReplayError::Sweep(format!("`{}`: {e}", self.key)))?;
        load_candidate(&text)
    }
}

/// A candidate configuration from a file's text: loaded and validated, the environment not
/// read (a replay is of the file, not of the shell it runs in).
pub fn load_candidate(toml: &str) -> Result<Config, ReplayError> {
    load_from_str(toml, &HashMap::new(), &Overrides::default())
        .map(|loaded| loaded.config)
        .map_err(|e| ReplayError::Config(e.to_string()))
}
