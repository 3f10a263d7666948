//! The control protocol's framing: one JSON value per line, every line
//! bounded in size. Pure: [`LineAssembler`] takes bytes as they arrive and
//! hands out whole lines; the control server and client wrap it around
//! their sockets (`engine/control/framing.rs`), and the fuzz target
//! `control_lines` drives it with arbitrary bytes.

use serde::Serialize;

/// Why a line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    #[error("not UTF-8")]
    NotUtf8,
}

/// One value as a line: its JSON and a newline.
pub fn encode_line<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(value)?;
    line.push(b'\n');
    Ok(line)
}

/// Collects bytes into lines of at most `max` bytes (the newline not
/// counted). A line over the limit is an error as soon as it is known to
/// be over, so a peer cannot make the buffer grow past `max + 1` bytes.
#[derive(Debug)]
pub struct LineAssembler {
    max: usize,
    buf: Vec<u8>,
}

impl LineAssembler {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            buf: Vec::new(),
        }
    }

    /// Feeds `chunk`; returns how many bytes were taken and, when a newline
    /// ended a line, that line. Bytes after the newline are not taken: the
    /// caller offers them again for the next line.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(usize, Option<String>), FrameError> {
        match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.take(&chunk[..i])?;
                let line = std::mem::take(&mut self.buf);
                Ok((
                    i + 1,
                    Some(String::from_utf8(line).map_err(|_| FrameError::NotUtf8)?),
                ))
            }
            None => {
                self.take(chunk)?;
                Ok((chunk.len(), None))
            }
        }
    }

    /// The end of the stream: a last line without its newline still counts.
    pub fn finish(&mut self) -> Result<Option<String>, FrameError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let line = std::mem::take(&mut self.buf);
        String::from_utf8(line)
            .map(Some)
            .map_err(|_| FrameError::NotUtf8)
    }

    fn take(&mut self, part: &[u8]) -> Result<(), FrameError> {
        if self.buf.len() + part.len() > self.max {
            self.buf.clear();
            return Err(FrameError::TooLong(self.max));
        }
        self.buf.extend_from_slice(part);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[&[u8]], max: usize) -> Vec<Result<String, FrameError>> {
        let mut a = LineAssembler::new(max);
        let mut out = Vec::new();
        for chunk in input {
            let mut rest = *chunk;
            while !rest.is_empty() {
                match a.push(rest) {
                    Ok((n, line)) => {
                        rest = &rest[n..];
                        out.extend(line.map(Ok));
                    }
                    Err(e) => {
                        out.push(Err(e));
                        break;
                    }
                }
            }
        }
        if let Some(l) = a.finish().transpose() {
            out.push(l);
        }
        out
    }

    #[test]
    fn lines_across_chunks_and_a_last_line_without_newline() {
        let got = lines(
            &[b"{\"op\":", b"\"status\"}\n{\"op\"", b":\"ping\"}\nlast"],
            64,
        );
        assert_eq!(
            got,
            vec![
                Ok("{\"op\":\"status\"}".to_string()),
                Ok("{\"op\":\"ping\"}".to_string()),
                Ok("last".to_string())
            ]
        );
    }

    #[test]
    fn the_limit_is_exact_and_never_exceeded() {
        assert_eq!(lines(&[b"12345\n"], 5), vec![Ok("12345".to_string())]);
        assert_eq!(lines(&[b"123456\n"], 5), vec![Err(FrameError::TooLong(5))]);
        assert_eq!(
            lines(&[b"123", b"456"], 5),
            vec![Err(FrameError::TooLong(5))]
        );
        assert_eq!(lines(&[b"\xff\xfe\n"], 5), vec![Err(FrameError::NotUtf8)]);
    }

    #[test]
    fn encode_line_ends_with_one_newline() {
        assert_eq!(encode_line(&[1, 2]).unwrap(), b"[1,2]\n");
    }
}
