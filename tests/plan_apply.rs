//! spec → plan → apply on the embedded store, through the real binary: idempotence,
//! exact plans for edits, saved plans, stale plans, confirmation, crash safety.

mod common;

use common::{TEST_HASH, Workspace};
use ferrymail::store::{SqliteStore, Store};

fn base_spec() -> String {
    format!(
        r#"
[domains."example.test"]
max_message_size = "25MB"

[domains."example.test".aliases.hello]
forward = ["someone@elsewhere.test", "https://hooks.elsewhere.test/mail"]

[domains."example.test".aliases.sales]
forward = ["boss@elsewhere.test"]

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }}, quota = "1GiB" }}

[[domains."example.test".patterns]]
regex = '^support-(\d+)$'
forward = ['tickets+$1@helpdesk.test']

[domains."example.test".dkim]
"#
    )
    .replace("[domains.\"example.test\".dkim]\n", "")
}

#[test]
fn fresh_store_plans_applies_and_then_plans_nothing() {
    let w = Workspace::new(&base_spec());
    let plan = w.run(&["plan", "--detailed-exitcode"]);
    plan.code(2);
    assert!(
        plan.stdout.contains("+ domain example.test"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("+ alias hello@example.test"));
    assert!(plan.stdout.contains("+ account me@example.test"));
    assert!(
        plan.stdout
            .contains("+ dkim_key ferrymail._domainkey.example.test")
    );
    assert!(plan.stdout.contains("password_hash: (sensitive)"));
    assert!(
        !plan.stdout.contains("argon2id"),
        "a plan must never show the hash"
    );
    assert!(
        plan.stdout
            .ends_with("Plan: 7 to add, 0 to change, 0 to destroy.\n"),
        "{}",
        plan.stdout
    );

    let apply = w.run(&["apply", "--auto-approve"]);
    apply.ok();
    assert!(
        apply
            .stdout
            .contains("Apply complete: 7 added, 0 changed, 0 destroyed; store at revision 1"),
        "{}",
        apply.stdout
    );

    let again = w.run(&["plan", "--detailed-exitcode"]);
    again.code(0);
    assert!(again.stdout.contains("No changes."));
    // A second apply changes nothing, not even the revision.
    w.run(&["apply", "--auto-approve"]).ok();
    let store = SqliteStore::open(&w.data_dir()).unwrap();
    assert_eq!(store.revision().unwrap(), 1);
}

#[test]
fn edits_plan_exactly_the_changes_made() {
    let w = Workspace::new(&base_spec());
    w.run(&["apply", "--auto-approve"]).ok();

    // Rename sales → team, add news, change hello's forward list.
    let edited = base_spec()
        .replace("aliases.sales]", "aliases.team]")
        .replace(
            r#"forward = ["someone@elsewhere.test", "https://hooks.elsewhere.test/mail"]"#,
            r#"forward = ["someone@elsewhere.test", "other@elsewhere.test"]"#,
        )
        + "\n[domains.\"example.test\".aliases.news]\nreject = \"soft\"\nmessage = \"try later\"\n";
    w.write_spec(&edited);
    let plan = w.run(&["plan", "--detailed-exitcode"]);
    plan.code(2);
    let lines: Vec<&str> = plan
        .stdout
        .lines()
        .filter(|l| l.starts_with(['+', '~', '-']))
        .collect();
    assert_eq!(
        lines,
        [
            "~ alias hello@example.test",
            "+ alias news@example.test",
            "+ alias team@example.test",
            "- alias sales@example.test",
        ],
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains(
        r#"      forward: ["someone@elsewhere.test","https://hooks.elsewhere.test/mail"] → ["someone@elsewhere.test","other@elsewhere.test"]"#
    ), "{}", plan.stdout);
    assert!(
        plan.stdout
            .ends_with("Plan: 2 to add, 1 to change, 1 to destroy.\n")
    );

    w.run(&["apply", "--auto-approve"]).ok();
    w.run(&["plan", "--detailed-exitcode"]).code(0);

    // Removing the domain removes everything in it, children before the domain.
    w.write_spec("[domains.\"other.test\".aliases.x]\nforward = [\"y@elsewhere.test\"]\n");
    let plan = w.run(&["plan"]);
    let deletes: Vec<&str> = plan.stdout.lines().filter(|l| l.starts_with('-')).collect();
    assert_eq!(
        deletes.last(),
        Some(&"- domain example.test"),
        "{}",
        plan.stdout
    );
    assert!(deletes.contains(&"- account me@example.test"));
    w.run(&["apply", "--auto-approve"]).ok();
    w.run(&["plan", "--detailed-exitcode"]).code(0);
}

#[test]
fn json_plan_is_machine_readable_and_masked() {
    let w = Workspace::new(&base_spec());
    let out = w.run(&["plan", "--json"]);
    out.ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["summary"]["add"], 7);
    assert_eq!(v["base_revision"], 0);
    assert!(!out.stdout.contains("argon2id"));
}

#[test]
fn saved_plan_applies_once_and_a_stale_one_is_refused() {
    let w = Workspace::new(&base_spec());
    w.run(&["plan", "--out", "first.plan.json"]).ok();
    let mode = std::fs::metadata(w.path().join("first.plan.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    w.run(&["apply", "first.plan.json"]).ok();
    w.run(&["plan", "--detailed-exitcode"]).code(0);

    // Plan a change, but let the store move before applying it.
    w.write_spec(
        &(base_spec()
            + "\n[domains.\"example.test\".aliases.a]\nforward = [\"a@elsewhere.test\"]\n"),
    );
    w.run(&["plan", "--out", "second.plan.json"]).ok();
    w.write_spec(
        &(base_spec()
            + "\n[domains.\"example.test\".aliases.b]\nforward = [\"b@elsewhere.test\"]\n"),
    );
    w.run(&["apply", "--auto-approve"]).ok();
    let before = w.store_bytes();
    let stale = w.run(&["apply", "second.plan.json"]);
    stale.code(1);
    // The cause comes first, before any plan is shown or anything else is said.
    assert!(
        stale.stderr.starts_with(
            "error: this plan was made against store revision 1, and the store is at revision 2 now"
        ) && stale.stderr.contains("`ferrymail plan --out`")
            && stale.stdout.is_empty(),
        "{}{}",
        stale.stdout,
        stale.stderr
    );
    assert_eq!(
        before,
        w.store_bytes(),
        "a refused plan must not touch the store"
    );
}

/// On a terminal a saved plan is shown and confirmed too (it may have been saved long
/// ago); "no" changes nothing. `script` gives the command a terminal.
#[test]
fn a_saved_plan_on_a_terminal_is_shown_and_asked_for() {
    let w = Workspace::new(&base_spec());
    w.run(&["plan", "--out", "saved.plan.json"]).ok();
    let command = format!(
        "{} --spec {} apply saved.plan.json",
        common::BIN,
        w.spec.display()
    );
    let asked = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(w.path())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(b"no\n")?;
            child.wait_with_output()
        })
        .unwrap();
    let out = String::from_utf8_lossy(&asked.stdout);
    assert!(
        out.contains("+ domain example.test") && out.contains("Apply these changes?"),
        "{out}"
    );
    assert!(
        out.contains("Apply cancelled; nothing was changed."),
        "{out}"
    );
    let revision = SqliteStore::open(&w.data_dir())
        .unwrap()
        .revision()
        .unwrap();
    assert_eq!(revision, 0, "a declined plan was applied");
}

#[test]
fn apply_without_a_terminal_needs_auto_approve() {
    let w = Workspace::new(&base_spec());
    let out = w.run(&["apply"]);
    out.code(1);
    assert!(out.stderr.contains("--auto-approve"), "{}", out.stderr);
    assert!(
        w.store_bytes().is_empty()
            || SqliteStore::open(&w.data_dir())
                .unwrap()
                .revision()
                .unwrap()
                == 0
    );
}

#[test]
fn dkim_keys_are_made_once_and_kept_private() {
    let w = Workspace::new(
        &(base_spec()
            + "\n[[domains.\"example.test\".dkim]]\nselector = \"ed\"\nalgorithm = \"ed25519\"\n[[domains.\"example.test\".dkim]]\nselector = \"rsa\"\n"),
    );
    w.run(&["apply", "--auto-approve"]).ok();
    let key = |id: &str| {
        SqliteStore::open(&w.data_dir())
            .unwrap()
            .dkim_private_key(id)
            .unwrap()
            .expect("key stored")
    };
    let ed = key("ed._domainkey.example.test");
    let rsa = key("rsa._domainkey.example.test");
    assert!(rsa.len() > 1000, "an RSA-2048 PKCS#8 key is over 1 KB");

    // Later applies (with other changes) never regenerate a key.
    w.write_spec(&(base_spec().replace("boss@", "chief@") + "\n[[domains.\"example.test\".dkim]]\nselector = \"ed\"\nalgorithm = \"ed25519\"\n[[domains.\"example.test\".dkim]]\nselector = \"rsa\"\n"));
    w.run(&["apply", "--auto-approve"]).ok();
    assert_eq!(key("ed._domainkey.example.test"), ed);
    assert_eq!(key("rsa._domainkey.example.test"), rsa);

    let db = w.data_dir().join("ferrymail.db");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&db).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let public = SqliteStore::open(&w.data_dir())
        .unwrap()
        .dkim_public_key("ed._domainkey.example.test")
        .unwrap();
    assert_eq!(public.map(|p| p.len()), Some(32));
}

#[test]
fn a_killed_apply_leaves_the_store_untouched_and_a_rerun_finishes() {
    let mut spec = String::new();
    for d in 0..200 {
        spec.push_str(&format!(
            "[domains.\"d{d}.test\"]\ndkim = [{{ selector = \"s\", algorithm = \"ed25519\" }}]\n"
        ));
        for a in 0..100 {
            spec.push_str(&format!(
                "aliases.a{a} = {{ forward = [\"u{a}@elsewhere.test\"] }}\n"
            ));
        }
    }
    // Create the empty store first, so the WAL file appears only once apply writes.
    let w = Workspace::new("");
    w.run(&["apply", "--auto-approve"]).ok();
    w.write_spec(&spec);
    let wal = w.data_dir().join("ferrymail.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);

    let mut child = std::process::Command::new(common::BIN)
        .arg("--spec")
        .arg(&w.spec)
        .args(["apply", "--auto-approve"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it the moment the apply transaction has started writing.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if std::fs::metadata(&wal)
            .map(|m| m.len() > 64 * 1024)
            .unwrap_or(false)
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "apply finished before it could be killed mid-write"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "apply never started writing"
        );
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let store = SqliteStore::open(&w.data_dir()).unwrap();
    assert_eq!(
        store.revision().unwrap(),
        0,
        "a killed apply must not commit"
    );
    assert!(
        store.objects().unwrap().1.is_empty(),
        "a killed apply must leave no partial state"
    );
    drop(store);

    w.run(&["apply", "--auto-approve"]).ok();
    w.run(&["plan", "--detailed-exitcode"]).code(0);
    let (revision, objects) = SqliteStore::open(&w.data_dir()).unwrap().objects().unwrap();
    assert_eq!((revision, objects.len()), (1, 200 * 102));
}

#[test]
fn a_directory_spec_merges_files_and_refuses_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec");
    std::fs::create_dir_all(spec.join("domains")).unwrap();
    std::fs::write(spec.join("server.toml"), common::header()).unwrap();
    std::fs::write(
        spec.join("domains/a.toml"),
        "[domains.\"a.test\".aliases.x]\nforward = [\"x@elsewhere.test\"]\n",
    )
    .unwrap();
    std::fs::write(
        spec.join("domains/b.toml"),
        "[domains.\"b.test\".aliases.y]\nforward = [\"y@elsewhere.test\"]\n",
    )
    .unwrap();
    std::fs::write(
        spec.join("team.toml"),
        "[aliases.\"team@a.test\"]\nforward = [\"t@elsewhere.test\"]\n",
    )
    .unwrap();
    let run = |args: &[&str]| common::run_in(dir.path(), &spec, args, None);
    let plan = run(&["plan"]);
    plan.ok();
    assert!(
        plan.stdout.contains("+ alias x@a.test")
            && plan.stdout.contains("+ alias y@b.test")
            && plan.stdout.contains("+ alias team@a.test"),
        "{}",
        plan.stdout
    );
    // data_dir is relative to the spec directory.
    run(&["apply", "--auto-approve"]).ok();
    assert!(spec.join("data/ferrymail.db").exists());

    std::fs::write(
        spec.join("domains/c.toml"),
        "[domains.\"a.test\".aliases.x]\nforward = [\"z@elsewhere.test\"]\n",
    )
    .unwrap();
    let dup = run(&["validate"]);
    dup.code(1);
    assert!(dup.stderr.contains("domains/c.toml:1:"), "{}", dup.stderr);
    assert!(
        dup.stderr.contains("is already defined at") && dup.stderr.contains("domains/a.toml:1:"),
        "{}",
        dup.stderr
    );
}

#[test]
fn status_reports_revision_and_contents() {
    let w = Workspace::new(&base_spec());
    w.run(&["apply", "--auto-approve"]).ok();
    let out = w.run(&["status"]);
    out.ok();
    assert!(out.stdout.contains("(revision 1)"), "{}", out.stdout);
    assert!(
        out.stdout.contains("3 alias") && out.stdout.contains("1 account"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("revision 1 at "));
}

#[test]
fn removing_a_mailbox_says_its_mail_is_kept_and_keeps_it() {
    let w = Workspace::new(&base_spec());
    w.run(&["apply", "--auto-approve"]).ok();
    // Stand-in for mail the server stored for me@ (the file is what must survive).
    let file = w.data_dir().join("mailboxes/example.test/me.db");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"stored mail").unwrap();
    let without = base_spec().replace(
        &format!(
            "[domains.\"example.test\".aliases.me]\nmailbox = {{ password = {{ hash = \"{TEST_HASH}\" }}, quota = \"1GiB\" }}\n"
        ),
        "",
    );
    assert_ne!(without, base_spec());
    w.write_spec(&without);
    let plan = w.run(&["plan"]);
    assert!(
        plan.ok().stdout.contains("- account me@example.test")
            && plan.stdout.contains("stored mail is kept"),
        "{}",
        plan.stdout
    );
    w.run(&["apply", "--auto-approve"]).ok();
    assert_eq!(std::fs::read(&file).unwrap(), b"stored mail");
}

/// The summaries of the reconciles a server's log shows, in order.
fn reconciles(server: &common::Process) -> Vec<String> {
    server
        .log_text()
        .lines()
        .filter(|l| l.contains("spec reconciled"))
        .filter_map(|l| Some(l.split("summary=").nth(1)?.to_string()))
        .collect()
}

/// A restart with the spec last applied skips the plan (which took seconds with 100,000
/// aliases) and plans in the background right after; an edit made while the server was
/// down, or a password file that changed, is planned and applied before it listens.
#[test]
fn a_restart_plans_before_listening_only_when_something_changed() {
    let mx = common::free_port();
    let spec = |extra: &str| {
        format!(
            "[listeners]\nmx = \"127.0.0.1:{mx}\"\n\n\
             [domains.\"example.test\".aliases.me]\n\
             mailbox = {{ password = {{ file = \"me.hash\" }}, sieve = {{ file = \"me.sieve\" }} }}\n\
             {extra}"
        )
    };
    let w = Workspace::new(&spec(""));
    std::fs::write(w.path().join("me.hash"), TEST_HASH).unwrap();
    std::fs::write(w.path().join("me.sieve"), "keep;\n").unwrap();
    let start = |w: &Workspace| {
        let server = w.serve(mx);
        // The first reconcile is done before the server listens; the second (the
        // background plan after a skipped one) may take a moment.
        let first = reconciles(&server)
            .first()
            .cloned()
            .unwrap_or_else(|| panic!("no reconcile logged:\n{}", server.log_text()));
        (server, first)
    };

    // A start whose first reconcile says `said` (its summary's beginning).
    let start_saying = |w: &Workspace, said: &str| {
        let (server, first) = start(w);
        assert!(first.starts_with(said), "{first}");
        server
    };

    let (mut server, first) = start(&w);
    assert!(first.contains("added"), "{first}");
    server.terminate();

    // Unchanged: no plan before listening, and the background one finds nothing to do.
    let mut server = start_saying(&w, "unchanged since the last apply");
    assert!(
        common::wait_for(std::time::Duration::from_secs(20), || reconciles(&server)
            .get(1)
            .is_some_and(|s| s.starts_with("0 added, 0 changed, 0 destroyed"))),
        "{}",
        server.log_text()
    );
    server.terminate();

    // An alias added while the server was down is applied before it listens.
    w.write_spec(&spec(
        "\n[domains.\"example.test\".aliases.hello]\nforward = [\"a@elsewhere.test\"]\n",
    ));
    let mut server = start_saying(&w, "1 added");
    let probe = common::rcpt_probe(mx, "x@sender.test", "hello@example.test");
    assert!(probe.contains("<-  250"), "{probe}");
    server.terminate();

    // The same spec text, but the password file now holds another hash: planned.
    let other = w.run_with_stdin(&["passwd"], Some("Unguessable-Horse-Battery-42\n"));
    let other = other.ok().stdout.trim().to_string();
    assert!(other.starts_with("$argon2id$"), "{other}");
    std::fs::write(w.path().join("me.hash"), &other).unwrap();
    start_saying(&w, "0 added, 1 changed").terminate();
    start_saying(&w, "unchanged since the last apply").terminate();

    // A Sieve script kept in a file is stored with its mailbox: an edit of it alone too.
    std::fs::write(w.path().join("me.sieve"), "discard;\n").unwrap();
    start_saying(&w, "0 added, 1 changed");
}
