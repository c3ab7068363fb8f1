//! offlineimap (Debian's offlineimap3) syncing a folder tree with the server, CONDSTORE
//! and QRESYNC advertised: down, both ways with changes on each side, then a run that
//! changes nothing. (mbsync's run is in mailbox_access.rs; imapsync is not packaged.)

mod common;

use std::path::{Path, PathBuf};

use common::imap::{Server, expect, message};

const ME: &str = "me@example.test";

fn maildir(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = ["new", "cur"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(dir.join(sub)).into_iter().flatten())
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
}

fn flags_of(file: &Path) -> String {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    name.split(":2,").nth(1).unwrap_or_default().to_string()
}

#[test]
fn offlineimap_syncs_a_folder_tree_both_ways() {
    let server = Server::start(&[ME]);
    let mut c = server.login(ME);
    let caps = c.run("CAPABILITY").join(" ");
    assert!(
        caps.contains(" CONDSTORE") && caps.contains(" QRESYNC"),
        "{caps}"
    );
    for name in ["Work", "Work/2025", "Entw&APw-rfe"] {
        expect(&c.run(&format!("CREATE {name}")), &["T OK …"]);
        expect(&c.run(&format!("SUBSCRIBE {name}")), &["T OK …"]);
    }
    expect(&c.append("INBOX", "(\\Seen)", &message("one")), &["T OK …"]);
    expect(&c.append("INBOX", "", &message("two")), &["T OK …"]);
    expect(
        &c.append("Work/2025", "(\\Flagged)", &message("report")),
        &["T OK …"],
    );
    expect(
        &c.append("Entw&APw-rfe", "(\\Draft)", &message("draft")),
        &["T OK …"],
    );

    let dir = server.w.path();
    let local = dir.join("mail");
    std::fs::create_dir_all(&local).unwrap();
    let config = dir.join("offlineimaprc");
    std::fs::write(
        &config,
        format!(
            "[general]\naccounts = ferry\nmetadata = {meta}\nui = basic\n\n\
             [Account ferry]\nlocalrepository = local\nremoterepository = remote\n\n\
             [Repository local]\ntype = Maildir\nlocalfolders = {local}\n\n\
             [Repository remote]\ntype = IMAP\nremotehost = 127.0.0.1\nremoteport = {port}\n\
             remoteuser = {ME}\nremotepass = quickstart\nssl = no\nstarttls = yes\n\
             sslcacertfile = {cert}\nmaxconnections = 2\nholdconnectionopen = no\n",
            meta = dir.join("offlineimap-meta").display(),
            local = local.display(),
            port = server.port,
            cert = server.w.data_dir().join("self-signed.crt").display(),
        ),
    )
    .unwrap();
    let offlineimap = || {
        let out = std::process::Command::new("offlineimap")
            .arg("-c")
            .arg(&config)
            .arg("-o")
            // OFFLINEIMAP_DEBUG=imap shows the dialogue when this fails.
            .args(
                std::env::var("OFFLINEIMAP_DEBUG")
                    .map(|d| vec!["-d".to_string(), d])
                    .unwrap_or_default(),
            )
            .output()
            .expect("offlineimap (offlineimap3) must be installed (scripts/test installs it)");
        let run = common::Run::from(out);
        assert!(
            run.code == 0 && !run.stderr.contains("ERROR") && !run.stdout.contains("ERROR"),
            "offlineimap failed ({}):\n{}\n{}\nserver log:\n{}",
            run.code,
            run.stdout,
            run.stderr,
            server.process.log_text()
        );
        run
    };

    // First run: the tree comes down, flags with it.
    offlineimap();
    let inbox = maildir(&local.join("INBOX"));
    assert_eq!(inbox.len(), 2, "{inbox:?}");
    assert_eq!(
        inbox.iter().filter(|f| flags_of(f).contains('S')).count(),
        1
    );
    let work = maildir(&local.join("Work.2025"));
    assert_eq!(
        work.len(),
        1,
        "{:?}",
        std::fs::read_dir(&local).unwrap().collect::<Vec<_>>()
    );
    assert!(flags_of(&work[0]).contains('F'));
    assert_eq!(maildir(&local.join("Entw&APw-rfe")).len(), 1);
    assert!(local.join("Work").is_dir());

    // Changes on both sides: locally a flag and a new message in Work; on the server a
    // new message in INBOX, another's \Seen, and one expunged from Work/2025.
    let unseen = inbox.iter().find(|f| !flags_of(f).contains('S')).unwrap();
    let flagged = unseen.with_file_name(format!(
        "{}:2,F",
        unseen
            .file_name()
            .unwrap()
            .to_string_lossy()
            .split(":2,")
            .next()
            .unwrap()
    ));
    std::fs::rename(unseen, &flagged).unwrap();
    std::fs::write(
        local.join("Work/new/1.local:2,S"),
        "From: me@example.test\nSubject: filed offline\n\nkeep\n",
    )
    .unwrap();
    expect(&c.append("INBOX", "", &message("three")), &["T OK …"]);
    c.run("SELECT INBOX");
    expect(&c.run("STORE 1 -FLAGS.SILENT (\\Seen)"), &["T OK …"]);
    c.run("SELECT Work/2025");
    expect(&c.run("STORE 1 +FLAGS.SILENT (\\Deleted)"), &["T OK …"]);
    expect(&c.run("EXPUNGE"), &["* 1 EXPUNGE", "T OK …"]);
    c.run("UNSELECT");
    offlineimap();

    // Both sides agree.
    let inbox = maildir(&local.join("INBOX"));
    assert_eq!(inbox.len(), 3, "{inbox:?}");
    assert!(
        inbox.iter().all(|f| !flags_of(f).contains('S')),
        "{inbox:?}"
    );
    assert_eq!(maildir(&local.join("Work.2025")).len(), 0);
    c.run("SELECT INBOX");
    expect(&c.run("SEARCH FLAGGED"), &["* SEARCH …", "T OK …"]);
    let flagged = c.run("SEARCH FLAGGED");
    assert_eq!(flagged[0].split(' ').count(), 3, "{flagged:?}");
    expect(&c.run("SEARCH SEEN"), &["* SEARCH", "T OK …"]);
    expect(
        &c.run("STATUS Work (MESSAGES)"),
        &["* STATUS Work (MESSAGES 1)", "T OK …"],
    );
    // The first HIGHESTMODSEQ asked enables CONDSTORE, and says the selected folder's.
    let before = c.run("STATUS INBOX (UIDNEXT HIGHESTMODSEQ)");
    let before = before[before.len() - 2..].to_vec();

    // A third run changes nothing on either side.
    offlineimap();
    assert_eq!(maildir(&local.join("INBOX")).len(), 3);
    assert_eq!(maildir(&local.join("Work")).len(), 1);
    assert_eq!(c.run("STATUS INBOX (UIDNEXT HIGHESTMODSEQ)"), before);
}
