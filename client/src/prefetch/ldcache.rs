//! A root's `/etc/ld.so.cache`, as glibc's dynamic loader reads it: which file each
//! library name stands for (written by `ldconfig` from the root's `ld.so.conf`).
//!
//! Only the format glibc writes since 2.32 (`glibc-ld.so.cache1.1`, alone or after
//! the old format's entries) is read. The file comes from a root that anyone may have
//! built: counts, offsets and strings are checked against the file and bounded, and
//! anything out of place is skipped or refuses the whole file, never a panic.

/// The new format's magic and version.
const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
/// The old format's magic (`ld.so-1.7.0`), whose entries the new format may follow.
const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
/// The new format's header: magic and version, library count, string length, flags,
/// padding, extension offset, three unused words.
const HEAD: usize = 48;
/// One new-format entry: flags, key, value, OS version, hwcap.
const ENTRY: usize = 24;
/// One old-format entry: flags, key, value.
const OLD_ENTRY: usize = 12;
/// Most entries read (a full distribution has a few thousand).
const ENTRIES: usize = 1 << 16;
/// Longest library name taken (a file name: `NAME_MAX`).
const NAME_MAX: usize = 255;
/// Longest path taken (`PATH_MAX`).
const PATH_MAX: usize = 4096;
/// The flags of an entry for glibc's ELF libraries (`FLAG_ELF_LIBC6`).
const LIBC6: u32 = 0x0003;
/// The header's byte-order flags: unset (written by old ldconfigs), little, big.
const ENDIAN_MASK: u8 = 3;
const ENDIAN_BIG: u8 = 3;
const ENDIAN_INVALID: u8 = 1;

/// The libraries an `ld.so.cache` lists for one kind of object.
///
/// The file's bytes are kept as they are and entries point into them, so a file
/// whose strings overlap costs no more than its size and 12 bytes an entry (half of
/// what an entry takes in the file).
#[derive(Debug, Default)]
pub struct LdCache {
    /// The file, from the new format's header on: strings are offsets into it.
    bytes: Vec<u8>,
    /// (name offset, name length, path offset), sorted by name, one per name: the
    /// first in the file, as the loader's search finds it.
    entries: Vec<(u32, u32, u32)>,
}

impl LdCache {
    /// Reads `bytes` as an `ld.so.cache`, keeping the entries for objects of ELF
    /// machine `machine` (entries of another architecture are left out, as the loader
    /// leaves them); an error if it is not one. Each entry costs at most one scan of
    /// a name ([`NAME_MAX`]); a path is found only when asked for.
    pub fn parse(mut bytes: Vec<u8>, machine: u16) -> Result<LdCache, &'static str> {
        let start = if bytes.starts_with(MAGIC) {
            0
        } else if bytes.starts_with(OLD_MAGIC) {
            // The old header (magic, count) and entries, then the new format.
            let n = u32_at(&bytes, 12).ok_or("a truncated ld.so.cache")? as usize;
            let at = n
                .checked_mul(OLD_ENTRY)
                .and_then(|s| s.checked_add(16))
                .ok_or("a damaged ld.so.cache")?;
            // Aligned to 8 bytes, as ldconfig writes it.
            let at = at.checked_add(7).ok_or("a damaged ld.so.cache")? & !7;
            if !bytes.get(at..).is_some_and(|b| b.starts_with(MAGIC)) {
                return Err("an ld.so.cache in the old format alone");
            }
            at
        } else {
            return Err("not an ld.so.cache");
        };
        bytes.drain(..start);
        let new = &bytes[..];
        if new.len() < HEAD || new.len() > u32::MAX as usize {
            return Err("a truncated or oversized ld.so.cache");
        }
        let endian = new[28] & ENDIAN_MASK;
        if endian == ENDIAN_BIG || endian == ENDIAN_INVALID {
            return Err("a big-endian ld.so.cache");
        }
        let count = u32_at(new, 20).ok_or("a truncated ld.so.cache")? as usize;
        let wanted = LIBC6 | arch_flag(machine);
        let mut entries = Vec::new();
        for i in 0..count.min(ENTRIES) {
            let Some(e) = new.get(HEAD + i * ENTRY..HEAD + (i + 1) * ENTRY) else {
                break;
            };
            let (Some(flags), Some(key), Some(value), Some(hwcap)) =
                (u32_at(e, 0), u32_at(e, 4), u32_at(e, 8), u64_at(e, 16))
            else {
                break;
            };
            // Entries for a CPU level (glibc-hwcaps) are picked by the CPU the program
            // runs on: the plain entry of the same name is the one every CPU can load.
            if flags != wanted || hwcap != 0 || value as usize >= new.len() {
                continue;
            }
            // Strings are offsets from the new format's header.
            let Some(name) = string(new, key, NAME_MAX).filter(|n| !n.contains(&b'/')) else {
                continue;
            };
            entries.push((key, name.len() as u32, value));
        }
        let name = |&(at, len, _): &(u32, u32, u32)| &new[at as usize..(at + len) as usize];
        // Stable: of entries with one name, the first in the file stays first.
        entries.sort_by(|a, b| name(a).cmp(name(b)));
        entries.dedup_by(|later, first| name(later) == name(first));
        entries.shrink_to_fit();
        bytes.shrink_to_fit();
        Ok(LdCache { bytes, entries })
    }

    /// The path the cache gives for library `name`.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        let at = self
            .entries
            .binary_search_by(|e| self.name(e).cmp(name))
            .ok()?;
        string(&self.bytes, self.entries[at].2, PATH_MAX)
    }

    fn name(&self, &(at, len, _): &(u32, u32, u32)) -> &[u8] {
        &self.bytes[at as usize..(at + len) as usize]
    }

    /// How many libraries it lists.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes held on the heap.
    #[cfg(test)]
    fn held(&self) -> usize {
        self.bytes.capacity() + self.entries.capacity() * std::mem::size_of::<(u32, u32, u32)>()
    }
}

/// The architecture bits of an entry's flags for objects of ELF machine `machine`
/// (glibc's `_DL_CACHE_DEFAULT_ID`, less `FLAG_ELF_LIBC6`).
fn arch_flag(machine: u16) -> u32 {
    use object::elf::*;
    match machine {
        EM_X86_64 => 0x0300,
        EM_IA_64 => 0x0100,
        EM_PPC64 => 0x0500,
        EM_S390 => 0x0400,
        EM_AARCH64 => 0x0a00,
        EM_RISCV => 0x1000,
        EM_LOONGARCH => 0x1200,
        _ => 0,
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The non-empty NUL-terminated string at `at`, if it ends within the file and
/// within `max` bytes.
fn string(b: &[u8], at: u32, max: usize) -> Option<&[u8]> {
    let rest = b.get(at as usize..)?;
    let rest = &rest[..rest.len().min(max + 1)];
    let end = rest.iter().position(|c| *c == 0)?;
    Some(&rest[..end]).filter(|s| !s.is_empty())
}

/// A new-format cache listing `(flags, name, path, hwcap)`, as ldconfig lays it out.
#[cfg(test)]
pub(super) fn build(entries: &[(u32, &str, &str, u64)]) -> Vec<u8> {
    let mut strings = Vec::new();
    let strings_at = HEAD + ENTRY * entries.len();
    let mut b = MAGIC.to_vec();
    b.extend((entries.len() as u32).to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend([2, 0, 0, 0]);
    b.extend([0u8; 16]);
    for (flags, name, path, hwcap) in entries {
        let key = (strings_at + strings.len()) as u32;
        strings.extend(name.as_bytes());
        strings.push(0);
        let value = (strings_at + strings.len()) as u32;
        strings.extend(path.as_bytes());
        strings.push(0);
        b.extend(flags.to_le_bytes());
        b.extend(key.to_le_bytes());
        b.extend(value.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(hwcap.to_le_bytes());
    }
    b.extend(strings);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::elf::{EM_AARCH64, EM_X86_64};

    fn cache(entries: &[(u32, &str, &str, u64)]) -> Vec<u8> {
        build(entries)
    }

    fn parse(b: &[u8], machine: u16) -> Result<LdCache, &'static str> {
        LdCache::parse(b.to_vec(), machine)
    }

    #[test]
    fn lists_the_libraries_of_one_architecture() {
        let b = cache(&[
            (0x0303, "libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", 0),
            (0x0303, "libc.so.6", "/usr/local/lib/libc.so.6", 0),
            (0x0a03, "libz.so.1", "/lib/aarch64-linux-gnu/libz.so.1", 0),
            (
                0x0303,
                "libm.so.6",
                "/lib/glibc-hwcaps/x86-64-v3/libm.so.6",
                4,
            ),
            (0x0003, "libold.so", "/lib/libold.so", 0),
        ]);
        let c = parse(&b, EM_X86_64).unwrap();
        assert_eq!(
            c.get(b"libc.so.6"),
            Some(&b"/lib/x86_64-linux-gnu/libc.so.6"[..])
        );
        assert_eq!(c.len(), 1);
        let arm = parse(&b, EM_AARCH64).unwrap();
        assert_eq!(
            arm.get(b"libz.so.1"),
            Some(&b"/lib/aarch64-linux-gnu/libz.so.1"[..])
        );
        assert!(parse(b"not a cache", EM_X86_64).is_err());
    }

    #[test]
    fn a_hostile_cache_gives_an_error_or_fewer_entries_never_a_panic() {
        let good = cache(&[
            (0x0303, "libc.so.6", "/lib/x86_64-linux-gnu/libc.so.6", 0),
            (
                0x0303,
                "libtinfo.so.6",
                "/lib/x86_64-linux-gnu/libtinfo.so.6",
                0,
            ),
        ]);
        for len in 0..good.len() {
            let _ = parse(&good[..len], EM_X86_64);
        }
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0xff;
            let _ = parse(&b, EM_X86_64);
        }
        // A count of 4 billion entries in a small file: read as far as the file goes.
        let mut many = good.clone();
        many[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&many, EM_X86_64).unwrap().len(), 2);
        // Offsets past the end, strings without an end.
        let mut b = good.clone();
        b[HEAD + 4..HEAD + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse(&b, EM_X86_64).unwrap().len(), 1);
        let mut endless = good.clone();
        endless.truncate(HEAD + 2 * ENTRY);
        endless.extend(vec![b'a'; 10_000]);
        assert_eq!(parse(&endless, EM_X86_64).unwrap().len(), 0);
        // An old-format count that overflows.
        let mut old = OLD_MAGIC.to_vec();
        old.extend([0; 1]);
        old.extend(u32::MAX.to_le_bytes());
        assert!(parse(&old, EM_X86_64).is_err());
    }

    #[test]
    fn a_cache_of_overlapping_strings_costs_no_more_than_its_size() {
        // 65,536 entries whose names and paths all point into one 4 KiB string: most
        // names are too long (refused after 256 bytes), the others overlap.
        let entries = ENTRIES;
        let strings_at = HEAD + ENTRY * entries;
        let mut b = build(&[]);
        b[20..24].copy_from_slice(&(entries as u32).to_le_bytes());
        for i in 0..entries {
            let key = strings_at + i % 4000;
            b.extend(0x0303u32.to_le_bytes());
            b.extend((key as u32).to_le_bytes());
            b.extend((strings_at as u32).to_le_bytes());
            b.extend([0; 12]);
        }
        b.extend(vec![b'a'; 4096]);
        b.push(0);
        let c = parse(&b, EM_X86_64).unwrap();
        // Only names of at most 255 bytes (97 to 255 here), one entry each.
        assert_eq!(c.len(), 159);
        assert!(
            c.held() <= b.len() * 3 / 2,
            "{} bytes for {}",
            c.held(),
            b.len()
        );
        // A path is found when asked for, within its own bound.
        assert_eq!(c.get(&[b'a'; 255]).map(<[u8]>::len), Some(4096));
        assert!(c.get(&[b'a'; 256]).is_none());
        // Names with a slash are not library names.
        let slash = build(&[(0x0303, "../libc.so.6", "/lib/libc.so.6", 0)]);
        assert_eq!(parse(&slash, EM_X86_64).unwrap().len(), 0);
    }
}
