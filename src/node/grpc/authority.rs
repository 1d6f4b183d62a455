//! Go's gRPC sends `:authority` as the endpoint was written, so `etcdctl
//! --endpoints=http://127.0.0.1:2379 endpoint status` sends `http://127.0.0.1:2379`: etcd
//! takes it, h2 (under tonic) resets the stream as malformed. This reader sits between the
//! connection and h2. It reads the first request of each HTTP/2 connection; when that
//! authority is one h2 takes (every client but such a Go call), the rest of the connection
//! passes through untouched. Otherwise it rewrites that connection's request headers: decoded
//! with the client's HPACK table, sent on as plain literals with the authority cut to
//! `host:port`.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame h2 takes by default (SETTINGS_MAX_FRAME_SIZE): rewritten header blocks
/// are cut into frames of this size.
const MAX_FRAME: usize = 16_384;

enum Mode {
    /// Before the client's preface: HTTP/1.1 (`/health`, `/metrics`) passes through.
    Preface,
    /// Until the first request's headers.
    First,
    /// Every request's headers are rewritten.
    Rewrite,
    /// Untouched from here on.
    Pass,
}

/// A header block being gathered over HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    /// The frames as they came, sent on unchanged when the authority is fine.
    raw: Vec<u8>,
    /// The HPACK fragment, without padding or priority.
    fragment: Vec<u8>,
}

/// A connection whose HTTP/2 request headers carry an authority h2 accepts.
pub struct Authority<IO> {
    io: IO,
    mode: Mode,
    /// Read from `io`, not yet looked at.
    input: Vec<u8>,
    /// Ready for h2, from `sent` on.
    output: Vec<u8>,
    sent: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
}

impl<IO> Authority<IO> {
    pub fn new(io: IO) -> Self {
        Authority {
            io,
            mode: Mode::Preface,
            input: Vec::new(),
            output: Vec::new(),
            sent: 0,
            block: None,
            decoder: loona_hpack::Decoder::new(),
        }
    }

    /// Moves what `input` holds to `output` as far as whole frames go.
    fn process(&mut self) {
        loop {
            match self.mode {
                Mode::Pass => {
                    self.output.append(&mut self.input);
                    return;
                }
                Mode::Preface => {
                    let n = self.input.len().min(PREFACE.len());
                    if self.input[..n] != PREFACE[..n] {
                        self.mode = Mode::Pass;
                        continue;
                    }
                    if n < PREFACE.len() {
                        return;
                    }
                    self.output.extend(self.input.drain(..n));
                    self.mode = Mode::First;
                }
                Mode::First | Mode::Rewrite => {
                    if self.input.len() < FRAME_HEADER {
                        return;
                    }
                    let len = u32::from_be_bytes([0, self.input[0], self.input[1], self.input[2]])
                        as usize;
                    if self.input.len() < FRAME_HEADER + len {
                        return;
                    }
                    let frame: Vec<u8> = self.input.drain(..FRAME_HEADER + len).collect();
                    self.frame(frame);
                }
            }
        }
    }

    fn frame(&mut self, frame: Vec<u8>) {
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER..];
        let fragment = match kind {
            HEADERS if self.block.is_none() => {
                let pad = if flags & PADDED != 0 {
                    payload.first().map_or(0, |&p| p as usize)
                } else {
                    0
                };
                let start =
                    usize::from(flags & PADDED != 0) + if flags & PRIORITY != 0 { 5 } else { 0 };
                match payload.len().checked_sub(pad) {
                    Some(end) if start <= end => payload[start..end].to_vec(),
                    // Malformed: h2 says so to the client.
                    _ => return self.give_up(frame),
                }
            }
            CONTINUATION if self.block.as_ref().is_some_and(|b| b.stream == stream) => {
                payload.to_vec()
            }
            _ if self.block.is_some() => return self.give_up(frame),
            _ => {
                self.output.extend_from_slice(&frame);
                return;
            }
        };
        let block = self.block.get_or_insert_with(|| Block {
            stream,
            end_stream: flags & END_STREAM != 0,
            raw: Vec::new(),
            fragment: Vec::new(),
        });
        block.raw.extend_from_slice(&frame);
        block.fragment.extend_from_slice(&fragment);
        if flags & END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                self.headers(block);
            }
        }
    }

    /// A whole header block: sent on as it came, or rewritten.
    fn headers(&mut self, block: Block) {
        let mut headers = Vec::new();
        let decoded = self.decoder.decode_with_cb(&block.fragment, |name, value| {
            headers.push((name.into_owned(), value.into_owned()));
        });
        if decoded.is_err() {
            return self.give_up(block.raw);
        }
        let bad = headers
            .iter()
            .any(|(n, v)| n == b":authority" && http::uri::Authority::try_from(&v[..]).is_err());
        if matches!(self.mode, Mode::First) && !bad {
            self.output.extend_from_slice(&block.raw);
            self.mode = Mode::Pass;
            return;
        }
        self.mode = Mode::Rewrite;
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2);
        for (name, value) in &headers {
            let value = if name == b":authority" {
                match host_port(value) {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                value
            };
            // A literal without indexing, new name: h2's table never changes again.
            encoded.push(0);
            literal(&mut encoded, name);
            literal(&mut encoded, value);
        }
        let mut chunks = encoded.chunks(MAX_FRAME).peekable();
        let mut first = true;
        while let Some(chunk) = chunks.next().or(first.then_some(&[][..])) {
            let last = chunks.peek().is_none();
            let mut flags = 0;
            if first && block.end_stream {
                flags |= END_STREAM;
            }
            if last {
                flags |= END_HEADERS;
            }
            let len = (chunk.len() as u32).to_be_bytes();
            self.output.extend_from_slice(&len[1..]);
            self.output.push(if first { HEADERS } else { CONTINUATION });
            self.output.push(flags);
            self.output.extend_from_slice(&block.stream.to_be_bytes());
            self.output.extend_from_slice(chunk);
            first = false;
            if last {
                break;
            }
        }
    }

    /// Something this reader does not follow: everything from here goes to h2 as it is, and
    /// h2 answers the client as the protocol says.
    fn give_up(&mut self, frame: Vec<u8>) {
        if let Some(block) = self.block.take() {
            self.output.extend_from_slice(&block.raw);
        }
        self.output.extend_from_slice(&frame);
        self.mode = Mode::Pass;
    }
}

/// `scheme://host:port/path` → `host:port`, when that is an authority; else none (a request
/// without `:authority` is valid HTTP/2).
fn host_port(value: &[u8]) -> Option<&[u8]> {
    let s = std::str::from_utf8(value).ok()?;
    let s = s.split_once("://").map_or(s, |(_, rest)| rest);
    let s = s.split('/').next()?;
    http::uri::Authority::try_from(s).ok()?;
    Some(s.as_bytes())
}

/// An HPACK string literal, not Huffman-coded.
fn literal(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len();
    if n < 127 {
        out.push(n as u8);
    } else {
        out.push(127);
        n -= 127;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    out.extend_from_slice(s);
}

impl<IO: AsyncRead + Unpin> AsyncRead for Authority<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.sent < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.sent);
                buf.put_slice(&this.output[this.sent..this.sent + n]);
                this.sent += n;
                if this.sent == this.output.len() {
                    this.output.clear();
                    this.sent = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if matches!(this.mode, Mode::Pass) {
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // The end: what was held back goes to h2, which sees the cut.
                if let Some(block) = this.block.take() {
                    this.output.extend_from_slice(&block.raw);
                }
                this.output.append(&mut this.input);
                this.mode = Mode::Pass;
                if this.output.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.input.extend_from_slice(read.filled());
            this.process();
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Authority<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected
    for Authority<IO>
{
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend([kind, flags]);
        f.extend(stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn block(headers: &[(&[u8], &[u8])], enc: &mut loona_hpack::Encoder) -> Vec<u8> {
        enc.encode(headers.iter().map(|&(n, v)| (n, v)))
    }

    fn decode(out: &[u8], dec: &mut loona_hpack::Decoder) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut blocks = Vec::new();
        let mut rest = &out[PREFACE.len()..];
        let mut fragment = Vec::new();
        while rest.len() >= FRAME_HEADER {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (kind, flags) = (rest[3], rest[4]);
            if kind == HEADERS || kind == CONTINUATION {
                fragment.extend_from_slice(&rest[FRAME_HEADER..FRAME_HEADER + len]);
                if flags & END_HEADERS != 0 {
                    let mut hs = Vec::new();
                    dec.decode_with_cb(&fragment, |n, v| hs.push((n.into_owned(), v.into_owned())))
                        .unwrap();
                    blocks.push(hs);
                    fragment.clear();
                }
            }
            rest = &rest[FRAME_HEADER + len..];
        }
        blocks
    }

    /// Feeds `input` in pieces of `step` bytes and returns what h2 would read.
    fn run(input: &[u8], step: usize) -> Vec<u8> {
        let mut a = Authority::new(());
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            a.input.extend_from_slice(piece);
            a.process();
            out.append(&mut a.output);
        }
        out
    }

    #[test]
    fn a_good_authority_passes_untouched_and_a_url_is_cut_to_host_port() {
        for (authority, expect) in [
            (&b"127.0.0.1:2379"[..], None),
            (b"http://127.0.0.1:2379", Some(&b"127.0.0.1:2379"[..])),
            (b"https://[::1]:2379/", Some(b"[::1]:2379")),
        ] {
            let mut enc = loona_hpack::Encoder::new();
            let mut input = PREFACE.to_vec();
            input.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
            for (stream, path) in [
                (1, &b"/etcdserverpb.KV/Range"[..]),
                (3, b"/etcdserverpb.KV/Put"),
            ] {
                let hs = block(
                    &[
                        (b":method", b"POST"),
                        (b":scheme", b"http"),
                        (b":path", path),
                        (b":authority", authority),
                        (b"content-type", b"application/grpc"),
                    ],
                    &mut enc,
                );
                // The block over a HEADERS and a CONTINUATION frame, then a DATA frame.
                let (a, b) = hs.split_at(hs.len() / 2);
                input.extend(frame(HEADERS, 0, stream, a));
                input.extend(frame(CONTINUATION, END_HEADERS, stream, b));
                input.extend(frame(0x0, END_STREAM, stream, b"\0\0\0\0\0"));
            }
            for step in [1, 7, input.len()] {
                let out = run(&input, step);
                if expect.is_none() {
                    assert_eq!(out, input);
                    continue;
                }
                let blocks = decode(&out, &mut loona_hpack::Decoder::new());
                assert_eq!(blocks.len(), 2);
                for hs in blocks {
                    let got: Vec<_> = hs.iter().filter(|(n, _)| n == b":authority").collect();
                    assert_eq!(got, [&(b":authority".to_vec(), expect.unwrap().to_vec())]);
                    assert_eq!(hs.len(), 5);
                }
                // DATA frames and SETTINGS pass as they came.
                assert!(out
                    .windows(14)
                    .any(|w| w == frame(0x0, END_STREAM, 3, b"\0\0\0\0\0")));
            }
        }
    }

    #[test]
    fn http1_passes_untouched() {
        let input = b"GET /health HTTP/1.1\r\nHost: http://x\r\n\r\n";
        assert_eq!(run(input, 3), input);
    }
}
