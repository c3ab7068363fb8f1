//! The Debian package (scripts/deb), installed with apt in a Debian 12 container: the
//! binary runs, the system user and private files exist, the conffile is a valid spec
//! for this machine, nothing was started, and the unit verifies.

mod common;

use std::path::Path;
use std::process::Command;

use common::podman::{BASE, LIMITS, base_image, ok, podman};

#[test]
fn the_package_installs_a_valid_spec_and_starts_nothing() {
    let work = tempfile::tempdir().unwrap();
    base_image(work.path());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_dir = work.path().join("out");
    let built = Command::new(root.join("scripts/deb"))
        .arg(env!("CARGO_BIN_EXE_ferrymail"))
        .arg(&out_dir)
        .current_dir(root)
        .output()
        .expect("scripts/deb runs");
    let deb = ok(built).trim().to_string();
    assert!(deb.ends_with(".deb"), "{deb}");

    // Debian's own checker finds neither an error nor a warning.
    let lint = Command::new("lintian")
        .args(["--tag-display-limit", "0", &deb])
        .output()
        .expect("lintian must be installed (scripts/test installs it)");
    let said = String::from_utf8_lossy(&lint.stdout);
    assert!(
        !said
            .lines()
            .any(|l| l.starts_with("E: ") || l.starts_with("W: ")),
        "lintian:\n{said}"
    );

    // What dpkg will treat as the admin's: the spec, kept across upgrades.
    let info = Command::new("dpkg-deb")
        .args(["--info", &deb, "conffiles"])
        .output()
        .unwrap();
    assert_eq!(ok(info).trim(), "/etc/ferrymail/ferrymail.toml");

    // Every path as dpkg will make it: / stays 755, the spec is readable, the binary runs.
    let contents = Command::new("dpkg-deb")
        .args(["--contents", &deb])
        .output()
        .unwrap();
    let contents = ok(contents);
    // Manual pages for the command and its subcommands, compressed as Debian wants.
    for page in [
        "ferrymail.1.gz",
        "ferrymail-serve.1.gz",
        "ferrymail-apply.1.gz",
    ] {
        assert!(
            contents.contains(&format!("./usr/share/man/man1/{page}")),
            "{page} missing:\n{contents}"
        );
    }
    for entry in [
        "drwxr-xr-x root/root",
        "-rw-r--r-- root/root",
        "-rwxr-xr-x root/root",
    ] {
        assert!(contents.contains(entry), "{contents}");
    }
    assert!(
        contents
            .lines()
            .next()
            .unwrap_or_default()
            .starts_with("drwxr-xr-x root/root"),
        "{contents}"
    );

    // The unit as installed verifies (its ExecStart pointed at the packaged binary).
    let tree = work.path().join("tree");
    ok(Command::new("dpkg-deb")
        .args(["-x", &deb])
        .arg(&tree)
        .output()
        .unwrap());
    let unit = std::fs::read_to_string(tree.join("lib/systemd/system/ferrymail.service")).unwrap();
    assert!(
        unit.contains("\nUser=ferrymail\n") && !unit.contains("DynamicUser"),
        "{unit}"
    );
    let bin = tree.join("usr/bin/ferrymail");
    common::verify_unit(&unit, &bin);

    // Installed with apt (its dependencies come from the mirror), then looked at.
    let mount = format!("{}:/deb:ro", out_dir.display());
    let file = Path::new(&deb)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let script = format!(
        "set -e
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /deb/{file} >/tmp/apt.log 2>&1 || {{ cat /tmp/apt.log; exit 1; }}
grep 'systemctl enable --now ferrymail' /tmp/apt.log
ferrymail --version
getent passwd ferrymail
stat -c '%a %U %n' /var/lib/ferrymail /var/lib/ferrymail/postmaster.password /etc/ferrymail/postmaster.hash
ferrymail --spec /etc/ferrymail validate
ferrymail passwd --help >/dev/null
if grep -qx ferrymail /proc/[0-9]*/comm 2>/dev/null; then echo STARTED; fi
apt-get purge -y -qq ferrymail >/dev/null 2>&1
test ! -e /etc/ferrymail/postmaster.hash && echo purged
"
    );
    let mut run = vec!["run", "--rm", "--network", "host", "-v", &mount];
    run.extend(LIMITS);
    run.extend([BASE, "sh", "-c", &script]);
    let said = ok(podman(&run));
    for line in [
        "ferrymail: edit /etc/ferrymail/ferrymail.toml, then: systemctl enable --now ferrymail",
        "ferrymail 0.1.0 (",
        "ferrymail:x:",
        "700 ferrymail /var/lib/ferrymail\n",
        "600 ferrymail /var/lib/ferrymail/postmaster.password",
        "640 root /etc/ferrymail/postmaster.hash",
        "/etc/ferrymail: valid (1 domain",
        "purged",
    ] {
        assert!(said.contains(line), "no {line:?} in:\n{said}");
    }
    assert!(!said.contains("STARTED"), "{said}");
}
