//! gzip for the read routes (`/metrics`, `/performance-metrics`, `/openapi.json`) when the
//! client asks with `Accept-Encoding: gzip`, as Prometheus does on every scrape.
//!
//! The cached documents keep their compressed bytes beside the plain ones and compress once
//! per rendered document ([`Compressed`]); `/metrics`, rendered per scrape, is compressed per
//! scrape at the fastest level.

use std::io::Write;
use std::sync::OnceLock;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use flate2::write::GzEncoder;
use flate2::Compression;

/// Whether `Accept-Encoding` accepts gzip (`gzip`, `x-gzip` or `*`, with a non-zero `q`).
pub(super) fn accepted(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let wanted = ["gzip", "x-gzip", "*"]
                .iter()
                .any(|known| name.eq_ignore_ascii_case(known));
            let refused = parts.any(|parameter| {
                parameter
                    .trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            wanted && !refused
        })
}

/// `bytes` compressed with gzip at `level`.
pub(super) fn compress(bytes: &[u8], level: Compression) -> Bytes {
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4 + 64), level);
    // Writing to a Vec cannot fail.
    encoder
        .write_all(bytes)
        .expect("gzip into memory cannot fail");
    Bytes::from(encoder.finish().expect("gzip into memory cannot fail"))
}

/// A cached document's plain bytes and, from the first request that asks, its gzip bytes.
#[derive(Debug)]
pub(super) struct Compressed {
    plain: Bytes,
    gzip: OnceLock<Bytes>,
}

impl Compressed {
    /// The plain document; compressed on first demand.
    pub(super) fn new(plain: Bytes) -> Self {
        Compressed {
            plain,
            gzip: OnceLock::new(),
        }
    }

    /// The plain bytes.
    pub(super) fn plain(&self) -> &Bytes {
        &self.plain
    }

    /// The gzip bytes, compressed once (at the default level: it is done once per document).
    pub(super) fn gzip(&self) -> &Bytes {
        self.gzip
            .get_or_init(|| compress(&self.plain, Compression::default()))
    }

    /// The answer for a request with these headers: gzip when accepted.
    pub(super) fn respond(&self, headers: &HeaderMap, content_type: &'static str) -> Response {
        match accepted(headers) {
            true => answer(content_type, self.gzip().clone(), true),
            false => answer(content_type, self.plain.clone(), false),
        }
    }
}

/// A 200 with `body`, marked gzip-encoded when `gzipped`, and `Vary: Accept-Encoding` either
/// way (a cache must not give one client's encoding to another).
pub(super) fn answer(content_type: &'static str, body: Bytes, gzipped: bool) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn with(accept_encoding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept_encoding).unwrap(),
        );
        headers
    }

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        assert!(accepted(&with("gzip")));
        assert!(accepted(&with("deflate, gzip;q=0.5")));
        assert!(accepted(&with("br, *")));
        assert!(accepted(&with("GZIP")));
        assert!(!accepted(&with("gzip;q=0")));
        assert!(!accepted(&with("br, deflate")));
        assert!(!accepted(&HeaderMap::new()));
    }

    #[test]
    fn a_document_is_compressed_once_and_decompresses_to_itself() {
        let plain = Bytes::from("{\"memoryUsage\":0.0041}".repeat(100));
        let document = Compressed::new(plain.clone());
        let first = document.gzip().clone();
        assert_eq!(document.gzip().as_ptr(), first.as_ptr(), "kept, not redone");
        assert!(first.len() < plain.len() / 10, "{} bytes", first.len());
        let mut decoded = String::new();
        flate2::read::GzDecoder::new(&first[..])
            .read_to_string(&mut decoded)
            .unwrap();
        assert_eq!(decoded.as_bytes(), &plain[..]);
    }
}
