//! Any bytes as the TOML configuration file: the loader answers with a configuration or a
//! clear error, never a panic.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use perfpilot::config::{load_from_str, ConfigError, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return; // The loader reads files as UTF-8 and reports other bytes before parsing.
    };
    match load_from_str(text, &HashMap::new(), &Overrides::default()) {
        Ok(loaded) => assert_eq!(loaded.config.validate(), Ok(())),
        Err(ConfigError::File { message, .. }) => assert!(!message.is_empty()),
        Err(ConfigError::Invalid(problems)) => assert!(!problems.is_empty()),
    }
});
