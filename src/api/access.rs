//! Who may call the API (SPEC §11), as one tower layer ([`GuardLayer`]) on every route but
//! `GET /health`.
//!
//! In order, for each request:
//!
//! 1. **Host.** DNS rebinding needs a host *name*: a `Host` that is an IP literal (v4 or v6,
//!    with or without port), `localhost`, or one of `api.allowed_hosts` passes; any other
//!    name gets 403 naming the setting.
//! 2. **Origin.** A web page must not drive the agent: a request whose `Origin` is neither
//!    the agent's own (`http(s)://` + its `Host`) nor in `api.allowed_origins` gets 403, and
//!    so does one marked `Sec-Fetch-Site: cross-site` (except a plain link followed to the
//!    dashboard, a top-level `GET` navigation, which cannot read or change anything).
//!    Command-line clients send neither header and are unaffected.
//! 3. **Token.** `POST` routes need `Authorization: Bearer <api.token>` when it is set. Reads
//!    need `Bearer <api.read_token>` (or the `api.token`) when `api.read_token` is set, or
//!    the dashboard's session cookie: `EventSource` cannot send `Authorization`, so the
//!    dashboard's page, loaded once with the token, gets a short-lived random ticket in an
//!    `HttpOnly`, `SameSite=Strict` cookie. Tokens and tickets are compared in constant time.
//!
//! The rate limit of `POST /performance-optimize` comes after all three, so requests without
//! the token never use up a client's bucket.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{OriginalUri, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use super::ApiError;

mod layer;
pub(super) use self::layer::GuardLayer;

/// Which check a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// `GET /health`: open to any host, origin and client.
    Health,
    /// A read (`/performance-metrics` and its history, `/report`, `/events`, `/metrics`,
    /// `/openapi.json`).
    Read,
    /// The dashboard page: a read that answers a login page instead of a JSON 401 and sets
    /// the session cookie when the token is given.
    Dashboard,
    /// A mutating route (`POST /performance-optimize`).
    Write,
}

/// Who may call: the tokens, hosts and origins of [`ApiSettings`](super::ApiSettings).
#[derive(Default, Clone)]
struct AccessSettings {
    token: Option<String>,
    read_token: Option<String>,
    /// Lowercased, without a trailing dot.
    allowed_hosts: Vec<String>,
    /// Lowercased.
    allowed_origins: Vec<String>,
}

impl std::fmt::Debug for AccessSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessSettings")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("read_token", &self.read_token.as_ref().map(|_| "***"))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("allowed_origins", &self.allowed_origins)
            .finish()
    }
}

/// How the dashboard's session cookie's name starts; a random suffix per agent follows
/// (`perfpilot_session_1f2e3d4c`), so that neither another agent on the same host (cookies
/// are not kept apart by port) nor another local app can overwrite it.
pub const SESSION_COOKIE_PREFIX: &str = "perfpilot_session_";

/// The state of the middleware: the settings and the dashboard's live session tickets.
#[derive(Debug)]
pub(super) struct Access {
    settings: AccessSettings,
    sessions: Sessions,
    /// [`SESSION_COOKIE_PREFIX`] and this agent's random suffix.
    cookie_name: String,
}

impl Access {
    /// How long a dashboard session ticket is valid.
    pub(super) const SESSION_LIFETIME: Duration = Duration::from_secs(3600);

    pub(super) fn new(settings: &super::ApiSettings) -> Self {
        let normalize = |list: &[String]| {
            list.iter()
                .map(|item| item.trim_end_matches('.').to_ascii_lowercase())
                .collect()
        };
        Access {
            settings: AccessSettings {
                token: settings.token.clone(),
                read_token: settings.read_token.clone(),
                allowed_hosts: normalize(&settings.allowed_hosts),
                allowed_origins: normalize(&settings.allowed_origins),
            },
            sessions: Sessions::default(),
            cookie_name: session_cookie_name(),
        }
    }

    /// The host a request is for, checked: the `Host` header and the request target's
    /// authority (an absolute-form target, or HTTP/2's `:authority`) must each be allowed
    /// where present, and one of them must be. `Ok` carries the host to compare an `Origin`
    /// with; `Err` the refusal (400 for a missing or malformed host, 403 for a foreign one).
    pub(super) fn check_host<'a>(
        &self,
        headers: &'a HeaderMap,
        uri: &'a Uri,
    ) -> Result<&'a str, HostRefusal> {
        let mut values = headers.get_all(header::HOST).iter();
        let header = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(value), None) => Some(value.to_str().map_err(|_| HostRefusal::NotText)?),
            (Some(_), Some(_)) => return Err(HostRefusal::Several),
        };
        let authority = uri.authority().map(|a| a.as_str());
        for host in header.iter().chain(authority.iter()) {
            if !self.host_allowed(host) {
                return Err(HostRefusal::Foreign((*host).to_owned()));
            }
        }
        header.or(authority).ok_or(HostRefusal::Missing)
    }

    /// Whether `host` (a `Host` header's value) may be served.
    pub(super) fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        if name.parse::<IpAddr>().is_ok() || is_bracketed_ipv6(name) {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name == "localhost"
            || self
                .settings
                .allowed_hosts
                .iter()
                .any(|allowed| allowed == "*" || *allowed == name)
    }

    /// Whether a request with this `Origin` (sent to `host`) may be served.
    pub(super) fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.to_ascii_lowercase();
        let own = host.is_some_and(|host| {
            let host = host.to_ascii_lowercase();
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|rest| rest == host)
        });
        own || self
            .settings
            .allowed_origins
            .iter()
            .any(|allowed| allowed == "*" || *allowed == origin)
    }

    fn any_origin(&self) -> bool {
        self.settings.allowed_origins.iter().any(|o| o == "*")
    }
}

/// Why a request's host is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HostRefusal {
    /// Neither a `Host` header nor an authority in the request target.
    Missing,
    /// More than one `Host` header.
    Several,
    /// A `Host` header that is not text (not UTF-8).
    NotText,
    /// A name that is not allowed (DNS rebinding needs one), as sent.
    Foreign(String),
}

impl HostRefusal {
    /// The answer: 400 for a request without a usable host, 403 naming the setting for a
    /// foreign one.
    pub(super) fn into_error(self) -> ApiError {
        let bad_request = |what: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("{what}: a request must name the agent in one Host header (an IP address, localhost, or a name in api.allowed_hosts)"),
            )
        };
        match self {
            HostRefusal::Missing => bad_request("no Host header"),
            HostRefusal::Several => bad_request("more than one Host header"),
            HostRefusal::NotText => bad_request("the Host header is not text"),
            HostRefusal::Foreign(host) => ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Host {host:?} is not allowed: use an IP address or localhost, or add the name to api.allowed_hosts (PERFPILOT_API__ALLOWED_HOSTS)"
                ),
            )
            .with("setting", "api.allowed_hosts"),
        }
    }
}

/// The host part of a `Host` value: without the port, brackets kept around IPv6. A value
/// with anything but `:PORT` after the name (`[::1]evil`, `localhost:x`) is returned whole,
/// so that it matches nothing.
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        let Some(end) = host.find(']') else {
            return host;
        };
        let rest = &host[end + 1..];
        let port_only = rest.is_empty()
            || rest
                .strip_prefix(':')
                .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
        return if port_only { &host[..=end] } else { host };
    }
    match host.rsplit_once(':') {
        Some((name, port))
            if !name.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            name
        }
        _ => host,
    }
}

fn is_bracketed_ipv6(name: &str) -> bool {
    name.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|inner| inner.parse::<Ipv6Addr>().is_ok())
}

/// The checks of [`GuardLayer`]: `Err` with the answer for a missing or malformed host (400),
/// a foreign host or origin (403) or without the needed token (401); else whether the route's
/// answer gets a new session cookie, and at which path (the dashboard opened with the token).
/// What the checks learned is marked on the request for the routes after it
/// ([`Authenticated`], [`Session`], and [`StatusOnly`] on a `GET /health` for a foreign host).
#[allow(
    clippy::result_large_err,
    reason = "the refusal is answered as it is; boxing it would allocate for nothing"
)]
fn guard(access: &Access, class: Class, request: &mut Request) -> Result<Option<String>, Response> {
    if class == Class::Health {
        // Open to probes; a foreign or missing host learns only the status.
        if access.check_host(request.headers(), request.uri()).is_err() {
            request.extensions_mut().insert(StatusOnly);
        }
        return Ok(None);
    }
    let host = match access.check_host(request.headers(), request.uri()) {
        Ok(host) => Some(host),
        Err(refusal) => {
            tracing::debug!(path = request.uri().path(), ?refusal, "refused: Host");
            return Err(refusal.into_error().into_response());
        }
    };
    let headers = request.headers();
    if let Some(refusal) = cross_origin_refusal(access, request.method(), headers, host) {
        tracing::debug!(
            method = %request.method(),
            path = request.uri().path(),
            reason = refusal.message(),
            "refused: cross-origin request"
        );
        return Err(refusal.into_response());
    }
    let mut issue_cookie = false;
    let mut marks = Marks::default();
    match class {
        Class::Health => {}
        Class::Write => {
            if let Some(token) = &access.settings.token {
                if !bearer_is(headers, token) {
                    return Err(unauthorized(
                        "this route needs `Authorization: Bearer <token>` with the configured api.token",
                    ));
                }
                marks.authenticated = true;
            }
        }
        Class::Read | Class::Dashboard => {
            if let Some(read_token) = &access.settings.read_token {
                let by_token = bearer_is(headers, read_token)
                    || access
                        .settings
                        .token
                        .as_ref()
                        .is_some_and(|token| bearer_is(headers, token));
                if by_token {
                    issue_cookie = class == Class::Dashboard;
                } else if session_cookie(headers, &access.cookie_name)
                    .is_some_and(|ticket| access.sessions.valid(ticket, Instant::now()))
                {
                    marks.session = true;
                } else {
                    return Err(if class == Class::Dashboard {
                        login_page()
                    } else {
                        unauthorized(
                            "this route needs `Authorization: Bearer <token>` with the configured api.read_token (or api.token)",
                        )
                    });
                }
            }
        }
    }
    if marks.authenticated {
        request.extensions_mut().insert(Authenticated);
    }
    if marks.session {
        request.extensions_mut().insert(Session);
    }
    Ok(issue_cookie.then(|| cookie_path(request)))
}

/// Adds a new session cookie at `path` to the dashboard's answer.
fn set_session_cookie(access: &Access, path: &str, response: &mut Response) {
    match access.sessions.issue(Instant::now()) {
        Ok(ticket) => {
            let cookie = format!(
                "{}={ticket}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict",
                access.cookie_name,
                Access::SESSION_LIFETIME.as_secs()
            );
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        Err(error) => tracing::warn!(%error, "cannot issue a dashboard session"),
    }
}

/// 403 for a request a web page of another origin sent.
fn cross_origin_refusal(
    access: &Access,
    method: &Method,
    headers: &HeaderMap,
    host: Option<&str>,
) -> Option<ApiError> {
    let refuse = |what: String| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "cross-origin request refused ({what}): a web page of another origin may not call this API; add its origin to api.allowed_origins (PERFPILOT_API__ALLOWED_ORIGINS) to allow it"
            ),
        )
        .with("setting", "api.allowed_origins")
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or("(not text)");
        return (!access.origin_allowed(text, host)).then(|| refuse(format!("Origin {text:?}")));
    }
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"));
    let navigation = matches!(*method, Method::GET | Method::HEAD)
        && headers
            .get("sec-fetch-mode")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"navigate"));
    (cross_site && !navigation && !access.any_origin())
        .then(|| refuse("Sec-Fetch-Site: cross-site".to_owned()))
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"perfpilot\""),
    );
    response
}

/// Whether the request carries `Authorization: Bearer <token>` (constant-time comparison).
pub(super) fn bearer_is(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

/// Compares without stopping at the first differing byte, so timing does not leak the
/// token's content (only whether the lengths match).
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the check learned about a request that the routes after it use.
#[derive(Debug, Default)]
struct Marks {
    authenticated: bool,
    session: bool,
}

/// Marks a request that carried the configured `api.token` (the rate limit gives it a bucket
/// of its own).
#[derive(Debug, Clone, Copy)]
pub(super) struct Authenticated;

/// Marks a read let in by the dashboard's session cookie (`GET /events` keeps a stream for
/// it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Session;

/// Marks a `GET /health` whose host is foreign or missing: it is answered with the status
/// only.
#[derive(Debug, Clone, Copy)]
pub(super) struct StatusOnly;

/// [`SESSION_COOKIE_PREFIX`] and 8 random hex digits (the prefix alone if the kernel gives no
/// random bytes).
fn session_cookie_name() -> String {
    let mut suffix = [0u8; 4];
    match random_bytes(&mut suffix) {
        Ok(()) => format!(
            "{SESSION_COOKIE_PREFIX}{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
        Err(_) => SESSION_COOKIE_PREFIX.trim_end_matches('_').to_owned(),
    }
}

/// The value of the cookie `name`, if the request has it.
fn session_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value)
}

/// The cookie's path: where the agent's routes are, `/` standalone and the base path when the
/// router is nested under one (`/perfpilot`: covers `/perfpilot`, `/perfpilot/` and
/// `/perfpilot/events`, not the host app's other routes).
fn cookie_path(request: &Request) -> String {
    let inner = request.uri().path();
    let original = request
        .extensions()
        .get::<OriginalUri>()
        .map_or(inner, |uri| uri.0.path());
    let base = if inner == "/" {
        original.trim_end_matches('/')
    } else {
        original.strip_suffix(inner).unwrap_or("")
    };
    // Only what is safe inside a Set-Cookie attribute.
    if !base.is_empty()
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~%".contains(&b))
    {
        base.to_owned()
    } else {
        "/".to_owned()
    }
}

/// The page answered for the dashboard without a read token: asks for the token, fetches the
/// dashboard with it (which sets the session cookie) and reloads.
fn login_page() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
            (header::WWW_AUTHENTICATE, "Bearer realm=\"perfpilot\""),
        ],
        LOGIN_HTML,
    )
        .into_response()
}

const LOGIN_HTML: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>perfpilot: token needed</title>
<link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font:15px system-ui,sans-serif;margin:15vh auto;max-width:26em;padding:0 1em}
input,button{font:inherit;padding:.4em}input{width:100%;box-sizing:border-box;margin:.5em 0}
#why{color:#b42318;min-height:1.2em}</style></head>
<body><h1>perfpilot</h1>
<p>This agent's dashboard needs its read token (<code>api.read_token</code>) or its API token.</p>
<form id="login"><input id="token" type="password" autocomplete="off" placeholder="token" aria-label="token" autofocus>
<button type="submit">Open the dashboard</button></form><p id="why" role="status"></p>
<script>
"use strict";
document.getElementById("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const token = document.getElementById("token").value.trim();
  const why = document.getElementById("why");
  try {
    const r = await fetch(location.pathname, { headers: { Authorization: "Bearer " + token }, credentials: "same-origin" });
    if (r.ok) { sessionStorage.setItem("perfpilot.token", token); location.reload(); return; }
    why.textContent = r.status === 401 ? "wrong token" : "the agent answered " + r.status;
  } catch (err) { why.textContent = "request failed: " + err; }
});
</script></body></html>
"#;

/// The dashboard's live session tickets: random, at most [`Sessions::MAX`] (the oldest goes
/// first), each valid for [`Access::SESSION_LIFETIME`].
#[derive(Debug, Default)]
struct Sessions {
    live: Mutex<Vec<([u8; 32], Instant)>>,
}

impl Sessions {
    const MAX: usize = 64;

    fn issue(&self, now: Instant) -> std::io::Result<String> {
        let mut ticket = [0u8; 32];
        random_bytes(&mut ticket)?;
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.retain(|(_, expires)| *expires > now);
        if live.len() >= Self::MAX {
            live.remove(0);
        }
        live.push((ticket, now + Access::SESSION_LIFETIME));
        Ok(ticket.iter().map(|b| format!("{b:02x}")).collect())
    }

    fn valid(&self, ticket: &str, now: Instant) -> bool {
        let Some(bytes) = parse_hex32(ticket) else {
            return false;
        };
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.iter().fold(false, |found, (known, expires)| {
            found | (constant_time_eq(known, &bytes) && *expires > now)
        })
    }
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Fills `buf` from the kernel's random source.
fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(hosts: &[&str], origins: &[&str]) -> Access {
        Access::new(&super::super::ApiSettings {
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            ..super::super::ApiSettings::new(serde_json::json!(1))
        })
    }

    #[test]
    fn ip_literals_and_localhost_pass_names_need_listing() {
        let a = access(&["Perfpilot.Monitoring.svc"], &[]);
        for host in [
            "127.0.0.1",
            "127.0.0.1:9750",
            "10.1.2.3:80",
            "[::1]",
            "[::1]:9750",
            "[fe80::1]:1",
            "::1",
            "localhost",
            "LOCALHOST:9750",
            "localhost.",
            "perfpilot.monitoring.svc",
            "perfpilot.monitoring.svc:9750",
        ] {
            assert!(a.host_allowed(host), "{host} refused");
        }
        for host in [
            "evil.example",
            "evil.example:9750",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "[evil]:1",
            "[::1]evil.example",
            "[::1]:",
            "[::1]:80x",
            "localhost:",
            "perfpilot.monitoring.svc.evil",
            "",
        ] {
            assert!(!a.host_allowed(host), "{host} accepted");
        }
        assert!(access(&["*"], &[]).host_allowed("anything.example"));
    }

    #[test]
    fn own_and_listed_origins_pass() {
        let a = access(&[], &["https://Grafana.example:3000"]);
        assert!(a.origin_allowed("http://127.0.0.1:9750", Some("127.0.0.1:9750")));
        assert!(a.origin_allowed("https://localhost:9750", Some("localhost:9750")));
        assert!(a.origin_allowed("https://grafana.example:3000", Some("127.0.0.1:9750")));
        assert!(!a.origin_allowed("http://127.0.0.1:8000", Some("127.0.0.1:9750")));
        assert!(!a.origin_allowed("http://evil.example", Some("127.0.0.1:9750")));
        assert!(!a.origin_allowed("null", Some("127.0.0.1:9750")));
        assert!(!a.origin_allowed("http://127.0.0.1:9750", None));
        assert!(access(&[], &["*"]).origin_allowed("null", None));
    }

    #[test]
    fn cross_site_fetches_are_refused_but_navigation_is_not() {
        let a = access(&[], &[]);
        let mut headers = HeaderMap::new();
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        headers.insert("sec-fetch-mode", HeaderValue::from_static("no-cors"));
        assert!(cross_origin_refusal(&a, &Method::POST, &headers, None).is_some());
        assert!(cross_origin_refusal(&a, &Method::GET, &headers, None).is_some());
        headers.insert("sec-fetch-mode", HeaderValue::from_static("navigate"));
        assert!(cross_origin_refusal(&a, &Method::GET, &headers, None).is_none());
        assert!(cross_origin_refusal(&a, &Method::POST, &headers, None).is_some());
        assert!(cross_origin_refusal(&a, &Method::POST, &HeaderMap::new(), None).is_none());
    }

    #[test]
    fn session_tickets_are_random_expire_and_are_bounded() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let first = sessions.issue(now).unwrap();
        let second = sessions.issue(now).unwrap();
        assert_ne!(first, second);
        assert_eq!(first.len(), 64);
        assert!(sessions.valid(&first, now));
        assert!(!sessions.valid(&first, now + Access::SESSION_LIFETIME));
        assert!(!sessions.valid(&"0".repeat(64), now));
        assert!(!sessions.valid("zz", now));
        for _ in 0..Sessions::MAX {
            sessions.issue(now).unwrap();
        }
        assert!(!sessions.valid(&first, now), "the oldest ticket goes first");
        assert_eq!(sessions.live.lock().unwrap().len(), Sessions::MAX);
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; perfpilot_session=abc; b=2"),
        );
        assert_eq!(session_cookie(&headers, "perfpilot_session"), Some("abc"));
    }
}
