//! What clients fetch from the http and https listeners on their own, fetched with curl:
//! health checks, Thunderbird's autoconfig and Outlook's autodiscover (parsed by Python's
//! XML parser), and the MTA-STS policy over https by SNI, whose id matches the
//! `_mta-sts` record `dns records` publishes, and which follows a spec change.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{TEST_HASH, Workspace, free_port, wait_for};

/// curl's body and HTTP status for `url`, with `--resolve` so a name reaches loopback.
fn curl(args: &[&str]) -> (String, u16) {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (body.to_string(), code.trim().parse().unwrap_or(0))
}

/// What Python's XML parser reads from a document: "tag=text" for every leaf, in order.
fn xml_leaves(xml: &str) -> Vec<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E\n\
             for e in E.fromstring(sys.stdin.read().encode()).iter():\n\
             \x20   if len(e) == 0: print(e.tag.split('}')[-1] + '=' + (e.text or '') + ''.join(f' {k}={v}' for k, v in e.attrib.items()))\n\
             \x20   elif e.attrib: print(e.tag.split('}')[-1] + ''.join(f' {k}={v}' for k, v in e.attrib.items()))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(xml.as_bytes())?;
            child.wait_with_output()
        })
        .expect("python3");
    assert!(
        out.status.success(),
        "not XML: {xml}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn spec(ports: &[u16; 7], mode: &str) -> String {
    let [mx, imap, imaps, submission, submissions, http, https] = ports;
    format!(
        r#"
[listeners]
mx = "127.0.0.1:{mx}"
imap = "127.0.0.1:{imap}"
imaps = "127.0.0.1:{imaps}"
submission = "127.0.0.1:{submission}"
submissions = "127.0.0.1:{submissions}"
http = "127.0.0.1:{http}"
https = "127.0.0.1:{https}"

[mta_sts]
mode = "{mode}"
max_age = "1d"

[domains."example.test".aliases.me]
mailbox = {{ password = {{ hash = "{TEST_HASH}" }} }}
"#
    )
}

#[test]
fn clients_find_their_settings_and_senders_the_mta_sts_policy() {
    let ports = [(); 7].map(|_| free_port());
    let [_, imap, imaps, submission, submissions, http, https] = ports;
    let w = Workspace::new(&spec(&ports, "enforce"));
    let server = w.serve(http);
    let base = format!("http://127.0.0.1:{http}");

    assert_eq!(curl(&[&format!("{base}/healthz")]), ("ok\n".into(), 200));
    assert!(
        wait_for(Duration::from_secs(10), || curl(&[&format!(
            "{base}/readyz"
        )])
        .1 == 200),
        "{}",
        server.log_text()
    );

    // Thunderbird asks autoconfig.DOMAIN; implicit TLS comes first, STARTTLS after.
    let (xml, code) = curl(&[
        "--resolve",
        &format!("autoconfig.example.test:{http}:127.0.0.1"),
        &format!(
            "http://autoconfig.example.test:{http}/mail/config-v1.1.xml?emailaddress=me%40example.test"
        ),
    ]);
    assert_eq!(code, 200, "{xml}");
    let leaves = xml_leaves(&xml);
    let expected = [
        "clientConfig version=1.1".to_string(),
        "emailProvider id=example.test".into(),
        "domain=example.test".into(),
        "displayName=example.test mail".into(),
        "displayShortName=example.test".into(),
        "incomingServer type=imap".into(),
        "hostname=mx.example.test".into(),
        format!("port={imaps}"),
        "socketType=SSL".into(),
        "authentication=password-cleartext".into(),
        "username=%EMAILADDRESS%".into(),
        "incomingServer type=imap".into(),
        "hostname=mx.example.test".into(),
        format!("port={imap}"),
        "socketType=STARTTLS".into(),
        "authentication=password-cleartext".into(),
        "username=%EMAILADDRESS%".into(),
        "outgoingServer type=smtp".into(),
        "hostname=mx.example.test".into(),
        format!("port={submissions}"),
        "socketType=SSL".into(),
        "authentication=password-cleartext".into(),
        "username=%EMAILADDRESS%".into(),
        "outgoingServer type=smtp".into(),
        "hostname=mx.example.test".into(),
        format!("port={submission}"),
        "socketType=STARTTLS".into(),
        "authentication=password-cleartext".into(),
        "username=%EMAILADDRESS%".into(),
        // Contacts and calendars, served under /dav/ on https here.
        "addressBook type=carddav".into(),
        "username=%EMAILADDRESS%".into(),
        "authentication=http-basic".into(),
        format!("serverURL=https://mx.example.test:{https}/dav/"),
        "calendar type=caldav".into(),
        "username=%EMAILADDRESS%".into(),
        "authentication=http-basic".into(),
        format!("serverURL=https://mx.example.test:{https}/dav/"),
    ];
    assert_eq!(leaves, expected, "{xml}");
    // The well-known path, by Host alone; a domain not served here is not described.
    let (_, code) = curl(&[
        "-H",
        "Host: autoconfig.example.test",
        &format!("{base}/.well-known/autoconfig/mail/config-v1.1.xml"),
    ]);
    assert_eq!(code, 200);
    let (_, code) = curl(&[
        "-H",
        "Host: autoconfig.elsewhere.test",
        &format!("{base}/.well-known/autoconfig/mail/config-v1.1.xml"),
    ]);
    assert_eq!(code, 404);

    // Outlook posts its request to autodiscover.DOMAIN.
    let request = "<?xml version=\"1.0\"?><Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\"><Request><EMailAddress>me@example.test</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema></Request></Autodiscover>";
    let (xml, code) = curl(&[
        "--resolve",
        &format!("autodiscover.example.test:{https}:127.0.0.1"),
        "-H",
        "Content-Type: text/xml",
        "--data-binary",
        request,
        &format!("https://autodiscover.example.test:{https}/autodiscover/autodiscover.xml"),
    ]);
    assert_eq!(code, 200, "{xml}");
    let leaves = xml_leaves(&xml).join("\n");
    for expected in [
        format!("Type=IMAP\nServer=mx.example.test\nPort={imaps}\nLoginName=me@example.test"),
        format!("Type=SMTP\nServer=mx.example.test\nPort={submissions}\nLoginName=me@example.test"),
        "Encryption=SSL".to_string(),
    ] {
        assert!(leaves.contains(&expected), "{expected}\nin:\n{leaves}");
    }
    assert_eq!(leaves.matches("Type=IMAP").count(), 1, "{leaves}");

    // MTA-STS: over https, by SNI and Host mta-sts.DOMAIN.
    let policy_url = format!("https://mta-sts.example.test:{https}/.well-known/mta-sts.txt");
    let resolve = format!("mta-sts.example.test:{https}:127.0.0.1");
    let (policy, code) = curl(&["--resolve", &resolve, &policy_url]);
    assert_eq!(code, 200);
    assert_eq!(
        policy,
        "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmax_age: 86400\r\n"
    );
    let (_, code) = curl(&[
        "--resolve",
        &format!("mta-sts.elsewhere.test:{https}:127.0.0.1"),
        &format!("https://mta-sts.elsewhere.test:{https}/.well-known/mta-sts.txt"),
    ]);
    assert_eq!(code, 404);
    // Only over https (RFC 8461 §3.3).
    let (_, code) = curl(&[
        "-H",
        "Host: mta-sts.example.test",
        &format!("http://127.0.0.1:{http}/.well-known/mta-sts.txt"),
    ]);
    assert_eq!(code, 404);
    // The TXT record names this very policy.
    let policy_id = |text: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))[..20].to_string()
    };
    let records = w.run(&["dns", "records", "example.test"]);
    let records = &records.ok().stdout;
    assert!(
        records.contains(&format!(
            "_mta-sts.example.test. 3600 IN TXT \"v=STSv1; id={}\"",
            policy_id(&policy)
        )),
        "{records}"
    );
    assert!(
        records.contains("mta-sts.example.test. 3600 IN CNAME mx.example.test."),
        "{records}"
    );

    // A spec change reaches the policy served (and its id) without a restart.
    std::fs::write(
        &w.spec,
        format!("{}{}", common::header(), spec(&ports, "testing")),
    )
    .unwrap();
    let changed = wait_for(Duration::from_secs(20), || {
        curl(&["--resolve", &resolve, &policy_url])
            .0
            .contains("mode: testing")
    });
    assert!(changed, "{}", server.log_text());
    let (policy, _) = curl(&["--resolve", &resolve, &policy_url]);
    let records = w.run(&["dns", "records", "example.test"]).stdout;
    assert!(records.contains(&policy_id(&policy)), "{records}");
}

/// Samples as Prometheus' own OpenMetrics parser (Python prometheus_client) reads them:
/// "name{label=value,...} value" per line, labels sorted.
fn openmetrics(text: &str) -> Vec<String> {
    let script = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
        for family in parse(sys.stdin.read()):\n\
        \x20   for s in family.samples:\n\
        \x20       labels = ','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))\n\
        \x20       print(f'{s.name}{{{labels}}} {s.value:g}')";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (scripts/test installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not OpenMetrics:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn metrics_count_mail_logins_and_reconciles_for_a_local_scraper() {
    let ports = [(); 7].map(|_| free_port());
    let [mx, _, _, submission, _, http, https] = ports;
    let w = Workspace::new(&spec(&ports, "testing"));
    let server = w.serve(http);
    assert!(wait_for(Duration::from_secs(10), || curl(&[&format!(
        "http://127.0.0.1:{http}/readyz"
    )])
    .1 == 200));
    common::swaks(mx, &["--from", "a@sender.test", "--to", "me@example.test"]).ok();
    let refused = common::swaks(
        mx,
        &["--from", "a@sender.test", "--to", "nobody@example.test"],
    );
    assert!(refused.stdout.contains("<** "), "{}", refused.stdout);
    let failed = common::submit(
        submission,
        "me@example.test",
        "wrong",
        &["--from", "me@example.test", "--to", "x@elsewhere.test"],
    );
    assert!(failed.stdout.contains("<~* 535"), "{}", failed.stdout);

    let scrape = |url: &str| {
        let (text, code) = curl(&[url]);
        assert_eq!(code, 200, "{text}");
        openmetrics(&text)
    };
    let samples = scrape(&format!("http://127.0.0.1:{http}/metrics"));
    for expected in [
        "ferrymail_messages_total{event=accepted} 1",
        "ferrymail_messages_total{event=rejected} 1",
        "ferrymail_auth_failures_total{} 1",
        "ferrymail_reconcile_runs_total{} 1",
        "ferrymail_reconcile_failures_total{} 0",
        "ferrymail_store_revision{} 1",
    ] {
        assert!(
            samples.iter().any(|s| s == expected),
            "{expected} missing in:\n{}\n{}",
            samples.join("\n"),
            server.log_text()
        );
    }
    assert!(
        samples.iter().any(|s| s.starts_with(
            "ferrymail_certificate_expiry_timestamp_seconds{name=mx.example.test,source=self-signed} "
        )),
        "{}",
        samples.join("\n")
    );
    assert!(
        samples
            .iter()
            .any(|s| s.starts_with("ferrymail_queue_deliveries{} "))
    );
    // The same over https; a spec that fails to apply is counted.
    let over_tls = scrape(&format!("https://127.0.0.1:{https}/metrics"));
    assert!(
        over_tls
            .iter()
            .any(|s| s == "ferrymail_messages_total{event=accepted} 1")
    );
    std::fs::write(
        &w.spec,
        format!("{}[domains.\"bad..name\"]\n", common::header()),
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || scrape(&format!(
            "http://127.0.0.1:{http}/metrics"
        ))
        .iter()
        .any(|s| s == "ferrymail_reconcile_failures_total{} 1")),
        "{}",
        server.log_text()
    );
}
