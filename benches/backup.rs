//! Backup benchmark: `ferrymail backup create` and `backup restore` of a data dir with
//! 20 mailboxes, beside the pipeline an administrator's cron job would run on the same
//! directory (`tar | zstd -3 | age -r`, and `age -d | zstd -d | tar x` back), same run.
//!
//! The mailboxes are filled (untimed) through ferrymail's own mailbox code with messages
//! of varied text, 256 MiB in all (FERRYMAIL_BENCH_MB overrides it); they are sealed at
//! rest, so neither side can compress them much. Each operation runs 3 times, the two
//! sides taking turns, and the median counts; peak memory is each side's largest process
//! (wait4's maxrss). ferrymail's snapshot is consistent while a server writes (SQLite's
//! online backup) and verifies checksums on restore; the tar pipeline does neither, so it
//! is the floor of the work, not a peer doing the same job. BENCHMARKS.md has the figures.

#[path = "support/machine.rs"]
mod machine;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use machine::{command_line, cpu_model, ferrymail_revision};

const FERRYMAIL: &str = env!("CARGO_BIN_EXE_ferrymail");
const RUNS: usize = 3;
const ACCOUNTS: usize = 20;

/// Runs a command to its end: seconds and the peak RSS (KiB) of its largest process.
fn timed(cmd: &mut Command) -> (f64, u64) {
    let started = Instant::now();
    // Reaped by wait4 below (which also gives the peak memory), not by Child::wait.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("start");
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed"
    );
    (started.elapsed().as_secs_f64(), usage.ru_maxrss as u64)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Words for message bodies: text compresses as mail does, before it is sealed.
const WORDS: &[&str] = &[
    "the", "meeting", "invoice", "tomorrow", "attached", "please", "review", "server", "backup",
    "thanks", "regards", "schedule", "project", "update", "question", "mail",
];

fn fill(dir: &Path, megabytes: usize) -> PathBuf {
    let data = dir.join("data");
    let mut spec = String::from(
        "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"data\"\n\n[backups]\nschedule = \"0 3 * * *\"\ntarget = \"file://target\"\nencryption_key = { file = \"backup.key\" }\nkeep = 100\ninclude_master_key = true\n\n",
    );
    for i in 0..ACCOUNTS {
        spec.push_str(&format!(
            "[domains.\"example.test\".aliases.user{i}]\nmailbox = {{ password = {{ hash = \"$argon2id$v=19$m=19456,t=2,p=1$Qg98Va9ayqaw1HQ7vvK7nQ$xqVTaKQ3SYHqAOBOPknmor42UCN5mIJVixGFtr9oaHA\" }} }}\n\n"
        ));
    }
    std::fs::write(dir.join("ferrymail.toml"), spec).unwrap();
    let identity = age::x25519::Identity::generate();
    std::fs::write(
        dir.join("backup.key"),
        age::secrecy::ExposeSecret::expose_secret(&identity.to_string()),
    )
    .unwrap();
    std::fs::write(dir.join("recipient.txt"), identity.to_public().to_string()).unwrap();
    let out = Command::new(FERRYMAIL)
        .current_dir(dir)
        .args(["apply", "--auto-approve"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        data.join("master.key"),
        "YmVuY2htYXJrIG1hc3RlciBrZXkgMzIgYnl0ZXMgbG9uZw==\n",
    )
    .unwrap();
    let master =
        ferrymail::mailbox::MasterKey::new(b"YmVuY2htYXJrIG1hc3RlciBrZXkgMzIgYnl0ZXMgbG9uZw==")
            .unwrap();
    let boxes = ferrymail::mailbox::Mailboxes::new(&data, master);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut total = 0;
    let mut n = 0;
    while total < megabytes << 20 {
        let mut body = format!(
            "From: sender{n}@example.net\r\nTo: user{}@example.test\r\nSubject: message {n}\r\n\r\n",
            n % ACCOUNTS
        );
        // 2 to 60 KB of words, from a fixed xorshift seed.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let size = 2_000 + (seed % 58_000) as usize;
        while body.len() < size {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            body.push_str(WORDS[(seed % WORDS.len() as u64) as usize]);
            body.push(if seed.is_multiple_of(11) { '\n' } else { ' ' });
        }
        total += body.len();
        boxes
            .append(
                &format!("user{}@example.test", n % ACCOUNTS),
                "INBOX",
                body.as_bytes(),
                None,
            )
            .unwrap();
        n += 1;
    }
    println!(
        "data dir: {n} messages, {} MiB of mail in {ACCOUNTS} mailboxes",
        total >> 20
    );
    data
}

fn du(path: &Path) -> u64 {
    let out = Command::new("du").args(["-sb"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, and the bench is not a test.
    if !std::env::args().any(|a| a == "--bench") {
        println!("backup bench: skipped (run it with `cargo bench --bench backup`)");
        return;
    }
    if Command::new("age").arg("--version").output().is_err() {
        eprintln!("the baseline needs age and zstd: apt-get install -y age zstd");
        std::process::exit(1);
    }
    let megabytes: usize = std::env::var("FERRYMAIL_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let data = fill(work, megabytes);
    let bytes = du(&data);
    println!(
        "machine: {} ({} cores); {}; age {}; ferrymail {}",
        cpu_model(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        command_line("zstd", &["--version"]),
        command_line("age", &["--version"]),
        ferrymail_revision()
    );
    let recipient = std::fs::read_to_string(work.join("recipient.txt")).unwrap();
    let mut results: Vec<(&str, Vec<f64>, u64)> = vec![
        ("ferrymail backup create", vec![], 0),
        ("tar | zstd -3 | age -r", vec![], 0),
        ("ferrymail backup restore", vec![], 0),
        ("age -d | zstd -d | tar x", vec![], 0),
    ];
    let mut sizes = (0, 0);
    for run in 0..RUNS {
        let target = work.join("target");
        let _ = std::fs::remove_dir_all(&target);
        let out = Command::new(FERRYMAIL)
            .current_dir(work)
            .args(["backup", "list"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let (s, rss) = timed(
            Command::new(FERRYMAIL)
                .current_dir(work)
                .args(["backup", "create"])
                .stdout(std::process::Stdio::null()),
        );
        results[0].1.push(s);
        results[0].2 = results[0].2.max(rss);
        let tarball = work.join("plain.tar.zst.age");
        let (s, rss) = timed(Command::new("sh").arg("-c").arg(format!(
            "tar -C {} -cf - . | zstd -3 -q | age -r {} > {}",
            data.display(),
            recipient.trim(),
            tarball.display()
        )));
        results[1].1.push(s);
        results[1].2 = results[1].2.max(rss);
        sizes = (du(&target), du(&tarball));

        let restored = work.join(format!("restored-{run}"));
        let (s, rss) = timed(
            Command::new(FERRYMAIL)
                .current_dir(work)
                .args(["backup", "restore", "latest", "--to"])
                .arg(&restored)
                .stdout(std::process::Stdio::null()),
        );
        results[2].1.push(s);
        results[2].2 = results[2].2.max(rss);
        let untarred = work.join(format!("untarred-{run}"));
        std::fs::create_dir(&untarred).unwrap();
        let (s, rss) = timed(Command::new("sh").arg("-c").arg(format!(
            "age -d -i {} {} | zstd -d -q | tar -C {} -xf -",
            work.join("backup.key").display(),
            tarball.display(),
            untarred.display()
        )));
        results[3].1.push(s);
        results[3].2 = results[3].2.max(rss);
        let _ = std::fs::remove_dir_all(&restored);
        let _ = std::fs::remove_dir_all(&untarred);
    }
    println!(
        "data dir {:.0} MiB; ferrymail's backup {:.0} MiB, the tar pipeline's {:.0} MiB",
        bytes as f64 / 1048576.0,
        sizes.0 as f64 / 1048576.0,
        sizes.1 as f64 / 1048576.0
    );
    println!("| operation | median s (of {RUNS}) | MiB/s of data dir | peak RSS MiB |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, times, rss) in results {
        let s = median(times);
        println!(
            "| {name} | {s:.2} | {:.0} | {:.1} |",
            bytes as f64 / 1048576.0 / s,
            rss as f64 / 1024.0
        );
    }
}
