//! A reader of `multipart/related` bodies (RFC 2046), as WADO-RS sends a series: one part
//! at a time, each held in memory, with the preamble and part headers bounded.

use std::io::Read;

const CHUNK: usize = 256 << 10;
const MAX_PREAMBLE: usize = 64 << 10;
const MAX_HEADERS: usize = 16 << 10;

#[derive(Debug)]
pub(super) struct Part {
    /// The part's Content-Type, lower case (empty when it has none).
    pub content_type: String,
    pub body: Vec<u8>,
}

pub(super) struct Parts<R> {
    reader: R,
    buf: Vec<u8>,
    /// `CRLF--boundary`.
    delimiter: Vec<u8>,
    started: bool,
    done: bool,
    eof: bool,
}

impl<R: Read> Parts<R> {
    pub(super) fn new(reader: R, boundary: &str) -> Self {
        Self {
            reader,
            // The first delimiter may open the body without a CRLF before it.
            buf: b"\r\n".to_vec(),
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            started: false,
            done: false,
            eof: false,
        }
    }

    /// Reads more bytes; false at the end of the body.
    fn fill(&mut self, cancelled: &dyn Fn() -> bool) -> Result<bool, String> {
        if self.eof {
            return Ok(false);
        }
        if cancelled() {
            return Err("cancelled".into());
        }
        let start = self.buf.len();
        self.buf.resize(start + CHUNK, 0);
        let n = loop {
            match self.reader.read(&mut self.buf[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e.to_string());
                }
            }
        };
        self.buf.truncate(start + n);
        self.eof = n == 0;
        Ok(n > 0)
    }

    /// Where `needle` first occurs from `from`, reading until it does (at most `max` bytes
    /// buffered when given).
    fn find(
        &mut self,
        needle: &[u8],
        max: Option<usize>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<usize, String> {
        let mut from = 0;
        loop {
            if let Some(i) = self.buf[from..]
                .windows(needle.len())
                .position(|w| w == needle)
            {
                return Ok(from + i);
            }
            from = self.buf.len().saturating_sub(needle.len() - 1);
            if max.is_some_and(|m| self.buf.len() > m) {
                return Err("a multipart preamble or part header too long".into());
            }
            if !self.fill(cancelled)? {
                return Err("the multipart body ends before its closing boundary".into());
            }
        }
    }

    fn need(&mut self, n: usize, cancelled: &dyn Fn() -> bool) -> Result<(), String> {
        while self.buf.len() < n {
            if !self.fill(cancelled)? {
                return Err("the multipart body ends before its closing boundary".into());
            }
        }
        Ok(())
    }

    /// The next part, or `None` after the closing boundary.
    pub(super) fn next_part(
        &mut self,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Option<Part>, String> {
        if self.done {
            return Ok(None);
        }
        if !self.started {
            let delimiter = self.delimiter.clone();
            let at = self.find(&delimiter, Some(MAX_PREAMBLE), cancelled)?;
            self.buf.drain(..at + delimiter.len());
            self.started = true;
        }
        // After a delimiter: `--` closes the body; else padding up to the line's CRLF.
        self.need(2, cancelled)?;
        if self.buf.starts_with(b"--") {
            self.done = true;
            return Ok(None);
        }
        let eol = self.find(b"\r\n", Some(MAX_HEADERS), cancelled)?;
        self.buf.drain(..eol + 2);
        self.need(2, cancelled)?;
        let headers = if self.buf.starts_with(b"\r\n") {
            self.buf.drain(..2);
            String::new()
        } else {
            let end = self.find(b"\r\n\r\n", Some(MAX_HEADERS), cancelled)?;
            let headers = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            self.buf.drain(..end + 4);
            headers
        };
        let content_type = headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let delimiter = self.delimiter.clone();
        let end = self.find(&delimiter, None, cancelled)?;
        let rest = self.buf.split_off(end + delimiter.len());
        let mut body = std::mem::replace(&mut self.buf, rest);
        body.truncate(end);
        Ok(Some(Part { content_type, body }))
    }
}

/// The `boundary` parameter of a `multipart/related` Content-Type.
pub(super) fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/related") {
        return None;
    }
    params
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .filter(|b| !b.is_empty() && b.len() <= 70)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn parts(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
        let mut reader = Parts::new(body, boundary);
        let mut out = Vec::new();
        while let Some(p) = reader.next_part(&|| false)? {
            out.push(p);
        }
        Ok(out)
    }

    #[test]
    fn parts_are_split_at_their_boundaries() {
        let body = b"--xyz\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--xyz\r\n\
            content-type: Application/DICOM\r\nX: y\r\n\r\nsec\r\n--ond\r\n--xyz--\r\n";
        let got = parts(body, "xyz").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].body, b"first");
        assert_eq!(got[1].body, b"sec\r\n--ond");
        assert_eq!(got[1].content_type, "application/dicom");
    }

    #[test]
    fn large_parts_span_many_reads() {
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut body = b"preamble\r\n--b\r\n\r\n".to_vec();
        body.extend_from_slice(&big);
        body.extend_from_slice(b"\r\n--b--");
        let got = parts(&body, "b").unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, big);
    }

    #[test]
    fn truncated_and_garbage_bodies_are_errors() {
        assert!(parts(b"--b\r\n\r\nno end", "b").is_err());
        assert!(parts(&vec![b'x'; 200_000], "b").is_err());
        assert!(parts(b"", "b").is_err());
    }

    #[test]
    fn boundaries_are_read_from_the_content_type() {
        assert_eq!(
            boundary("multipart/related; type=\"application/dicom\"; boundary=\"a b\"").as_deref(),
            Some("a b")
        );
        assert_eq!(
            boundary("multipart/related;boundary=xyz").as_deref(),
            Some("xyz")
        );
        assert_eq!(boundary("application/json"), None);
    }
}
