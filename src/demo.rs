//! `fenceline demo`: a local sandbox cluster with fenceline daemons, shown
//! live until Ctrl-C, then torn down. The lab is the same harness the
//! integration tests use (`crate::sandbox`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::sandbox::{Lab, LabSpec, check_prerequisites_for, cleanup_stale};

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub nodes: usize,
    /// Stop by itself after this long (scripts and tests); `None` = until Ctrl-C.
    pub duration: Option<Duration>,
    /// Refresh period of the status view.
    pub refresh: Duration,
}

/// Runs the demo; returns when the user interrupts it (or `duration` passed).
pub fn run(opts: DemoOptions) -> anyhow::Result<()> {
    if !(3..=9).contains(&opts.nodes) {
        anyhow::bail!("--nodes must be between 3 and 9");
    }
    let exe = std::env::current_exe().context("cannot find the fenceline binary")?;
    check_prerequisites_for(false, false, Some(&exe)).map_err(|m| anyhow::anyhow!("{m}"))?;
    // Labs left by a run that was killed with SIGKILL.
    if let Ok(cleaned) = cleanup_stale()
        && !cleaned.is_empty()
    {
        eprintln!("fenceline: removed stale labs: {}", cleaned.join(", "));
    }
    let stop = install_stop_flag()?;
    eprintln!(
        "fenceline: bringing up a {}-node sandbox cluster (corosync + libvirtd + fenceline per node)...",
        opts.nodes
    );
    let t0 = Instant::now();
    let lab = Lab::up(LabSpec {
        nodes: opts.nodes,
        fenceline_bin: Some(exe),
        ..LabSpec::default()
    })
    .context("the sandbox lab did not come up")?;
    eprintln!(
        "fenceline: lab {} up in {:.1} s",
        lab.prefix(),
        t0.elapsed().as_secs_f64()
    );
    let result = show(&lab, &opts, &stop);
    eprintln!("fenceline: tearing the lab down...");
    lab.down().context("teardown")?;
    eprintln!("fenceline: lab {} removed", lab.prefix());
    result
}

fn show(lab: &Lab, opts: &DemoOptions, stop: &StopFlag) -> anyhow::Result<()> {
    let tty = std::io::stdout().is_terminal();
    let started = Instant::now();
    let hint = hints(lab);
    loop {
        let out = lab.fenceline(1, &["status"])?;
        let mut o = std::io::stdout().lock();
        if tty {
            // Clear the screen and home the cursor.
            let _ = write!(o, "\x1b[2J\x1b[H");
        }
        let _ = writeln!(
            o,
            "fenceline demo: lab {} — `fenceline status` on node1 (Ctrl-C to stop and tear down)\n",
            lab.prefix()
        );
        let _ = o.write_all(out.stdout.as_bytes());
        if !out.success() {
            let _ = writeln!(o, "{}", out.stderr.trim());
        }
        let _ = writeln!(o, "\n{hint}");
        let _ = o.flush();
        drop(o);
        let deadline = Instant::now() + opts.refresh;
        while Instant::now() < deadline {
            if stop.is_set() {
                return Ok(());
            }
            if opts.duration.is_some_and(|d| started.elapsed() >= d) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn hints(lab: &Lab) -> String {
    let pid = |i| lab.holder_pid(i).map(|p| p.to_string()).unwrap_or_default();
    format!(
        "Try, in another terminal:\n  \
         nsenter -t {p2} -m -n virsh -c test+unix:///default destroy vm2a    # watch vm2a stop\n  \
         nsenter -t {p1} -m -n {exe} events --follow                       # node1's live events\n  \
         kill -KILL $(awk '$3==\"corosync/n3\" {{print $1}}' {dir}/pids | tail -1)   # lose node3",
        p1 = pid(1),
        p2 = pid(2),
        exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "fenceline".into()),
        dir = lab.dir().display(),
    )
}

/// Set by SIGINT/SIGTERM/SIGHUP so the demo can tear down before exiting.
struct StopFlag(&'static std::sync::atomic::AtomicBool);

impl StopFlag {
    fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

fn install_stop_flag() -> anyhow::Result<StopFlag> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` only stores to an atomic, which is
        // async-signal-safe; the handler stays valid for the whole process.
        let prev = unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        if prev == libc::SIG_ERR {
            anyhow::bail!("cannot install a handler for signal {sig}");
        }
    }
    Ok(StopFlag(&STOP))
}
