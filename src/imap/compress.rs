//! COMPRESS=DEFLATE (RFC 4978): once a session asks, both directions travel as one raw
//! DEFLATE stream each (RFC 1951, no zlib header), flushed at every response burst.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A session's connection: as it came, or compressed.
pub enum Stream<S> {
    Plain(S),
    Deflated(Box<Deflated<S>>),
    /// Only while being wrapped.
    Gone,
}

impl<S> Stream<S> {
    /// Wraps the connection in DEFLATE from here on (after the tagged OK went out plain).
    pub fn compress(&mut self) {
        if let Stream::Plain(inner) = std::mem::replace(self, Stream::Gone) {
            *self = Stream::Deflated(Box::new(Deflated::new(inner)));
        }
    }

    pub fn is_compressed(&self) -> bool {
        matches!(self, Stream::Deflated(_))
    }

    /// The connection itself, for STARTTLS (which comes before any COMPRESS).
    pub fn into_plain(self) -> Option<S> {
        match self {
            Stream::Plain(inner) => Some(inner),
            _ => None,
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "stream is being wrapped")
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Deflated(d) => Pin::new(d.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, data),
            Stream::Deflated(d) => Pin::new(d.as_mut()).poll_write(cx, data),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Deflated(d) => Pin::new(d.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Deflated(d) => Pin::new(d.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Err(gone())),
        }
    }
}

/// A connection with DEFLATE both ways. A bomb costs no memory: input is inflated only
/// into the reader's buffer, and DEFLATE cannot expand past about 1032:1, so it is the
/// same as sending that much plain (which the session's limits bound).
pub struct Deflated<S> {
    inner: S,
    inflate: Decompress,
    deflate: Compress,
    /// Compressed bytes read but not yet inflated (`input[taken..]`).
    input: Vec<u8>,
    taken: usize,
    /// Compressed bytes not yet written (`output[sent..]`).
    output: Vec<u8>,
    sent: usize,
    /// Whether what was compressed since the last flush still needs a sync flush.
    dirty: bool,
}

impl<S> Deflated<S> {
    fn new(inner: S) -> Self {
        Deflated {
            inner,
            inflate: Decompress::new(false),
            // Mail text compresses well at a low level; a high one costs CPU per byte.
            deflate: Compress::new(Compression::new(3), false),
            input: Vec::new(),
            taken: 0,
            output: Vec::new(),
            sent: 0,
            dirty: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Deflated<S> {
    /// Writes out what is compressed and waiting.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.output.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.output[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.output.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Runs the compressor over `data` (or only flushes it, with `data` empty) into
    /// `output`; returns how much of `data` it took.
    fn compress(&mut self, data: &[u8], flush: FlushCompress) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            self.output
                .reserve(data.len().saturating_sub(taken) / 2 + 64);
            let before_in = self.deflate.total_in();
            let before_out = self.deflate.total_out();
            self.deflate
                .compress_vec(&data[taken..], &mut self.output, flush)
                .map_err(io::Error::other)?;
            taken += (self.deflate.total_in() - before_in) as usize;
            let produced = self.deflate.total_out() - before_out;
            // Done when all input is in and the compressor had room to spare.
            if taken == data.len() && self.output.len() < self.output.capacity() {
                return Ok(taken);
            }
            if produced == 0 && taken == data.len() {
                return Ok(taken);
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Deflated<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.taken < this.input.len() {
                let before_in = this.inflate.total_in();
                let before_out = this.inflate.total_out();
                let status = this
                    .inflate
                    .decompress(
                        &this.input[this.taken..],
                        buf.initialize_unfilled(),
                        FlushDecompress::Sync,
                    )
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let used = (this.inflate.total_in() - before_in) as usize;
                let made = (this.inflate.total_out() - before_out) as usize;
                this.taken += used;
                buf.advance(made);
                if made > 0 {
                    return Poll::Ready(Ok(()));
                }
                if status == Status::StreamEnd {
                    return Poll::Ready(Ok(()));
                }
                if used == 0 && this.taken < this.input.len() && buf.remaining() > 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "compressed input makes no progress",
                    )));
                }
            }
            // Everything read was inflated: read more.
            this.input.clear();
            this.taken = 0;
            this.input.resize(16 * 1024, 0);
            let mut raw = ReadBuf::new(&mut this.input);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut raw);
            let n = raw.filled().len();
            this.input.truncate(n);
            ready!(polled)?;
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Deflated<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Bounded: what is already compressed goes out before more is taken.
        if this.output.len() - this.sent >= 64 * 1024 {
            ready!(this.poll_drain(cx))?;
        }
        let taken = this.compress(data, FlushCompress::None)?;
        this.dirty |= taken > 0;
        Poll::Ready(Ok(taken))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.dirty {
            this.compress(&[], FlushCompress::Sync)?;
            this.dirty = false;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What one side deflates the other inflates, across flushes, in both directions.
    #[tokio::test]
    async fn both_directions_round_trip() {
        let (a, b) = tokio::io::duplex(1024);
        let mut a = Stream::Plain(a);
        let mut b = Stream::Plain(b);
        a.compress();
        b.compress();
        let text: Vec<u8> = (0..200_000u32).map(|i| b"mail "[i as usize % 5]).collect();
        let send = text.clone();
        let writer = tokio::spawn(async move {
            a.write_all(&send).await.unwrap();
            a.flush().await.unwrap();
            a.write_all(b"second\r\n").await.unwrap();
            a.flush().await.unwrap();
            a
        });
        let mut got = vec![0u8; text.len() + 8];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..text.len()], &text[..]);
        assert_eq!(&got[text.len()..], b"second\r\n");
        writer.await.unwrap();
    }
}
