//! Editing the spec from the web admin (headless Chromium) and the JSON API (curl): the
//! file on disk keeps every line it had, the change is planned, written and applied,
//! and the real MX and IMAP see it; stale forms, invalid edits and read-only specs are
//! refused with the reason.

mod common;

use std::path::Path;
use std::process::Command;

use common::{TEST_HASH, Workspace, free_port, git, imap_login, rcpt_probe};

const TOKEN: &str = "0123456789abcdef0123456789abcdef-ci";

fn spec(mx: u16, imap: u16, https: u16, extra: &str) -> String {
    format!(
        r#"# The listeners, on loopback for the test.
[listeners]
mx = "127.0.0.1:{mx}"        # inbound
imap = "127.0.0.1:{imap}"
https = "127.0.0.1:{https}"  # the admin

# Forwards wait in the queue: nothing listens there.
[delivery]
relay = "127.0.0.1:1"

# Our first domain.
[domains."example.test"]
catch_all = {{ reject = "hard", message = "no such user" }}

[domains."example.test".aliases.hello]
forward = ["friend@elsewhere.test"]   # Alice reads hello@

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}

[admin.api_tokens]
ci = {{ env = "FERRYMAIL_TEST_TOKEN" }}
{extra}"#
    )
}

/// The old text is the new one with lines added: nothing that was there changed.
fn only_added(old: &str, new: &str) -> Vec<String> {
    let mut added = Vec::new();
    let mut old_lines = old.lines().peekable();
    for line in new.lines() {
        if old_lines.peek() == Some(&line) {
            old_lines.next();
        } else {
            added.push(line.to_string());
        }
    }
    assert_eq!(old_lines.next(), None, "a line of the spec is gone:\n{new}");
    added
}

fn serve(w: &Workspace, https: u16) -> common::Process {
    w.serve_with(https, &[], &[("FERRYMAIL_TEST_TOKEN", TOKEN)])
}

struct Api {
    base: String,
}

impl Api {
    /// (status, JSON body, response headers) of one request.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[&str],
    ) -> (u16, serde_json::Value, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let head = dir.path().join("head");
        let mut args = vec![
            "-sk".to_string(),
            "-X".into(),
            method.into(),
            "-D".into(),
            head.display().to_string(),
            "-w".into(),
            "\n%{http_code}".into(),
            "-H".into(),
            format!("Authorization: Bearer {TOKEN}"),
            "-H".into(),
            "Content-Type: application/json".into(),
        ];
        for h in headers {
            args.push("-H".into());
            args.push(h.to_string());
        }
        if let Some(body) = body {
            // From a file: a large body does not fit in an argument list.
            let file = dir.path().join("body");
            std::fs::write(&file, body).unwrap();
            args.push("--data-binary".into());
            args.push(format!("@{}", file.display()));
        }
        args.push(format!("{}{path}", self.base));
        let out = Command::new("curl").args(&args).output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
            std::fs::read_to_string(&head).unwrap_or_default(),
        )
    }
}

#[test]
fn an_admin_adds_a_domain_and_an_alias_in_chromium_and_the_spec_keeps_every_line() {
    let (mx, imap, https) = (free_port(), free_port(), free_port());
    let w = Workspace::new(&spec(mx, imap, https, ""));
    let before = std::fs::read_to_string(&w.spec).unwrap();
    let server = serve(&w, https);
    let (report, shots) = common::browser_peer(&w, "admin_edit_browser.js", https, &server);
    assert_eq!(
        report["steps"],
        serde_json::json!([
            "domain: Done: add domain new.test",
            "alias: Done: add alias sales@new.test"
        ]),
        "{report}"
    );
    assert_eq!(report["records_at"], "#domain-new.test", "{report}");
    assert!(
        report["records_heading"]
            .as_str()
            .unwrap()
            .starts_with("new.test"),
        "{report}"
    );
    assert_eq!(report["front_page"], "/admin", "{report}");
    // Mail by hour and by six hours, the queue, the certificate; no backups declared,
    // still a strip.
    assert_eq!(report["charts"], 5, "{report}");
    assert!(
        report["chart_label"]
            .as_str()
            .unwrap()
            .starts_with("Mail in the last day"),
        "{report}"
    );
    let domain_plan = report["domain_plan"].as_str().unwrap();
    assert!(domain_plan.contains("+ domain new.test"), "{domain_plan}");
    assert!(
        report["domain_diff"]
            .as_str()
            .unwrap()
            .contains("+ [domains.\"new.test\"]"),
        "{report}"
    );
    assert!(
        report["domain_applied"]
            .as_str()
            .unwrap()
            .starts_with("Applied: revision"),
        "{report}"
    );
    let alias_plan = report["alias_plan"].as_str().unwrap();
    assert!(
        alias_plan.contains("+ account sales@new.test"),
        "{alias_plan}"
    );
    assert!(
        alias_plan.contains("+ alias sales@new.test"),
        "{alias_plan}"
    );
    for (name, heading) in [
        ("domain-new", "Add a domain"),
        ("domain-plan", "Review: add domain new.test"),
        ("domain-done", "Done: add domain new.test"),
        ("alias-new", "Add an alias"),
        ("alias-plan", "Review: add alias sales@new.test"),
        ("alias-done", "Done: add alias sales@new.test"),
        ("alias-edit", "Alias sales@new.test"),
        ("domain-edit", "Domain new.test"),
        ("overview", "Overview"),
    ] {
        let shown = &report["pages"][name];
        assert_eq!(shown["heading"], heading, "{report}");
        for width in [390, 1280] {
            assert!(
                shown[format!("width_{width}")].as_u64().unwrap() <= width,
                "{name} overflows {width} px: {report}"
            );
            let png = std::fs::read(shots.join(format!("{name}-{width}.png"))).unwrap();
            assert!(
                png.starts_with(b"\x89PNG") && png.len() > 2000,
                "{name}-{width}.png"
            );
        }
    }

    // (a) The file: the new keys, and every line it had, in its order.
    let after = std::fs::read_to_string(&w.spec).unwrap();
    let added = only_added(&before, &after);
    assert_eq!(added[0], "[domains.\"new.test\"]", "{after}");
    assert!(
        added.contains(&"[domains.\"new.test\".aliases.sales]".to_string()),
        "{after}"
    );
    assert!(
        added.contains(&"forward = [\"boss@elsewhere.test\"]".to_string()),
        "{after}"
    );
    let mailbox = added
        .iter()
        .find(|l| l.starts_with("mailbox = "))
        .expect("a mailbox line");
    assert!(
        mailbox.contains("password = { hash = \"$argon2id$") && mailbox.contains("quota = \"1GB\""),
        "{mailbox}"
    );
    let new_password = report["password"].as_str().unwrap();
    assert!(
        !after.contains(new_password),
        "the password itself must not be written"
    );

    // (b) The real MX routes the alias; (c) the mailbox opens with the password shown.
    let answer = rcpt_probe(mx, "someone@sender.test", "sales@new.test");
    assert!(answer.contains("<-  250"), "{answer}");
    assert_eq!(imap_login(imap, "sales@new.test", new_password), "OK");
    assert!(imap_login(imap, "sales@new.test", "wrong").starts_with("refused"));
}

/// Loads a form as one admin session: (cookie jar, csrf, etag).
fn form(
    dir: &Path,
    name: &str,
    https: u16,
    password: &str,
    path: &str,
) -> (std::path::PathBuf, String, String) {
    let jar = dir.join(format!("{name}.jar"));
    let get = |url: &str| {
        let out = Command::new("curl")
            .args(["-sk", "-c"])
            .arg(&jar)
            .arg("-b")
            .arg(&jar)
            .arg(format!("https://127.0.0.1:{https}{url}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let value = |page: &str, field: &str| {
        let marker = format!("name=\"{field}\" value=\"");
        let at = page
            .find(&marker)
            .unwrap_or_else(|| panic!("{field} in {page}"))
            + marker.len();
        page[at..].split('"').next().unwrap().to_string()
    };
    let login = get("/admin/login");
    let csrf = value(&login, "csrf");
    Command::new("curl")
        .args(["-sk", "-c"])
        .arg(&jar)
        .arg("-b")
        .arg(&jar)
        .args([
            "--data",
            &format!("user=admin&password={password}&csrf={csrf}"),
        ])
        .arg(format!("https://127.0.0.1:{https}/admin/login"))
        .output()
        .unwrap();
    let page = get(path);
    (jar.clone(), value(&page, "csrf"), value(&page, "etag"))
}

fn post(jar: &Path, https: u16, data: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sk", "-w", "\n%{http_code}", "-c"])
        .arg(jar)
        .arg("-b")
        .arg(jar)
        .args(["--data", data])
        .arg(format!("https://127.0.0.1:{https}/admin/edit"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn of_two_admins_editing_at_once_the_second_is_refused_and_the_first_change_stays() {
    let (mx, imap, https) = (free_port(), free_port(), free_port());
    let w = Workspace::new(&spec(mx, imap, https, ""));
    let _server = serve(&w, https);
    let password = std::fs::read_to_string(w.data_dir().join("admin.password")).unwrap();
    let password = password.trim();
    let (jar1, csrf1, etag1) = form(w.path(), "one", https, password, "/admin/aliases/new");
    let (jar2, csrf2, etag2) = form(w.path(), "two", https, password, "/admin/aliases/new");
    assert_eq!(etag1, etag2);
    let add = |local: &str, csrf: &str, etag: &str| {
        format!(
            "op=add-alias&step=confirm&csrf={csrf}&etag={etag}&local={local}&domain=example.test&forward=x%40elsewhere.test&enabled=on"
        )
    };
    let (status, body) = post(&jar1, https, &add("first", &csrf1, &etag1));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Applied: revision"), "{body}");
    let (status, body) = post(&jar2, https, &add("second", &csrf2, &etag2));
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("the spec changed since this form was loaded"),
        "{body}"
    );
    let text = std::fs::read_to_string(&w.spec).unwrap();
    assert!(
        text.contains("aliases.first]") && !text.contains("second"),
        "{text}"
    );
    // A form without the session's CSRF token is refused before anything is read.
    let (status, _) = post(&jar2, https, &add("third", "forged", &etag2));
    assert_eq!(status, 403);
}

#[test]
fn a_pattern_is_changed_through_its_form_and_the_mx_follows() {
    let (mx, imap, https) = (free_port(), free_port(), free_port());
    let extra = "\n# Shops get their own addresses.\n[[domains.\"example.test\".patterns]]\nregex = \"^shop-(.+)$\"   # one per shop\nforward = [\"$1@shops.test\"]\n";
    let w = Workspace::new(&spec(mx, imap, https, extra));
    let before = std::fs::read_to_string(&w.spec).unwrap();
    let _server = serve(&w, https);
    let password = std::fs::read_to_string(w.data_dir().join("admin.password")).unwrap();
    let (jar, csrf, etag) = form(
        w.path(),
        "admin",
        https,
        password.trim(),
        "/admin/domains/example.test/edit",
    );
    let edit = |step: &str| {
        format!(
            "op=edit-pattern&step={step}&csrf={csrf}&etag={etag}&name=example.test&index=0&regex=%5Estore-%28.%2B%29%24&forward=%241%40shops.test&reject=&enabled=on"
        )
    };
    let (status, planned) = post(&jar, https, &edit("plan"));
    assert_eq!(status, 200, "{planned}");
    // A pattern is known by its regex: a new one replaces the old.
    assert!(
        planned.contains("+ pattern example.test ^store-(.+)$")
            && planned.contains("- pattern example.test ^shop-(.+)$"),
        "{planned}"
    );
    let (status, done) = post(&jar, https, &edit("confirm"));
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("Applied: revision"), "{done}");
    let after = std::fs::read_to_string(&w.spec).unwrap();
    // Only the regex's value changed: its comment, the table's and every other line stay.
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        [(
            "regex = \"^shop-(.+)$\"   # one per shop",
            "regex = \"^store-(.+)$\"   # one per shop"
        )],
        "{after}"
    );
    assert_eq!(before.lines().count(), after.lines().count());
    assert!(rcpt_probe(mx, "a@sender.test", "store-north@example.test").contains("<-  250"));
    assert!(rcpt_probe(mx, "a@sender.test", "shop-north@example.test").contains("550"));
}

#[test]
fn the_api_plans_writes_and_refuses_edits_with_the_reason() {
    let (mx, imap, https) = (free_port(), free_port(), free_port());
    let w = Workspace::new(&spec(mx, imap, https, ""));
    let _server = serve(&w, https);
    let api = Api {
        base: format!("https://127.0.0.1:{https}"),
    };
    let before = std::fs::read_to_string(&w.spec).unwrap();

    // A dry run: the plan and the diff, nothing written.
    let (status, dry, headers) = api.call(
        "POST",
        "/api/v1/aliases?dry_run=true",
        Some(r#"{"address":"sales@example.test","forward":["s@elsewhere.test"]}"#),
        &[],
    );
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["plan"]["add"], 1, "{dry}");
    assert!(
        dry["plan"]["text"]
            .as_str()
            .unwrap()
            .contains("+ alias sales@example.test"),
        "{dry}"
    );
    assert!(
        dry["diff"]
            .as_str()
            .unwrap()
            .contains("+ [domains.\"example.test\".aliases.sales]"),
        "{dry}"
    );
    assert_eq!(dry["written"], serde_json::json!([]));
    assert!(headers.to_lowercase().contains("etag: \""), "{headers}");
    assert_eq!(std::fs::read_to_string(&w.spec).unwrap(), before);
    assert!(rcpt_probe(mx, "a@sender.test", "sales@example.test").contains("550"));

    // Invalid: 422, located in the spec as the edit would make it; nothing written.
    let (status, invalid, _) = api.call(
        "POST",
        "/api/v1/aliases",
        Some(r#"{"address":"bad@example.test","forward":["not an address"]}"#),
        &[],
    );
    assert_eq!(status, 422, "{invalid}");
    let error = invalid["errors"][0].as_str().unwrap();
    assert!(
        error.contains("ferrymail.toml:") && error.contains("not a valid forward target"),
        "{error}"
    );
    let (status, bad_mode, _) = api.call(
        "PATCH",
        "/api/v1/aliases/hello@example.test",
        Some(r#"{"reject":"loudly"}"#),
        &[],
    );
    assert_eq!(status, 422, "{bad_mode}");
    let (status, unknown, _) = api.call("DELETE", "/api/v1/aliases/nobody@example.test", None, &[]);
    assert_eq!(status, 404, "{unknown}");
    let (status, twice, _) = api.call(
        "POST",
        "/api/v1/domains",
        Some(r#"{"name":"example.test"}"#),
        &[],
    );
    assert_eq!(status, 409, "{twice}");
    let (status, _, _) = api.call(
        "POST",
        "/api/v1/aliases",
        Some(r#"{"address":"x@example.test","surprise":1}"#),
        &[],
    );
    assert_eq!(status, 400);
    assert_eq!(std::fs::read_to_string(&w.spec).unwrap(), before);

    // Made: written, applied, routed; the answer's ETag guards the next edit.
    let (status, made, _) = api.call(
        "POST",
        "/api/v1/aliases",
        Some(r#"{"address":"sales@example.test","forward":["s@elsewhere.test"]}"#),
        &[],
    );
    assert_eq!(status, 200, "{made}");
    assert!(
        made["applied"].as_str().unwrap().starts_with("revision"),
        "{made}"
    );
    assert!(rcpt_probe(mx, "a@sender.test", "sales@example.test").contains("<-  250"));
    let etag = made["etag"].as_str().unwrap().to_string();
    let (status, stale, _) = api.call(
        "PATCH",
        "/api/v1/aliases/sales@example.test",
        Some(r#"{"enabled":false}"#),
        &["If-Match: \"0000\""],
    );
    assert_eq!(status, 412, "{stale}");
    let (status, patched, _) = api.call(
        "PATCH",
        "/api/v1/aliases/sales@example.test",
        Some(r#"{"enabled":false}"#),
        &[&format!("If-Match: \"{etag}\"")],
    );
    assert_eq!(status, 200, "{patched}");
    assert!(rcpt_probe(mx, "a@sender.test", "sales@example.test").contains("550"));
    let after = std::fs::read_to_string(&w.spec).unwrap();
    assert_eq!(
        only_added(&before, &after),
        [
            "[domains.\"example.test\".aliases.sales]",
            "forward = [\"s@elsewhere.test\"]",
            "enabled = false",
            ""
        ],
        "{after}"
    );

    // A mailbox made through the API comes with its password, once.
    let (status, mailbox, _) = api.call(
        "POST",
        "/api/v1/aliases",
        Some(r#"{"address":"box@example.test","mailbox":true}"#),
        &[],
    );
    assert_eq!(status, 200, "{mailbox}");
    let password = mailbox["password"].as_str().unwrap();
    assert_eq!(imap_login(imap, "box@example.test", password), "OK");
    // Patterns, by index.
    let (status, pattern, _) = api.call(
        "POST",
        "/api/v1/domains/example.test/patterns",
        Some(r#"{"regex":"^shop-(.+)$","forward":["shop+$1@elsewhere.test"]}"#),
        &[],
    );
    assert_eq!(status, 200, "{pattern}");
    assert!(rcpt_probe(mx, "a@sender.test", "shop-x@example.test").contains("<-  250"));
    let (status, _, _) = api.call(
        "DELETE",
        "/api/v1/domains/example.test/patterns/0",
        None,
        &[],
    );
    assert_eq!(status, 200);
    assert!(rcpt_probe(mx, "a@sender.test", "shop-x@example.test").contains("550"));
}

#[test]
fn a_spec_with_changes_none_is_read_only() {
    let (mx, imap, https) = (free_port(), free_port(), free_port());
    let w = Workspace::new(&spec(mx, imap, https, "changes = \"none\"\n").replace(
        "[admin.api_tokens]\nci = { env = \"FERRYMAIL_TEST_TOKEN\" }\nchanges",
        "[admin]\napi_tokens = { ci = { env = \"FERRYMAIL_TEST_TOKEN\" } }\nchanges",
    ));
    let _server = serve(&w, https);
    let before = std::fs::read_to_string(&w.spec).unwrap();
    let api = Api {
        base: format!("https://127.0.0.1:{https}"),
    };
    let (status, refused, _) = api.call(
        "POST",
        "/api/v1/domains",
        Some(r#"{"name":"new.test"}"#),
        &[],
    );
    assert_eq!(status, 403, "{refused}");
    assert!(
        refused["errors"][0]
            .as_str()
            .unwrap()
            .contains("changes = \"none\""),
        "{refused}"
    );
    assert_eq!(std::fs::read_to_string(&w.spec).unwrap(), before);
}

#[test]
fn with_apply_manual_a_saved_edit_waits_for_apply() {
    let (mx, imap, https) = (free_port(), free_port(), free_port());
    let w = Workspace::new("");
    let body = spec(mx, imap, https, "");
    let manual = |extra: &str| {
        format!(
            "[server]\nhostname = \"mx.example.test\"\ndata_dir = \"data\"\napply = \"manual\"\n\n{body}{extra}"
        )
    };
    std::fs::write(&w.spec, manual("")).unwrap();
    let server = serve(&w, https);
    let edited =
        manual("\n[domains.\"example.test\".aliases.later]\nforward = [\"l@elsewhere.test\"]\n");
    // The save is noticed, and left for `apply`. (Saved again while waiting: the port
    // answers a moment before the spec's watcher is in place.)
    assert!(
        common::wait_for(std::time::Duration::from_secs(15), || {
            std::fs::write(&w.spec, &edited).unwrap();
            server
                .log_text()
                .contains("not applied (apply = \"manual\")")
        }),
        "{}",
        server.log_text()
    );
    assert!(rcpt_probe(mx, "a@sender.test", "later@example.test").contains("550"));
    let status = w.run(&["status"]);
    assert!(
        status.stdout.contains("apply: manual")
            && status.stdout.contains("not applied yet: 1 to add"),
        "{}",
        status.stdout
    );
    w.run(&["apply", "--auto-approve"]).ok();
    assert!(common::wait_for(std::time::Duration::from_secs(10), || {
        rcpt_probe(mx, "a@sender.test", "later@example.test").contains("<-  250")
    }));
    let status = w.run(&["status"]);
    assert!(
        status.stdout.contains("the spec file is applied"),
        "{}",
        status.stdout
    );
}

#[test]
fn with_the_spec_in_git_an_edit_is_a_commit_or_a_proposal() {
    let (mx, imap, https) = (free_port(), free_port(), free_port());
    let w = Workspace::new("[source]\ngit = \"repo.git\"\ninterval = \"1s\"\n");
    git(
        w.path(),
        &["init", "--quiet", "--bare", "-b", "main", "repo.git"],
    );
    git(w.path(), &["clone", "--quiet", "repo.git", "work"]);
    let work = w.path().join("work");
    let inner = |changes: &str| {
        format!(
            "[server]\nhostname = \"mx.example.test\"\n\n{}\n[admin]\nchanges = \"{changes}\"\n",
            spec(mx, imap, https, "")
        )
    };
    std::fs::write(work.join("ferrymail.toml"), inner("commit")).unwrap();
    git(&work, &["add", "ferrymail.toml"]);
    git(&work, &["commit", "--quiet", "-m", "the spec"]);
    git(&work, &["push", "--quiet", "origin", "main"]);
    let server = serve(&w, https);
    let api = Api {
        base: format!("https://127.0.0.1:{https}"),
    };

    // "commit": a commit on the branch, by the token, named for the change; the
    // GitOps loop applies it.
    let (status, made, _) = api.call(
        "POST",
        "/api/v1/aliases",
        Some(r#"{"address":"sales@example.test","forward":["s@elsewhere.test"]}"#),
        &[],
    );
    assert_eq!(status, 200, "{made}\n{}", server.log_text());
    assert_eq!(made["branch"], "main", "{made}");
    assert!(
        made["applied"].as_str().unwrap().starts_with("revision"),
        "{made}"
    );
    let bare = w.path().join("repo.git");
    let head = git(&bare, &["log", "-1", "--format=%h|%an|%ae|%s", "main"]);
    assert_eq!(
        head,
        format!(
            "{}|api token ci|api-token-ci@mx.example.test|add alias sales@example.test",
            &made["commit"].as_str().unwrap()[..head.split('|').next().unwrap().len()]
        )
    );
    assert!(rcpt_probe(mx, "a@sender.test", "sales@example.test").contains("<-  250"));
    let file = git(&bare, &["show", "main:ferrymail.toml"]);
    assert_eq!(
        only_added(&inner("commit"), &file),
        [
            "[domains.\"example.test\".aliases.sales]",
            "forward = [\"s@elsewhere.test\"]",
            ""
        ]
    );

    // The same through the admin's form in Chromium: the admin is the author.
    let password = std::fs::read_to_string(w.data_dir().join("admin.password")).unwrap();
    let add_in_browser = |local: &str| {
        common::browser_peer_with(
            &w,
            "admin_git_browser.js",
            https,
            &server,
            password.trim(),
            &[local],
        )
        .0
    };
    let clicked = add_in_browser("web");
    assert_eq!(
        clicked["heading"], "Done: add alias web@example.test",
        "{clicked}"
    );
    assert_eq!(clicked["branch"], "main", "{clicked}");
    assert!(
        clicked["applied"]
            .as_str()
            .unwrap()
            .starts_with("Applied: revision"),
        "{clicked}"
    );
    let head = git(&bare, &["log", "-1", "--format=%an|%ae|%s|%b", "main"]);
    assert_eq!(
        head,
        "admin|admin@mx.example.test|add alias web@example.test|Made in the ferrymail admin by admin."
    );
    assert!(
        clicked["done"]
            .as_str()
            .unwrap()
            .contains(&git(&bare, &["log", "-1", "--format=%h", "main"])),
        "{clicked}"
    );
    assert!(rcpt_probe(mx, "a@sender.test", "web@example.test").contains("<-  250"));

    // "propose": a branch for review; nothing applied, the main branch untouched.
    git(&work, &["pull", "--quiet", "origin", "main"]);
    let proposing = std::fs::read_to_string(work.join("ferrymail.toml"))
        .unwrap()
        .replace("changes = \"commit\"", "changes = \"propose\"");
    std::fs::write(work.join("ferrymail.toml"), proposing).unwrap();
    git(&work, &["commit", "--quiet", "-am", "edits for review"]);
    git(&work, &["push", "--quiet", "origin", "main"]);
    let (status, proposed, _) = api.call(
        "POST",
        "/api/v1/aliases",
        Some(r#"{"address":"other@example.test","forward":["o@elsewhere.test"]}"#),
        &[],
    );
    assert_eq!(status, 200, "{proposed}");
    assert_eq!(
        proposed["branch"], "ferrymail/add-alias-other-example.test",
        "{proposed}"
    );
    assert_eq!(proposed["applied"], serde_json::Value::Null, "{proposed}");
    let branch = git(
        &bare,
        &[
            "show",
            "ferrymail/add-alias-other-example.test:ferrymail.toml",
        ],
    );
    assert!(branch.contains("aliases.other]"), "{branch}");
    assert!(!git(&bare, &["show", "main:ferrymail.toml"]).contains("aliases.other]"));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(rcpt_probe(mx, "a@sender.test", "other@example.test").contains("550"));
    // The same proposal twice: the branch is there already.
    let (status, again, _) = api.call(
        "POST",
        "/api/v1/aliases",
        Some(r#"{"address":"other@example.test","forward":["o@elsewhere.test"]}"#),
        &[],
    );
    assert_eq!(status, 409, "{again}");
    // Proposed from the form: the branch is named on the page, nothing applied.
    let clicked = add_in_browser("later");
    assert_eq!(
        clicked["branch"], "ferrymail/add-alias-later-example.test",
        "{clicked}"
    );
    assert!(
        clicked["proposed"]
            .as_str()
            .unwrap()
            .starts_with("Proposed for review")
    );
    assert_eq!(
        git(
            &bare,
            &[
                "log",
                "-1",
                "--format=%an",
                "ferrymail/add-alias-later-example.test"
            ]
        ),
        "admin"
    );
    assert!(rcpt_probe(mx, "a@sender.test", "later@example.test").contains("550"));
}

#[test]
fn hostile_edits_are_refused_and_the_spec_stays_as_it_was() {
    let (mx, imap, https) = (free_port(), free_port(), free_port());
    let w = Workspace::new(&spec(mx, imap, https, ""));
    let server = serve(&w, https);
    let before = std::fs::read_to_string(&w.spec).unwrap();
    let api = Api {
        base: format!("https://127.0.0.1:{https}"),
    };
    // TOML written into a key or a value stays a string: refused as not an address,
    // never a new table.
    let injected_key = serde_json::json!({
        "address": "x\"]\n[admin.users.evil]\npassword = { hash = \"h\" }\n#@example.test",
        "forward": ["a@elsewhere.test"],
    });
    let injected_value = serde_json::json!({
        "address": "y@example.test",
        "forward": ["a@elsewhere.test\"]\n[admin.users.evil]\n#"],
    });
    for body in [injected_key, injected_value] {
        let (status, answer, _) = api.call("POST", "/api/v1/aliases", Some(&body.to_string()), &[]);
        assert_eq!(status, 422, "{answer}");
    }
    // A domain's provider must be one the spec declares.
    let (status, answer, _) = api.call(
        "PATCH",
        "/api/v1/domains/example.test",
        Some(r#"{"dns_provider":"nowhere"}"#),
        &[],
    );
    assert_eq!(status, 422, "{answer}");
    // Deep nesting and a large body: refused before anything is read.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, _, _) = api.call("POST", "/api/v1/aliases", Some(&deep), &[]);
    assert_eq!(status, 400);
    let big = format!(
        "{{\"address\":\"z@example.test\",\"forward\":[{}]}}",
        vec!["\"a@elsewhere.test\""; 200_000].join(",")
    );
    let (status, _, _) = api.call("POST", "/api/v1/aliases", Some(&big), &[]);
    // Refused from the declared length, before the body is read: curl hears the 413.
    assert_eq!(status, 413);
    // Without a token, nothing.
    let out = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
        ])
        .arg(format!(
            "https://127.0.0.1:{https}/api/v1/domains/example.test"
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    assert_eq!(std::fs::read_to_string(&w.spec).unwrap(), before);
    assert!(
        !server.log_text().contains("panicked"),
        "{}",
        server.log_text()
    );
    assert!(rcpt_probe(mx, "a@sender.test", "hello@example.test").contains("<-  250"));
}
