//! Fuzz target: `ExtensionIter` never panics, yields fields that exactly
//! tile its input up to the first error (then stops), and each field
//! re-emits to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_wire::{parse_trailer, ExtensionIter, ExtensionRepr};

fuzz_target!(|data: &[u8]| {
    let mut consumed = 0usize;
    let mut errored = false;
    let mut buf = [0u8; 65_536];
    for item in ExtensionIter::new(data) {
        assert!(!errored, "ExtensionIter yielded after an error");
        match item {
            Ok(field) => {
                let bytes = field.into_inner();
                assert_eq!(bytes, &data[consumed..consumed + bytes.len()]);
                let field = strata_wire::ExtensionField::new_checked(bytes).expect("checked");
                let repr = ExtensionRepr::parse(&field).expect("a checked field parses");
                let n = repr.emit(&mut buf).expect("room");
                assert_eq!(&buf[..n], bytes, "extension field round trip");
                consumed += bytes.len();
            }
            Err(_) => errored = true,
        }
    }
    if !errored {
        assert_eq!(consumed, data.len(), "fields must cover the input");
    }
    // The trailer walk agrees with the iterator on its extension area.
    if let Ok(layout) = parse_trailer(data) {
        assert!(layout.extension_fields().all(|f| f.is_ok()));
    }
});
