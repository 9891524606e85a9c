//! Random bytes and near-valid text at the two parsers that take outside input: the
//! configuration file and the body of `POST /performance-optimize`. Each answer is a value
//! or a clear error, never a panic. The same entry points are fuzzed with libFuzzer under
//! `fuzz/`; this is the bounded version that runs with `cargo test`.

use std::collections::HashMap;

use perfpilot::api::parse_optimize_request;
use perfpilot::config::{load_from_str, ConfigError, Overrides};
use proptest::prelude::*;

/// Keys the configuration has (and a few it has not), as dotted TOML keys.
const KEYS: &[&str] = &[
    "enabled",
    "interval",
    "max_interval",
    "memory_budget",
    "dry_run",
    "history_size",
    "strategy_timeout",
    "post_action_delay",
    "backoff_after_failures",
    "max_backoff",
    "shutdown_grace",
    "worker_id",
    "api.enabled",
    "api.listen",
    "api.token",
    "api.insecure",
    "api.request_timeout",
    "api.rate_limit.per_minute",
    "api.rate_limit.burst",
    "log.level",
    "log.format",
    "strategies.memory_purge.enabled",
    "strategies.memory_purge.trigger.above",
    "strategies.memory_purge.trigger.critical",
    "strategies.memory_purge.trigger.clear_below",
    "strategies.memory_purge.trigger.for",
    "strategies.memory_purge.trigger.cooldown",
    "strategies.memory_purge.trigger.smoothing",
    "strategies.memory_purge.trigger.signal",
    "strategies.cache_trim.fraction",
    "strategies.interval_backoff.trigger.above",
    "strategies.connection_reap.idle",
    "nonsense",
    "api.rate_limit.nonsense",
];

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("nan".to_owned()),
        Just("-inf".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
        "[0-9]{1,20}(ns|us|ms|s|m|h|d|KiB|MiB|GiB|x)?".prop_map(|s| format!("{s:?}")),
        Just("\"127.0.0.1:0\"".to_owned()),
        Just("\"0.0.0.0:80\"".to_owned()),
        Just("[1, \"two\", 3.0]".to_owned()),
        Just("{ above = 0.5 }".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
    ]
}

/// Text shaped like a configuration file: known and unknown keys with values of any type.
fn toml_like() -> impl Strategy<Value = String> {
    proptest::collection::vec((proptest::sample::select(KEYS), toml_value()), 0..12).prop_map(
        |lines| {
            lines
                .into_iter()
                .map(|(key, value)| format!("{key} = {value}\n"))
                .collect()
        },
    )
}

fn check_config(text: &str) {
    match load_from_str(text, &HashMap::new(), &Overrides::default()) {
        Ok(loaded) => assert_eq!(loaded.config.validate(), Ok(())),
        Err(ConfigError::File { message, .. }) => assert!(!message.is_empty()),
        Err(ConfigError::Invalid(problems)) => {
            assert!(!problems.is_empty());
            assert!(
                problems
                    .iter()
                    .all(|p| !p.key.is_empty() && !p.why.trim().is_empty()),
                "{problems:?}"
            );
        }
    }
}

fn check_body(bytes: &[u8]) {
    match parse_optimize_request(bytes) {
        Ok(_) => {}
        Err(error) => {
            assert!(
                matches!(error.status().as_u16(), 400 | 422),
                "{}",
                error.status()
            );
            assert!(error.message().contains(r#"{"strategy": "NAME"}"#));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn any_text_as_a_config_file_loads_or_is_a_clear_error(text in any::<String>()) {
        check_config(&text);
    }

    #[test]
    fn config_shaped_text_loads_or_is_a_clear_error(text in toml_like()) {
        check_config(&text);
    }

    #[test]
    fn any_bytes_as_an_optimize_body_parse_or_are_400_or_422(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        check_body(&bytes);
    }

    #[test]
    fn json_shaped_optimize_bodies_parse_or_are_400_or_422(
        body in prop_oneof![
            "\\{\"strategy\": \"[ -~]{0,16}\"\\}",
            "\\{\"strategy\": (null|1|true|\\[\\]|\\{\\})\\}",
            "\\{\"[a-z]{1,8}\": \"[a-z]{0,8}\"\\}",
            "[\\[\\]{}\":, a-z0-9]{0,32}",
        ],
    ) {
        check_body(body.as_bytes());
    }
}

#[test]
fn known_bad_inputs_are_clear_errors() {
    check_config("[api\nlisten = ");
    check_config("interval = \"-5s\"");
    check_config("history_size = 99999999999999999999");
    check_config("[api.rate_limit]\nper_minute = 5\nburst = 0");
    assert!(load_from_str(
        "[api.rate_limit]\nper_minute = 5\nburst = 0",
        &HashMap::new(),
        &Overrides::default()
    )
    .unwrap_err()
    .to_string()
    .contains("api.rate_limit.burst = 0"));
    check_body(b"\xff\xfe");
    check_body(b"{\"strategy\": \"memory\", \"extra\": 1}");
    assert_eq!(
        parse_optimize_request(b"  \n").unwrap().strategy,
        None,
        "whitespace is an empty body"
    );
}
