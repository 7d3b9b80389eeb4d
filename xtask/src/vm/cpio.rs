//! A minimal writer of `newc` cpio archives, the format the Linux kernel
//! unpacks as an initramfs (`Documentation/driver-api/early-userspace`).
//!
//! Entries are directories, regular files and symbolic links, all owned by
//! root, written in the order given; the archive ends with `TRAILER!!!`.
//! Every header and every data block is padded to 4 bytes.

use std::io::{self, Write};

/// One archive entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A directory with permission bits `mode`.
    Dir { path: String, mode: u32 },
    /// A regular file with permission bits `mode` and contents `data`.
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    /// A symbolic link at `path` pointing to `target`.
    Symlink { path: String, target: String },
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::Dir { path, .. } | Entry::File { path, .. } | Entry::Symlink { path, .. } => {
                path
            }
        }
    }
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// Writes `entries` as a `newc` archive (inode numbers from 1, in order).
pub fn write_archive(out: &mut impl Write, entries: &[Entry]) -> io::Result<()> {
    let mut written = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        let (mode, data): (u32, &[u8]) = match entry {
            Entry::Dir { mode, .. } => (S_IFDIR | (mode & 0o7777), &[]),
            Entry::File { mode, data, .. } => (S_IFREG | (mode & 0o7777), data),
            Entry::Symlink { target, .. } => (S_IFLNK | 0o777, target.as_bytes()),
        };
        let ino = u32::try_from(i + 1).map_err(|_| invalid("too many entries"))?;
        written += write_entry(out, written, ino, mode, entry.path(), data)?;
    }
    written += write_entry(out, written, 0, 0, "TRAILER!!!", &[])?;
    // The kernel reads whole 512-byte blocks; pad like cpio(1) does.
    let pad = (512 - written % 512) % 512;
    out.write_all(&vec![0u8; pad])
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_owned())
}

/// Writes one header, name and data with their padding; returns the bytes
/// written. `at` is the archive offset the entry starts at (a multiple of 4).
fn write_entry(
    out: &mut impl Write,
    at: usize,
    ino: u32,
    mode: u32,
    name: &str,
    data: &[u8],
) -> io::Result<usize> {
    let name = name.trim_start_matches('/');
    if name.is_empty() || name.contains('\0') {
        return Err(invalid("empty or NUL in cpio path"));
    }
    let size = u32::try_from(data.len()).map_err(|_| invalid("file over 4 GiB"))?;
    let namesize = u32::try_from(name.len() + 1).map_err(|_| invalid("name too long"))?;
    let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
    let header = format!(
        "070701{ino:08X}{mode:08X}{uid:08X}{gid:08X}{nlink:08X}{mtime:08X}{size:08X}\
         {devmajor:08X}{devminor:08X}{rdevmajor:08X}{rdevminor:08X}{namesize:08X}{check:08X}",
        uid = 0,
        gid = 0,
        mtime = 0,
        devmajor = 0,
        devminor = 0,
        rdevmajor = 0,
        rdevminor = 0,
        check = 0,
    );
    let mut n = 0;
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    n += header.len() + name.len() + 1;
    let pad = (4 - (at + n) % 4) % 4;
    out.write_all(&[0u8; 3][..pad])?;
    n += pad;
    out.write_all(data)?;
    n += data.len();
    let pad = (4 - (at + n) % 4) % 4;
    out.write_all(&[0u8; 3][..pad])?;
    Ok(n + pad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back the (name, mode, data) of every entry of an archive.
    fn parse(mut bytes: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let total = bytes.len();
        let mut out = Vec::new();
        loop {
            let at = total - bytes.len();
            assert_eq!(at % 4, 0);
            assert_eq!(&bytes[..6], b"070701");
            let field = |i: usize| {
                let s = std::str::from_utf8(&bytes[6 + i * 8..6 + (i + 1) * 8]).unwrap();
                usize::from_str_radix(s, 16).unwrap()
            };
            let (mode, size, namesize) = (field(1), field(6), field(11));
            let name = std::str::from_utf8(&bytes[110..110 + namesize - 1])
                .unwrap()
                .to_owned();
            let data_at = (110 + namesize + 3) & !3;
            let data = bytes[data_at..data_at + size].to_vec();
            let next = (data_at + size + 3) & !3;
            bytes = &bytes[next..];
            if name == "TRAILER!!!" {
                assert_eq!(total % 512, 0);
                assert!(bytes.iter().all(|b| *b == 0));
                return out;
            }
            out.push((name, u32::try_from(mode).unwrap(), data));
        }
    }

    #[test]
    fn round_trips_dirs_files_and_links() {
        let entries = vec![
            Entry::Dir {
                path: "/bin".into(),
                mode: 0o755,
            },
            Entry::File {
                path: "/bin/x".into(),
                mode: 0o755,
                data: b"hello".to_vec(),
            },
            Entry::File {
                path: "init".into(),
                mode: 0o644,
                data: Vec::new(),
            },
            Entry::Symlink {
                path: "/bin/sh".into(),
                target: "busybox".into(),
            },
        ];
        let mut buf = Vec::new();
        write_archive(&mut buf, &entries).unwrap();
        let got = parse(&buf);
        assert_eq!(
            got,
            vec![
                ("bin".to_owned(), 0o040_755, Vec::new()),
                ("bin/x".to_owned(), 0o100_755, b"hello".to_vec()),
                ("init".to_owned(), 0o100_644, Vec::new()),
                ("bin/sh".to_owned(), 0o120_777, b"busybox".to_vec()),
            ]
        );
    }

    #[test]
    fn rejects_empty_paths() {
        let mut buf = Vec::new();
        let bad = [Entry::Dir {
            path: "/".into(),
            mode: 0o755,
        }];
        assert!(write_archive(&mut buf, &bad).is_err());
    }
}
