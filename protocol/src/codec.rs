//! Primitives of the canonical binary encoding: big-endian fixed-width integers and
//! length-prefixed byte strings, plus the decoder's error type.
//!
//! Fixed widths (rather than varints) leave one way to write each number, which is what
//! makes the encoding canonical.

use crate::id::ObjectId;
use std::collections::BTreeMap;

/// Longest extension key: short dotted words such as `configure` or `oci.config`.
pub const EXTENSION_KEY_MAX: usize = 64;

/// Whether `key` may name an extension: 1 to [`EXTENSION_KEY_MAX`] characters of
/// `a-z 0-9 . -`, starting with a letter.
pub fn valid_extension_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= EXTENSION_KEY_MAX
        && key.as_bytes()[0].is_ascii_lowercase()
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

/// Why bytes are not a valid canonical encoding of an object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes do not start with the expected object header.
    #[error("not a canopy {expected} object (bad magic header)")]
    BadMagic {
        /// Which kind of object was expected.
        expected: &'static str,
    },
    /// The header names an encoding version this build does not know.
    #[error("{kind} object has unsupported encoding version {version}")]
    UnsupportedVersion {
        /// Which kind of object.
        kind: &'static str,
        /// The version byte found.
        version: u8,
    },
    /// The input ends in the middle of a field.
    #[error("object is truncated")]
    Truncated,
    /// Bytes remain after the last field.
    #[error("object has {0} trailing bytes")]
    TrailingBytes(usize),
    /// A field holds a value the encoder never writes.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl DecodeError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        DecodeError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Appends fields to a buffer.
#[derive(Default)]
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn with_header(magic: &[u8; 4], version: u8) -> Self {
        let mut w = Writer(Vec::with_capacity(256));
        w.0.extend_from_slice(magic);
        w.0.push(version);
        w
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    pub(crate) fn id(&mut self, id: &ObjectId) {
        self.0.extend_from_slice(id.as_bytes());
    }
    /// Bytes with a u8 length; callers have checked the length fits.
    pub(crate) fn bytes8(&mut self, b: &[u8]) {
        self.u8(u8::try_from(b.len()).expect("length checked by validation"));
        self.raw(b);
    }
    /// Bytes with a u16 length; callers have checked the length fits.
    pub(crate) fn bytes16(&mut self, b: &[u8]) {
        self.u16(u16::try_from(b.len()).expect("length checked by validation"));
        self.raw(b);
    }
    /// Bytes with a u32 length; callers have checked the length fits.
    pub(crate) fn bytes32(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).expect("length checked by validation"));
        self.raw(b);
    }
    /// A UTF-8 string with a u32 length.
    pub(crate) fn string(&mut self, s: &str) {
        self.bytes32(s.as_bytes());
    }
    /// A list of strings with a u32 count.
    pub(crate) fn strings(&mut self, items: &[String]) {
        self.u32(items.len() as u32);
        for s in items {
            self.string(s);
        }
    }
    /// A sorted map of extensions (commits and package records): a u32 count, then
    /// each key and its u32-length value.
    pub(crate) fn extensions(&mut self, extensions: &BTreeMap<String, Vec<u8>>) {
        self.u32(extensions.len() as u32);
        for (key, value) in extensions {
            assert!(
                valid_extension_key(key),
                "extension key {key:?} is not valid: callers use constant keys"
            );
            self.string(key);
            self.bytes32(value);
        }
    }
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Reads fields from a buffer, failing with [`DecodeError::Truncated`] at its end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Checks the header and returns a reader positioned after it.
    pub(crate) fn with_header(
        buf: &'a [u8],
        magic: &[u8; 4],
        version: u8,
        kind: &'static str,
    ) -> Result<Self, DecodeError> {
        if buf.len() < 4 || &buf[..4] != magic {
            return Err(DecodeError::BadMagic { expected: kind });
        }
        let mut r = Reader { buf: &buf[4..] };
        let found = r.u8()?;
        if found != version {
            return Err(DecodeError::UnsupportedVersion {
                kind,
                version: found,
            });
        }
        Ok(r)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("take returned N bytes"))
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    pub(crate) fn raw<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.array()
    }
    pub(crate) fn id(&mut self) -> Result<ObjectId, DecodeError> {
        Ok(ObjectId::from_bytes(self.array()?))
    }
    pub(crate) fn bytes8(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    pub(crate) fn bytes16(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    pub(crate) fn bytes32(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    /// A u32-length UTF-8 string.
    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes32()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::invalid(field, "not UTF-8"))
    }
    /// A list of strings with a u32 count.
    pub(crate) fn strings(&mut self, field: &'static str) -> Result<Vec<String>, DecodeError> {
        let n = self.count(4)?;
        (0..n).map(|_| self.string(field)).collect()
    }
    /// A byte that must be 0 or 1.
    pub(crate) fn flag(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DecodeError::invalid(field, format!("flag byte {other}"))),
        }
    }
    /// A count of items that each take at least `min_item` bytes: a count the remaining
    /// input cannot hold is refused before anything is allocated for it.
    pub(crate) fn count(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }
    /// A map of extensions as [`Writer::extensions`] writes it: keys valid, sorted and
    /// unique.
    pub(crate) fn extensions(&mut self) -> Result<BTreeMap<String, Vec<u8>>, DecodeError> {
        // key and value lengths (8).
        let n = self.count(8)?;
        let mut extensions = BTreeMap::new();
        for _ in 0..n {
            let key = self.string("extension key")?;
            if !valid_extension_key(&key) {
                return Err(DecodeError::invalid(
                    "extension key",
                    format!("{key:?} is not 1 to {EXTENSION_KEY_MAX} characters of a-z 0-9 . -"),
                ));
            }
            if extensions
                .last_key_value()
                .is_some_and(|(last, _): (&String, _)| last.as_str() >= key.as_str())
            {
                return Err(DecodeError::invalid(
                    "extension key",
                    format!("{key:?} is out of order or repeated"),
                ));
            }
            let value = self.bytes32()?.to_vec();
            extensions.insert(key, value);
        }
        Ok(extensions)
    }
    /// Succeeds only if every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}
