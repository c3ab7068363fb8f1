//! A stub DNS server for the benches: NXDOMAIN (with an SOA) for every question, at once,
//! so no lookup waits on a network this machine does not have.
#![allow(dead_code)]

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

pub struct DnsStub {
    pub addr: SocketAddr,
    queries: Arc<AtomicU64>,
}

impl DnsStub {
    pub fn start() -> io::Result<DnsStub> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let addr = socket.local_addr()?;
        let queries = Arc::new(AtomicU64::new(0));
        let q = queries.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = socket.recv_from(&mut buf) {
                if let Some(reply) = nxdomain(&buf[..n]) {
                    q.fetch_add(1, Ordering::SeqCst);
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Ok(DnsStub { addr, queries })
    }

    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }
}

/// The NXDOMAIN answer to a one-question query: same id and question, and an SOA in the
/// authority section as every real resolver sends (RFC 2308), so the answer may be cached
/// for its minimum TTL (300 s) like one from the Internet.
fn nxdomain(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 || query[4..6] != [0, 1] {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut at = 12;
    loop {
        let len = *query.get(at)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        at += len;
    }
    let end = at + 4;
    if end > query.len() {
        return None;
    }
    let mut reply = Vec::with_capacity(end);
    reply.extend_from_slice(&query[..2]);
    // QR, the query's opcode and RD; RA and RCODE 3 (NXDOMAIN).
    reply.push(0x80 | (query[2] & 0x79));
    reply.push(0x80 | 3);
    reply.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0]);
    reply.extend_from_slice(&query[12..end]);
    // ". 300 IN SOA . . 1 3600 600 86400 300"
    reply.extend_from_slice(&[0, 0, 6, 0, 1, 0, 0, 1, 44, 0, 22, 0, 0]);
    for field in [1u32, 3600, 600, 86_400, 300] {
        reply.extend_from_slice(&field.to_be_bytes());
    }
    Some(reply)
}
