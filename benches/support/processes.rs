//! Processes the benches start and watch: a guard that stops a child when the bench
//! ends (or panics), and readings from /proc (memory, CPU, process trees).
#![allow(dead_code)]

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub struct ChildGuard {
    child: Option<Child>,
    what: &'static str,
}

impl ChildGuard {
    pub fn new(child: Child, what: &'static str) -> ChildGuard {
        ChildGuard {
            child: Some(child),
            what,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                eprintln!(
                    "{} did not finish in {} s; killing it",
                    self.what,
                    timeout.as_secs()
                );
                self.kill();
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGTERM, then SIGKILL after `grace`. Some(success) if it stopped by itself.
    pub fn terminate(&mut self, grace: Duration) -> Option<bool> {
        let child = self.child.as_mut()?;
        let pid = libc::pid_t::try_from(child.id()).ok()?;
        // SAFETY: `pid` is our own child, not yet reaped (the guard still holds it).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status.success());
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} did not stop within {} s; killing it",
            self.what,
            grace.as_secs()
        );
        self.kill();
        None
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.exited() {
            self.child = None;
            return;
        }
        self.terminate(Duration::from_secs(10));
    }
}

/// A field of /proc/PID/status in KiB ("VmHWM", "VmRSS"), or a count ("Threads").
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(field)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

pub fn proc_pss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("Pss:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The fields of /proc/PID/stat after the command name (field 3, "state", is index 0).
pub fn proc_stat(pid: u32) -> Option<Vec<u64>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// `root` and its direct children (Postfix's and Dovecot's masters start every daemon).
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if proc_stat(pid).and_then(|f| f.get(1).copied()) == Some(u64::from(root)) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// CPU seconds used by `root` and its children so far: the root's own and reaped
/// children's time (utime, stime, cutime, cstime) plus the live children's own.
pub fn tree_cpu_seconds(root: u32) -> f64 {
    let ticks = clock_ticks();
    let mut total = 0u64;
    for pid in process_tree(root) {
        if let Some(f) = proc_stat(pid) {
            // utime, stime, cutime, cstime are fields 14–17: indexes 11–14 here.
            let own = f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0);
            let reaped = f.get(13).unwrap_or(&0) + f.get(14).unwrap_or(&0);
            total += own + if pid == root { reaped } else { 0 };
        }
    }
    total as f64 / ticks
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
pub fn machine_cpu() -> (u64, u64) {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait.
    let idle = fields.get(3).unwrap_or(&0) + fields.get(4).unwrap_or(&0);
    (total - idle, total)
}

pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// CPU seconds of this bench and the children it has reaped.
pub fn self_cpu_seconds() -> f64 {
    proc_stat(std::process::id())
        .map(|f| f.iter().skip(11).take(4).sum::<u64>() as f64 / clock_ticks())
        .unwrap_or(0.0)
}

pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam takes a NUL-terminated string and returns null or a pointer to a
    // static passwd record, read at once (the bench calls it from one thread).
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: checked non-null above.
    let pw = unsafe { &*pw };
    Some((pw.pw_uid, pw.pw_gid))
}

pub fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", path.display()))
}

/// Runs a command to completion; its output becomes the error if it fails.
pub fn checked(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// Polls until `port` accepts a connection, `gave_up` says stop, or `timeout` passes.
pub fn wait_for_port(port: u16, timeout: Duration, mut gave_up: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return true;
        }
        if gave_up() {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join(" / ")
}
