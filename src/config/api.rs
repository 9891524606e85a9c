//! The HTTP API (`[api]`): listener, tokens, limits.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use perfpilot_strategies::duration;
use serde::{Deserialize, Serialize};

use super::{access, Problem};

/// The HTTP API (`[api]`).
#[derive(Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Whether the agent serves its HTTP API; by default `true`.
    pub enabled: bool,
    /// Address to listen on; by default `Config::DEFAULT_LISTEN`.
    pub listen: SocketAddr,
    /// When set, mutating endpoints need `Authorization: Bearer <token>`. Required to listen on a
    /// non-loopback address unless `insecure`. Never logged or rendered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// When set, reads (`GET /performance-metrics`, `/events`, `/metrics`, `/openapi.json` and
    /// the dashboard) need `Authorization: Bearer <read_token>` (or `api.token`), or the
    /// dashboard's session cookie; `GET /health` stays open. `None` (the default): reads are
    /// open. Never logged or rendered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_token: Option<String>,
    /// Allow a non-loopback `listen` without a token; by default `false`.
    pub insecure: bool,
    /// Host names accepted in the `Host` header besides IP literals, `localhost` and the
    /// `listen` address (e.g. a Kubernetes Service's DNS name); by default none. Any other
    /// name gets 403 (DNS rebinding). A list in TOML, comma-separated in the environment
    /// (`PERFPILOT_API__ALLOWED_HOSTS=perfpilot.default.svc,perfpilot`); `*` accepts any.
    #[serde(deserialize_with = "access::string_list")]
    #[schemars(with = "Vec<String>")]
    pub allowed_hosts: Vec<String>,
    /// Web origins (`scheme://host[:port]`) allowed to call the API from a browser besides the
    /// agent's own; by default none. A request with another `Origin`, or with
    /// `Sec-Fetch-Site: cross-site`, gets 403. A list in TOML, comma-separated in the
    /// environment.
    #[serde(deserialize_with = "access::string_list")]
    #[schemars(with = "Vec<String>")]
    pub allowed_origins: Vec<String>,
    /// Most connections open at once on the agent's own listener; at the cap the connection
    /// idle longest is closed for a new one. By default [`ApiConfig::DEFAULT_MAX_CONNECTIONS`].
    #[schemars(range(min = 1, max = super::access::MAX_MAX_CONNECTIONS))]
    pub max_connections: usize,
    /// A connection that has not sent a request's whole header within this long is closed
    /// (also counted between keep-alive requests); by default
    /// [`ApiConfig::DEFAULT_HEADER_READ_TIMEOUT`].
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed; by default
    /// [`ApiConfig::DEFAULT_IDLE_TIMEOUT`].
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub idle_timeout: Duration,
    /// Manual triggers (`POST /performance-optimize`) allowed per client IP (`[api.rate_limit]`).
    pub rate_limit: RateLimitConfig,
    /// A request not answered within this long gets 408 (`GET /events` is exempt, and
    /// `POST /performance-optimize` gets `strategy_timeout` × strategies + 5 s instead); by
    /// default [`ApiConfig::DEFAULT_REQUEST_TIMEOUT`].
    #[serde(with = "duration")]
    #[schemars(schema_with = "perfpilot_strategies::duration::json_schema")]
    pub request_timeout: Duration,
}

/// Per-client limit on manual triggers: a token bucket per client IP that holds `burst`
/// requests and refills at `per_minute`. Over it: 429 with `Retry-After`.
///
/// ```toml
/// [api.rate_limit]
/// per_minute = 10   # 0: no limit
/// burst = 10
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Requests regained per minute; by default [`RateLimitConfig::DEFAULT_PER_MINUTE`];
    /// `0` turns the limit off.
    pub per_minute: u32,
    /// Requests allowed at once from a full bucket; by default
    /// [`RateLimitConfig::DEFAULT_BURST`].
    pub burst: u32,
}

impl RateLimitConfig {
    /// Default `per_minute`: 10.
    pub const DEFAULT_PER_MINUTE: u32 = 10;
    /// Default `burst`: 10.
    pub const DEFAULT_BURST: u32 = 10;

    /// Whether requests are limited at all.
    pub fn is_enabled(&self) -> bool {
        self.per_minute > 0
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_minute: Self::DEFAULT_PER_MINUTE,
            burst: Self::DEFAULT_BURST,
        }
    }
}

impl ApiConfig {
    /// Default `listen`, the parsed `Config::DEFAULT_LISTEN`.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9750));
    /// Default `request_timeout`: 30 s.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default `max_connections`: 256 (the real clients are a scraper, a dashboard and a CLI).
    pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
    /// Default `header_read_timeout`: 10 s.
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default `idle_timeout`: 60 s.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        problems.extend(self.access_problems());
        if self.rate_limit.is_enabled() && self.rate_limit.burst == 0 {
            problems.push(Problem::new(
                "api.rate_limit.burst",
                0,
                format!(
                    "must be at least 1 while api.rate_limit.per_minute = {} (set per_minute = 0 to turn the limit off)",
                    self.rate_limit.per_minute
                ),
            ));
        }
        problems.extend(Problem::unless_positive(
            "api.request_timeout",
            self.request_timeout,
        ));
        if self.enabled && !self.listen.ip().is_loopback() && self.token.is_none() && !self.insecure
        {
            problems.push(Problem::new(
                "api.listen",
                self.listen,
                "a non-loopback address needs api.token (or api.insecure = true, --insecure)",
            ));
        }
        problems
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            listen: Self::DEFAULT_LISTEN,
            token: None,
            read_token: None,
            insecure: false,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Self::DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            rate_limit: RateLimitConfig::default(),
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiConfig")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("read_token", &self.read_token.as_ref().map(|_| "***"))
            .field("insecure", &self.insecure)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allowed_origins", &self.allowed_origins)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("rate_limit", &self.rate_limit)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}
