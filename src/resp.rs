//! A small blocking RESP2 client: node-to-node calls, JOIN, the follower
//! proxy and the tests. No Redis module API in here.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

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
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::Io(e) => write!(f, "I/O error: {e}"),
            RespError::Protocol(e) => write!(f, "protocol error: {e}"),
            RespError::Timeout => write!(f, "timed out"),
            RespError::Closed => write!(f, "connection closed"),
            RespError::Auth(e) => write!(f, "authentication failed: {e}"),
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

/// Appends `*N\r\n$len\r\narg\r\n...` (binary safe).
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let rel = buf.get(from..)?.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[from..from + rel], from + rel + 2))
}

fn int_of(b: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RespError::Protocol(format!("bad integer {:?}", String::from_utf8_lossy(b))))
}

/// Parses one value at `pos`: Ok(None) when more bytes are needed.
fn parse_at(buf: &[u8], pos: usize) -> Result<Option<(RespValue, usize)>, RespError> {
    let Some(&t) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((l, next)) = line(buf, pos + 1) else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(l).into_owned();
    Ok(Some(match t {
        b'+' => (RespValue::Simple(text()), next),
        b'-' => (RespValue::Error(text()), next),
        b':' => (RespValue::Integer(int_of(l)?), next),
        b'$' => {
            let n = int_of(l)?;
            if n < 0 {
                return Ok(Some((RespValue::Bulk(None), next)));
            }
            let end = next + n as usize;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError::Protocol("bulk string not terminated".into()));
            }
            (RespValue::Bulk(Some(buf[next..end].to_vec())), end + 2)
        }
        b'*' => {
            let n = int_of(l)?;
            if n < 0 {
                return Ok(Some((RespValue::Array(None), next)));
            }
            let mut items = Vec::with_capacity(n.min(1024) as usize);
            let mut p = next;
            for _ in 0..n {
                match parse_at(buf, p)? {
                    Some((v, np)) => {
                        items.push(v);
                        p = np;
                    }
                    None => return Ok(None),
                }
            }
            (RespValue::Array(Some(items)), p)
        }
        other => {
            return Err(RespError::Protocol(format!(
                "unexpected type byte {other:#x}"
            )))
        }
    }))
}

/// Incremental parser: `Ok(Some((value, consumed)))`, or `Ok(None)` when
/// the buffer holds only part of a value.
pub fn parse(buf: &[u8]) -> Result<Option<(RespValue, usize)>, RespError> {
    parse_at(buf, 0)
}

/// One TCP connection to a Redis server.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    /// Connects with a timeout; `io_timeout` bounds every read and write.
    /// With `auth`, sends AUTH first and fails unless it is accepted.
    pub fn connect(
        addr: &str,
        connect_timeout: Duration,
        io_timeout: Duration,
        auth: Option<(&str, &str)>,
    ) -> Result<Connection, RespError> {
        let sa = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| RespError::Protocol(format!("cannot resolve {addr}")))?;
        let stream = TcpStream::connect_timeout(&sa, connect_timeout)?;
        stream.set_nodelay(true)?;
        let mut c = Connection {
            stream,
            buf: Vec::with_capacity(4096),
        };
        c.set_io_timeout(io_timeout);
        if let Some((user, pass)) = auth {
            match c.call(&[b"AUTH".as_slice(), user.as_bytes(), pass.as_bytes()])? {
                RespValue::Simple(s) if s == "OK" => {}
                RespValue::Error(e) => return Err(RespError::Auth(e)),
                other => return Err(RespError::Auth(format!("unexpected reply {other:?}"))),
            }
        }
        Ok(c)
    }

    pub fn set_io_timeout(&mut self, t: Duration) {
        let t = Some(t.max(Duration::from_millis(1)));
        let _ = self.stream.set_read_timeout(t);
        let _ = self.stream.set_write_timeout(t);
    }

    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<(), RespError> {
        let mut out = Vec::new();
        encode_command(args, &mut out);
        self.stream.write_all(&out)?;
        Ok(())
    }

    /// Several commands in one write (pipelining); read one reply each.
    pub fn send_many(&mut self, cmds: &[Vec<Vec<u8>>]) -> Result<(), RespError> {
        let mut out = Vec::new();
        for c in cmds {
            encode_command(c, &mut out);
        }
        self.stream.write_all(&out)?;
        Ok(())
    }

    /// One reply; a server error is `Ok(RespValue::Error)`.
    pub fn recv(&mut self) -> Result<RespValue, RespError> {
        loop {
            if let Some((v, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(v);
            }
            let mut chunk = [0u8; 16384];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(RespError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<RespValue, RespError> {
        self.send(args)?;
        self.recv()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_binary_commands() {
        let mut out = Vec::new();
        encode_command(&[b"SET".as_slice(), b"k\r\n", b"\0\xff"], &mut out);
        let (v, used) = parse(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!(
            v,
            RespValue::Array(Some(vec![
                RespValue::Bulk(Some(b"SET".to_vec())),
                RespValue::Bulk(Some(b"k\r\n".to_vec())),
                RespValue::Bulk(Some(b"\0\xff".to_vec())),
            ]))
        );
    }

    #[test]
    fn parses_every_type_and_waits_for_partial_input() {
        let input = b"*5\r\n+OK\r\n-ERR bad\r\n:42\r\n$-1\r\n*-1\r\n";
        let (v, _) = parse(input).unwrap().unwrap();
        assert_eq!(
            v,
            RespValue::Array(Some(vec![
                RespValue::Simple("OK".into()),
                RespValue::Error("ERR bad".into()),
                RespValue::Integer(42),
                RespValue::Bulk(None),
                RespValue::Array(None),
            ]))
        );
        for cut in 0..input.len() {
            assert!(parse(&input[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b":notanumber\r\n").is_err());
        assert!(parse(b"$3\r\nabcXY").is_err());
    }

    #[test]
    fn connecting_to_a_closed_port_fails_quickly() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let t = std::time::Instant::now();
        assert!(
            Connection::connect(&addr, Duration::from_secs(1), Duration::from_secs(1), None)
                .is_err()
        );
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn talks_to_a_peer_and_sees_it_close() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 1024];
            let mut got = Vec::new();
            let count = |got: &[u8]| {
                let (mut n, mut p) = (0, 0);
                while let Ok(Some((_, used))) = parse_at(got, p) {
                    p = used;
                    n += 1;
                }
                n
            };
            // AUTH first, answered before the two pipelined commands arrive.
            for (want, reply) in [(1, &b"+OK\r\n"[..]), (3, b"$4\r\na\r\nb\r\n-ERR nope\r\n")] {
                while count(&got) < want {
                    let n = s.read(&mut buf).unwrap();
                    got.extend_from_slice(&buf[..n]);
                }
                s.write_all(reply).unwrap();
            }
            got
        });
        let mut c = Connection::connect(
            &addr,
            Duration::from_secs(1),
            Duration::from_secs(2),
            Some(("u", "p")),
        )
        .unwrap();
        c.send_many(&[vec![b"GET".to_vec(), b"k".to_vec()], vec![b"X".to_vec()]])
            .unwrap();
        assert_eq!(c.recv().unwrap(), RespValue::Bulk(Some(b"a\r\nb".to_vec())));
        assert_eq!(c.recv().unwrap(), RespValue::Error("ERR nope".into()));
        let got = server.join().unwrap();
        assert!(got.starts_with(b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$1\r\np\r\n"));
        assert!(matches!(c.recv(), Err(RespError::Closed)));
    }
}
