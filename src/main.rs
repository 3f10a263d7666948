//! The `fenceline` command: argument parsing only; every subcommand runs a
//! function from the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use fenceline::cli::{self, exit};
use fenceline_config::Config;

#[derive(Parser)]
#[command(
    name = "fenceline",
    version,
    about = "Cluster console and fencing daemon for libvirt hosts in a corosync cluster"
)]
struct Cli {
    /// Config file (TOML). Default: /etc/fenceline/fenceline.toml if it exists.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the headless daemon (corosync CPG, libvirt, control sockets).
    Daemon {
        /// Take the listeners, backend, libvirt URIs, name mode and permission
        /// groups from fence_virtd's config (e.g. /etc/fence_virt.conf); the
        /// fenceline config (--config) then must not set those, only
        /// fenceline's own settings.
        #[arg(long, value_name = "PATH")]
        fence_virt_conf: Option<PathBuf>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Is this host ready to fence? Checks the config and key files, corosync
    /// and quorum, libvirt, the listeners, the same key on every fenceline
    /// host, a loopback request through the local listener, and the last
    /// successful fence. One summary line, then details. Exit (Nagios/Icinga):
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Check {
        /// Control socket (default: the read-only socket from the config).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Limit for each network step (control socket, self-test), in seconds.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        timeout_secs: u64,
    },
    /// Print one snapshot of the cluster and exit.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Control socket (default: the read-only socket from the config).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Print recent events; with --follow, keep printing new ones.
    Events {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Keep the stream open and print events as they happen.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Control socket (default: the read-only socket from the config).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Fence a VM through the cluster, like fence_xvm (via the read-write
    /// control socket). Exit: 0 ok/on, 1 fail, 2 off, 3 denied.
    Fence {
        #[arg(value_enum)]
        action: cli::FenceAction,
        /// VM name or UUID.
        domain: String,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Control socket (default: the read-write socket from the config).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Assert that a departed node is down (powered off or fenced), like
    /// `stonith_admin --confirm`: its lost VMs leave the map and fenceline
    /// may answer "off" again. Refused while the node is a member with a
    /// daemon. Audited. Read-write control socket.
    Confirm {
        /// Node name or id.
        node: String,
        /// Control socket (default: the read-write socket from the config).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// The live console: nodes, domains and events of the cluster, with fence
    /// off, reboot and start behind a confirmation. `?` shows the keys.
    Console {
        /// Control socket (default: the read-write socket from the config).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Monitor mode: no actions that change VMs.
        #[arg(long)]
        read_only: bool,
        /// Theme: default, light, high-contrast, or a theme file (wins over the config).
        #[arg(long, value_name = "NAME")]
        theme: Option<String>,
        /// Print the key table (Markdown) and exit.
        #[arg(long)]
        print_keys: bool,
    },
    /// The console in read-only mode, on the read-only socket.
    Monitor {
        /// Control socket (default: the read-only socket from the config).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Theme: default, light, high-contrast, or a theme file (wins over the config).
        #[arg(long, value_name = "NAME")]
        theme: Option<String>,
    },
    /// Bring up a local sandbox cluster (network namespaces, corosync,
    /// libvirtd, fenceline daemons) and open the console on node 1; quitting
    /// (q, Ctrl-C) tears it down. Needs root.
    #[cfg(feature = "lab")]
    Demo {
        /// Number of nodes (3 to 9).
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Also start a 3-guest Pacemaker cluster fencing through fence_xvm
        /// (about 30 s to start instead of 3); the notes say how to kill a guest.
        #[arg(long)]
        guests: bool,
        /// Stop by itself after this many seconds.
        #[arg(long, value_name = "SECS")]
        duration: Option<u64>,
        /// Console theme: default, light, high-contrast, or a theme file.
        #[arg(long, value_name = "NAME")]
        theme: Option<String>,
    },
    /// The libvirt network hook entry: libvirt runs it as
    /// `fenceline hook network NAME OP SUBOP EXTRA` with the hook XML on
    /// stdin. Forwards the event to the local daemon within 1 s; always exits 0.
    Hook {
        /// Hook socket (default: $FENCELINE_HOOK_SOCKET, else `[hooks] socket`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// libvirt's hook object ("network").
        object: String,
        /// NAME OP SUBOP EXTRA, as libvirt passes them.
        #[arg(allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Install the network hook wrapper into libvirt's hooks directory
    /// (network.d/50-fenceline on libvirt 6.5 and later, else `network`).
    InstallHook {
        /// libvirt's hooks directory.
        #[arg(long, value_name = "DIR", default_value = "/etc/libvirt/hooks")]
        hooks_dir: PathBuf,
        /// Hook socket the wrapper reports to (default: `[hooks] socket`).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// libvirt version (default: asked from `libvirtd --version`).
        #[arg(long, value_name = "X.Y.Z")]
        libvirt_version: Option<String>,
    },
    /// Packaging: write the man pages or the shell completions (hidden).
    #[command(hide = true)]
    Generate {
        #[command(subcommand)]
        command: GenerateCommand,
    },
    /// Sandbox lab maintenance.
    #[cfg(feature = "lab")]
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Write a config and create the fence key, like `fence_virtd -c`; then
    /// print the matching guest-side and Pacemaker commands. Asks for each
    /// value when stdin is a terminal (unless --yes). Never overwrites the
    /// config without --force, never replaces an existing key. Writes to
    /// --config (default /etc/fenceline/fenceline.toml).
    Init {
        /// The listener to enable.
        #[arg(long, value_enum, default_value = "multicast")]
        listener: fenceline::setup::ListenerKind,
        /// Multicast: join on this interface only (the guests' bridge, e.g. virbr0).
        #[arg(long, value_name = "IF")]
        interface: Option<String>,
        /// Multicast group (default 225.0.0.12), or the tcp listener's address (default 127.0.0.1).
        #[arg(long, value_name = "ADDR")]
        address: Option<String>,
        /// The fence key; created (4096 random bytes, 0600) unless it exists.
        #[arg(long, value_name = "PATH", default_value = fenceline_config::DEFAULT_KEY_FILE)]
        key_file: PathBuf,
        /// The cluster key that seals fenceline's own CPG messages; created
        /// (4096 random bytes, 0600) unless it exists. Copy it to every host.
        #[arg(long, value_name = "PATH", default_value = fenceline_config::DEFAULT_CLUSTER_KEY_FILE)]
        cluster_key: PathBuf,
        /// libvirt URI (repeat for several; default qemu:///system).
        #[arg(long = "uri", value_name = "URI")]
        uris: Vec<String>,
        /// Multicast: a network (CIDR) connect-backs may go to (repeatable).
        #[arg(long = "callback-network", value_name = "CIDR")]
        callback_networks: Vec<String>,
        /// Pacemaker's pcmk_host_map for the printed command ("guest1:vm1;guest2:vm2").
        #[arg(long, value_name = "MAP")]
        host_map: Option<String>,
        /// Replace an existing config file (the key is never replaced).
        #[arg(long)]
        force: bool,
        /// Ask nothing: take the flags and defaults as they are.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Print the effective config (--config, else /etc/fenceline/fenceline.toml
    /// if it exists, else the built-in defaults) as TOML with every default.
    Show,
    /// Print the fenceline TOML equivalent of a fence_virt.conf (what
    /// `daemon --fence-virt-conf PATH` would run).
    ImportFenceVirt {
        /// The fence_virt.conf to read.
        path: PathBuf,
    },
}

#[derive(Subcommand)]
enum GenerateCommand {
    /// Man pages (section 8): fenceline.8, one per subcommand, fenceline-hook.8.
    Man {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
    /// Completions for bash (fenceline.bash), zsh (_fenceline) and fish (fenceline.fish).
    Completions {
        /// Output directory (created if missing).
        dir: PathBuf,
    },
}

#[cfg(feature = "lab")]
#[derive(Subcommand)]
enum LabCommand {
    /// Remove labs left behind by a run that was killed (only fenceline-lab
    /// namespaces, and only processes those labs recorded).
    Cleanup,
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    match Config::load(path) {
        Ok((c, _)) => Ok(c),
        Err(e) => {
            eprintln!("fenceline: config error: {e}");
            Err(ExitCode::from(exit::USAGE))
        }
    }
}

fn client_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("fenceline: cannot start runtime: {e}");
            ExitCode::from(exit::UNREACHABLE)
        })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn run(cli: Cli) -> Result<(), ExitCode> {
    let cfg_path = cli.config.as_deref();
    match cli.command {
        Command::Daemon { fence_virt_conf } => {
            let cfg = match &fence_virt_conf {
                Some(fvc) => {
                    let (cfg, notes) = fenceline_config::fence_virt_conf::daemon_config(
                        cfg_path, fvc,
                    )
                    .map_err(|e| {
                        eprintln!("fenceline: config error: {e}");
                        ExitCode::from(exit::USAGE)
                    })?;
                    for n in notes {
                        eprintln!("fenceline: {}: {n}", fvc.display());
                    }
                    cfg
                }
                None => load_config(cfg_path)?,
            };
            fenceline::daemon::run(cfg, cfg_path, fence_virt_conf.as_deref()).map_err(|e| {
                eprintln!("fenceline: {e:#}");
                ExitCode::from(exit::UNREACHABLE)
            })
        }
        Command::Status { json, socket } => {
            let socket = match socket {
                Some(s) => s,
                None => load_config(cfg_path)?.control.readonly_socket,
            };
            client_runtime()?
                .block_on(cli::status(&socket, json))
                .map_err(|e| {
                    eprintln!("fenceline: {}", fenceline_proto::display::printable(&e));
                    ExitCode::from(exit::UNREACHABLE)
                })
        }
        Command::Hook {
            socket,
            object,
            args,
        } => {
            let socket = fenceline_hook::hook_socket(socket.as_deref(), cfg_path);
            // Always 0: a failing hook would abort libvirt's operation.
            let _ = fenceline_hook::run_hook(&socket, &object, &args);
            Ok(())
        }
        Command::InstallHook {
            hooks_dir,
            socket,
            libvirt_version,
        } => {
            let socket = match socket {
                Some(s) => s,
                None => load_config(cfg_path)?.hooks.socket,
            };
            let binary = std::env::current_exe()
                .and_then(|p| p.canonicalize())
                .map_err(|e| {
                    eprintln!("fenceline: cannot tell the path of this binary: {e}");
                    ExitCode::from(exit::UNREACHABLE)
                })?;
            let opts = fenceline::hook::InstallOptions {
                hooks_dir,
                socket,
                binary,
                libvirt_version,
            };
            match fenceline::hook::install(&opts) {
                Ok(i) => {
                    print!("{}", fenceline::hook::describe(&i));
                    Ok(())
                }
                Err(e) => {
                    eprintln!("fenceline install-hook: {e}");
                    Err(ExitCode::from(exit::UNREACHABLE))
                }
            }
        }
        Command::Fence {
            action,
            domain,
            json,
            socket,
        } => {
            let socket = match socket {
                Some(s) => s,
                None => load_config(cfg_path)?.control.socket,
            };
            let code = client_runtime()?.block_on(cli::fence(&socket, action, &domain, json));
            if code == 0 {
                Ok(())
            } else {
                Err(ExitCode::from(code))
            }
        }
        Command::Confirm { node, socket } => {
            let socket = match socket {
                Some(s) => s,
                None => load_config(cfg_path)?.control.socket,
            };
            match client_runtime()?.block_on(cli::confirm(&socket, &node)) {
                0 => Ok(()),
                code => Err(ExitCode::from(code)),
            }
        }
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            let cfg = load_config(cfg_path)?;
            let text = fenceline::setup::render(&cfg).map_err(|e| {
                eprintln!("fenceline: {e}");
                ExitCode::from(exit::UNREACHABLE)
            })?;
            print!("{text}");
            Ok(())
        }
        Command::Config {
            command:
                ConfigCommand::Init {
                    listener,
                    interface,
                    address,
                    key_file,
                    cluster_key,
                    uris,
                    callback_networks,
                    host_map,
                    force,
                    yes,
                },
        } => {
            let mut opts = fenceline::setup::InitOptions {
                listener,
                interface,
                address,
                key_file,
                cluster_key,
                callback_networks,
                host_map,
                ..Default::default()
            };
            if !uris.is_empty() {
                opts.uris = uris;
            }
            config_init(opts, cfg_path, force, yes)
        }
        Command::Check {
            socket,
            timeout_secs,
        } => {
            let (cfg, path) = match fenceline_config::Config::load(cfg_path) {
                Ok(x) => x,
                Err(e) => {
                    println!("FENCELINE CRITICAL - config error: {e}");
                    return Err(ExitCode::from(fenceline::check::CRITICAL));
                }
            };
            let code = fenceline::check::run(&fenceline::check::CheckOptions {
                config: cfg,
                config_path: path,
                socket,
                timeout: std::time::Duration::from_secs(timeout_secs.clamp(1, 120)),
            });
            if code == 0 {
                Ok(())
            } else {
                Err(ExitCode::from(code))
            }
        }
        Command::Config {
            command: ConfigCommand::ImportFenceVirt { path },
        } => match fenceline_config::fence_virt_conf::load(&path) {
            Ok(imported) => {
                print!("{}", imported.to_toml());
                Ok(())
            }
            Err(e) => {
                eprintln!("fenceline: {e}");
                Err(ExitCode::from(exit::USAGE))
            }
        },
        Command::Generate { command } => generate(command).map_err(|e| {
            eprintln!("fenceline generate: {e}");
            ExitCode::from(exit::UNREACHABLE)
        }),
        Command::Console {
            socket,
            read_only,
            theme,
            print_keys,
        } => console(cfg_path, socket, read_only, theme, print_keys),
        Command::Monitor { socket, theme } => console(cfg_path, socket, true, theme, false),
        #[cfg(feature = "lab")]
        Command::Demo {
            nodes,
            guests,
            duration,
            theme,
        } => {
            let cfg = load_config(cfg_path)?;
            let keymap = console_keymap(&cfg)?;
            let theme = console_theme(theme, &cfg)?;
            fenceline::demo::run(fenceline::demo::DemoOptions {
                nodes,
                guests,
                duration: duration.map(std::time::Duration::from_secs),
                refresh: std::time::Duration::from_secs(2),
                theme,
                keymap,
            })
            .map_err(|e| {
                eprintln!("fenceline: {e:#}");
                ExitCode::from(exit::UNREACHABLE)
            })
        }
        #[cfg(feature = "lab")]
        Command::Lab {
            command: LabCommand::Cleanup,
        } => match fenceline::sandbox::cleanup_stale() {
            Ok(v) if v.is_empty() => {
                println!("no stale labs");
                Ok(())
            }
            Ok(v) => {
                println!("removed: {}", v.join(", "));
                Ok(())
            }
            Err(e) => {
                eprintln!("fenceline: {e:#}");
                Err(ExitCode::from(exit::UNREACHABLE))
            }
        },
        Command::Events {
            json,
            follow,
            socket,
        } => {
            let socket = match socket {
                Some(s) => s,
                None => load_config(cfg_path)?.control.readonly_socket,
            };
            client_runtime()?
                .block_on(cli::events(&socket, json, follow))
                .map_err(|e| {
                    eprintln!("fenceline: {}", fenceline_proto::display::printable(&e));
                    ExitCode::from(exit::UNREACHABLE)
                })
        }
    }
}

/// `generate man DIR` / `generate completions DIR`: the package's man pages
/// and completions, rendered from this parser (scripts/package.sh).
fn generate(command: GenerateCommand) -> std::io::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    let mut cmd = Cli::command();
    cmd.build();
    match command {
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir)?;
            let page = |cmd: clap::Command, name: &str| -> std::io::Result<()> {
                let mut buf = Vec::new();
                clap_mangen::Man::new(cmd)
                    .source(concat!("fenceline ", env!("CARGO_PKG_VERSION")))
                    .section("8")
                    .manual("fenceline")
                    .render(&mut buf)?;
                std::fs::write(dir.join(format!("{name}.8")), buf)
            };
            let subs: Vec<clap::Command> = cmd
                .get_subcommands()
                .filter(|s| !s.is_hide_set() && s.get_name() != "help")
                .cloned()
                .collect();
            page(cmd, "fenceline")?;
            for sub in subs {
                let name = format!("fenceline-{}", sub.get_name());
                page(sub, &name)?;
            }
            page(hook_command(), "fenceline-hook")
        }
        GenerateCommand::Completions { dir } => {
            std::fs::create_dir_all(&dir)?;
            for (shell, file) in [
                (Shell::Bash, "fenceline.bash"),
                (Shell::Zsh, "_fenceline"),
                (Shell::Fish, "fenceline.fish"),
            ] {
                let mut buf = Vec::new();
                clap_complete::generate(shell, &mut cmd, "fenceline", &mut buf);
                std::fs::write(dir.join(file), buf)?;
            }
            Ok(())
        }
    }
}

/// `fenceline-hook`'s arguments (hook/src/main.rs parses them by hand to
/// stay small), described for its man page.
fn hook_command() -> clap::Command {
    use clap::{Arg, Command};
    Command::new("fenceline-hook")
        .version(env!("CARGO_PKG_VERSION"))
        .about("libvirt network hook: forwards one event to the fenceline daemon")
        .long_about(
            "Exactly `fenceline hook`, in a small binary that loads neither libvirt nor \
             corosync libraries. libvirtd runs it as `fenceline-hook network NAME OP SUBOP \
             EXTRA` with the hook XML on stdin; it sends one datagram to the daemon's hook \
             socket within 1 s and always exits 0, since a failing hook would abort \
             libvirt's operation. `fenceline install-hook` installs the wrapper that runs it.",
        )
        .arg(
            Arg::new("socket")
                .long("socket")
                .value_name("PATH")
                .help("Hook socket (default: $FENCELINE_HOOK_SOCKET, else `[hooks] socket`)"),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("PATH")
                .help("Config file (default: /etc/fenceline/fenceline.toml if it exists)"),
        )
        .arg(
            Arg::new("object")
                .required(true)
                .help("libvirt's hook object (\"network\")"),
        )
        .arg(
            Arg::new("args")
                .num_args(0..)
                .allow_hyphen_values(true)
                .help("NAME OP SUBOP EXTRA, as libvirt passes them"),
        )
}

/// `config init`: ask (on a terminal, without --yes), plan, write, advise.
fn config_init(
    mut opts: fenceline::setup::InitOptions,
    cfg_path: Option<&std::path::Path>,
    force: bool,
    yes: bool,
) -> Result<(), ExitCode> {
    use std::io::IsTerminal;
    let fail = |e: String| {
        eprintln!("fenceline config init: {e}");
        ExitCode::from(exit::USAGE)
    };
    let path = cfg_path
        .map(std::path::Path::to_path_buf)
        .unwrap_or_else(|| fenceline_proto::paths::DEFAULT_CONFIG_PATH.into());
    let interactive = !yes && std::io::stdin().is_terminal();
    if interactive {
        fenceline::setup::ask(&mut opts).map_err(fail)?;
    }
    let cfg = fenceline::setup::plan(&opts).map_err(fail)?;
    if interactive {
        eprint!("{}", fenceline::setup::render(&cfg).map_err(fail)?);
        let q = format!("Write {}?", path.display());
        if !fenceline::setup::confirm(&q).map_err(fail)? {
            eprintln!("fenceline config init: nothing written");
            return Err(ExitCode::from(exit::UNREACHABLE));
        }
    }
    let out = fenceline::setup::init(&cfg, &path, force).map_err(fail)?;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    print!(
        "{}",
        fenceline::setup::describe(&out, &cfg, host.trim(), opts.host_map.as_deref())
    );
    Ok(())
}

/// `console` and `monitor`: the socket and theme from flags, else the config.
fn console(
    cfg_path: Option<&std::path::Path>,
    socket: Option<PathBuf>,
    read_only: bool,
    theme: Option<String>,
    print_keys: bool,
) -> Result<(), ExitCode> {
    let cfg = load_config(cfg_path)?;
    let keymap = console_keymap(&cfg)?;
    if print_keys {
        print!("{}", keymap.markdown());
        return Ok(());
    }
    let theme = console_theme(theme, &cfg)?;
    let socket = socket.unwrap_or(if read_only {
        cfg.control.readonly_socket
    } else {
        cfg.control.socket
    });
    fenceline::ui::run(fenceline::ui::ConsoleOptions::new(
        socket, read_only, theme, keymap,
    ))
    .map_err(|e| {
        eprintln!("fenceline: {e:#}");
        ExitCode::from(exit::UNREACHABLE)
    })
}

/// `--theme` wins over `[console] theme`; `NO_COLOR` drops the colours.
fn console_theme(
    flag: Option<String>,
    cfg: &Config,
) -> Result<fenceline::ui::theme::Theme, ExitCode> {
    cli::console_theme(cfg, flag.as_deref()).map_err(|e| {
        eprintln!("fenceline: {e}");
        ExitCode::from(exit::USAGE)
    })
}

/// `[console.keys]`, checked when a console starts (never by the daemon).
fn console_keymap(cfg: &Config) -> Result<fenceline::ui::keymap::Keymap, ExitCode> {
    cli::console_keymap(cfg).map_err(|e| {
        eprintln!("fenceline: config error: {e}");
        ExitCode::from(exit::USAGE)
    })
}
