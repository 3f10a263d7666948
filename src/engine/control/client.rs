//! The control-socket client: used by the CLI (`status`, `events`) and by the
//! console to attach to a daemon.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::framing::{encode_line, read_line_bounded};
use fenceline_proto::api::{MAX_REPLY_LINE, Reply, Request};

/// How long to wait for the daemon to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait for a reply to a one-shot request.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence on a `watch` stream longer than this means the daemon is stuck
/// (it sends a heartbeat every [`fenceline_proto::api::WATCH_HEARTBEAT_MS`]).
pub const WATCH_READ_TIMEOUT: Duration =
    Duration::from_millis(3 * fenceline_proto::api::WATCH_HEARTBEAT_MS);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to {path}: {source} (is `fenceline daemon` running? try --socket PATH)"
    )]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the daemon closed the connection")]
    Closed { path: PathBuf },
    #[error("{path}: unreadable reply: {message}")]
    Protocol { path: PathBuf, message: String },
    #[error("{path}: no reply within {secs} s", secs = REPLY_TIMEOUT.as_secs())]
    Timeout { path: PathBuf },
}

/// A connection to one control socket.
pub struct Client {
    path: PathBuf,
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
}

impl Client {
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(ClientError::Connect {
                    path: path.to_path_buf(),
                    source,
                });
            }
            Err(_) => {
                return Err(ClientError::Connect {
                    path: path.to_path_buf(),
                    source: std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"),
                });
            }
        };
        let (rd, wr) = stream.into_split();
        Ok(Client {
            path: path.to_path_buf(),
            rd: BufReader::new(rd),
            wr,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one request.
    pub async fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        let line = encode_line(req).map_err(|e| ClientError::Protocol {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        match tokio::time::timeout(REPLY_TIMEOUT, self.wr.write_all(&line)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(ClientError::Io {
                path: self.path.clone(),
                source,
            }),
            Err(_) => Err(ClientError::Timeout {
                path: self.path.clone(),
            }),
        }
    }

    /// Reads the next reply; `timeout = None` waits as long as the stream lives
    /// (used with `events --follow`).
    pub async fn next(&mut self, timeout: Option<Duration>) -> Result<Reply, ClientError> {
        let line = read_line_bounded(&mut self.rd, MAX_REPLY_LINE, timeout)
            .await
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::TimedOut {
                    ClientError::Timeout {
                        path: self.path.clone(),
                    }
                } else {
                    ClientError::Io {
                        path: self.path.clone(),
                        source,
                    }
                }
            })?;
        let Some(line) = line else {
            return Err(ClientError::Closed {
                path: self.path.clone(),
            });
        };
        serde_json::from_str(&line).map_err(|e| ClientError::Protocol {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// Connects and starts a `watch` stream (snapshots as they change). Read
    /// it with [`Client::next`] and [`WATCH_READ_TIMEOUT`]: a live daemon
    /// sends at least a heartbeat within that time.
    pub async fn watch(path: &Path, interval_ms: Option<u64>) -> Result<Client, ClientError> {
        let mut c = Client::connect(path).await?;
        c.send(&Request::Watch { interval_ms }).await?;
        Ok(c)
    }

    /// One request, one reply.
    pub async fn call(&mut self, req: &Request) -> Result<Reply, ClientError> {
        self.send(req).await?;
        self.next(Some(REPLY_TIMEOUT)).await
    }
}
