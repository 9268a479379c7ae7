//! Splitting input into lines with a bound: a line longer than the limit is skipped (reported as too long)
//! without ever being held in memory whole.

use std::io::{self, BufRead};

use crate::event::MAX_LINE_BYTES;

/// One line, without its `\n`.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Text(&'a [u8]),
    /// Longer than [`MAX_LINE_BYTES`]; its bytes were discarded.
    TooLong,
}

/// A bounded line reader over any `BufRead`.
pub struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
    /// 1-based number of the line last returned.
    pub number: u64,
}

impl<R: BufRead> Lines<R> {
    pub fn new(inner: R) -> Lines<R> {
        Lines { inner, buf: Vec::with_capacity(4096), number: 0 }
    }

    /// The next line, `None` at the end. A final line without `\n` is a line; nothing after a final `\n` is.
    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut too_long = false;
        let mut started = false;
        loop {
            let avail = match self.inner.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                if !started {
                    return Ok(None);
                }
                break;
            }
            started = true;
            let (chunk, used, done) = match memchr::memchr(b'\n', avail) {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            if !too_long {
                if self.buf.len() + chunk.len() > MAX_LINE_BYTES {
                    too_long = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            self.inner.consume(used);
            if done {
                break;
            }
        }
        self.number += 1;
        Ok(Some(if too_long { Line::TooLong } else { Line::Text(&self.buf) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<Result<Vec<u8>, ()>> {
        let mut lines = Lines::new(io::BufReader::with_capacity(16, input));
        let mut out = Vec::new();
        while let Some(line) = lines.next_line().unwrap() {
            out.push(match line {
                Line::Text(t) => Ok(t.to_vec()),
                Line::TooLong => Err(()),
            });
        }
        out
    }

    #[test]
    fn splits_like_spec() {
        assert_eq!(all(b"a\n\nb"), vec![Ok(b"a".to_vec()), Ok(vec![]), Ok(b"b".to_vec())]);
        assert_eq!(all(b"a\n"), vec![Ok(b"a".to_vec())]);
        assert!(all(b"").is_empty());
        let mut big = vec![b'x'; MAX_LINE_BYTES];
        big.push(b'\n');
        big.extend(vec![b'y'; MAX_LINE_BYTES + 1]);
        big.extend(b"\nz");
        let got = all(&big);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().map(Vec::len), Ok(MAX_LINE_BYTES));
        assert_eq!(got[1], Err(()));
        assert_eq!(got[2], Ok(b"z".to_vec()));
    }
}
