//! The control protocol's framing, shared by the server and the client: one
//! JSON object per line, each line bounded in size (and, if asked, in time).
//! Generic over any `AsyncBufRead`; knows nothing of sockets, requests or
//! replies.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One value as a line: its JSON and a newline.
pub(crate) fn encode_line<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    Ok(line)
}

/// Reads one line (without its newline), bounded in size and time. `None`
/// at the end of the stream; a last line without a newline still counts.
pub(crate) async fn read_line_bounded<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
    timeout: Option<Duration>,
) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let fut = async {
        loop {
            let chunk = r.fill_buf().await?;
            if chunk.is_empty() {
                return Ok::<bool, std::io::Error>(!buf.is_empty());
            }
            if let Some(i) = chunk.iter().position(|&b| b == b'\n') {
                buf.extend_from_slice(&chunk[..i]);
                r.consume(i + 1);
                return Ok(true);
            }
            let n = chunk.len();
            buf.extend_from_slice(chunk);
            r.consume(n);
            if buf.len() > max {
                return Err(too_long(max));
            }
        }
    };
    let got = match timeout {
        Some(t) => tokio::time::timeout(t, fut).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out reading a line")
        })??,
        None => fut.await?,
    };
    if !got {
        return Ok(None);
    }
    if buf.len() > max {
        return Err(too_long(max));
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

fn too_long(max: usize) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("line longer than {max} bytes"),
    )
}
