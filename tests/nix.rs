//! The NixOS module, package and flake: every file parses, and the module evaluates
//! (with a stand-in for nixpkgs' lib, which is not on this machine) to the service,
//! credentials, firewall ports and reload-on-change a NixOS host would get. The VM test
//! (nix/test.nix) needs nixpkgs and KVM and runs elsewhere.

use std::path::Path;
use std::process::Command;

fn nix_instantiate(args: &[&str]) -> String {
    let run = || {
        Command::new("nix-instantiate")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .expect("nix-instantiate (nix-bin) must be installed; scripts/test installs it")
    };
    // On a fresh machine two runs at once can find Nix's own database busy while the
    // first one creates it: that says nothing about our files, so it is tried again.
    let mut out = run();
    for _ in 0..10 {
        if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("is busy") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        out = run();
    }
    assert!(
        out.status.success(),
        "nix-instantiate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_nix_file_parses() {
    for file in [
        "flake.nix",
        "nix/module.nix",
        "nix/package.nix",
        "nix/test.nix",
    ] {
        assert!(
            Path::new(env!("CARGO_MANIFEST_DIR")).join(file).exists(),
            "{file}"
        );
        nix_instantiate(&["--parse", file]);
    }
}

#[test]
fn the_module_configures_a_hardened_reloadable_service() {
    let json = nix_instantiate(&["--eval", "--strict", "--json", "tests/nix/stub.nix"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let options: Vec<&str> = v["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    for o in [
        "enable",
        "package",
        "settings",
        "specFile",
        "secretFiles",
        "openFirewall",
        "dataDir",
    ] {
        assert!(options.contains(&o), "option {o} missing: {options:?}");
    }
    assert_eq!(v["enabledBy"], true);
    assert_eq!(v["Type"], "notify");
    assert_eq!(v["DynamicUser"], true);
    assert_eq!(
        v["ExecStart"],
        "/nix/store/ferrymail/bin/ferrymail --spec /etc/ferrymail/ferrymail.toml serve --log-format json"
    );
    // A new spec reloads (SIGHUP) instead of restarting.
    assert_eq!(v["reloadTriggers"][0], v["spec"]);
    assert!(
        v["ExecReload"]
            .as_str()
            .unwrap()
            .ends_with("kill -HUP $MAINPID")
    );
    // Secrets through systemd credentials; ports from the listeners; data in StateDirectory.
    assert_eq!(v["LoadCredential"][0], "tsig:/run/agenix/tsig");
    let mut ports: Vec<u64> = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    ports.sort();
    assert_eq!(ports, [25, 993]);
    assert_eq!(v["StateDirectory"], "ferrymail");
    assert_eq!(v["dataDir"], "/var/lib/ferrymail");
    assert_eq!(v["AmbientCapabilities"][0], "CAP_NET_BIND_SERVICE");
}
