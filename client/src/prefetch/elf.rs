//! What an ELF object asks the dynamic loader for: its interpreter (`PT_INTERP`), the
//! libraries it needs (`DT_NEEDED`) and where to look for them (`DT_RPATH`,
//! `DT_RUNPATH`), read from its headers alone.
//!
//! Only the ELF header, the program headers, the dynamic segment and the strings it
//! names are read, each range checked against the file's length and bounded here
//! before anything is allocated: the file comes from a root that anyone may have built,
//! so a truncated or garbled object, absurd counts or offsets and endless strings give
//! an error or a shorter answer, never a panic or a large read.

use object::elf;
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::read::{ReadCache, ReadRef};
use object::{Endianness, FileKind};
use std::io::{Read, Seek};

/// Most program headers read (real objects have about a dozen).
const PHDRS: u64 = 256;
/// Most bytes of a dynamic segment read (real ones are under 1 KiB).
const DYNAMIC: u64 = 64 << 10;
/// Most bytes of an interpreter's path.
const INTERP: u64 = 4096;
/// Most libraries taken from one object.
const NEEDED: usize = 128;
/// Most search directories taken from one `DT_RPATH` or `DT_RUNPATH`.
const DIRS: usize = 32;

/// What an object asks the dynamic loader for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// The ELF machine (`EM_*`), which picks the loader's default directories and
    /// the `ld.so.cache` entries that fit.
    pub machine: u16,
    /// Whether it is a 64-bit object.
    pub wide: bool,
    /// Its interpreter's path (`PT_INTERP`), for an executable.
    pub interp: Option<Vec<u8>>,
    /// The libraries it needs, in order.
    pub needed: Vec<Vec<u8>>,
    /// `DT_RPATH`'s directories (the loader ignores them if `DT_RUNPATH` is set).
    pub rpath: Vec<Vec<u8>>,
    /// `DT_RUNPATH`'s directories.
    pub runpath: Vec<Vec<u8>>,
}

/// Why an object's needs could not be read.
pub type NotElf = &'static str;

/// Reads what the ELF object in `file` asks the loader for; an error if it is not
/// one (or is too damaged to tell).
pub fn needs<R: Read + Seek>(file: R) -> Result<Needs, NotElf> {
    let data = ReadCache::new(file);
    let kind = FileKind::parse(&data).map_err(|_| "not an ELF object")?;
    match kind {
        FileKind::Elf32 => parse::<elf::FileHeader32<Endianness>, _>(&data),
        FileKind::Elf64 => parse::<elf::FileHeader64<Endianness>, _>(&data),
        _ => Err("not an ELF object"),
    }
}

fn parse<'a, E, R>(data: R) -> Result<Needs, NotElf>
where
    E: FileHeader<Endian = Endianness>,
    R: ReadRef<'a>,
{
    let header = E::parse(data).map_err(|_| "a damaged ELF header")?;
    let endian = header
        .endian()
        .map_err(|_| "an ELF header of no known byte order")?;
    // Checked before the slice is read: the count decides how much is allocated.
    if u64::from(header.e_phnum(endian)) > PHDRS {
        return Err("too many ELF program headers");
    }
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|_| "damaged ELF program headers")?;
    let mut needs = Needs {
        machine: header.e_machine(endian),
        wide: header.is_type_64(),
        ..Needs::default()
    };
    let mut dynamic = None;
    for ph in phdrs {
        let (_, size) = ph.file_range(endian);
        match ph.p_type(endian) {
            elf::PT_INTERP if size <= INTERP => {
                needs.interp = ph
                    .interpreter(endian, data)
                    .ok()
                    .flatten()
                    .filter(|p| !p.is_empty())
                    .map(<[u8]>::to_vec);
            }
            elf::PT_DYNAMIC if size <= DYNAMIC && dynamic.is_none() => {
                dynamic = ph.dynamic(endian, data).ok().flatten();
            }
            _ => {}
        }
    }
    let Some(dynamic) = dynamic else {
        // A static executable, or a loader: nothing more to load.
        return Ok(needs);
    };
    let (mut strtab, mut strsz) = (None, None);
    // Counted before any string is read: a table of thousands of entries costs at
    // most NEEDED names and one search path of each kind.
    let (mut needed, mut rpath, mut runpath) = (Vec::new(), None, None);
    for d in dynamic {
        let tag: u64 = d.d_tag(endian).into();
        let val: u64 = d.d_val(endian).into();
        match tag as u32 {
            _ if tag > u64::from(u32::MAX) => {}
            elf::DT_NULL => break,
            elf::DT_STRTAB => strtab = Some(val),
            elf::DT_STRSZ => strsz = Some(val),
            elf::DT_NEEDED if needed.len() < NEEDED => needed.push(val),
            // The loader keeps the last of each, as it reads the table.
            elf::DT_RPATH => rpath = Some(val),
            elf::DT_RUNPATH => runpath = Some(val),
            _ => {}
        }
    }
    // The string table is named by its address once loaded: the loadable segment
    // holding it says where it is in the file.
    let (Some(strtab), Some(strsz)) = (strtab, strsz) else {
        return Err("an ELF dynamic segment without its string table");
    };
    let start = phdrs
        .iter()
        .filter(|ph| ph.p_type(endian) == elf::PT_LOAD)
        .find_map(|ph| {
            let vaddr: u64 = ph.p_vaddr(endian).into();
            let (offset, size) = ph.file_range(endian);
            let within = strtab.checked_sub(vaddr).filter(|d| *d < size)?;
            offset.checked_add(within)
        })
        .ok_or("an ELF string table outside the object's segments")?;
    let len = data.len().map_err(|_| "an ELF object of unknown length")?;
    let end = start.saturating_add(strsz).min(len);
    let string = |off: u64| -> Option<Vec<u8>> {
        let at = start.checked_add(off).filter(|at| *at < end)?;
        // At most 4 KiB are searched for the end of one string (ReadCache's own bound).
        data.read_bytes_at_until(at..end, 0)
            .ok()
            .map(<[u8]>::to_vec)
    };
    let string = |off: u64| string(off).filter(|s| !s.is_empty());
    needs.needed = needed.into_iter().filter_map(string).collect();
    needs.rpath = rpath
        .and_then(string)
        .map(|s| dirs(&s).collect())
        .unwrap_or_default();
    needs.runpath = runpath
        .and_then(string)
        .map(|s| dirs(&s).collect())
        .unwrap_or_default();
    Ok(needs)
}

/// The directories of a search path (`DIR:DIR…`), empty ones left out.
fn dirs(path: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    path.split(|b| *b == b':')
        .filter(|d| !d.is_empty())
        .take(DIRS)
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn of(bytes: &[u8]) -> Result<Needs, NotElf> {
        needs(Cursor::new(bytes.to_vec()))
    }

    /// A minimal 64-bit little-endian object: header, `phdrs` program headers (type,
    /// offset, vaddr, filesz) right after it, then `tail` at offset 64 + 56 × n.
    fn object(phdrs: &[(u32, u64, u64, u64)], tail: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // 64-bit
        b[5] = 1; // little-endian
        b[6] = 1; // version
        b[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
        b[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        b[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b[56..58].copy_from_slice(&(phdrs.len() as u16).to_le_bytes());
        for &(kind, offset, vaddr, size) in phdrs {
            let mut p = vec![0u8; 56];
            p[..4].copy_from_slice(&kind.to_le_bytes());
            p[8..16].copy_from_slice(&offset.to_le_bytes());
            p[16..24].copy_from_slice(&vaddr.to_le_bytes());
            p[32..40].copy_from_slice(&size.to_le_bytes());
            p[40..48].copy_from_slice(&size.to_le_bytes());
            b.extend(p);
        }
        b.extend(tail);
        b
    }

    fn dynamic(entries: &[(u64, u64)]) -> Vec<u8> {
        entries
            .iter()
            .flat_map(|(t, v)| [t.to_le_bytes(), v.to_le_bytes()].concat())
            .collect()
    }

    /// An object needing `libx.so.1` and `../../etc/shadow`, with a runpath and an
    /// interpreter; the tail holds the interpreter, the strings, then the dynamic
    /// segment.
    fn sample() -> Vec<u8> {
        let head = 64 + 56 * 3;
        let interp = b"/lib64/ld-linux-x86-64.so.2\0";
        let strings = b"\0libx.so.1\0../../etc/shadow\0$ORIGIN/../lib:/opt/lib\0";
        let str_at = head + interp.len();
        let dyn_at = str_at + strings.len();
        let d = dynamic(&[
            (elf::DT_NEEDED.into(), 1),
            (elf::DT_NEEDED.into(), 11),
            (elf::DT_RUNPATH.into(), 28),
            (elf::DT_STRTAB.into(), 0x1000 + str_at as u64),
            (elf::DT_STRSZ.into(), strings.len() as u64),
            (elf::DT_NULL.into(), 0),
        ]);
        let mut tail = interp.to_vec();
        tail.extend(strings);
        tail.extend(&d);
        let total = (dyn_at + d.len()) as u64;
        object(
            &[
                (elf::PT_LOAD, 0, 0x1000, total),
                (elf::PT_INTERP, head as u64, 0, interp.len() as u64),
                (elf::PT_DYNAMIC, dyn_at as u64, 0, d.len() as u64),
            ],
            &tail,
        )
    }

    #[test]
    fn reads_interpreter_libraries_and_search_path() {
        let n = of(&sample()).unwrap();
        assert_eq!(n.machine, elf::EM_X86_64);
        assert!(n.wide);
        assert_eq!(
            n.interp.as_deref(),
            Some(&b"/lib64/ld-linux-x86-64.so.2"[..])
        );
        assert_eq!(n.needed, [&b"libx.so.1"[..], b"../../etc/shadow"]);
        assert_eq!(n.runpath, [&b"$ORIGIN/../lib"[..], b"/opt/lib"]);
        assert!(n.rpath.is_empty());
    }

    #[test]
    fn damaged_objects_are_refused_or_read_short_without_a_panic() {
        let good = sample();
        // Not ELF, empty, every truncation.
        assert!(of(b"#!/bin/sh\necho hi\n").is_err());
        assert!(of(b"").is_err());
        for len in 0..good.len() {
            let _ = of(&good[..len]);
        }
        // Every byte garbled in turn, two ways.
        for i in 0..good.len() {
            for x in [0xff, 0x80] {
                let mut b = good.clone();
                b[i] ^= x;
                let _ = of(&b);
            }
        }
        // Absurd counts and sizes: refused or skipped, never read.
        let mut many = good.clone();
        many[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(of(&many).is_err());
        let huge = object(&[(elf::PT_DYNAMIC, 0, 0, u64::MAX)], &[]);
        assert_eq!(of(&huge).unwrap().needed.len(), 0);
        let past_end = object(&[(elf::PT_INTERP, 1 << 40, 0, 64)], &[]);
        assert_eq!(of(&past_end).unwrap().interp, None);
        // A string table with no end: strings are bounded, nothing loops.
        let endless = [vec![b'a'; 100_000], vec![0]].concat();
        let d = dynamic(&[
            (elf::DT_NEEDED.into(), 0),
            (elf::DT_STRTAB.into(), 0),
            (elf::DT_STRSZ.into(), u64::MAX),
        ]);
        let at = (64 + 56 * 2) as u64;
        let b = object(
            &[
                (elf::PT_LOAD, at + d.len() as u64, 0, endless.len() as u64),
                (elf::PT_DYNAMIC, at, 0, d.len() as u64),
            ],
            &[d.clone(), endless].concat(),
        );
        assert!(of(&b).unwrap().needed.is_empty());
    }

    /// A reader that counts the bytes read through it.
    struct Counting<'a>(Cursor<Vec<u8>>, &'a std::cell::Cell<u64>);

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.set(self.1.get() + n as u64);
            Ok(n)
        }
    }

    impl Seek for Counting<'_> {
        fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
            self.0.seek(to)
        }
    }

    #[test]
    fn thousands_of_names_cost_at_most_the_cap_of_strings_read() {
        // 4,000 DT_NEEDED and 60 DT_RPATH/DT_RUNPATH, each a different 4 KiB string
        // (suffixes of one long run, so no read is the same as another).
        let long = [vec![b'a'; 4000], vec![b':'], vec![b'b'; 10], vec![0]].concat();
        let mut entries: Vec<(u64, u64)> = (0..4000).map(|i| (elf::DT_NEEDED.into(), i)).collect();
        entries.extend((0..30).map(|i| (elf::DT_RPATH.into(), 3000 + i)));
        entries.extend((0..30).map(|i| (elf::DT_RUNPATH.into(), 3500 + i)));
        let at = (64 + 56 * 2) as u64;
        let table = (entries.len() as u64 + 3) * 16;
        entries.extend([
            (elf::DT_STRTAB.into(), 0),
            (elf::DT_STRSZ.into(), long.len() as u64),
            (elf::DT_NULL.into(), 0),
        ]);
        let d = dynamic(&entries);
        let b = object(
            &[
                (elf::PT_LOAD, at + table, 0, long.len() as u64),
                (elf::PT_DYNAMIC, at, 0, table),
            ],
            &[d, long].concat(),
        );
        let read = std::cell::Cell::new(0);
        let n = needs(Counting(Cursor::new(b.clone()), &read)).unwrap();
        assert_eq!(n.needed.len(), NEEDED);
        // One search path of each kind: the last, as the loader takes it.
        assert_eq!(n.rpath.len(), 2);
        assert_eq!(n.runpath.len(), 2);
        assert_eq!(n.runpath[0].len(), 4000 - 3529);
        // The table, then NEEDED + 2 strings of 4 KiB (each read once at most).
        let bound = b.len() as u64 + (NEEDED as u64 + 2) * 4096;
        assert!(
            read.get() <= bound,
            "{} bytes read, {bound} allowed",
            read.get()
        );
    }

    #[test]
    fn reads_real_objects_of_this_machine() {
        // The test binary itself is a dynamically linked ELF object of this machine.
        let me = std::fs::File::open("/proc/self/exe").unwrap();
        let n = needs(me).unwrap();
        assert!(n.interp.is_some(), "{n:?}");
        assert!(n.needed.iter().any(|l| l.starts_with(b"libc.so")), "{n:?}");
    }
}
