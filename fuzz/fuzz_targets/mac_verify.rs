//! Fuzz target: `auth::verify` never panics with a fixed key store; a
//! datagram it accepts is exactly what `auth::sign` makes of its body,
//! and anything `sign` makes verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use strata_engine::auth::{parse_keys_file, sign, verify, KeyStore, Verdict};

/// The keys the seed corpus is signed with (see `fuzz/make_corpus.py`).
const KEYS: &str = "\
1 MD5 strata-md5-key
2 SHA1 HEX:0102030405060708090a0b0c0d0e0f1011121314
3 SHA256 ASCII:sha256secret
4 AES128CMAC HEX:2b7e151628aed2a6abf7158809cf4f3c
5 MD5 untrusted-key
";

fn store() -> &'static KeyStore {
    static STORE: OnceLock<KeyStore> = OnceLock::new();
    STORE.get_or_init(|| {
        KeyStore::new(parse_keys_file(KEYS).expect("keys"), [1, 2, 3, 4]).expect("store")
    })
}

fuzz_target!(|data: &[u8]| {
    let store = store();
    let mut out = [0u8; 2048];
    if let Verdict::Ok { key_id } = verify(store, data) {
        let mac_len = store.get(key_id).expect("verified key exists").kind().mac_len();
        let body = &data[..data.len() - mac_len];
        let n = sign(store, key_id, body, &mut out).expect("re-sign");
        assert_eq!(&out[..n], data, "verified datagram differs from its re-signing");
    }
    for key_id in 1..=4 {
        if let Ok(n) = sign(store, key_id, data, &mut out) {
            assert_eq!(verify(store, &out[..n]), Verdict::Ok { key_id });
        }
    }
});
