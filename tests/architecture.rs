//! The architecture checks itself. ARCHITECTURE.md's "Layers" table is the
//! rule book: every source file belongs to the layer with the longest
//! matching path prefix, and may use only the layers that row names. This
//! test reads every `use` tree and every `crate::`, `super::` and
//! `fenceline_proto::` path in the workspace's sources, resolves it to a
//! file, and fails on any reference the table forbids; it also fails on
//! forbidden capabilities (I/O, logging, the clock) named in the table's
//! last column, and on any non-test source file over 800 lines.
//!
//! Comments and string literals are stripped before scanning, so a path in
//! a doc comment is not an import. Test code (files under a `tests/`
//! directory, files named `tests.rs`, and `#[cfg(test)]` inline modules) is
//! held to the import rules but not to the capability and size rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------- rule book

#[derive(Debug, Clone)]
struct Layer {
    name: String,
    prefixes: Vec<String>,
    /// Layer names this layer may use; `*` is every layer.
    may_use: Vec<String>,
    /// Capabilities it must not use: `io`, `logging`, `clock`.
    must_not: Vec<String>,
}

/// Reads the table under the heading that names this file.
fn read_layers(markdown: &str) -> Vec<Layer> {
    let mut in_section = false;
    let mut layers = Vec::new();
    for line in markdown.lines() {
        if line.starts_with("## ") {
            in_section = line.contains("Layers");
            continue;
        }
        if !in_section || !line.trim_start().starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.len() < 4 || cells[0] == "Layer" || cells[0].starts_with("---") {
            continue;
        }
        let words = |s: &str| -> Vec<String> {
            s.split(',')
                .map(|w| w.trim().trim_matches('`').to_string())
                .filter(|w| !w.is_empty() && w != "—" && w != "-")
                .collect()
        };
        layers.push(Layer {
            name: cells[0].trim_matches('`').to_string(),
            prefixes: words(cells[1]),
            may_use: words(cells[2]),
            must_not: words(cells[3]),
        });
    }
    layers
}

fn layer_of<'a>(layers: &'a [Layer], file: &str) -> Option<&'a Layer> {
    layers
        .iter()
        .flat_map(|l| l.prefixes.iter().map(move |p| (l, p)))
        .filter(|(_, p)| file.starts_with(p.as_str()))
        .max_by_key(|(_, p)| p.len())
        .map(|(l, _)| l)
}

// ------------------------------------------------------------- the scanner

/// Source text with comments, string and char literals blanked out (line
/// structure kept, so line numbers stay true).
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            // raw string r"..." / r#"..."#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            for &x in &b[i..j.min(b.len())] {
                blank(&mut out, x);
            }
            i = j;
        } else if c == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            out.push(b' ');
            i += 1;
        } else if c == b'\'' {
            // char literal ('x', '\n', '\u{..}') vs lifetime ('a)
            let close = if b.get(i + 1) == Some(&b'\\') {
                (i + 2..b.len().min(i + 12)).find(|&k| b[k] == b'\'')
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                // multi-byte UTF-8 char literal
                (i + 2..b.len().min(i + 6)).find(|&k| b[k] == b'\'' && b[i + 1] >= 0x80)
            };
            match close {
                Some(k) => {
                    out.resize(out.len() + (k + 1 - i), b' ');
                    i = k + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Clone, PartialEq)]
struct Reference {
    line: usize,
    /// Absolute path segments: `crate::a::b` → ["crate","a","b"],
    /// `fenceline_proto::api` → ["fenceline_proto","api"], `tracing::warn`.
    path: Vec<String>,
    in_test: bool,
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into paths.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn go(s: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let s = s.trim();
        if s.is_empty() {
            return;
        }
        if let Some(open) = s.find('{') {
            let head: Vec<String> = s[..open]
                .split("::")
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect();
            let mut p = prefix.to_vec();
            p.extend(head);
            let inner = &s[open + 1..s.rfind('}').unwrap_or(s.len())];
            let mut depth = 0;
            let mut start = 0;
            for (k, ch) in inner.char_indices() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        go(&inner[start..k], &p, out);
                        start = k + 1;
                    }
                    _ => {}
                }
            }
            go(&inner[start..], &p, out);
        } else {
            let s = s.split(" as ").next().unwrap_or(s);
            let mut p = prefix.to_vec();
            p.extend(
                s.split("::")
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty()),
            );
            out.push(p);
        }
    }
    let mut out = Vec::new();
    go(tree, &[], &mut out);
    out
}

/// Every path a file refers to, with `super::`/`self::` resolved against
/// the module the reference sits in (`module` is the file's own path).
fn references(stripped: &str, module: &[String]) -> Vec<Reference> {
    let b = stripped.as_bytes();
    let line_at = |pos: usize| stripped[..pos].bytes().filter(|&c| c == b'\n').count() + 1;
    // Inline modules: (name, brace depth at which it closes, is test).
    let mut mods: Vec<(String, usize, bool)> = Vec::new();
    let mut depth = 0usize;
    let mut pending_cfg_test = false;
    let mut refs = Vec::new();
    let mut i = 0;
    let current = |mods: &Vec<(String, usize, bool)>| -> (Vec<String>, bool) {
        let mut m = module.to_vec();
        m.extend(mods.iter().map(|x| x.0.clone()));
        (m, mods.iter().any(|x| x.2))
    };
    while i < b.len() {
        let c = b[i];
        if c == b'{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == b'}' {
            depth = depth.saturating_sub(1);
            while mods.last().is_some_and(|m| m.1 > depth) {
                mods.pop();
            }
            i += 1;
            continue;
        }
        if c == b'#' && stripped[i..].starts_with("#[cfg(test)]") {
            pending_cfg_test = true;
            i += "#[cfg(test)]".len();
            continue;
        }
        if !is_ident(c) || (i > 0 && (is_ident(b[i - 1]) || b[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && (is_ident(b[i]) || b[i] == b':') {
            i += 1;
        }
        let word = &stripped[start..i];
        if word == "mod" {
            let rest = &stripped[i..];
            let name: String = rest
                .trim_start()
                .bytes()
                .take_while(|&c| is_ident(c))
                .map(char::from)
                .collect();
            let after = rest.trim_start()[name.len()..].trim_start();
            if after.starts_with('{') {
                mods.push((name, depth + 1, pending_cfg_test));
            }
            pending_cfg_test = false;
            continue;
        }
        if word == "fn" || word == "struct" || word == "enum" || word == "impl" {
            pending_cfg_test = false;
        }
        let (here, in_test) = current(&mods);
        let resolve = |segs: Vec<String>| -> Option<Vec<String>> {
            let mut segs = segs.into_iter().peekable();
            let first = segs.peek()?.clone();
            let mut base: Vec<String> = match first.as_str() {
                "crate" => {
                    segs.next();
                    vec!["crate".into()]
                }
                "self" => {
                    segs.next();
                    here.clone()
                }
                "super" => {
                    let mut m = here.clone();
                    while segs.peek().map(String::as_str) == Some("super") {
                        segs.next();
                        m.pop();
                    }
                    m
                }
                _ => vec![],
            };
            base.extend(segs);
            (!base.is_empty()).then_some(base)
        };
        if word == "use" {
            pending_cfg_test = false;
            let end = stripped[i..].find(';').map_or(b.len(), |e| i + e);
            for p in expand_use(&stripped[i..end]) {
                if let Some(p) = resolve(p) {
                    refs.push(Reference {
                        line: line_at(start),
                        path: p,
                        in_test,
                    });
                }
            }
            i = end;
            continue;
        }
        if word.contains("::") {
            let segs: Vec<String> = word
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            if let Some(p) = resolve(segs) {
                refs.push(Reference {
                    line: line_at(start),
                    path: p,
                    in_test,
                });
            }
        }
        // Macros used bare after a `use` are caught by the `use`.
        if (word == "println" || word == "eprintln") && b.get(i) == Some(&b'!') {
            refs.push(Reference {
                line: line_at(start),
                path: vec![word.to_string()],
                in_test,
            });
        }
    }
    refs
}

/// The capability a path exercises, if any.
fn capability(path: &[String]) -> Option<&'static str> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["tracing", ..] | ["log", ..] | ["println"] | ["eprintln"] => Some("logging"),
        ["std", "fs", ..]
        | ["std", "net", "TcpStream" | "TcpListener" | "UdpSocket", ..]
        | [
            "std",
            "process",
            "Command" | "Child" | "Stdio" | "exit" | "abort",
            ..,
        ]
        | ["std", "net", "ToSocketAddrs" | "lookup_host", ..]
        | ["std", "os", "unix", "net", ..]
        | ["tokio", ..]
        | ["socket2", ..]
        | ["libc", ..]
        | ["virt", ..]
        | ["rust_corosync", ..] => Some("io"),
        [.., "SystemTime", "now"] | [.., "Instant", "now"] => Some("clock"),
        _ => None,
    }
}

/// The file a crate path lands in, as a path prefix: `crate::engine::fence::tcp`
/// → `src/engine/fence/tcp`; `fenceline_proto::api` → `proto/src/api`.
fn target_file(path: &[String]) -> Option<String> {
    let (base, rest) = match path.first().map(String::as_str) {
        Some("crate") => ("src", &path[1..]),
        Some("fenceline_proto") => ("proto/src", &path[1..]),
        Some("fenceline_hook") => ("hook/src", &path[1..]),
        Some("fenceline_config") => ("config/src", &path[1..]),
        Some("fenceline") => ("src", &path[1..]),
        _ => return None,
    };
    // Walk down while a module file or directory exists.
    let mut dir = root().join(base);
    let mut found = format!("{base}/lib.rs");
    for seg in rest {
        let as_file = dir.join(format!("{seg}.rs"));
        let as_dir = dir.join(seg);
        if as_dir.join("mod.rs").exists() {
            found = as_dir.join("mod.rs").to_string_lossy().into_owned();
            dir = as_dir;
        } else if as_file.exists() {
            found = as_file.to_string_lossy().into_owned();
            dir = as_dir; // `foo.rs` + `foo/` submodules
        } else {
            break;
        }
    }
    let root_s = format!("{}/", root().to_string_lossy());
    Some(found.trim_start_matches(&root_s).to_string())
}

fn module_of(file: &str) -> Vec<String> {
    let (krate, rest) = if let Some(r) = file.strip_prefix("proto/src/") {
        ("fenceline_proto", r)
    } else if let Some(r) = file.strip_prefix("hook/src/") {
        ("fenceline_hook", r)
    } else if let Some(r) = file.strip_prefix("config/src/") {
        ("fenceline_config", r)
    } else {
        ("crate", file.strip_prefix("src/").unwrap_or(file))
    };
    let mut m = vec![krate.to_string()];
    let rest = rest.trim_end_matches(".rs");
    for seg in rest.split('/') {
        if seg != "mod" && seg != "lib" && seg != "main" {
            m.push(seg.to_string());
        }
    }
    if krate != "crate" {
        // Inside the proto/hook crates `crate::` means that crate.
        m[0] = "crate".into();
    }
    m
}

fn is_test_file(file: &str) -> bool {
    file.contains("/tests/") || file.ends_with("/tests.rs")
}

// ---------------------------------------------------------------- checking

#[derive(Debug)]
struct Finding(String);

fn check_file(layers: &[Layer], file: &str, src: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(me) = layer_of(layers, file) else {
        out.push(Finding(format!(
            "{file}: belongs to no layer of ARCHITECTURE.md's Layers table"
        )));
        return out;
    };
    let test_file = is_test_file(file);
    if !test_file {
        let n = src.lines().count();
        if n > MAX_LINES {
            out.push(Finding(format!(
                "{file}: {n} lines (rooms stay ≤ {MAX_LINES}; split it along its seams)"
            )));
        }
    }
    let crate_name = if file.starts_with("proto/") {
        "fenceline_proto"
    } else if file.starts_with("hook/") {
        "fenceline_hook"
    } else if file.starts_with("config/") {
        "fenceline_config"
    } else {
        "crate"
    };
    for r in references(&strip(src), &module_of(file)) {
        let in_test = r.in_test || test_file;
        if let Some(cap) = capability(&r.path)
            && !in_test
            && me.must_not.iter().any(|m| m == cap)
        {
            out.push(Finding(format!(
                "{file}:{}: layer `{}` must not use {cap} (`{}`)",
                r.line,
                me.name,
                r.path.join("::")
            )));
        }
        let mut path = r.path.clone();
        if path[0] == "crate" && crate_name != "crate" {
            path[0] = crate_name.to_string();
        }
        let Some(target) = target_file(&path) else {
            continue;
        };
        let Some(them) = layer_of(layers, &target) else {
            continue;
        };
        if them.name == me.name || me.may_use.iter().any(|u| u == "*" || *u == them.name) {
            continue;
        }
        out.push(Finding(format!(
            "{file}:{}: layer `{}` may not use layer `{}` (`{}` is in {target})",
            r.line,
            me.name,
            them.name,
            r.path.join("::")
        )));
    }
    out
}

fn sources() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    for base in ["src", "proto/src", "hook/src", "config/src"] {
        walk(&root().join(base), &mut files);
    }
    let root_s = format!("{}/", root().to_string_lossy());
    let mut files: Vec<String> = files
        .into_iter()
        .map(|p| p.to_string_lossy().trim_start_matches(&root_s).to_string())
        .collect();
    files.sort();
    files
}

fn rule_book() -> Vec<Layer> {
    let md = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let layers = read_layers(&md);
    assert!(
        layers.len() >= 8,
        "ARCHITECTURE.md's Layers table has {} rows; the test cannot check without it",
        layers.len()
    );
    layers
}

#[test]
fn the_workspace_keeps_the_layers_of_architecture_md() {
    let layers = rule_book();
    let files = sources();
    assert!(files.len() > 50, "only {} source files found", files.len());
    let mut findings = Vec::new();
    let mut per_layer: BTreeMap<String, usize> = BTreeMap::new();
    for f in &files {
        let src = std::fs::read_to_string(root().join(f)).unwrap();
        if let Some(l) = layer_of(&layers, f) {
            *per_layer.entry(l.name.clone()).or_default() += 1;
        }
        findings.extend(check_file(&layers, f, &src));
    }
    eprintln!("files per layer: {per_layer:?}");
    let text: Vec<String> = findings.into_iter().map(|f| f.0).collect();
    assert!(
        text.is_empty(),
        "{} architecture violations:\n{}",
        text.len(),
        text.join("\n")
    );
}

#[test]
fn every_layer_row_names_paths_that_exist() {
    for l in rule_book() {
        for p in &l.prefixes {
            let path = root().join(p);
            let as_file = root().join(format!("{p}.rs"));
            assert!(
                path.exists() || as_file.exists(),
                "layer `{}` names `{p}`, which does not exist",
                l.name
            );
        }
        for u in &l.may_use {
            assert!(
                u == "*" || rule_book().iter().any(|x| &x.name == u),
                "layer `{}` may use `{u}`, which is no layer",
                l.name
            );
        }
    }
}

// The checker itself: each rule must be able to fail.

fn toy_layers() -> Vec<Layer> {
    read_layers(
        "## Layers\n\
         | Layer | Files | May use | Must not use |\n\
         |---|---|---|---|\n\
         | `proto` | `proto/src/` | — | io, logging |\n\
         | `model` | `src/engine/model/` | proto | io, logging, clock |\n\
         | `engine` | `src/engine/` | model, proto | — |\n\
         | `corosync` | `src/engine/corosync/` | engine, model, proto | — |\n\
         | `libvirt` | `src/engine/libvirt/` | engine, model, proto | — |\n\
         | `client` | `src/engine/control/client.rs` | proto | — |\n\
         | `control` | `src/engine/control/` | engine, model, proto | — |\n\
         | `ui` | `src/ui/` | proto, client | — |\n\
         | `config` | `src/config` | proto | — |\n\
         | `edge` | `src/` | * | — |\n\
         ## Next\n| `x` | `y` | z | — |\n",
    )
}

#[test]
fn checker_reads_the_table() {
    let l = toy_layers();
    assert_eq!(l.len(), 10);
    assert_eq!(l[1].must_not, vec!["io", "logging", "clock"]);
    assert_eq!(
        layer_of(&l, "src/engine/model/fence.rs").unwrap().name,
        "model"
    );
    assert_eq!(layer_of(&l, "src/engine/mod.rs").unwrap().name, "engine");
    assert_eq!(
        layer_of(&l, "src/engine/control/client.rs").unwrap().name,
        "client"
    );
    assert_eq!(layer_of(&l, "src/config.rs").unwrap().name, "config");
    assert_eq!(layer_of(&l, "src/main.rs").unwrap().name, "edge");
}

#[test]
fn checker_catches_a_forbidden_import_in_every_form() {
    let l = toy_layers();
    let bad = [
        ("src/ui/view/x.rs", "use crate::engine::model::Cluster;"),
        ("src/ui/view/x.rs", "use crate::{engine::{model}, ui::app};"),
        ("src/ui/view/x.rs", "fn f() { crate::cli::age(1); }"),
        ("src/config.rs", "use crate::ui::theme::Theme;"),
        (
            "src/engine/libvirt/worker.rs",
            "use crate::engine::corosync::driver;",
        ),
        (
            "src/engine/libvirt/worker.rs",
            "use super::super::corosync;",
        ),
        ("src/engine/control/client.rs", "use super::server::read;"),
        (
            "src/engine/model/fence.rs",
            "fn f() { tracing::warn!(\"x\"); }",
        ),
        ("src/engine/model/fence.rs", "use tracing::warn;"),
        (
            "src/engine/model/fence.rs",
            "fn f() { let t = std::time::Instant::now(); }",
        ),
        ("src/engine/model/fence.rs", "fn f() { println!(\"x\"); }"),
        ("proto/src/api.rs", "use std::fs::File;"),
        ("proto/src/api.rs", "use std::net::{IpAddr, UdpSocket};"),
        (
            "proto/src/api.rs",
            "use crate::x; fn f() { tokio::spawn(x); }",
        ),
    ];
    for (file, src) in bad {
        assert!(
            !check_file(&l, file, src).is_empty(),
            "not caught: {file}: {src}"
        );
    }
}

#[test]
fn checker_lets_allowed_code_through() {
    let l = toy_layers();
    let good = [
        ("src/ui/view/x.rs", "use fenceline_proto::api::Snapshot;"),
        (
            "src/ui/view/x.rs",
            "use crate::ui::app::App; use super::theme;",
        ),
        ("src/ui/view/x.rs", "// use crate::engine::model::Cluster;"),
        (
            "src/ui/view/x.rs",
            "const S: &str = \"crate::engine::model\";",
        ),
        (
            "src/engine/libvirt/worker.rs",
            "use crate::engine::{InputTx, model::Input};",
        ),
        (
            "src/engine/model/fence.rs",
            "#[cfg(test)]\nmod tests { fn t() { println!(\"x\"); } }",
        ),
        (
            "src/engine/model/fence.rs",
            "fn f<'a>(x: &'a str) -> char { 'x' }",
        ),
        ("src/main.rs", "use crate::engine::model; use crate::ui;"),
        (
            "proto/src/api.rs",
            "use std::net::{IpAddr, Ipv6Addr, SocketAddr};",
        ),
    ];
    for (file, src) in good {
        let f = check_file(&l, file, src);
        assert!(f.is_empty(), "false alarm for {file}: {src}: {f:?}");
    }
}

#[test]
fn checker_counts_lines_of_non_test_files_only() {
    let l = toy_layers();
    let long = "fn f() {}\n".repeat(MAX_LINES + 1);
    assert!(!check_file(&l, "src/engine/model/big.rs", &long).is_empty());
    assert!(check_file(&l, "src/engine/model/tests.rs", &long).is_empty());
    assert!(check_file(&l, "src/engine/model/tests/fence.rs", &long).is_empty());
    assert!(
        check_file(
            &l,
            "src/engine/model/x.rs",
            &"fn f() {}\n".repeat(MAX_LINES)
        )
        .is_empty()
    );
}

#[test]
fn a_file_outside_every_layer_is_reported() {
    let l = toy_layers();
    assert!(!check_file(&l, "elsewhere/x.rs", "").is_empty());
}

/// The pure crates, the hook and the fuzz targets build without libvirt's
/// or corosync's development libraries: none of them depends, even
/// indirectly, on `virt` or `rust-corosync` (or on the main crate, which
/// does).
#[test]
fn the_pure_crates_and_the_fuzz_targets_need_no_libvirt_or_corosync() {
    for krate in ["fenceline-proto", "fenceline-config", "fenceline-hook"] {
        let out = std::process::Command::new(env!("CARGO"))
            .args([
                "tree",
                "--offline",
                "-p",
                krate,
                "-e",
                "normal,build",
                "--prefix",
                "none",
            ])
            .current_dir(root())
            .output()
            .expect("cargo tree");
        assert!(
            out.status.success(),
            "cargo tree -p {krate}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8_lossy(&out.stdout);
        assert!(
            tree.starts_with(krate),
            "unexpected tree for {krate}:\n{tree}"
        );
        for bad in ["virt ", "virt-sys ", "rust-corosync ", "fenceline v"] {
            assert!(
                !tree.lines().any(|l| l.starts_with(bad)),
                "{krate} depends on {bad}:\n{tree}"
            );
        }
    }
    let fuzz: toml::Table = std::fs::read_to_string(root().join("fuzz/Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let deps = fuzz["dependencies"].as_table().unwrap();
    for (name, spec) in deps {
        if let Some(path) = spec.get("path").and_then(|p| p.as_str()) {
            assert!(
                ["../proto", "../config"].contains(&path),
                "the fuzz crate depends on {name} at {path}: fuzz only the pure crates"
            );
        } else {
            assert!(
                !["virt", "virt-sys", "rust-corosync", "fenceline"].contains(&name.as_str()),
                "the fuzz crate depends on {name}"
            );
        }
    }
}

/// `rust-version` in Cargo.toml is a promise: every package the lock
/// resolves must build with it (cargo's resolver respects it on update; this
/// catches a hand-edited lock or a raised dependency).
#[test]
fn every_locked_package_builds_with_the_declared_rust_version() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let version = |s: &str| -> Vec<u32> {
        let mut v: Vec<u32> = s.split('.').map(|x| x.parse().unwrap_or(0)).collect();
        v.resize(3, 0);
        v
    };
    let packages = meta["packages"].as_array().unwrap();
    let ours = packages
        .iter()
        .find(|p| p["name"] == "fenceline")
        .and_then(|p| p["rust_version"].as_str())
        .expect("Cargo.toml declares rust-version");
    let mut too_new = Vec::new();
    for p in packages {
        if let Some(rv) = p["rust_version"].as_str()
            && version(rv) > version(ours)
        {
            too_new.push(format!("{} {} needs Rust {rv}", p["name"], p["version"]));
        }
    }
    assert!(
        too_new.is_empty(),
        "the lock needs a newer Rust than rust-version = {ours}:\n{}",
        too_new.join("\n")
    );
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("Rust {ours}")),
        "README.md must state the same toolchain floor (\"Rust {ours}\")"
    );
}
