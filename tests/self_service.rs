//! A mailbox owner's own page (headless Chromium): a changed password ends the old one
//! on IMAP, an app password opens IMAP, POP3, SMTP and DAV (not ManageSieve, not the
//! page) until it is revoked or the password changes, their forwarding and vacation
//! reply act on the next message; and what the spec does not allow, or a stranger or a
//! stolen session tries, is refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{TEST_HASH, Workspace, free_port, imap_login, python_peer, received, swaks, wait_for};

/// TEST_HASH's password.
const FIRST: &str = "quickstart";
const CHANGED: &str = "a-new-password-42";

struct Ports {
    managesieve: u16,
    mx: u16,
    submission: u16,
    imap: u16,
    pop3: u16,
    https: u16,
    relay: u16,
}

fn spec(p: &Ports, dns: u16) -> String {
    let Ports {
        managesieve,
        mx,
        submission,
        imap,
        pop3,
        https,
        relay,
    } = p;
    format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"
submission = "127.0.0.1:{submission}"
imap = "127.0.0.1:{imap}"
pop3 = "127.0.0.1:{pop3}"
managesieve = "127.0.0.1:{managesieve}"
https = "127.0.0.1:{https}"

[dns]
resolver = "127.0.0.1:{dns}"

[delivery]
relay = "127.0.0.1:{relay}"

# Its owner changes what they may.
[domains."example.test".aliases.me.mailbox]
password = {{ hash = "{TEST_HASH}" }}
self_service = ["password", "app-passwords", "forwarding", "vacation"]

# The operator keeps everything.
[domains."example.test".aliases.kept.mailbox]
password = {{ hash = "{TEST_HASH}" }}

# The main password opens the web page only.
[domains."example.test".aliases.web.mailbox]
password = {{ hash = "{TEST_HASH}" }}
self_service = ["app-passwords"]
main_password = "web"
"#
    )
}

/// A server with the spec above on free ports, and the quiet DNS server it asks.
fn start() -> (Workspace, Ports, u16, common::Process, common::Process) {
    let w = Workspace::new("");
    let p = Ports {
        managesieve: free_port(),
        mx: free_port(),
        submission: free_port(),
        imap: free_port(),
        pop3: free_port(),
        https: free_port(),
        relay: free_port(),
    };
    let (dns_server, dns) = common::quiet_dns(w.path());
    w.write_spec(&spec(&p, dns));
    let server = w.serve(p.https);
    (w, p, dns, server, dns_server)
}

fn pop3(port: u16, user: &str, password: &str) -> String {
    python(&format!(
        "import poplib,ssl\nc=poplib.POP3('127.0.0.1',{port})\nc.stls(ssl._create_unverified_context())\ntry:\n  c.user({user:?}); print(c.pass_({password:?}).decode().split()[0])\nexcept Exception as e:\n  print('refused', e)\n"
    ))
}

fn smtp(port: u16, user: &str, password: &str) -> String {
    python(&format!(
        "import smtplib,ssl\nc=smtplib.SMTP('127.0.0.1',{port})\nc.starttls(context=ssl._create_unverified_context())\ntry:\n  print(c.login({user:?},{password:?})[0])\nexcept Exception as e:\n  print('refused', e)\n"
    ))
}

/// Logs in to ManageSieve with sievelib (PyPI): "True" or "False".
fn managesieve(port: u16, user: &str, password: &str) -> String {
    python(&format!(
        "import ssl\nfrom sievelib import managesieve\nc=ssl._create_unverified_context\nssl.create_default_context=lambda *a,**k: c()\nm=managesieve.Client('127.0.0.1',{port})\nprint(m.connect({user:?},{password:?},starttls=True,authmech='PLAIN'))\n"
    ))
}

fn python(script: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The HTTP status of a DAV PROPFIND with these credentials.
fn dav(https: u16, user: &str, password: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PROPFIND",
        ])
        .args(["-H", "Depth: 0", "-u", &format!("{user}:{password}")])
        .arg(format!("https://127.0.0.1:{https}/dav/"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A curl session with a cookie jar: the web page as a script-less client sees it.
struct Web {
    jar: PathBuf,
    https: u16,
}

impl Web {
    fn new(dir: &Path, name: &str, https: u16) -> Web {
        Web {
            jar: dir.join(format!("{name}.jar")),
            https,
        }
    }

    /// (status, body) of a GET, or of a POST of `form` (url-encoded by curl).
    fn call(&self, path: &str, form: &[(&str, &str)]) -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sk", "-w", "\n%{http_code}", "-c"])
            .arg(&self.jar)
            .arg("-b")
            .arg(&self.jar);
        for (k, v) in form {
            cmd.args(["--data-urlencode", &format!("{k}={v}")]);
        }
        let out = cmd
            .arg(format!("https://127.0.0.1:{}{path}", self.https))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn csrf(page: &str) -> String {
        let marker = "name=\"csrf\" value=\"";
        let at = page
            .find(marker)
            .unwrap_or_else(|| panic!("csrf in {page}"))
            + marker.len();
        page[at..].split('"').next().unwrap().to_string()
    }

    /// Logs in; the path the login led to.
    fn login(&self, user: &str, password: &str) -> (u16, String) {
        let (_, form) = self.call("/admin/login", &[]);
        let csrf = Self::csrf(&form);
        let mut cmd = Command::new("curl");
        let out = cmd
            .args([
                "-sk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{redirect_url}",
                "-c",
            ])
            .arg(&self.jar)
            .arg("-b")
            .arg(&self.jar)
            .args(["--data-urlencode", &format!("user={user}")])
            .args(["--data-urlencode", &format!("password={password}")])
            .args(["--data-urlencode", &format!("csrf={csrf}")])
            .arg(format!("https://127.0.0.1:{}/admin/login", self.https))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (code, to) = text.split_once(' ').unwrap_or((&text, ""));
        (code.parse().unwrap_or(0), to.to_string())
    }
}

#[test]
fn an_owner_changes_their_password_and_app_passwords_in_chromium_and_imap_obeys() {
    let (w, p, dns, server, _dns) = start();
    let sink_dir = w.path().join("sink");
    let _sink = python_peer(
        "sink.py",
        &[&p.relay.to_string(), sink_dir.to_str().unwrap()],
        w.path(),
    );
    assert_eq!(imap_login(p.imap, "me@example.test", FIRST), "OK");

    let (report, shots) = common::browser_peer_with(
        &w,
        "self_service_browser.js",
        p.https,
        &server,
        FIRST,
        &["me@example.test", "setup", CHANGED],
    );
    assert!(report.get("error").is_none(), "{report}");
    assert_eq!(report["landed"], "/admin/me", "{report}");
    assert_eq!(
        report["sections"],
        serde_json::json!([
            "Password",
            "App passwords",
            "Forwarding",
            "Vacation reply",
            "Mail app settings",
            "Recent mail"
        ]),
        "{report}"
    );
    let settings = report["settings"].as_str().unwrap();
    for part in [
        &format!("IMAP (incoming) mx.example.test {} STARTTLS", p.imap),
        &format!("SMTP (outgoing) mx.example.test {} STARTTLS", p.submission),
        &format!(
            "CalDAV (calendars) https://mx.example.test:{}/dav/",
            p.https
        ),
    ] {
        assert!(settings.contains(part.as_str()), "{part} in {settings}");
    }
    assert_eq!(report["wrong_current"], "The current password is wrong.");
    assert_eq!(report["password_changed"], "Password changed.");
    assert_eq!(report["after_change"], "/admin/me/password");
    assert_eq!(report["forwarding"], "Forwarding saved.");
    assert_eq!(report["vacation"], "Vacation reply saved.");
    let app = report["app_password"].as_str().unwrap().to_string();
    assert_eq!(app.len(), 19, "{app}");
    let listed = report["app_passwords"].as_str().unwrap();
    assert!(
        listed.contains("phone") && listed.contains("never"),
        "{listed}"
    );
    // Every page fits both widths: nothing wider than the window.
    for (name, widths) in report["pages"].as_object().unwrap() {
        assert!(
            widths["width_390"].as_u64().unwrap() <= 390,
            "{name}: {widths}"
        );
        assert!(
            widths["width_1280"].as_u64().unwrap() <= 1280,
            "{name}: {widths}"
        );
    }
    assert!(shots.join("me-app-password-390.png").exists());

    // The profile parses as a property list (Python's plistlib), with the account in it.
    assert_eq!(report["profile_type"], "application/x-apple-aspen-config");
    let profile = w.path().join("mail.mobileconfig");
    std::fs::write(&profile, report["profile"].as_str().unwrap()).unwrap();
    let parsed = python(&format!(
        "import plistlib\np=plistlib.load(open({:?},'rb'))\nm=p['PayloadContent'][0]\nprint(p['PayloadType'], m['PayloadType'], m['IncomingMailServerHostName'], m['IncomingMailServerPortNumber'], m['EmailAddress'], len(p['PayloadContent']))",
        profile.display().to_string()
    ));
    assert_eq!(
        parsed,
        format!(
            "Configuration com.apple.mail.managed mx.example.test {} me@example.test 3",
            p.imap
        )
    );

    // The old password is refused everywhere, the new one works, so does the app password.
    assert!(imap_login(p.imap, "me@example.test", FIRST).starts_with("refused"));
    assert_eq!(imap_login(p.imap, "me@example.test", CHANGED), "OK");
    assert_eq!(imap_login(p.imap, "me@example.test", &app), "OK");
    // Typed without dashes, in capitals, as a phone's keyboard may.
    assert_eq!(
        imap_login(
            p.imap,
            "me@example.test",
            &app.replace('-', "").to_uppercase()
        ),
        "OK"
    );
    assert_eq!(pop3(p.pop3, "me@example.test", &app), "+OK");
    assert_eq!(smtp(p.submission, "me@example.test", &app), "235");
    assert_eq!(dav(p.https, "me@example.test", &app), "207");
    // Nor ManageSieve, where a script could send all mail away; the password does.
    assert_eq!(managesieve(p.managesieve, "me@example.test", &app), "False");
    assert_eq!(
        managesieve(p.managesieve, "me@example.test", CHANGED),
        "True"
    );
    // An app password never opens the page where passwords are changed.
    let web = Web::new(w.path(), "app", p.https);
    assert_eq!(web.login("me@example.test", &app).0, 401);
    // Nor does it open another account.
    assert!(imap_login(p.imap, "kept@example.test", &app).starts_with("refused"));

    // The forwarding and the reply act on the next message: a copy kept, one forwarded,
    // one reply to the sender.
    let send = swaks(
        p.mx,
        &[
            "--from",
            "dave@sender.test",
            "--to",
            "me@example.test",
            "--h-Subject",
            "lunch?",
        ],
    );
    assert!(send.stdout.contains("250 2.0.0"), "{}", send.stdout);
    assert!(
        wait_for(Duration::from_secs(30), || received(&sink_dir).len() >= 2),
        "{}",
        server.log_text()
    );
    let sent = received(&sink_dir);
    let to = |rcpt: &str| sent.iter().find(|m| m.rcpt_to == [rcpt]);
    let forwarded = to("far@elsewhere.test").expect("the forwarded copy");
    assert!(forwarded.content.contains("Subject: lunch?"));
    let reply = to("dave@sender.test").expect("the vacation reply");
    assert!(reply.content.contains("Subject: Away"), "{}", reply.content);
    assert!(reply.content.contains("Back on Monday."));
    let count = python(&format!(
        "import imaplib,ssl\nc=imaplib.IMAP4('127.0.0.1',{})\nc.starttls(ssl._create_unverified_context())\nc.login('me@example.test',{CHANGED:?})\nprint(c.select('INBOX')[1][0].decode())",
        p.imap
    ));
    assert_eq!(count, "1", "the copy is kept");

    // Revoked in the browser: refused at once on IMAP.
    let (report, _) = common::browser_peer_with(
        &w,
        "self_service_browser.js",
        p.https,
        &server,
        FIRST,
        &["me@example.test", "revoke", CHANGED],
    );
    assert!(report.get("error").is_none(), "{report}");
    assert_eq!(report["old_password"], "/admin/login", "{report}");
    assert_eq!(report["landed"], "/admin/me", "{report}");
    assert_eq!(report["revoked"], "App password revoked.", "{report}");
    assert_eq!(report["left"], 0, "{report}");
    assert!(imap_login(p.imap, "me@example.test", &app).starts_with("refused"));
    assert_eq!(imap_login(p.imap, "me@example.test", CHANGED), "OK");

    // One more app password, made without the browser (the form asks for the password).
    let web = Web::new(w.path(), "tablet", p.https);
    assert_eq!(web.login("me@example.test", CHANGED).0, 303);
    let (_, page) = web.call("/admin/me", &[]);
    let csrf = Web::csrf(&page);
    let (status, page) = web.call(
        "/admin/me/app-passwords",
        &[("csrf", &csrf), ("name", "tablet"), ("current", "wrong")],
    );
    assert_eq!(status, 422);
    assert!(page.contains("The current password is wrong."));
    let (status, made) = web.call(
        "/admin/me/app-passwords",
        &[("csrf", &csrf), ("name", "tablet"), ("current", CHANGED)],
    );
    assert_eq!(status, 200, "{made}");
    let tablet = new_app_password(&made);
    assert_eq!(imap_login(p.imap, "me@example.test", &tablet), "OK");
    // A session alone (a stolen cookie) does not send the mail away.
    let (status, page) = web.call(
        "/admin/me/forwarding",
        &[
            ("csrf", &csrf),
            ("to", "thief@elsewhere.test"),
            ("current", ""),
        ],
    );
    assert_eq!(status, 422, "{page}");
    // A reply longer than a Sieve string can hold is refused when saved, not dropped at
    // delivery (2,100 "é" are 4,200 bytes).
    let long = "é".repeat(2_100);
    let (status, page) = web.call(
        "/admin/me/vacation",
        &[("csrf", &csrf), ("on", "on"), ("body", &long)],
    );
    assert_eq!(status, 422, "{page}");
    assert!(page.contains("at most 4000 bytes"), "{page}");
    assert!(
        page.contains("Back on Monday."),
        "the saved reply stays: {page}"
    );

    // The operator resets the password in the spec: the new hash wins over the owner's,
    // and the app passwords made under the old one end with it.
    let reset = spec(&p, dns).replacen(
        &format!("password = {{ hash = \"{TEST_HASH}\" }}\nself_service"),
        &format!(
            "password = {{ hash = \"{}\" }}\nself_service",
            ferrymail::password::hash("an-operator-reset").unwrap()
        ),
        1,
    );
    w.write_spec(&reset);
    assert!(
        wait_for(Duration::from_secs(30), || imap_login(
            p.imap,
            "me@example.test",
            "an-operator-reset"
        ) == "OK"),
        "{}",
        server.log_text()
    );
    assert!(imap_login(p.imap, "me@example.test", CHANGED).starts_with("refused"));
    assert!(imap_login(p.imap, "me@example.test", &tablet).starts_with("refused"));
    // The reset ended the page's sessions too.
    assert_eq!(web.call("/admin/me", &[]).0, 303);
}

/// The app password a page shows once.
fn new_app_password(page: &str) -> String {
    let at = page
        .find("id=\"app-password\"")
        .expect("the new app password");
    page[at..]
        .split('>')
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn what_the_spec_keeps_or_a_stranger_tries_is_refused() {
    let (w, p, _, server, _dns) = start();

    // An account without self-service sees its page, no forms; a change is refused.
    let kept = Web::new(w.path(), "kept", p.https);
    assert_eq!(
        kept.login("kept@example.test", FIRST),
        (303, format!("https://127.0.0.1:{}/admin/me", p.https))
    );
    let (status, page) = kept.call("/admin/me", &[]);
    assert_eq!(status, 200);
    assert!(!page.contains("password-form") && !page.contains("app-password-form"));
    assert!(page.contains("Mail app settings"));
    let csrf = Web::csrf(&page);
    let (status, _) = kept.call(
        "/admin/me/password",
        &[
            ("csrf", &csrf),
            ("current", FIRST),
            ("new", CHANGED),
            ("again", CHANGED),
        ],
    );
    assert_eq!(status, 403);
    assert_eq!(imap_login(p.imap, "kept@example.test", FIRST), "OK");

    // With the main password kept to the web: the page opens, IMAP does not.
    let web = Web::new(w.path(), "web", p.https);
    assert_eq!(web.login("web@example.test", FIRST).0, 303);
    assert!(imap_login(p.imap, "web@example.test", FIRST).starts_with("refused"));
    let (_, page) = web.call("/admin/me", &[]);
    assert!(page.contains("mail apps log in with an app password"));
    let csrf = Web::csrf(&page);
    let (status, made) = web.call(
        "/admin/me/app-passwords",
        &[("csrf", &csrf), ("name", "laptop"), ("current", FIRST)],
    );
    assert_eq!(status, 200, "{made}");
    let app = new_app_password(&made);
    assert_eq!(imap_login(p.imap, "web@example.test", &app), "OK");
    // The main password kept to the web does not open ManageSieve either.
    assert_eq!(
        managesieve(p.managesieve, "web@example.test", FIRST),
        "False"
    );

    // Without the session's CSRF token, nothing; an unknown app password, 404.
    let (status, _) = web.call(
        "/admin/me/app-passwords",
        &[("csrf", "forged"), ("name", "x")],
    );
    assert_eq!(status, 403);
    let (status, _) = web.call("/admin/me/app-passwords/0000/revoke", &[("csrf", &csrf)]);
    assert_eq!(status, 404);
    // Hostile names and forwards are refused with the reason; the settings stay.
    for (path, form, why) in [
        (
            "/admin/me/app-passwords",
            vec![("name", "x".repeat(10_000))],
            "1 to 60 characters",
        ),
        (
            "/admin/me/app-passwords",
            vec![("name", "a\u{7}b".to_string())],
            "1 to 60 characters",
        ),
    ] {
        let mut fields: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fields.push(("csrf", &csrf));
        let (status, page) = web.call(path, &fields);
        assert_eq!(status, 422, "{page}");
        assert!(page.contains(why), "{page}");
    }
    // The page of someone not logged in is the login.
    let stranger = Web::new(w.path(), "stranger", p.https);
    let (status, _) = stranger.call("/admin/me/app-passwords", &[("csrf", "x"), ("name", "x")]);
    assert_eq!(status, 303);
    // A session keeps making app passwords only so fast.
    let mut last = 0;
    for n in 0..25 {
        let (status, _) = web.call(
            "/admin/me/app-passwords",
            &[
                ("csrf", &csrf),
                ("name", &format!("device {n}")),
                ("current", FIRST),
            ],
        );
        last = status;
        if status == 429 {
            break;
        }
    }
    assert_eq!(last, 429);
    drop(server);
}
