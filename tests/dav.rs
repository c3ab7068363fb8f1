//! CalDAV and CardDAV on the real server: the Python caldav library as a client, and curl
//! for what clients do on their own (well-known redirects, OPTIONS) and for every
//! refusal a client must be able to read (401, 403 with its precondition, 412, 507).

mod common;

use std::process::Command;

use common::{Process, TEST_HASH, Workspace, free_port};

const ME: &str = "me@example.test";

/// A server with https, caldav and carddav listeners and the account `ME` (password
/// "quickstart", quota `quota`).
struct Dav {
    w: Workspace,
    process: Process,
    https: u16,
    caldav: u16,
    carddav: u16,
}

impl Dav {
    fn start(quota: &str) -> Dav {
        Dav::start_with(quota, "")
    }

    /// `mailbox` adds fields to the account's mailbox table.
    fn start_with(quota: &str, mailbox: &str) -> Dav {
        let (https, caldav, carddav) = (free_port(), free_port(), free_port());
        let w = Workspace::new(&spec(https, caldav, carddav, quota, mailbox));
        let process = w.serve(carddav);
        Dav {
            w,
            process,
            https,
            caldav,
            carddav,
        }
    }

    fn restart(&mut self) {
        self.process.terminate();
        self.process = self.w.serve(self.carddav);
    }

    fn ca(&self) -> String {
        self.w
            .data_dir()
            .join("self-signed.crt")
            .display()
            .to_string()
    }

    /// `curl -X METHOD` as `ME` against the caldav listener: (status, headers, body).
    fn call(&self, method: &str, path: &str, headers: &[&str], body: &str) -> Reply {
        self.call_as(Some("quickstart"), self.caldav, method, path, headers, body)
    }

    fn call_as(
        &self,
        password: Option<&str>,
        port: u16,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &str,
    ) -> Reply {
        let login = password.map(|p| (ME, p));
        self.request(login, port, method, path, headers, body)
    }

    /// As another account (password "quickstart"), on the caldav listener.
    fn call_by(&self, user: &str, method: &str, path: &str, headers: &[&str], body: &str) -> Reply {
        let login = Some((user, "quickstart"));
        self.request(login, self.caldav, method, path, headers, body)
    }

    fn request(
        &self,
        login: Option<(&str, &str)>,
        port: u16,
        method: &str,
        path: &str,
        headers: &[&str],
        body: &str,
    ) -> Reply {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "20", "-D", "-", "--cacert"])
            .arg(self.ca())
            .args(["-X", method]);
        if let Some((user, password)) = login {
            cmd.args(["-u", &format!("{user}:{password}")]);
        }
        for h in headers {
            cmd.args(["-H", h]);
        }
        // A long body goes through a file: one argument may hold 128 KiB at most.
        if body.len() > 64 * 1024 {
            let file = self.w.path().join("body");
            std::fs::write(&file, body).expect("body file");
            cmd.args(["--data-binary", &format!("@{}", file.display())]);
        } else if !body.is_empty() {
            cmd.args(["--data-binary", body]);
        }
        let out = cmd
            .arg(format!("https://localhost:{port}{path}"))
            .output()
            .expect("curl");
        let mut text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
        // curl shows the interim "100 Continue" of a large body before the answer.
        while text.starts_with("HTTP/1.1 1") {
            text = text
                .split_once("\n\n")
                .map_or("", |(_, rest)| rest)
                .to_string();
        }
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let status = head
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Reply {
            status,
            head: head.to_lowercase(),
            body: body.to_string(),
        }
    }
}

fn spec(https: u16, caldav: u16, carddav: u16, quota: &str, mailbox: &str) -> String {
    format!(
        "[listeners]\nhttps = \"127.0.0.1:{https}\"\ncaldav = \"127.0.0.1:{caldav}\"\n\
         carddav = \"127.0.0.1:{carddav}\"\n\n[tls]\nmode = \"self-signed\"\n\n\
         [domains.\"example.test\".aliases.me]\n\
         mailbox = {{ password = {{ hash = \"{TEST_HASH}\" }}, quota = \"{quota}\"{mailbox} }}\n"
    )
}

struct Reply {
    status: u16,
    /// Lower-cased header lines.
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
    }
}

const CAL: &str = "/dav/calendars/me@example.test/calendar";
const BOOK: &str = "/dav/addressbooks/me@example.test/contacts";

fn event(uid: &str, summary: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\n\
         DTSTAMP:20260101T000000Z\r\nDTSTART:20260301T100000Z\r\nDURATION:PT1H\r\n\
         SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

const ICS: &str = "Content-Type: text/calendar; charset=utf-8";
const VCF: &str = "Content-Type: text/vcard; charset=utf-8";

#[test]
fn the_python_caldav_library_syncs_calendars_events_and_todos() {
    let dav = Dav::start("1GiB");
    // scripts/test installs caldav in a venv of its own (see there why).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("timeout")
        .arg("120")
        .arg(root.join("target/dav-venv/bin/python"))
        .arg(root.join("tests/peers/caldav_client.py"))
        .arg(format!("https://localhost:{}/", dav.caldav))
        .args([ME, "quickstart", &dav.ca()])
        .current_dir(dav.w.path())
        .output()
        .expect("target/dav-venv/bin/python (scripts/test makes it)");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("all done"),
        "{stdout}\n{stderr}"
    );
    // The same tree answers on the https listener under /dav/.
    let reply = dav.call_as(
        Some("quickstart"),
        dav.https,
        "PROPFIND",
        "/dav/calendars/me@example.test/",
        &["Depth: 1"],
        "",
    );
    assert_eq!(reply.status, 207, "{}", reply.body);
    assert!(
        reply
            .body
            .contains("<d:displayname>Calendar</d:displayname>")
    );
    assert!(
        !reply.body.contains("/work/"),
        "the deleted calendar is gone"
    );
}

#[test]
fn discovery_starts_anywhere_and_needs_a_login() {
    let dav = Dav::start("1GiB");
    for (port, path) in [
        (dav.caldav, "/.well-known/caldav"),
        (dav.carddav, "/.well-known/carddav"),
        (dav.https, "/.well-known/caldav"),
    ] {
        for method in ["GET", "PROPFIND"] {
            let reply = dav.call_as(None, port, method, path, &[], "");
            assert_eq!(reply.status, 301, "{method} {path}");
            assert_eq!(reply.header("location").as_deref(), Some("/dav/"));
        }
    }
    let options = dav.call_as(None, dav.carddav, "OPTIONS", "/dav/", &[], "");
    assert_eq!(options.status, 200);
    let classes = options.header("dav").unwrap_or_default();
    for class in ["1", "3", "calendar-access", "addressbook"] {
        assert!(classes.split(", ").any(|c| c == class), "{classes}");
    }
    assert!(
        !classes.split(", ").any(|c| c == "2"),
        "no locks, no class 2"
    );
    let anonymous = dav.call_as(None, dav.caldav, "PROPFIND", "/", &["Depth: 0"], "");
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous
            .header("www-authenticate")
            .unwrap_or_default()
            .starts_with("basic")
    );
    let wrong = dav.call_as(Some("nope"), dav.caldav, "PROPFIND", "/", &["Depth: 0"], "");
    assert_eq!(wrong.status, 401);
    // From the root to the homes, as a client discovers them (RFC 5397, 4791 §6.2.1).
    let root = dav.call(
        "PROPFIND",
        "/",
        &["Depth: 0"],
        "<d:propfind xmlns:d=\"DAV:\"><d:prop><d:current-user-principal/><d:nope/></d:prop></d:propfind>",
    );
    assert_eq!(root.status, 207);
    assert!(
        root.body.contains(
            "<d:current-user-principal><d:href>/dav/principals/me@example.test/</d:href>"
        )
    );
    assert!(
        root.body
            .contains("<d:nope/></d:prop><d:status>HTTP/1.1 404 Not Found")
    );
    let principal = dav.call(
        "PROPFIND",
        "/dav/principals/me@example.test/",
        &["Depth: 0"],
        "<d:propfind xmlns:d=\"DAV:\" xmlns:c=\"urn:ietf:params:xml:ns:caldav\" \
         xmlns:r=\"urn:ietf:params:xml:ns:carddav\"><d:prop><c:calendar-home-set/>\
         <r:addressbook-home-set/></d:prop></d:propfind>",
    );
    assert!(
        principal
            .body
            .contains("<cal:calendar-home-set><d:href>/dav/calendars/me@example.test/</d:href>")
    );
    assert!(principal.body.contains(
        "<card:addressbook-home-set><d:href>/dav/addressbooks/me@example.test/</d:href>"
    ));
    // Another account's tree is not ours to read.
    let theirs = dav.call(
        "PROPFIND",
        "/dav/calendars/you@example.test/",
        &["Depth: 0"],
        "",
    );
    assert_eq!(theirs.status, 403);
    let infinite = dav.call("PROPFIND", "/dav/calendars/me@example.test/", &[], "");
    assert_eq!(infinite.status, 403);
    assert!(infinite.body.contains("propfind-finite-depth"));
}

#[test]
fn writes_are_refused_with_the_reason_a_client_can_act_on() {
    let dav = Dav::start("20KB");
    let one = event("one", "First");
    let created = dav.call(
        "PUT",
        &format!("{CAL}/one.ics"),
        &[ICS, "If-None-Match: *"],
        &one,
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let etag = created.header("etag").expect("an ETag on PUT");
    let again = dav.call(
        "PUT",
        &format!("{CAL}/one.ics"),
        &[ICS, "If-None-Match: *"],
        &one,
    );
    assert_eq!(again.status, 412);
    let stale = dav.call(
        "PUT",
        &format!("{CAL}/one.ics"),
        &[ICS, "If-Match: \"stale\""],
        &event("one", "Changed"),
    );
    assert_eq!(stale.status, 412);
    let fresh = dav.call(
        "PUT",
        &format!("{CAL}/one.ics"),
        &[ICS, &format!("If-Match: {etag}")],
        &event("one", "Changed"),
    );
    assert_eq!(fresh.status, 204);
    let get = dav.call("GET", &format!("{CAL}/one.ics"), &[], "");
    assert!(get.body.contains("SUMMARY:Changed"));
    assert_eq!(get.header("etag"), fresh.header("etag"));
    let unchanged = dav.call(
        "GET",
        &format!("{CAL}/one.ics"),
        &[&format!("If-None-Match: {}", get.header("etag").unwrap())],
        "",
    );
    assert_eq!(unchanged.status, 304);

    let precondition = |reply: &Reply, ns_prefix: &str, name: &str| {
        assert_eq!(reply.status, 403, "{}", reply.body);
        assert!(
            reply.body.contains(&format!("<{ns_prefix}:{name}")),
            "{name}: {}",
            reply.body
        );
    };
    let same_uid = dav.call("PUT", &format!("{CAL}/two.ics"), &[ICS], &one);
    precondition(&same_uid, "cal", "no-uid-conflict");
    assert!(
        same_uid
            .body
            .contains(&format!("<d:href>{CAL}/one.ics</d:href>"))
    );
    precondition(
        &dav.call("PUT", &format!("{CAL}/bad.ics"), &[ICS], "not a calendar"),
        "cal",
        "valid-calendar-data",
    );
    precondition(
        &dav.call(
            "PUT",
            &format!("{CAL}/bad.ics"),
            &["Content-Type: text/plain"],
            &event("p", "x"),
        ),
        "cal",
        "supported-calendar-data",
    );
    let scheduling = event("m", "x").replace("VERSION:2.0", "VERSION:2.0\r\nMETHOD:REQUEST");
    precondition(
        &dav.call("PUT", &format!("{CAL}/m.ics"), &[ICS], &scheduling),
        "cal",
        "valid-calendar-object-resource",
    );
    precondition(
        &dav.call("PUT", &format!("{BOOK}/c.vcf"), &[VCF], &event("c", "x")),
        "card",
        "valid-address-data",
    );
    let missing = dav.call(
        "PUT",
        "/dav/calendars/me@example.test/nope/x.ics",
        &[ICS],
        &one,
    );
    assert_eq!(missing.status, 409, "no such calendar");

    // The quota is the mailbox's: 20 KB, and one object of 25 KB does not fit.
    let big = event("big", &"x".repeat(25_000));
    let full = dav.call("PUT", &format!("{CAL}/big.ics"), &[ICS], &big);
    assert_eq!(full.status, 507, "{}", full.body);
    assert!(full.body.contains("quota-not-exceeded"));

    let deleted = dav.call(
        "DELETE",
        &format!("{CAL}/one.ics"),
        &["If-Match: \"stale\""],
        "",
    );
    assert_eq!(deleted.status, 412);
    assert_eq!(
        dav.call("DELETE", &format!("{CAL}/one.ics"), &[], "")
            .status,
        204
    );
    assert_eq!(
        dav.call("DELETE", &format!("{CAL}/one.ics"), &[], "")
            .status,
        404
    );

    // MKCALENDAR with properties, then PROPPATCH: dead properties kept, protected refused.
    let made = dav.call(
        "MKCALENDAR",
        "/dav/calendars/me@example.test/tasks/",
        &[],
        "<c:mkcalendar xmlns:d=\"DAV:\" xmlns:c=\"urn:ietf:params:xml:ns:caldav\"><d:set><d:prop>\
         <d:displayname>Tasks</d:displayname><c:supported-calendar-component-set>\
         <c:comp name=\"VTODO\"/></c:supported-calendar-component-set></d:prop></d:set></c:mkcalendar>",
    );
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(
        dav.call(
            "MKCALENDAR",
            "/dav/calendars/me@example.test/tasks/",
            &[],
            ""
        )
        .status,
        405
    );
    precondition(
        &dav.call(
            "PUT",
            "/dav/calendars/me@example.test/tasks/e.ics",
            &[ICS],
            &event("e", "x"),
        ),
        "cal",
        "supported-calendar-component",
    );
    let patch = dav.call(
        "PROPPATCH",
        "/dav/calendars/me@example.test/tasks/",
        &[],
        "<d:propertyupdate xmlns:d=\"DAV:\" xmlns:a=\"http://apple.com/ns/ical/\"><d:set><d:prop>\
         <a:calendar-color>#00ff00</a:calendar-color></d:prop></d:set></d:propertyupdate>",
    );
    assert!(patch.body.contains("HTTP/1.1 200 OK"), "{}", patch.body);
    let protected = dav.call(
        "PROPPATCH",
        "/dav/calendars/me@example.test/tasks/",
        &[],
        "<d:propertyupdate xmlns:d=\"DAV:\"><d:set><d:prop><d:getetag>x</d:getetag>\
         <d:displayname>Renamed</d:displayname></d:prop></d:set></d:propertyupdate>",
    );
    assert!(
        protected.body.contains("HTTP/1.1 403 Forbidden"),
        "{}",
        protected.body
    );
    assert!(protected.body.contains("HTTP/1.1 424 Failed Dependency"));
    let props = dav.call(
        "PROPFIND",
        "/dav/calendars/me@example.test/tasks/",
        &["Depth: 0"],
        "<d:propfind xmlns:d=\"DAV:\" xmlns:a=\"http://apple.com/ns/ical/\"><d:prop>\
         <a:calendar-color/><d:displayname/></d:prop></d:propfind>",
    );
    assert!(
        props
            .body
            .contains("<ical:calendar-color>#00ff00</ical:calendar-color>")
    );
    assert!(
        props.body.contains("<d:displayname>Tasks</d:displayname>"),
        "all or nothing"
    );
}

fn vcard(uid: &str, name: &str, email: &str, version: &str) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:{version}\r\nUID:{uid}\r\nFN:{name}\r\nN:{name};;;;\r\n\
         EMAIL;TYPE=work:{email}\r\nEND:VCARD\r\n"
    )
}

#[test]
fn address_books_answer_queries_multigets_and_sync_across_a_restart() {
    let mut dav = Dav::start("1GiB");
    let card = |dav: &Dav, uid: &str, name: &str, version: &str| {
        let reply = dav.call_as(
            Some("quickstart"),
            dav.carddav,
            "PUT",
            &format!("{BOOK}/{uid}.vcf"),
            &[VCF],
            &vcard(uid, name, &format!("{uid}@example.net"), version),
        );
        assert_eq!(reply.status, 201, "{}", reply.body);
    };
    card(&dav, "ann", "Ann Archer", "3.0");
    card(&dav, "bob", "Bob Baker", "4.0");
    let report = |dav: &Dav, body: &str| {
        dav.call_as(
            Some("quickstart"),
            dav.carddav,
            "REPORT",
            &format!("{BOOK}/"),
            &["Depth: 1"],
            body,
        )
    };
    let query = report(
        &dav,
        "<r:addressbook-query xmlns:d=\"DAV:\" xmlns:r=\"urn:ietf:params:xml:ns:carddav\">\
         <d:prop><d:getetag/><r:address-data/></d:prop><r:filter>\
         <r:prop-filter name=\"FN\"><r:text-match match-type=\"starts-with\">bob</r:text-match>\
         </r:prop-filter></r:filter></r:addressbook-query>",
    );
    assert_eq!(query.status, 207);
    assert!(
        query.body.contains("FN:Bob Baker") && !query.body.contains("Ann"),
        "{}",
        query.body
    );
    let multiget = report(
        &dav,
        &format!(
            "<r:addressbook-multiget xmlns:d=\"DAV:\" xmlns:r=\"urn:ietf:params:xml:ns:carddav\">\
             <d:prop><r:address-data/></d:prop><d:href>{BOOK}/ann.vcf</d:href>\
             <d:href>{BOOK}/gone.vcf</d:href></r:addressbook-multiget>"
        ),
    );
    assert!(multiget.body.contains("FN:Ann Archer"));
    assert!(multiget.body.contains(&format!(
        "<d:href>{BOOK}/gone.vcf</d:href><d:status>HTTP/1.1 404 Not Found"
    )));
    let sync = |dav: &Dav, token: &str| {
        report(
            dav,
            &format!(
                "<d:sync-collection xmlns:d=\"DAV:\"><d:sync-token>{token}</d:sync-token>\
                 <d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"
            ),
        )
    };
    let first = sync(&dav, "");
    assert_eq!(first.body.matches("<d:response>").count(), 2);
    let token = token_of(&first.body);

    // The token outlives the process: after a restart it still names this state.
    dav.restart();
    let delete = dav.call_as(
        Some("quickstart"),
        dav.carddav,
        "DELETE",
        &format!("{BOOK}/ann.vcf"),
        &[],
        "",
    );
    assert_eq!(delete.status, 204);
    card(&dav, "cy", "Cy Cooper", "3.0");
    let later = sync(&dav, &token);
    assert_eq!(later.status, 207, "{}", later.body);
    assert!(later.body.contains(&format!(
        "<d:href>{BOOK}/ann.vcf</d:href><d:status>HTTP/1.1 404 Not Found"
    )));
    assert!(
        later
            .body
            .contains(&format!("<d:href>{BOOK}/cy.vcf</d:href>"))
    );
    assert!(!later.body.contains("bob.vcf"), "{}", later.body);
    let bogus = sync(&dav, "urn:ferrymail:sync:0000:1");
    assert_eq!(bogus.status, 403);
    assert!(bogus.body.contains("valid-sync-token"));
    // getctag moves with every change, for Apple's clients.
    let ctag = dav.call_as(
        Some("quickstart"),
        dav.carddav,
        "PROPFIND",
        &format!("{BOOK}/"),
        &["Depth: 0"],
        "<d:propfind xmlns:d=\"DAV:\" xmlns:cs=\"http://calendarserver.org/ns/\"><d:prop>\
         <cs:getctag/></d:prop></d:propfind>",
    );
    assert!(ctag.body.contains(&format!(
        "<cs:getctag>{}</cs:getctag>",
        token_of(&later.body)
    )));
}

#[test]
fn hostile_bodies_get_clear_refusals() {
    let dav = Dav::start("1GiB");
    let deep = "<d:propfind xmlns:d=\"DAV:\">".repeat(10_000);
    let reply = dav.call("PROPFIND", &format!("{CAL}/"), &["Depth: 0"], &deep);
    assert_eq!(reply.status, 400, "{}", reply.body);
    let entity = "<?xml version=\"1.0\"?><!DOCTYPE d [<!ENTITY a \"aaaaaaaaaa\">]>\
                  <d:propfind xmlns:d=\"DAV:\"><d:prop>&a;</d:prop></d:propfind>";
    assert_eq!(
        dav.call("PROPFIND", &format!("{CAL}/"), &["Depth: 0"], entity)
            .status,
        400
    );
    // A body past the resource size limit is cut off, not read whole.
    let path = dav.w.path().join("huge.ics");
    std::fs::write(&path, vec![b'x'; 12 * 1024 * 1024]).unwrap();
    let huge = dav.call(
        "PUT",
        &format!("{CAL}/huge.ics"),
        &[ICS],
        &format!("@{}", path.display()),
    );
    assert_eq!(huge.status, 403);
    assert!(huge.body.contains("max-resource-size"));
    let rss = dav.process.memory_kib("VmHWM");
    assert!(rss < 200 * 1024, "peak RSS {rss} KiB");
    let fine = dav.call("PROPFIND", &format!("{CAL}/"), &["Depth: 0"], "");
    assert_eq!(fine.status, 207);
}

/// vdirsyncer (Debian) between local directories and the server: both ways, a run that
/// changes nothing, then a change and a deletion on each side.
#[test]
fn vdirsyncer_syncs_a_calendar_and_an_address_book_both_ways() {
    let dav = Dav::start("1GiB");
    let dir = dav.w.path().join("vdir");
    let (cal, book) = (dir.join("cal"), dir.join("book"));
    std::fs::create_dir_all(&cal).unwrap();
    std::fs::create_dir_all(&book).unwrap();
    let storage = |name: &str, kind: &str, port: u16, path: &str| {
        format!(
            "[storage {name}]\ntype = \"{kind}\"\nurl = \"https://localhost:{port}{path}/\"\n\
             username = \"{ME}\"\npassword = \"quickstart\"\nverify = \"{}\"\n\n",
            dav.ca()
        )
    };
    let config = dir.join("config");
    std::fs::write(
        &config,
        format!(
            "[general]\nstatus_path = \"{status}\"\n\n\
             [pair cal]\na = \"cal_local\"\nb = \"cal_remote\"\ncollections = null\n\n\
             [storage cal_local]\ntype = \"filesystem\"\npath = \"{cal}\"\nfileext = \".ics\"\n\n\
             {cal_remote}\
             [pair book]\na = \"book_local\"\nb = \"book_remote\"\ncollections = null\n\n\
             [storage book_local]\ntype = \"filesystem\"\npath = \"{book}\"\nfileext = \".vcf\"\n\n\
             {book_remote}",
            status = dir.join("status").display(),
            cal = cal.display(),
            book = book.display(),
            cal_remote = storage("cal_remote", "caldav", dav.caldav, CAL),
            book_remote = storage("book_remote", "carddav", dav.carddav, BOOK),
        ),
    )
    .unwrap();
    let vdirsyncer = |args: &[&str]| {
        let out = Command::new("vdirsyncer")
            .arg("-c")
            .arg(&config)
            .args(args)
            .output()
            .expect("vdirsyncer (scripts/test installs it)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "vdirsyncer {args:?}:\n{text}");
        text
    };
    let files = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    // One event on the server, one on disk; one card on each side.
    assert_eq!(
        dav.call(
            "PUT",
            &format!("{CAL}/remote.ics"),
            &[ICS],
            &event("remote", "Server side")
        )
        .status,
        201
    );
    std::fs::write(cal.join("local.ics"), event("local", "Disk side")).unwrap();
    std::fs::write(
        book.join("ann.vcf"),
        vcard("ann", "Ann Archer", "ann@x.test", "3.0"),
    )
    .unwrap();
    assert_eq!(
        dav.call_as(
            Some("quickstart"),
            dav.carddav,
            "PUT",
            &format!("{BOOK}/bob.vcf"),
            &[VCF],
            &vcard("bob", "Bob Baker", "bob@x.test", "4.0"),
        )
        .status,
        201
    );
    vdirsyncer(&["discover"]);
    let first = vdirsyncer(&["sync"]);
    for (item, to) in [
        ("local", "cal_remote"),
        ("ann", "book_remote"),
        ("remote", "cal_local"),
        ("bob", "book_local"),
    ] {
        assert!(first.contains(&format!("item {item} to {to}")), "{first}");
    }
    assert_eq!(files(&cal).len(), 2);
    assert_eq!(files(&book).len(), 2);
    let local = dav.call("GET", &format!("{CAL}/local.ics"), &[], "");
    assert!(local.body.contains("SUMMARY:Disk side"), "{}", local.body);
    // Nothing changed: nothing moves.
    let idle = vdirsyncer(&["sync"]);
    assert!(
        !idle.contains("Copying") && !idle.contains("Deleting"),
        "{idle}"
    );
    // A change and a deletion on each side.
    std::fs::write(cal.join("local.ics"), event("local", "Disk side, moved")).unwrap();
    std::fs::remove_file(book.join("ann.vcf")).unwrap();
    let remote = dav.call("GET", &format!("{CAL}/remote.ics"), &[], "");
    let etag = remote.header("etag").unwrap();
    assert_eq!(
        dav.call(
            "PUT",
            &format!("{CAL}/remote.ics"),
            &[ICS, &format!("If-Match: {etag}")],
            &event("remote", "Server side, moved"),
        )
        .status,
        204
    );
    assert_eq!(
        dav.call_as(
            Some("quickstart"),
            dav.carddav,
            "DELETE",
            &format!("{BOOK}/bob.vcf"),
            &[],
            ""
        )
        .status,
        204
    );
    let both = vdirsyncer(&["sync"]);
    for (item, to) in [("local", "cal_remote"), ("remote", "cal_local")] {
        assert!(both.contains(&format!("item {item} to {to}")), "{both}");
    }
    for (item, from) in [("ann", "book_remote"), ("bob", "book_local")] {
        assert!(
            both.contains(&format!("Deleting item {item} from {from}")),
            "{both}"
        );
    }
    assert!(files(&book).is_empty());
    let on_disk: String = files(&cal)
        .iter()
        .map(|f| std::fs::read_to_string(cal.join(f)).unwrap())
        .collect();
    assert!(on_disk.contains("Server side, moved"), "{on_disk}");
    assert!(
        dav.call("GET", &format!("{CAL}/local.ics"), &[], "")
            .body
            .contains("Disk side, moved")
    );
    assert_eq!(
        dav.call_as(
            Some("quickstart"),
            dav.carddav,
            "GET",
            &format!("{BOOK}/ann.vcf"),
            &[],
            ""
        )
        .status,
        404
    );
    let last = vdirsyncer(&["sync"]);
    assert!(
        !last.contains("Copying") && !last.contains("Deleting"),
        "{last}"
    );
}

/// Calendars and address books the spec declares are there on first use; one dropped
/// from the spec keeps its events, and the plan says so.
#[test]
fn declared_calendars_appear_and_stay_when_dropped() {
    let declared = ", calendars = [\"Work\", \"Team Trips\"], address_books = [\"Family\"]";
    let dav = Dav::start_with("1GiB", declared);
    let home = dav.call(
        "PROPFIND",
        "/dav/calendars/me@example.test/",
        &["Depth: 1"],
        "",
    );
    for (href, name) in [
        ("calendar", "Calendar"),
        ("work", "Work"),
        ("team-trips", "Team Trips"),
    ] {
        assert!(
            home.body.contains(&format!(
                "<d:href>/dav/calendars/me@example.test/{href}/</d:href>"
            )) && home
                .body
                .contains(&format!("<d:displayname>{name}</d:displayname>")),
            "{href}: {}",
            home.body
        );
    }
    let books = dav.call(
        "PROPFIND",
        "/dav/addressbooks/me@example.test/",
        &["Depth: 1"],
        "",
    );
    assert!(
        books
            .body
            .contains("<d:href>/dav/addressbooks/me@example.test/family/</d:href>")
    );
    let put = dav.call(
        "PUT",
        "/dav/calendars/me@example.test/work/plan.ics",
        &[ICS],
        &event("plan", "Planning"),
    );
    assert_eq!(put.status, 201);

    // Dropped from the spec: the plan says it stays, and it does.
    std::fs::write(
        dav.w.path().join("ferrymail.toml"),
        format!(
            "{}{}",
            common::header(),
            spec(
                dav.https,
                dav.caldav,
                dav.carddav,
                "1GiB",
                ", calendars = [\"Team Trips\"], address_books = [\"Family\"]"
            )
        ),
    )
    .unwrap();
    let plan = dav.w.run(&["plan"]);
    assert!(
        plan.stdout
            .contains("\"Work\" is no longer declared: it stays"),
        "{}",
        plan.stdout
    );
    let applied = common::wait_for(std::time::Duration::from_secs(30), || {
        dav.w.run(&["plan", "--detailed-exitcode"]).code == 0
    });
    assert!(applied, "the server applies the changed spec");
    let kept = dav.call(
        "GET",
        "/dav/calendars/me@example.test/work/plan.ics",
        &[],
        "",
    );
    assert_eq!(kept.status, 200);
    assert!(kept.body.contains("SUMMARY:Planning"));
    // Validation: two names with one URL are refused where they are written.
    std::fs::write(
        dav.w.path().join("ferrymail.toml"),
        format!(
            "{}{}",
            common::header(),
            spec(1, 2, 3, "1GiB", ", calendars = [\"Work\", \"work\"]")
        ),
    )
    .unwrap();
    let refused = dav.w.run(&["validate"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("ferrymail.toml:15:")
            && refused
                .stderr
                .contains("\"work\" has the same URL (…/work/)"),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
}

#[test]
fn resources_are_copied_and_moved_within_the_account() {
    let dav = Dav::start("1MB");
    let mkcal = dav.call(
        "MKCALENDAR",
        "/dav/calendars/me@example.test/work/",
        &[],
        "",
    );
    assert_eq!(mkcal.status, 201, "{}", mkcal.body);
    let put = dav.call(
        "PUT",
        &format!("{CAL}/a.ics"),
        &[ICS],
        &event("a", "Moving"),
    );
    assert_eq!(put.status, 201);
    let token = |path: &str| {
        let reply = dav.call(
            "PROPFIND",
            path,
            &["Depth: 0"],
            "<d:propfind xmlns:d=\"DAV:\"><d:prop><d:sync-token/></d:prop></d:propfind>",
        );
        let body = reply.body;
        let start = body.find("<d:sync-token>").expect("a sync-token") + 14;
        body[start..start + body[start..].find('<').unwrap()].to_string()
    };
    let before = token(&format!("{CAL}/"));
    // Renamed in its calendar: the UID goes with it, the old name is gone.
    let destination = |path: &str| format!("Destination: https://localhost:{}{path}", dav.caldav);
    let renamed = dav.call(
        "MOVE",
        &format!("{CAL}/a.ics"),
        &[&destination(&format!("{CAL}/b.ics"))],
        "",
    );
    assert_eq!(renamed.status, 201, "{}", renamed.body);
    assert_eq!(
        dav.call("GET", &format!("{CAL}/a.ics"), &[], "").status,
        404
    );
    assert!(
        dav.call("GET", &format!("{CAL}/b.ics"), &[], "")
            .body
            .contains("SUMMARY:Moving")
    );
    // A sync from before sees the removal and the new name.
    let sync = dav.call(
        "REPORT",
        &format!("{CAL}/"),
        &[],
        &format!(
            "<d:sync-collection xmlns:d=\"DAV:\"><d:sync-token>{before}</d:sync-token>\
             <d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"
        ),
    );
    assert!(
        sync.body.contains("a.ics") && sync.body.contains("404"),
        "{}",
        sync.body
    );
    assert!(sync.body.contains("b.ics"), "{}", sync.body);
    // Copied to another calendar: both are there, each calendar holds the UID once.
    let work = "/dav/calendars/me@example.test/work";
    let copied = dav.call(
        "COPY",
        &format!("{CAL}/b.ics"),
        &[&destination(&format!("{work}/b.ics"))],
        "",
    );
    assert_eq!(copied.status, 201, "{}", copied.body);
    assert_eq!(
        dav.call("GET", &format!("{CAL}/b.ics"), &[], "").status,
        200
    );
    assert_eq!(
        dav.call("GET", &format!("{work}/b.ics"), &[], "").status,
        200
    );
    // A copy beside itself would hold the UID twice.
    let twice = dav.call(
        "COPY",
        &format!("{CAL}/b.ics"),
        &[&destination(&format!("{CAL}/c.ics"))],
        "",
    );
    assert_eq!(twice.status, 403);
    assert!(twice.body.contains("no-uid-conflict"), "{}", twice.body);
    // Overwrite: F keeps what is there; the default replaces it.
    dav.call("PUT", &format!("{CAL}/d.ics"), &[ICS], &event("d", "Other"));
    let kept = dav.call(
        "MOVE",
        &format!("{work}/b.ics"),
        &[&destination(&format!("{CAL}/d.ics")), "Overwrite: F"],
        "",
    );
    assert_eq!(kept.status, 412);
    let replaced = dav.call(
        "MOVE",
        &format!("{CAL}/d.ics"),
        &[&destination(&format!("{work}/b.ics"))],
        "",
    );
    assert_eq!(replaced.status, 204, "{}", replaced.body);
    assert!(
        dav.call("GET", &format!("{work}/b.ics"), &[], "")
            .body
            .contains("SUMMARY:Other")
    );
    // Where it cannot go: another account, an address book, nowhere, a missing calendar.
    let theirs = dav.call(
        "COPY",
        &format!("{CAL}/b.ics"),
        &[&destination(
            "/dav/calendars/you@example.test/calendar/b.ics",
        )],
        "",
    );
    assert_eq!(theirs.status, 403);
    let book = dav.call(
        "COPY",
        &format!("{CAL}/b.ics"),
        &[&destination(&format!("{BOOK}/b.vcf"))],
        "",
    );
    assert_eq!(book.status, 403);
    assert_eq!(
        dav.call("MOVE", &format!("{CAL}/b.ics"), &[], "").status,
        400
    );
    let missing = dav.call(
        "MOVE",
        &format!("{CAL}/b.ics"),
        &[&destination("/dav/calendars/me@example.test/nope/b.ics")],
        "",
    );
    assert_eq!(missing.status, 409);
    assert_eq!(
        dav.call("GET", &format!("{CAL}/b.ics"), &[], "").status,
        200
    );
}

#[test]
fn declared_shares_let_other_mailboxes_read_or_write() {
    // me@ shares "Team" with bob@ (write) and carol@ (read); its address book with carol@.
    let others = format!(
        "\n[domains.\"example.test\".aliases.bob]\n\
         mailbox = {{ password = {{ hash = \"{TEST_HASH}\" }} }}\n\
         [domains.\"example.test\".aliases.carol]\n\
         mailbox = {{ password = {{ hash = \"{TEST_HASH}\" }} }}\n"
    );
    let shares = ", calendars = [{ name = \"Team\", share = { \"bob@example.test\" = \"write\", \
                  \"carol@example.test\" = \"read\" } }], address_books = [{ name = \"Contacts\", \
                  share = { \"Carol@Example.test\" = \"read\" } }]";
    let dav = Dav::start_with("1MB", &format!("{shares} }}{others}#"));
    let bob_home = "/dav/calendars/bob@example.test/";
    let mount = format!("{bob_home}me@example.test~team/");
    // bob@ sees it in his own home, before me@ ever logged in, with what he may do.
    let listing = dav.call_by(
        "bob@example.test",
        "PROPFIND",
        bob_home,
        &["Depth: 1"],
        "<d:propfind xmlns:d=\"DAV:\"><d:prop><d:displayname/><d:owner/>\
         <d:current-user-privilege-set/><d:resourcetype/></d:prop></d:propfind>",
    );
    assert_eq!(listing.status, 207, "{}", listing.body);
    assert!(
        listing.body.contains(&format!("<d:href>{mount}</d:href>")),
        "{}",
        listing.body
    );
    assert!(listing.body.contains("Team"), "{}", listing.body);
    assert!(
        listing.body.contains("/dav/principals/me@example.test/"),
        "the owner: {}",
        listing.body
    );
    let shared = &listing.body[listing.body.find(&format!("<d:href>{mount}")).unwrap()..];
    let shared = &shared[..shared.find("</d:response>").unwrap()];
    assert!(
        shared.contains("<d:write-content/>")
            && !shared.contains("<d:all/>")
            && !shared.contains("<d:write-properties/>"),
        "{shared}"
    );
    // He adds an event; me@ sees it in Team, with the same ETag.
    let put = dav.call_by(
        "bob@example.test",
        "PUT",
        &format!("{mount}trip.ics"),
        &[ICS],
        &event("trip", "Trip"),
    );
    assert_eq!(put.status, 201, "{}", put.body);
    let mine = dav.call(
        "GET",
        "/dav/calendars/me@example.test/team/trip.ics",
        &[],
        "",
    );
    assert_eq!(mine.status, 200);
    assert_eq!(mine.header("etag"), put.header("etag"));
    // A query through the mount answers with the mount's paths.
    let query = dav.call_by(
        "bob@example.test",
        "REPORT",
        &mount,
        &["Depth: 1"],
        "<c:calendar-query xmlns:d=\"DAV:\" xmlns:c=\"urn:ietf:params:xml:ns:caldav\">\
         <d:prop><d:getetag/></d:prop><c:filter><c:comp-filter name=\"VCALENDAR\">\
         <c:comp-filter name=\"VEVENT\"/></c:comp-filter></c:filter></c:calendar-query>",
    );
    assert!(
        query
            .body
            .contains(&format!("<d:href>{mount}trip.ics</d:href>")),
        "{}",
        query.body
    );
    // carol@ reads it, and may not change it, nor the calendar itself.
    let carol = "carol@example.test";
    let carol_mount = "/dav/calendars/carol@example.test/me@example.test~team/";
    let read = dav.call_by(carol, "GET", &format!("{carol_mount}trip.ics"), &[], "");
    assert!(read.body.contains("SUMMARY:Trip"), "{}", read.body);
    let write = dav.call_by(
        carol,
        "PUT",
        &format!("{carol_mount}x.ics"),
        &[ICS],
        &event("x", "X"),
    );
    assert_eq!(write.status, 403);
    assert!(write.body.contains("need-privileges"), "{}", write.body);
    assert_eq!(
        dav.call_by(carol, "DELETE", &format!("{carol_mount}trip.ics"), &[], "")
            .status,
        403
    );
    // bob@ neither: the calendar is its owner's.
    assert_eq!(
        dav.call_by("bob@example.test", "DELETE", &mount, &[], "")
            .status,
        403
    );
    let patch = dav.call_by(
        "bob@example.test",
        "PROPPATCH",
        &mount,
        &[],
        "<d:propertyupdate xmlns:d=\"DAV:\"><d:set><d:prop><d:displayname>Mine</d:displayname>\
         </d:prop></d:set></d:propertyupdate>",
    );
    assert_eq!(patch.status, 403);
    // The shared address book: carol@ sees it, bob@ does not.
    let book = dav.call_by(
        carol,
        "PROPFIND",
        "/dav/addressbooks/carol@example.test/",
        &["Depth: 1"],
        "",
    );
    assert!(
        book.body.contains("me@example.test~contacts/"),
        "{}",
        book.body
    );
    let not_his = dav.call_by(
        "bob@example.test",
        "PROPFIND",
        "/dav/addressbooks/bob@example.test/me@example.test~contacts/",
        &["Depth: 0"],
        "",
    );
    assert_eq!(not_his.status, 404);
    // A real client, as bob@: the shared calendar among his own, read and written.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("timeout")
        .arg("120")
        .arg(root.join("target/dav-venv/bin/python"))
        .arg(root.join("tests/peers/caldav_shared.py"))
        .arg(format!("https://localhost:{}/", dav.caldav))
        .args(["bob@example.test", "quickstart", &dav.ca()])
        .output()
        .expect("target/dav-venv/bin/python (scripts/test makes it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("all done"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let owner_view = dav.call(
        "PROPFIND",
        "/dav/calendars/me@example.test/team/",
        &["Depth: 1"],
        "",
    );
    assert_eq!(
        owner_view.body.matches(".ics</d:href>").count(),
        2,
        "the owner sees the colleague's event: {}",
        owner_view.body
    );
    // The owner's own path stays the owner's.
    assert_eq!(
        dav.call_by(
            "bob@example.test",
            "GET",
            "/dav/calendars/me@example.test/team/trip.ics",
            &[],
            ""
        )
        .status,
        403
    );
    // bob@ deletes the event he may write; me@ sees it gone.
    assert_eq!(
        dav.call_by(
            "bob@example.test",
            "DELETE",
            &format!("{mount}trip.ics"),
            &[],
            ""
        )
        .status,
        204
    );
    assert_eq!(
        dav.call(
            "GET",
            "/dav/calendars/me@example.test/team/trip.ics",
            &[],
            ""
        )
        .status,
        404
    );
    // Names with '@' are the mounts': not made by MKCOL.
    let taken = dav.call("MKCALENDAR", "/dav/calendars/me@example.test/a@b/", &[], "");
    assert_eq!(taken.status, 403);
}

#[test]
fn shares_are_checked_where_they_are_written() {
    let w = Workspace::new(&spec(
        1,
        2,
        3,
        "1GiB",
        ", calendars = [{ name = \"Team\", share = { \"nobody@example.test\" = \"read\", \
         \"me@example.test\" = \"write\" } }]",
    ));
    let out = w.run(&["validate"]);
    out.code(1);
    assert!(
        out.stderr
            .contains("nobody@example.test has no mailbox here"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("its owner's already"), "{}", out.stderr);
    w.write_spec(&spec(
        1,
        2,
        3,
        "1GiB",
        ", calendars = [{ name = \"X\", sharing = {} }]",
    ));
    let out = w.run(&["validate"]);
    out.code(1);
    assert!(
        out.stderr.contains("sharing"),
        "a mistyped key is named: {}",
        out.stderr
    );
    // A good one reads as what it does in the plan.
    let bob = format!(
        " }}\n[domains.\"example.test\".aliases.bob]\n\
         mailbox = {{ password = {{ hash = \"{TEST_HASH}\" }} }}\n#"
    );
    w.write_spec(&spec(
        1,
        2,
        3,
        "1GiB",
        &format!(", calendars = [{{ name = \"Team\", share = {{ \"bob@example.test\" = \"write\" }} }}]{bob}"),
    ));
    let plan = w.run(&["plan"]);
    assert!(
        plan.stdout
            .contains("shares: calendar \"Team\" with bob@example.test (write)"),
        "{}",
        plan.stdout
    );
}

/// litmus (the WebDAV conformance suite) on the calendar home. What fails is only what a
/// calendar home refuses on purpose: bodies that are not iCalendar, collections inside
/// calendars, properties on events; everything else of RFC 4918 it tries passes.
#[test]
fn litmus_finds_nothing_but_what_calendars_refuse() {
    let dav = Dav::start("1GiB");
    let out = Command::new("timeout")
        .args(["300", "litmus", "-k"])
        .arg(format!(
            "https://localhost:{}/dav/calendars/me@example.test/",
            dav.caldav
        ))
        .args([ME, "quickstart"])
        .env("SSL_CERT_FILE", dav.ca())
        // litmus writes debug.log and child.log where it runs.
        .current_dir(dav.w.path())
        .output()
        .expect("litmus (scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // Content rules, not protocol: what litmus PUTs is text, it nests collections in
    // calendars, and sets properties on events.
    let refused_on_purpose = [
        "put_get",
        "put_get_utf8_segment",
        "delete_fragment",
        "mkcol",
        "copy_init",
        "copy_coll",
        "copy_shallow",
        "move",
        "move_coll",
        "propinit",
        "propmanyns",
        "propcleanup",
    ];
    for line in text.lines().filter(|l| l.contains(" FAIL")) {
        let before = line[..line.find(" FAIL").unwrap_or(0)].trim_end_matches('.');
        let name = before.split_whitespace().last().unwrap_or_default();
        assert!(
            refused_on_purpose.contains(&name),
            "litmus: {name}: {line}\n{text}"
        );
    }
    for must in [
        "mkcol_with_body",
        "delete_null",
        "propfind_invalid",
        "propfind_d0",
        "propwformed",
        "put_no_parent",
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(must) && l.trim_end().ends_with("pass")),
            "{must} should pass:\n{text}"
        );
    }
    assert!(!text.contains("should be 409"), "{text}");
}

/// Calendars and contacts live in the mailbox files (SQLite): a backup holds them, and a
/// restore brings them back with their ETags and the collections' sync state.
#[test]
fn a_backup_restores_calendars_and_contacts_with_their_etags() {
    let (https, caldav, carddav) = (free_port(), free_port(), free_port());
    let backups = "\n[backups]\nschedule = \"0 3 * * *\"\ntarget = \"file://backups\"\n\
                   encryption_key = { file = \"backup.key\" }\nkeep = 3\ninclude_master_key = true\n";
    let w = Workspace::new(&format!(
        "{}{backups}",
        spec(https, caldav, carddav, "1GiB", "")
    ));
    std::fs::write(
        w.path().join("backup.key"),
        "a long passphrase for the backups\n",
    )
    .unwrap();
    let mut dav = Dav {
        process: w.serve(carddav),
        w,
        https,
        caldav,
        carddav,
    };
    let put = dav.call(
        "PUT",
        &format!("{CAL}/kept.ics"),
        &[ICS],
        &event("kept-1", "Kept across a restore"),
    );
    assert_eq!(put.status, 201, "{}", put.body);
    let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:card-1\r\nFN:Ada Restored\r\nN:Restored;Ada;;;\r\nEND:VCARD\r\n";
    let put_card = dav.call("PUT", &format!("{BOOK}/ada.vcf"), &[VCF], card);
    assert_eq!(put_card.status, 201, "{}", put_card.body);
    let made = dav.w.run(&["backup", "create"]);
    made.ok();
    let id = made.stdout.split_whitespace().nth(1).unwrap().to_string();
    let token_before = dav.call(
        "PROPFIND",
        &format!("{CAL}/"),
        &["Depth: 0"],
        "<d:propfind xmlns:d=\"DAV:\"><d:prop><d:sync-token/></d:prop></d:propfind>",
    );

    dav.process.terminate();
    std::fs::remove_dir_all(dav.w.data_dir()).unwrap();
    let restored = dav.w.run(&["backup", "restore", &id]);
    restored.ok();
    dav.process = dav.w.serve(dav.carddav);

    let got = dav.call("GET", &format!("{CAL}/kept.ics"), &[], "");
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.body.contains("Kept across a restore"), "{}", got.body);
    assert_eq!(got.header("etag"), put.header("etag"), "the same ETag");
    let got_card = dav.call("GET", &format!("{BOOK}/ada.vcf"), &[], "");
    assert_eq!(got_card.status, 200, "{}", got_card.body);
    assert!(got_card.body.contains("Ada Restored"), "{}", got_card.body);
    assert_eq!(got_card.header("etag"), put_card.header("etag"));
    // Changes made after the backup are gone: a client's token from then must not name
    // a state the restored collection reaches again with other contents. Every token
    // is refused, and the client syncs afresh (RFC 6578 §3.2).
    let old_token = token_of(&token_before.body);
    let sync = |token: &str| {
        dav.call(
            "REPORT",
            &format!("{CAL}/"),
            &[],
            &format!(
                "<d:sync-collection xmlns:d=\"DAV:\"><d:sync-token>{token}</d:sync-token>\
                 <d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"
            ),
        )
    };
    let refused = sync(&old_token);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(
        refused.body.contains("valid-sync-token"),
        "{}",
        refused.body
    );
    assert!(
        restored
            .stdout
            .contains("calendars and address books have a new sync token"),
        "{}",
        restored.stdout
    );
    let afresh = sync("");
    assert_eq!(afresh.status, 207, "{}", afresh.body);
    assert!(afresh.body.contains("kept.ics"), "{}", afresh.body);
}

/// The sync token in a multistatus or PROPFIND answer.
fn token_of(body: &str) -> String {
    let start = body.find("<d:sync-token>").expect("a token") + 14;
    body[start..start + body[start..].find('<').unwrap()].to_string()
}
