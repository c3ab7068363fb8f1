//! Fuzzes Sieve scripts: compiled within the server's limits, and when they compile, run
//! over a message with every event answered, as delivery does. Neither may panic or run
//! without bound.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ferrymail::sieve::{Facts, Interpreter, Scripts, Sieve, Surroundings};
use libfuzzer_sys::fuzz_target;

const MESSAGE: &[u8] = b"From: Ann <ann@example.org>\r\nTo: me@fuzz.test\r\nSubject: hello\r\n\
    Message-ID: <m@x>\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
    Content-Type: text/plain\r\n\r\nbody text\r\n--b--\r\n";

struct Around;

impl Surroundings for Around {
    fn folder_exists(&mut self, name: &str) -> bool {
        name.len() % 2 == 0
    }
    fn special_use_exists(&mut self, _: &str) -> bool {
        true
    }
    fn seen(&mut self, id: &str, _: Duration) -> bool {
        id.len() % 2 == 0
    }
    fn personal_script(&mut self, _: &str) -> Option<Arc<Sieve>> {
        None
    }
}

static INTERPRETER: OnceLock<Interpreter> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Ok(script) = ferrymail::sieve::compile(data) else {
        return;
    };
    let interpreter = INTERPRETER.get_or_init(|| Interpreter::new("mx.fuzz.test"));
    let scripts = Scripts {
        personal: Some(script),
        ..Default::default()
    };
    let facts = Facts {
        account: "me@fuzz.test",
        recipient: "me@fuzz.test",
        mail_from: "ann@example.org",
        spam: ferrymail::sieve::SpamStatus::Unknown,
    };
    let _ = interpreter.run(MESSAGE, &scripts, &facts, &mut Around);
});
