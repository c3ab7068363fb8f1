//! EHLO and HELO: who the client says it is, and what this server offers.

use smtp_proto::*;
use tokio::io::{AsyncRead, AsyncWrite};

use super::session::Session;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn handle_ehlo(&mut self, host: String, extended: bool) {
        self.reset_transaction();
        self.state.helo = Some(host);
        if !extended {
            let hostname = self.ctx.hostname.clone();
            self.reply(250, "", &hostname);
            return;
        }
        let mut ehlo = EhloResponse::new(self.ctx.hostname.as_str());
        ehlo.capabilities = EXT_PIPELINING
            | EXT_8BIT_MIME
            | EXT_SMTP_UTF8
            | EXT_ENHANCED_STATUS_CODES
            | EXT_CHUNKING
            | EXT_SIZE
            | EXT_DSN;
        if self.ctx.tls.is_some() && !self.tls {
            ehlo.capabilities |= EXT_START_TLS;
        }
        // RFC 8689: a sender may ask that the message travel only over verified TLS,
        // which it can only ask over TLS.
        if self.tls {
            ehlo.capabilities |= EXT_REQUIRE_TLS;
        }
        if self.auth_offered() && self.state.account.is_none() {
            ehlo.capabilities |= EXT_AUTH;
            ehlo.auth_mechanisms = AUTH_PLAIN | AUTH_LOGIN;
        }
        ehlo.size = self.ctx.max_message_size as usize;
        let _ = ehlo.write(&mut self.out);
    }
}
