//! Operation histories in Jepsen's EDN form: one op map per line, e.g.
//! `{:type :invoke, :f :txn, :value [[:append 3 1] [:r 3 nil]], :process 0, :time 12345, :index 0}`.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

/// An EDN value, as far as Jepsen histories need one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Edn {
    Nil,
    Bool(bool),
    Int(i64),
    Str(String),
    /// A keyword, stored without its leading colon.
    Keyword(String),
    Vector(Vec<Edn>),
    /// Map entries in written order.
    Map(Vec<(Edn, Edn)>),
}

/// The four kinds of history entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpType {
    Invoke,
    Ok,
    Fail,
    /// Indeterminate: the operation may or may not have taken effect.
    Info,
}

/// One history entry. Workload conventions for `f` and `value`:
/// - list-append: `f = "txn"`, value `[[:append k v] [:r k [v ...]|nil]]`
/// - register (jepsen.independent): `f` in read/write/cas, value `[k v]`,
///   `v` an Int or Nil for reads; for cas `[k [old new]]`
/// - counter: `f` in add/read, value an Int (Nil on a read's invoke)
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub index: u64,
    pub typ: OpType,
    /// The keyword name without its colon ("txn", "read", ...).
    pub f: String,
    pub value: Edn,
    /// The logical client; a process has at most one op outstanding.
    pub process: u64,
    /// Nanoseconds since the start of the run.
    pub time: u64,
    /// Which node the client talked to, if any (`:node "n1"`).
    pub node: Option<String>,
    /// Error text of a fail/info (`:error "..."`).
    pub error: Option<String>,
}

/// The `process` of Jepsen's nemesis ops (`:process :nemesis`).
pub const NEMESIS_PROCESS: u64 = u64::MAX;

impl Edn {
    /// A keyword from its name (no colon).
    pub fn kw(name: &str) -> Edn {
        Edn::Keyword(name.to_string())
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Edn::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_vec(&self) -> Option<&[Edn]> {
        match self {
            Edn::Vector(v) => Some(v),
            _ => None,
        }
    }

    /// The keyword's name, without its colon.
    pub fn as_keyword(&self) -> Option<&str> {
        match self {
            Edn::Keyword(k) => Some(k),
            _ => None,
        }
    }

    /// The value under keyword `key` if this is a map.
    pub fn get(&self, key: &str) -> Option<&Edn> {
        match self {
            Edn::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_keyword() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Writes EDN text: `nil`, `:kw`, `"str"`, `[a b]`, `{:k v, :k2 v2}`.
impl fmt::Display for Edn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edn::Nil => f.write_str("nil"),
            Edn::Bool(b) => write!(f, "{b}"),
            Edn::Int(i) => write!(f, "{i}"),
            Edn::Str(s) => write_edn_string(f, s),
            Edn::Keyword(k) => write!(f, ":{k}"),
            Edn::Vector(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Edn::Map(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k} {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

fn write_edn_string(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

impl OpType {
    /// The keyword name Jepsen uses: "invoke", "ok", "fail" or "info".
    pub fn name(self) -> &'static str {
        match self {
            OpType::Invoke => "invoke",
            OpType::Ok => "ok",
            OpType::Fail => "fail",
            OpType::Info => "info",
        }
    }

    /// The inverse of [`OpType::name`].
    pub fn from_name(name: &str) -> Option<OpType> {
        match name {
            "invoke" => Some(OpType::Invoke),
            "ok" => Some(OpType::Ok),
            "fail" => Some(OpType::Fail),
            "info" => Some(OpType::Info),
            _ => None,
        }
    }
}

impl Op {
    /// One history line in Jepsen's form, without a newline:
    /// `{:index 3, :type :ok, :f :txn, :value [...], :process 2, :time 123, :node "n1", :error "..."}`.
    /// `:node` and `:error` are left out when `None`.
    pub fn to_edn(&self) -> String {
        use fmt::Write as _;
        let mut s = String::with_capacity(96);
        let _ = write!(
            s,
            "{{:index {}, :type :{}, :f :{}, :value {}, :process ",
            self.index,
            self.typ.name(),
            self.f,
            self.value
        );
        if self.process == NEMESIS_PROCESS {
            s.push_str(":nemesis");
        } else {
            let _ = write!(s, "{}", self.process);
        }
        let _ = write!(s, ", :time {}", self.time);
        if let Some(node) = &self.node {
            s.push_str(", :node ");
            let _ = write_edn_string(&mut s, node);
        }
        if let Some(error) = &self.error {
            s.push_str(", :error ");
            let _ = write_edn_string(&mut s, error);
        }
        s.push('}');
        s
    }
}

/// Reads exactly one EDN value from `text` (surrounding whitespace allowed).
///
/// Besides maps, vectors, keywords, strings, integers, nil and booleans it
/// accepts lists `(...)` and sets `#{...}` (both read as vectors), `#_`
/// discards, `;` comments and tagged literals (the tag is dropped). Tokens
/// that have no `Edn` variant (floats, symbols, characters, integers beyond
/// i64) are kept as their raw text in `Edn::Str`, so a line whose unknown
/// keys hold them still reads.
pub fn parse_edn(text: &str) -> Result<Edn, String> {
    let mut r = EdnReader {
        s: text.as_bytes(),
        pos: 0,
    };
    let v = r.value(0)?;
    r.skip_ws();
    if r.pos < r.s.len() {
        return Err(r.err("trailing characters after the value"));
    }
    Ok(v)
}

/// Nesting deeper than this is refused rather than risking the stack.
const MAX_EDN_DEPTH: usize = 256;

struct EdnReader<'a> {
    s: &'a [u8],
    pos: usize,
}

impl EdnReader<'_> {
    fn err(&self, msg: &str) -> String {
        format!("{msg} at column {}", self.pos + 1)
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | b',' => self.pos += 1,
                b';' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn is_delim(c: u8) -> bool {
        matches!(
            c,
            b' ' | b'\t'
                | b'\n'
                | b'\r'
                | b','
                | b'('
                | b')'
                | b'['
                | b']'
                | b'{'
                | b'}'
                | b'"'
                | b';'
        )
    }

    fn token(&mut self) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(|c| !Self::is_delim(c)) {
            self.pos += 1;
        }
        // The input came from a &str and delimiters are ASCII, so this is a
        // char boundary.
        std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("")
    }

    fn value(&mut self, depth: usize) -> Result<Edn, String> {
        if depth > MAX_EDN_DEPTH {
            return Err(self.err("EDN nested too deeply"));
        }
        self.skip_ws();
        let Some(c) = self.peek() else {
            return Err(self.err("unexpected end of input"));
        };
        match c {
            b'{' => {
                self.pos += 1;
                let items = self.seq(b'}', depth)?;
                if items.len() % 2 != 0 {
                    return Err(self.err("map with an odd number of forms"));
                }
                let mut entries = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    entries.push((k, v));
                }
                Ok(Edn::Map(entries))
            }
            b'[' => {
                self.pos += 1;
                Ok(Edn::Vector(self.seq(b']', depth)?))
            }
            b'(' => {
                self.pos += 1;
                Ok(Edn::Vector(self.seq(b')', depth)?))
            }
            b'#' => {
                self.pos += 1;
                match self.peek() {
                    Some(b'{') => {
                        self.pos += 1;
                        Ok(Edn::Vector(self.seq(b'}', depth)?))
                    }
                    Some(b'_') => {
                        self.pos += 1;
                        self.value(depth + 1)?;
                        self.value(depth)
                    }
                    _ => {
                        // Tagged literal such as `#inst "..."`: keep the value.
                        if self.token().is_empty() {
                            return Err(self.err("bad dispatch after '#'"));
                        }
                        self.value(depth + 1)
                    }
                }
            }
            b'"' => self.string(),
            b')' | b']' | b'}' => Err(self.err("unexpected closing delimiter")),
            b':' => {
                self.pos += 1;
                let name = self.token();
                if name.is_empty() {
                    return Err(self.err("empty keyword"));
                }
                Ok(Edn::Keyword(name.to_string()))
            }
            b'\\' => {
                self.pos += 1;
                // Character literal: `\a`, `\newline`, ... kept as a string.
                let mut name = self.token().to_string();
                if name.is_empty() {
                    let Some(c) = self.peek() else {
                        return Err(self.err("bad character literal"));
                    };
                    self.pos += 1;
                    name = (c as char).to_string();
                }
                Ok(Edn::Str(match name.as_str() {
                    "newline" => "\n".to_string(),
                    "space" => " ".to_string(),
                    "tab" => "\t".to_string(),
                    "return" => "\r".to_string(),
                    _ => name,
                }))
            }
            _ => {
                let tok = self.token();
                if tok.is_empty() {
                    return Err(self.err("unexpected character"));
                }
                Ok(match tok {
                    "nil" => Edn::Nil,
                    "true" => Edn::Bool(true),
                    "false" => Edn::Bool(false),
                    _ => {
                        let digits = tok.strip_suffix('N').unwrap_or(tok);
                        let digits = digits.strip_prefix('+').unwrap_or(digits);
                        match digits.parse::<i64>() {
                            Ok(i) => Edn::Int(i),
                            Err(_) => Edn::Str(tok.to_string()),
                        }
                    }
                })
            }
        }
    }

    /// Forms up to the closing byte `close` (already past the opener).
    fn seq(&mut self, close: u8, depth: usize) -> Result<Vec<Edn>, String> {
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Err(self.err(&format!("missing '{}'", close as char))),
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(items);
                }
                Some(_) => items.push(self.value(depth + 1)?),
            }
        }
    }

    fn string(&mut self) -> Result<Edn, String> {
        self.pos += 1; // opening quote
        let mut out: Vec<u8> = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.err("unterminated string"));
            };
            self.pos += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return Err(self.err("unterminated string"));
                    };
                    self.pos += 1;
                    let ch = match e {
                        b'n' => '\n',
                        b't' => '\t',
                        b'r' => '\r',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'0' => '\0',
                        b'"' => '"',
                        b'\\' => '\\',
                        b'\'' => '\'',
                        b'u' => {
                            let hex = self
                                .s
                                .get(self.pos..self.pos + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .ok_or_else(|| self.err("bad \\u escape"))?;
                            self.pos += 4;
                            char::from_u32(hex).unwrap_or('\u{fffd}')
                        }
                        _ => return Err(self.err("unknown string escape")),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c => out.push(c),
            }
        }
        String::from_utf8(out)
            .map(Edn::Str)
            .map_err(|_| self.err("string is not UTF-8"))
    }
}

/// Reads one history line into an [`Op`]. `:type`, `:f` and `:process` are
/// required; `:index` and `:time` default to 0, `:value` to nil; unknown keys
/// are ignored. `:process :nemesis` becomes [`NEMESIS_PROCESS`]; a non-string
/// `:error` is kept as its EDN text.
pub fn parse_edn_line(line: &str) -> Result<Op, String> {
    parse_op(line).map(|(op, _)| op)
}

/// Like [`parse_edn_line`], also telling whether the line had an `:index`.
fn parse_op(line: &str) -> Result<(Op, bool), String> {
    let map = parse_edn(line)?;
    if !matches!(map, Edn::Map(_)) {
        return Err("a history line must be a map".to_string());
    }
    let typ = map
        .get("type")
        .and_then(Edn::as_keyword)
        .and_then(OpType::from_name)
        .ok_or("missing or bad :type (want :invoke, :ok, :fail or :info)")?;
    let f = match map.get("f") {
        Some(Edn::Keyword(k)) | Some(Edn::Str(k)) => k.clone(),
        _ => return Err("missing or bad :f".to_string()),
    };
    let process = match map.get("process") {
        Some(Edn::Int(p)) if *p >= 0 => *p as u64,
        Some(Edn::Keyword(k)) if k == "nemesis" => NEMESIS_PROCESS,
        _ => return Err("missing or bad :process".to_string()),
    };
    let uint = |key: &str| -> Result<Option<u64>, String> {
        match map.get(key) {
            None | Some(Edn::Nil) => Ok(None),
            Some(Edn::Int(i)) if *i >= 0 => Ok(Some(*i as u64)),
            Some(_) => Err(format!("bad :{key}")),
        }
    };
    let index = uint("index")?;
    let time = uint("time")?.unwrap_or(0);
    let text = |key: &str| match map.get(key) {
        None | Some(Edn::Nil) => None,
        Some(Edn::Str(s)) | Some(Edn::Keyword(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    let op = Op {
        index: index.unwrap_or(0),
        typ,
        f,
        value: map.get("value").cloned().unwrap_or(Edn::Nil),
        process,
        time,
        node: text("node"),
        error: text("error"),
    };
    Ok((op, index.is_some()))
}

/// Parses a whole history, one op per line; blank lines are skipped. An op
/// without `:index` gets its position among the ops. Errors name the
/// 1-based line number.
pub fn parse_history(text: &str) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    for (n, line) in text.lines().enumerate() {
        push_line(&mut ops, n + 1, line)?;
    }
    Ok(ops)
}

fn push_line(ops: &mut Vec<Op>, line_no: usize, line: &str) -> Result<(), String> {
    if line.trim().is_empty() {
        return Ok(());
    }
    let (mut op, has_index) = parse_op(line).map_err(|e| format!("line {line_no}: {e}"))?;
    if !has_index {
        op.index = ops.len() as u64;
    }
    ops.push(op);
    Ok(())
}

/// Writes `ops` to `path`, one [`Op::to_edn`] line each.
pub fn write_history(path: impl AsRef<Path>, ops: &[Op]) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for op in ops {
        w.write_all(op.to_edn().as_bytes())?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Reads a history file written by [`write_history`] or by Jepsen (see
/// [`parse_history`] for the rules). Errors name the path and line number.
pub fn read_history(path: impl AsRef<Path>) -> Result<Vec<Op>, String> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut ops = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: line {}: {e}", path.display(), n + 1))?;
        push_line(&mut ops, n + 1, &line).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(ops)
}

/// Pairs each invocation with its completion: the next ok/fail/info entry of
/// the same process. Returns `(invoke position, completion position)` in
/// invocation order, positions being indexes into `ops`. An invocation
/// never completed (or followed by another invocation of its process, which
/// a well-formed history never has) gets `None`: its outcome is unknown, as
/// for `:info`. Completions without an open invocation (e.g. the nemesis's
/// `:info` pairs) are left out.
pub fn pair(ops: &[Op]) -> Vec<(usize, Option<usize>)> {
    let mut out: Vec<(usize, Option<usize>)> = Vec::new();
    let mut open: HashMap<u64, usize> = HashMap::new();
    for (pos, op) in ops.iter().enumerate() {
        if op.typ == OpType::Invoke {
            open.insert(op.process, out.len());
            out.push((pos, None));
        } else if let Some(slot) = open.remove(&op.process) {
            out[slot].1 = Some(pos);
        }
    }
    out
}

/// Compact history building for tests: values are written as EDN text.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// EDN text to a value; panics on bad input (tests only).
    pub(crate) fn edn(text: &str) -> Edn {
        parse_edn(text).unwrap_or_else(|e| panic!("bad test EDN {text:?}: {e}"))
    }

    /// A history under construction. Each entry gets the next index and
    /// `time = 1000 * index`; a completion takes its `f` from its process's
    /// open invocation.
    #[derive(Default)]
    pub(crate) struct Hist {
        pub(crate) ops: Vec<Op>,
        open: HashMap<u64, (String, Edn)>,
    }

    impl Hist {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        fn push(&mut self, process: u64, typ: OpType, f: String, value: Edn) {
            let index = self.ops.len() as u64;
            self.ops.push(Op {
                index,
                typ,
                f,
                value,
                process,
                time: index * 1000,
                node: None,
                error: None,
            });
        }

        pub(crate) fn invoke(&mut self, process: u64, f: &str, value: &str) -> &mut Self {
            let value = edn(value);
            self.open.insert(process, (f.to_string(), value.clone()));
            self.push(process, OpType::Invoke, f.to_string(), value);
            self
        }

        fn complete(&mut self, process: u64, typ: OpType, value: &str) -> &mut Self {
            let (f, inv_value) = self
                .open
                .remove(&process)
                .unwrap_or_else(|| panic!("process {process} has no open invocation"));
            let value = if value.is_empty() {
                inv_value
            } else {
                edn(value)
            };
            self.push(process, typ, f, value);
            self
        }

        /// Completes `process`'s op as ok; `""` repeats the invocation's value.
        pub(crate) fn ok(&mut self, process: u64, value: &str) -> &mut Self {
            self.complete(process, OpType::Ok, value)
        }

        pub(crate) fn fail(&mut self, process: u64) -> &mut Self {
            self.complete(process, OpType::Fail, "")
        }

        pub(crate) fn info(&mut self, process: u64) -> &mut Self {
            self.complete(process, OpType::Info, "")
        }

        /// Invoke and complete at once.
        pub(crate) fn call(&mut self, process: u64, f: &str, inv: &str, ok: &str) -> &mut Self {
            self.invoke(process, f, inv).ok(process, ok)
        }

        pub(crate) fn build(&self) -> Vec<Op> {
            self.ops.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{edn, Hist};
    use super::*;

    fn sample() -> Op {
        Op {
            index: 3,
            typ: OpType::Ok,
            f: "txn".to_string(),
            value: edn("[[:append 3 1] [:r 4 [1 2]]]"),
            process: 2,
            time: 123456789,
            node: Some("n1".to_string()),
            error: Some("said \"no\"\n\\ok".to_string()),
        }
    }

    #[test]
    fn to_edn_writes_jepsen_form() {
        assert_eq!(
            sample().to_edn(),
            r#"{:index 3, :type :ok, :f :txn, :value [[:append 3 1] [:r 4 [1 2]]], :process 2, :time 123456789, :node "n1", :error "said \"no\"\n\\ok"}"#
        );
        let mut op = sample();
        op.node = None;
        op.error = None;
        op.process = NEMESIS_PROCESS;
        op.typ = OpType::Info;
        op.value = Edn::Nil;
        assert_eq!(
            op.to_edn(),
            "{:index 3, :type :info, :f :txn, :value nil, :process :nemesis, :time 123456789}"
        );
    }

    #[test]
    fn to_edn_round_trips() {
        let mut ops = vec![sample()];
        let mut op = sample();
        op.node = None;
        op.error = None;
        op.typ = OpType::Invoke;
        op.value = edn(r#"[[:r 1 nil] {:a "x\ty"} [true false -7] :k/w]"#);
        ops.push(op);
        for op in ops {
            assert_eq!(parse_edn_line(&op.to_edn()).unwrap(), op);
        }
    }

    #[test]
    fn reads_jepsens_own_lines() {
        let line = "{:type :invoke, :f :txn, :value [[:append 9 1] [:r 9 nil]], :time 61543869, :process 0, :index 0}";
        let op = parse_edn_line(line).unwrap();
        assert_eq!(op.typ, OpType::Invoke);
        assert_eq!(op.f, "txn");
        assert_eq!(op.value, edn("[[:append 9 1] [:r 9 nil]]"));
        assert_eq!((op.time, op.process, op.index), (61543869, 0, 0));
        assert_eq!((op.node, op.error), (None, None));
        // Unknown keys, lists, a keyword process and a structured error.
        let line = r#"{:type :info, :f :start-partition, :value (:majority), :process :nemesis, :time 5, :index 7, :extra {:x 1.5 :y sym}, :error [:timeout "t"]}"#;
        let op = parse_edn_line(line).unwrap();
        assert_eq!(op.process, NEMESIS_PROCESS);
        assert_eq!(op.value, edn("[:majority]"));
        assert_eq!(op.error.as_deref(), Some(r#"[:timeout "t"]"#));
    }

    #[test]
    fn edn_reader_details() {
        assert_eq!(
            parse_edn(r#" "a\"b\\c\n\u0041" "#).unwrap(),
            Edn::Str("a\"b\\c\nA".into())
        );
        assert_eq!(parse_edn("[1,2 ,, -3 +4 5N]").unwrap(), edn("[1 2 -3 4 5]"));
        assert_eq!(parse_edn("#{1 2}").unwrap(), edn("[1 2]"));
        assert_eq!(parse_edn("[1 #_ 2 3] ; note").unwrap(), edn("[1 3]"));
        assert_eq!(parse_edn("{:a nil}").unwrap().get("a"), Some(&Edn::Nil));
        assert_eq!(parse_edn("\"é\"").unwrap(), Edn::Str("é".into()));
        for bad in ["[1 2", "{:a}", "\"open", "]", "[1] 2", ""] {
            assert!(parse_edn(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(parse_edn_line("[1 2]").is_err());
        assert!(parse_edn_line("{:type :ok, :f :read}").is_err()); // no :process
        assert!(parse_edn_line("{:type :done, :f :read, :process 1}").is_err());
        let deep = "[".repeat(10_000);
        assert!(parse_edn(&deep).is_err());
    }

    #[test]
    fn history_files_round_trip_and_name_bad_lines() {
        let dir = std::env::temp_dir().join(format!("rr-jepsen-hist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.edn");
        let ops = Hist::new()
            .invoke(0, "txn", "[[:append 1 1]]")
            .invoke(1, "txn", "[[:r 1 nil]]")
            .ok(0, "")
            .ok(1, "[[:r 1 [1]]]")
            .build();
        write_history(&path, &ops).unwrap();
        assert_eq!(read_history(&path).unwrap(), ops);

        let good = ops[0].to_edn();
        std::fs::write(&path, format!("{good}\n\n  \n{{:type :ok\n")).unwrap();
        let err = read_history(&path).unwrap_err();
        assert!(err.contains("line 4"), "{err}");
        // Lines without :index are numbered by position.
        let text = "{:type :invoke, :f :read, :process 0}\n\n{:type :ok, :f :read, :process 0}";
        let ops = parse_history(text).unwrap();
        assert_eq!(ops.iter().map(|o| o.index).collect::<Vec<_>>(), [0, 1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pair_matches_completions_per_process() {
        let mut ops = Hist::new()
            .invoke(0, "write", "[1 1]") // 0
            .invoke(1, "read", "[1 nil]") // 1
            .ok(1, "[1 nil]") // 2
            .invoke(1, "read", "[1 nil]") // 3
            .info(0) // 4
            .invoke(2, "write", "[1 2]") // 5: never completes
            .build();
        // A nemesis entry with no invocation is ignored.
        let mut nemesis = ops[4].clone();
        nemesis.process = NEMESIS_PROCESS;
        ops.push(nemesis);
        assert_eq!(
            pair(&ops),
            vec![(0, Some(4)), (1, Some(2)), (3, None), (5, None)]
        );
    }
}
