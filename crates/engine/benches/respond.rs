//! Criterion micro-benchmarks of the server's reply construction:
//! [`strata_engine::respond`] on a 48-byte client request, alone and
//! behind a rate-limiter lookup (the sharded table, 100,000 clients).
//!
//! Run with `cargo bench -p strata-engine`; figures are recorded in
//! docs/performance.md.

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use criterion::{criterion_main, Criterion, Throughput};
use strata_engine::{
    ratelimit::{RateLimitConfig, ShardedRateLimiter},
    respond, InstanceId, Instant, ServerState,
};
use strata_wire::{Leap, NtpRepr, NtpShort, NtpTimestamp, ReferenceId, HEADER_LEN};

/// A synchronised stratum-1 server.
fn state() -> ServerState {
    ServerState {
        leap: Leap::NoWarning,
        stratum: 1,
        precision: -20,
        root_delay: NtpShort::ZERO,
        root_dispersion: NtpShort::from_bits(0x10),
        reference_id: ReferenceId::new(*b"LOCL"),
        reference_time: NtpTimestamp::from_bits(0xe9b4_a5c0_0000_0000),
    }
}

fn bench_respond(c: &mut Criterion) {
    let request =
        NtpRepr::client_request(6, NtpTimestamp::from_bits(0xe9b4_a5c6_1234_5678)).to_bytes();
    let state = state();
    let rx = NtpTimestamp::from_bits(0xe9b4_a5c6_2000_0000);
    let tx = NtpTimestamp::from_bits(0xe9b4_a5c6_2000_1000);
    let mut out = [0u8; HEADER_LEN];
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    g.bench_function("respond", |b| {
        b.iter(|| {
            respond(
                black_box(&request[..]),
                black_box(rx),
                black_box(tx),
                &state,
                &mut out,
            )
        });
    });

    let limiter = ShardedRateLimiter::new(
        RateLimitConfig {
            interval: Duration::from_millis(1),
            burst: 1_000,
            max_clients: 200_000,
        },
        16,
    );
    let clients: Vec<IpAddr> = (0..100_000u32)
        .map(|n| IpAddr::V4(Ipv4Addr::from(0x7f14_0000 + n)))
        .collect();
    let mut now_ns = 1_000_000_000u64;
    for ip in &clients {
        let _ = limiter.check(Instant::from_nanos(now_ns), (InstanceId::DEFAULT, *ip));
    }
    let mut i = 0usize;
    g.bench_function("ratelimit_check_and_respond_100k_clients", |b| {
        b.iter(|| {
            i = (i + 7919) % clients.len();
            now_ns += 1_000;
            let key = (InstanceId::DEFAULT, clients[i]);
            let _ = black_box(limiter.check(Instant::from_nanos(now_ns), key));
            respond(
                black_box(&request[..]),
                black_box(rx),
                black_box(tx),
                &state,
                &mut out,
            )
        });
    });
    g.finish();
}

/// The criterion group (a private module: the macro's `pub fn` needs no docs).
mod group {
    criterion::criterion_group!(benches, super::bench_respond);
}

criterion_main!(group::benches);
