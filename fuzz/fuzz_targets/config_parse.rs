//! Fuzz target: checking arbitrary UTF-8 as a configuration file never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = strata_daemon::config::check_str(text);
    }
});
