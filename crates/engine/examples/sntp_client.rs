//! A minimal SNTP client: one `strata_engine::Node` with one server,
//! driven over a std `UdpSocket`. Prints the first measured offset and
//! delay, never touches the clock, and gives up after ten seconds.
//!
//! `cargo run -p strata-engine --example sntp_client -- 127.0.0.1:123`

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand_chacha::{rand_core::SeedableRng, ChaCha20Rng};
use strata_engine::{ClientConfig, InstanceId, Instant, Node, NodeConfig, RecvMeta, SocketId};
use strata_wire::NtpTimestamp;

/// The host clock on the NTP timescale.
fn clock() -> NtpTimestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    NtpTimestamp::from_unix(i64::try_from(d.as_secs()).unwrap_or(0), d.subsec_nanos())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server: SocketAddr = std::env::args()
        .nth(1)
        .ok_or("usage: sntp_client HOST:PORT")?
        .parse()?;
    let socket = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    // Request cookies must be unpredictable: seed from the OS.
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| format!("getrandom: {e}"))?;
    let mut node = Node::new(NodeConfig::default(), ChaCha20Rng::from_seed(seed));

    let start = std::time::Instant::now();
    let now = || Instant::from_nanos(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
    let config = ClientConfig {
        instance: InstanceId::DEFAULT,
        address: server,
        minpoll: 4,
        maxpoll: 4,
        iburst: true,
    };
    node.add_client(config, now());

    let mut buf = [0u8; 1024];
    while start.elapsed() < Duration::from_secs(10) {
        node.handle_timeout(now());
        while let Some(tx) = node.poll_transmit(clock(), &mut buf) {
            socket.send_to(&buf[..tx.len], tx.dst)?;
        }
        while node.poll_event().is_some() {} // an SNTP client leaves the clock alone
        if let Some(s) = node.sessions(now()).find(|s| !s.filter.is_empty()) {
            let sample = s
                .filter
                .iter()
                .min_by(|a, b| a.delay.total_cmp(&b.delay))
                .ok_or("no sample")?;
            println!(
                "server {} stratum {} offset {:+.6} s delay {:.6} s",
                s.address, s.stratum, sample.offset, sample.delay
            );
            return Ok(());
        }
        // Wait for a reply, at most until the next timer.
        let wait = node.poll_timeout().map_or(Duration::from_millis(500), |t| {
            t.saturating_duration_since(now())
                .max(Duration::from_millis(1))
        });
        socket.set_read_timeout(Some(wait.min(Duration::from_secs(1))))?;
        match socket.recv_from(&mut buf) {
            Ok((len, src)) => {
                let meta = RecvMeta {
                    instance: InstanceId::DEFAULT,
                    socket: SocketId(0),
                    listener: false,
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
    }
    Err(format!("no answer from {server}").into())
}
