//! A small filesystem that fills up on demand: a tmpfs mounted for one test
//! (root only: `mount -t tmpfs`), unmounted on drop. `fill` writes a file
//! until the filesystem refuses (`ENOSPC`), `free` removes it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// A tmpfs of `bytes`, or `None` where this process may not mount one
    /// (not root, or no `mount`).
    pub fn mount(bytes: u64) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Write a file until the filesystem is full; returns its bytes.
    pub fn fill(&self) -> u64 {
        let mut f = std::fs::File::create(self.filler()).expect("create the filler");
        let chunk = vec![0x5a_u8; 4096];
        let mut written = 0;
        while f.write_all(&chunk).is_ok() {
            written += chunk.len() as u64;
        }
        // Whatever part of a page still fits.
        while f.write_all(&chunk[..1]).is_ok() {
            written += 1;
        }
        written
    }

    /// Remove the filler: the space is free again.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}
