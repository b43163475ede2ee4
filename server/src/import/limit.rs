//! Bounds on what an archive may make canopy read, whatever its headers claim.

use canopy_protocol::{Hasher, ObjectId};
use std::cell::Cell;
use std::fmt;
use std::io::{self, Read};
use std::rc::Rc;

/// Bounds applied to one archive.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Total bytes of file content one archive may unpack to.
    pub max_unpacked: u64,
    /// Entries one archive may hold.
    pub max_entries: u64,
    /// Bytes of headers (long names, PAX records, skipped data) allowed between two
    /// entries. The tar reader holds these in memory, so they must be bounded.
    pub max_header: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_unpacked: 16 << 30,
            max_entries: 4_000_000,
            max_header: 1 << 20,
        }
    }
}

/// The error carried inside an `io::Error` when a limit is hit.
#[derive(Debug)]
pub(crate) struct LimitExceeded(pub String);

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LimitExceeded {}

fn exceeded(msg: String) -> io::Error {
    io::Error::other(LimitExceeded(msg))
}

/// Shared state of a [`Budgeted`] reader: the importer switches it between reading
/// file content (counted against the unpacked limit) and letting the tar reader parse
/// headers (counted against the header budget, reset at every entry).
#[derive(Clone)]
pub(crate) struct Budget(Rc<BudgetState>);

struct BudgetState {
    limits: Limits,
    in_content: Cell<bool>,
    content: Cell<u64>,
    header: Cell<u64>,
    /// Zero bytes at the end of what was read so far: a complete tar ends with at least
    /// one zero block, a truncated one usually does not.
    trailing_zeros: Cell<u64>,
    /// Whether the input has ended: an error after that means the archive was cut short.
    at_eof: Cell<bool>,
}

impl Budget {
    pub(crate) fn new(limits: Limits) -> Self {
        Budget(Rc::new(BudgetState {
            limits,
            in_content: Cell::new(false),
            content: Cell::new(0),
            header: Cell::new(0),
            trailing_zeros: Cell::new(0),
            at_eof: Cell::new(false),
        }))
    }

    /// Reads from here on are file content.
    pub(crate) fn content(&self) {
        self.0.in_content.set(true);
    }

    /// Reads from here on are headers, with a fresh budget.
    pub(crate) fn headers(&self) {
        self.0.in_content.set(false);
        self.0.header.set(0);
    }

    /// Whether the stream so far ends with a zero block.
    pub(crate) fn ended_with_zero_block(&self) -> bool {
        self.0.trailing_zeros.get() >= 512
    }

    /// Whether the input has ended.
    pub(crate) fn at_eof(&self) -> bool {
        self.0.at_eof.get()
    }

    /// The largest header record allowed.
    pub(crate) fn max_header(&self) -> u64 {
        self.0.limits.max_header
    }

    /// Wraps a reader so that reads are counted against this budget.
    pub(crate) fn wrap<R: Read>(&self, inner: R) -> Budgeted<R> {
        Budgeted {
            inner,
            budget: self.clone(),
        }
    }
}

/// A reader that fails with [`LimitExceeded`] once its [`Budget`] is spent.
pub(crate) struct Budgeted<R> {
    inner: R,
    budget: Budget,
}

impl<R: Read> Read for Budgeted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let s = &self.budget.0;
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            s.at_eof.set(true);
        }
        let n64 = n as u64;
        if s.in_content.get() {
            s.content.set(s.content.get() + n64);
            if s.content.get() > s.limits.max_unpacked {
                return Err(exceeded(format!(
                    "unpacks to more than {} bytes (see --max-size)",
                    s.limits.max_unpacked
                )));
            }
        } else {
            s.header.set(s.header.get() + n64);
            if s.header.get() > s.limits.max_header {
                return Err(exceeded(format!(
                    "a header or skipped record exceeds {} bytes",
                    s.limits.max_header
                )));
            }
        }
        let chunk = &buf[..n];
        let tail = chunk.iter().rev().take_while(|&&b| b == 0).count() as u64;
        s.trailing_zeros.set(if tail == n64 {
            s.trailing_zeros.get() + n64
        } else {
            tail
        });
        Ok(n)
    }
}

/// Counts what is read through it, to tell whether a container member (an `ar` member of
/// a `.deb`) was as long as its header said.
pub(crate) struct Counted<R> {
    inner: R,
    read: u64,
}

impl<R> Counted<R> {
    pub(crate) fn new(inner: R) -> Self {
        Counted { inner, read: 0 }
    }

    /// Bytes read so far.
    pub(crate) fn read_bytes(&self) -> u64 {
        self.read
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// A reader that hashes and counts what passes through it.
pub(crate) struct Hashing<R> {
    inner: R,
    hasher: Hasher,
    bytes: u64,
}

impl<R: Read> Hashing<R> {
    pub(crate) fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Hasher::new(),
            bytes: 0,
        }
    }

    /// Reads to the end, then returns the digest and byte count.
    pub(crate) fn finish(mut self) -> io::Result<(ObjectId, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.hasher.finish(), self.bytes))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}
