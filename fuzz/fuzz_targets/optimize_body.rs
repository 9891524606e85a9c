//! Any bytes as the body of `POST /performance-optimize`: a request, or a 400/422 error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use perfpilot::__internal::parse_optimize_request;

fuzz_target!(|data: &[u8]| {
    if let Err(error) = parse_optimize_request(data) {
        assert!(matches!(error.status().as_u16(), 400 | 422));
    }
});
