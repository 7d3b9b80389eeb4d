//! Criterion micro-benchmarks of the packet format: parsing a 48-byte
//! request (header view and whole datagram) and emitting a reply header.
//!
//! Run with `cargo bench -p strata-wire`; figures are recorded in
//! docs/performance.md.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use strata_wire::{
    parse_datagram, Leap, Mode, NtpPacket, NtpRepr, NtpShort, NtpTimestamp, ReferenceId, HEADER_LEN,
};

/// A client request as a server receives it.
fn request_bytes() -> [u8; HEADER_LEN] {
    NtpRepr::client_request(6, NtpTimestamp::from_bits(0xe9b4_a5c6_1234_5678)).to_bytes()
}

/// A typical server reply.
fn reply_repr() -> NtpRepr {
    NtpRepr {
        leap: Leap::NoWarning,
        version: 4,
        mode: Mode::Server,
        stratum: 1,
        poll: 6,
        precision: -20,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::from_bits(0x10),
        reference_id: ReferenceId::new(*b"LOCL"),
        reference_timestamp: NtpTimestamp::from_bits(0xe9b4_a5c0_0000_0000),
        origin_timestamp: NtpTimestamp::from_bits(0xe9b4_a5c6_1234_5678),
        receive_timestamp: NtpTimestamp::from_bits(0xe9b4_a5c6_2000_0000),
        transmit_timestamp: NtpTimestamp::from_bits(0xe9b4_a5c6_2000_1000),
    }
}

fn bench_packet(c: &mut Criterion) {
    let request = request_bytes();
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_header", |b| {
        b.iter(|| {
            let view = NtpPacket::new_checked(black_box(&request[..]));
            view.and_then(|p| NtpRepr::parse(&p))
        });
    });
    g.bench_function("parse_datagram", |b| {
        b.iter(|| parse_datagram(black_box(&request[..])).map(|(repr, _)| repr));
    });
    let reply = reply_repr();
    let mut out = [0u8; HEADER_LEN];
    g.bench_function("emit_header", |b| {
        b.iter(|| {
            black_box(&reply).emit(&mut NtpPacket::new_unchecked(&mut out[..]));
            black_box(&out);
        });
    });
    g.bench_function("emit_to_slice", |b| {
        b.iter(|| black_box(&reply).emit_to_slice(black_box(&mut out[..])));
    });
    g.finish();
}

/// The criterion group (a private module: the macro's `pub fn` needs no docs).
mod group {
    criterion::criterion_group!(benches, super::bench_packet);
}

criterion_main!(group::benches);
