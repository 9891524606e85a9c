//! `webhook`: call a sidecar target's own admin hook over HTTP, e.g. `POST /admin/cache/trim`.
//!
//! Each instance is configured under a name of its choosing:
//!
//! ```toml
//! [strategies.webhook.cache-trim-hook]
//! url = "http://127.0.0.1:8080/admin/cache/trim"
//! body = { fraction = 0.25 }
//! [strategies.webhook.cache-trim-hook.trigger]
//! signal = "memory_usage"
//! above = 0.8
//! ```
//!
//! The hook's answer is the measurement: its JSON (e.g. `{"bytes_freed": 1048576}`) goes into
//! the optimization record under `response`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration;
use crate::problem::Problem;
use crate::strategy::{Context, Outcome, RunKind, Strategy, StrategyError};
use crate::trigger::TriggerSpec;

/// Settings of one `webhook` instance (`[strategies.webhook.NAME]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Whether the strategy is registered at all; by default `true`.
    #[serde(default = "crate::default_true")]
    pub enabled: bool,
    /// Its runs disrupt users (sessions dropped, connections closed): `perfpilot replay`
    /// counts them apart. By default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disruptive: bool,
    /// When it runs by itself. Optional for a strategy that is a rung of a budget's ladder
    /// (`[budgets.NAME] ladder`): it then runs only as a rung, and manually.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<TriggerSpec>,
    /// The hook, an `http://` URL (the client has no TLS: hooks are expected on loopback or a
    /// private network).
    pub url: String,
    /// One of [`WebhookConfig::METHODS`], case-insensitive; by default `POST`.
    #[serde(default = "WebhookConfig::default_method")]
    pub method: String,
    /// The JSON body sent (not sent with `GET`); by default `{}`.
    #[serde(default = "WebhookConfig::default_body")]
    pub body: Value,
    /// Extra request headers, e.g. `Authorization`; by default none. Values are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Limit for one attempt, connecting to the end of the response body; by default
    /// [`WebhookConfig::DEFAULT_TIMEOUT`].
    #[serde(default = "WebhookConfig::default_timeout", with = "duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::duration::json_schema")
    )]
    pub timeout: Duration,
    /// Further attempts after a connection error, a timeout or a 5xx answer (never after a
    /// 4xx); by default [`WebhookConfig::DEFAULT_RETRIES`].
    #[serde(default = "WebhookConfig::default_retries")]
    pub retries: u32,
    /// Pause before the first retry, doubled before each further one; by default
    /// [`WebhookConfig::DEFAULT_RETRY_BACKOFF`].
    #[serde(default = "WebhookConfig::default_retry_backoff", with = "duration")]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::duration::json_schema")
    )]
    pub retry_backoff: Duration,
    /// The hook's answer is kept in the record as JSON when it is at most this many bytes
    /// (compact), else as a text excerpt of this many bytes (the record is served by
    /// `GET /performance-metrics`); by default [`crate::DEFAULT_EXCERPT_BYTES`].
    #[serde(default = "crate::default_excerpt_bytes")]
    pub excerpt_bytes: usize,
}

impl WebhookConfig {
    /// Default `method`.
    pub const DEFAULT_METHOD: &'static str = "POST";
    /// The methods allowed.
    pub const METHODS: [&'static str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    /// Default `timeout`: 2 s per attempt, so that three attempts and their pauses (6.6 s)
    /// fit in the agent's default `strategy_timeout` (10 s).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Default `retries`: 2 (three attempts at most).
    pub const DEFAULT_RETRIES: u32 = 2;
    /// Default `retry_backoff`: 200 ms.
    pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(200);

    /// The longest a run can take: every attempt timing out, plus the pauses between them.
    pub fn worst_case_duration(&self) -> Duration {
        let attempts = self.timeout.saturating_mul(self.retries.saturating_add(1));
        let pauses: Duration = (1..=self.retries.min(30))
            .map(|retry| pause_before(self.retry_backoff, retry))
            .sum();
        attempts.saturating_add(pauses)
    }

    /// Settings with every default, calling `url` when `trigger` fires.
    pub fn new(url: impl Into<String>, trigger: TriggerSpec) -> Self {
        WebhookConfig {
            enabled: true,
            disruptive: false,
            trigger: Some(trigger),
            url: url.into(),
            method: Self::default_method(),
            body: Self::default_body(),
            headers: BTreeMap::new(),
            timeout: Self::DEFAULT_TIMEOUT,
            retries: Self::DEFAULT_RETRIES,
            retry_backoff: Self::DEFAULT_RETRY_BACKOFF,
            excerpt_bytes: crate::DEFAULT_EXCERPT_BYTES,
        }
    }

    fn default_method() -> String {
        Self::DEFAULT_METHOD.to_owned()
    }

    fn default_body() -> Value {
        Value::Object(serde_json::Map::new())
    }

    fn default_timeout() -> Duration {
        Self::DEFAULT_TIMEOUT
    }

    fn default_retries() -> u32 {
        Self::DEFAULT_RETRIES
    }

    fn default_retry_backoff() -> Duration {
        Self::DEFAULT_RETRY_BACKOFF
    }

    /// Every problem with the settings (not the trigger), each naming its key under `prefix`.
    pub fn problems(&self, prefix: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Err(why) = check_url(&self.url) {
            problems.push(Problem::new(
                format!("{prefix}.url"),
                format!("{:?}", crate::redact_url(&self.url)),
                why,
            ));
        }
        if !Self::METHODS.contains(&self.method.to_ascii_uppercase().as_str()) {
            problems.push(Problem::new(
                format!("{prefix}.method"),
                format!("{:?}", self.method),
                format!("must be one of {}", Self::METHODS.join(", ")),
            ));
        }
        for (name, value) in &self.headers {
            if !is_header_name(name) {
                problems.push(Problem::new(
                    format!("{prefix}.headers.{name}"),
                    "\"***\"",
                    "not a valid header name (letters, digits and !#$%&'*+-.^_`|~)",
                ));
            } else if value.chars().any(|c| c.is_control() && c != '\t') {
                problems.push(Problem::new(
                    format!("{prefix}.headers.{name}"),
                    "\"***\"",
                    "a header value cannot hold control characters",
                ));
            }
        }
        problems.extend(Problem::unless_positive(
            format!("{prefix}.timeout"),
            self.timeout,
        ));
        problems.extend(crate::excerpt_problem(
            &format!("{prefix}.excerpt_bytes"),
            self.excerpt_bytes,
        ));
        problems
    }

    /// The strategy these settings describe, registered as `name`. Settings that
    /// [`problems`](Self::problems) would reject make every run fail with the reason.
    pub fn build(&self, name: &str) -> Webhook {
        let shown_url = crate::redact_url(&self.url);
        Webhook {
            name: name.to_owned(),
            description: format!(
                "{} {} (timeout {}, {} retries)",
                self.method.to_ascii_uppercase(),
                shown_url,
                duration::format(self.timeout),
                self.retries
            ),
            method: self.method.to_ascii_uppercase(),
            url: shown_url,
            body: self.body.clone(),
            excerpt: self.excerpt_bytes.min(crate::MAX_EXCERPT_BYTES),
            timeout: self.timeout,
            retries: self.retries,
            retry_backoff: self.retry_backoff,
            #[cfg(feature = "sidecar")]
            client: http::Prepared::new(self),
        }
    }
}

/// `Ok` for an `http://` URL with a host.
fn check_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL ({e})"))?;
    match url.scheme() {
        "http" if url.host().is_some() => Ok(url),
        "http" => Err("the URL has no host".to_owned()),
        "https" => Err(
            "https is not supported (perfpilot's HTTP client is built without TLS): use an http:// URL"
                .to_owned(),
        ),
        _ => Err("must be an http:// URL".to_owned()),
    }
}

/// RFC 9110 token characters.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Calls the target's hook with a JSON body, with a timeout per attempt and retries; reports
/// the status and the hook's JSON answer.
///
/// One HTTP client per instance, so connections to the hook are reused between runs. Redirects
/// are not followed (a 3xx is a failure) and no proxy is used: the hook belongs to the target
/// next to the agent. A retried request may reach the hook twice (after a timeout, say), so a
/// hook should tolerate that.
#[cfg_attr(not(feature = "sidecar"), allow(dead_code))]
pub struct Webhook {
    name: String,
    description: String,
    method: String,
    /// The URL as shown in records, messages and logs: without user name and password.
    url: String,
    body: Value,
    /// Bytes of the answer kept in the record.
    excerpt: usize,
    timeout: Duration,
    retries: u32,
    retry_backoff: Duration,
    #[cfg(feature = "sidecar")]
    client: Result<http::Prepared, String>,
}

impl fmt::Debug for Webhook {
    /// Header values (credentials, typically) are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("method", &self.method)
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("retry_backoff", &self.retry_backoff)
            .finish_non_exhaustive()
    }
}

/// `url` without a `user:password@` part (or a lone `user@`), for listings and logs.
pub fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{path}"),
        None => url.to_owned(),
    }
}

impl Webhook {
    /// The kind's name: the `[strategies.webhook]` table.
    pub const KIND: &'static str = "webhook";
    /// Bytes of the hook's answer read at most; the rest is not read.
    pub const RESPONSE_READ_LIMIT: usize = 64 * 1024;

    /// The pause before retry number `retry` (1-based): `retry_backoff`, doubled each time.
    #[cfg_attr(not(feature = "sidecar"), allow(dead_code))]
    fn backoff(&self, retry: u32) -> Duration {
        pause_before(self.retry_backoff, retry)
    }

    /// The headers that tell the hook why it is called (docs/hooks.md), by lowercase name;
    /// the same on every attempt of a run. A header whose value is unknown is left out.
    #[cfg_attr(not(feature = "sidecar"), allow(dead_code))]
    fn context_headers(&self, ctx: &Context) -> Vec<(&'static str, String)> {
        let cause = &ctx.cause;
        let kind = match ctx.kind {
            RunKind::Automatic => "automatic",
            RunKind::Manual => "manual",
        };
        let mut headers = vec![
            ("x-perfpilot-strategy", self.name.clone()),
            ("x-perfpilot-kind", kind.to_owned()),
            ("x-perfpilot-level", ctx.level.to_string()),
        ];
        let optional = [
            (
                "x-perfpilot-run-id",
                Some(cause.run_id.clone()).filter(|id| !id.is_empty()),
            ),
            ("x-perfpilot-signal", cause.signal.map(|s| s.to_string())),
            (
                "x-perfpilot-value",
                cause.value.filter(|v| v.is_finite()).map(|v| v.to_string()),
            ),
            ("x-perfpilot-budget", cause.budget.clone()),
            ("x-perfpilot-rung", cause.rung.map(|r| r.to_string())),
        ];
        headers.extend(
            optional
                .into_iter()
                .filter_map(|(name, value)| Some((name, value?))),
        );
        headers
    }

    #[cfg(feature = "sidecar")]
    fn attempts(n: u32) -> String {
        format!("{n} attempt{}", if n == 1 { "" } else { "s" })
    }
}

#[async_trait]
impl Strategy for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        Self::KIND
    }

    fn acts_on(&self) -> String {
        format!("{} {}", self.method, without_credentials(&self.url))
    }

    fn description(&self) -> &str {
        &self.description
    }

    #[cfg(feature = "sidecar")]
    async fn run(&self, ctx: Context) -> Result<Outcome, StrategyError> {
        let client = self.client.as_ref().map_err(|why| {
            StrategyError::Failed(format!("webhook {} is misconfigured: {why}", self.url))
        })?;
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let result = client.call(self, &ctx).await;
            let retry = match &result {
                Ok(answer) => answer.status.is_server_error(),
                Err(error) => error.retryable(),
            };
            if !retry || attempt > self.retries {
                break result;
            }
            let why = match &result {
                Ok(answer) => answer.status.to_string(),
                Err(error) => error.to_string(),
            };
            tracing::warn!(strategy = %self.name, url = %self.url, attempt, error = %why, "webhook attempt failed, retrying");
            tokio::time::sleep(self.backoff(attempt)).await;
        };
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let request = format!("{} {}", self.method, self.url);
        let attempts = Self::attempts(attempt);
        match result {
            Ok(answer) if answer.status.is_success() => Ok(Outcome::acted(format!(
                "{request} answered {} in {elapsed_ms:.0} ms ({attempts})",
                answer.status
            ))
            .with("url", self.url.as_str())
            .with("status", answer.status.as_u16())
            .with("attempts", attempt)
            .with("elapsed_ms", elapsed_ms)
            .with("response", answer.response(self.excerpt))
            .with("response_bytes", answer.len())),
            Ok(answer) => {
                let mut message = format!(
                    "webhook {request} answered {} after {attempts}",
                    answer.status
                );
                let text = answer.text(self.excerpt.min(200));
                if !text.trim().is_empty() {
                    message.push_str(&format!(": {}", text.trim()));
                }
                Err(StrategyError::Failed(message))
            }
            Err(error) => Err(StrategyError::Failed(format!(
                "webhook {request} failed after {attempts}: {error}"
            ))),
        }
    }

    #[cfg(not(feature = "sidecar"))]
    async fn run(&self, _ctx: Context) -> Result<Outcome, StrategyError> {
        Err(StrategyError::Unavailable(
            "built without the `sidecar` feature: no HTTP client for webhooks".into(),
        ))
    }
}

#[cfg(feature = "sidecar")]
mod http {
    use std::fmt;

    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    use reqwest::{Client, Method, StatusCode, Url};
    use serde_json::Value;

    use super::{Webhook, WebhookConfig};
    use crate::strategy::Context;

    /// The client and the parts of the request that parse once.
    #[derive(Debug)]
    pub(super) struct Prepared {
        client: Client,
        method: Method,
        url: Url,
        headers: HeaderMap,
        send_body: bool,
    }

    impl Prepared {
        pub(super) fn new(config: &WebhookConfig) -> Result<Self, String> {
            let url = super::check_url(&config.url)?;
            let method = config.method.to_ascii_uppercase();
            if !WebhookConfig::METHODS.contains(&method.as_str()) {
                return Err(format!("method {:?} is not allowed", config.method));
            }
            let method = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
            let mut headers = HeaderMap::new();
            for (name, value) in &config.headers {
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("bad header name {name:?}"))?;
                let mut value = HeaderValue::from_str(value)
                    .map_err(|_| format!("bad value for header {name}"))?;
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            let client = Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .connect_timeout(config.timeout)
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
            Ok(Prepared {
                client,
                send_body: method != Method::GET,
                method,
                url,
                headers,
            })
        }

        /// One attempt: the status and the first [`Webhook::RESPONSE_READ_LIMIT`] bytes of the
        /// answer.
        pub(super) async fn call(
            &self,
            hook: &Webhook,
            ctx: &Context,
        ) -> Result<Answer, CallError> {
            let mut headers = self.headers.clone();
            for (name, value) in hook.context_headers(ctx) {
                // Names and values from the configuration may hold any text but control
                // characters, which `problems` refuses: one that does not fit is left out.
                if let Ok(value) = HeaderValue::from_bytes(value.as_bytes()) {
                    headers.insert(HeaderName::from_static(name), value);
                }
            }
            let mut request = self
                .client
                .request(self.method.clone(), self.url.clone())
                .headers(headers)
                .timeout(hook.timeout);
            if self.send_body {
                request = request.json(&hook.body);
            }
            let classify = |error: reqwest::Error| CallError::from_reqwest(error, hook);
            let mut response = request.send().await.map_err(classify)?;
            let status = response.status();
            let mut body = Vec::new();
            while body.len() < Webhook::RESPONSE_READ_LIMIT {
                match response.chunk().await.map_err(classify)? {
                    Some(chunk) => body.extend_from_slice(&chunk),
                    None => break,
                }
            }
            body.truncate(Webhook::RESPONSE_READ_LIMIT);
            Ok(Answer { status, body })
        }
    }

    /// What the hook answered.
    pub(super) struct Answer {
        pub(super) status: StatusCode,
        body: Vec<u8>,
    }

    impl Answer {
        /// The answer's JSON when it is at most `limit` bytes written compactly, or else its
        /// text cut to `limit` bytes.
        pub(super) fn response(&self, limit: usize) -> Value {
            super::excerpt(&self.body, limit)
        }

        /// Bytes of the answer read.
        pub(super) fn len(&self) -> usize {
            self.body.len()
        }

        /// The answer as text, cut to `limit` bytes.
        pub(super) fn text(&self, limit: usize) -> String {
            crate::truncate_utf8(&self.body, limit)
        }
    }

    /// Why an attempt got no answer.
    #[derive(Debug)]
    pub(super) enum CallError {
        /// No answer within the attempt's timeout (ms).
        Timeout(u128),
        /// Could not connect.
        Connect(String),
        /// Anything else (the connection broke mid-answer...).
        Other(String),
    }

    impl CallError {
        fn from_reqwest(error: reqwest::Error, hook: &Webhook) -> Self {
            if error.is_timeout() {
                return CallError::Timeout(hook.timeout.as_millis());
            }
            // reqwest's own message repeats the URL; the root cause says what happened.
            let mut cause: &dyn std::error::Error = &error;
            while let Some(source) = cause.source() {
                cause = source;
            }
            if error.is_connect() {
                CallError::Connect(cause.to_string())
            } else {
                CallError::Other(cause.to_string())
            }
        }

        /// Connection errors and timeouts are worth another attempt.
        pub(super) fn retryable(&self) -> bool {
            matches!(self, CallError::Timeout(_) | CallError::Connect(_))
        }
    }

    impl fmt::Display for CallError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                CallError::Timeout(ms) => write!(f, "timed out after {ms} ms"),
                CallError::Connect(why) => write!(f, "cannot connect: {why}"),
                CallError::Other(why) => f.write_str(why),
            }
        }
    }
}

/// A hook's answer as the record keeps it: its JSON when that is at most `limit` bytes
/// written compactly, else its text cut to `limit` bytes.
#[cfg_attr(not(feature = "sidecar"), allow(dead_code))]
fn excerpt(body: &[u8], limit: usize) -> Value {
    match serde_json::from_slice::<Value>(body) {
        Ok(json) if serde_json::to_string(&json).is_ok_and(|text| text.len() <= limit) => json,
        _ => Value::String(crate::truncate_utf8(body, limit)),
    }
}

/// The pause before retry number `retry` (1-based): `retry_backoff`, doubled each time.
fn pause_before(retry_backoff: Duration, retry: u32) -> Duration {
    crate::duration::doubled_up_to(
        retry_backoff,
        retry.saturating_sub(1).min(10),
        Duration::MAX,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signals::Signal;

    #[test]
    fn answers_are_kept_as_json_when_short_else_as_a_text_excerpt() {
        assert_eq!(
            excerpt(br#"{"bytes_freed": 1048576}"#, 256),
            serde_json::json!({"bytes_freed": 1048576})
        );
        let long = format!(r#"{{"dump": "{}"}}"#, "x".repeat(1000));
        let kept = excerpt(long.as_bytes(), 64);
        assert_eq!(kept.as_str().map(str::len), Some(64));
        assert_eq!(excerpt(b"plain text answer", 5), "plain");
    }

    #[test]
    fn credentials_in_the_url_are_not_shown() {
        let hook = WebhookConfig::new(
            "http://admin:s3cret@127.0.0.1:1/trim",
            TriggerSpec::new(Signal::MemoryUsage, 0.9),
        )
        .build("trim");
        assert!(
            !hook.description().contains("s3cret"),
            "{}",
            hook.description()
        );
        assert!(!format!("{hook:?}").contains("s3cret"));
        assert!(hook.description().contains("http://127.0.0.1:1/trim"));
    }

    fn config(toml_like_json: &str) -> WebhookConfig {
        serde_json::from_str(toml_like_json).unwrap()
    }

    #[test]
    fn defaults_fill_in() {
        let hook = config(
            r#"{"url": "http://127.0.0.1:8080/admin/cache/trim",
                "trigger": {"signal": "memory_usage", "above": 0.8}}"#,
        );
        assert_eq!(
            hook,
            WebhookConfig::new(
                "http://127.0.0.1:8080/admin/cache/trim",
                TriggerSpec::new(Signal::MemoryUsage, 0.8)
            )
        );
        assert_eq!(hook.method, "POST");
        assert_eq!(hook.body, serde_json::json!({}));
        assert_eq!(hook.timeout, Duration::from_secs(2));
        assert_eq!(hook.retries, 2);
        assert_eq!(hook.retry_backoff, Duration::from_millis(200));
        assert!(hook.problems("p").is_empty());
    }

    #[test]
    fn problems_name_every_bad_key() {
        let mut hook = WebhookConfig::new("ftp://x", TriggerSpec::new(Signal::MemoryUsage, 0.8));
        hook.method = "BREW".into();
        hook.timeout = Duration::ZERO;
        hook.headers.insert("Bad Header".into(), "secret".into());
        hook.headers.insert("X-Ok".into(), "line\nbreak".into());
        let problems = hook
            .problems("strategies.webhook.trim")
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        assert_eq!(
            problems,
            [
                "strategies.webhook.trim.url = \"ftp://x\": must be an http:// URL",
                "strategies.webhook.trim.method = \"BREW\": must be one of GET, POST, PUT, PATCH, DELETE",
                "strategies.webhook.trim.headers.Bad Header = \"***\": not a valid header name (letters, digits and !#$%&'*+-.^_`|~)",
                "strategies.webhook.trim.headers.X-Ok = \"***\": a header value cannot hold control characters",
                "strategies.webhook.trim.timeout = 0s: must be positive",
            ]
        );
        assert!(!problems.concat().contains("secret"));
    }

    #[test]
    fn only_http_urls_with_a_host_pass() {
        assert!(check_url("http://127.0.0.1:1/x").is_ok());
        assert!(check_url("http://[::1]:8080/").is_ok());
        assert!(check_url("https://example.com/")
            .unwrap_err()
            .contains("without TLS"));
        assert!(check_url("not a url").unwrap_err().starts_with("not a URL"));
        assert!(check_url("unix:/run/x.sock").is_err());
    }

    #[test]
    fn backoff_doubles_from_retry_backoff() {
        let hook =
            WebhookConfig::new("http://h/", TriggerSpec::new(Signal::MemoryUsage, 0.8)).build("h");
        assert_eq!(hook.backoff(1), Duration::from_millis(200));
        assert_eq!(hook.backoff(2), Duration::from_millis(400));
        assert_eq!(hook.backoff(3), Duration::from_millis(800));
    }

    #[cfg(not(feature = "sidecar"))]
    #[tokio::test]
    async fn without_the_sidecar_feature_it_cannot_act() {
        let hook =
            WebhookConfig::new("http://h/", TriggerSpec::new(Signal::MemoryUsage, 0.8)).build("h");
        let ctx = Context::standalone();
        assert!(matches!(
            hook.run(ctx).await,
            Err(StrategyError::Unavailable(m)) if m.contains("sidecar")
        ));
    }

    #[test]
    fn debug_hides_header_values() {
        let mut config =
            WebhookConfig::new("http://h/", TriggerSpec::new(Signal::MemoryUsage, 0.8));
        config
            .headers
            .insert("Authorization".into(), "Bearer s3cret".into());
        let hook = config.build("h");
        assert!(!format!("{hook:?}").contains("s3cret"));
        assert_eq!(hook.name(), "h");
        assert!(hook.description().starts_with("POST http://h/"));
    }
}
