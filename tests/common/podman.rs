//! podman for the tests that build or install ferrymail the way users do (the image, the
//! Debian package), on a Debian 12 base made here: no registry is reachable.
//!
//! This machine also needs runc (crun refuses its hybrid cgroups), chroot isolation for
//! RUN steps, and ulimits at most the host's; they are harmless elsewhere.

use std::path::Path;
use std::process::{Command, Output};

/// Debian 12 (minbase, from the mirror apt uses), imported once per machine.
pub const BASE: &str = "localhost/ferrymail-test-base:bookworm";

/// Limits a container may have here (the host's are the ceiling).
pub const LIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=4096:4096",
    "--ulimit",
    "nproc=4096:4096",
];

pub fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .arg("--runtime")
        .arg("runc")
        .args(args)
        .output()
        .expect("podman must be installed (scripts/test installs it)")
}

/// The command's stdout, after asserting it succeeded.
#[track_caller]
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes `BASE` unless this machine has it; `work` holds the root filesystem meanwhile.
pub fn base_image(work: &Path) {
    if podman(&["image", "exists", BASE]).status.success() {
        return;
    }
    let rootfs = work.join("rootfs");
    let made = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&rootfs)
        .arg("http://deb.debian.org/debian")
        .output()
        .expect("debootstrap must be installed (scripts/test installs it)");
    ok(made);
    let imported = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C {} -c . | podman import - {BASE}",
            rootfs.display()
        ))
        .output()
        .expect("sh runs");
    ok(imported);
}
