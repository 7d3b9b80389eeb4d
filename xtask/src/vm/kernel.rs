//! Debian's kernel for the guests: resolved from the `linux-image-amd64`
//! metapackage, fetched with `apt-get download`, unpacked with `dpkg -x`
//! under `target/vm/kernel/<version>/` (never installed on the host) and
//! kept there across runs.
//!
//! The package ships no `modules.dep` (depmod runs at install time), so the
//! module dependencies are read from each module's `.modinfo` section
//! (`depends=`) and written as a `modules.dep` for busybox `modprobe`.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, ensure, Context, Result};

use crate::scenario::guard::run_cmd;

/// The metapackage that names the current kernel.
const METAPACKAGE: &str = "linux-image-amd64";

/// An unpacked kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The release, e.g. `6.1.0-57-amd64`.
    pub release: String,
    /// `boot/vmlinuz-<release>`.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>`.
    pub modules: PathBuf,
}

/// The `linux-image-<release>` package the metapackage depends on, from
/// `apt-cache depends` output.
pub fn image_package(depends: &str) -> Option<String> {
    depends.lines().find_map(|l| {
        let name = l.trim().strip_prefix("Depends:")?.trim();
        (name.starts_with("linux-image-") && name != METAPACKAGE).then(|| name.to_owned())
    })
}

/// Resolves, downloads (once) and unpacks (once) the kernel under `vm_dir`.
pub fn ensure(vm_dir: &Path) -> Result<Kernel> {
    let depends = run_cmd(Command::new("apt-cache").args(["depends", METAPACKAGE]))?;
    let package = image_package(&depends).with_context(|| {
        format!("no linux-image dependency in `apt-cache depends {METAPACKAGE}`")
    })?;
    let release = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_owned();
    let root = vm_dir.join("kernel").join(&release);
    let kernel = Kernel {
        vmlinuz: root.join("boot").join(format!("vmlinuz-{release}")),
        modules: root.join("lib/modules").join(&release),
        release,
    };
    if kernel.vmlinuz.is_file() && kernel.modules.is_dir() {
        return Ok(kernel);
    }
    let dl = vm_dir.join("download");
    std::fs::create_dir_all(&dl)?;
    // apt drops privileges to _apt for downloads when it can.
    run_cmd(Command::new("chmod").args(["755"]).arg(&dl)).ok();
    let has_deb = |dir: &Path| -> Result<Option<PathBuf>> {
        Ok(std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            }))
    };
    let deb = match has_deb(&dl)? {
        Some(deb) => deb,
        None => {
            println!("vm: apt-get download {package}");
            run_cmd(
                Command::new("apt-get")
                    .args(["-q", "download", &package])
                    .current_dir(&dl),
            )?;
            has_deb(&dl)?.with_context(|| format!("apt-get download left no {package}_*.deb"))?
        }
    };
    let tmp = vm_dir
        .join("kernel")
        .join(format!(".{}.tmp", kernel.release));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    run_cmd(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    std::fs::rename(&tmp, &root)?;
    ensure!(
        kernel.vmlinuz.is_file(),
        "{} has no {}",
        deb.display(),
        kernel.vmlinuz.display()
    );
    Ok(kernel)
}

/// The `depends=` list of a module's `.modinfo` bytes.
pub fn module_depends(ko: &[u8]) -> Vec<String> {
    ko.split(|b| *b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A module's name as modprobe spells it (`-` and `_` are the same).
fn norm(name: &str) -> String {
    name.replace('-', "_")
}

/// The modules of `wanted` and everything they depend on: module name →
/// path relative to the modules directory, and a `modules.dep` text for
/// them.
pub fn module_closure(modules_dir: &Path, wanted: &[&str]) -> Result<(Vec<PathBuf>, String)> {
    let mut index = BTreeMap::new();
    index_modules(modules_dir, modules_dir, &mut index)?;
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut todo: Vec<String> = wanted.iter().map(|w| norm(w)).collect();
    let mut seen = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(rel) = index.get(&name) else {
            bail!("module {name} not found under {}", modules_dir.display());
        };
        let bytes = std::fs::read(modules_dir.join(rel))?;
        let d: Vec<String> = module_depends(&bytes).iter().map(|d| norm(d)).collect();
        todo.extend(d.iter().cloned());
        deps.insert(name, d);
    }
    let mut text = String::new();
    let mut files = Vec::new();
    for (name, d) in &deps {
        let rel: &PathBuf = &index[name];
        files.push(rel.clone());
        // modules.dep lists the whole transitive closure, in load order reversed.
        let mut all = Vec::new();
        let mut stack = d.clone();
        while let Some(n) = stack.pop() {
            if !all.contains(&n) {
                stack.extend(deps[&n].iter().cloned());
                all.push(n);
            }
        }
        let listed: Vec<String> = all.iter().map(|n| index[n].display().to_string()).collect();
        text.push_str(&format!("{}: {}\n", rel.display(), listed.join(" ")));
    }
    Ok((files, text))
}

fn index_modules(root: &Path, dir: &Path, index: &mut BTreeMap<String, PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(root, &path, index)?;
        } else if let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
        {
            let rel = path.strip_prefix(root)?.to_path_buf();
            index.insert(norm(stem), rel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_image_package() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-57-amd64\n";
        assert_eq!(
            image_package(out).as_deref(),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(image_package("linux-image-amd64\n"), None);
    }

    #[test]
    fn reads_modinfo_depends() {
        let ko = b"\x7fELF junk\0license=GPL\0depends=virtio_ring,virtio,net_failover\0intree=Y\0";
        assert_eq!(
            module_depends(ko),
            ["virtio_ring", "virtio", "net_failover"]
        );
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"nothing").is_empty());
    }

    #[test]
    fn closure_and_modules_dep() {
        let dir = std::env::temp_dir().join(format!("strata-kmod-test-{}", std::process::id()));
        let sub = dir.join("kernel/drivers");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("a.ko"), b"\0depends=b-c\0").unwrap();
        std::fs::write(sub.join("b-c.ko"), b"\0depends=d\0").unwrap();
        std::fs::write(sub.join("d.ko"), b"\0depends=\0").unwrap();
        std::fs::write(sub.join("e.ko"), b"\0depends=\0").unwrap();
        let (files, dep) = module_closure(&dir, &["a"]).unwrap();
        assert_eq!(files.len(), 3);
        assert!(dep.contains("kernel/drivers/a.ko: kernel/drivers/b-c.ko kernel/drivers/d.ko\n"));
        assert!(dep.contains("kernel/drivers/d.ko: \n"));
        assert!(module_closure(&dir, &["missing"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
