//! Per-client rate limit of manual triggers (`POST /performance-optimize`), SPEC §5.
//!
//! A token bucket per client holds [`RateLimitConfig::burst`] requests and regains
//! [`RateLimitConfig::per_minute`] of them a minute. A request that finds the bucket empty gets
//! 429 with `Retry-After` (seconds until one request is allowed again). Every answer of the
//! limited route carries the IETF draft headers that express-rate-limit sends with
//! `standardHeaders: 'draft-6'`:
//!
//! | header | value |
//! |---|---|
//! | `RateLimit-Limit` | `burst` |
//! | `RateLimit-Remaining` | requests left in the bucket now |
//! | `RateLimit-Reset` | seconds until the bucket is full again |
//! | `RateLimit-Policy` | `burst;w=SECONDS`, the time a full bucket takes to refill |
//!
//! Who the client is, in order:
//!
//! | request | bucket |
//! |---|---|
//! | carries the configured `api.token` | one bucket of its own, which no anonymous client can empty |
//! | from a loopback address, served by `perfpilot run` | the uid of the process that opened the connection (the kernel's `sock_diag` reports a TCP socket's owner), so two local users never share one; one bucket for all of loopback when the kernel does not answer |
//! | from a loopback address, in a host app | one bucket for all of `127.0.0.0/8` and `::1` (`127.0.0.2` is not another client) |
//! | from another address | that address (IPv6 by its /64 network, since one host usually owns a whole /64) |
//! | no known peer | one bucket shared by all |
//!
//! The peer address comes from axum's `ConnectInfo<SocketAddr>` (serve with
//! `into_make_service_with_connect_info::<SocketAddr>()`, as `perfpilot run` does) or
//! `ConnectInfo<ConnectionPeer>` (a host app serving through
//! [`TrackedListener`](crate::connections::TrackedListener) with
//! `into_make_service_with_connect_info::<ConnectionPeer>()`); where neither is present (the
//! router merged into a host app served without connect info, or requests sent to the router
//! directly) every client shares one bucket: the limit then caps the agent's manual triggers
//! as a whole.
//!
//! Only requests that run are charged: the bearer token is checked before the limit
//! ([`super::access`]), so requests without it never use up a bucket, and a request refused
//! after the limit (400 unknown strategy, 409 busy, 413, 422) gets its token back.
//!
//! Only this route takes the lock (a short one, never across an `.await`); reads are never
//! limited (SPEC §9).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::config::RateLimitConfig;
use crate::connections::ConnectionPeer;

/// Who a bucket belongs to (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Client {
    /// A request with the configured `api.token`.
    Token,
    /// A loopback connection opened by a process of this uid.
    Uid(u32),
    /// Any other loopback connection: all of `127.0.0.0/8` and `::1`.
    Loopback,
    /// An IPv4 address, or an IPv6 address with its last 64 bits cleared.
    Ip(IpAddr),
    /// Requests without a known peer address, and new clients while the table is full.
    Shared,
}

impl Client {
    /// The client by its address alone: loopback addresses are one client.
    pub(super) fn of(peer: Option<IpAddr>) -> Self {
        match peer.map(|ip| ip.to_canonical()) {
            Some(ip) if ip.is_loopback() => Client::Loopback,
            Some(IpAddr::V6(v6)) => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                Client::Ip(IpAddr::V6(network.into()))
            }
            Some(ip) => Client::Ip(ip),
            None => Client::Shared,
        }
    }

    /// The client a request comes from: [`Client::Token`] when the access check found the
    /// token, else by its connection.
    pub(super) fn of_request(request: &Request) -> Self {
        if request
            .extensions()
            .get::<super::access::Authenticated>()
            .is_some()
        {
            return Client::Token;
        }
        let client = Client::of(peer_addr(request).map(|addr| addr.ip()));
        if client != Client::Loopback {
            return client;
        }
        let server = request.extensions().get::<super::server::ServerAddr>();
        match (peer_addr(request), server) {
            (Some(peer), Some(super::server::ServerAddr(server))) => {
                match crate::sample::socket_owner_uid(peer, *server) {
                    Ok(Some(uid)) => Client::Uid(uid),
                    _ => Client::Loopback,
                }
            }
            _ => Client::Loopback,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// What the limiter decided for one request, with the numbers for the headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The bucket's size (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests left after this one (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Whole seconds until the bucket is full again (`RateLimit-Reset`).
    pub reset_secs: u64,
    /// When refused: whole seconds until one request is allowed (`Retry-After`), at least 1.
    pub retry_after_secs: Option<u64>,
}

/// The buckets of every client seen recently.
#[derive(Debug)]
pub struct RateLimiter {
    config: RateLimitConfig,
    /// Tokens regained per second.
    rate: f64,
    buckets: Mutex<HashMap<Client, Bucket>>,
}

impl RateLimiter {
    /// From this many clients on, full buckets (clients quiet for a whole refill) are dropped
    /// before a new client is added.
    pub const PRUNE_AT: usize = 1024;
    /// Most clients tracked one by one; past this (after pruning) a new client shares the
    /// [`Client::Shared`] bucket.
    pub const MAX_CLIENTS: usize = 65_536;

    /// A limiter with these settings; `None` when `per_minute` is 0 (no limit).
    pub fn new(config: RateLimitConfig) -> Option<Self> {
        config.is_enabled().then(|| RateLimiter {
            config,
            rate: f64::from(config.per_minute) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Takes one request from the bucket of `peer` (`None`: the shared bucket; every loopback
    /// address: one bucket) at `now`.
    #[cfg(test)]
    pub fn check(&self, peer: Option<IpAddr>, now: Instant) -> Decision {
        self.check_client(Client::of(peer), now)
    }

    /// Gives back the request taken from `client`'s bucket: it was refused after the limit.
    pub(super) fn refund(&self, client: Client) {
        let burst = f64::from(self.config.burst);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(bucket) = buckets.get_mut(&client) {
            bucket.tokens = (bucket.tokens + 1.0).min(burst);
        }
    }

    /// Takes one request from `client`'s bucket at `now`.
    pub(super) fn check_client(&self, client: Client, now: Instant) -> Decision {
        let burst = f64::from(self.config.burst);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut client = client;
        if !buckets.contains_key(&client) && buckets.len() >= Self::PRUNE_AT {
            let full_after = Duration::from_secs_f64(burst / self.rate);
            buckets.retain(|_, bucket| now.saturating_duration_since(bucket.updated) < full_after);
            if buckets.len() >= Self::MAX_CLIENTS {
                client = Client::Shared;
            }
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(burst);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed {
            bucket.tokens -= 1.0;
        }
        let tokens = bucket.tokens;
        drop(buckets);
        Decision {
            allowed,
            limit: self.config.burst,
            remaining: tokens.floor() as u32,
            reset_secs: ((burst - tokens) / self.rate).ceil() as u64,
            retry_after_secs: (!allowed)
                .then(|| (((1.0 - tokens) / self.rate).ceil() as u64).max(1)),
        }
    }

    /// How many clients have a bucket now.
    #[cfg(test)]
    pub fn clients(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// `RateLimit-Policy`: `burst;w=SECONDS`.
    fn policy(&self) -> String {
        let window = (f64::from(self.config.burst) / self.rate).ceil() as u64;
        format!("{};w={window}", self.config.burst)
    }
}

impl Decision {
    fn write_headers(&self, limiter: &RateLimiter, headers: &mut HeaderMap) {
        let mut set = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        };
        set("ratelimit-limit", self.limit.to_string());
        set("ratelimit-remaining", self.remaining.to_string());
        set("ratelimit-reset", self.reset_secs.to_string());
        set("ratelimit-policy", limiter.policy());
        if let Some(retry_after) = self.retry_after_secs {
            set("retry-after", retry_after.to_string());
        }
    }
}

/// The client's address: from `ConnectInfo<SocketAddr>`, else `ConnectInfo<ConnectionPeer>`.
pub(super) fn peer_addr(request: &Request) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
        .or_else(|| {
            extensions
                .get::<ConnectInfo<ConnectionPeer>>()
                .map(|ConnectInfo(peer)| peer.addr)
        })
}

/// The middleware: 429 when the client's bucket is empty, else the route's answer; both with
/// the `RateLimit-*` headers.
pub(super) async fn limit(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    let client = Client::of_request(&request);
    let decision = limiter.check_client(client, tokio::time::Instant::now().into_std());
    let mut response = if decision.allowed {
        let response = next.run(request).await;
        if response.status().is_client_error() {
            limiter.refund(client);
        }
        response
    } else {
        let retry_after = decision.retry_after_secs.unwrap_or(1);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many manual optimizations from this client (at most {} at once, {} a minute); retry in {retry_after} s",
                limiter.config.burst, limiter.config.per_minute
            ),
        )
        .with("retryAfter", retry_after)
        .into_response()
    };
    decision.write_headers(&limiter, response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimitConfig { per_minute, burst }).unwrap()
    }

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2)));

    #[test]
    fn zero_per_minute_means_no_limiter() {
        assert!(RateLimiter::new(RateLimitConfig {
            per_minute: 0,
            burst: 10
        })
        .is_none());
    }

    #[test]
    fn a_burst_passes_then_the_next_waits_for_a_refill() {
        let limiter = limiter(10, 10);
        let start = Instant::now();
        for left in (0..10).rev() {
            let decision = limiter.check(A, start);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, left);
            assert_eq!(decision.retry_after_secs, None);
        }
        let refused = limiter.check(A, start);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        // 10 a minute: one every 6 s, the whole bucket in 60 s.
        assert_eq!(refused.retry_after_secs, Some(6));
        assert_eq!(refused.reset_secs, 60);
        assert_eq!(limiter.policy(), "10;w=60");

        let later = limiter.check(A, start + Duration::from_secs(3));
        assert_eq!((later.allowed, later.retry_after_secs), (false, Some(3)));
        let refilled = limiter.check(A, start + Duration::from_secs(6));
        assert!(refilled.allowed);
        assert!(!limiter.check(A, start + Duration::from_secs(6)).allowed);
    }

    #[test]
    fn clients_have_their_own_buckets_and_no_peer_shares_one() {
        let limiter = limiter(60, 1);
        let now = Instant::now();
        assert!(limiter.check(A, now).allowed);
        assert!(!limiter.check(A, now).allowed);
        assert!(limiter.check(B, now).allowed);
        assert!(limiter.check(None, now).allowed);
        assert!(!limiter.check(None, now).allowed);
    }

    #[test]
    fn ipv6_clients_are_grouped_by_slash_64_and_mapped_ipv4_is_ipv4() {
        let limiter = limiter(60, 1);
        let now = Instant::now();
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.check(Some(one), now).allowed);
        assert!(!limiter.check(Some(two), now).allowed);
        assert!(limiter.check(Some(other), now).allowed);
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert!(limiter.check(A, now).allowed);
        assert!(!limiter.check(Some(mapped), now).allowed);
    }

    #[test]
    fn loopback_is_one_client_and_a_refund_gives_the_request_back() {
        let limiter = limiter(60, 1);
        let now = Instant::now();
        let local = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        assert!(limiter.check(local("127.0.0.1"), now).allowed);
        for other in ["127.0.0.2", "127.255.0.9", "::1", "::ffff:127.0.0.3"] {
            assert!(!limiter.check(local(other), now).allowed, "{other}");
        }
        limiter.refund(Client::Loopback);
        assert!(limiter.check(local("127.0.0.5"), now).allowed);
        assert!(limiter.check_client(Client::Token, now).allowed);
        assert!(limiter.check_client(Client::Uid(1000), now).allowed);
    }

    #[test]
    fn the_peer_comes_from_either_connect_info() {
        let addr: SocketAddr = "10.0.0.7:4242".parse().unwrap();
        let mut request = Request::new(axum::body::Body::empty());
        assert_eq!(peer_addr(&request), None);
        request
            .extensions_mut()
            .insert(ConnectInfo(ConnectionPeer { id: 3, addr }));
        assert_eq!(peer_addr(&request), Some(addr));
        let direct: SocketAddr = "10.0.0.8:1".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(direct));
        assert_eq!(peer_addr(&request), Some(direct));
    }

    #[test]
    fn quiet_clients_are_pruned() {
        let limiter = limiter(60, 1);
        let start = Instant::now();
        for i in 0..RateLimiter::PRUNE_AT as u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            limiter.check(Some(ip), start);
        }
        assert_eq!(limiter.clients(), RateLimiter::PRUNE_AT);
        // A second later every bucket is full again: a new client clears them out.
        limiter.check(A, start + Duration::from_secs(1));
        assert_eq!(limiter.clients(), 1);
    }
}
