//! `fenceline config init` (the counterpart of `fence_virtd -c`) and
//! `fenceline config show`: write a config and the fence key, print the
//! guest-side and Pacemaker commands that match; print the effective config.
//!
//! The plan ([`InitOptions`] → [`Config`] text) and the advice are pure and
//! unit-tested; [`init`] does the file work (no overwrite without `force`,
//! the key created `O_EXCL` and never replaced).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use fenceline_config::{
    Config, DEFAULT_KEY_FILE, MulticastListener, TcpListenerConf, VsockListener,
};
use fenceline_proto::fence_xvm::MAX_KEY_LEN;

mod advice;
#[cfg(test)]
mod tests;

pub use advice::advice;

/// Which listener the new config enables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListenerKind {
    /// fence_xvm (multicast 225.0.0.12:1229 on the guests' bridge).
    Multicast,
    /// fence_virt -T ADDRESS.
    Tcp,
    /// fence_virt -S (guests over vsock).
    Vsock,
    /// No listener: the engine only (status, console, `fenceline fence`).
    None,
}

/// What `config init` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    pub listener: ListenerKind,
    /// Multicast: join on this interface (e.g. virbr0).
    pub interface: Option<String>,
    /// Multicast group, or the tcp listener's address.
    pub address: Option<String>,
    pub key_file: PathBuf,
    /// The cluster key (`[corosync] cluster_key`); created unless it exists.
    pub cluster_key: PathBuf,
    pub uris: Vec<String>,
    /// Multicast: networks connect-backs may go to (CIDR).
    pub callback_networks: Vec<String>,
    /// Pacemaker's `pcmk_host_map` ("guest1:vm1;guest2:vm2"), for the advice.
    pub host_map: Option<String>,
}

impl Default for InitOptions {
    fn default() -> Self {
        Self {
            listener: ListenerKind::Multicast,
            interface: None,
            address: None,
            key_file: DEFAULT_KEY_FILE.into(),
            cluster_key: fenceline_config::DEFAULT_CLUSTER_KEY_FILE.into(),
            uris: vec!["qemu:///system".into()],
            callback_networks: Vec::new(),
            host_map: None,
        }
    }
}

/// The config `opts` describe, checked by the config's own validation.
pub fn plan(opts: &InitOptions) -> Result<Config, String> {
    let mut cfg = Config::default();
    if !opts.uris.is_empty() {
        cfg.libvirt.uris = opts.uris.clone();
    }
    let key_file = opts.key_file.clone();
    cfg.corosync.cluster_key = Some(opts.cluster_key.clone());
    match opts.listener {
        ListenerKind::Multicast => {
            let mut m = MulticastListener {
                interface: opts.interface.clone(),
                key_file,
                callback_networks: opts.callback_networks.clone(),
                ..MulticastListener::default()
            };
            if let Some(a) = &opts.address {
                m.address = a.clone();
            }
            cfg.listeners.multicast = Some(m);
        }
        ListenerKind::Tcp => {
            let mut t = TcpListenerConf {
                key_file,
                ..TcpListenerConf::default()
            };
            if let Some(a) = &opts.address {
                t.address = a.clone();
            }
            cfg.listeners.tcp = Some(t);
        }
        ListenerKind::Vsock => {
            cfg.listeners.vsock = Some(VsockListener {
                key_file,
                ..VsockListener::default()
            });
        }
        ListenerKind::None => {}
    }
    // The text is what gets written: check that very text.
    Config::parse(&render(&cfg)?, Path::new("(config init)")).map_err(|e| e.to_string())
}

/// A config as TOML with every key (the effective config, defaults
/// included), under a short header. Parses back to `cfg`.
pub fn render(cfg: &Config) -> Result<String, String> {
    let body = toml::to_string(cfg).map_err(|e| format!("cannot render the config: {e}"))?;
    let group = if cfg.control.readonly_group.is_none() {
        "# control.readonly_group is not set: the read-only socket's group is \
         `haclient` if that group exists, else root only.\n"
    } else {
        ""
    };
    Ok(format!(
        "# fenceline configuration: every key with its value (defaults included),\n\
         # as `fenceline config init` / `config show` print it. Each key is explained\n\
         # in the commented default config (contrib/fenceline.toml in the source).\n\
         {group}\n{body}"
    ))
}

/// What [`init`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOutcome {
    pub config: PathBuf,
    /// True: a new key was created; false: an existing key was kept.
    pub key_created: Option<bool>,
    pub key_file: Option<PathBuf>,
    /// The cluster key, and whether it was created (false: kept).
    pub cluster_key: Option<(PathBuf, bool)>,
}

/// Writes the config (refused when it exists, unless `force`) and creates
/// the key when the listener needs one and it does not exist yet (an
/// existing key is never replaced).
pub fn init(cfg: &Config, config_path: &Path, force: bool) -> Result<InitOutcome, String> {
    let text = render(cfg)?;
    write_config(config_path, &text, force)?;
    let key = cfg.listener_keys().first().map(|(_, p)| p.to_path_buf());
    let key_created = match &key {
        Some(k) => Some(create_key(k)?),
        None => None,
    };
    let cluster_key = match &cfg.corosync.cluster_key {
        Some(k) => Some((k.clone(), create_key(k)?)),
        None => None,
    };
    Ok(InitOutcome {
        config: config_path.to_path_buf(),
        key_created,
        key_file: key,
        cluster_key,
    })
}

fn write_config(path: &Path, text: &str, force: bool) -> Result<(), String> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if std::fs::symlink_metadata(path).is_ok() && !force {
        return Err(format!(
            "{shown} exists; not overwritten (--force replaces it; `fenceline config show` \
             prints what it holds)"
        ));
    }
    // Written next to it and renamed over it: never half a config.
    let tmp = path.with_extension("toml.new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot rename onto {shown}: {e}"))
}

/// Creates `path` with [`MAX_KEY_LEN`] bytes from the OS RNG, mode 0600,
/// `O_EXCL`. Ok(false) when a file is already there: it is kept as it is.
pub fn create_key(path: &Path) -> Result<bool, String> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(false);
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut key = vec![0u8; MAX_KEY_LEN];
    os_random(&mut key)?;
    let mut f = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        // Created by someone else in between: theirs stays.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(format!("cannot create the key {}: {e}", path.display())),
    };
    f.write_all(&key)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write the key {}: {e}", path.display()))?;
    Ok(true)
}

/// Fills `buf` from the kernel's RNG (`getrandom(2)`, blocking until it is
/// seeded).
fn os_random(buf: &mut [u8]) -> Result<(), String> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, a live &mut slice.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("getrandom: {e}"));
        }
        done += n as usize;
    }
    Ok(())
}

/// Asks for each value on stderr/stdin (an empty answer keeps the value in
/// brackets).
pub fn ask(opts: &mut InitOptions) -> Result<(), String> {
    ask_with(opts, &mut std::io::stdin().lock(), &mut std::io::stderr())
}

/// [`ask`] on any reader and writer.
pub fn ask_with(
    opts: &mut InitOptions,
    input: &mut dyn std::io::BufRead,
    out: &mut dyn std::io::Write,
) -> Result<(), String> {
    let mut prompt = |q: &str, d: &str| prompt(input, out, q, d);
    let listener = prompt(
        "Listener (multicast, tcp, vsock, none)",
        match opts.listener {
            ListenerKind::Multicast => "multicast",
            ListenerKind::Tcp => "tcp",
            ListenerKind::Vsock => "vsock",
            ListenerKind::None => "none",
        },
    )?;
    opts.listener = <ListenerKind as clap::ValueEnum>::from_str(&listener, true)
        .map_err(|_| format!("unknown listener `{listener}`"))?;
    match opts.listener {
        ListenerKind::Multicast => {
            let i = prompt(
                "Interface of the guests' bridge (empty: the kernel's choice)",
                opts.interface.as_deref().unwrap_or("virbr0"),
            )?;
            opts.interface = (!i.is_empty()).then_some(i);
            let a = prompt(
                "Multicast group",
                opts.address.as_deref().unwrap_or("225.0.0.12"),
            )?;
            opts.address = Some(a);
        }
        ListenerKind::Tcp => {
            let a = prompt(
                "Address to listen on (the guests reach it with fence_virt -T)",
                opts.address.as_deref().unwrap_or("127.0.0.1"),
            )?;
            opts.address = Some(a);
        }
        ListenerKind::Vsock | ListenerKind::None => {}
    }
    if opts.listener != ListenerKind::None {
        opts.key_file = prompt("Key file", &opts.key_file.to_string_lossy())?.into();
    }
    let uris = prompt("libvirt URIs (space-separated)", &opts.uris.join(" "))?;
    opts.uris = uris.split_whitespace().map(str::to_string).collect();
    let map = prompt(
        "Pacemaker host map guest:domain;... (for the printed commands; empty: none)",
        opts.host_map.as_deref().unwrap_or(""),
    )?;
    opts.host_map = (!map.is_empty()).then_some(map);
    Ok(())
}

fn prompt(
    input: &mut dyn std::io::BufRead,
    out: &mut dyn std::io::Write,
    question: &str,
    default: &str,
) -> Result<String, String> {
    let _ = write!(out, "{question} [{default}]: ");
    let _ = out.flush();
    let mut line = String::new();
    let n = input
        .read_line(&mut line)
        .map_err(|e| format!("reading the answer: {e}"))?;
    if n == 0 {
        return Err("no answer (end of input); use the flags and --yes".into());
    }
    let a = line.trim();
    Ok(if a.is_empty() { default } else { a }.to_string())
}

/// Yes/no on stderr/stdin; only `y`/`yes` is yes.
pub fn confirm(question: &str) -> Result<bool, String> {
    let a = prompt(
        &mut std::io::stdin().lock(),
        &mut std::io::stderr(),
        question,
        "no",
    )?;
    Ok(matches!(a.to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// The closing text of `config init`: what was written, then the advice.
pub fn describe(out: &InitOutcome, cfg: &Config, hostname: &str, host_map: Option<&str>) -> String {
    let mut s = format!("wrote {}\n", out.config.display());
    match (&out.key_file, out.key_created) {
        (Some(k), Some(true)) => s.push_str(&format!(
            "created the fence key {} ({MAX_KEY_LEN} random bytes, mode 0600)\n",
            k.display()
        )),
        (Some(k), _) => s.push_str(&format!(
            "kept the existing fence key {} (never replaced; `fenceline check` checks its mode)\n",
            k.display()
        )),
        (None, _) => s.push_str("no listener, so no fence key\n"),
    }
    match &out.cluster_key {
        Some((k, created)) => s.push_str(&format!(
            "{} cluster key {} (seals fenceline's own CPG messages): copy the same file \
             to every fenceline host (scp -p {} root@OTHER-HOST:{})\n\n",
            if *created {
                "created the"
            } else {
                "kept the existing"
            },
            k.display(),
            k.display(),
            k.display()
        )),
        None => s.push_str(
            "no cluster key: fenceline's own CPG messages are not authenticated \
             (set [corosync] cluster_key)\n\n",
        ),
    }
    s.push_str(&advice(cfg, hostname, host_map));
    s
}
