//! The web admin through curl (a real HTTP client with a cookie jar) over https: the
//! first-boot password, login, CSRF and session-fixation checks, the pages, rate limits,
//! and a mailbox user who sees their own mailbox and nothing else.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TEST_HASH, Workspace, free_port, swaks, wait_for};

struct Response {
    status: u16,
    headers: String,
    body: String,
}

/// One request with curl, cookies kept in `jar`.
fn curl(jar: &Path, args: &[&str]) -> Response {
    let head = jar.with_extension(format!("head-{}", free_port()));
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "20", "-c"])
        .arg(jar)
        .arg("-b")
        .arg(jar)
        .arg("-D")
        .arg(&head)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Response {
        status: code.trim().parse().unwrap_or(0),
        headers: std::fs::read_to_string(&head).unwrap_or_default(),
        body: body.to_string(),
    }
}

/// A form value, percent-encoded.
fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the first hidden csrf field in a page.
fn csrf(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..].split('"').next().unwrap().to_string()
}

struct Browser {
    jar: PathBuf,
    base: String,
}

impl Browser {
    fn new(dir: &Path, name: &str, https: u16) -> Browser {
        Browser {
            jar: dir.join(format!("{name}.jar")),
            base: format!("https://127.0.0.1:{https}"),
        }
    }

    fn get(&self, path: &str) -> Response {
        curl(&self.jar, &[&format!("{}{path}", self.base)])
    }

    fn post(&self, path: &str, form: &str) -> Response {
        curl(
            &self.jar,
            &["--data", form, &format!("{}{path}", self.base)],
        )
    }

    fn login(&self, user: &str, password: &str) -> Response {
        let form = self.get("/admin/login");
        assert_eq!(form.status, 200);
        self.post(
            "/admin/login",
            &format!("user={user}&password={password}&csrf={}", csrf(&form.body)),
        )
    }
}

fn spec(mx: u16, http: u16, https: u16, admins: &str) -> String {
    format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"
http = "127.0.0.1:{http}"
https = "127.0.0.1:{https}"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }}, quota = "1GiB" }}

[domains."example.test".aliases.other]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}

[domains."example.test".aliases.hello]
forward = ["friend@elsewhere.test"]

# Nothing listens there: forwards wait in the queue, tried again later.
[delivery]
relay = "127.0.0.1:1"
{admins}"#
    )
}

#[test]
fn admins_and_mailbox_users_see_what_they_may_and_nothing_else() {
    let (mx, http, https) = (free_port(), free_port(), free_port());
    let w = Workspace::new(&spec(mx, http, https, ""));
    let server = w.serve(https);
    let dir = w.path();

    // First boot: a generated password for "admin", private to the server.
    let password_file = w.data_dir().join("admin.password");
    let password = std::fs::read_to_string(&password_file)
        .unwrap()
        .trim()
        .to_string();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&password_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(password.len(), 24);

    let admin = Browser::new(dir, "admin", https);
    // No session: sent to the login page.
    let page = admin.get("/admin");
    assert_eq!(page.status, 303);
    assert!(
        page.headers.contains("location: /admin/login"),
        "{}",
        page.headers
    );
    // A login without the form's CSRF token is refused, even with the right password.
    let forged = admin.post(
        "/admin/login",
        &format!("user=admin&password={password}&csrf=x"),
    );
    assert_eq!(forged.status, 403, "{}", forged.body);
    let wrong = admin.login("admin", "not-it");
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("Wrong name or password."));

    // Session fixation: an attacker with a session of their own (a mailbox login) plants
    // its cookie in the admin's browser; after the admin logs in, that cookie is not the
    // admin's session, and it no longer opens anything at all.
    let attacker = Browser::new(dir, "attacker", https);
    let theirs = attacker.login("other%40example.test", "quickstart");
    assert_eq!(theirs.status, 303, "{}", theirs.body);
    let planted = std::fs::read_to_string(&attacker.jar)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.split_once("ferrymail_session\t")
                .map(|(_, v)| v.trim().to_string())
        })
        .expect("the attacker's session");
    std::fs::write(
        &admin.jar,
        format!("127.0.0.1\tFALSE\t/\tTRUE\t0\tferrymail_session\t{planted}\n"),
    )
    .unwrap();
    let ok = admin.login("admin", &password);
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert!(
        ok.headers.contains("location: /admin\r\n"),
        "{}",
        ok.headers
    );
    let cookie = ok
        .headers
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: ferrymail_session=")
        })
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Secure"),
        "{cookie}"
    );
    assert!(!cookie.contains(&planted));
    let replay = attacker.get("/admin/me");
    assert_eq!(
        replay.status, 303,
        "the planted session was ended, not promoted"
    );

    // The pages.
    let overview = admin.get("/admin");
    assert_eq!(overview.status, 200);
    assert!(
        overview
            .body
            .contains("Serving <strong>mx.example.test</strong> at store revision 1"),
        "{}",
        overview.body
    );
    assert!(overview.body.contains("applied"));
    // ...with the plan that reconcile applied.
    assert!(
        overview.body.contains("+ alias hello@example.test"),
        "{}",
        overview.body
    );
    let certs = admin.get("/admin/certificates").body;
    assert!(
        certs.contains("mx.example.test")
            && certs.contains("self-signed")
            && certs.contains(" days)"),
        "{certs}"
    );
    assert!(
        overview.headers.contains("x-frame-options: DENY"),
        "{}",
        overview.headers
    );
    // Over https, browsers are told to keep to it, and pages run only their own scripts.
    for header in [
        "strict-transport-security: max-age=31536000",
        "content-security-policy: default-src 'self'; script-src 'sha256-",
        "referrer-policy: no-referrer",
    ] {
        assert!(
            overview.headers.to_lowercase().contains(header),
            "{header}: {}",
            overview.headers
        );
    }
    let aliases = admin.get("/admin/aliases?test=hello%2Bnews%40example.test");
    assert!(
        aliases.body.contains("hello+news@example.test matches alias hello@example.test (tag +news): forwarded to friend@elsewhere.test"),
        "{}",
        aliases.body
    );
    assert!(aliases.body.contains("3 of 3 entries"), "{}", aliases.body);
    let unknown = admin.get("/admin/aliases?test=nobody%40example.test");
    assert!(
        unknown.body.contains("no such address here"),
        "{}",
        unknown.body
    );
    // What a value holds is shown, never run.
    let escaped = admin.get("/admin/aliases?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E");
    assert!(escaped.body.contains("&lt;script&gt;") && !escaped.body.contains("<script>"));

    swaks(
        mx,
        &["--from", "alice@sender.test", "--to", "me@example.test"],
    )
    .ok();
    let refused = swaks(
        mx,
        &[
            "--from",
            "mallory@sender.test",
            "--to",
            "nobody@example.test",
        ],
    );
    assert!(refused.stdout.contains("<** "));
    let log = |query: &str| admin.get(&format!("/admin/emails{query}")).body;
    assert!(
        wait_for(Duration::from_secs(10), || log("")
            .contains("mallory@sender.test")),
        "{}",
        server.log_text()
    );
    let rejected = log("?event=rejected");
    assert!(
        rejected.contains("mallory@sender.test") && !rejected.contains("alice@sender.test"),
        "{rejected}"
    );
    let searched = log("?q=alice");
    assert!(
        searched.contains("alice@sender.test") && !searched.contains("mallory@sender.test"),
        "{searched}"
    );

    // The queue: a forward that cannot be delivered (the relay is down) waits there;
    // retry and remove need the session's CSRF token.
    swaks(
        mx,
        &["--from", "alice@sender.test", "--to", "hello@example.test"],
    )
    .ok();
    assert!(
        wait_for(Duration::from_secs(20), || admin
            .get("/admin/queue")
            .body
            .contains("friend@elsewhere.test")),
        "{}",
        server.log_text()
    );
    let queue = admin.get("/admin/queue").body;
    let at = queue.find("action=\"/admin/queue/").unwrap() + "action=\"/admin/queue/".len();
    let id: String = queue[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert_eq!(
        admin
            .post(&format!("/admin/queue/{id}/remove"), "csrf=guess")
            .status,
        403
    );
    let removed = admin.post(
        &format!("/admin/queue/{id}/remove"),
        &format!("csrf={}", csrf(&queue)),
    );
    assert_eq!(removed.status, 303, "{}", removed.body);
    assert!(
        !admin
            .get("/admin/queue")
            .body
            .contains("friend@elsewhere.test")
    );
    assert!(
        admin
            .get("/admin/queue")
            .body
            .contains("0 deliveries waiting")
    );

    // The error log shows what went wrong, as the server logged it.
    let good_spec = std::fs::read_to_string(&w.spec).unwrap();
    std::fs::write(&w.spec, format!("{good_spec}\n[domains.\"bad..name\"]\n")).unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || admin
            .get("/admin/logs")
            .body
            .contains("spec not applied")),
        "{}",
        server.log_text()
    );
    std::fs::write(&w.spec, good_spec).unwrap();
    // Every mailbox with its quota and what its calendars and address books hold; a
    // pasted spec planned, nothing applied.
    {
        use ferrymail::collections::{Collections, Kind, NewResource, Precondition, Span};
        let key = std::fs::read_to_string(w.data_dir().join("master.key")).unwrap();
        let master = ferrymail::mailbox::MasterKey::new(key.trim().as_bytes()).unwrap();
        let boxes = ferrymail::mailbox::Mailboxes::new(&w.data_dir(), master);
        let mut dav = Collections::new(boxes)
            .unwrap()
            .open("me@example.test")
            .unwrap();
        let calendar = dav.collection(Kind::Calendar, "calendar").unwrap().unwrap();
        for uid in ["a", "b"] {
            let new = NewResource {
                name: &format!("{uid}.ics"),
                uid,
                component: "VEVENT",
                content_type: "text/calendar",
                body: b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n",
                span: Span::ANY,
                moved_from: None,
            };
            dav.put(&calendar, &new, &Precondition::Any, None).unwrap();
        }
        // other@ has a Sieve script of its own, active.
        let boxes = ferrymail::mailbox::Mailboxes::new(
            &w.data_dir(),
            ferrymail::mailbox::MasterKey::new(key.trim().as_bytes()).unwrap(),
        );
        let mut scripts =
            ferrymail::sieve::store::UserScripts::open(&boxes, "other@example.test").unwrap();
        scripts.put("filters", b"keep;\n").unwrap();
        scripts.set_active(Some("filters")).unwrap();
    }
    let boxes = admin.get("/admin/mailboxes").body;
    assert!(
        boxes.contains("own script &quot;filters&quot; active")
            || boxes.contains("own script \"filters\" active"),
        "{boxes}"
    );
    assert!(
        boxes.contains("me@example.test")
            && boxes.contains("other@example.test")
            && boxes.contains("1.0 GiB"),
        "{boxes}"
    );
    assert!(
        boxes.contains("1 (2 items)") && boxes.contains("1 (0 contacts)"),
        "{boxes}"
    );
    let form = admin.get("/admin/plan").body;
    let pasted = format!(
        "{}{}\n[domains.\"example.test\".aliases.sales]\nforward = [\"x@elsewhere.test\"]\n",
        common::header(),
        spec(mx, http, https, "")
    );
    let encoded: String = url_encode(&pasted);
    assert_eq!(
        admin
            .post("/admin/plan", &format!("csrf=guess&spec={encoded}"))
            .status,
        403
    );
    let planned = admin.post(
        "/admin/plan",
        &format!("csrf={}&spec={encoded}", csrf(&form)),
    );
    assert_eq!(planned.status, 200);
    assert!(
        planned.body.contains("+ alias sales@example.test"),
        "{}",
        planned.body
    );
    assert!(
        planned
            .body
            .contains("Plan: 1 to add, 0 to change, 0 to destroy."),
        "{}",
        planned.body
    );
    assert!(
        !admin
            .get("/admin/aliases?q=sales")
            .body
            .contains("sales@example.test"),
        "nothing applied"
    );
    let broken = admin.post(
        "/admin/plan",
        &format!("csrf={}&spec=%5Bserver%5D%0Ahostnam%3D1", csrf(&form)),
    );
    assert!(
        broken.body.contains("The spec is not valid")
            && broken.body.contains("posted-spec.toml:2:1"),
        "{}",
        broken.body
    );

    // No backups declared: the page says so.
    assert!(
        admin
            .get("/admin/backups")
            .body
            .contains("No backups are declared")
    );

    // Logging out needs the session's CSRF token; afterwards the cookie opens nothing.
    assert_eq!(admin.post("/admin/logout", "csrf=guess").status, 403);
    let page = admin.get("/admin");
    assert_eq!(
        admin
            .post("/admin/logout", &format!("csrf={}", csrf(&page.body)))
            .status,
        303
    );
    assert_eq!(admin.get("/admin").status, 303);

    // A mailbox user: their own usage, no admin page.
    let me = Browser::new(dir, "me", https);
    let ok = me.login("me%40example.test", "quickstart");
    assert!(ok.headers.contains("location: /admin/me"), "{}", ok.headers);
    let own = me.get("/admin/me");
    assert!(
        own.body
            .contains("Mailbox <strong>me@example.test</strong>"),
        "{}",
        own.body
    );
    assert!(own.body.contains(" used of 1.0 GiB ("), "{}", own.body);
    assert!(!own.body.contains("other@example.test"));
    for path in [
        "/admin",
        "/admin/aliases",
        "/admin/emails?q=other",
        "/admin/queue",
        "/admin/logs",
        "/admin/backups",
        "/admin/mailboxes",
        "/admin/plan",
        "/admin/domains",
        "/admin/certificates",
    ] {
        let page = me.get(path);
        assert_eq!(page.status, 403, "{path}");
        assert!(!page.body.contains("mallory") && !page.body.contains("friend@elsewhere.test"));
    }

    // Declaring an administrator retires the first-boot password, and ends the sessions
    // opened with it.
    let kept = Browser::new(dir, "kept", https);
    assert_eq!(kept.login("admin", &password).status, 303);
    assert_eq!(kept.get("/admin").status, 200);
    std::fs::write(
        &w.spec,
        format!(
            "{}{}",
            common::header(),
            spec(
                mx,
                http,
                https,
                &format!("[admin.users.ops]\npassword = {{ hash = \"{TEST_HASH}\" }}\n")
            )
        ),
    )
    .unwrap();
    let ops = Browser::new(dir, "ops", https);
    assert!(
        wait_for(Duration::from_secs(20), || ops
            .login("ops", "quickstart")
            .status
            == 303),
        "{}",
        server.log_text()
    );
    assert_eq!(
        Browser::new(dir, "old", https)
            .login("admin", &password)
            .status,
        401
    );
    let ended = kept.get("/admin");
    assert_eq!(
        ended.status, 303,
        "a first-boot session outlived its password"
    );

    // Ten failures from one address (this test's earlier ones count: a success clears
    // nothing): from then on every attempt is refused unchecked, the right one too.
    let guesser = Browser::new(dir, "guesser", https);
    let mut refused = 0;
    for _ in 0..11 {
        match guesser.login("ops", "guess").status {
            401 => refused += 1,
            429 => break,
            other => panic!("status {other}"),
        }
    }
    assert!(refused < 10, "429 came after {refused} more failures");
    let limited = guesser.login("ops", "quickstart");
    assert_eq!(limited.status, 429, "{}", limited.body);
    // A success of one's own does not reset the count for someone else's name.
    let me_again = Browser::new(dir, "me-again", https);
    assert_eq!(
        me_again.login("me%40example.test", "quickstart").status,
        429
    );
}

#[test]
fn headless_chromium_walks_every_page_on_a_phone_sized_screen() {
    let (mx, http, https) = (free_port(), free_port(), free_port());
    let w = Workspace::new(&spec(mx, http, https, ""));
    let server = w.serve(https);
    swaks(
        mx,
        &["--from", "alice@sender.test", "--to", "me@example.test"],
    )
    .ok();
    swaks(
        mx,
        &["--from", "bob@sender.test", "--to", "me@example.test"],
    )
    .ok();
    let (report, shots) = common::browser_peer(&w, "admin_browser.js", https, &server);
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "start: /admin/login",
            "wrong password: Wrong name or password.",
            "logged in: /admin",
            "logged out: /admin/login",
            "after logout: /admin/login",
        ],
        "{report}"
    );
    assert_eq!(report["cookie"]["httpOnly"], true, "{report}");
    assert_eq!(report["cookie"]["secure"], true, "{report}");
    assert_eq!(report["cookie"]["sameSite"], "Strict", "{report}");
    for (name, heading) in [
        ("overview", "Overview"),
        ("aliases", "Aliases"),
        ("emails", "Mail log"),
        ("queue", "Queue"),
        ("backups", "Backups"),
        ("logs", "Errors"),
        ("mailboxes", "Mailboxes"),
        ("plan", "Plan a spec"),
        ("domains", "Domains"),
        ("certificates", "Certificates"),
    ] {
        assert_eq!(report["pages"][name]["heading"], heading, "{report}");
        // Readable on a phone: nothing wider than its 390 px.
        assert!(
            report["pages"][name]["width"].as_u64().unwrap() <= 390,
            "{name}: {report}"
        );
        let png = std::fs::read(shots.join(format!("{name}.png"))).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 2000,
            "{name}.png"
        );
    }
    assert_eq!(
        report["route"],
        "hello+news@example.test matches alias hello@example.test (tag +news): forwarded to friend@elsewhere.test"
    );
    let log = report["log_text"].as_str().unwrap();
    assert!(
        log.contains("alice@sender.test") && !log.contains("bob@sender.test"),
        "{log}"
    );
    assert_eq!(report["mailbox_user"]["landed"], "/admin/me", "{report}");
    assert!(
        report["mailbox_user"]["usage"]
            .as_str()
            .unwrap()
            .contains("used of 1.0 GiB")
    );
    assert_eq!(report["mailbox_user"]["admin_status"], 403);
    assert_eq!(report["csp_refusals"], serde_json::json!([]), "{report}");
    assert!(
        report["copy_buttons_shown"].as_u64().unwrap() > 0,
        "the copy script did not run: {report}"
    );
}

#[test]
fn the_domains_page_checks_each_record_live() {
    let (mx, http, https) = (free_port(), free_port(), free_port());
    let w = Workspace::new("");
    // The zone as it stands: the MX is right, the SPF record is someone else's, the
    // rest is missing.
    let (_dns, dns) = common::knot(
        w.path(),
        &[(
            "example.test",
            &common::zone(
                "example.test",
                "@ 3600 IN MX 10 mx.example.test.\n@ 3600 IN TXT \"v=spf1 include:elsewhere.test ~all\"\n",
            ),
        )],
    );
    w.write_spec(&format!(
        "{}\n[dns]\nresolver = \"127.0.0.1:{dns}\"\n",
        spec(mx, http, https, "")
    ));
    let _server = w.serve(https);
    let admin = Browser::new(w.path(), "admin", https);
    let password = std::fs::read_to_string(w.data_dir().join("admin.password")).unwrap();
    assert_eq!(admin.login("admin", password.trim()).status, 303);
    let page = admin.get("/admin/domains").body;
    let row = |name: &str, kind: &str| -> String {
        let at = page
            .find(&format!(
                "<td data-label=\"Name\">{name}</td><td data-label=\"Type\">{kind}</td>"
            ))
            .unwrap_or_else(|| panic!("{name} {kind} in:\n{page}"));
        page[at..].split("</tr>").next().unwrap().to_string()
    };
    assert!(
        row("example.test", "MX").contains("✓ published"),
        "{}",
        row("example.test", "MX")
    );
    let spf = row("example.test", "TXT");
    assert!(
        spf.contains("✗ wrong: v=spf1 include:elsewhere.test ~all"),
        "{spf}"
    );
    assert!(row("_dmarc.example.test", "TXT").contains("✗ missing"));
    assert!(
        page.contains("ferrymail._domainkey.example.test. 3600 IN TXT"),
        "the zone lines, DKIM key included"
    );
}
