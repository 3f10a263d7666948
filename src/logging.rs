//! The daemon's logs: one event is one line, whatever a guest put into a
//! name. Under systemd (stderr is the stream `JOURNAL_STREAM` names) each
//! line carries sd-daemon's `<N>` priority prefix, which journald turns into
//! the entry's priority, and no timestamp (the journal has one); otherwise
//! lines go to stderr with a timestamp. `[log] file` adds a file. The level
//! filter can be changed at run time (SIGHUP).

use std::fmt;
use std::path::Path;

use anyhow::Context;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::time::SystemTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, reload};

use fenceline_config::Config;
use fenceline_proto::display::printable_line;

/// Changes the log filter of every log output at run time (SIGHUP).
pub struct LogLevel {
    set: Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>,
    /// `FENCELINE_LOG` is set: it wins over `[log] level`, also on reload.
    pub from_env: bool,
}

impl LogLevel {
    /// Puts `level` (a tracing filter) in force, or says why not.
    pub fn set(&self, level: &str) -> Result<(), String> {
        let f = EnvFilter::try_new(level).map_err(|e| format!("log.level {level:?}: {e}"))?;
        (self.set)(f)
    }
}

/// Sets up the log outputs. The returned guard flushes the file writer when
/// dropped; the [`LogLevel`] changes the filter later.
pub fn init(
    cfg: &Config,
) -> anyhow::Result<(
    Option<tracing_appender::non_blocking::WorkerGuard>,
    LogLevel,
)> {
    let from_env = std::env::var_os("FENCELINE_LOG").is_some();
    let filter = || {
        EnvFilter::try_from_env("FENCELINE_LOG")
            .or_else(|_| EnvFilter::try_new(&cfg.log.level))
            .unwrap_or_else(|_| EnvFilter::new("info"))
    };
    let (stderr_filter, stderr_handle) = reload::Layer::new(filter());
    let journal = stderr_is_journal();
    let stderr = tracing_subscriber::fmt::layer()
        .event_format(OneLine::new(journal))
        .with_writer(std::io::stderr)
        .with_filter(stderr_filter);
    let mut guard = None;
    let mut file_handle = None;
    let file_layer = if cfg.log.file.as_os_str().is_empty() {
        None
    } else {
        let path = &cfg.log.file;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create log directory {}", dir.display()))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open log file {}", path.display()))?;
        let (writer, g) = tracing_appender::non_blocking(file);
        guard = Some(g);
        let (file_filter, h) = reload::Layer::new(filter());
        file_handle = Some(h);
        Some(
            tracing_subscriber::fmt::layer()
                .event_format(OneLine::new(false))
                .with_writer(writer)
                .with_filter(file_filter),
        )
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init()
        .ok();
    let set = move |f: EnvFilter| -> Result<(), String> {
        if let Some(h) = &file_handle {
            h.reload(
                f.to_string()
                    .parse::<EnvFilter>()
                    .map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
        }
        stderr_handle.reload(f).map_err(|e| e.to_string())
    };
    Ok((
        guard,
        LogLevel {
            set: Box::new(set),
            from_env,
        },
    ))
}

/// tracing-subscriber's full format, made one line per event: newlines and
/// other control characters inside the event (a domain name from a guest,
/// a peer's text) are written as escapes, so nothing can start a forged
/// line or, in the journal, a forged priority. For the journal: sd-daemon's
/// `<N>` prefix and no timestamp or level word.
enum OneLine {
    Journal(Format<Full, ()>),
    Timed(Format<Full, SystemTime>),
}

impl OneLine {
    fn new(journal: bool) -> Self {
        let base = Format::default().with_ansi(false).with_target(false);
        if journal {
            Self::Journal(base.without_time().with_level(false))
        } else {
            Self::Timed(base)
        }
    }
}

impl<S> FormatEvent<S, DefaultFields> for OneLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, DefaultFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        match self {
            Self::Journal(f) => {
                f.format_event(ctx, Writer::new(&mut line), event)?;
                write!(writer, "<{}>", priority(*event.metadata().level()))?;
            }
            Self::Timed(f) => f.format_event(ctx, Writer::new(&mut line), event)?,
        }
        let body = line.strip_suffix('\n').unwrap_or(&line);
        writeln!(writer, "{}", printable_line(body))
    }
}

/// syslog's priority for a tracing level (sd-daemon(3)).
fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Whether stderr is the journal stream systemd set up for this service.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let meta = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata());
    match meta {
        Ok(m) => journal_stream_is(&var.to_string_lossy(), m.dev(), m.ino()),
        Err(_) => false,
    }
}

/// `JOURNAL_STREAM` is "DEVICE:INODE" of the stream systemd connected; it
/// counts only while stderr is still that stream (not redirected by a shell
/// in between, say).
fn journal_stream_is(var: &str, dev: u64, ino: u64) -> bool {
    var.split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_stream_is_matched_by_device_and_inode() {
        assert!(journal_stream_is("8:1234567", 8, 1_234_567));
        assert!(!journal_stream_is("8:1234567", 8, 1_234_568));
        assert!(!journal_stream_is("9:1234567", 8, 1_234_567));
        for bad in ["", "8", "8:", ":1", "x:1", "8:1:2", "-1:5"] {
            assert!(!journal_stream_is(bad, 8, 1), "{bad:?}");
        }
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(
            [
                Level::ERROR,
                Level::WARN,
                Level::INFO,
                Level::DEBUG,
                Level::TRACE
            ]
            .map(priority),
            [3, 4, 6, 7, 7]
        );
    }
}
