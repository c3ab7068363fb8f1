//! The corpus of broken specs in tests/specs/broken: each must be refused by validate,
//! plan and apply with a located, explained error, and leave the store byte-for-byte
//! as it was. Each file's first line says what the error must contain.

mod common;

use common::{Workspace, run_in};

#[test]
fn every_broken_spec_is_refused_with_a_located_message_and_changes_nothing() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/specs/broken");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "the corpus must hold at least 20 broken specs"
    );

    // A store with state in it, which no broken spec may touch.
    let w = Workspace::new(
        "[domains.\"example.test\".aliases.keep]\nforward = [\"k@elsewhere.test\"]\n",
    );
    w.run(&["apply", "--auto-approve"]).ok();
    let before = w.store_bytes();
    assert!(!before.is_empty());

    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name}: first line must be `# expect: ...`"));
        let copy = w.path().join(&name);
        std::fs::write(&copy, &text).unwrap();
        for args in [&["validate"][..], &["plan"], &["apply", "--auto-approve"]] {
            let out = run_in(w.path(), std::path::Path::new(&name), args, None);
            assert_eq!(
                out.code, 1,
                "{name} {args:?} must exit 1\n{}{}",
                out.stdout, out.stderr
            );
            for part in expect.split(" | ") {
                let located = format!("{name}:{part}");
                let mut head = part.splitn(3, ':');
                let is_location = head.next().is_some_and(|l| l.parse::<u32>().is_ok())
                    && head.next().is_some_and(|c| c.parse::<u32>().is_ok());
                let found = if is_location {
                    out.stderr.contains(&located)
                } else {
                    out.stderr.contains(part)
                        && out
                            .stderr
                            .lines()
                            .any(|l| l.starts_with(&format!("error: {name}:")) && l.contains(part))
                };
                assert!(
                    found,
                    "{name} {args:?}: expected a located error containing {part:?}\ngot:\n{}",
                    out.stderr
                );
            }
            assert!(
                out.stderr.contains("nothing was changed"),
                "{name}: {}",
                out.stderr
            );
            assert!(
                !out.stderr.contains(&common::TEST_HASH[40..]),
                "{name}: a password hash leaked into an error"
            );
        }
        assert_eq!(before, w.store_bytes(), "{name} changed the store");
    }
}
