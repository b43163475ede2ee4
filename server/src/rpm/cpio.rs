//! The cpio archive inside an RPM payload: SVR4 `newc` records (magic `070701`, or
//! `070702` with a checksum), and the stripped records (`07070X`) that rpm writes when a
//! file is over 4 GiB, which carry only the file's index in the header.
//!
//! Every record is 4-byte aligned. Names are bounded before they are read; contents
//! are left to the caller, who knows from the header how long each one is.

use std::io::{self, Read};

/// The longest name a record may carry (Linux's PATH_MAX).
const NAME_MAX: usize = 4096;
const TRAILER: &[u8] = b"TRAILER!!!";

/// One record's header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// A full record: the entry's name (as written, usually `./usr/bin/x`) and the
    /// length of the data that follows.
    Named {
        /// The path as written.
        name: Vec<u8>,
        /// Bytes of content that follow.
        size: u64,
    },
    /// A stripped record: the file's index in the header, whose sizes say how long the
    /// data is.
    Stripped(u32),
    /// The end of the archive.
    Trailer,
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn hex(field: &[u8]) -> io::Result<u32> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or_else(|| invalid("a cpio header field is not hexadecimal"))
}

/// Reads `n` (< 4) bytes of padding.
fn skip(r: &mut impl Read, n: usize) -> io::Result<()> {
    let mut pad = [0u8; 4];
    r.read_exact(&mut pad[..n])
}

/// Padding after `len` bytes to the next multiple of 4.
pub(crate) fn padding(len: u64) -> usize {
    ((4 - len % 4) % 4) as usize
}

/// Reads the next record's header (and its name), leaving the reader at its data.
pub(crate) fn next(r: &mut impl Read) -> io::Result<Record> {
    let mut magic = [0u8; 6];
    r.read_exact(&mut magic)?;
    match &magic {
        b"070701" | b"070702" => {}
        b"07070X" => {
            let mut index = [0u8; 8];
            r.read_exact(&mut index)?;
            // 14 bytes, padded to 16.
            skip(r, 2)?;
            return Ok(Record::Stripped(hex(&index)?));
        }
        _ => return Err(invalid("a cpio record has a bad magic number")),
    }
    let mut fields = [0u8; 104];
    r.read_exact(&mut fields)?;
    let field = |i: usize| hex(&fields[i * 8..i * 8 + 8]);
    let size = u64::from(field(6)?);
    let name_len = field(11)? as usize;
    if name_len == 0 || name_len > NAME_MAX + 1 {
        return Err(invalid(format!(
            "a cpio record's name is {name_len} bytes long"
        )));
    }
    let mut name = vec![0u8; name_len];
    r.read_exact(&mut name)?;
    if name.pop() != Some(0) || name.contains(&0) {
        return Err(invalid(
            "a cpio record's name is not one NUL-terminated string",
        ));
    }
    skip(r, padding(110 + name_len as u64))?;
    if name == TRAILER {
        return Ok(Record::Trailer);
    }
    Ok(Record::Named { name, size })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, size: u32) -> Vec<u8> {
        let mut out = b"070701".to_vec();
        for v in [1, 0o100644, 0, 0, 1, 0, size, 0, 0, 0, 0] {
            out.extend(format!("{v:08x}").bytes());
        }
        out.extend(format!("{:08x}", name.len() + 1).bytes());
        out.extend(b"00000000");
        out.extend(name.bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_named_stripped_and_trailer_records() {
        let mut bytes = record("./usr/bin/x", 3);
        bytes.extend(b"abc\0");
        bytes.extend(b"07070X0000002a\0\0");
        bytes.extend(record("TRAILER!!!", 0));
        let mut r = bytes.as_slice();
        assert_eq!(
            next(&mut r).unwrap(),
            Record::Named {
                name: b"./usr/bin/x".to_vec(),
                size: 3
            }
        );
        let mut data = [0u8; 4];
        r.read_exact(&mut data).unwrap();
        assert_eq!(next(&mut r).unwrap(), Record::Stripped(42));
        assert_eq!(next(&mut r).unwrap(), Record::Trailer);
    }

    #[test]
    fn refuses_bad_records() {
        assert!(next(&mut &b"070707xxxx"[..]).is_err());
        let mut long = record("x", 0);
        long[94..102].copy_from_slice(b"ffffffff");
        assert!(next(&mut long.as_slice()).is_err());
        let mut bad = record("x", 0);
        bad[60] = b'g';
        assert!(next(&mut bad.as_slice()).is_err());
        assert!(next(&mut &record("abc", 0)[..20]).is_err());
    }
}
