//! A minimal RESP2 client over a std `TcpStream`, with connect and
//! per-operation timeouts, and the reply classification the workloads use
//! (ok / fail / info, following `-MOVED` to the leader for a few hops).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text, for simple and bulk strings.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// The credentials of a run whose nodes have `requirepass` set: every
/// connection the runner opens sends `AUTH [user] password` first, and the
/// nodes start with the matching options (`server_args`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    /// A named ACL user (also `raft.cluster-user`); None: `default`.
    pub user: Option<String>,
    pub password: String,
}

impl Auth {
    /// From the runner's `--password` and `--cluster-user`: no password, no
    /// auth; a user needs a password; the user `default` is the default.
    pub fn from_flags(
        password: Option<String>,
        user: Option<String>,
    ) -> Result<Option<Auth>, String> {
        match (password, user) {
            (None, None) => Ok(None),
            (None, Some(_)) => Err("--cluster-user needs --password".into()),
            (Some(p), _) if p.is_empty() => Err("--password must not be empty".into()),
            (Some(_), Some(u)) if u.is_empty() || u.contains(char::is_whitespace) => {
                Err(format!("--cluster-user '{u}': expected one word"))
            }
            (Some(password), user) => Ok(Some(Auth {
                user: user.filter(|u| u != "default"),
                password,
            })),
        }
    }

    /// The `AUTH` command.
    pub fn command(&self) -> Vec<&str> {
        let mut v = vec!["AUTH"];
        if let Some(u) = &self.user {
            v.push(u);
        }
        v.push(&self.password);
        v
    }

    /// The redis-server options of a node: `requirepass` and the module's
    /// `raft.cluster-password`; with a named user also that user (all
    /// commands, keys and channels, the same password) and
    /// `raft.cluster-user`, so that the nodes authenticate to each other
    /// as it. Every value is one argument (redis-server quotes each).
    pub fn server_args(&self) -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--requirepass".into(),
            self.password.clone(),
            "--raft.cluster-password".into(),
            self.password.clone(),
        ];
        if let Some(u) = &self.user {
            v.extend([
                "--user".into(),
                u.clone(),
                "on".into(),
                format!(">{}", self.password),
                "~*".into(),
                "&*".into(),
                "+@all".into(),
                "--raft.cluster-user".into(),
                u.clone(),
            ]);
        }
        v
    }
}

/// One connection to one server.
pub struct Conn {
    reader: BufReader<TcpStream>,
    /// `host:port` it was opened to.
    pub addr: String,
}

impl Conn {
    /// Opens a connection; `op_timeout` bounds every later read and write.
    /// With `auth` it sends `AUTH` first: an error reply to it is an error
    /// of kind `PermissionDenied`.
    pub fn connect(
        addr: &str,
        connect_timeout: Duration,
        op_timeout: Duration,
        auth: Option<&Auth>,
    ) -> io::Result<Conn> {
        let mut last = io::Error::other(format!("cannot resolve {addr}"));
        for sa in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&sa, connect_timeout) {
                Ok(s) => {
                    s.set_read_timeout(Some(op_timeout))?;
                    s.set_write_timeout(Some(op_timeout))?;
                    s.set_nodelay(true)?;
                    let mut c = Conn {
                        reader: BufReader::new(s),
                        addr: addr.to_string(),
                    };
                    if let Some(a) = auth {
                        let r = c.call(&a.command()).map_err(|e| {
                            io::Error::new(e.kind(), format!("AUTH: {}", io_text(&e)))
                        })?;
                        match r {
                            Reply::Simple(_) => {}
                            other => {
                                return Err(io::Error::new(
                                    io::ErrorKind::PermissionDenied,
                                    format!("AUTH: {other:?}"),
                                ))
                            }
                        }
                    }
                    return Ok(c);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Changes the timeout of later reads and writes.
    pub fn set_timeout(&mut self, t: Duration) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(t))?;
        self.reader.get_ref().set_write_timeout(Some(t))
    }

    /// Sends one command and reads its reply. An `Err` means the outcome is
    /// unknown (the command may have been received): drop the connection.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        self.send(args)?;
        self.read_reply()
    }

    /// Sends a command without reading its reply.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            let a = a.as_ref();
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        let s = self.reader.get_mut();
        s.write_all(&buf)?;
        s.flush()
    }

    fn line(&mut self) -> io::Result<String> {
        let mut l = Vec::new();
        let n = self.reader.read_until(b'\n', &mut l)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        if !l.ends_with(b"\r\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated reply",
            ));
        }
        l.truncate(l.len() - 2);
        Ok(String::from_utf8_lossy(&l).into_owned())
    }

    /// Reads one reply.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let l = self.line()?;
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed RESP reply");
        let (t, rest) = l.split_at(l.len().min(1));
        match t {
            "+" => Ok(Reply::Simple(rest.to_string())),
            "-" => Ok(Reply::Error(rest.to_string())),
            ":" => rest.parse().map(Reply::Int).map_err(|_| bad()),
            "$" => {
                let n: i64 = rest.parse().map_err(|_| bad())?;
                if n < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let mut b = vec![0u8; n as usize + 2];
                self.reader.read_exact(&mut b)?;
                b.truncate(n as usize);
                Ok(Reply::Bulk(Some(b)))
            }
            "*" => {
                let n: i64 = rest.parse().map_err(|_| bad())?;
                if n < 0 {
                    return Ok(Reply::Array(None));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.read_reply()?);
                }
                Ok(Reply::Array(Some(v)))
            }
            _ => Err(bad()),
        }
    }
}

/// How an operation ended, Jepsen-style.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Certainly not applied (`:fail`).
    Fail(String),
    /// May or may not have been applied (`:info`).
    Info(String),
}

impl Failure {
    pub fn text(&self) -> &str {
        match self {
            Failure::Fail(s) | Failure::Info(s) => s,
        }
    }
}

/// Where the nodes are, for clients: names and `ip:port` addresses.
#[derive(Clone, Debug)]
pub struct Directory {
    pub names: Vec<String>,
    pub addrs: Vec<String>,
    pub connect_timeout: Duration,
    pub op_timeout: Duration,
    /// Sent first on every connection (nodes with `requirepass`).
    pub auth: Option<Auth>,
}

impl Directory {
    pub fn by_addr(&self, addr: &str) -> Option<usize> {
        self.addrs.iter().position(|a| a == addr)
    }
}

/// How many `-MOVED` redirections one operation follows.
pub const MAX_HOPS: usize = 3;

/// The client of one logical process, bound to its `home` node as in
/// Jepsen: every operation is sent there first, so reads are served by
/// whichever node the process is bound to (a follower too, when the module
/// serves reads locally). A `-MOVED` reply is followed to the leader for
/// that operation only; the next starts at `home` again. One connection per
/// node is kept open.
pub struct NodeClient {
    dir: std::sync::Arc<Directory>,
    /// The node the process is bound to.
    pub home: usize,
    /// The node that answered (or failed) the last command.
    pub node: usize,
    conns: Vec<Option<Conn>>,
}

/// What one attempt of a MULTI/EXEC block on one node ended with.
enum TxnStep {
    Done(Result<Vec<Reply>, Failure>),
    /// EXEC (or MULTI) answered `-MOVED` to this address: not applied.
    Moved(String),
}

impl NodeClient {
    pub fn new(dir: std::sync::Arc<Directory>, node: usize) -> NodeClient {
        let n = dir.names.len().max(1);
        let node = node % n;
        NodeClient {
            conns: (0..n).map(|_| None).collect(),
            dir,
            home: node,
            node,
        }
    }

    /// The name of the node that answered the last command.
    pub fn node_name(&self) -> String {
        self.dir.names[self.node].clone()
    }

    /// Drops every connection; the next command connects anew.
    pub fn reset(&mut self) {
        for c in &mut self.conns {
            *c = None;
        }
    }

    /// Binds the process to another node (after a failure that may be its
    /// node's).
    pub fn rotate(&mut self, rng: &mut impl rand::Rng) {
        let n = self.dir.names.len();
        if n > 1 {
            let next = (self.home + rng.gen_range(1..n)) % n;
            self.conns[self.home] = None;
            self.home = next;
            self.node = next;
        }
    }

    fn ensure(&mut self, node: usize) -> Result<&mut Conn, Failure> {
        self.node = node;
        if self.conns[node].is_none() {
            let addr = &self.dir.addrs[node];
            match Conn::connect(
                addr,
                self.dir.connect_timeout,
                self.dir.op_timeout,
                self.dir.auth.as_ref(),
            ) {
                Ok(c) => self.conns[node] = Some(c),
                Err(e) => return Err(Failure::Fail(format!("connect: {e}"))),
            }
        }
        Ok(self.conns[node].as_mut().expect("connected"))
    }

    /// Where a `-MOVED` error points, if it is one we may follow from `at`.
    fn redirect(&self, e: &str, at: usize, hops: usize) -> Option<usize> {
        let addr = moved_addr(e)?;
        if hops >= MAX_HOPS {
            return None;
        }
        self.dir.by_addr(&addr).filter(|&i| i != at)
    }

    /// Runs one command, starting at the home node: the reply, or why it
    /// failed. Redirections are followed (a `-MOVED` reply means the
    /// command was not applied). `-TIMEOUT` (the module does not know the
    /// outcome), a timeout and a dropped connection are indeterminate; any
    /// other error reply is a certain failure.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Reply, Failure> {
        let mut hops = 0;
        let mut at = self.home;
        loop {
            let conn = self.ensure(at)?;
            match conn.call(args) {
                Ok(Reply::Error(e)) => {
                    if moved_addr(&e).is_some() {
                        if let Some(i) = self.redirect(&e, at, hops) {
                            hops += 1;
                            at = i;
                            continue;
                        }
                        return Err(Failure::Fail(e));
                    }
                    return Err(classify_error(e));
                }
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.conns[at] = None;
                    return Err(Failure::Info(io_text(&e)));
                }
            }
        }
    }

    /// Runs a group of commands as one MULTI/EXEC block, starting at the
    /// home node. The module queues on any node and answers EXEC with
    /// `-MOVED` off the leader (the block was not applied): then the whole
    /// block is sent again to the node named, for up to `MAX_HOPS` hops.
    /// The replies of EXEC, in order.
    pub fn transaction(&mut self, cmds: &[Vec<Vec<u8>>]) -> Result<Vec<Reply>, Failure> {
        let mut hops = 0;
        let mut at = self.home;
        loop {
            match self.transaction_on(at, cmds) {
                TxnStep::Done(r) => return r,
                TxnStep::Moved(e) => match self.redirect(&e, at, hops) {
                    Some(i) => {
                        hops += 1;
                        at = i;
                    }
                    None => return Err(Failure::Fail(e)),
                },
            }
        }
    }

    fn transaction_on(&mut self, at: usize, cmds: &[Vec<Vec<u8>>]) -> TxnStep {
        let conn = match self.ensure(at) {
            Ok(c) => c,
            Err(f) => return TxnStep::Done(Err(f)),
        };
        // Until EXEC is sent nothing can have been applied: errors before it
        // are certain failures.
        match conn.call(&[b"MULTI".as_slice()]) {
            Ok(Reply::Simple(s)) if s == "OK" => {}
            Ok(Reply::Error(e)) if moved_addr(&e).is_some() => return TxnStep::Moved(e),
            Ok(Reply::Error(e)) => return TxnStep::Done(Err(Failure::Fail(e))),
            Ok(other) => {
                self.conns[at] = None;
                return TxnStep::Done(Err(Failure::Fail(format!(
                    "unexpected MULTI reply: {other:?}"
                ))));
            }
            Err(e) => {
                self.conns[at] = None;
                return TxnStep::Done(Err(Failure::Fail(io_text(&e))));
            }
        }
        for c in cmds {
            match conn.call(c) {
                Ok(Reply::Simple(s)) if s == "QUEUED" => {}
                Ok(Reply::Error(e)) => {
                    if !matches!(conn.call(&[b"DISCARD".as_slice()]), Ok(Reply::Simple(_))) {
                        self.conns[at] = None;
                    }
                    return TxnStep::Done(Err(Failure::Fail(e)));
                }
                Ok(other) => {
                    self.conns[at] = None;
                    return TxnStep::Done(Err(Failure::Fail(format!(
                        "unexpected reply to a queued command: {other:?}"
                    ))));
                }
                Err(e) => {
                    self.conns[at] = None;
                    return TxnStep::Done(Err(Failure::Fail(io_text(&e))));
                }
            }
        }
        TxnStep::Done(match conn.call(&[b"EXEC".as_slice()]) {
            Ok(Reply::Array(Some(v))) => Ok(v),
            Ok(Reply::Array(None)) => Err(Failure::Fail("transaction aborted".into())),
            Ok(Reply::Error(e)) if moved_addr(&e).is_some() => return TxnStep::Moved(e),
            Ok(Reply::Error(e)) => Err(classify_error(e)),
            Ok(other) => Err(Failure::Info(format!("unexpected EXEC reply: {other:?}"))),
            Err(e) => {
                self.conns[at] = None;
                Err(Failure::Info(io_text(&e)))
            }
        })
    }
}

/// The address of a `MOVED <slot> host:port` error.
pub fn moved_addr(e: &str) -> Option<String> {
    let mut it = e.split_whitespace();
    if it.next()? != "MOVED" {
        return None;
    }
    it.next()?;
    it.next().map(str::to_string)
}

/// Error replies other than MOVED: `TIMEOUT` is indeterminate, everything
/// else (CLUSTERDOWN, TRYAGAIN, NOCLUSTER, LOADING, ERR ...) was not applied.
pub fn classify_error(e: String) -> Failure {
    // A fail-stopped node's refusal says the outcome is unknown: the
    // command may have committed through the other nodes.
    if e.starts_with("TIMEOUT") || e.contains("outcome is unknown") {
        Failure::Info(e)
    } else {
        Failure::Fail(e)
    }
}

/// The first line of a text, cut to 200 characters.
pub fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("");
    l.chars().take(200).collect()
}

pub fn io_text(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => "timeout".into(),
        _ => format!("connection: {e}"),
    }
}

/// A one-off command to `addr`, for setup and the nemesis.
pub fn command<A: AsRef<[u8]>>(
    addr: &str,
    args: &[A],
    timeout: Duration,
    auth: Option<&Auth>,
) -> Result<Reply, String> {
    let mut c = Conn::connect(addr, timeout.min(Duration::from_secs(2)), timeout, auth)
        .map_err(|e| format!("connect {addr}: {e}"))?;
    c.call(args).map_err(|e| format!("{addr}: {}", io_text(&e)))
}

/// Parses the `key:value` lines of an INFO reply.
pub fn parse_info(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved() {
        assert_eq!(
            moved_addr("MOVED 0 10.0.0.1:6379").as_deref(),
            Some("10.0.0.1:6379")
        );
        assert_eq!(moved_addr("CLUSTERDOWN No Raft leader"), None);
        assert!(matches!(
            classify_error("TIMEOUT x".into()),
            Failure::Info(_)
        ));
        assert!(matches!(
            classify_error("TRYAGAIN x".into()),
            Failure::Fail(_)
        ));
    }

    /// A fake server: answers each command (an array of bulk strings) with
    /// what `answer` returns for its words, until the client goes away.
    fn fake_server(answer: fn(&[String]) -> String) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { return };
                std::thread::spawn(move || {
                    let mut w = s.try_clone().unwrap();
                    let mut r = BufReader::new(s);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let n: usize = line.trim()[1..].parse().unwrap();
                        let mut words = Vec::new();
                        for _ in 0..n {
                            line.clear();
                            r.read_line(&mut line).unwrap();
                            line.clear();
                            r.read_line(&mut line).unwrap();
                            words.push(line.trim_end().to_string());
                        }
                        if w.write_all(answer(&words).as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn ops_start_at_home_and_follow_moved_for_one_op() {
        use std::sync::OnceLock;
        static LEADER: OnceLock<String> = OnceLock::new();
        let leader = fake_server(|w| match w[0].as_str() {
            "SET" => "+OK\r\n".into(),
            "GET" => "$1\r\nL\r\n".into(),
            "MULTI" => "+OK\r\n".into(),
            "EXEC" => "*2\r\n:1\r\n*0\r\n".into(),
            _ => "+QUEUED\r\n".into(),
        });
        LEADER.set(leader.clone()).unwrap();
        let follower = fake_server(|w| match w[0].as_str() {
            // Local reads, writes and EXEC redirected to the leader.
            "GET" => "$1\r\nF\r\n".into(),
            "MULTI" => "+OK\r\n".into(),
            "SET" | "EXEC" => format!("-MOVED 0 {}\r\n", LEADER.get().unwrap()),
            _ => "+QUEUED\r\n".into(),
        });
        let dir = std::sync::Arc::new(Directory {
            names: vec!["n1".into(), "n2".into()],
            addrs: vec![leader, follower],
            connect_timeout: Duration::from_secs(1),
            op_timeout: Duration::from_secs(2),
            auth: None,
        });
        let mut c = NodeClient::new(dir, 1);
        assert_eq!(c.call(&["SET", "k", "1"]), Ok(Reply::Simple("OK".into())));
        assert_eq!(c.node_name(), "n1");
        // The next op goes to the bound node again.
        assert_eq!(c.call(&["GET", "k"]), Ok(Reply::Bulk(Some(b"F".to_vec()))));
        assert_eq!(c.node_name(), "n2");
        let cmds = vec![
            vec![b"RPUSH".to_vec(), b"k".to_vec(), b"1".to_vec()],
            vec![
                b"LRANGE".to_vec(),
                b"k".to_vec(),
                b"0".to_vec(),
                b"-1".to_vec(),
            ],
        ];
        let r = c.transaction(&cmds).unwrap();
        assert_eq!(r, vec![Reply::Int(1), Reply::Array(Some(vec![]))]);
        assert_eq!(c.node_name(), "n1");
        assert_eq!(c.home, 1);
    }

    #[test]
    fn auth_flags() {
        let pw = |p: &str| Some(p.to_string());
        assert_eq!(Auth::from_flags(None, None), Ok(None));
        assert!(Auth::from_flags(None, pw("app")).is_err());
        assert!(Auth::from_flags(pw(""), None).is_err());
        assert!(Auth::from_flags(pw("x"), pw("a b")).is_err());
        let a = Auth::from_flags(pw("s3"), None).unwrap().unwrap();
        assert_eq!(a.user, None);
        assert_eq!(a.command(), ["AUTH", "s3"]);
        assert_eq!(
            a.server_args(),
            ["--requirepass", "s3", "--raft.cluster-password", "s3"]
        );
        // `default` is the default user: no ACL line for it.
        let d = Auth::from_flags(pw("s3"), pw("default")).unwrap().unwrap();
        assert_eq!(d, a);
        let u = Auth::from_flags(pw("s3"), pw("raft")).unwrap().unwrap();
        assert_eq!(u.command(), ["AUTH", "raft", "s3"]);
        assert_eq!(
            u.server_args(),
            [
                "--requirepass",
                "s3",
                "--raft.cluster-password",
                "s3",
                "--user",
                "raft",
                "on",
                ">s3",
                "~*",
                "&*",
                "+@all",
                "--raft.cluster-user",
                "raft",
            ]
        );
    }

    #[test]
    fn every_connection_authenticates_first() {
        // The fake answers AUTH by its arguments and anything else with
        // PONG; a connection that did not send AUTH would get PONG first.
        let addr = fake_server(|w| match w {
            [a, u, p] if a == "AUTH" && u == "raft" && p == "s3" => "+OK\r\n".into(),
            [a, ..] if a == "AUTH" => "-WRONGPASS invalid username-password pair\r\n".into(),
            _ => "+PONG\r\n".into(),
        });
        let t = Duration::from_secs(2);
        let good = Auth {
            user: Some("raft".into()),
            password: "s3".into(),
        };
        let bad = Auth {
            password: "nope".into(),
            ..good.clone()
        };
        let mut c = Conn::connect(&addr, t, t, Some(&good)).unwrap();
        assert_eq!(c.call(&["PING"]).unwrap(), Reply::Simple("PONG".into()));
        let e = Conn::connect(&addr, t, t, Some(&bad)).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(command(&addr, &["PING"], t, Some(&bad))
            .unwrap_err()
            .contains("WRONGPASS"));
        assert_eq!(
            command(&addr, &["PING"], t, Some(&good)),
            Ok(Reply::Simple("PONG".into()))
        );
        // NodeClient: a refused AUTH is a certain failure (nothing sent).
        let dir = std::sync::Arc::new(Directory {
            names: vec!["n1".into()],
            addrs: vec![addr],
            connect_timeout: t,
            op_timeout: t,
            auth: Some(bad),
        });
        let mut nc = NodeClient::new(dir, 0);
        assert!(matches!(nc.call(&["GET", "k"]), Err(Failure::Fail(_))));
    }

    #[test]
    fn info() {
        let m = parse_info("# Raft\r\nraft_role:leader\r\nraft_node_id:7\r\n");
        assert_eq!(m["raft_role"], "leader");
        assert_eq!(m["raft_node_id"], "7");
    }
}
