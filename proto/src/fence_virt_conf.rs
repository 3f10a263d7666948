//! The fence_virt.conf grammar (fence-agents `config/config.l`,
//! `config.y`): a lexer and parser from text into a tree of [`Node`]s with
//! their positions. Pure: no I/O and nothing of fenceline's config.

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
    /// An error at `pos`.
    pub fn at(pos: Pos, message: impl Into<String>) -> Self {
        Self {
            line: pos.line,
            column: pos.column,
            key: None,
            message: message.into(),
        }
    }

    /// An error about the key `key` (a key path) at `pos`.
    pub fn key(pos: Pos, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            line: pos.line,
            column: pos.column,
            key: Some(key.into()),
            message: message.into(),
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
    /// A block (`ID { … }`), not an attribute.
    pub fn is_block(&self) -> bool {
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

/// The position just past the end of `text`.
pub fn end_pos(text: &str) -> Pos {
    let line = text.matches('\n').count() + 1;
    let last = text.rsplit('\n').next().unwrap_or("");
    Pos {
        line,
        column: last.chars().count() + 1,
    }
}
