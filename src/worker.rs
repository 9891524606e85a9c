//! The agent's identity in a fleet: `workerId` in the API and the `worker` label on every
//! `perfpilot_` metric, so the agents one Prometheus scrapes can be told apart.
//!
//! By default it is `<hostname>-<pid>` (in Kubernetes the hostname is the pod name); the
//! `worker_id` setting (`PERFPILOT_WORKER_ID`, `--worker-id`) replaces it.

use serde_json::Value;

/// Where the kernel publishes the host name (the UTS namespace's, so a container's own).
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// The identity of this agent: the configured id, or `<hostname>-<pid>`.
///
/// An example: `tests::example_a_configured_id_is_the_label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerIdentity {
    label: String,
}

impl WorkerIdentity {
    /// The configured id, or else `<hostname>-<pid>` of this process.
    pub fn new(configured: Option<&str>) -> Self {
        let label = match configured {
            Some(id) => id.to_owned(),
            None => format!("{}-{}", hostname(), std::process::id()),
        };
        WorkerIdentity { label }
    }

    /// The id as text: the value of the `worker` label in `/metrics`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The id as the JSON API shows it (`workerId`, `worker`): a whole number stays a number,
    /// as the source documents' clients send cluster worker numbers (`"3"` → `3`); anything
    /// else, including a number written with leading zeros (`"0042"`), is a string.
    pub fn json(&self) -> Value {
        let canonical_number = self
            .label
            .parse::<u64>()
            .ok()
            .filter(|number| number.to_string() == self.label);
        match canonical_number {
            Some(number) => Value::from(number),
            None => Value::from(self.label.clone()),
        }
    }
}

/// The kernel's host name, or `localhost` when it cannot be read (no /proc).
pub fn hostname() -> String {
    std::fs::read_to_string(HOSTNAME_FILE)
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    /// The example the module's documentation once showed.
    #[test]
    fn example_a_configured_id_is_the_label() {
        let id = super::WorkerIdentity::new(Some("edge-1"));
        assert_eq!(id.label(), "edge-1");
    }

    use serde_json::json;

    use super::*;

    #[test]
    fn the_default_is_the_kernel_hostname_and_our_pid() {
        let id = WorkerIdentity::new(None);
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let expected = format!("{}-{}", hostname.trim(), std::process::id());
        assert_eq!(id.label(), expected);
        assert_eq!(id.json(), json!(expected));
    }

    #[test]
    fn whole_numbers_stay_numbers_in_json_and_everything_else_is_a_string() {
        for (configured, expected) in [
            ("4242", json!(4242)),
            ("0", json!(0)),
            ("0042", json!("0042")),
            ("+7", json!("+7")),
            ("-1", json!("-1")),
            ("1.5", json!("1.5")),
            ("99999999999999999999", json!("99999999999999999999")),
            ("edge-1", json!("edge-1")),
        ] {
            let id = WorkerIdentity::new(Some(configured));
            assert_eq!(id.json(), expected, "{configured}");
            assert_eq!(id.label(), configured);
        }
    }
}
