//! Fuzz target: decoding arbitrary control-socket request lines never
//! panics, and a decoded request re-encodes to a line that decodes to the
//! same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_daemon::control::{decode_request, encode_request};

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        if let Ok(request) = decode_request(line) {
            let again = decode_request(&encode_request(&request)).expect("re-decode");
            assert_eq!(again, request);
        }
    }
});
