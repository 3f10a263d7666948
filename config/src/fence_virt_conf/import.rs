//! fence_virt.conf's tree mapped onto fenceline's settings: the keys
//! fence_virtd reads, looked up the way it does; unknown keys are errors
//! naming their path, keys accepted but unused become notes.

use std::path::{Path, PathBuf};

use crate::{
    ConfigError, FenceBackend, HashName, ListenersSection, MulticastListener, NameMode,
    PermissionGroup, TcpListenerConf, VsockListener,
};

use fenceline_proto::fence_virt_conf::{FvcError, Node, Pos, end_pos, parse};

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
            return Err(in_file(
                FvcError::at(pos, "the file is not UTF-8 text"),
                path,
            ));
        }
    };
    import(text).map_err(|e| in_file(e, path))
}

/// A fence_virt.conf error as a [`ConfigError`] naming the file.
pub fn in_file(e: FvcError, path: &Path) -> ConfigError {
    ConfigError::Parse {
        path: path.to_path_buf(),
        line: e.line,
        column: e.column,
        key: e.key,
        message: e.message,
    }
}
