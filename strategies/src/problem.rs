//! What is wrong with a configuration, as data: each [`Problem`] names its key, the value as
//! written, where that value came from ([`Origin`]) and why it is refused. Validation returns
//! every problem at once; the loader fills in the origins.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The TOML file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// This command-line flag, e.g. `--listen`.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// One thing wrong with a configuration, shown as `key = value: why (from origin)`.
///
/// ```
/// use perfpilot_strategies::problem::{Origin, Problem};
///
/// let problem = Problem::new("interval", "0s", "must be at least 10ms")
///     .from(Origin::Env("PERFPILOT_INTERVAL".into()));
/// assert_eq!(problem.to_string(), "interval = 0s: must be at least 10ms (from env PERFPILOT_INTERVAL)");
/// assert_eq!(Problem::at("a.trigger", "required, missing").to_string(), "a.trigger: required, missing");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key (`strategies.memory_purge.trigger.above`), or the environment variable a
    /// problem is about when it is not a key's (`MEMORY_THRESHOLD`).
    pub key: String,
    /// The value as written (`1.5`, `"loud"`, `0s`), where there is one. `Display` shows a
    /// secret's as `"***"` and a URL without credentials or query values ([`crate::secret`]). A problem about several keys lists the others after it.
    pub value: Option<String>,
    /// Where the value came from; [`Origin::Default`] until the loader knows better.
    pub origin: Origin,
    /// Why it is refused, with what is allowed.
    pub why: String,
}

impl Problem {
    /// A problem with `key = value`.
    pub fn new(key: impl Into<String>, value: impl fmt::Display, why: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            value: Some(value.to_string()),
            origin: Origin::Default,
            why: why.into(),
        }
    }

    /// A problem at `key` without a value (a missing key, a malformed name).
    pub fn at(key: impl Into<String>, why: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            value: None,
            origin: Origin::Default,
            why: why.into(),
        }
    }

    /// `key = 0s` "must be positive" when `duration` is zero: the check of every timeout,
    /// interval and horizon that cannot be zero.
    pub fn unless_positive(key: impl Into<String>, duration: std::time::Duration) -> Option<Self> {
        duration
            .is_zero()
            .then(|| Problem::new(key, "0s", "must be positive"))
    }

    /// The same problem, its value from `origin`.
    pub fn from(self, origin: Origin) -> Self {
        Problem { origin, ..self }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)?;
        if let Some(value) = &self.value {
            // Secrets and URL credentials never reach a message (crate::secret).
            write!(f, " = {}", crate::secret::shown_value(&self.key, value))?;
        }
        write!(f, ": {}", self.why)?;
        match &self.origin {
            Origin::Default => Ok(()),
            // A problem about a variable itself does not name it twice.
            Origin::Env(name) if *name == self.key => Ok(()),
            origin => write!(f, " (from {origin})"),
        }
    }
}
