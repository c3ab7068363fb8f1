//! Fuzzes what delivery does with a stranger's message: the mailbox append (metadata
//! worked out once, sealed, read back), a FETCH-style read of the metadata, the webhook's
//! JSON, the friendly-From rewrite, a failure notice quoting it, and the spam filter's own
//! checks (attachments, zip archives, links) and header rewrite. None may panic or
//! overflow the stack, however deep the MIME nesting.
#![no_main]

#[path = "support/mailbox_world.rs"]
mod mailbox_world;

use std::sync::OnceLock;

use ferrymail::mailbox::meta::Meta;
use ferrymail::queue::bounce::{Action, Notice};
use libfuzzer_sys::fuzz_target;

static WORLD: OnceLock<mailbox_world::Base> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let world = WORLD.get_or_init(mailbox_world::base);
    // On a worker's stack size: delivery runs on tokio's blocking threads (2 MiB).
    let message = data.to_vec();
    let boxes = world.mailboxes.clone();
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || deliver(&boxes, &message))
        .expect("thread")
        .join()
        .expect("delivery panicked");
});

fn deliver(boxes: &ferrymail::mailbox::Mailboxes, message: &[u8]) {
    let meta = Meta::of(message);
    let json = serde_json::to_vec(&meta).expect("metadata serialises");
    let back: Meta = serde_json::from_slice(&json).expect("metadata reads back");
    assert_eq!(back, meta);
    if let Ok(uid) = boxes.append("me@fuzz.test", "INBOX", message, None) {
        let mut mailbox = boxes.open("me@fuzz.test").expect("mailbox");
        let inbox = mailbox.folder("INBOX").expect("folder").expect("INBOX");
        mailbox.meta(&inbox, uid).expect("stored metadata reads back");
        // Taken out again, so the mailbox stays small however long the run.
        let flags = ["\\Deleted".to_string()];
        let _ = mailbox.set_flags(&inbox, &[uid], ferrymail::mailbox::FlagChange::Add, &flags, None);
        let _ = mailbox.expunge(&inbox, Some(&[uid]));
    }
    let _ = ferrymail::queue::webhook::payload("a@x.test", "me@fuzz.test", message);
    let _ = ferrymail::queue::rewrite::friendly_from(message, "me@fuzz.test");
    let _ = ferrymail::queue::bounce::is_auto_submitted(message);
    let _ = ferrymail::spam::inspect(message, &Default::default());
    let mut verdict = ferrymail::spam::Verdict::local();
    verdict.add_headers = vec![("X-Filter".into(), "ünïcode\r\nInjected: 1".into())];
    verdict.remove_headers = vec![("Received".into(), 2)];
    let _ = ferrymail::spam::rewrite(message.to_vec(), &verdict);
    let _ = ferrymail::queue::bounce::report(&Notice {
        hostname: "mx.fuzz.test",
        domain: "fuzz.test",
        sender: "a@x.test",
        action: Action::Failed,
        recipient: "me@fuzz.test",
        orcpt: None,
        envid: None,
        reason: "fuzzing",
        original: message,
        full: true,
        arrival: 0,
        retry_until: None,
    });
}
