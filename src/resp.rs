//! A small blocking RESP2 client: node-to-node calls, JOIN, the follower
//! proxy and the tests, over plain TCP or TLS. No Redis module API in here.
//!
//! The parser is incremental (a reply may arrive in pieces) and also reads
//! the simple RESP3 types, mapped to what RESP2 would have sent, so a
//! connection that was switched to RESP3 still parses.

use std::fmt;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use openssl::error::ErrorStack;
use openssl::ssl::{ErrorCode, HandshakeError, Ssl, SslContext, SslStream};
use openssl::x509::X509VerifyResult;

#[derive(Clone, Debug, PartialEq)]
pub enum RespValue {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<RespValue>>),
}

#[derive(Debug)]
pub enum RespError {
    Io(io::Error),
    Protocol(String),
    Timeout,
    Closed,
    Auth(String),
    /// The TLS handshake or a TLS record failed (the reason, one line).
    Tls(String),
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::Io(e) => write!(f, "I/O error: {e}"),
            RespError::Protocol(e) => write!(f, "protocol error: {e}"),
            RespError::Timeout => write!(f, "timed out"),
            RespError::Closed => write!(f, "connection closed"),
            RespError::Auth(e) => write!(f, "authentication failed: {e}"),
            RespError::Tls(e) => write!(f, "TLS: {e}"),
        }
    }
}

impl std::error::Error for RespError {}

impl From<io::Error> for RespError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => RespError::Timeout,
            _ => RespError::Io(e),
        }
    }
}

/// Largest bulk string accepted: Redis's default `proto-max-bulk-len`. A
/// bigger length is a corrupt stream, not something to wait for.
const MAX_BULK_LEN: i64 = 512 * 1024 * 1024;
/// Nesting limit, so a hostile reply cannot overflow the stack.
const MAX_DEPTH: usize = 128;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// Appends `*N\r\n$len\r\narg\r\n...` (binary safe).
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    encode_args(args, out);
}

pub fn encode_args<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let a = a.as_ref();
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The line starting at `from`, without its CRLF, and the position after it.
fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(from..)?;
    let mut i = 0;
    while let Some(rel) = rest[i..].iter().position(|&b| b == b'\r') {
        let cr = i + rel;
        match rest.get(cr + 1) {
            Some(b'\n') => return Some((&rest[..cr], from + cr + 2)),
            Some(_) => i = cr + 1,
            None => return None,
        }
    }
    None
}

fn int_of(b: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RespError::Protocol(format!("bad integer {:?}", String::from_utf8_lossy(b))))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One value's header, decoded.
enum Item<'a> {
    /// `+ - : _ , # (`: everything is on the line.
    Line(u8, &'a [u8]),
    /// `$ = !`: a length-prefixed payload (`None`: null bulk).
    Blob(u8, Option<&'a [u8]>),
    /// `* ~ > %`: this many child values follow (`None`: null array).
    Aggregate(Option<usize>),
}

/// Decodes the header at `pos` (for blobs, with their payload).
/// `Ok(None)`: more bytes are needed.
fn item(buf: &[u8], pos: usize) -> Result<Option<(Item<'_>, usize)>, RespError> {
    let Some(&t) = buf.get(pos) else {
        return Ok(None);
    };
    if !b"+-:_,#($=!*~>%".contains(&t) {
        return Err(RespError::Protocol(format!(
            "unexpected type byte {t:#04x}"
        )));
    }
    let Some((l, next)) = line(buf, pos + 1) else {
        return Ok(None);
    };
    Ok(Some(match t {
        b'$' | b'=' | b'!' => {
            let n = int_of(l)?;
            if n == -1 {
                (Item::Blob(t, None), next)
            } else if !(0..=MAX_BULK_LEN).contains(&n) {
                return Err(RespError::Protocol(format!("bad bulk length {n}")));
            } else {
                let end = next + n as usize;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(RespError::Protocol("bulk string not terminated".into()));
                }
                (Item::Blob(t, Some(&buf[next..end])), end + 2)
            }
        }
        b'*' | b'~' | b'>' | b'%' => {
            let n = int_of(l)?;
            let count = match n {
                -1 => None,
                n if n < 0 => return Err(RespError::Protocol(format!("bad array length {n}"))),
                n if t == b'%' => Some(
                    usize::try_from(n)
                        .ok()
                        .and_then(|n| n.checked_mul(2))
                        .ok_or_else(|| RespError::Protocol(format!("bad map length {n}")))?,
                ),
                n => Some(
                    usize::try_from(n)
                        .map_err(|_| RespError::Protocol(format!("bad array length {n}")))?,
                ),
            };
            (Item::Aggregate(count), next)
        }
        _ => {
            match t {
                b':' => {
                    int_of(l)?;
                }
                b'#' if l != b"t" && l != b"f" => {
                    return Err(RespError::Protocol("bad boolean".into()))
                }
                b'_' if !l.is_empty() => return Err(RespError::Protocol("bad null".into())),
                _ => {}
            }
            (Item::Line(t, l), next)
        }
    }))
}

/// Where a scan for one complete value stands, so that a value arriving in
/// many reads is scanned once in total rather than once per read.
#[derive(Default)]
struct Scan {
    pos: usize,
    /// Children still expected by each open aggregate, innermost last.
    open: Vec<usize>,
}

impl Scan {
    /// Advances over `buf`: `Ok(Some(end))` once a whole value is there.
    fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, RespError> {
        loop {
            let Some((it, next)) = item(buf, self.pos)? else {
                return Ok(None);
            };
            self.pos = next;
            if let Item::Aggregate(Some(n)) = it {
                if n > 0 {
                    if self.open.len() >= MAX_DEPTH {
                        return Err(RespError::Protocol("nesting too deep".into()));
                    }
                    self.open.push(n);
                    continue;
                }
            }
            // One value complete: it may complete its parents too.
            loop {
                match self.open.last_mut() {
                    None => return Ok(Some(self.pos)),
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// Builds the value at `pos` of a buffer a [`Scan`] found complete.
fn build(buf: &[u8], pos: usize) -> Result<(RespValue, usize), RespError> {
    let (it, next) =
        item(buf, pos)?.ok_or_else(|| RespError::Protocol("truncated value".into()))?;
    Ok(match it {
        Item::Line(t, l) => (
            match t {
                b'+' => RespValue::Simple(text(l)),
                b'-' => RespValue::Error(text(l)),
                b':' => RespValue::Integer(int_of(l)?),
                b'_' => RespValue::Bulk(None),
                b'#' => RespValue::Integer((l == b"t") as i64),
                // Doubles and big numbers: RESP2 sends them as bulk strings.
                _ => RespValue::Bulk(Some(l.to_vec())),
            },
            next,
        ),
        Item::Blob(b'!', Some(b)) => (RespValue::Error(text(b)), next),
        // Verbatim strings start with a 3-letter format and a colon.
        Item::Blob(b'=', Some(b)) => (
            RespValue::Bulk(Some(b.get(4..).unwrap_or_default().to_vec())),
            next,
        ),
        Item::Blob(_, b) => (RespValue::Bulk(b.map(<[u8]>::to_vec)), next),
        Item::Aggregate(None) => (RespValue::Array(None), next),
        // Maps come flat (key, value, key, value...), as RESP2 sends them.
        Item::Aggregate(Some(n)) => {
            let mut items = Vec::with_capacity(n.min(1024));
            let mut p = next;
            for _ in 0..n {
                let (v, np) = build(buf, p)?;
                items.push(v);
                p = np;
            }
            (RespValue::Array(Some(items)), p)
        }
    })
}

/// Incremental parser: `Ok(Some((value, consumed)))`, or `Ok(None)` when
/// the buffer holds only part of a value.
pub fn parse(buf: &[u8]) -> Result<Option<(RespValue, usize)>, RespError> {
    match Scan::default().advance(buf)? {
        None => Ok(None),
        Some(_) => build(buf, 0).map(Some),
    }
}

/// Closes a [`Connection`] from another thread: its blocked `send` or
/// `recv` returns at once (used to stop a peer's sender thread promptly).
pub struct Closer(TcpStream);

impl Closer {
    pub fn close(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// The socket under a connection. Each read and write either waits (up to
/// the socket's timeouts) or, with `dontwait`, returns WouldBlock at once.
/// Per call, not per socket: the Raft thread flushes without waiting and
/// the sender thread then finishes the write waiting, on one socket, also
/// under TLS (where OpenSSL does the reads and writes through this).
struct Sock {
    tcp: TcpStream,
    dontwait: bool,
}

impl Sock {
    fn flags(&self) -> libc::c_int {
        if self.dontwait {
            libc::MSG_DONTWAIT
        } else {
            0
        }
    }

    fn recv_uninit(&mut self, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
        loop {
            // SAFETY: a valid socket; `buf` is writable for its length.
            let n = unsafe {
                libc::recv(
                    self.tcp.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    self.flags(),
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: initialised bytes are valid `MaybeUninit` bytes, and recv
        // only writes bytes into them.
        let buf = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        self.recv_uninit(buf)
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: a valid socket and a valid buffer of buf.len() bytes.
            let n = unsafe {
                libc::send(
                    self.tcp.as_raw_fd(),
                    buf.as_ptr() as *const libc::c_void,
                    buf.len(),
                    self.flags() | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A connection's bytes: plain TCP, or TLS over it.
enum Stream {
    Plain(Sock),
    Tls(Box<SslStream<Sock>>),
}

impl Stream {
    fn sock_mut(&mut self) -> &mut Sock {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_mut(),
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => &s.tcp,
            Stream::Tls(s) => &s.get_ref().tcp,
        }
    }

    /// Reads into the spare capacity of `buf` (no zeroing: a poll that
    /// finds a few bytes of `+OK` must stay cheap); 0 is end of stream.
    fn read_into(&mut self, buf: &mut Vec<u8>, wait: bool) -> io::Result<usize> {
        buf.reserve(READ_CHUNK);
        let len = buf.len();
        let spare = buf.spare_capacity_mut();
        self.sock_mut().dontwait = !wait;
        let n = match self {
            Stream::Plain(s) => s.recv_uninit(spare)?,
            Stream::Tls(s) => match s.ssl_read_uninit(spare) {
                Ok(n) => n,
                Err(e) if e.code() == ErrorCode::ZERO_RETURN => 0,
                Err(e) => return Err(tls_io_error(e)),
            },
        };
        // SAFETY: recv or SSL_read initialised the first n spare bytes.
        unsafe { buf.set_len(len + n) };
        Ok(n)
    }

    /// Writes some of `out`. Under TLS a write that would block must be
    /// retried with the same bytes first: callers keep what did not go and
    /// send it before anything else, as they must anyway.
    fn write(&mut self, out: &[u8], wait: bool) -> io::Result<usize> {
        self.sock_mut().dontwait = !wait;
        match self {
            Stream::Plain(s) => s.write(out),
            Stream::Tls(s) => s.ssl_write(out).map_err(tls_io_error),
        }
    }
}

/// An OpenSSL error as an I/O error: a socket that would block (or timed
/// out) stays WouldBlock; a TLS failure says what TLS reported.
fn tls_io_error(e: openssl::ssl::Error) -> io::Error {
    match e.into_io_error() {
        Ok(io) => io,
        Err(e) => match e.code() {
            ErrorCode::WANT_READ | ErrorCode::WANT_WRITE => io::ErrorKind::WouldBlock.into(),
            _ => io::Error::other(format!(
                "TLS: {}",
                e.ssl_error()
                    .map(tls_reason)
                    .unwrap_or_else(|| e.to_string())
            )),
        },
    }
}

/// OpenSSL's reasons on one line, without its file and line noise, plus
/// what to check when the other node refused this node's certificate.
pub fn tls_reason(stack: &ErrorStack) -> String {
    let mut reasons: Vec<&str> = Vec::new();
    for e in stack.errors() {
        let r = e.reason().unwrap_or("unknown error");
        if !reasons.contains(&r) {
            reasons.push(r);
        }
    }
    if reasons.is_empty() {
        return "unknown TLS error".into();
    }
    let text = reasons.join(": ");
    let refused = [
        "alert unknown ca",
        "alert bad certificate",
        "certificate required",
    ];
    if refused.iter().any(|r| text.contains(r)) {
        format!("{text} (the node refused this node's certificate: is it signed by a CA in the other nodes' tls-ca-cert-file?)")
    } else {
        text
    }
}

const CLOSED_AFTER_HANDSHAKE: &str = "the node closed the connection right after the handshake: it most likely refused this node's certificate (is it signed by a CA in the other nodes' tls-ca-cert-file?)";

/// Runs the TLS handshake as a client, verifying the server's chain with
/// the context's CA (the context decides what is verified).
fn tls_handshake(ctx: &SslContext, sock: Sock) -> Result<SslStream<Sock>, RespError> {
    let ssl = Ssl::new(ctx).map_err(|e| RespError::Tls(tls_reason(&e)))?;
    ssl.connect(sock).map_err(|e| match e {
        HandshakeError::SetupFailure(e) => RespError::Tls(tls_reason(&e)),
        HandshakeError::Failure(m) | HandshakeError::WouldBlock(m) => {
            let v = m.ssl().verify_result();
            if v != X509VerifyResult::OK {
                return RespError::Tls(format!(
                    "the node's certificate is not trusted: {} (is it signed by a CA in this node's tls-ca-cert-file?)",
                    v.error_string()
                ));
            }
            match m.into_error().into_io_error() {
                // The handshake timed out, or the socket failed.
                Ok(io) => RespError::from(io),
                Err(e) => RespError::Tls(
                    e.ssl_error()
                        .map(tls_reason)
                        .unwrap_or_else(|| e.to_string()),
                ),
            }
        }
    })
}

/// One connection to a Redis server, plain or TLS.
///
/// After an error other than [`RespError::Timeout`] on `recv` the stream is
/// out of step with the server: the connection refuses further use (it
/// answers [`RespError::Closed`]) and is best dropped. A receive timeout
/// keeps the bytes read so far, so `recv` may simply be called again.
pub struct Connection {
    stream: Stream,
    buf: Vec<u8>,
    /// Start of the first reply not yet returned.
    rpos: usize,
    scan: Scan,
    broken: bool,
}

impl Connection {
    /// Connects with a timeout (shared by all the addresses `addr` resolves
    /// to); `io_timeout` bounds every read and write. With `auth`, sends
    /// AUTH first and fails unless it is accepted (an empty user sends the
    /// one-argument AUTH of `requirepass`).
    pub fn connect(
        addr: &str,
        connect_timeout: Duration,
        io_timeout: Duration,
        auth: Option<(&str, &str)>,
    ) -> Result<Connection, RespError> {
        Self::connect_with(addr, connect_timeout, io_timeout, auth, None)
    }

    /// [`Connection::connect`], over TLS with `tls` when given. The
    /// handshake must finish within `connect_timeout`.
    pub fn connect_with(
        addr: &str,
        connect_timeout: Duration,
        io_timeout: Duration,
        auth: Option<(&str, &str)>,
        tls: Option<&SslContext>,
    ) -> Result<Connection, RespError> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(RespError::Protocol(format!("cannot resolve {addr}")));
        }
        let deadline = Instant::now() + connect_timeout;
        let mut last_err = None;
        let mut stream = None;
        // "localhost" may resolve to ::1 and 127.0.0.1: try each.
        for sa in &addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() && last_err.is_some() {
                break;
            }
            match TcpStream::connect_timeout(sa, left.max(Duration::from_millis(1))) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some(tcp) = stream else {
            return Err(last_err.map(RespError::from).unwrap_or(RespError::Timeout));
        };
        tcp.set_nodelay(true)?;
        let sock = Sock {
            tcp,
            dontwait: false,
        };
        let stream = match tls {
            None => Stream::Plain(sock),
            Some(ctx) => {
                let t = Some(connect_timeout.max(Duration::from_millis(1)));
                sock.tcp.set_read_timeout(t)?;
                sock.tcp.set_write_timeout(t)?;
                Stream::Tls(Box::new(tls_handshake(ctx, sock)?))
            }
        };
        let mut c = Connection {
            stream,
            buf: Vec::new(),
            rpos: 0,
            scan: Scan::default(),
            broken: false,
        };
        c.set_io_timeout(io_timeout);
        // With TLS 1.3 a server that refuses this node's certificate says
        // so only after the client's side of the handshake is done: the
        // first round trip (AUTH, else a PING whose reply, even -NOAUTH,
        // does not matter) makes connect fail with that reason, rather
        // than the first message.
        let first = match auth {
            Some(("", pass)) => c.call(&[b"AUTH", pass.as_bytes()]),
            Some((user, pass)) => c.call(&[b"AUTH", user.as_bytes(), pass.as_bytes()]),
            None if tls.is_some() => c.call(&[b"PING"]),
            None => return Ok(c),
        };
        let reply = first.map_err(|e| match e {
            // The refusal's alert and the reset that follows it race: a
            // reset may be all that arrives.
            RespError::Closed if tls.is_some() => RespError::Tls(CLOSED_AFTER_HANDSHAKE.into()),
            RespError::Io(io)
                if tls.is_some()
                    && matches!(
                        io.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
                    ) =>
            {
                RespError::Tls(CLOSED_AFTER_HANDSHAKE.into())
            }
            e => e,
        })?;
        if auth.is_some() {
            match reply {
                RespValue::Simple(s) if s == "OK" => {}
                RespValue::Error(e) => return Err(RespError::Auth(e)),
                other => return Err(RespError::Auth(format!("unexpected reply {other:?}"))),
            }
        }
        Ok(c)
    }

    /// Read and write timeout from now on (zero is taken as 1 ms: the
    /// socket API has no zero timeout, and "forever" is never wanted here).
    pub fn set_io_timeout(&mut self, t: Duration) {
        let t = Some(t.max(Duration::from_millis(1)));
        let _ = self.stream.tcp().set_read_timeout(t);
        let _ = self.stream.tcp().set_write_timeout(t);
    }

    /// A handle that closes this connection from another thread.
    pub fn closer(&self) -> Result<Closer, RespError> {
        Ok(Closer(self.stream.tcp().try_clone()?))
    }

    /// Sends one command (one write).
    pub fn send(&mut self, args: &[&[u8]]) -> Result<(), RespError> {
        let mut out = Vec::new();
        encode_command(args, &mut out);
        self.write(&out)
    }

    /// Several commands in one write (pipelining); read one reply each.
    pub fn send_many(&mut self, cmds: &[Vec<Vec<u8>>]) -> Result<(), RespError> {
        let mut out = Vec::new();
        for c in cmds {
            encode_args(c, &mut out);
        }
        self.write(&out)
    }

    fn write(&mut self, out: &[u8]) -> Result<(), RespError> {
        if self.broken {
            return Err(RespError::Closed);
        }
        // A partial write leaves the server with half a command.
        let mut done = 0;
        while done < out.len() {
            match self.stream.write(&out[done..], true) {
                Ok(0) => return Err(self.poison(RespError::Closed)),
                Ok(n) => done += n,
                Err(e) => return Err(self.poison(RespError::from(e))),
            }
        }
        Ok(())
    }

    fn poison(&mut self, e: RespError) -> RespError {
        self.broken = true;
        let _ = self.stream.tcp().shutdown(Shutdown::Both);
        e
    }

    /// One reply; a server error is `Ok(RespValue::Error)`.
    pub fn recv(&mut self) -> Result<RespValue, RespError> {
        if self.broken {
            return Err(RespError::Closed);
        }
        loop {
            let end = self.scan.advance(&self.buf).map_err(|e| self.poison(e))?;
            if let Some(end) = end {
                return self.take_reply(end);
            }
            self.fill()?;
        }
    }

    /// The reply the scanner found complete, ending at `end`.
    fn take_reply(&mut self, end: usize) -> Result<RespValue, RespError> {
        let (v, used) = build(&self.buf, self.rpos).map_err(|e| self.poison(e))?;
        debug_assert_eq!(used, end);
        self.rpos = end;
        if self.rpos == self.buf.len() {
            self.buf.clear();
            self.rpos = 0;
        }
        self.scan = Scan {
            pos: self.rpos,
            open: std::mem::take(&mut self.scan.open),
        };
        Ok(v)
    }

    /// Drops the replies already returned from the buffer.
    fn compact(&mut self) {
        if self.rpos > 0 {
            self.buf.drain(..self.rpos);
            self.scan.pos -= self.rpos;
            self.rpos = 0;
        }
    }

    /// Reads more bytes, waiting up to the I/O timeout.
    fn fill(&mut self) -> Result<(), RespError> {
        self.compact();
        match self.stream.read_into(&mut self.buf, true) {
            Ok(0) => Err(self.poison(RespError::Closed)),
            Ok(_) => Ok(()),
            Err(e) => match RespError::from(e) {
                RespError::Timeout => Err(RespError::Timeout),
                e => Err(self.poison(e)),
            },
        }
    }

    /// Writes as much of `out` as the socket takes now, without waiting;
    /// returns how many bytes went. The caller keeps the rest and must send
    /// it before anything else (the server holds half a command).
    pub fn try_write(&mut self, out: &[u8]) -> Result<usize, RespError> {
        if self.broken {
            return Err(RespError::Closed);
        }
        let mut done = 0;
        while done < out.len() {
            match self.stream.write(&out[done..], false) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(self.poison(RespError::from(e))),
            }
        }
        Ok(done)
    }

    /// Writes all of `out`, waiting up to the I/O timeout.
    pub fn write_all(&mut self, out: &[u8]) -> Result<(), RespError> {
        self.write(out)
    }

    /// A reply if one has arrived, without waiting. With `read_socket`
    /// false only what was already read is looked at (no system call).
    pub fn try_recv(&mut self, mut read_socket: bool) -> Result<Option<RespValue>, RespError> {
        if self.broken {
            return Err(RespError::Closed);
        }
        loop {
            let end = self.scan.advance(&self.buf).map_err(|e| self.poison(e))?;
            if let Some(end) = end {
                return self.take_reply(end).map(Some);
            }
            if !read_socket {
                return Ok(None);
            }
            read_socket = false;
            self.compact();
            match self.stream.read_into(&mut self.buf, false) {
                Ok(0) => return Err(self.poison(RespError::Closed)),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(self.poison(RespError::from(e))),
            }
        }
    }

    /// Sends one command and reads its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> Result<RespValue, RespError> {
        self.send(args)?;
        self.recv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn bulk(b: &[u8]) -> RespValue {
        RespValue::Bulk(Some(b.to_vec()))
    }

    fn arr(v: Vec<RespValue>) -> RespValue {
        RespValue::Array(Some(v))
    }

    #[test]
    fn try_recv_and_try_write_never_wait_and_keep_partial_replies() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (go, wait) = std::sync::mpsc::channel::<&'static [u8]>();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = vec![0u8; 16];
            s.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"*1\r\n$4\r\nPING\r\n*1");
            while let Ok(out) = wait.recv() {
                s.write_all(out).unwrap();
            }
        });
        let t = Duration::from_secs(5);
        let mut c = Connection::connect(&addr, t, t, None).unwrap();
        assert_eq!(c.try_recv(true).unwrap(), None, "nothing arrived yet");
        let mut out = Vec::new();
        encode_command(&[b"PING"], &mut out);
        encode_command(&[b"PING"], &mut out);
        assert_eq!(c.try_write(&out[..16]).unwrap(), 16);
        go.send(b"+OK\r\n+O").unwrap();
        let first = wait_for_reply(&mut c);
        assert_eq!(first, RespValue::Simple("OK".into()));
        assert_eq!(
            c.try_recv(false).unwrap(),
            None,
            "half a reply stays buffered"
        );
        go.send(b"K\r\n-ERR x\r\n").unwrap();
        assert_eq!(wait_for_reply(&mut c), RespValue::Simple("OK".into()));
        assert_eq!(
            c.try_recv(false).unwrap(),
            Some(RespValue::Error("ERR x".into()))
        );
        drop(go);
        server.join().unwrap();
        assert!(matches!(wait_for_reply_err(&mut c), RespError::Closed));
    }

    fn wait_for_reply(c: &mut Connection) -> RespValue {
        for _ in 0..500 {
            if let Some(v) = c.try_recv(true).unwrap() {
                return v;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no reply");
    }

    fn wait_for_reply_err(c: &mut Connection) -> RespError {
        for _ in 0..500 {
            match c.try_recv(true) {
                Err(e) => return e,
                Ok(Some(v)) => panic!("unexpected {v:?}"),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        panic!("no error");
    }

    #[test]
    fn encode_then_parse_round_trips_binary_arguments() {
        let args: [&[u8]; 4] = [b"SET", b"k\r\n", b"\0\xff\r\n$3\r\n*1\r\n", b""];
        let mut out = Vec::new();
        encode_command(&args, &mut out);
        assert!(out.starts_with(b"*4\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n"));
        let (v, used) = parse(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!(v, arr(args.iter().map(|a| bulk(a)).collect()));
        // Two commands back to back: each parse takes exactly one.
        let first = out.len();
        encode_command(&[b"PING"], &mut out);
        let (v, used) = parse(&out[first..]).unwrap().unwrap();
        assert_eq!((v, used), (arr(vec![bulk(b"PING")]), out.len() - first));
    }

    #[test]
    fn parses_every_resp2_type_nested_and_null() {
        let input =
            b"*6\r\n+OK\r\n-ERR bad thing\r\n:-42\r\n$-1\r\n*-1\r\n*2\r\n*1\r\n$0\r\n\r\n*0\r\n";
        let (v, used) = parse(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        assert_eq!(
            v,
            arr(vec![
                RespValue::Simple("OK".into()),
                RespValue::Error("ERR bad thing".into()),
                RespValue::Integer(-42),
                RespValue::Bulk(None),
                RespValue::Array(None),
                arr(vec![arr(vec![bulk(b"")]), arr(vec![])]),
            ])
        );
        // Trailing bytes of the next reply are not consumed.
        let (v, used) = parse(b"+a\r\n:1\r\n").unwrap().unwrap();
        assert_eq!((v, used), (RespValue::Simple("a".into()), 4));
    }

    #[test]
    fn every_proper_prefix_needs_more_bytes() {
        let mut input = b"*4\r\n$5\r\na\r\nbc\r\n*2\r\n:1\r\n-E\r\n+x\r\n".to_vec();
        input.extend_from_slice(b"$2\r\n\r\n\r\n");
        for cut in 0..input.len() {
            let r = parse(&input[..cut]);
            assert!(matches!(r, Ok(None)), "cut at {cut}: {r:?}");
        }
        assert!(parse(&input).unwrap().is_some());
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &b"?what\r\n"[..],
            b":notanumber\r\n",
            b"$3\r\nabcXY",
            b"$-2\r\n",
            b"*-5\r\n",
            b"$99999999999\r\n",
            b"*x\r\n",
            b"*1\r\n&\r\n",
            b"#x\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn resp3_types_read_as_their_resp2_forms() {
        let input = b"*6\r\n_\r\n,3.5\r\n#t\r\n%1\r\n+k\r\n:1\r\n=7\r\ntxt:abc\r\n!3\r\nERR\r\n";
        let (v, used) = parse(input).unwrap().unwrap();
        assert_eq!(used, input.len());
        assert_eq!(
            v,
            arr(vec![
                RespValue::Bulk(None),
                bulk(b"3.5"),
                RespValue::Integer(1),
                arr(vec![RespValue::Simple("k".into()), RespValue::Integer(1)]),
                bulk(b"abc"),
                RespValue::Error("ERR".into()),
            ])
        );
    }

    #[test]
    fn errors_display_on_one_line() {
        for e in [
            RespError::Io(io::Error::other("x")),
            RespError::Protocol("p".into()),
            RespError::Timeout,
            RespError::Closed,
            RespError::Auth("WRONGPASS".into()),
        ] {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'), "{s:?}");
        }
    }

    /// A `redis-server` on a free port in its own directory, killed on drop
    /// (also when the test panics).
    struct Server {
        child: Child,
        dir: std::path::PathBuf,
        addr: String,
    }

    impl Server {
        fn start(extra: &[&str]) -> Server {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "resp-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let port = free_port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .arg("--dir")
                .arg(&dir)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed for these tests");
            let s = Server {
                child,
                dir,
                addr: format!("127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(&s.addr).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            s
        }

        fn conn(&self, auth: Option<(&str, &str)>) -> Result<Connection, RespError> {
            Connection::connect(
                &self.addr,
                Duration::from_secs(2),
                Duration::from_secs(5),
                auth,
            )
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn redis_ping_set_get_binary_and_errors() {
        let srv = Server::start(&[]);
        let mut c = srv.conn(None).unwrap();
        assert_eq!(
            c.call(&[b"PING"]).unwrap(),
            RespValue::Simple("PONG".into())
        );
        let value: &[u8] = b"a\r\nb\0\xff$5\r\n*2\r\nend";
        assert_eq!(
            c.call(&[b"SET", b"k\r\n", value]).unwrap(),
            RespValue::Simple("OK".into())
        );
        assert_eq!(c.call(&[b"GET", b"k\r\n"]).unwrap(), bulk(value));
        assert_eq!(
            c.call(&[b"GET", b"missing"]).unwrap(),
            RespValue::Bulk(None)
        );
        match c.call(&[b"NOSUCHCOMMAND"]).unwrap() {
            RespValue::Error(e) => assert!(e.starts_with("ERR unknown command"), "{e}"),
            other => panic!("{other:?}"),
        }
        // The connection stays usable after an error reply.
        assert_eq!(
            c.call(&[b"INCRBY", b"n", b"5"]).unwrap(),
            RespValue::Integer(5)
        );
        // A reply much bigger than one read arrives whole.
        let big = vec![7u8; 3 * READ_CHUNK + 11];
        c.call(&[b"SET", b"big", &big]).unwrap();
        assert_eq!(c.call(&[b"GET", b"big"]).unwrap(), bulk(&big));
    }

    #[test]
    fn redis_pipelined_replies_come_back_in_order() {
        let srv = Server::start(&[]);
        let mut c = srv.conn(None).unwrap();
        let cmds: Vec<Vec<Vec<u8>>> = (0..500)
            .map(|i| {
                vec![
                    b"RPUSH".to_vec(),
                    b"l".to_vec(),
                    format!("v{i}").into_bytes(),
                ]
            })
            .chain(std::iter::once(vec![
                b"LRANGE".to_vec(),
                b"l".to_vec(),
                b"0".to_vec(),
                b"-1".to_vec(),
            ]))
            .collect();
        c.send_many(&cmds).unwrap();
        for i in 0..500 {
            assert_eq!(c.recv().unwrap(), RespValue::Integer(i + 1));
        }
        let want: Vec<RespValue> = (0..500).map(|i| bulk(format!("v{i}").as_bytes())).collect();
        assert_eq!(c.recv().unwrap(), arr(want));
    }

    #[test]
    fn redis_auth_with_requirepass() {
        let srv = Server::start(&["--requirepass", "s3cret"]);
        let mut c = srv.conn(Some(("default", "s3cret"))).unwrap();
        assert_eq!(
            c.call(&[b"PING"]).unwrap(),
            RespValue::Simple("PONG".into())
        );
        let mut legacy = srv.conn(Some(("", "s3cret"))).unwrap();
        assert_eq!(
            legacy.call(&[b"PING"]).unwrap(),
            RespValue::Simple("PONG".into())
        );
        match srv.conn(Some(("default", "wrong"))) {
            Err(RespError::Auth(e)) => assert!(e.starts_with("WRONGPASS"), "{e}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a wrong password was accepted"),
        }
        // Without AUTH the server refuses commands (and that is a reply).
        let mut anon = srv.conn(None).unwrap();
        match anon.call(&[b"PING"]).unwrap() {
            RespValue::Error(e) => assert!(e.starts_with("NOAUTH"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn redis_killing_the_client_fails_the_connection() {
        let srv = Server::start(&[]);
        let mut c = srv.conn(None).unwrap();
        let RespValue::Integer(id) = c.call(&[b"CLIENT", b"ID"]).unwrap() else {
            panic!("no client id");
        };
        let mut admin = srv.conn(None).unwrap();
        let id = id.to_string();
        assert_eq!(
            admin
                .call(&[b"CLIENT", b"KILL", b"ID", id.as_bytes()])
                .unwrap(),
            RespValue::Integer(1)
        );
        assert!(c.call(&[b"PING"]).is_err());
        // And it stays failed rather than reading garbage.
        assert!(matches!(c.call(&[b"PING"]), Err(RespError::Closed)));
    }

    #[test]
    fn connecting_to_a_closed_port_fails_quickly() {
        let port = free_port();
        let t = Instant::now();
        let r = Connection::connect(
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(5),
            Duration::from_secs(5),
            None,
        );
        assert!(matches!(r, Err(RespError::Io(_))), "{:?}", r.err());
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn peer_closing_mid_reply_is_closed_and_silence_is_a_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (timed_out, wait_timeout) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            // First connection: half a reply, then close.
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 64];
            let _ = s.read(&mut b).unwrap();
            s.write_all(b"$10\r\nabc").unwrap();
            drop(s);
            // Second: the reply comes in two parts, later than the timeout.
            let (mut s, _) = l.accept().unwrap();
            let _ = s.read(&mut b).unwrap();
            s.write_all(b"$4\r\nab").unwrap();
            // The rest only once the client has seen its timeout.
            wait_timeout.recv().unwrap();
            s.write_all(b"cd\r\n").unwrap();
            let _ = s.read(&mut b);
        });
        let ms = Duration::from_millis;
        let mut c = Connection::connect(&addr, ms(1000), ms(1000), None).unwrap();
        assert!(matches!(c.call(&[b"GET", b"k"]), Err(RespError::Closed)));
        let mut c = Connection::connect(&addr, ms(1000), ms(150), None).unwrap();
        assert!(matches!(c.call(&[b"GET", b"k"]), Err(RespError::Timeout)));
        timed_out.send(()).unwrap();
        // The bytes read before the timeout were kept: waiting longer works.
        c.set_io_timeout(ms(2000));
        assert_eq!(c.recv().unwrap(), bulk(b"abcd"));
        drop(c);
        server.join().unwrap();
    }

    #[test]
    fn closer_unblocks_a_waiting_recv() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let keep = std::thread::spawn(move || l.accept().map(|(s, _)| s));
        let mut c =
            Connection::connect(&addr, Duration::from_secs(1), Duration::from_secs(30), None)
                .unwrap();
        let closer = c.closer().unwrap();
        let t = Instant::now();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            closer.close();
        });
        assert!(c.recv().is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
        drop(keep.join());
    }
}
