//! XDR (RFC 4506), the few primitives NFSv3 and MOUNT need: 32- and 64-bit integers,
//! booleans and variable-length opaque data, big-endian and padded to 4 bytes.
//!
//! Decoding reads from one received record already in memory and never allocates what a
//! length field claims: a length is checked against its protocol bound and against the
//! bytes actually left before anything is sliced, so hostile lengths cost nothing.

/// The arguments do not decode: answered with GARBAGE_ARGS, or the record is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Garbage;

/// Reads XDR fields from a received record.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Garbage> {
        let end = self.pos.checked_add(n).ok_or(Garbage)?;
        let out = self.buf.get(self.pos..end).ok_or(Garbage)?;
        self.pos = end;
        Ok(out)
    }

    /// An unsigned 32-bit integer (also enums).
    pub fn u32(&mut self) -> Result<u32, Garbage> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned 64-bit integer.
    pub fn u64(&mut self) -> Result<u64, Garbage> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }

    /// Fixed-length opaque data of `n` bytes (plus padding).
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8], Garbage> {
        let data = self.take(n)?;
        self.take(pad(n))?;
        Ok(data)
    }

    /// Variable-length opaque data (or a string) of at most `max` bytes.
    pub fn opaque(&mut self, max: usize) -> Result<&'a [u8], Garbage> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(Garbage);
        }
        self.fixed(len)
    }

    /// What is left, unread.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Succeeds only if every byte was read: trailing bytes are garbage too.
    pub fn finish(&self) -> Result<(), Garbage> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(Garbage)
        }
    }
}

/// Padding after `n` bytes of opaque data.
fn pad(n: usize) -> usize {
    (4 - n % 4) % 4
}

/// Appends XDR fields to a reply.
#[derive(Default)]
pub struct Writer(Vec<u8>);

impl Writer {
    /// An empty reply with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Writer(Vec::with_capacity(capacity))
    }

    /// An unsigned 32-bit integer (also enums).
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An unsigned 64-bit integer.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A boolean.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u32(u32::from(v))
    }

    /// Fixed-length opaque data, padded.
    pub fn fixed(&mut self, data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(data);
        self.0.extend_from_slice(&[0; 3][..pad(data.len())]);
        self
    }

    /// Variable-length opaque data (or a string). Callers keep data within the
    /// protocol's bounds, all far below 4 GiB.
    pub fn opaque(&mut self, data: &[u8]) -> &mut Self {
        self.u32(u32::try_from(data.len()).expect("XDR data under 4 GiB"));
        self.fixed(data)
    }

    /// Variable-length opaque data of `len` bytes that `fill` writes in place.
    pub fn opaque_from<E>(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.u32(u32::try_from(len).expect("XDR data under 4 GiB"));
        let start = self.0.len();
        self.0.resize(start + len + pad(len), 0);
        fill(&mut self.0[start..start + len])
    }

    /// Drops everything written after the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }

    /// Appends what another writer wrote.
    pub fn append(&mut self, other: Writer) -> &mut Self {
        self.0.extend_from_slice(&other.0);
        self
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Encoded size of variable-length opaque data of `n` bytes.
pub fn opaque_size(n: usize) -> usize {
    4 + n + pad(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_padding() {
        let mut w = Writer::default();
        w.u32(7)
            .u64(1 << 40)
            .bool(true)
            .opaque(b"abcde")
            .fixed(b"xy");
        let filled = w.opaque_from(3, |b| {
            b.copy_from_slice(b"fgh");
            Ok::<_, ()>(())
        });
        assert_eq!(filled, Ok(()));
        let bytes = w.into_bytes();
        assert_eq!(bytes.len(), 4 + 8 + 4 + opaque_size(5) + 4 + opaque_size(3));
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.u64(), Ok(1 << 40));
        assert_eq!(r.u32(), Ok(1));
        assert_eq!(r.opaque(8), Ok(&b"abcde"[..]));
        assert_eq!(r.fixed(2), Ok(&b"xy"[..]));
        assert_eq!(r.opaque(3), Ok(&b"fgh"[..]));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn hostile_lengths_are_garbage_without_allocating() {
        // A length of 4 GiB - 1 over a 12-byte record: refused by the bound, and again
        // by the bytes left when the bound is large.
        let bytes = [0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(Reader::new(&bytes).opaque(64), Err(Garbage));
        assert_eq!(Reader::new(&bytes).opaque(usize::MAX), Err(Garbage));
        assert_eq!(Reader::new(&[0, 0, 0]).u32(), Err(Garbage));
        let mut r = Reader::new(&[0, 0, 0, 1, 0]);
        r.u32().unwrap();
        assert_eq!(r.finish(), Err(Garbage));
    }
}
