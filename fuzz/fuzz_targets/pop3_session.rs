//! Fuzzes one POP3 session: USER and PASS, then arbitrary client bytes, against the real
//! session code over a real (encrypted) mailbox. A session must never panic, and must
//! end when the client hangs up.
#![no_main]

#[path = "support/mailbox_world.rs"]
mod mailbox_world;

use std::sync::{Arc, OnceLock};

use ferrymail::pop3::{Pop3Context, Session};
use libfuzzer_sys::fuzz_target;

/// Logged in (password "quickstart") before the fuzzer's bytes.
const PREFIX: &[u8] = b"USER me@fuzz.test\r\nPASS quickstart\r\n";

struct World {
    base: mailbox_world::Base,
    ctx: Arc<Pop3Context>,
}

static WORLD: OnceLock<World> = OnceLock::new();

fn world() -> World {
    let base = mailbox_world::base();
    let ctx = Arc::new(Pop3Context {
        hostname: "mx.fuzz.test".into(),
        mailboxes: base.mailboxes.clone(),
        logins: base.logins.clone(),
        tls: None,
        locked: Default::default(),
    });
    World { base, ctx }
}

fuzz_target!(|data: &[u8]| {
    let world = WORLD.get_or_init(world);
    mailbox_world::feed(&world.base.runtime, PREFIX, data, |server| {
        let session = Session::new(
            world.ctx.clone(),
            server,
            "127.0.0.1:1110".parse().expect("addr"),
            false,
        );
        tokio::spawn(async move {
            session.run(true).await;
        })
    });
});
