//! The guest's initramfs, built from this machine's own binaries: busybox
//! (static) with its applets, iproute2's `ip`, `stratad`, `stratactl`,
//! `chronyd`, this `xtask` (the truth responder and guest helpers), the
//! shared libraries `ldd` names for them, the kernel modules the guest
//! needs with a generated `modules.dep`, the generic `/init` and the
//! scenario's own files under `/scenario`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use super::cpio::{self, Entry};
use super::kernel::{self, Kernel};
use crate::scenario::guard::run_cmd;

/// Modules every guest loads: the NIC and its PCI transport, the RNG, and
/// what the scenarios build (veth, VRF).
pub const MODULES: &[&str] = &["virtio_pci", "virtio_net", "virtio_rng", "veth", "vrf"];

/// The file whose presence tells the `vm-guest` helpers they run in a guest.
pub const GUEST_MARKER: &str = "/etc/strata-vm-guest";

/// The guest's `/init`: mounts, loads modules, then reads one command per
/// line from the console and runs it (the host drives the guest this way).
const INIT: &str = r#"#!/bin/sh
export PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp /var/lib/strata /var/run /run/netns
mount -t tmpfs tmpfs /run
mkdir -p /run/netns /run/strata
for m in $(cat /etc/vm-modules); do modprobe "$m" || echo "@@MODPROBE-FAILED $m"; done
ip link set lo up
stty -echo -onlcr 2>/dev/null
echo "@@BOOT $(cut -d' ' -f1 /proc/uptime) $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
while IFS= read -r line; do eval "$line"; done
poweroff -f
"#;

/// Files the initramfs is made of: guest path → (mode, host source or
/// contents).
#[derive(Default)]
pub struct Image {
    files: BTreeMap<String, (u32, Source)>,
    links: BTreeMap<String, String>,
}

enum Source {
    Host(PathBuf),
    Bytes(Vec<u8>),
}

impl Image {
    /// Adds the host file `src` at `dest`.
    pub fn add_host(&mut self, dest: &str, src: &Path, mode: u32) {
        self.files
            .insert(dest.to_owned(), (mode, Source::Host(src.to_owned())));
    }

    /// Adds a file with `data` at `dest`.
    pub fn add_bytes(&mut self, dest: &str, data: impl Into<Vec<u8>>, mode: u32) {
        self.files
            .insert(dest.to_owned(), (mode, Source::Bytes(data.into())));
    }

    /// Adds a dynamically linked binary and the libraries `ldd` names.
    pub fn add_binary(&mut self, dest: &str, src: &Path) -> Result<()> {
        self.add_host(dest, src, 0o755);
        for lib in ldd(src)? {
            let dest = lib.display().to_string();
            self.add_host(&dest, &lib, 0o755);
        }
        Ok(())
    }

    /// Writes the archive to `out`. Host files are read (symlinks followed);
    /// files at least 1 MiB that are ELF are stripped of debug info first
    /// (into `scratch`) to keep the guest's memory small.
    pub fn write(&self, out: &Path, scratch: &Path) -> Result<()> {
        let mut dirs = BTreeSet::new();
        let all = self.files.keys().chain(self.links.keys());
        for path in all {
            let mut p = Path::new(path);
            while let Some(parent) = p.parent() {
                if parent.as_os_str().len() > 1 {
                    dirs.insert(parent.display().to_string());
                }
                p = parent;
            }
        }
        let mut entries: Vec<Entry> = dirs
            .into_iter()
            .map(|path| Entry::Dir { path, mode: 0o755 })
            .collect();
        for d in ["/proc", "/sys", "/dev", "/tmp", "/run", "/root"] {
            if !entries
                .iter()
                .any(|e| matches!(e, Entry::Dir { path, .. } if path == d))
            {
                entries.push(Entry::Dir {
                    path: d.to_owned(),
                    mode: 0o755,
                });
            }
        }
        std::fs::create_dir_all(scratch)?;
        for (path, (mode, source)) in &self.files {
            let data = match source {
                Source::Bytes(b) => b.clone(),
                Source::Host(src) => read_stripped(src, scratch)?,
            };
            entries.push(Entry::File {
                path: path.clone(),
                mode: *mode,
                data,
            });
        }
        for (path, target) in &self.links {
            if self.files.contains_key(path) {
                continue;
            }
            entries.push(Entry::Symlink {
                path: path.clone(),
                target: target.clone(),
            });
        }
        let file =
            std::fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
        let mut w = std::io::BufWriter::new(file);
        cpio::write_archive(&mut w, &entries)?;
        std::io::Write::flush(&mut w)?;
        Ok(())
    }
}

/// A host file's bytes; a large ELF file is read through `strip --strip-debug`.
fn read_stripped(src: &Path, scratch: &Path) -> Result<Vec<u8>> {
    let data = std::fs::read(src).with_context(|| format!("read {}", src.display()))?;
    if data.len() < (1 << 20) || !data.starts_with(b"\x7fELF") {
        return Ok(data);
    }
    let name = src
        .file_name()
        .map_or_else(|| "bin".into(), |n| n.to_owned());
    let tmp = scratch.join(name);
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&tmp)
        .arg(src)
        .status();
    match stripped {
        Ok(s) if s.success() => Ok(std::fs::read(&tmp)?),
        _ => Ok(data),
    }
}

/// The shared libraries (and the loader) `ldd` names for `bin`; empty for
/// a static binary.
pub fn ldd(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().context("run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(parse_ldd(&text))
}

/// The absolute paths in `ldd` output.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Finds `name` on the host's usual binary directories.
pub fn which(name: &str) -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} not found (install it: see .ci/run)")
}

/// The binaries the guest needs from the build.
pub struct GuestBins {
    /// `stratad`.
    pub stratad: PathBuf,
    /// `stratactl`.
    pub stratactl: PathBuf,
    /// This `xtask`.
    pub xtask: PathBuf,
}

/// The base image every guest gets (binaries, libraries, modules, `/init`).
pub fn base(kernel: &Kernel, bins: &GuestBins) -> Result<Image> {
    let mut img = Image::default();
    img.add_bytes("/init", INIT, 0o755);
    img.add_bytes(GUEST_MARKER, "strata vm guest\n", 0o644);
    img.add_bytes(
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\n_chrony:x:100:100::/run:/bin/false\n",
        0o644,
    );
    img.add_bytes("/etc/group", "root:x:0:\n_chrony:x:100:\n", 0o644);
    img.add_bytes("/etc/vm-modules", MODULES.join("\n") + "\n", 0o644);
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        bail!("/bin/busybox not found (install busybox-static)");
    }
    img.add_host("/bin/busybox", busybox, 0o755);
    let list = run_cmd(Command::new(busybox).arg("--list-full"))?;
    for applet in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        // The real iproute2 `ip` replaces busybox's.
        if applet.ends_with("/ip") {
            continue;
        }
        img.links
            .insert(format!("/{applet}"), "/bin/busybox".to_owned());
    }
    img.add_binary("/usr/sbin/ip", &which("ip")?)?;
    img.add_binary("/usr/sbin/chronyd", &which("chronyd")?)?;
    // GNU date sets the clock to the nanosecond (busybox's to the second);
    // under its own name, as busybox sh runs its own `date` applet first.
    img.add_binary("/usr/local/bin/gnudate", &which("date")?)?;
    img.add_binary("/usr/local/bin/stratad", &bins.stratad)?;
    img.add_binary("/usr/local/bin/stratactl", &bins.stratactl)?;
    img.add_binary("/usr/local/bin/xtask", &bins.xtask)?;
    let (mods, dep) = kernel::module_closure(&kernel.modules, MODULES)?;
    let mod_root = format!("/lib/modules/{}", kernel.release);
    for m in mods {
        img.add_host(
            &format!("{mod_root}/{}", m.display()),
            &kernel.modules.join(&m),
            0o644,
        );
    }
    img.add_bytes(&format!("{mod_root}/modules.dep"), dep, 0o644);
    Ok(img)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldd_output() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(out),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n").is_empty());
    }
}
