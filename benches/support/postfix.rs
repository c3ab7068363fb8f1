//! A private Postfix instance for the benches and tests: its own main.cf, master.cf and queue in a
//! temporary directory, started as root and stopped when dropped.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::processes::{checked, chown, tail, user_ids};

/// The main.cf each bench's instance starts from: a private forwarder for bench.test's
/// aliases (virtual_alias_maps), nothing delivered locally, its log in its directory. A
/// bench adds where the mail goes (relayhost, transport_maps) and anything else.
pub fn base_main_cf(base: &Path) -> String {
    let b = base.display();
    format!(
        "compatibility_level = 3.6
config_directory = {b}/etc
queue_directory = {b}/spool
data_directory = {b}/lib
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = postfix.bench.test
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
virtual_alias_domains = bench.test
virtual_alias_maps = hash:{b}/etc/virtual
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
maillog_file_prefixes = {b}
maillog_file = {b}/postfix.log
"
    )
}

/// master.cf: Postfix 3.7's standard services, no chroot (the instance lives in a temp
/// dir), smtpd on `listen` ("127.0.0.1:2525").
pub fn postfix_master_cf(listen: &str) -> String {
    format!(
        "{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"
    )
}

/// A private Postfix instance in a temp dir; stopped when dropped. master.cf is
/// `postfix_master_cf`; main.cf and the hash: maps are the caller's.
pub struct PostfixInstance {
    postfix: PathBuf,
    base: PathBuf,
    started: bool,
}

impl PostfixInstance {
    pub fn config(&self) -> PathBuf {
        self.base.join("etc")
    }

    pub fn create(
        postfix: &Path,
        postmap: &Path,
        base: &Path,
        listen: &str,
        main_cf: &str,
        maps: &[(&str, &str)],
    ) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(
                "a Postfix instance must be started as root (master binds its ports and \
                        switches to the postfix user); run the bench as root to include it"
                    .into(),
            );
        }
        let (uid, gid) = user_ids("postfix").ok_or("there is no `postfix` user")?;
        for sub in ["etc", "spool", "lib"] {
            fs::create_dir_all(base.join(sub)).map_err(|e| format!("creating {sub}: {e}"))?;
        }
        fs::set_permissions(base, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        // data_directory belongs to the mail owner (master.lock and caches live there).
        chown(&base.join("lib"), uid, gid)?;
        let etc = base.join("etc");
        fs::write(etc.join("main.cf"), main_cf).map_err(|e| e.to_string())?;
        fs::write(etc.join("master.cf"), postfix_master_cf(listen)).map_err(|e| e.to_string())?;
        let mut instance = PostfixInstance {
            postfix: postfix.to_path_buf(),
            base: base.to_path_buf(),
            started: false,
        };
        // Each map (file name in etc, text) as a hash: table, as main.cf names them.
        for (name, text) in maps {
            let file = etc.join(name);
            fs::write(&file, text).map_err(|e| format!("writing {name}: {e}"))?;
            checked(
                Command::new(postmap)
                    .arg("-c")
                    .arg(&etc)
                    .arg(format!("hash:{}", file.display())),
                "postmap",
            )?;
        }
        // `check` creates the queue's subdirectories with the owners Postfix requires.
        checked(
            Command::new(postfix).arg("-c").arg(&etc).arg("check"),
            "postfix check",
        )?;
        checked(
            Command::new(postfix).arg("-c").arg(&etc).arg("start"),
            "postfix start",
        )?;
        instance.started = true;
        Ok(instance)
    }

    pub fn master_pid(&self) -> Option<u32> {
        fs::read_to_string(self.base.join("spool/pid/master.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(
            &fs::read_to_string(self.base.join("postfix.log")).unwrap_or_default(),
            lines,
        )
    }

    /// `postfix stop`, then waits for master to be gone (`postfix abort` if it lingers).
    pub fn stop(&mut self) -> bool {
        if !self.started {
            return true;
        }
        self.started = false;
        let master = self.master_pid();
        let _ = Command::new(&self.postfix)
            .arg("-c")
            .arg(self.config())
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let gone =
            |pid: Option<u32>| pid.is_none_or(|p| !Path::new(&format!("/proc/{p}")).exists());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if gone(master) {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new(&self.postfix)
            .arg("-c")
            .arg(self.config())
            .arg("abort")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        false
    }
}

impl Drop for PostfixInstance {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Postfix puts its tools in /usr/sbin, which is not always on a user's PATH.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The installed Postfix's version, as `postconf` says it.
pub fn postfix_version() -> Option<String> {
    let out = Command::new(find_tool("postconf")?)
        .args(["-d", "-h", "mail_version"])
        .output()
        .ok()?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!v.is_empty()).then_some(v)
}
