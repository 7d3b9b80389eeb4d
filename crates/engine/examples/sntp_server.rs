//! A minimal NTP server: one `strata_engine::Node` serving the host clock
//! as a local reference at stratum 10, driven over a std `UdpSocket`.
//! Answers every request (no access rules: the engine's default serves
//! everyone) and exits after the given number of seconds (default 60).
//!
//! `cargo run -p strata-engine --example sntp_server -- 127.0.0.1:12300 60`

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
use strata_engine::{InstanceId, Instant, Node, NodeConfig, RecvMeta, SocketId};
use strata_wire::NtpTimestamp;

/// The host clock on the NTP timescale.
fn clock() -> NtpTimestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    NtpTimestamp::from_unix(i64::try_from(d.as_secs()).unwrap_or(0), d.subsec_nanos())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let local: SocketAddr = args
        .next()
        .ok_or("usage: sntp_server HOST:PORT [SECONDS]")?
        .parse()?;
    let lifetime = Duration::from_secs(args.next().map_or(Ok(60), |s| s.parse())?);
    let socket = UdpSocket::bind(local)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    println!("serving on {}", socket.local_addr()?);

    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("getrandom: {e}"))?;
    let config = NodeConfig {
        local_stratum: Some(10),
        ..NodeConfig::default()
    };
    let mut node = Node::new(config, ChaCha20Rng::from_seed(seed));

    let start = std::time::Instant::now();
    let now = || Instant::from_nanos(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let mut buf = [0u8; 1024];
    while start.elapsed() < lifetime {
        match socket.recv_from(&mut buf) {
            Ok((len, src)) => {
                let meta = RecvMeta {
                    instance: InstanceId::DEFAULT,
                    socket: SocketId(0),
                    listener: true,
                    src,
                    dst_ip: None,
                    ifindex: None,
                    rx_time: clock(),
                };
                node.handle_datagram(now(), &meta, &buf[..len]);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
        node.handle_timeout(now());
        while let Some(tx) = node.poll_transmit(clock(), &mut buf) {
            socket.send_to(&buf[..tx.len], tx.dst)?;
        }
        while node.poll_event().is_some() {} // the local reference is not steered
    }
    Ok(())
}
