//! Fuzzes one IMAP session: a login and SELECT, then arbitrary client bytes, against the
//! real session code over a real (encrypted) mailbox. A session must never panic, and
//! must end when the client hangs up.
#![no_main]

#[path = "support/mailbox_world.rs"]
mod mailbox_world;

use std::sync::{Arc, OnceLock};

use ferrymail::imap::{ImapContext, Session};
use libfuzzer_sys::fuzz_target;

/// Logged in (password "quickstart") with INBOX selected before the fuzzer's bytes.
const PREFIX: &[u8] = b"a LOGIN me@fuzz.test quickstart\r\nb SELECT INBOX\r\n";

struct World {
    base: mailbox_world::Base,
    ctx: Arc<ImapContext>,
}

static WORLD: OnceLock<World> = OnceLock::new();

fn world() -> World {
    let base = mailbox_world::base();
    let ctx = Arc::new(ImapContext {
        hostname: "mx.fuzz.test".into(),
        snapshot: base.snapshot.clone(),
        mailboxes: base.mailboxes.clone(),
        logins: base.logins.clone(),
        tls: None,
        max_append: 1 << 20,
        learner: None,
    });
    World { base, ctx }
}

fuzz_target!(|data: &[u8]| {
    let world = WORLD.get_or_init(world);
    mailbox_world::feed(&world.base.runtime, PREFIX, data, |server| {
        let session = Session::new(
            world.ctx.clone(),
            server,
            "127.0.0.1:1143".parse().expect("addr"),
            false,
            true,
        );
        tokio::spawn(async move {
            session.run().await;
        })
    });
});
