//! fence_virtd's `/etc/fence_virt.conf`: a parser for its grammar and the
//! mapping onto fenceline's [`Config`], so `fenceline daemon
//! --fence-virt-conf /etc/fence_virt.conf` runs what fence_virtd ran.
//!
//! Grammar (fence-agents `config/config.l`, `config.y`):
//! - identifier: any run of characters but space, tab, newline, `{`, `}`,
//!   `;`, `=` and `"`; a token that starts with `#` is a comment to the end
//!   of the line;
//! - value: `"…"` with at least one character, no `"` inside, no escapes; it
//!   may span lines;
//! - statements: `ID = "VAL";` (attribute), `ID { … }` and `ID = "VAL" { … }`
//!   (blocks, which may be empty); the file needs at least one statement.
//!
//! Keys compare ignoring ASCII case; of duplicate keys or blocks the last
//! one wins (fence_virtd prepends, then takes the first match). Everything
//! fence_virtd does not read is an error here, naming the key path and line,
//! so a typo does not silently change what runs.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{
    Config, ConfigError, FenceBackend, HashName, ListenersSection, MulticastListener, NameMode,
    PermissionGroup, TcpListenerConf, VsockListener,
};

/// Deepest block nesting accepted (fence_virtd's configs use three levels).
const MAX_DEPTH: usize = 32;

/// A parse or mapping error with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FvcError {
    pub line: usize,
    pub column: usize,
    /// The key path (`listeners/multicast/@port`), when the error is about one.
    pub key: Option<String>,
    pub message: String,
}

impl std::fmt::Display for FvcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}: ", self.line, self.column)?;
        if let Some(k) = &self.key {
            write!(f, "`{k}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for FvcError {}

impl FvcError {
    fn at(pos: Pos, message: impl Into<String>) -> Self {
        Self {
            line: pos.line,
            column: pos.column,
            key: None,
            message: message.into(),
        }
    }

    fn key(pos: Pos, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            line: pos.line,
            column: pos.column,
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// As a [`ConfigError`] naming the file.
    pub fn in_file(self, path: &Path) -> ConfigError {
        ConfigError::Parse {
            path: path.to_path_buf(),
            line: self.line,
            column: self.column,
            key: self.key,
            message: self.message,
        }
    }
}

/// A 1-based line and column (in characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// One statement of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// The `"VAL"` of an attribute or of a `ID = "VAL" { }` block.
    pub value: Option<String>,
    /// `None` for an attribute; the statements of a block.
    pub children: Option<Vec<Node>>,
    pub pos: Pos,
}

impl Node {
    fn is_block(&self) -> bool {
        self.children.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Id(String),
    Val(String),
    Open,
    Close,
    Semi,
    Eq,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Id(s) => format!("`{}`", s.escape_debug()),
        Tok::Val(s) => format!("the value \"{}\"", s.escape_debug()),
        Tok::Open => "`{`".into(),
        Tok::Close => "`}`".into(),
        Tok::Semi => "`;`".into(),
        Tok::Eq => "`=`".into(),
    }
}

fn lex(text: &str) -> Result<Vec<(Tok, Pos)>, FvcError> {
    let mut out = Vec::new();
    let mut it = text.chars().peekable();
    let mut pos = Pos { line: 1, column: 1 };
    let advance = |c: char, pos: &mut Pos| {
        if c == '\n' {
            pos.line += 1;
            pos.column = 1;
        } else {
            pos.column += 1;
        }
    };
    while let Some(&c) = it.peek() {
        let start = pos;
        match c {
            ' ' | '\t' | '\n' => {
                it.next();
                advance(c, &mut pos);
            }
            '#' => {
                while let Some(&c) = it.peek() {
                    if c == '\n' {
                        break;
                    }
                    it.next();
                    advance(c, &mut pos);
                }
            }
            '{' | '}' | ';' | '=' => {
                it.next();
                advance(c, &mut pos);
                out.push((
                    match c {
                        '{' => Tok::Open,
                        '}' => Tok::Close,
                        ';' => Tok::Semi,
                        _ => Tok::Eq,
                    },
                    start,
                ));
            }
            '"' => {
                it.next();
                advance(c, &mut pos);
                let mut v = String::new();
                let mut closed = false;
                for c in it.by_ref() {
                    advance(c, &mut pos);
                    if c == '"' {
                        closed = true;
                        break;
                    }
                    v.push(c);
                }
                if !closed {
                    return Err(FvcError::at(start, "a quoted value is never closed"));
                }
                if v.is_empty() {
                    return Err(FvcError::at(
                        start,
                        "empty value \"\": fence_virtd's grammar needs at least one character",
                    ));
                }
                out.push((Tok::Val(v), start));
            }
            _ => {
                let mut id = String::new();
                while let Some(&c) = it.peek() {
                    if matches!(c, ' ' | '\t' | '\n' | '{' | '}' | ';' | '=' | '"') {
                        break;
                    }
                    id.push(c);
                    it.next();
                    advance(c, &mut pos);
                }
                if id.contains('\r') {
                    return Err(FvcError::at(
                        start,
                        format!(
                            "`{}` contains a carriage return: the file has CRLF line endings, which fence_virtd's parser does not accept either",
                            id.escape_debug()
                        ),
                    ));
                }
                out.push((Tok::Id(id), start));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, Pos)>,
    at: usize,
    end: Pos,
}

impl Parser {
    fn peek(&self) -> Option<&(Tok, Pos)> {
        self.toks.get(self.at)
    }

    fn next(&mut self) -> Option<(Tok, Pos)> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }

    /// One or more statements, up to a `}` (inside a block) or the end.
    fn statements(
        &mut self,
        depth: usize,
        open: Option<(&str, Pos)>,
    ) -> Result<Vec<Node>, FvcError> {
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => {
                    if let Some((name, p)) = open {
                        return Err(FvcError::at(
                            self.end,
                            format!(
                                "end of file inside block `{name}` opened at line {}, column {}",
                                p.line, p.column
                            ),
                        ));
                    }
                    return Ok(out);
                }
                Some((Tok::Close, p)) => {
                    if open.is_some() {
                        return Ok(out);
                    }
                    return Err(FvcError::at(*p, "`}` without a block to close"));
                }
                Some(_) => out.push(self.statement(depth)?),
            }
        }
    }

    fn statement(&mut self, depth: usize) -> Result<Node, FvcError> {
        let (tok, pos) = self.next().expect("peeked");
        let Tok::Id(name) = tok else {
            return Err(FvcError::at(
                pos,
                format!("expected a name, found {}", describe(&tok)),
            ));
        };
        let value = match self.next() {
            Some((Tok::Eq, _)) => match self.next() {
                Some((Tok::Val(v), _)) => Some(v),
                Some((t, p)) => {
                    return Err(FvcError::at(
                        p,
                        format!(
                            "expected a quoted value after `{name} =`, found {}",
                            describe(&t)
                        ),
                    ));
                }
                None => {
                    return Err(FvcError::at(
                        self.end,
                        format!("end of file after `{name} =`"),
                    ));
                }
            },
            Some((Tok::Open, _)) => return self.block(name, None, pos, depth),
            Some((t, p)) => {
                return Err(FvcError::at(
                    p,
                    format!(
                        "expected `=` or `{{` after `{name}`, found {}",
                        describe(&t)
                    ),
                ));
            }
            None => {
                return Err(FvcError::at(
                    self.end,
                    format!("end of file after `{name}`"),
                ));
            }
        };
        match self.next() {
            Some((Tok::Semi, _)) => Ok(Node {
                name,
                value,
                children: None,
                pos,
            }),
            Some((Tok::Open, _)) => self.block(name, value, pos, depth),
            Some((t, p)) => Err(FvcError::at(
                p,
                format!(
                    "expected `;` after the value of `{name}`, found {}",
                    describe(&t)
                ),
            )),
            None => Err(FvcError::at(
                self.end,
                format!("end of file: `;` missing after the value of `{name}`"),
            )),
        }
    }

    fn block(
        &mut self,
        name: String,
        value: Option<String>,
        pos: Pos,
        depth: usize,
    ) -> Result<Node, FvcError> {
        if depth >= MAX_DEPTH {
            return Err(FvcError::at(
                pos,
                format!("blocks nested deeper than {MAX_DEPTH} levels"),
            ));
        }
        let children = self.statements(depth + 1, Some((&name, pos)))?;
        match self.next() {
            Some((Tok::Close, _)) => Ok(Node {
                name,
                value,
                children: Some(children),
                pos,
            }),
            _ => unreachable!("statements() returns inside a block only at `}}`"),
        }
    }
}

/// Parses the text into its statements. An empty file (no statement) is an
/// error, as in fence_virtd.
pub fn parse(text: &str) -> Result<Vec<Node>, FvcError> {
    let toks = lex(text)?;
    let end = end_pos(text);
    let mut p = Parser { toks, at: 0, end };
    let nodes = p.statements(0, None)?;
    if nodes.is_empty() {
        return Err(FvcError::at(
            Pos { line: 1, column: 1 },
            "the file has no statement (fence_virtd refuses an empty config)",
        ));
    }
    Ok(nodes)
}

fn end_pos(text: &str) -> Pos {
    let line = text.matches('\n').count() + 1;
    let last = text.rsplit('\n').next().unwrap_or("");
    Pos {
        line,
        column: last.chars().count() + 1,
    }
}

/// fence_virt.conf mapped onto fenceline's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub backend: FenceBackend,
    pub uris: Vec<String>,
    pub name_mode: NameMode,
    pub listeners: ListenersSection,
    pub groups: Vec<PermissionGroup>,
    /// Keys accepted but not used, and other remarks (logged at info).
    pub notes: Vec<String>,
}

/// Children of a block, looked up the way fence_virtd does.
struct Scope<'a> {
    path: String,
    nodes: &'a [Node],
}

impl<'a> Scope<'a> {
    fn key_path(&self, name: &str, attr: bool) -> String {
        let sep = if self.path.is_empty() { "" } else { "/" };
        let at = if attr { "@" } else { "" };
        format!("{}{sep}{at}{name}", self.path)
    }

    /// Every child must be one of `attrs` (attributes) or `blocks`. Returns
    /// an error naming the first unknown key.
    fn only(
        &self,
        attrs: &[&str],
        blocks: &[&str],
        notes: &mut Vec<String>,
    ) -> Result<(), FvcError> {
        for n in self.nodes {
            let lname = n.name.to_ascii_lowercase();
            if n.is_block() {
                if !blocks.contains(&lname.as_str()) {
                    let what = if attrs.contains(&lname.as_str()) {
                        "must be an attribute (`name = \"value\";`), not a block".to_string()
                    } else {
                        format!("unknown block{}", expected(blocks))
                    };
                    return Err(FvcError::key(n.pos, self.key_path(&n.name, false), what));
                }
                if let Some(v) = &n.value {
                    notes.push(format!(
                        "line {}: the value \"{v}\" on block `{}` is not used",
                        n.pos.line,
                        self.key_path(&n.name, false)
                    ));
                }
            } else if !attrs.contains(&lname.as_str()) {
                let what = if blocks.contains(&lname.as_str()) {
                    "must be a block (`name { ... }`), not an attribute".to_string()
                } else {
                    format!("unknown key{}", expected(attrs))
                };
                return Err(FvcError::key(n.pos, self.key_path(&n.name, true), what));
            }
        }
        Ok(())
    }

    /// The last attribute `name` (fence_virtd's lookup finds the last one).
    fn attr(&self, name: &str) -> Option<(&'a str, Pos)> {
        self.nodes
            .iter()
            .rev()
            .find(|n| !n.is_block() && n.name.eq_ignore_ascii_case(name))
            .and_then(|n| n.value.as_deref().map(|v| (v, n.pos)))
    }

    fn attrs(&self, name: &str) -> Vec<(&'a str, Pos)> {
        self.nodes
            .iter()
            .filter(|n| !n.is_block() && n.name.eq_ignore_ascii_case(name))
            .filter_map(|n| n.value.as_deref().map(|v| (v, n.pos)))
            .collect()
    }

    /// The last block `name`; earlier ones are reported as ignored.
    fn block(&self, name: &str, notes: &mut Vec<String>) -> Option<(Scope<'a>, Pos)> {
        let all: Vec<&Node> = self
            .nodes
            .iter()
            .filter(|n| n.is_block() && n.name.eq_ignore_ascii_case(name))
            .collect();
        let last = *all.last()?;
        for n in &all[..all.len() - 1] {
            notes.push(format!(
                "line {}: block `{}` is ignored: the one at line {} replaces it (fence_virtd uses the last)",
                n.pos.line,
                self.key_path(&n.name, false),
                last.pos.line
            ));
        }
        Some((self.child(last), last.pos))
    }

    fn blocks(&self, name: &str) -> Vec<(Scope<'a>, Pos)> {
        self.nodes
            .iter()
            .filter(|n| n.is_block() && n.name.eq_ignore_ascii_case(name))
            .map(|n| (self.child(n), n.pos))
            .collect()
    }

    fn child(&self, n: &'a Node) -> Scope<'a> {
        Scope {
            path: self.key_path(&n.name.to_ascii_lowercase(), false),
            nodes: n.children.as_deref().unwrap_or(&[]),
        }
    }
}

fn expected(names: &[&str]) -> String {
    if names.is_empty() {
        " (nothing is expected here)".into()
    } else {
        format!(" (expected one of: {})", names.join(", "))
    }
}

fn hash_name(v: &str, pos: Pos, key: String) -> Result<HashName, FvcError> {
    Ok(match v.to_ascii_lowercase().as_str() {
        "none" => HashName::None,
        "sha1" => HashName::Sha1,
        "sha256" => HashName::Sha256,
        "sha512" => HashName::Sha512,
        _ => {
            return Err(FvcError::key(
                pos,
                key,
                format!("\"{v}\" is not a hash (none, sha1, sha256, sha512)"),
            ));
        }
    })
}

fn port<T: TryFrom<u64>>(v: &str, pos: Pos, key: String, max: u64) -> Result<T, FvcError> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|p| (1..=max).contains(p))
        .and_then(|p| T::try_from(p).ok())
        .ok_or_else(|| FvcError::key(pos, key, format!("\"{v}\" is not a port (1 to {max})")))
}

fn key_file(v: &str, pos: Pos, key: String) -> Result<PathBuf, FvcError> {
    let p = PathBuf::from(v);
    if !p.is_absolute() {
        return Err(FvcError::key(
            pos,
            key,
            format!("\"{v}\" must be an absolute path"),
        ));
    }
    Ok(p)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Family {
    V4,
    V6,
}

fn family(s: &Scope) -> Result<Option<(Family, Pos)>, FvcError> {
    let Some((v, pos)) = s.attr("family") else {
        return Ok(None);
    };
    match v.to_ascii_lowercase().as_str() {
        "ipv4" => Ok(Some((Family::V4, pos))),
        "ipv6" => Ok(Some((Family::V6, pos))),
        _ => Err(FvcError::key(
            pos,
            s.key_path("family", true),
            format!("\"{v}\" is not a family (ipv4, ipv6)"),
        )),
    }
}

/// The address for a listener with a `family` setting: the address must be
/// of that family; without one, the family's default.
fn address(
    s: &Scope,
    fam: Option<(Family, Pos)>,
    v4_default: &str,
    v6_default: &str,
    must_be_multicast: bool,
    notes: &mut Vec<String>,
) -> Result<String, FvcError> {
    let Some((v, pos)) = s.attr("address") else {
        return Ok(match fam {
            Some((Family::V6, _)) => v6_default.to_string(),
            _ => v4_default.to_string(),
        });
    };
    let key = s.key_path("address", true);
    let ip: std::net::IpAddr = v
        .trim()
        .parse()
        .map_err(|_| FvcError::key(pos, key.clone(), format!("\"{v}\" is not an IP address")))?;
    if must_be_multicast && !ip.is_multicast() {
        return Err(FvcError::key(
            pos,
            key,
            format!("{ip} is not a multicast address"),
        ));
    }
    match (fam, ip.is_ipv6()) {
        (Some((Family::V4, _)), true) | (Some((Family::V6, _)), false) => {
            return Err(FvcError::key(
                pos,
                key,
                format!(
                    "{ip} does not match `{}` (fence_virtd would fail to start)",
                    s.key_path("family", true)
                ),
            ));
        }
        (None, true) => notes.push(format!(
            "line {}: {key} is IPv6 without `family = \"ipv6\"` (fence_virtd needs it; fenceline takes the family from the address)",
            pos.line
        )),
        _ => {}
    }
    Ok(ip.to_string())
}

const LISTENER_KEYS: &[&str] = &[
    "key_file",
    "hash",
    "auth",
    "family",
    "address",
    "port",
    "interface",
];
const TCP_KEYS: &[&str] = &["key_file", "hash", "auth", "family", "address", "port"];
const VSOCK_KEYS: &[&str] = &["key_file", "hash", "auth", "port"];
const SERIAL_KEYS: &[&str] = &["key_file", "uri", "path", "mode"];

fn multicast(s: &Scope, notes: &mut Vec<String>) -> Result<MulticastListener, FvcError> {
    s.only(LISTENER_KEYS, &[], notes)?;
    let mut m = MulticastListener::default();
    let fam = family(s)?;
    m.address = address(s, fam, "225.0.0.12", "ff05::3:1", true, notes)?;
    if let Some((v, p)) = s.attr("port") {
        m.port = port(v, p, s.key_path("port", true), 65535)?;
    }
    if let Some((v, p)) = s.attr("key_file") {
        m.key_file = key_file(v, p, s.key_path("key_file", true))?;
    }
    if let Some((v, p)) = s.attr("hash") {
        m.hash = hash_name(v, p, s.key_path("hash", true))?;
    }
    if let Some((v, p)) = s.attr("auth") {
        m.auth = hash_name(v, p, s.key_path("auth", true))?;
    }
    if let Some((v, p)) = s.attr("interface") {
        if v.len() > 15 || v.contains(['/', ' ']) {
            return Err(FvcError::key(
                p,
                s.key_path("interface", true),
                format!("\"{v}\" is not an interface name"),
            ));
        }
        m.interface = Some(v.to_string());
    }
    Ok(m)
}

/// fence_virtd's tcp and vsock listeners store `auth` into the *packet hash*
/// setting and always use sha256 for the handshake (their bug). To keep
/// existing clients working, the import reproduces what actually ran and
/// says so.
fn tcp_like_hashes(s: &Scope, notes: &mut Vec<String>) -> Result<(HashName, HashName), FvcError> {
    let mut hash = HashName::Sha256;
    if let Some((v, p)) = s.attr("hash") {
        hash = hash_name(v, p, s.key_path("hash", true))?;
    }
    if let Some((v, p)) = s.attr("auth") {
        let a = hash_name(v, p, s.key_path("auth", true))?;
        notes.push(format!(
            "line {}: fence_virtd used {} = \"{v}\" as the minimum packet hash and sha256 for the handshake (its bug); imported as hash = \"{}\", auth = \"sha256\" so existing clients keep working",
            p.line,
            s.key_path("auth", true),
            hash_str(a)
        ));
        hash = a;
    }
    Ok((hash, HashName::Sha256))
}

fn hash_str(h: HashName) -> &'static str {
    match h {
        HashName::None => "none",
        HashName::Sha1 => "sha1",
        HashName::Sha256 => "sha256",
        HashName::Sha512 => "sha512",
    }
}

fn tcp(s: &Scope, notes: &mut Vec<String>) -> Result<TcpListenerConf, FvcError> {
    s.only(TCP_KEYS, &[], notes)?;
    let mut t = TcpListenerConf::default();
    let fam = family(s)?;
    t.address = address(s, fam, "127.0.0.1", "::1", false, notes)?;
    if let Some((v, p)) = s.attr("port") {
        t.port = port(v, p, s.key_path("port", true), 65535)?;
    }
    if let Some((v, p)) = s.attr("key_file") {
        t.key_file = key_file(v, p, s.key_path("key_file", true))?;
    }
    (t.hash, t.auth) = tcp_like_hashes(s, notes)?;
    Ok(t)
}

fn vsock(s: &Scope, notes: &mut Vec<String>) -> Result<VsockListener, FvcError> {
    s.only(VSOCK_KEYS, &[], notes)?;
    let mut v = VsockListener::default();
    if let Some((val, p)) = s.attr("port") {
        v.port = port(val, p, s.key_path("port", true), u64::from(u32::MAX - 1))?;
    }
    if let Some((val, p)) = s.attr("key_file") {
        v.key_file = key_file(val, p, s.key_path("key_file", true))?;
    }
    (v.hash, v.auth) = tcp_like_hashes(s, notes)?;
    Ok(v)
}

fn name_mode(v: &str, pos: Pos, key: String) -> Result<NameMode, FvcError> {
    match v.to_ascii_lowercase().as_str() {
        "name" => Ok(NameMode::Name),
        "uuid" => Ok(NameMode::Uuid),
        _ => Err(FvcError::key(
            pos,
            key,
            format!("\"{v}\" is not a name mode (name, uuid)"),
        )),
    }
}

/// Maps parsed statements onto fenceline's settings.
pub fn import_nodes(nodes: &[Node]) -> Result<Imported, FvcError> {
    let mut notes = Vec::new();
    let top = Scope {
        path: String::new(),
        nodes,
    };
    top.only(
        &[],
        &["fence_virtd", "listeners", "backends", "groups"],
        &mut notes,
    )?;
    let first = Pos { line: 1, column: 1 };
    let (fv, fv_pos) = top.block("fence_virtd", &mut notes).ok_or_else(|| {
        FvcError::key(
            first,
            "fence_virtd",
            "the `fence_virtd { ... }` block is missing",
        )
    })?;
    fv.only(
        &[
            "listener",
            "backend",
            "module_path",
            "debug",
            "foreground",
            "wait_for_init",
            "wait_for_backend",
            "name_mode",
        ],
        &[],
        &mut notes,
    )?;
    for k in [
        "module_path",
        "debug",
        "foreground",
        "wait_for_init",
        "wait_for_backend",
    ] {
        if let Some((v, p)) = fv.attr(k) {
            notes.push(format!(
                "line {}: fence_virtd/@{k} = \"{v}\" is not used by fenceline (ignored)",
                p.line
            ));
        }
    }
    let (listener, lpos) = fv.attr("listener").ok_or_else(|| {
        FvcError::key(
            fv_pos,
            "fence_virtd/@listener",
            "is required (multicast, tcp or vsock)",
        )
    })?;
    let (backend_name, bpos) = fv.attr("backend").ok_or_else(|| {
        FvcError::key(
            fv_pos,
            "fence_virtd/@backend",
            "is required (cpg or libvirt)",
        )
    })?;
    let backend = match backend_name.to_ascii_lowercase().as_str() {
        "cpg" => FenceBackend::Cpg,
        "libvirt" => FenceBackend::Libvirt,
        _ => {
            return Err(FvcError::key(
                bpos,
                "fence_virtd/@backend",
                format!("\"{backend_name}\" is not a backend fenceline has (cpg, libvirt)"),
            ));
        }
    };
    let mut name_mode_v = NameMode::Name;
    if let Some((v, p)) = fv.attr("name_mode") {
        name_mode_v = name_mode(v, p, "fence_virtd/@name_mode".into())?;
    }

    // Listeners: every block is checked, the selected one is used.
    let mut listeners = ListenersSection::default();
    let lsel = listener.to_ascii_lowercase();
    let ls = top.block("listeners", &mut notes);
    if let Some((ls, _)) = &ls {
        ls.only(&[], &["multicast", "tcp", "vsock", "serial"], &mut notes)?;
    }
    let sub = |name: &str, notes: &mut Vec<String>| {
        ls.as_ref()
            .and_then(|(l, _)| l.block(name, notes))
            .map(|(s, _)| s)
    };
    let empty = |name: &str| Scope {
        path: format!("listeners/{name}"),
        nodes: &[],
    };
    let mc = sub("multicast", &mut notes);
    let tc = sub("tcp", &mut notes);
    let vs = sub("vsock", &mut notes);
    let se = sub("serial", &mut notes);
    if let Some(s) = &se {
        s.only(SERIAL_KEYS, &[], &mut notes)?;
    }
    let m = multicast(mc.as_ref().unwrap_or(&empty("multicast")), &mut notes)?;
    let t = tcp(tc.as_ref().unwrap_or(&empty("tcp")), &mut notes)?;
    let v = vsock(vs.as_ref().unwrap_or(&empty("vsock")), &mut notes)?;
    match lsel.as_str() {
        "multicast" => listeners.multicast = Some(m),
        "tcp" => listeners.tcp = Some(t),
        "vsock" => listeners.vsock = Some(v),
        "serial" => {
            return Err(FvcError::key(
                lpos,
                "fence_virtd/@listener",
                "the serial/VMChannel listener is not supported by fenceline (use multicast, tcp or vsock)",
            ));
        }
        _ => {
            return Err(FvcError::key(
                lpos,
                "fence_virtd/@listener",
                format!("\"{listener}\" is not a listener (multicast, tcp, vsock)"),
            ));
        }
    }
    for (name, present) in [
        ("multicast", mc.is_some()),
        ("tcp", tc.is_some()),
        ("vsock", vs.is_some()),
        ("serial", se.is_some()),
    ] {
        if present && name != lsel {
            notes.push(format!(
                "listeners/{name} is ignored: fence_virtd/@listener selects {lsel} (fence_virtd runs one listener; add more in fenceline.toml)"
            ));
        }
    }

    // Backends: the selected one's URIs and name mode.
    let mut uris = Vec::new();
    if let Some((bs, _)) = top.block("backends", &mut notes) {
        bs.only(&[], &["libvirt", "cpg"], &mut notes)?;
        for (name, s) in [
            ("libvirt", bs.block("libvirt", &mut notes)),
            ("cpg", bs.block("cpg", &mut notes)),
        ] {
            let Some((s, _)) = s else { continue };
            check_backend(&s, name)?;
            if name != backend_name.to_ascii_lowercase() {
                notes.push(format!(
                    "backends/{name} is ignored: fence_virtd/@backend selects {}",
                    backend_name.to_ascii_lowercase()
                ));
                continue;
            }
            uris = backend_uris(&s)?;
            if name == "cpg"
                && let Some((v, p)) = s.attr("name_mode")
            {
                name_mode_v = name_mode(v, p, "backends/cpg/@name_mode".into())?;
            }
        }
    }
    if uris.is_empty() {
        return Err(FvcError::key(
            bpos,
            format!("backends/{}/@uri", backend_name.to_ascii_lowercase()),
            "is required (fence_virtd's backends have no default URI), e.g. uri = \"qemu:///system\";",
        ));
    }

    let groups = match top.block("groups", &mut notes) {
        Some((g, _)) => groups(&g, &mut notes)?,
        None => Vec::new(),
    };
    Ok(Imported {
        backend,
        uris,
        name_mode: name_mode_v,
        listeners,
        groups,
        notes,
    })
}

fn check_backend(s: &Scope, name: &str) -> Result<(), FvcError> {
    for n in s.nodes {
        let l = n.name.to_ascii_lowercase();
        let is_uri = l == "uri"
            || l.strip_prefix("uri").is_some_and(|d| {
                !d.is_empty() && !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit())
            });
        let ok = !n.is_block() && (is_uri || (name == "cpg" && l == "name_mode"));
        if !ok {
            let allowed = if name == "cpg" {
                "uri, uri1, uri2, ..., name_mode"
            } else {
                "uri, uri1, uri2, ..."
            };
            return Err(FvcError::key(
                n.pos,
                s.key_path(&n.name, !n.is_block()),
                format!(
                    "unknown {} (expected: {allowed})",
                    if n.is_block() { "block" } else { "key" }
                ),
            ));
        }
    }
    Ok(())
}

/// `uri`, `uri1`, `uri2`, ... up to the first gap (fence_virtd stops there;
/// a key after a gap is an error here rather than silently unused).
fn backend_uris(s: &Scope) -> Result<Vec<String>, FvcError> {
    let mut out = Vec::new();
    let mut i = 0usize;
    loop {
        let k = if i == 0 {
            "uri".to_string()
        } else {
            format!("uri{i}")
        };
        match s.attr(&k) {
            Some((v, p)) => {
                if !v.contains(':') {
                    return Err(FvcError::key(
                        p,
                        s.key_path(&k, true),
                        format!("\"{v}\" is not a libvirt URI (e.g. qemu:///system)"),
                    ));
                }
                if out.iter().any(|u| u == v) {
                    return Err(FvcError::key(
                        p,
                        s.key_path(&k, true),
                        format!("\"{v}\" is listed twice"),
                    ));
                }
                out.push(v.to_string());
            }
            None => break,
        }
        i += 1;
    }
    let stop = if i == 0 {
        "uri".to_string()
    } else {
        format!("uri{i}")
    };
    for n in s.nodes {
        let l = n.name.to_ascii_lowercase();
        if let Some(d) = l.strip_prefix("uri")
            && !d.is_empty()
            && let Ok(k) = d.parse::<usize>()
            && k >= i
        {
            return Err(FvcError::key(
                n.pos,
                s.key_path(&n.name, true),
                format!(
                    "`{stop}` is missing, so fence_virtd never reads this one; renumber the URIs"
                ),
            ));
        }
    }
    Ok(out)
}

fn groups(s: &Scope, notes: &mut Vec<String>) -> Result<Vec<PermissionGroup>, FvcError> {
    s.only(&[], &["group"], notes)?;
    let mut out = Vec::new();
    for (i, (g, pos)) in s.blocks("group").into_iter().enumerate() {
        g.only(&["name", "uuid", "ip"], &[], notes)?;
        let name = g
            .attr("name")
            .map(|(v, _)| v.to_string())
            .unwrap_or_else(|| format!("unnamed-{}", i + 1));
        let uuid: Vec<String> = g
            .attrs("uuid")
            .into_iter()
            .map(|(v, _)| v.to_string())
            .collect();
        let ip: Vec<String> = g
            .attrs("ip")
            .into_iter()
            .map(|(v, _)| v.to_string())
            .collect();
        if uuid.is_empty() && ip.is_empty() {
            notes.push(format!(
                "line {}: group `{name}` has no uuid or ip entries and is dropped (as fence_virtd does)",
                pos.line
            ));
            continue;
        }
        if ip.is_empty() {
            return Err(FvcError::key(
                pos,
                "groups/group/@ip",
                format!(
                    "group `{name}` has no `ip` entries, so it matches no requester; add one or remove the group"
                ),
            ));
        }
        if uuid.is_empty() {
            return Err(FvcError::key(
                pos,
                "groups/group/@uuid",
                format!(
                    "group `{name}` has no `uuid` entries (VM names or UUIDs), so it allows nothing; add one or remove the group"
                ),
            ));
        }
        out.push(PermissionGroup { name, uuid, ip });
    }
    Ok(out)
}

/// Parses and maps fence_virt.conf text.
pub fn import(text: &str) -> Result<Imported, FvcError> {
    import_nodes(&parse(text)?)
}

/// Reads and imports a file; errors name it.
pub fn load(path: &Path) -> Result<Imported, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let s = std::str::from_utf8(valid).unwrap_or("");
            let pos = end_pos(s);
            return Err(FvcError::at(pos, "the file is not UTF-8 text").in_file(path));
        }
    };
    import(text).map_err(|e| e.in_file(path))
}

/// The settings fence_virt.conf owns, as `[section] key` names: the
/// fenceline TOML must not set them as well.
const OWNED: &[(&str, Option<&str>)] = &[
    ("fencing", Some("backend")),
    ("libvirt", Some("uris")),
    ("libvirt", Some("name_mode")),
    ("listeners", None),
    ("groups", None),
];

impl Imported {
    /// Puts the imported settings into `base`. `base_toml` is the fenceline
    /// TOML `base` came from (if any): setting one of fence_virt.conf's keys
    /// there too is an error naming both files, so nothing is overridden
    /// silently.
    pub fn apply(
        &self,
        mut base: Config,
        base_toml: Option<(&str, &Path)>,
        fvc_path: &Path,
    ) -> Result<Config, ConfigError> {
        if let Some((text, path)) = base_toml {
            let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                line: 0,
                column: 0,
                key: None,
                message: e.message().to_string(),
            })?;
            for (section, key) in OWNED {
                let present = match (table.get(*section), key) {
                    (Some(_), None) => true,
                    (Some(toml::Value::Table(t)), Some(k)) => t.contains_key(*k),
                    _ => false,
                };
                if present {
                    let name = match key {
                        Some(k) => format!("{section}.{k}"),
                        None => section.to_string(),
                    };
                    return Err(ConfigError::Invalid {
                        path: path.to_path_buf(),
                        line: None,
                        key: name,
                        message: format!(
                            "also set by --fence-virt-conf {}; with --fence-virt-conf, fencing.backend, libvirt.uris, libvirt.name_mode, [listeners.*] and [[groups]] come from fence_virt.conf only",
                            fvc_path.display()
                        ),
                    });
                }
            }
        }
        base.fencing.backend = self.backend;
        base.libvirt.uris = self.uris.clone();
        base.libvirt.name_mode = self.name_mode;
        base.listeners = self.listeners.clone();
        base.groups = self.groups.clone();
        // The same checks a TOML file gets.
        base.check(fvc_path)?;
        Ok(base)
    }

    /// The equivalent fenceline TOML (only the settings fence_virt.conf
    /// has), with the notes as comments on top.
    pub fn to_toml(&self) -> String {
        #[derive(Serialize)]
        struct Fencing {
            backend: FenceBackend,
        }
        #[derive(Serialize)]
        struct Libvirt<'a> {
            uris: &'a [String],
            name_mode: NameMode,
        }
        #[derive(Serialize)]
        struct Out<'a> {
            fencing: Fencing,
            libvirt: Libvirt<'a>,
            listeners: &'a ListenersSection,
            #[serde(skip_serializing_if = "<[_]>::is_empty")]
            groups: &'a [PermissionGroup],
        }
        let out = Out {
            fencing: Fencing {
                backend: self.backend,
            },
            libvirt: Libvirt {
                uris: &self.uris,
                name_mode: self.name_mode,
            },
            listeners: &self.listeners,
            groups: &self.groups,
        };
        let mut s = String::new();
        for n in &self.notes {
            // Values may span lines and hold control characters; every line
            // of a note stays a valid TOML comment.
            s.push_str("# note: ");
            for c in n.chars() {
                match c {
                    '\n' => s.push_str("\n#   "),
                    c if c.is_control() => s.extend(c.escape_default()),
                    c => s.push(c),
                }
            }
            s.push('\n');
        }
        if !self.notes.is_empty() {
            s.push('\n');
        }
        s.push_str(&toml::to_string(&out).unwrap_or_else(|e| format!("# cannot render: {e}\n")));
        s
    }
}

/// The daemon's config with `--fence-virt-conf`: the fenceline TOML
/// (`--config`, or the default path if it exists) for fenceline's own
/// settings, fence_virt.conf for the rest. Also returns the import's notes
/// (ignored keys and the like) for the caller to show: logging is not set up
/// yet when the config is read.
pub fn daemon_config(
    toml_path: Option<&Path>,
    fvc_path: &Path,
) -> Result<(Config, Vec<String>), ConfigError> {
    let (base, used) = Config::load(toml_path)?;
    let imported = load(fvc_path)?;
    let text = match &used {
        Some(p) => Some(
            std::fs::read_to_string(p).map_err(|source| ConfigError::Io {
                path: p.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let cfg = imported.apply(base, text.as_deref().zip(used.as_deref()), fvc_path)?;
    Ok((cfg, imported.notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's shipped /etc/fence_virt.conf (fence-virtd 4.12.1-1), verbatim.
    const DEBIAN: &str = "fence_virtd {\n\tlistener = \"multicast\";\n\tbackend = \"libvirt\";\n}\n\nlisteners {\n\tmulticast {\n\t\tkey_file = \"/etc/fence_virt.key\";\n\t\taddress = \"225.0.0.12\";\n\t\t# Needed on Fedora systems\n\t\tinterface = \"virbr0\";\n\t}\n}\n\nbackends {\n\tlibvirt { \n\t\turi = \"qemu:///system\";\n\t}\n}\n";

    fn err(text: &str) -> FvcError {
        match import(text) {
            Ok(i) => panic!("expected an error for {text:?}, got {i:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn debian_shipped_config() {
        let i = import(DEBIAN).unwrap();
        assert_eq!(i.backend, FenceBackend::Libvirt);
        assert_eq!(i.uris, vec!["qemu:///system".to_string()]);
        assert_eq!(i.name_mode, NameMode::Name);
        assert_eq!(
            i.listeners,
            ListenersSection {
                multicast: Some(MulticastListener {
                    address: "225.0.0.12".into(),
                    port: 1229,
                    interface: Some("virbr0".into()),
                    key_file: "/etc/fence_virt.key".into(),
                    hash: HashName::Sha256,
                    auth: HashName::Sha256,
                }),
                tcp: None,
                vsock: None,
            }
        );
        assert!(i.groups.is_empty());
        assert!(i.notes.is_empty(), "{:?}", i.notes);
    }

    #[test]
    fn the_installed_file_imports_if_present() {
        // The machine's own /etc/fence_virt.conf (Debian ships one).
        let p = Path::new("/etc/fence_virt.conf");
        if p.exists() {
            let i = load(p).unwrap_or_else(|e| panic!("{e}"));
            assert!(!i.uris.is_empty());
        }
    }

    #[test]
    fn grammar_positions_and_shapes() {
        let n = parse("a { b = \"x\" { c = \"1\"; } d { } }\ne = \"multi\nline\";").unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].name, "a");
        let kids = n[0].children.as_ref().unwrap();
        assert_eq!(kids[0].value.as_deref(), Some("x"));
        assert_eq!(
            kids[0].children.as_ref().unwrap()[0].value.as_deref(),
            Some("1")
        );
        assert_eq!(
            kids[1].children.as_deref(),
            Some(&[][..]),
            "empty blocks are fine"
        );
        assert_eq!(n[1].value.as_deref(), Some("multi\nline"));
        assert_eq!(n[1].pos, Pos { line: 2, column: 1 });
        // Identifiers take anything but the separators, `#` inside included.
        let n = parse("wé#ird.key:1 = \"v\"; # comment\n").unwrap();
        assert_eq!(n[0].name, "wé#ird.key:1");
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let cases: &[(&str, usize, usize, &str)] = &[
            ("", 1, 1, "no statement"),
            ("# only a comment\n\n", 1, 1, "no statement"),
            ("a = \"\";", 1, 5, "empty value"),
            ("a = \"x\"", 1, 8, "`;` missing"),
            (
                "a = \"x\"\nb = \"y\";",
                2,
                1,
                "expected `;` after the value of `a`",
            ),
            (
                "a {\n  b = \"x\";\n",
                3,
                1,
                "end of file inside block `a` opened at line 1, column 1",
            ),
            ("}", 1, 1, "`}` without a block"),
            (
                "a = b;",
                1,
                5,
                "expected a quoted value after `a =`, found `b`",
            ),
            ("a;", 1, 2, "expected `=` or `{` after `a`"),
            ("= \"x\";", 1, 1, "expected a name"),
            ("a = \"never closed;\n", 1, 5, "never closed"),
            ("a = \"x\";\r\n", 1, 9, "carriage return"),
        ];
        for (text, line, col, want) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!((e.line, e.column), (*line, *col), "{text:?}: {e}");
            assert!(e.message.contains(want), "{text:?}: {e}");
        }
        let deep = "a {".repeat(100) + &"}".repeat(100);
        assert!(parse(&deep).unwrap_err().message.contains("nested deeper"));
    }

    #[test]
    fn keys_are_case_insensitive_and_the_last_duplicate_wins() {
        let i = import(
            "FENCE_VIRTD { Listener = \"TCP\"; backend = \"libvirt\"; backend = \"cpg\"; }\n\
             Listeners { tcp { port = \"1\"; PORT = \"2\"; } tcp { port = \"3\"; } }\n\
             backends { CPG { uri = \"a:///\"; URI = \"b:///\"; } }",
        )
        .unwrap();
        assert_eq!(i.backend, FenceBackend::Cpg);
        assert_eq!(i.uris, vec!["b:///".to_string()]);
        assert_eq!(
            i.listeners.tcp.as_ref().unwrap().port,
            3,
            "the last block wins whole"
        );
        assert!(
            i.notes
                .iter()
                .any(|n| n.contains("line 2") && n.contains("ignored")),
            "{:?}",
            i.notes
        );
    }

    #[test]
    fn unknown_keys_name_the_path_and_line() {
        let e = err(
            "fence_virtd { listener = \"multicast\"; backend = \"cpg\"; }\nlisteners { multicast { adress = \"225.0.0.12\"; } }\nbackends { cpg { uri = \"qemu:///system\"; } }",
        );
        assert_eq!(e.key.as_deref(), Some("listeners/multicast/@adress"));
        assert_eq!(e.line, 2);
        assert!(e.message.contains("unknown key"), "{e}");
        let e = err("fence_virtd { listener = \"multicast\"; backend = \"cpg\"; }\nbackendz { }");
        assert_eq!(e.key.as_deref(), Some("backendz"));
        let e = err(
            "fence_virtd { listener = \"multicast\"; backend = \"cpg\"; }\nbackends { cpg { uri = \"q:///\"; flavour = \"x\"; } }",
        );
        assert_eq!(e.key.as_deref(), Some("backends/cpg/@flavour"));
        let e = err("fence_virtd { listener { } }");
        assert_eq!(e.key.as_deref(), Some("fence_virtd/listener"));
        assert!(e.message.contains("must be an attribute"), "{e}");
    }

    #[test]
    fn ignored_settings_are_noted() {
        let i = import(
            "fence_virtd { listener = \"multicast\"; backend = \"cpg\"; module_path = \"/usr/lib/x\"; debug = \"3\"; foreground = \"1\"; wait_for_init = \"1\"; }\n\
             listeners { multicast { } tcp { port = \"99\"; } }\n\
             backends { cpg { uri = \"qemu:///system\"; } libvirt { uri = \"test:///default\"; } }",
        )
        .unwrap();
        for k in [
            "module_path",
            "debug",
            "foreground",
            "wait_for_init",
            "listeners/tcp is ignored",
            "backends/libvirt is ignored",
        ] {
            assert!(i.notes.iter().any(|n| n.contains(k)), "{k}: {:?}", i.notes);
        }
        assert_eq!(i.listeners.multicast, Some(MulticastListener::default()));
        assert_eq!(i.listeners.tcp, None);
        assert_eq!(i.uris, vec!["qemu:///system".to_string()]);
    }

    #[test]
    fn listener_and_backend_choices() {
        let base = |l: &str, b: &str| {
            format!(
                "fence_virtd {{ listener = \"{l}\"; backend = \"{b}\"; }}\nbackends {{ {b} {{ uri = \"qemu:///system\"; }} }}"
            )
        };
        assert!(
            err(&base("serial", "libvirt"))
                .message
                .contains("not supported")
        );
        assert!(
            err(&base("carrier-pigeon", "libvirt"))
                .message
                .contains("not a listener")
        );
        assert!(
            err(&base("multicast", "xen"))
                .message
                .contains("not a backend")
        );
        let v = import(&base("vsock", "libvirt")).unwrap();
        assert_eq!(v.listeners.vsock, Some(VsockListener::default()));
        let e = err("fence_virtd { backend = \"cpg\"; }");
        assert_eq!(e.key.as_deref(), Some("fence_virtd/@listener"));
        let e = err("fence_virtd { listener = \"tcp\"; backend = \"cpg\"; }");
        assert_eq!(e.key.as_deref(), Some("backends/cpg/@uri"));
        let e = err("listeners { }");
        assert!(e.message.contains("fence_virtd { ... }"), "{e}");
    }

    #[test]
    fn uris_are_read_up_to_the_first_gap() {
        let fv = "fence_virtd { listener = \"tcp\"; backend = \"libvirt\"; }\n";
        let i = import(&format!(
            "{fv}backends {{ libvirt {{ uri2 = \"c:///\"; uri = \"a:///\"; uri1 = \"b:///\"; }} }}"
        ))
        .unwrap();
        assert_eq!(i.uris, vec!["a:///", "b:///", "c:///"]);
        let e = err(&format!(
            "{fv}backends {{ libvirt {{ uri = \"a:///\"; uri2 = \"c:///\"; }} }}"
        ));
        assert_eq!(e.key.as_deref(), Some("backends/libvirt/@uri2"));
        assert!(e.message.contains("`uri1` is missing"), "{e}");
        let e = err(&format!(
            "{fv}backends {{ libvirt {{ uri = \"nocolon\"; }} }}"
        ));
        assert!(e.message.contains("not a libvirt URI"), "{e}");
        let e = err(&format!(
            "{fv}backends {{ libvirt {{ uri = \"a:///\"; uri01 = \"b:///\"; }} }}"
        ));
        assert_eq!(e.key.as_deref(), Some("backends/libvirt/@uri01"));
        let e = err(&format!(
            "{fv}backends {{ libvirt {{ uri = \"a:///\"; name_mode = \"uuid\"; }} }}"
        ));
        assert_eq!(
            e.key.as_deref(),
            Some("backends/libvirt/@name_mode"),
            "name_mode is a cpg key"
        );
    }

    #[test]
    fn name_mode_cpg_overrides_the_legacy_one() {
        let i = import("fence_virtd { listener = \"tcp\"; backend = \"cpg\"; name_mode = \"uuid\"; }\nbackends { cpg { uri = \"a:///\"; } }").unwrap();
        assert_eq!(i.name_mode, NameMode::Uuid);
        let i = import("fence_virtd { listener = \"tcp\"; backend = \"cpg\"; name_mode = \"uuid\"; }\nbackends { cpg { uri = \"a:///\"; name_mode = \"name\"; } }").unwrap();
        assert_eq!(i.name_mode, NameMode::Name);
        let e = err(
            "fence_virtd { listener = \"tcp\"; backend = \"cpg\"; name_mode = \"both\"; }\nbackends { cpg { uri = \"a:///\"; } }",
        );
        assert_eq!(e.key.as_deref(), Some("fence_virtd/@name_mode"));
    }

    #[test]
    fn listener_values() {
        let fv = |l: &str, body: &str| {
            format!(
                "fence_virtd {{ listener = \"{l}\"; backend = \"libvirt\"; }}\nlisteners {{ {l} {{ {body} }} }}\nbackends {{ libvirt {{ uri = \"qemu:///system\"; }} }}"
            )
        };
        let m = import(&fv(
            "multicast",
            "family = \"ipv6\"; hash = \"SHA512\"; auth = \"sha1\"; port = \"1300\";",
        ))
        .unwrap();
        let m = m.listeners.multicast.unwrap();
        assert_eq!(m.address, "ff05::3:1", "the family's default group");
        assert_eq!(
            (m.hash, m.auth, m.port),
            (HashName::Sha512, HashName::Sha1, 1300)
        );
        let e = err(&fv(
            "multicast",
            "family = \"ipv4\"; address = \"ff05::3:1\";",
        ));
        assert!(e.message.contains("does not match"), "{e}");
        let e = err(&fv("multicast", "address = \"10.1.1.1\";"));
        assert!(e.message.contains("not a multicast address"), "{e}");
        let e = err(&fv("multicast", "port = \"0\";"));
        assert_eq!(e.key.as_deref(), Some("listeners/multicast/@port"));
        let e = err(&fv("multicast", "port = \"1229x\";"));
        assert!(e.message.contains("not a port"), "{e}");
        let e = err(&fv("multicast", "hash = \"md5\";"));
        assert!(e.message.contains("not a hash"), "{e}");
        let e = err(&fv("multicast", "key_file = \"fence.key\";"));
        assert!(e.message.contains("absolute"), "{e}");
        let e = err(&fv("multicast", "family = \"ipx\";"));
        assert!(e.message.contains("not a family"), "{e}");
        let i = import(&fv("multicast", "address = \"ff05::3:1\";")).unwrap();
        assert!(
            i.notes.iter().any(|n| n.contains("without `family")),
            "{:?}",
            i.notes
        );

        let t = import(&fv("tcp", "family = \"ipv6\";"))
            .unwrap()
            .listeners
            .tcp
            .unwrap();
        assert_eq!((t.address.as_str(), t.port), ("::1", 1229));
        let e = err(&fv("tcp", "interface = \"eth0\";"));
        assert_eq!(
            e.key.as_deref(),
            Some("listeners/tcp/@interface"),
            "tcp has no interface"
        );
        let v = import(&fv("vsock", "port = \"4294967294\";"))
            .unwrap()
            .listeners
            .vsock
            .unwrap();
        assert_eq!(v.port, u32::MAX - 1);
        let e = err(&fv("vsock", "address = \"1.2.3.4\";"));
        assert_eq!(e.key.as_deref(), Some("listeners/vsock/@address"));
    }

    #[test]
    fn tcp_and_vsock_auth_reproduce_fence_virtd() {
        let fv = |l: &str, body: &str| {
            format!(
                "fence_virtd {{ listener = \"{l}\"; backend = \"libvirt\"; }}\nlisteners {{ {l} {{ {body} }} }}\nbackends {{ libvirt {{ uri = \"qemu:///system\"; }} }}"
            )
        };
        // fence_virtd: `auth` overwrote the packet hash; the handshake stayed sha256.
        let i = import(&fv("tcp", "hash = \"sha512\"; auth = \"none\";")).unwrap();
        let t = i.listeners.tcp.unwrap();
        assert_eq!((t.hash, t.auth), (HashName::None, HashName::Sha256));
        assert!(
            i.notes.iter().any(|n| n.contains("its bug")),
            "{:?}",
            i.notes
        );
        let t = import(&fv("tcp", "hash = \"sha1\";"))
            .unwrap()
            .listeners
            .tcp
            .unwrap();
        assert_eq!((t.hash, t.auth), (HashName::Sha1, HashName::Sha256));
        let v = import(&fv("vsock", "auth = \"sha512\";"))
            .unwrap()
            .listeners
            .vsock
            .unwrap();
        assert_eq!((v.hash, v.auth), (HashName::Sha512, HashName::Sha256));
    }

    #[test]
    fn groups_map_and_validate() {
        let fv = "fence_virtd { listener = \"multicast\"; backend = \"cpg\"; }\nbackends { cpg { uri = \"qemu:///system\"; } }\n";
        let i = import(&format!(
            "{fv}groups {{\n group {{ name = \"web\"; uuid = \"web1\"; uuid = \"8f1e0001-0000-4000-8000-000000000011\"; ip = \"10.0.0.1\"; ip = \"3\"; }}\n group {{ uuid = \"db1\"; ip = \"10.0.0.2\"; }}\n group {{ }}\n}}"
        ))
        .unwrap();
        assert_eq!(
            i.groups,
            vec![
                PermissionGroup {
                    name: "web".into(),
                    uuid: vec!["web1".into(), "8f1e0001-0000-4000-8000-000000000011".into()],
                    ip: vec!["10.0.0.1".into(), "3".into()],
                },
                PermissionGroup {
                    name: "unnamed-2".into(),
                    uuid: vec!["db1".into()],
                    ip: vec!["10.0.0.2".into()],
                },
            ]
        );
        assert!(
            i.notes
                .iter()
                .any(|n| n.contains("line 6") && n.contains("dropped")),
            "{:?}",
            i.notes
        );
        let e = err(&format!(
            "{fv}groups {{ group {{ name = \"x\"; uuid = \"vm\"; }} }}"
        ));
        assert!(e.message.contains("no `ip` entries"), "{e}");
        let e = err(&format!("{fv}groups {{ grp {{ }} }}"));
        assert_eq!(e.key.as_deref(), Some("groups/grp"));
        let e = err(&format!(
            "{fv}groups {{ group {{ ip = \"1.1.1.1\"; host = \"x\"; }} }}"
        ));
        assert_eq!(e.key.as_deref(), Some("groups/group/@host"));
    }

    #[test]
    fn printed_toml_is_a_valid_config_with_the_same_settings() {
        let text = format!(
            "{DEBIAN}\ngroups {{ group {{ name = \"g\"; uuid = \"vm1\"; ip = \"10.0.0.9\"; }} }}\n"
        );
        let i = import(&text).unwrap();
        let toml_text = i.to_toml();
        let c = Config::parse(&toml_text, Path::new("imported.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
        let applied = i
            .apply(Config::default(), None, Path::new("/etc/fence_virt.conf"))
            .unwrap();
        assert_eq!(c, applied);
        assert_eq!(c.listeners, i.listeners);
        assert_eq!(c.groups, i.groups);
        assert!(toml_text.contains("[listeners.multicast]"), "{toml_text}");
        assert!(toml_text.contains("[[groups]]"), "{toml_text}");
    }

    #[test]
    fn notes_with_multi_line_values_stay_comments() {
        let i = import("fence_virtd { listener = \"tcp\"; backend = \"cpg\"; module_path = \"/a\nb = 1\"; }\nbackends { cpg { uri = \"q:///\"; } }").unwrap();
        let t = i.to_toml();
        assert!(t.contains("#   b = 1"), "{t}");
        let i = import("fence_virtd { listener = \"tcp\"; backend = \"cpg\"; debug = \"\x1b[1m\x0c\"; }\nbackends { cpg { uri = \"q:///\nx\ty\"; } }").unwrap();
        let t = i.to_toml();
        let c = Config::parse(&t, Path::new("x.toml")).unwrap_or_else(|e| panic!("{e}\n{t}"));
        assert_eq!(c.libvirt.uris, vec!["q:///\nx\ty".to_string()]);
        let c = Config::parse(&t, Path::new("x.toml")).unwrap();
        assert_eq!(c.listeners.tcp, Some(TcpListenerConf::default()));
    }

    #[test]
    fn apply_refuses_settings_given_twice() {
        let i = import(DEBIAN).unwrap();
        let p = Path::new("/etc/fenceline/fenceline.toml");
        let fvc = Path::new("/etc/fence_virt.conf");
        for (toml_text, key) in [
            ("[fencing]\nbackend = \"cpg\"\n", "fencing.backend"),
            ("[libvirt]\nuris = [\"qemu:///system\"]\n", "libvirt.uris"),
            ("[libvirt]\nname_mode = \"uuid\"\n", "libvirt.name_mode"),
            ("[listeners.tcp]\n", "listeners"),
            ("[[groups]]\nuuid = [\"a\"]\nip = [\"b\"]\n", "groups"),
        ] {
            let base = Config::parse(toml_text, p).unwrap();
            let e = i
                .apply(base, Some((toml_text, p)), fvc)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("key `{key}`")), "{e}");
            assert!(e.contains("--fence-virt-conf /etc/fence_virt.conf"), "{e}");
        }
        // fenceline-only settings combine.
        let toml_text = "[log]\nlevel = \"debug\"\n[fencing]\ntimeout_secs = 9\n[libvirt]\nreconcile_secs = 120\n";
        let base = Config::parse(toml_text, p).unwrap();
        let c = i.apply(base, Some((toml_text, p)), fvc).unwrap();
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.fencing.timeout_secs, 9);
        assert_eq!(c.libvirt.reconcile_secs, 120);
        assert_eq!(c.fencing.backend, FenceBackend::Libvirt);
        assert_eq!(c.listeners, i.listeners);
    }

    #[test]
    fn load_names_the_file_and_refuses_non_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fence_virt.conf");
        std::fs::write(&p, b"fence_virtd {\n listener = \"m\xffx\";\n}").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.contains("fence_virt.conf:2:"), "{e}");
        assert!(e.contains("not UTF-8"), "{e}");
        std::fs::write(&p, "fence_virtd { listener = \"tcp\"; }\n").unwrap();
        let e = load(&p).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:1:", p.display())), "{e}");
        assert!(load(&dir.path().join("missing")).is_err());
    }
}
