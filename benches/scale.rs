//! Scale benchmark: a 10,000-domain, 100,000-alias spec through the release binary's
//! validate, plan and apply, with wall time and peak RSS per step against the targets.

#[path = "support/machine.rs"]
mod machine;

use machine::{command_line, cpu_model};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const FERRYMAIL: &str = env!("CARGO_BIN_EXE_ferrymail");
const DOMAINS: usize = 10_000;
const ALIASES_PER_DOMAIN: usize = 10;
/// One domain in this many has a catch-all and a regex pattern.
const PATTERN_EVERY: usize = 10;
/// Domains (one default rsa-2048 DKIM key each) of the separate key-generation spec.
const RSA_DOMAINS: usize = 20;
/// The alias whose forward list the one-change step edits: `a3@d04242.bench.test`.
const CHANGED_DOMAIN: usize = 4242;
const CHANGED_ALIAS: usize = 3;
const RSS_TARGET_MB: f64 = 300.0;

/// What one child process cost, and how it ended.
struct Measured {
    wall: Duration,
    max_rss_kib: u64,
    code: i32,
}

/// One line of the results table.
struct Row {
    step: String,
    wall: Duration,
    max_rss_kib: u64,
    /// The wall-time target, if the step has one; every step has the RSS target.
    time_target: Option<Duration>,
}

/// What one generated alias does; the spec and the Postfix maps are both written from it.
enum Route {
    Forward(Vec<String>),
    Reject,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without
    // it, and a debug-build bench there would only slow the tests down.
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale bench: skipped (run it with `cargo bench --bench scale`)");
        return;
    }
    let dir =
        tempfile::tempdir().expect("creating a temp dir for the bench (set TMPDIR to move it)");
    let spec = dir.path().join("ferrymail.toml");
    write_big_spec(&spec).expect("writing the generated spec into the temp dir");
    let spec_bytes = fs::metadata(&spec)
        .expect("reading the generated spec's size")
        .len();

    println!("# ferrymail scale benchmark\n");
    println!("binary: {FERRYMAIL}");
    println!(
        "machine: {} cores ({}), kernel {}",
        nproc(),
        cpu_model(),
        command_line("uname", &["-r"])
    );
    println!(
        "spec: {DOMAINS} domains × {ALIASES_PER_DOMAIN} aliases = {} aliases, {} catch-alls/patterns, {:.1} MB ({spec_bytes} bytes)",
        DOMAINS * ALIASES_PER_DOMAIN,
        DOMAINS / PATTERN_EVERY,
        spec_bytes as f64 / 1e6
    );
    println!(
        "DKIM: the big spec uses ed25519 keys; generating {DOMAINS} rsa-2048 keys would take minutes, so \
         rsa-2048 is measured separately by applying a {RSA_DOMAINS}-domain spec with the default key.\n"
    );

    let validate = validate(&spec);
    let first_apply = apply(&spec, "first apply");
    let no_change = plan(&spec, "no-change plan", 0);
    edit_one_alias(&spec);
    let one_plan = plan(&spec, "one-change plan", 2);
    let one_apply = apply(&spec, "one-change apply");
    let final_plan = plan(&spec, "final plan", 0);
    let rsa = rsa_keygen(dir.path());

    let objects = DOMAINS * (2 + ALIASES_PER_DOMAIN) + DOMAINS / PATTERN_EVERY;
    let rows = vec![
        row("validate", &validate, None),
        row(
            &format!("first apply ({objects} objects)"),
            &first_apply,
            Some(Duration::from_secs(10)),
        ),
        row("no-change plan", &no_change, Some(Duration::from_secs(1))),
        row("one-change plan", &one_plan, None),
        // `apply` plans afresh before it writes, so this is the whole cost of rolling out
        // an edited spec; the target is on it.
        row("one-change apply", &one_apply, Some(Duration::from_secs(1))),
        Row {
            step: "one-change plan, then apply".into(),
            wall: one_plan.wall + one_apply.wall,
            max_rss_kib: one_plan.max_rss_kib.max(one_apply.max_rss_kib),
            time_target: None,
        },
        row("final plan (no change)", &final_plan, None),
        row(
            &format!("apply of {RSA_DOMAINS} rsa-2048 DKIM keys"),
            &rsa,
            None,
        ),
    ];
    println!("\n## ferrymail\n");
    print_table(&rows);
    println!("\nPeak RSS is each child's ru_maxrss from wait4; MB = 10^6 bytes.");
    let per_key = rsa.wall / RSA_DOMAINS as u32;
    println!(
        "\nrsa-2048: {:.0} ms per key (whole apply ÷ {RSA_DOMAINS}, keys made on {} threads); \
         {DOMAINS} keys would take about {:.0} s.",
        per_key.as_secs_f64() * 1e3,
        nproc(),
        per_key.as_secs_f64() * DOMAINS as f64
    );

    println!(
        "\n## Peer: Postfix postmap, same {} addresses\n",
        DOMAINS * ALIASES_PER_DOMAIN
    );
    match find_on_path("postmap") {
        Some(postmap) => postfix_peer(&postmap, dir.path(), &first_apply),
        None => println!(
            "postmap (Postfix) is not on PATH: peer skipped. To include it, install Postfix:\n\n    \
             echo 'postfix postfix/main_mailer_type select Local only' | debconf-set-selections\n    \
             apt-get install -y postfix postfix-lmdb"
        ),
    }
}

fn domain_name(d: usize) -> String {
    format!("d{d:05}.bench.test")
}

/// Alias `a{i}` of domain `d`: 7 in 10 forward to one address, 2 in 10 to an address and a
/// bare domain (which keeps the local part), 1 in 10 reject.
fn route(d: usize, i: usize) -> Route {
    let n = d * ALIASES_PER_DOMAIN + i;
    match i % 10 {
        0..=6 => Route::Forward(vec![format!("user{n}@example.net")]),
        7 | 8 => Route::Forward(vec![
            format!("user{n}@example.net"),
            "relay.example.net".into(),
        ]),
        _ => Route::Reject,
    }
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|t| format!("\"{t}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The big spec, aliases as inline tables under each domain's table to keep it small.
fn write_big_spec(path: &Path) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    writeln!(
        out,
        "[server]\nhostname = \"mx.bench.test\"\ndata_dir = \"data\""
    )?;
    for d in 0..DOMAINS {
        let name = domain_name(d);
        let with_pattern = d % PATTERN_EVERY == 0;
        writeln!(out, "\n[domains.\"{name}\"]")?;
        writeln!(
            out,
            "dkim = [{{ selector = \"fm1\", algorithm = \"ed25519\" }}]"
        )?;
        if with_pattern {
            writeln!(
                out,
                "catch_all = {{ forward = [\"owner{d}@example.net\"] }}"
            )?;
        }
        for i in 0..ALIASES_PER_DOMAIN {
            match route(d, i) {
                Route::Forward(targets) => writeln!(
                    out,
                    "aliases.a{i} = {{ forward = {} }}",
                    toml_list(&targets)
                )?,
                Route::Reject => writeln!(out, "aliases.a{i} = {{ reject = \"hard\" }}")?,
            }
        }
        if with_pattern {
            writeln!(out, "\n[[domains.\"{name}\".patterns]]")?;
            writeln!(
                out,
                "regex = '^ticket-(\\d+)$'\nforward = ['tickets+$1@example.net']"
            )?;
        }
    }
    out.flush()
}

/// A small spec whose domains take the default DKIM key (rsa-2048).
fn write_rsa_spec(path: &Path) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    writeln!(
        out,
        "[server]\nhostname = \"mx.bench.test\"\ndata_dir = \"data\""
    )?;
    for d in 0..RSA_DOMAINS {
        writeln!(
            out,
            "\n[domains.\"r{d:02}.bench.test\"]\naliases.a0 = {{ forward = [\"user{d}@example.net\"] }}"
        )?;
    }
    out.flush()
}

/// The same aliases as Postfix holds them: forwards in a virtual(5) map, rejections in an
/// access(5) map. Catch-alls and patterns are left out (Postfix keeps regexes in regexp:
/// tables, which postmap does not compile).
fn write_postfix_maps(virtual_map: &Path, access_map: &Path) -> io::Result<()> {
    let mut virt = BufWriter::new(File::create(virtual_map)?);
    let mut access = BufWriter::new(File::create(access_map)?);
    for d in 0..DOMAINS {
        let name = domain_name(d);
        for i in 0..ALIASES_PER_DOMAIN {
            match route(d, i) {
                Route::Forward(targets) => {
                    let targets: Vec<String> = targets
                        .iter()
                        .map(|t| {
                            if t.contains('@') {
                                t.clone()
                            } else {
                                format!("a{i}@{t}")
                            }
                        })
                        .collect();
                    writeln!(virt, "a{i}@{name} {}", targets.join(", "))?;
                }
                Route::Reject => writeln!(access, "a{i}@{name} REJECT")?,
            }
        }
    }
    virt.flush()?;
    access.flush()
}

/// Adds a second target to one alias's forward list, by string replacement in the file.
fn edit_one_alias(spec: &Path) {
    let text = fs::read_to_string(spec).expect("reading back the generated spec");
    let n = CHANGED_DOMAIN * ALIASES_PER_DOMAIN + CHANGED_ALIAS;
    let old = format!("[\"user{n}@example.net\"]");
    assert_eq!(
        text.matches(&old).count(),
        1,
        "the alias to edit ({old}) must appear exactly once in the spec"
    );
    let new = format!("[\"user{n}@example.net\", \"user{n}@example.org\"]");
    fs::write(spec, text.replacen(&old, &new, 1)).expect("writing the edited spec");
}

fn ferrymail(spec: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(FERRYMAIL);
    cmd.arg("--spec").arg(spec).args(args);
    cmd
}

fn validate(spec: &Path) -> Measured {
    run_step("validate", ferrymail(spec, &["validate"]), 0)
}

fn apply(spec: &Path, step: &str) -> Measured {
    run_step(step, ferrymail(spec, &["apply", "--auto-approve"]), 0)
}

/// `plan --detailed-exitcode`: 0 means no changes, 2 means changes pending.
fn plan(spec: &Path, step: &str, expected: i32) -> Measured {
    run_step(
        step,
        ferrymail(spec, &["plan", "--detailed-exitcode"]),
        expected,
    )
}

/// Applies a fresh spec of `RSA_DOMAINS` domains in its own directory: one rsa-2048 key each.
fn rsa_keygen(base: &Path) -> Measured {
    let dir = base.join("rsa");
    fs::create_dir_all(&dir).expect("creating the rsa spec's directory in the temp dir");
    let spec = dir.join("ferrymail.toml");
    write_rsa_spec(&spec).expect("writing the rsa spec into the temp dir");
    apply(&spec, "rsa-2048 apply")
}

/// Times postmap on the same addresses (hash:, and lmdb: when this Postfix supports it)
/// and prints them beside ferrymail's first apply.
fn postfix_peer(postmap: &Path, base: &Path, first_apply: &Measured) {
    let dir = base.join("postfix");
    fs::create_dir_all(&dir).expect("creating the postfix directory in the temp dir");
    let (virtual_map, access_map) = (dir.join("virtual"), dir.join("access"));
    write_postfix_maps(&virtual_map, &access_map)
        .expect("writing the postfix maps into the temp dir");
    let lines = |p: &Path| {
        fs::read_to_string(p)
            .map(|t| t.lines().count())
            .expect("reading back a postfix map")
    };
    let (virt_lines, access_lines) = (lines(&virtual_map), lines(&access_map));

    let mut types = vec!["hash"];
    if postfix_supports("lmdb") {
        types.push("lmdb");
    }
    let mut rows = vec![row("ferrymail first apply", first_apply, None)];
    for kind in &types {
        let mut cmd = Command::new(postmap);
        cmd.arg(format!("{kind}:{}", virtual_map.display()))
            .arg(format!("{kind}:{}", access_map.display()));
        let m = run_step(&format!("postmap {kind}:"), cmd, 0);
        rows.push(row(
            &format!("postmap {kind}: ({virt_lines} virtual + {access_lines} access lines)"),
            &m,
            None,
        ));
    }
    print_peer_table(&rows);
    if !types.contains(&"lmdb") {
        println!(
            "\npostmap lmdb: skipped: `postconf -m` does not list lmdb (apt-get install -y postfix-lmdb)."
        );
    }
    println!(
        "\npostmap rebuilds the whole map on every change, so its one-change cost is the same as above."
    );
}

/// Whether `postconf -m` lists the map type `kind`.
fn postfix_supports(kind: &str) -> bool {
    let Some(postconf) = find_on_path("postconf") else {
        return false;
    };
    Command::new(postconf)
        .arg("-m")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == kind)
        })
        .unwrap_or(false)
}

/// Runs one step and panics unless it exits with `expected`.
fn run_step(step: &str, cmd: Command, expected: i32) -> Measured {
    println!("running {step}…");
    let m = measure(cmd);
    if m.code != expected {
        panic!(
            "step `{step}` exited {}, expected {expected} (plan --detailed-exitcode: 0 = no changes, 2 = changes, \
             1 = error; see the output above)",
            m.code
        );
    }
    m
}

/// Spawns `cmd` with stdout discarded, reaps it with wait4 and returns its wall time, peak
/// RSS (ru_maxrss, KiB on Linux) and exit code.
fn measure(mut cmd: Command) -> Measured {
    let what = format!("{cmd:?}");
    let started = Instant::now();
    let child = cmd
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = libc::pid_t::try_from(child.id()).expect("a child pid fits in pid_t");
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is a plain C struct of integers, for which all zeroes is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our own child, not yet reaped; both pointers are to live locals.
        let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if reaped == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            panic!("wait4 on {what}: {err}");
        }
    }
    let wall = started.elapsed();
    // Already reaped by wait4: dropping a Child neither waits for nor kills it.
    drop(child);
    let status = ExitStatus::from_raw(status);
    let code = status
        .code()
        .unwrap_or_else(|| panic!("{what} was killed by signal {:?}", status.signal()));
    Measured {
        wall,
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        code,
    }
}

fn row(step: &str, m: &Measured, time_target: Option<Duration>) -> Row {
    Row {
        step: step.into(),
        wall: m.wall,
        max_rss_kib: m.max_rss_kib,
        time_target,
    }
}

fn print_table(rows: &[Row]) {
    println!("| step | wall time | peak RSS | target | met? |");
    println!("| --- | ---: | ---: | --- | --- |");
    for r in rows {
        let rss_mb = megabytes(r.max_rss_kib);
        let time_ok = r.time_target.is_none_or(|t| r.wall < t);
        let rss_ok = rss_mb < RSS_TARGET_MB;
        let target = match r.time_target {
            Some(t) => format!("< {} s, RSS < {RSS_TARGET_MB:.0} MB", t.as_secs()),
            None => format!("—, RSS < {RSS_TARGET_MB:.0} MB"),
        };
        let met = match (time_ok, rss_ok) {
            (true, true) => "yes",
            (false, true) => "**no** (time)",
            (true, false) => "**no** (RSS)",
            (false, false) => "**no** (time, RSS)",
        };
        println!(
            "| {} | {} | {rss_mb:.0} MB | {target} | {met} |",
            r.step,
            format_duration(r.wall)
        );
    }
}

/// Side by side, without targets: the peer has none of its own.
fn print_peer_table(rows: &[Row]) {
    println!("| what | wall time | peak RSS |");
    println!("| --- | ---: | ---: |");
    for r in rows {
        println!(
            "| {} | {} | {:.0} MB |",
            r.step,
            format_duration(r.wall),
            megabytes(r.max_rss_kib)
        );
    }
}

/// KiB (as ru_maxrss counts) to MB of 10^6 bytes, the unit of the RSS target.
fn megabytes(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

fn format_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn nproc() -> String {
    command_line("nproc", &[])
}
