//! `cargo xtask vm list|NAME|all`: scenarios in guest kernels, where a clock
//! may be steered for real (root only).
//!
//! Each run resolves and unpacks Debian's kernel once ([`kernel`]), builds an
//! initramfs from this machine's binaries ([`initramfs`], [`cpio`]), makes a
//! network namespace `st<4 hex>-vm` with a tap for the guest's NIC and runs
//! the reference there (stratad on the virtual clock, i.e. the host
//! timescale, never steering the host clock), boots qemu ([`guest`]) and
//! drives the guest over its serial console. The guest's true clock error
//! is measured from the namespace against a responder in the guest
//! ([`truth`]). Everything is owned by a [`Guard`]: qemu, the reference, the
//! tap and the namespace go on success, failure and Ctrl-C.
//!
//! KVM is probed once (a boot that must reach `/init` in time) and the
//! result cached in `target/vm/accel`; TCG is the default.
//!
//! The guest helper `xtask vm-guest truth` runs inside the guest only: it
//! refuses to run where the guest marker file is missing or PID 1 is not
//! the guest's `/init`. The guest's clock is set with GNU `date` and
//! busybox `adjtimex`, and read with busybox `adjtimex` (read-only).

pub mod cpio;
pub mod guest;
pub mod initramfs;
pub mod kernel;
mod system_clock;
pub mod truth;
mod vrf;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use xshell::{cmd, Shell};

use crate::scenario::guard::{self, ip, Guard};
use guest::{Accel, Guest, Spec};

/// A vm scenario.
pub struct VmScenario {
    /// `vm-…`.
    pub name: &'static str,
    /// One line for `list`.
    pub about: &'static str,
    run: fn(&mut Ctx) -> Result<String>,
    /// Files added to this scenario's initramfs under `/scenario`.
    files: fn() -> Vec<(&'static str, String)>,
}

/// Every vm scenario, in run order.
pub fn scenarios() -> Vec<VmScenario> {
    vec![
        VmScenario {
            name: "vm-system-clock",
            about: "stratad backend=system steers a guest kernel clock: start from the kernel's \
                frequency, step once, slew, kernel sync status, drift file, clock set under it",
            run: system_clock::run,
            files: system_clock::files,
        },
        VmScenario {
            name: "vm-vrf",
            about: "a PE with two real VRFs on the same subnet, CEs behind each, one stratad: \
                both VPNs served, PE synced via VRF A, udp_l3mdev_accept 0/1, VRF re-created",
            run: vrf::run,
            files: vrf::files,
        },
    ]
}

/// The subnet of a run's host namespace and guest.
const HOST_ADDR: &str = "10.200.90.1";
/// The guest's address.
const GUEST_ADDR: &str = "10.200.90.2";
/// The tap device in the host namespace.
const TAP: &str = "vmtap0";
/// The longest boot (generous: TCG on a shared machine).
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// What a scenario works with.
pub struct Ctx {
    /// The run's guard.
    pub guard: Guard,
    /// The host namespace.
    pub netns: String,
    /// The booted guest.
    pub guest: Guest,
    /// The run directory.
    pub dir: PathBuf,
    /// Binaries on the host side.
    pub bins: initramfs::GuestBins,
    /// The reference's PID while it runs.
    pub reference: Option<u32>,
}

impl Ctx {
    /// The guest's truth responder.
    pub fn truth_addr() -> SocketAddr {
        SocketAddr::new(GUEST_ADDR.parse().expect("literal"), truth::PORT)
    }

    /// One truth measurement of the guest clock (least RTT of a burst).
    pub fn truth(&self) -> Result<truth::Truth> {
        truth::measure(&self.netns, Self::truth_addr(), 8)
    }

    /// Starts stratad in the host namespace on the virtual clock (the host
    /// timescale; it never steers the host clock) as a stratum-1 reference.
    pub fn start_reference(&self) -> Result<u32> {
        let conf = self.dir.join("reference.toml");
        std::fs::write(
            &conf,
            format!(
                "[clock]\nbackend = \"virtual\"\n\n[local-reference]\nstratum = 1\n\n\
                 [[listen]]\naddress = \"{HOST_ADDR}:123\"\n\n[control]\nsocket = \"{}\"\n",
                self.dir.join("reference.sock").display()
            ),
        )?;
        let log = std::fs::File::create(self.dir.join("reference.log"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns])
            .arg(&self.bins.stratad)
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone()?)
            .stderr(log);
        self.guard.spawn("reference stratad", &mut cmd)
    }
}

/// `cargo xtask vm NAME|all|list`.
pub fn cli(sh: &Shell, name: &str, keep: bool) -> Result<()> {
    let all = scenarios();
    if name == "list" {
        for s in &all {
            println!("{:<18} {}", s.name, s.about);
        }
        return Ok(());
    }
    let selected: Vec<&VmScenario> = if name == "all" {
        all.iter().collect()
    } else {
        let s = all
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("no vm scenario {name:?} (try `cargo xtask vm list`)"))?;
        vec![s]
    };
    run_selected(sh, &selected, keep)
}

/// Whether `cargo xtask test` can run the vm scenarios here.
pub fn available() -> bool {
    Path::new("/usr/bin/qemu-system-x86_64").is_file() && Path::new("/bin/busybox").is_file()
}

/// Runs `selected` one after the other; fails if any fails.
pub fn run_selected(sh: &Shell, selected: &[&VmScenario], keep: bool) -> Result<()> {
    ensure!(
        crate::scenario::is_root()?,
        "vm requires root (network namespaces, taps); run as root or skip"
    );
    ensure!(
        available(),
        "vm needs qemu-system-x86 and busybox-static (see .ci/run)"
    );
    let vm_dir = crate::target_dir().join("vm");
    std::fs::create_dir_all(&vm_dir)?;
    let bins = match std::env::var_os("XTASK_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            cmd!(sh, "cargo build -p strata-daemon --bins").run()?;
            crate::target_dir().join("debug")
        }
    };
    let bins = initramfs::GuestBins {
        stratad: bins.join("stratad"),
        stratactl: bins.join("stratactl"),
        xtask: std::env::current_exe().context("path of xtask")?,
    };
    let kernel = kernel::ensure(&vm_dir)?;
    println!("vm: kernel {}", kernel.release);
    let mut failed = Vec::new();
    for sc in selected {
        let started = Instant::now();
        match run_one(sc, &vm_dir, &kernel, &bins, keep) {
            Ok(summary) => println!(
                "vm {}: pass ({:.0} s) {summary}",
                sc.name,
                started.elapsed().as_secs_f64()
            ),
            Err(e) => {
                println!("vm {}: FAIL: {e:#}", sc.name);
                failed.push(sc.name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("vm scenario(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

fn run_one(
    sc: &VmScenario,
    vm_dir: &Path,
    kernel: &kernel::Kernel,
    bins: &initramfs::GuestBins,
    keep: bool,
) -> Result<String> {
    let prefix = guard::new_prefix()?;
    let dir = vm_dir.join("runs").join(format!("{prefix}{}", sc.name));
    std::fs::create_dir_all(&dir)?;
    let mut img = initramfs::base(kernel, bins)?;
    for (name, text) in (sc.files)() {
        let mode = if name.ends_with(".sh") { 0o755 } else { 0o644 };
        img.add_bytes(&format!("/scenario/{name}"), text, mode);
    }
    let initrd = dir.join("initrd.cpio");
    img.write(&initrd, &dir.join("strip"))?;
    let accel = accel(vm_dir, kernel, &initrd, &dir)?;
    let guard = Guard::new();
    let netns = format!("{prefix}vm");
    guard.add_netns(&netns)?;
    ip(&["-n", &netns, "tuntap", "add", "dev", TAP, "mode", "tap"])?;
    guard.record_link(&netns, TAP);
    ip(&[
        "-n",
        &netns,
        "addr",
        "add",
        &format!("{HOST_ADDR}/24"),
        "dev",
        TAP,
    ])?;
    ip(&["-n", &netns, "link", "set", "dev", TAP, "up"])?;
    let guest = Guest::boot(
        &guard,
        &Spec {
            name: "guest",
            kernel: &kernel.vmlinuz,
            initrd: &initrd,
            tap: TAP,
            netns: &netns,
            dir: &dir,
            accel,
            boot_timeout: BOOT_TIMEOUT,
        },
    )?;
    println!(
        "vm {}: guest booted ({}) in {:.1} s wall, {:.1} s guest; clocksource {}",
        sc.name,
        accel.name(),
        guest.boot_wall_s,
        guest.boot_guest_s,
        guest.clocksource
    );
    let mut ctx = Ctx {
        guard,
        netns,
        guest,
        dir: dir.clone(),
        bins: initramfs::GuestBins {
            stratad: bins.stratad.clone(),
            stratactl: bins.stratactl.clone(),
            xtask: bins.xtask.clone(),
        },
        reference: None,
    };
    let short = Duration::from_secs(30);
    ctx.guest.ok(
        &format!("/usr/sbin/ip link set eth0 up && /usr/sbin/ip addr add {GUEST_ADDR}/24 dev eth0"),
        short,
    )?;
    ctx.guest.ok(
        &format!(
            "xtask vm-guest truth --addr 0.0.0.0:{} >/tmp/truth.log 2>&1 &",
            truth::PORT
        ),
        short,
    )?;
    let result = (sc.run)(&mut ctx);
    if result.is_err() {
        // The guest's logs go to the console log for the post-mortem.
        ctx.guest
            .run("tail -n 30 /tmp/*.log", Duration::from_secs(30))
            .ok();
    }
    let problems = ctx.guard.cleanup();
    for p in &problems {
        eprintln!("cleanup: {p}");
    }
    let summary = result.with_context(|| format!("run directory {}", dir.display()))?;
    ensure!(problems.is_empty(), "teardown problems: {problems:?}");
    if !keep {
        std::fs::remove_dir_all(&dir).ok();
    }
    Ok(summary)
}

/// The accelerator: KVM only when a probe boot under KVM reached `/init`
/// in time (probed once, cached in `target/vm/accel`), else TCG.
fn accel(vm_dir: &Path, kernel: &kernel::Kernel, initrd: &Path, dir: &Path) -> Result<Accel> {
    let cache = vm_dir.join("accel");
    if let Ok(cached) = std::fs::read_to_string(&cache) {
        return Ok(if cached.trim() == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        });
    }
    let mut chosen = Accel::Tcg;
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
    {
        let guard = Guard::new();
        let prefix = guard::new_prefix()?;
        let netns = format!("{prefix}kvm");
        guard.add_netns(&netns)?;
        ip(&["-n", &netns, "tuntap", "add", "dev", TAP, "mode", "tap"])?;
        guard.record_link(&netns, TAP);
        let booted = Guest::boot(
            &guard,
            &Spec {
                name: "kvm-probe",
                kernel: &kernel.vmlinuz,
                initrd,
                tap: TAP,
                netns: &netns,
                dir,
                accel: Accel::Kvm,
                boot_timeout: Duration::from_secs(40),
            },
        );
        match booted {
            Ok(g) => {
                println!("vm: KVM probe booted in {:.1} s: using KVM", g.boot_wall_s);
                chosen = Accel::Kvm;
            }
            Err(e) => println!("vm: KVM probe failed ({e:#}): using TCG"),
        }
    } else {
        println!("vm: /dev/kvm not usable: using TCG");
    }
    std::fs::write(&cache, format!("{}\n", chosen.name()))?;
    Ok(chosen)
}

/// `xtask vm-guest truth`: the truth responder, inside a guest only.
pub fn guest_cli(action: &str, addr: Option<&str>) -> Result<()> {
    let init = std::fs::read("/proc/1/cmdline").unwrap_or_default();
    ensure!(
        Path::new(initramfs::GUEST_MARKER).is_file() && init.starts_with(b"/bin/sh\0/init"),
        "vm-guest runs only inside a `cargo xtask vm` guest"
    );
    match action {
        "truth" => {
            let addr: SocketAddr = addr
                .unwrap_or("0.0.0.0:4460")
                .parse()
                .context("bad --addr")?;
            let n = truth::serve(addr, Duration::from_secs(3600))?;
            eprintln!("truth: answered {n}");
            Ok(())
        }
        other => bail!("unknown vm-guest action {other:?}: truth"),
    }
}

/// The kernel state busybox `adjtimex` (read-only, no options) prints.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KernelLine {
    /// Frequency, ppm.
    pub freq_ppm: f64,
    /// `STA_*` bits.
    pub status: i64,
    /// Clock state (`TIME_*`).
    pub state: i64,
    /// Maximum error, s.
    pub maxerror_s: f64,
    /// Estimated error, s.
    pub esterror_s: f64,
}

impl KernelLine {
    /// Parses busybox `adjtimex` output.
    pub fn parse(text: &str) -> Option<KernelLine> {
        let field = |name: &str| -> Option<i64> {
            let line = text.lines().find(|l| l.contains(name))?;
            let rest = line[line.find(name)? + name.len()..].trim();
            rest.split_whitespace().next()?.parse().ok()
        };
        #[allow(clippy::cast_precision_loss)] // kernel values are far below 2^52
        Some(KernelLine {
            freq_ppm: field("freq.adjust:")? as f64 / 65536.0,
            status: field("status:")?,
            state: field("return value:")?,
            maxerror_s: field("maxerror:")? as f64 * 1e-6,
            esterror_s: field("esterror:")? as f64 * 1e-6,
        })
    }

    /// The status bits by name (`PLL`, `UNSYNC`, …).
    pub fn bits(&self) -> String {
        const NAMES: &[(i64, &str)] = &[
            (0x0001, "PLL"),
            (0x0002, "PPSFREQ"),
            (0x0004, "PPSTIME"),
            (0x0008, "FLL"),
            (0x0010, "INS"),
            (0x0020, "DEL"),
            (0x0040, "UNSYNC"),
            (0x0080, "FREQHOLD"),
            (0x2000, "NANO"),
        ];
        let names: Vec<&str> = NAMES
            .iter()
            .filter(|(bit, _)| self.status & bit != 0)
            .map(|(_, n)| *n)
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join("|")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_lines() {
        let out = "    mode:         0\n-o  offset:       0 us\n\
                   -f  freq.adjust:  3276800 (65536 = 1ppm)\n    maxerror:     16000000\n\
                   \x20   esterror:     10\n    status:       8257 (PLL|UNSYNC|NANO)\n\
                   -p  timeconstant: 2\n    return value: 5 (clock not synchronized)\n";
        let k = KernelLine::parse(out).unwrap();
        assert_eq!(k.freq_ppm, 50.0);
        assert_eq!(k.status, 0x2041);
        assert_eq!(k.state, 5);
        assert!((k.maxerror_s - 16.0).abs() < 1e-9 && (k.esterror_s - 1e-5).abs() < 1e-12);
        assert_eq!(k.bits(), "PLL|UNSYNC|NANO");
        assert!(KernelLine::parse("nothing").is_none());
    }

    #[test]
    fn scenario_names_are_unique_and_prefixed() {
        let all = scenarios();
        for (i, s) in all.iter().enumerate() {
            assert!(s.name.starts_with("vm-"));
            assert!(all[i + 1..].iter().all(|o| o.name != s.name));
        }
    }
}
