//! Fuzz target: `parse_datagram` never panics, and whatever it accepts
//! re-emits (header, extension fields, MAC) to exactly the same bytes,
//! which parse again to the same representation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_wire::{parse_datagram, ExtensionRepr, NtpPacket, NtpRepr, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok((repr, layout)) = parse_datagram(data) else {
        return;
    };
    let mut out = vec![0u8; data.len()];
    let header = repr.emit_to_slice(&mut out).expect("room for the header");
    assert_eq!(header, HEADER_LEN);
    let mut pos = header;
    for field in layout.extension_fields() {
        let field = field.expect("extensions were validated by parse_datagram");
        let ext = ExtensionRepr::parse(&field).expect("a checked field parses");
        pos += ext.emit(&mut out[pos..]).expect("room for the field");
    }
    if let Some(mac) = layout.mac {
        pos += mac.emit(&mut out[pos..]).expect("room for the MAC");
    }
    assert_eq!(pos, data.len(), "re-emitted length");
    assert_eq!(out, data, "parse -> emit is not the identity");
    let again = NtpRepr::parse(&NtpPacket::new_checked(&out[..]).expect("header length"))
        .expect("re-parse");
    assert_eq!(again, repr);
    let (again, layout_again) = parse_datagram(&out).expect("re-parse datagram");
    assert_eq!(again, repr);
    assert_eq!(layout_again, layout);
});
