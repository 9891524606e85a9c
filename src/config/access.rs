//! Who may call the API (SPEC §11): the `[api]` keys about hosts, origins, read access and
//! connection bounds, and their validation.

use serde::{Deserialize, Deserializer};

use perfpilot_strategies::secret;

use super::{ApiConfig, Problem};

/// Largest `api.max_connections` allowed.
pub const MAX_MAX_CONNECTIONS: usize = 65_536;

impl ApiConfig {
    /// Problems with `read_token`, `allowed_hosts`, `allowed_origins`, `max_connections` and
    /// the connection timeouts, each naming its key.
    pub(super) fn access_problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (key, token) in [
            ("api.token", &self.token),
            ("api.read_token", &self.read_token),
        ] {
            if let Some(why) = token.as_deref().and_then(token_problem) {
                problems.push(Problem::new(key, secret::HIDDEN, why));
            }
        }
        if self.read_token.is_some() && self.token.is_none() {
            problems.push(Problem::at(
                "api.read_token",
                "is set without api.token: reads would need a token while POST routes (running strategies, reloading the configuration) stay open to anyone; set api.token too",
            ));
        }
        for (i, host) in self.allowed_hosts.iter().enumerate() {
            if let Err(why) = check_host(host) {
                problems.push(Problem::new(
                    format!("api.allowed_hosts[{i}]"),
                    format!("{host:?}"),
                    why,
                ));
            }
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            if let Err(why) = check_origin(origin) {
                problems.push(Problem::new(
                    format!("api.allowed_origins[{i}]"),
                    format!("{origin:?}"),
                    why,
                ));
            }
        }
        if !(1..=MAX_MAX_CONNECTIONS).contains(&self.max_connections) {
            problems.push(Problem::new(
                "api.max_connections",
                self.max_connections,
                format!("must be in 1..={MAX_MAX_CONNECTIONS}"),
            ));
        }
        problems.extend(Problem::unless_positive(
            "api.header_read_timeout",
            self.header_read_timeout,
        ));
        problems.extend(Problem::unless_positive(
            "api.idle_timeout",
            self.idle_timeout,
        ));
        problems
    }
}

/// What is wrong with a token, if anything. A token travels in an `Authorization` header and
/// is compared byte for byte: only visible ASCII (`!` to `~`) can arrive as written, so a
/// space, a control character or a non-ASCII letter would make a token that never matches.
fn token_problem(token: &str) -> Option<String> {
    if token.is_empty() {
        return Some("must be non-empty".to_owned());
    }
    let bad = token.chars().filter(|c| !c.is_ascii_graphic()).count();
    (bad > 0).then(|| {
        format!(
            "must be visible ASCII characters only (`!` to `~`: no spaces, control characters or non-ASCII letters); {bad} of its {} characters are not",
            token.chars().count()
        )
    })
}

/// A host name as written in `Host` without the port (`perfpilot.monitoring.svc`), or `*`.
fn check_host(host: &str) -> Result<(), &'static str> {
    if host == "*" {
        return Ok(());
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if valid {
        Ok(())
    } else {
        Err("must be a host name (letters, digits, `-`, `.`, `_`; no scheme, port or path), or `*` for any")
    }
}

/// A web origin `scheme://host[:port]` (no path), or `*`.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    const WHAT: &str =
        "must be an origin `http://host[:port]` or `https://host[:port]` (no path), or `*` for any";
    if origin == "*" {
        return Ok(());
    }
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .ok_or(WHAT)?;
    let valid = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '[' | ']'));
    if valid {
        Ok(())
    } else {
        Err(WHAT)
    }
}

/// A list of strings: a TOML array, or one string with comma-separated items (how a list
/// arrives from an environment variable). Items are trimmed; empty ones are dropped.
pub(super) fn string_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        Text(String),
    }
    let items = match Either::deserialize(deserializer)? {
        Either::List(items) => items,
        Either::Text(text) => text.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_owned())
        .filter(|item| !item.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_be_visible_ascii_and_a_read_token_needs_a_token() {
        for bad in ["caf\u{e9}", "tab\there", "nul\0", "bell\u{7}", " lead"] {
            let api = ApiConfig {
                token: Some(bad.into()),
                ..ApiConfig::default()
            };
            let problems = api.access_problems();
            assert_eq!(problems.len(), 1, "{bad:?}: {problems:?}");
            let text = problems[0].to_string();
            assert!(
                text.starts_with("api.token = \"***\": must be visible ASCII"),
                "{text}"
            );
        }
        let read_only = ApiConfig {
            read_token: Some("r-token".into()),
            ..ApiConfig::default()
        };
        let problems = read_only.access_problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0]
            .to_string()
            .starts_with("api.read_token: is set without api.token"));
    }

    #[test]
    fn hosts_origins_and_bounds_are_checked_by_key() {
        let mut api = ApiConfig {
            token: Some("write-token".into()),
            read_token: Some("two words".into()),
            allowed_hosts: vec!["perfpilot.default.svc".into(), "http://x".into()],
            allowed_origins: vec!["https://grafana.example:3000".into(), "grafana".into()],
            max_connections: 0,
            ..ApiConfig::default()
        };
        let problems: Vec<String> = api
            .access_problems()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("api.read_token = \"***\": must be visible ASCII"));
        assert!(!problems[0].contains("two"), "{problems:?}");
        assert!(problems[1].starts_with("api.allowed_hosts[1] = \"http://x\": must be a host name"));
        assert!(problems[2].starts_with("api.allowed_origins[1] = \"grafana\": must be an origin"));
        assert!(problems[3].starts_with("api.max_connections = 0: must be in 1..="));
        api = ApiConfig::default();
        assert!(api.access_problems().is_empty());
    }

    #[test]
    fn lists_come_as_arrays_or_comma_separated_text() {
        #[derive(Deserialize)]
        struct Holder {
            #[serde(deserialize_with = "string_list")]
            list: Vec<String>,
        }
        let from_text: Holder = serde_json::from_str(r#"{"list": " a.svc, b ,,"}"#).unwrap();
        assert_eq!(from_text.list, ["a.svc", "b"]);
        let from_array: Holder = serde_json::from_str(r#"{"list": ["a", "b"]}"#).unwrap();
        assert_eq!(from_array.list, ["a", "b"]);
        assert!(serde_json::from_str::<Holder>(r#"{"list": 3}"#).is_err());
    }
}
