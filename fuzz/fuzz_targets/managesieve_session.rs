//! Fuzzes one ManageSieve session: logged in, then arbitrary client bytes (commands,
//! strings, literals, scripts) against the real session code over a real account's
//! scripts. A session must never panic, and must end when the client hangs up.
#![no_main]

#[path = "support/mailbox_world.rs"]
mod mailbox_world;

use std::sync::{Arc, OnceLock};

use ferrymail::managesieve::{ManageSieveContext, Session};
use libfuzzer_sys::fuzz_target;

/// Logged in (password "quickstart") before the fuzzer's bytes.
const PREFIX: &[u8] = b"AUTHENTICATE \"PLAIN\" \"AG1lQGZ1enoudGVzdABxdWlja3N0YXJ0\"\r\n";

struct World {
    base: mailbox_world::Base,
    ctx: Arc<ManageSieveContext>,
}

static WORLD: OnceLock<World> = OnceLock::new();

fn world() -> World {
    let base = mailbox_world::base();
    let ctx = Arc::new(ManageSieveContext {
        mailboxes: base.mailboxes.clone(),
        logins: base.logins.clone(),
        tls: None,
    });
    World { base, ctx }
}

fuzz_target!(|data: &[u8]| {
    let world = WORLD.get_or_init(world);
    mailbox_world::feed(&world.base.runtime, PREFIX, data, |server| {
        let session = Session::new(
            world.ctx.clone(),
            server,
            "127.0.0.1:4190".parse().expect("addr"),
            false,
        );
        tokio::spawn(async move {
            session.run(true).await;
        })
    });
});
