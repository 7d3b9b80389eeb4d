//! One guest: qemu with Debian's kernel and the run's initramfs, its NIC a
//! tap in the run's host namespace, its serial console on a unix socket.
//!
//! The console is the control channel: the guest's `/init` reads one shell
//! command per line and [`Guest::run`] wraps each in markers, so the host
//! waits (bounded) for a command's end and reads its exit status and
//! output. Every console line also goes to `console.log` in the run
//! directory. qemu is started through the run's [`Guard`], which stops it
//! on success, failure and Ctrl-C.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::scenario::guard::{wait_until, Guard};

/// The rest of `line` after `marker` (console lines may start with
/// terminal escapes or another line's unterminated output).
fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| &line[i + marker.len()..])
}

/// How a guest is accelerated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// qemu's TCG (emulation).
    Tcg,
    /// KVM.
    Kvm,
}

impl Accel {
    /// The name qemu's `-accel` takes.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        }
    }
}

/// How to boot one guest.
pub struct Spec<'a> {
    /// A label for logs.
    pub name: &'a str,
    /// The kernel image.
    pub kernel: &'a Path,
    /// The initramfs.
    pub initrd: &'a Path,
    /// The tap device (in `netns`) the guest's NIC is attached to.
    pub tap: &'a str,
    /// The host namespace the tap lives in (qemu runs there).
    pub netns: &'a str,
    /// The run directory (console log).
    pub dir: &'a Path,
    /// TCG or KVM.
    pub accel: Accel,
    /// How long boot may take.
    pub boot_timeout: Duration,
}

/// A running guest.
pub struct Guest {
    stdin: UnixStream,
    lines: Arc<Mutex<Vec<String>>>,
    next_id: u32,
    /// Wall-clock seconds from qemu's start to the guest's `/init`.
    pub boot_wall_s: f64,
    /// The guest's uptime when `/init` started, seconds (guest time).
    pub boot_guest_s: f64,
    /// The guest's clocksource.
    pub clocksource: String,
    /// The console log.
    pub log: PathBuf,
}

impl Guest {
    /// Boots the guest and waits (bounded) for its `/init`.
    pub fn boot(guard: &Guard, spec: &Spec) -> Result<Guest> {
        let log = spec.dir.join(format!("{}-console.log", spec.name));
        let sock = spec.dir.join(format!("{}-console.sock", spec.name));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", spec.netns, "qemu-system-x86_64"])
            .args(["-accel", spec.accel.name(), "-m", "768", "-smp", "1"])
            .args(["-nographic", "-no-reboot", "-monitor", "none"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=con,path={},server=on,wait=on",
                sock.display()
            ))
            .args(["-serial", "chardev:con"])
            .arg("-kernel")
            .arg(spec.kernel)
            .arg("-initrd")
            .arg(spec.initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            .args([
                "-netdev",
                &format!("tap,id=n0,ifname={},script=no,downscript=no", spec.tap),
                "-device",
                "virtio-net-pci,netdev=n0,mac=52:54:00:20:00:02",
                "-device",
                "virtio-rng-pci",
            ])
            .stdout(Stdio::null());
        let started = Instant::now();
        guard.spawn(&format!("qemu {}", spec.name), &mut cmd)?;
        // qemu waits for this connection before it starts the guest.
        let stream = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            UnixStream::connect(&sock).ok()
        })
        .with_context(|| format!("qemu console socket {}", sock.display()))?;
        let stdin = stream.try_clone()?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let mut file = std::fs::File::create(&log)?;
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\r', '\n'])
                    .to_owned();
                writeln!(file, "{line}").ok();
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
                buf.clear();
            }
        });
        let mut guest = Guest {
            stdin,
            lines,
            next_id: 0,
            boot_wall_s: 0.0,
            boot_guest_s: 0.0,
            clocksource: String::new(),
            log,
        };
        let boot = wait_until(spec.boot_timeout, Duration::from_millis(100), || {
            guest.find(|l| after(l, "@@BOOT ").map(str::to_owned))
        })
        .with_context(|| {
            format!(
                "guest {} did not reach /init within {:?} (see {})",
                spec.name,
                spec.boot_timeout,
                guest.log.display()
            )
        })?;
        guest.boot_wall_s = started.elapsed().as_secs_f64();
        let mut parts = boot.split_whitespace();
        guest.boot_guest_s = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
        guest.clocksource = parts.next().unwrap_or("?").to_owned();
        if let Some(m) = guest.find(|l| after(l, "@@MODPROBE-FAILED ").map(str::to_owned)) {
            bail!(
                "guest {}: modprobe {m} failed (see {})",
                spec.name,
                guest.log.display()
            );
        }
        Ok(guest)
    }

    fn find<T>(&self, f: impl Fn(&str) -> Option<T>) -> Option<T> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().find_map(|l| f(l))
    }

    /// Runs one shell command line in the guest and waits (bounded) for it;
    /// returns its exit status and output.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Result<(i32, String)> {
        self.next_id += 1;
        let id = self.next_id;
        let begin = format!("@@BEGIN {id}");
        let done = format!("@@DONE {id} ");
        // The markers are printed with %s so the command text never contains them.
        let line = format!(
            "printf '@@%s {id}\\n' BEGIN; ( {command} ) </dev/null 2>&1; printf '\\n@@%s {id} %d\\n' DONE $?\n"
        );
        if line.len() > 4000 {
            bail!("guest command too long ({} bytes)", line.len());
        }
        self.stdin.write_all(line.as_bytes())?;
        self.stdin.flush()?;
        let rc = wait_until(timeout, Duration::from_millis(50), || {
            self.find(|l| after(l, &done).and_then(|rc| rc.trim().parse::<i32>().ok()))
        })
        .with_context(|| format!("guest command {command:?} did not finish within {timeout:?}"))?;
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let start = lines
            .iter()
            .position(|l| l.ends_with(&begin))
            .map_or(0, |i| i + 1);
        let end = lines
            .iter()
            .position(|l| after(l, &done).is_some())
            .unwrap_or(lines.len());
        let out = lines[start..end.max(start)]
            .iter()
            .filter(|l| !l.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        Ok((rc, out))
    }

    /// Like [`Guest::run`], failing unless the command exits 0.
    pub fn ok(&mut self, command: &str, timeout: Duration) -> Result<String> {
        let (rc, out) = self.run(command, timeout)?;
        if rc != 0 {
            bail!("guest command {command:?} failed ({rc}): {out}");
        }
        Ok(out)
    }
}
