//! The front of an RPM file: a 96-byte lead, the signature header (digests and
//! signatures of what follows), the main header (everything about the package), then
//! the payload.
//!
//! Headers are read and checked here before the `rpm` crate parses them: every count,
//! offset and length is bounded by the file's real size and by rpm's own limits (65,535
//! tags, 256 MiB of data), every entry's data must lie inside the header and every
//! string end with a NUL, so that no header, however hostile, makes canopy allocate
//! more than the file holds or read past what it has.

use crate::import::{Class, ImportError};
use crate::repo::signature::Keyring;
use canopy_protocol::Hasher;
use rpm::{IndexSignatureTag, IndexTag, PackageMetadata};
use std::io::{self, Read, Write};

/// The lead's magic, and the size of the lead.
const LEAD_MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const LEAD_SIZE: usize = 96;
/// A header's magic (with its version byte 1) and the size of its intro.
const HEADER_MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];
const INTRO_SIZE: usize = 16;
/// rpm's own bounds on a header (`HEADER_TAGS_MAX`, `HEADER_DATA_MAX`).
const MAX_TAGS: u32 = 0xffff;
const MAX_DATA: u32 = 0x0fff_ffff;

/// RPMTAG_PAYLOADDIGESTALGO's value for SHA-256 (OpenPGP's hash algorithm number).
const SHA256_ALGO: u32 = 8;

/// An RPM's headers, checked.
pub(crate) struct Headers {
    /// Both headers, parsed.
    pub(crate) meta: PackageMetadata,
    /// The main header's bytes (intro, index and data), which the header digests and
    /// signatures cover, and which the package database stores.
    pub(crate) main: Vec<u8>,
    /// Where the payload starts in the file.
    pub(crate) payload_offset: u64,
}

fn refused(class: Class, what: &str, detail: impl std::fmt::Display) -> ImportError {
    ImportError::refused(class, format!("{what}: {detail}"))
}

fn not_an_rpm(what: &str, detail: impl std::fmt::Display) -> ImportError {
    refused(
        Class::NotAnRpm,
        what,
        format!("not an RPM package: {detail}"),
    )
}

/// Reads exactly `buf.len()` bytes; running out is a truncation.
fn fill(r: &mut impl Read, buf: &mut [u8], what: &str, part: &str) -> Result<(), ImportError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => refused(
            Class::Truncated,
            what,
            format!("the file ends inside the {part}"),
        ),
        _ => ImportError::Io {
            what: format!("reading {what}"),
            source: e,
        },
    })
}

/// Reads the lead and both headers from the start of an RPM file of `file_len` bytes.
pub(crate) fn read(r: &mut impl Read, file_len: u64, what: &str) -> Result<Headers, ImportError> {
    let mut lead = [0u8; LEAD_SIZE];
    let got = r
        .take(LEAD_SIZE as u64)
        .read(&mut lead)
        .and_then(|n| {
            let mut total = n;
            while total < LEAD_SIZE {
                match r.read(&mut lead[total..])? {
                    0 => break,
                    n => total += n,
                }
            }
            Ok(total)
        })
        .map_err(|source| ImportError::Io {
            what: format!("reading {what}"),
            source,
        })?;
    // A file that does not start like an RPM is not one, however short it is.
    if got < LEAD_MAGIC.len() || lead[..4] != LEAD_MAGIC {
        return Err(not_an_rpm(what, "no RPM lead (bad magic)"));
    }
    if got < LEAD_SIZE {
        return Err(refused(
            Class::Truncated,
            what,
            "the file ends inside the lead",
        ));
    }
    if !(3..=4).contains(&lead[4]) {
        return Err(not_an_rpm(
            what,
            format!("format {}.x is not 3 or 4", lead[4]),
        ));
    }
    if u16::from_be_bytes([lead[6], lead[7]]) == 1 {
        return Err(not_an_rpm(
            what,
            "it is a source package (.src.rpm), which has nothing to install",
        ));
    }
    let mut used = LEAD_SIZE as u64;
    let signature = read_header(r, file_len, &mut used, what, "signature header")?;
    // The signature header is padded to a multiple of 8 bytes.
    let padding = (8 - signature.len() % 8) % 8;
    let mut pad = [0u8; 8];
    fill(r, &mut pad[..padding], what, "signature header")?;
    used += padding as u64;
    let main = read_header(r, file_len, &mut used, what, "header")?;
    let mut all = Vec::with_capacity(LEAD_SIZE + signature.len() + padding + main.len());
    all.extend_from_slice(&lead);
    all.extend_from_slice(&signature);
    all.extend_from_slice(&pad[..padding]);
    all.extend_from_slice(&main);
    let meta = PackageMetadata::parse(&mut all.as_slice())
        .map_err(|e| refused(Class::Malformed, what, format!("unreadable header: {e}")))?;
    Ok(Headers {
        meta,
        main,
        payload_offset: used,
    })
}

/// A stored main header (a package record's control tree keeps it) parsed, with the
/// same checks as an RPM file's: the lead and signature header rpm wrote are not kept,
/// so a lead naming the package and a signature header holding only the main header's
/// size stand in for them.
pub(crate) fn stored(main: &[u8], what: &str) -> Result<PackageMetadata, ImportError> {
    let mut file = Vec::with_capacity(LEAD_SIZE + 40 + main.len());
    file.extend_from_slice(&LEAD_MAGIC);
    // Format 3.0, a binary package for architecture 1 (rpm no longer reads these).
    file.extend_from_slice(&[3, 0, 0, 0, 0, 1]);
    let mut name = [0u8; 66];
    let shown = what.as_bytes();
    let n = shown.len().min(65);
    name[..n].copy_from_slice(&shown[..n]);
    file.extend_from_slice(&name);
    // Operating system 1 (Linux), signature type 5 (a header).
    file.extend_from_slice(&[0, 1, 0, 5]);
    file.extend_from_slice(&[0; 16]);
    // One tag, RPMSIGTAG_SIZE (1000), an INT32 (type 4) at offset 0, then its value
    // and padding to 8 bytes.
    file.extend_from_slice(&HEADER_MAGIC);
    file.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 4]);
    file.extend_from_slice(&1000u32.to_be_bytes());
    file.extend_from_slice(&4u32.to_be_bytes());
    file.extend_from_slice(&0u32.to_be_bytes());
    file.extend_from_slice(&1u32.to_be_bytes());
    file.extend_from_slice(&u32::try_from(main.len()).unwrap_or(u32::MAX).to_be_bytes());
    file.extend_from_slice(&[0; 4]);
    file.extend_from_slice(main);
    let len = file.len() as u64;
    Ok(read(&mut file.as_slice(), len, what)?.meta)
}

/// Reads one header (intro, index, data) after checking its sizes against rpm's limits
/// and what is left of the file, then checks every index entry.
fn read_header(
    r: &mut impl Read,
    file_len: u64,
    used: &mut u64,
    what: &str,
    part: &str,
) -> Result<Vec<u8>, ImportError> {
    let mut intro = [0u8; INTRO_SIZE];
    fill(r, &mut intro, what, part)?;
    if intro[..4] != HEADER_MAGIC {
        return Err(refused(
            Class::Malformed,
            what,
            format!("the {part} has a bad magic number"),
        ));
    }
    let tags = u32::from_be_bytes(intro[8..12].try_into().expect("4 bytes"));
    let data = u32::from_be_bytes(intro[12..16].try_into().expect("4 bytes"));
    if tags == 0 || tags > MAX_TAGS || data > MAX_DATA {
        return Err(refused(
            Class::TooLarge,
            what,
            format!(
                "the {part} claims {tags} tags and {data} bytes of data (rpm allows 1 to {MAX_TAGS} tags and {MAX_DATA} bytes)"
            ),
        ));
    }
    let size = INTRO_SIZE as u64 + u64::from(tags) * 16 + u64::from(data);
    if *used + size > file_len {
        return Err(refused(
            Class::Truncated,
            what,
            format!(
                "the {part} claims {size} bytes, more than the {} left in the file",
                file_len - *used
            ),
        ));
    }
    let mut bytes = vec![0u8; size as usize];
    bytes[..INTRO_SIZE].copy_from_slice(&intro);
    fill(r, &mut bytes[INTRO_SIZE..], what, part)?;
    *used += size;
    let (index, store) = bytes[INTRO_SIZE..].split_at(tags as usize * 16);
    check_entries(index, store).map_err(|detail| {
        refused(
            Class::Malformed,
            what,
            format!("the {part} is damaged: {detail}"),
        )
    })?;
    Ok(bytes)
}

/// Checks that every index entry has a known type and that its data lies inside the
/// store: numbers aligned and in range, strings NUL-terminated. Entries may share
/// bytes, but the total examined is bounded, so a hostile index cannot make this slow.
fn check_entries(index: &[u8], store: &[u8]) -> Result<(), String> {
    let len = store.len();
    let mut budget = 2 * len + (1 << 20);
    for entry in index.chunks_exact(16) {
        let field = |i: usize| u32::from_be_bytes(entry[i..i + 4].try_into().expect("4 bytes"));
        let (tag, kind, offset, count) = (field(0), field(4), field(8), field(12));
        let offset = offset as usize;
        if count == 0 || count as usize > len.max(1) || offset > len {
            return Err(format!(
                "tag {tag} has count {count} at offset {offset} in {len} bytes"
            ));
        }
        let count = count as usize;
        let end = match kind {
            0 => offset,
            1 | 2 | 7 => offset + count,
            3..=5 => {
                let width = 1 << (kind - 2);
                if !offset.is_multiple_of(width) {
                    return Err(format!("tag {tag}: misaligned numbers"));
                }
                offset + count * width
            }
            6 | 8 | 9 => {
                let strings = if kind == 6 { 1 } else { count };
                if kind == 6 && count != 1 {
                    return Err(format!("tag {tag}: a string with count {count}"));
                }
                let mut at = offset;
                for _ in 0..strings {
                    let rest = &store[at.min(len)..];
                    let scan = rest.len().min(budget);
                    let nul = memchr(&rest[..scan])
                        .ok_or_else(|| format!("tag {tag}: a string runs past the header"))?;
                    budget -= nul + 1;
                    at += nul + 1;
                }
                at
            }
            other => return Err(format!("tag {tag} has unknown type {other}")),
        };
        if end > len {
            return Err(format!("tag {tag}'s data runs past the header"));
        }
    }
    Ok(())
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == 0)
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = Hasher::new();
    h.write_all(bytes).expect("hashing cannot fail");
    h.finish().to_string()
}

impl Headers {
    /// Checks the header's own SHA-256 (from the signature header), when present.
    pub(crate) fn check_header_digest(&self, what: &str) -> Result<(), ImportError> {
        let Ok(want) = self
            .meta
            .signature
            .get_entry_data_as_string(IndexSignatureTag::RPMSIGTAG_SHA256)
        else {
            return Ok(());
        };
        let got = sha256_hex(&self.main);
        if !want.eq_ignore_ascii_case(&got) {
            return Err(refused(
                Class::BadDigest,
                what,
                format!("the header's SHA-256 is {got}, the signature header says {want}"),
            ));
        }
        Ok(())
    }

    /// The SHA-256 the compressed payload must have, when the header gives one.
    pub(crate) fn payload_sha256(&self) -> Option<String> {
        let header = &self.meta.header;
        let algo = header
            .get_entry_data_as_u32(IndexTag::RPMTAG_PAYLOADSHA256ALGO)
            .unwrap_or(SHA256_ALGO);
        let digests = header
            .get_entry_data_as_string_array(IndexTag::RPMTAG_PAYLOADSHA256)
            .ok()?;
        (algo == SHA256_ALGO)
            .then(|| digests.first().map(|d| d.to_ascii_lowercase()))
            .flatten()
    }

    /// The size of header + compressed payload the signature header declares.
    pub(crate) fn declared_size(&self) -> Option<u64> {
        let sig = &self.meta.signature;
        sig.get_entry_data_as_u64(IndexSignatureTag::RPMSIGTAG_LONGSIZE)
            .or_else(|_| {
                sig.get_entry_data_as_u32(IndexSignatureTag::RPMSIGTAG_SIZE)
                    .map(u64::from)
            })
            .ok()
    }

    /// The size of the uncompressed payload (the cpio archive) the headers declare.
    pub(crate) fn declared_archive_size(&self) -> Option<u64> {
        let sig = &self.meta.signature;
        let header = &self.meta.header;
        sig.get_entry_data_as_u64(IndexSignatureTag::RPMSIGTAG_LONGARCHIVESIZE)
            .or_else(|_| {
                sig.get_entry_data_as_u32(IndexSignatureTag::RPMSIGTAG_PAYLOADSIZE)
                    .map(u64::from)
            })
            .or_else(|_| header.get_entry_data_as_u64(IndexTag::RPMTAG_LONGARCHIVESIZE))
            .or_else(|_| {
                header
                    .get_entry_data_as_u32(IndexTag::RPMTAG_ARCHIVESIZE)
                    .map(u64::from)
            })
            .ok()
    }

    /// Checks the header's OpenPGP signature (rpm's header-only signature, RSA/DSA/EdDSA
    /// alike) against a keyring: some signature must verify with one of its keys.
    pub(crate) fn verify_signature(
        &self,
        keyring: &Keyring,
        what: &str,
    ) -> Result<(), ImportError> {
        let sig = &self.meta.signature;
        let mut signatures: Vec<Vec<u8>> = Vec::new();
        for tag in [
            IndexSignatureTag::RPMSIGTAG_RSA,
            IndexSignatureTag::RPMSIGTAG_DSA,
        ] {
            if let Ok(bytes) = sig.get_entry_data_as_binary(tag) {
                signatures.push(bytes.to_vec());
            }
        }
        // rpm 6 keeps its signatures as armored text, one per string.
        if let Ok(armored) =
            sig.get_entry_data_as_string_array(IndexSignatureTag::RPMSIGTAG_OPENPGP)
        {
            signatures.extend(armored.iter().map(|a| a.as_bytes().to_vec()));
        }
        if signatures.is_empty() {
            return Err(refused(
                Class::BadSignature,
                what,
                "the package has no header signature (sign it with `rpmsign --addsign`, or import it without --keyring)",
            ));
        }
        let mut last = None;
        for signature in &signatures {
            match keyring.verify_detached(&self.main, signature) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(refused(
            Class::BadSignature,
            what,
            format!(
                "header signature: {}",
                last.expect("at least one signature was tried")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tag: u32, kind: u32, offset: u32, count: u32) -> Vec<u8> {
        [tag, kind, offset, count]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect()
    }

    #[test]
    fn entries_must_lie_inside_the_store() {
        let store = b"abc\0de\0\0\0\0\0\x01";
        assert!(check_entries(&entry(1000, 6, 0, 1), store).is_ok());
        assert!(check_entries(&entry(1000, 8, 0, 2), store).is_ok());
        assert!(check_entries(&entry(1000, 4, 8, 1), store).is_ok());
        // Past the end, misaligned, unterminated, absurd counts, unknown types.
        assert!(check_entries(&entry(1000, 4, 12, 1), store).is_err());
        assert!(check_entries(&entry(1000, 4, 2, 1), store).is_err());
        assert!(check_entries(&entry(1000, 8, 4, 9), store).is_err());
        assert!(check_entries(&entry(1000, 7, 0, u32::MAX), store).is_err());
        assert!(check_entries(&entry(1000, 12, 0, 1), store).is_err());
        assert!(check_entries(&entry(1000, 6, 0, 0), store).is_err());
    }

    #[test]
    fn overlapping_strings_cannot_make_the_check_slow() {
        // Every entry points at the same long string: the budget runs out.
        let mut store = vec![b'x'; 1 << 16];
        store.push(0);
        let index: Vec<u8> = (0..0xffff).flat_map(|_| entry(1000, 8, 0, 1)).collect();
        assert!(check_entries(&index, &store).is_err());
    }
}
