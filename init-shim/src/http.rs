//! A minimal HTTP/1.1 client for exactly one request: `GET` with a bearer token,
//! `Connection: close`, over any `Read + Write` stream (rustls in production, byte
//! buffers in tests).
//!
//! Why not a client crate: the same static GET program measured 2.54 MB with ureq 3
//! (rustls/ring) against 1.97 MB over plain rustls, with a 2 MiB (2.10 MB) budget; this
//! module is what the shim needs and no more (docs/init-shim.md, "Size").
//!
//! Invariants: the response (head and body) lives only in zeroizing buffers that never
//! reallocate without wiping the old allocation; the whole response is bounded
//! ([`MAX_HEAD_BYTES`] plus the caller's body limit); framing follows RFC 9112
//! (`Content-Length`, `chunked`, or read-to-close) and anything ambiguous, such as both
//! `Content-Length` and `Transfer-Encoding`, is rejected rather than guessed.

use std::fmt;
use std::io::{self, Read, Write};
use zeroize::Zeroizing;

/// Largest status line plus headers accepted.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Largest chunk-size line accepted.
const MAX_CHUNK_LINE: usize = 1024;
/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 16 * 1024;

/// Why a response could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Reading or writing failed, including timeouts. Worth another attempt.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// The peer closed the connection before the response was complete. Worth another attempt.
    #[error("connection closed before the response was complete")]
    Closed,
    /// The bytes are not a well-formed HTTP/1.x response.
    #[error("malformed HTTP response: {0}")]
    Malformed(&'static str),
    /// The response is larger than allowed.
    #[error("response larger than {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
}

/// The one request the shim makes.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// `Host` header value.
    pub host: &'a str,
    /// Request target, starting with `/`.
    pub path: &'a str,
    /// Bearer token; never logged.
    pub bearer: &'a str,
}

/// A complete response. The body is zeroed on drop; `Debug` shows only its length.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Decoded body.
    pub body: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Sends `GET` and reads the whole response, with a body of at most `max_body` bytes.
pub fn get<S: Read + Write>(
    stream: &mut S,
    req: &Request<'_>,
    max_body: usize,
) -> Result<Response, HttpError> {
    write_request(stream, req)?;
    read_response(stream, max_body)
}

fn write_request<S: Write>(stream: &mut S, req: &Request<'_>) -> Result<(), HttpError> {
    let fields = [req.host, req.path, req.bearer];
    if fields
        .iter()
        .any(|f| f.bytes().any(|b| !b.is_ascii_graphic()))
    {
        return Err(HttpError::Malformed(
            "request field contains whitespace or control bytes",
        ));
    }
    // Sized up front so the buffer holding the token never reallocates.
    let mut out = Zeroizing::new(Vec::with_capacity(
        200 + req.host.len() + req.path.len() + req.bearer.len(),
    ));
    for part in [
        "GET ",
        req.path,
        " HTTP/1.1\r\nHost: ",
        req.host,
        "\r\nAuthorization: Bearer ",
        req.bearer,
        "\r\nAccept: application/json\r\nUser-Agent: aegis-init-shim/",
        env!("CARGO_PKG_VERSION"),
        "\r\nConnection: close\r\n\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
    stream.write_all(&out).map_err(HttpError::Io)?;
    stream.flush().map_err(HttpError::Io)
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Reads one response (after skipping interim 1xx responses).
pub fn read_response<S: Read>(stream: &mut S, max_body: usize) -> Result<Response, HttpError> {
    let mut conn = Conn {
        stream,
        buf: Zeroizing::new(Vec::new()),
        limit: MAX_HEAD_BYTES + max_body + 2 * MAX_CHUNK_LINE,
        max_body,
    };
    let (status, framing, head_end) = loop {
        let head_end = conn.find(0, b"\r\n\r\n", MAX_HEAD_BYTES, head_too_large)?;
        let (status, framing) = parse_head(&conn.buf[..head_end])?;
        if (100..200).contains(&status) {
            if status == 101 {
                return Err(HttpError::Malformed("unexpected 101 Switching Protocols"));
            }
            conn.consume(head_end);
            continue;
        }
        break (status, framing, head_end);
    };
    let body = match framing {
        Framing::Empty => Zeroizing::new(Vec::new()),
        Framing::Length(n) => {
            if n > max_body {
                return Err(HttpError::TooLarge { limit: max_body });
            }
            conn.need(head_end + n)?;
            copy_exact(&conn.buf[head_end..head_end + n])
        }
        Framing::Chunked => {
            conn.consume(head_end);
            conn.chunked_body()?
        }
        Framing::UntilClose => {
            while conn.fill()? {}
            if conn.buf.len() - head_end > max_body {
                return Err(HttpError::TooLarge { limit: max_body });
            }
            copy_exact(&conn.buf[head_end..])
        }
    };
    Ok(Response { status, body })
}

fn copy_exact(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut v = Zeroizing::new(Vec::with_capacity(bytes.len()));
    v.extend_from_slice(bytes);
    v
}

/// Grows `v` so `additional` more bytes fit, wiping the old allocation if it moves.
fn reserve_zeroizing(v: &mut Zeroizing<Vec<u8>>, additional: usize) {
    if v.capacity() - v.len() >= additional {
        return;
    }
    let cap = (v.len() + additional).max(2 * v.capacity()).max(256);
    let mut bigger = Zeroizing::new(Vec::with_capacity(cap));
    bigger.extend_from_slice(v);
    std::mem::swap(v, &mut bigger);
    // `bigger` now holds the old allocation; dropping it zeroes it.
}

/// Parses the status line and headers (`head` ends with the empty line).
fn parse_head(head: &[u8]) -> Result<(u16, Framing), HttpError> {
    let head = std::str::from_utf8(head).map_err(|_| HttpError::Malformed("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = parse_status_line(status_line)?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or(HttpError::Malformed("header without ':'"))?;
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(HttpError::Malformed(
                "invalid header name (or obsolete line folding)",
            ));
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_decimal(value)?;
            if length.is_some_and(|old| old != n) {
                return Err(HttpError::Malformed("conflicting Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if chunked || !value.eq_ignore_ascii_case("chunked") {
                return Err(HttpError::Malformed(
                    "unsupported Transfer-Encoding (only chunked)",
                ));
            }
            chunked = true;
        }
    }
    let framing = match (status, chunked, length) {
        (_, true, Some(_)) => {
            return Err(HttpError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ))
        }
        (204 | 304, _, _) | (100..=199, _, _) => Framing::Empty,
        (_, true, None) => Framing::Chunked,
        (_, false, Some(n)) => Framing::Length(n),
        (_, false, None) => Framing::UntilClose,
    };
    Ok((status, framing))
}

fn parse_status_line(line: &str) -> Result<u16, HttpError> {
    let bad = HttpError::Malformed("invalid status line");
    let rest = line
        .strip_prefix("HTTP/1.")
        .ok_or(HttpError::Malformed("not an HTTP/1.x response"))?;
    let (minor, rest) = rest.split_at_checked(1).ok_or(bad)?;
    if minor != "0" && minor != "1" {
        return Err(HttpError::Malformed("not an HTTP/1.x response"));
    }
    let code = rest
        .strip_prefix(' ')
        .and_then(|r| r.get(..3))
        .ok_or(HttpError::Malformed("invalid status line"))?;
    let after = &rest[1 + code.len()..];
    if !code.bytes().all(|b| b.is_ascii_digit()) || !(after.is_empty() || after.starts_with(' ')) {
        return Err(HttpError::Malformed("invalid status code"));
    }
    let status: u16 = code
        .parse()
        .map_err(|_| HttpError::Malformed("invalid status code"))?;
    if !(100..=599).contains(&status) {
        return Err(HttpError::Malformed("status code out of range"));
    }
    Ok(status)
}

fn parse_decimal(s: &str) -> Result<usize, HttpError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::Malformed("invalid Content-Length"));
    }
    s.parse()
        .map_err(|_| HttpError::Malformed("Content-Length out of range"))
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The read side: a bounded, zeroizing buffer in front of the stream.
struct Conn<'s, S> {
    stream: &'s mut S,
    buf: Zeroizing<Vec<u8>>,
    limit: usize,
    max_body: usize,
}

impl<S: Read> Conn<'_, S> {
    /// Reads more bytes. `Ok(false)` on a clean end of stream.
    fn fill(&mut self) -> Result<bool, HttpError> {
        let len = self.buf.len();
        if len >= self.limit {
            return Err(HttpError::TooLarge {
                limit: self.max_body,
            });
        }
        let want = READ_CHUNK.min(self.limit - len);
        reserve_zeroizing(&mut self.buf, want);
        self.buf.resize(len + want, 0);
        let read = loop {
            match self.stream.read(&mut self.buf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match read {
            Ok(n) => {
                self.buf.truncate(len + n);
                Ok(n > 0)
            }
            Err(e) => {
                self.buf.truncate(len);
                // rustls reports a close without close_notify this way: possibly truncated.
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Err(HttpError::Closed)
                } else {
                    Err(HttpError::Io(e))
                }
            }
        }
    }

    /// Reads until at least `end` bytes are buffered.
    fn need(&mut self, end: usize) -> Result<(), HttpError> {
        while self.buf.len() < end {
            if !self.fill()? {
                return Err(HttpError::Closed);
            }
        }
        Ok(())
    }

    /// Index just past the first `needle` at or after `from`, reading as needed; at most
    /// `max` bytes after `from` are searched, beyond that `too_long()` is the error.
    fn find(
        &mut self,
        from: usize,
        needle: &[u8],
        max: usize,
        too_long: fn() -> HttpError,
    ) -> Result<usize, HttpError> {
        let mut scanned = from;
        loop {
            let window = &self.buf[scanned..self.buf.len().min(from + max)];
            if let Some(i) = window.windows(needle.len()).position(|w| w == needle) {
                return Ok(scanned + i + needle.len());
            }
            if self.buf.len() >= from + max {
                return Err(too_long());
            }
            // A needle may straddle two reads: rescan its last bytes.
            scanned = self.buf.len().saturating_sub(needle.len() - 1).max(from);
            if !self.fill()? {
                return Err(HttpError::Closed);
            }
        }
    }

    /// Drops the first `n` buffered bytes (the allocation keeps its capacity and is
    /// zeroed in full on drop).
    fn consume(&mut self, n: usize) {
        self.buf.drain(..n);
    }

    /// Decodes a chunked body from the start of the buffer.
    fn chunked_body(&mut self) -> Result<Zeroizing<Vec<u8>>, HttpError> {
        let mut body = Zeroizing::new(Vec::new());
        loop {
            let line_end = self.find(0, b"\r\n", MAX_CHUNK_LINE, line_too_long)?;
            let line = &self.buf[..line_end - 2];
            let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
            let size = parse_hex(size_text.trim_ascii())?;
            self.consume(line_end);
            if size == 0 {
                // Trailers (ignored, bounded like a head), then the empty line.
                let mut trailers = 0;
                loop {
                    let end = self.find(0, b"\r\n", MAX_HEAD_BYTES - trailers, head_too_large)?;
                    self.consume(end);
                    if end == 2 {
                        return Ok(body);
                    }
                    trailers += end;
                }
            }
            if size > self.max_body - body.len() {
                return Err(HttpError::TooLarge {
                    limit: self.max_body,
                });
            }
            self.need(size + 2)?;
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(HttpError::Malformed("chunk data not followed by CRLF"));
            }
            reserve_zeroizing(&mut body, size);
            body.extend_from_slice(&self.buf[..size]);
            self.consume(size + 2);
        }
    }
}

fn head_too_large() -> HttpError {
    HttpError::TooLarge {
        limit: MAX_HEAD_BYTES,
    }
}

fn line_too_long() -> HttpError {
    HttpError::Malformed("chunk-size line too long")
}

fn parse_hex(s: &[u8]) -> Result<usize, HttpError> {
    let bad = HttpError::Malformed("invalid chunk size");
    if s.is_empty() || s.len() > 15 {
        return Err(bad);
    }
    s.iter().try_fold(0usize, |acc, &b| {
        let d = (b as char)
            .to_digit(16)
            .ok_or(HttpError::Malformed("invalid chunk size"))?;
        Ok(acc * 16 + d as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that returns its input `step` bytes per read and records what is written.
    struct Mock {
        input: Vec<u8>,
        pos: usize,
        step: usize,
        written: Vec<u8>,
        end: Option<io::ErrorKind>,
    }

    impl Mock {
        fn new(input: &[u8], step: usize) -> Self {
            Self {
                input: input.to_vec(),
                pos: 0,
                step,
                written: Vec::new(),
                end: None,
            }
        }
    }

    impl Read for Mock {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.input.len() {
                if let Some(kind) = self.end {
                    return Err(io::Error::new(kind, "mock"));
                }
            }
            let n = self.step.min(out.len()).min(self.input.len() - self.pos);
            out[..n].copy_from_slice(&self.input[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    impl Write for Mock {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn read(input: &str) -> Result<Response, HttpError> {
        for step in [1, 3, 7, 4096] {
            let mut m = Mock::new(input.as_bytes(), step);
            let one = read_response(&mut m, 1024);
            let mut m = Mock::new(input.as_bytes(), 4096);
            let other = read_response(&mut m, 1024);
            // The result must not depend on how the bytes were split across reads.
            assert_eq!(format!("{one:?}"), format!("{other:?}"), "step {step}");
        }
        read_response(&mut Mock::new(input.as_bytes(), 5), 1024)
    }

    fn body(r: &Response) -> &str {
        std::str::from_utf8(&r.body).unwrap()
    }

    const REQ: Request<'static> = Request {
        host: "safe:8443",
        path: "/v1/secrets",
        bearer: "tok.en",
    };

    #[test]
    fn writes_the_exact_request() {
        let mut m = Mock::new(b"HTTP/1.1 204 No Content\r\n\r\n", 64);
        let r = get(&mut m, &REQ, 10).unwrap();
        assert_eq!(r.status, 204);
        let expected = format!(
            "GET /v1/secrets HTTP/1.1\r\nHost: safe:8443\r\nAuthorization: Bearer tok.en\r\n\
             Accept: application/json\r\nUser-Agent: aegis-init-shim/{}\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(String::from_utf8(m.written).unwrap(), expected);
    }

    #[test]
    fn refuses_to_write_header_injection() {
        let mut m = Mock::new(b"", 1);
        let req = Request {
            bearer: "a\r\nX-Evil: 1",
            ..REQ
        };
        assert!(matches!(
            get(&mut m, &req, 10),
            Err(HttpError::Malformed(_))
        ));
        assert!(m.written.is_empty());
    }

    #[test]
    fn reads_content_length_body() {
        let r = read(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 5\r\n\r\nhello",
        )
        .unwrap();
        assert_eq!((r.status, body(&r)), (200, "hello"));
    }

    #[test]
    fn reads_chunked_body_with_extensions_and_trailers() {
        let r = read(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n\
             5;ext=1\r\nhello\r\nA \r\n, world!!!\r\n0\r\nX-Trailer: t\r\n\r\n",
        )
        .unwrap();
        assert_eq!(body(&r), "hello, world!!!");
    }

    #[test]
    fn reads_until_close_without_length() {
        let r = read("HTTP/1.0 503 Service Unavailable\r\n\r\n{\"error\":1}").unwrap();
        assert_eq!((r.status, body(&r)), (503, "{\"error\":1}"));
    }

    #[test]
    fn skips_interim_responses_and_honours_no_body_statuses() {
        let r = read("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .unwrap();
        assert_eq!(body(&r), "ok");
        let r = read("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.len()), (304, 0));
        assert!(matches!(
            read("HTTP/1.1 101 Switching\r\n\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn equal_duplicate_lengths_are_fine_conflicting_ones_are_not() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(body(&read(ok).unwrap()), "ok");
        let bad = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!";
        assert!(matches!(read(bad), Err(HttpError::Malformed(_))));
    }

    #[test]
    fn rejects_malformed_heads() {
        for bad in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 700 Odd\r\n\r\n",
            "HTTP/1.3 200 OK\r\n\r\n",
            "SSH-2.0-OpenSSH\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        ] {
            assert!(matches!(read(bad), Err(HttpError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn rejects_malformed_chunks() {
        for bad in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        ] {
            assert!(matches!(read(bad), Err(HttpError::Malformed(_))), "{bad:?}");
        }
    }

    #[test]
    fn bounds_the_body_in_every_framing() {
        let big = "x".repeat(1025);
        let by_length = format!("HTTP/1.1 200 OK\r\nContent-Length: 1025\r\n\r\n{big}");
        let by_chunks = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n{}\r\n201\r\n{}\r\n0\r\n\r\n",
            &big[..512],
            &big[..513]
        );
        let by_close = format!("HTTP/1.1 200 OK\r\n\r\n{big}");
        for input in [by_length, by_chunks, by_close] {
            assert!(matches!(
                read(&input),
                Err(HttpError::TooLarge { limit: 1024 })
            ));
        }
        let exactly = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n{}",
            &big[..1024]
        );
        assert_eq!(read(&exactly).unwrap().body.len(), 1024);
    }

    #[test]
    fn bounds_the_head() {
        let huge = format!(
            "HTTP/1.1 200 OK\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert!(matches!(
            read(&huge),
            Err(HttpError::TooLarge {
                limit: MAX_HEAD_BYTES
            })
        ));
    }

    #[test]
    fn truncated_responses_are_closed_not_malformed() {
        for cut in [
            "",
            "HTTP/1.1 200 OK\r\nContent-Le",
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ] {
            assert!(matches!(read(cut), Err(HttpError::Closed)), "{cut:?}");
        }
    }

    #[test]
    fn io_errors_and_unclean_tls_close_are_reported() {
        let mut m = Mock::new(b"HTTP/1.1 200 OK\r\n", 64);
        m.end = Some(io::ErrorKind::TimedOut);
        assert!(
            matches!(read_response(&mut m, 10), Err(HttpError::Io(e)) if e.kind() == io::ErrorKind::TimedOut)
        );
        let mut m = Mock::new(b"HTTP/1.1 200 OK\r\n\r\nbody", 64);
        m.end = Some(io::ErrorKind::UnexpectedEof);
        assert!(matches!(read_response(&mut m, 10), Err(HttpError::Closed)));
    }

    #[test]
    fn growing_a_buffer_keeps_its_content() {
        let mut v = Zeroizing::new(b"abc".to_vec());
        reserve_zeroizing(&mut v, 10_000);
        assert!(v.capacity() >= 10_003);
        assert_eq!(&v[..], b"abc");
    }
}
