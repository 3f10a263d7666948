//! `fenceline-hook [--socket PATH] network NAME OP SUBOP EXTRA`: exactly
//! `fenceline hook`, in a small binary that loads neither libvirt nor
//! corosync libraries. libvirtd runs network hooks synchronously, so process
//! start-up is most of the hook's cost; `fenceline install-hook` points the
//! wrapper here when this binary sits next to `fenceline`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut socket: Option<PathBuf> = None;
    let mut config: Option<PathBuf> = None;
    loop {
        match args.first().map(String::as_str) {
            Some("--socket") if args.len() >= 2 => {
                socket = Some(PathBuf::from(args[1].clone()));
                args.drain(..2);
            }
            Some("--config") if args.len() >= 2 => {
                config = Some(PathBuf::from(args[1].clone()));
                args.drain(..2);
            }
            _ => break,
        }
    }
    if args.is_empty() {
        eprintln!("usage: fenceline-hook [--socket PATH] network NAME OP SUBOP EXTRA");
        // Exit 0 all the same: a failing hook would abort libvirt's operation.
        return ExitCode::SUCCESS;
    }
    let object = args.remove(0);
    let socket = fenceline_hook::hook_socket(socket.as_deref(), config.as_deref());
    let _ = fenceline_hook::run_hook(&socket, &object, &args);
    ExitCode::SUCCESS
}
