//! `ferrymail import`: a domain's Forward Email TXT records (served by Knot) and a Postfix
//! virtual map become spec tables that validate, plan and deliver as the originals did.

mod common;

use std::time::Duration;

use common::{Workspace, free_port, knot, python_peer, received, swaks, wait_for, zone};

/// The records a Forward Email user has: aliases, a catch-all, a regex rule with a
/// capture, and a hard rejection, split over two TXT records as they often are.
const RECORDS: &str = r#"
@ TXT "forward-email=hello:friend@elsewhere.test,catch@elsewhere.test"
@ TXT "forward-email=/^(support|info)$/:desk+$1@elsewhere.test,!!!gone"
@ TXT "forward-email-site-verification=abc123"
@ TXT "v=spf1 include:spf.forwardemail.net -all"
"#;

#[test]
fn forward_email_records_become_a_spec_that_delivers_the_same() {
    let w = Workspace::new("");
    let (_dns, dns) = knot(
        w.path(),
        &[
            ("example.com", &zone("example.com", RECORDS)),
            ("sender.test", &zone("sender.test", "")),
        ],
    );
    let (mx, relay) = (free_port(), free_port());
    let base = format!(
        "[listeners]\nmx = \"127.0.0.1:{mx}\"\n\n[delivery]\nrelay = \"127.0.0.1:{relay}\"\n\n\
         [dns]\nresolver = \"127.0.0.1:{dns}\"\n"
    );
    w.write_spec(&base);
    // Looked up live through the spec's resolver.
    let imported = w.run(&["import", "forward-email", "example.com"]);
    let tables = imported.ok().stdout.clone();
    for line in [
        "[domains.\"example.com\"]",
        "catch_all = { forward = [\"catch@elsewhere.test\"] }",
        "hello = { forward = [\"friend@elsewhere.test\"] }",
        "gone = { reject = \"hard\" }",
        "regex = \"^(support|info)$\"",
        "forward = [\"desk+$1@elsewhere.test\"]",
    ] {
        assert!(tables.contains(line), "no {line:?} in:\n{tables}");
    }
    // `import … >> ferrymail.toml`, then plan: the aliases are there to review.
    w.write_spec(&format!("{base}\n{tables}"));
    let plan = w.run(&["plan"]);
    assert!(
        plan.ok().stdout.contains("+ alias hello@example.com"),
        "{}",
        plan.stdout
    );

    let sink_dir = w.path().join("sink");
    let _sink = python_peer(
        "sink.py",
        &[&relay.to_string(), sink_dir.to_str().unwrap()],
        w.path(),
    );
    let _server = w.serve(mx);
    for to in ["hello", "support", "someone"] {
        let sent = swaks(
            mx,
            &[
                "--from",
                "x@sender.test",
                "--to",
                &format!("{to}@example.com"),
            ],
        );
        assert!(sent.stdout.contains("Queued as"), "{}", sent.stdout);
    }
    let gone = swaks(
        mx,
        &[
            "--from",
            "x@sender.test",
            "--to",
            "gone@example.com",
            "--quit-after",
            "RCPT",
        ],
    );
    assert!(gone.stdout.contains("<** 550"), "{}", gone.stdout);
    assert!(wait_for(Duration::from_secs(20), || received(&sink_dir)
        .len()
        == 3));
    let mut delivered: Vec<String> = received(&sink_dir)
        .into_iter()
        .flat_map(|r| r.rcpt_to)
        .collect();
    delivered.sort();
    assert_eq!(
        delivered,
        [
            "catch@elsewhere.test",
            "desk+support@elsewhere.test",
            "friend@elsewhere.test"
        ]
    );
}

#[test]
fn a_postfix_virtual_map_becomes_aliases_and_what_cannot_is_listed() {
    let w = Workspace::new("");
    let map = w.path().join("virtual");
    std::fs::write(
        &map,
        "# domains\nexample.com  virtual\n\
         info@example.com    alice@elsewhere.test,\n    bob@elsewhere.test\n\
         sales@example.com   carol@elsewhere.test\n\
         @example.com        catch@elsewhere.test\n\
         @example.org        @example.com\n\
         root                admin@example.com\n",
    )
    .unwrap();
    let out = w.path().join("imported.toml");
    let written = w.run(&[
        "import",
        "postfix-virtual",
        map.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        written
            .ok()
            .stdout
            .contains("2 domain(s), 2 alias(es); 1 thing(s) not imported"),
        "{}",
        written.stdout
    );
    let tables = std::fs::read_to_string(&out).unwrap();
    assert!(
        tables.contains("info = { forward = [\"alice@elsewhere.test\", \"bob@elsewhere.test\"] }")
            && tables
                .contains("[domains.\"example.org\"]\ncatch_all = { forward = [\"example.com\"] }")
            && tables.contains("#   line 8: root admin@example.com: no domain"),
        "{tables}"
    );
    // An existing file is never overwritten.
    let again = w.run(&[
        "import",
        "postfix-virtual",
        map.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    again.code(1);
    assert!(
        again.stderr.contains("an existing file is kept"),
        "{}",
        again.stderr
    );
    // The tables make a valid spec whose plan shows them.
    w.write_spec(&tables);
    w.run(&["validate"]).ok();
    let plan = w.run(&["plan"]);
    let text = plan.ok().stdout.clone();
    assert!(
        text.contains("+ alias info@example.com") && text.contains("+ domain example.org"),
        "{text}"
    );
}
