//! Random bytes and near-valid text at the two parsers that take outside input: the
//! configuration file and the body of `POST /performance-optimize`. Each answer is a value
//! or a clear error, never a panic. The same entry points are fuzzed with libFuzzer under
//! `fuzz/`; this is the bounded version that runs with `cargo test`.

use std::collections::HashMap;

use perfpilot::__internal::parse_optimize_request;
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

/// A configuration that must be refused, with an error mentioning `names` (the key or
/// what was wrong).
fn check_bad_config(text: &str, names: &str) {
    check_config(text);
    let error = match load_from_str(text, &HashMap::new(), &Overrides::default()) {
        Ok(loaded) => panic!("bad config {text:?} was accepted: {:?}", loaded.config),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains(names),
        "the error for {text:?} does not name `{names}`: {error}"
    );
}

/// A body that must be refused with 400 or 422 naming the expected shape, and `names`.
fn check_bad_body(bytes: &[u8], names: &str) {
    check_body(bytes);
    match parse_optimize_request(bytes) {
        Ok(request) => panic!(
            "bad body {:?} was accepted: {request:?}",
            String::from_utf8_lossy(bytes)
        ),
        Err(error) => assert!(
            error.message().contains(names),
            "the error for {:?} does not name `{names}`: {}",
            String::from_utf8_lossy(bytes),
            error.message()
        ),
    }
}

#[test]
fn known_bad_inputs_are_clear_errors() {
    check_bad_config("[api\nlisten = ", "TOML");
    check_bad_config("interval = \"-5s\"", "interval");
    check_bad_config("history_size = 99999999999999999999", "history_size");
    check_bad_config(
        "[api.rate_limit]\nper_minute = 5\nburst = 0",
        "api.rate_limit.burst = 0",
    );
    check_bad_config("nonsense = 1", "nonsense");
    check_bad_config("[strategies.memory_purge.trigger]\nabove = 7", "above");
    check_bad_body(b"\xff\xfe", "malformed JSON body");
    check_bad_body(b"{\"strategy\": \"memory\", \"extra\": 1}", "extra");
    check_bad_body(b"{\"strategy\": 1}", "invalid request body");
    check_bad_body(b"[\"memory\"]", "not a JSON object");
    assert_eq!(
        parse_optimize_request(b"  \n").unwrap().strategy,
        None,
        "whitespace is an empty body"
    );
}
