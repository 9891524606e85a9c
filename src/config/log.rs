//! Logging (`[log]`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Problem;

/// Logging (`[log]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// One of [`LogConfig::LEVELS`], or a filter directive containing `=` such as
    /// `"info,perfpilot=debug"` (tracing's `Targets` syntax: targets and levels, no span or field filters); by default `"info"`.
    /// Legacy variable `LOG_LEVEL`.
    pub level: String,
    /// Line format; by default [`LogFormat::Text`].
    pub format: LogFormat,
}

impl LogConfig {
    /// The plain levels `level` may be.
    pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
    /// Default `level`.
    pub const DEFAULT_LEVEL: &str = "info";

    pub(super) fn problems(&self) -> Vec<Problem> {
        if Self::LEVELS.contains(&self.level.as_str()) || self.level.contains('=') {
            Vec::new()
        } else {
            vec![Problem::new(
                "log.level",
                format!("{:?}", self.level),
                format!(
                    "must be one of {}, or a filter directive such as \"info,perfpilot=debug\"",
                    Self::LEVELS.join(", ")
                ),
            )]
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: Self::DEFAULT_LEVEL.to_owned(),
            format: LogFormat::default(),
        }
    }
}

/// How log lines are written.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl FromStr for LogFormat {
    type Err = String;

    /// `text` or `json`, case-insensitive.
    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("`{text}`: log format must be text or json")),
        }
    }
}
