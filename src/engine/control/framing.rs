//! The control protocol's framing on a stream: [`fenceline_proto::framing`]
//! (pure, fuzzed) around any `AsyncBufRead`, with an optional time limit.
//! Shared by the server and the client; knows nothing of sockets, requests
//! or replies.

use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use fenceline_proto::framing::LineAssembler;
pub(crate) use fenceline_proto::framing::encode_line;

/// Reads one line (without its newline), bounded in size and time. `None`
/// at the end of the stream; a last line without a newline still counts.
pub(crate) async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
    timeout: Option<Duration>,
) -> std::io::Result<Option<String>> {
    let mut lines = LineAssembler::new(max);
    let invalid = |e: fenceline_proto::framing::FrameError| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
    };
    let fut = async {
        loop {
            let chunk = r.fill_buf().await?;
            if chunk.is_empty() {
                return lines.finish().map_err(invalid);
            }
            let (n, line) = lines.push(chunk).map_err(invalid)?;
            r.consume(n);
            if line.is_some() {
                return Ok(line);
            }
        }
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out reading a line")
        })?,
        None => fut.await,
    }
}
