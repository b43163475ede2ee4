//! Generators of hostile archives, built at test time byte by byte.
//!
//! The `tar` crate's builder refuses most of what an attacker would write (`..` paths,
//! absolute paths, lying size fields), so [`Tar`] writes raw ustar headers and PAX
//! records itself, and [`ar`] writes the trivial `ar` format of a .deb ("!<arch>\n" and
//! 60-byte member headers). Each hostile archive differs from a well-formed one by
//! exactly one flaw; `hostile.rs` lists them with the error class canopy must report.

use std::io::Write;

/// Regular file type flag.
pub const FILE: u8 = b'0';
/// Hard link type flag.
pub const HARDLINK: u8 = b'1';
/// Symbolic link type flag.
pub const SYMLINK: u8 = b'2';
/// Directory type flag.
pub const DIR: u8 = b'5';
/// PAX extended header type flag.
pub const PAX: u8 = b'x';
/// GNU long name type flag.
pub const GNU_LONGNAME: u8 = b'L';

/// One tar header, with every field an attacker controls.
#[derive(Clone, Debug)]
pub struct Header<'a> {
    /// Name field (at most 100 bytes; longer names go through PAX).
    pub path: &'a [u8],
    /// Type flag.
    pub kind: u8,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link target field (hard and symbolic links).
    pub link: &'a [u8],
    /// Size field; `None` writes the length of the data that follows.
    pub size: Option<u64>,
    /// A raw size field, overriding `size` (to write a non-number).
    pub size_field: Option<&'a [u8]>,
    /// Writes a checksum that is off by one.
    pub bad_checksum: bool,
}

impl Default for Header<'_> {
    fn default() -> Self {
        Header {
            path: b"",
            kind: FILE,
            mode: 0o644,
            uid: 0,
            gid: 0,
            link: b"",
            size: None,
            size_field: None,
            bad_checksum: false,
        }
    }
}

/// A tar stream written header by header.
#[derive(Default)]
pub struct Tar {
    buf: Vec<u8>,
}

impl Tar {
    /// An empty archive.
    pub fn new() -> Tar {
        Tar::default()
    }

    /// Appends a header and `data`, padded to a 512-byte block.
    pub fn push(&mut self, header: &Header, data: &[u8]) -> &mut Tar {
        self.buf
            .extend_from_slice(&encode_header(header, data.len() as u64));
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    /// A directory entry, mode 0755.
    pub fn dir(&mut self, path: &str) -> &mut Tar {
        let header = Header {
            path: path.as_bytes(),
            kind: DIR,
            mode: 0o755,
            ..Header::default()
        };
        self.push(&header, b"")
    }

    /// A regular file, mode 0644.
    pub fn file(&mut self, path: &str, data: &[u8]) -> &mut Tar {
        let header = Header {
            path: path.as_bytes(),
            ..Header::default()
        };
        self.push(&header, data)
    }

    /// A symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Tar {
        let header = Header {
            path: path.as_bytes(),
            kind: SYMLINK,
            mode: 0o777,
            link: target.as_bytes(),
            ..Header::default()
        };
        self.push(&header, b"")
    }

    /// A hard link to an earlier (or not) entry.
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Tar {
        let header = Header {
            path: path.as_bytes(),
            kind: HARDLINK,
            link: target.as_bytes(),
            ..Header::default()
        };
        self.push(&header, b"")
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tar {
        let data = pax_records(records);
        let header = Header {
            path: b"./PaxHeaders/entry",
            kind: PAX,
            ..Header::default()
        };
        self.push(&header, &data)
    }

    /// The archive with its end-of-archive marker (two zero blocks).
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.buf.clone();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    /// The archive as written so far, without end-of-archive marker.
    pub fn unfinished(&self) -> Vec<u8> {
        self.buf.clone()
    }

    fn pad(&mut self) {
        let rem = self.buf.len() % 512;
        if rem != 0 {
            self.buf.resize(self.buf.len() + 512 - rem, 0);
        }
    }
}

/// Encodes PAX records: `LEN key=value\n`, where LEN counts the whole record.
pub fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3; // ' ', '=', '\n'
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert!(
        text.len() == digits,
        "{value} does not fit a {digits}-digit field"
    );
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// One 512-byte ustar header block.
pub fn encode_header(h: &Header, data_len: u64) -> [u8; 512] {
    let mut b = [0u8; 512];
    assert!(h.path.len() <= 100 && h.link.len() <= 100);
    b[..h.path.len()].copy_from_slice(h.path);
    octal(&mut b[100..108], h.mode.into());
    octal(&mut b[108..116], h.uid.into());
    octal(&mut b[116..124], h.gid.into());
    match h.size_field {
        Some(raw) => b[124..124 + raw.len()].copy_from_slice(raw),
        None => octal(&mut b[124..136], h.size.unwrap_or(data_len)),
    }
    octal(&mut b[136..148], 1_700_000_000);
    b[156] = h.kind;
    b[157..157 + h.link.len()].copy_from_slice(h.link);
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    b[265..269].copy_from_slice(b"root");
    b[297..301].copy_from_slice(b"root");
    octal(&mut b[329..337], 0);
    octal(&mut b[337..345], 0);
    b[148..156].fill(b' ');
    let mut sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    if h.bad_checksum {
        sum += 1;
    }
    b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    b
}

/// An `ar` archive of the given members, as dpkg writes it.
pub fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        let header = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            1_700_000_000,
            0,
            0,
            "100644",
            data.len()
        );
        assert_eq!(header.len(), 60, "ar member name {name:?} is too long");
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A control file for package `name` 1.0, architecture `all`.
pub fn control(name: &str) -> String {
    format!(
        "Package: {name}\nVersion: 1.0\nArchitecture: all\n\
         Maintainer: canopy tests <tests@example.org>\n\
         Description: generated test package {name}\n"
    )
}

/// `control.tar.gz` holding `./control` with the given text.
pub fn control_tar_gz(control: &str) -> Vec<u8> {
    gzip(
        &Tar::new()
            .dir("./")
            .file("./control", control.as_bytes())
            .finish(),
    )
}

/// A .deb of the given control text and (uncompressed) data tar, as `data.tar.gz`.
pub fn deb(control: &str, data_tar: &[u8]) -> Vec<u8> {
    ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.gz", &control_tar_gz(control)),
        ("data.tar.gz", &gzip(data_tar)),
    ])
}

/// A .deb of package `name` whose data is `data_tar`.
pub fn deb_of(name: &str, data_tar: &[u8]) -> Vec<u8> {
    deb(&control(name), data_tar)
}

/// Bytes that do not compress: a fixed xorshift sequence.
pub fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A well-formed data tar: `./usr/share/NAME/README` and a 64 KiB data file.
pub fn good_tar(name: &str) -> Vec<u8> {
    Tar::new()
        .dir("./")
        .dir("./usr/")
        .dir("./usr/share/")
        .dir(&format!("./usr/share/{name}/"))
        .file(&format!("./usr/share/{name}/README"), b"hello\n")
        .file(&format!("./usr/share/{name}/data"), &noise(64 * 1024))
        .finish()
}

/// A well-formed .deb of package `name` (see [`good_tar`]).
pub fn good_deb(name: &str) -> Vec<u8> {
    deb_of(name, &good_tar(name))
}

/// A data tar whose single file entry is `path` (parents not listed).
pub fn tar_with_file(path: &str) -> Vec<u8> {
    Tar::new().dir("./").file(path, b"owned\n").finish()
}

/// A data tar with a file entry whose name comes from a PAX `path` record.
pub fn tar_with_pax_path(path: &[u8]) -> Vec<u8> {
    Tar::new()
        .dir("./")
        .pax(&[("path", path)])
        .file("./placeholder", b"x\n")
        .finish()
}

/// `./lib -> /etc`, then `./lib/passwd`.
pub fn tar_through_absolute_symlink() -> Vec<u8> {
    Tar::new()
        .dir("./")
        .symlink("./lib", "/etc")
        .file("./lib/passwd", b"root::0:0::/:/bin/sh\n")
        .finish()
}

/// `./real/` and `./alias -> real`, then `./alias/file`: beneath a symlink even though
/// the symlink stays inside the archive.
pub fn tar_through_relative_symlink() -> Vec<u8> {
    Tar::new()
        .dir("./")
        .dir("./real/")
        .symlink("./alias", "real")
        .file("./alias/file", b"x\n")
        .finish()
}

/// The same file twice, spelled `first` and `second`.
pub fn tar_duplicate(first: &str, second: &str) -> Vec<u8> {
    Tar::new()
        .dir("./")
        .dir("./etc/")
        .file(first, b"one\n")
        .file(second, b"two\n")
        .finish()
}

/// A tar cut `cut` bytes into its second member's header or data (the first member is
/// a header-only directory).
pub fn tar_truncated(cut: usize) -> Vec<u8> {
    let full = Tar::new().dir("./").file("./big", &noise(10_000)).finish();
    full[..512 + cut].to_vec()
}

/// A tar whose first header is cut short.
pub fn tar_truncated_in_first_header() -> Vec<u8> {
    good_tar("cut")[..300].to_vec()
}

/// A tar whose second header's checksum is off by one.
pub fn tar_bad_checksum() -> Vec<u8> {
    let bad = Header {
        path: b"./etc/passwd",
        bad_checksum: true,
        ..Header::default()
    };
    Tar::new()
        .dir("./")
        .push(&bad, b"root::0:0::/:/bin/sh\n")
        .finish()
}

/// A tar whose size field is not a number.
pub fn tar_bad_size_field() -> Vec<u8> {
    let bad = Header {
        path: b"./file",
        size_field: Some(b"zzzzzzzzzzz\0"),
        ..Header::default()
    };
    Tar::new().dir("./").push(&bad, b"").finish()
}

/// A metadata header (`kind`: PAX or GNU long name) whose size field claims 2 GiB; the
/// archive ends a block later.
pub fn tar_huge_metadata_header(kind: u8) -> Vec<u8> {
    let huge = Header {
        path: b"././@LongLink",
        kind,
        size: Some(2 << 30),
        ..Header::default()
    };
    let mut tar = Tar::new();
    tar.dir("./");
    tar.push(&huge, &[b'a'; 512]);
    tar.unfinished()
}

/// Hard link `./usr/link` to `target`, with `before` entries first and `after` entries
/// after it.
pub fn tar_hardlink(target: &str, before: fn(&mut Tar), after: fn(&mut Tar)) -> Vec<u8> {
    let mut tar = Tar::new();
    tar.dir("./").dir("./usr/");
    before(&mut tar);
    tar.hardlink("./usr/link", target);
    after(&mut tar);
    tar.finish()
}

/// A tar holding one `size`-byte file of zeros, compressed with zstd as it is written,
/// so a 64 MiB bomb costs a few kilobytes and no 64 MiB buffer.
pub fn zstd_zero_bomb(size: u64) -> Vec<u8> {
    let mut enc = zstd::Encoder::new(Vec::new(), 3).unwrap();
    let header = Header {
        path: b"./zeros",
        size: Some(size),
        ..Header::default()
    };
    enc.write_all(&encode_header(&header, 0)).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        enc.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    enc.write_all(&vec![0u8; (512 - size % 512) as usize % 512 + 1024])
        .unwrap();
    enc.finish().unwrap()
}

/// A .deb whose members are given as they are, after a standard `debian-binary`.
pub fn deb_members(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut all: Vec<(&str, &[u8])> = vec![("debian-binary", b"2.0\n")];
    all.extend_from_slice(members);
    ar(&all)
}

/// A .deb cut `cut` bytes before the end of its `data.tar.gz` member's content (any
/// padding byte after it goes too).
pub fn deb_cut_from_end(cut: usize) -> Vec<u8> {
    let full = good_deb("truncated");
    let at = full.windows(11).position(|w| w == b"data.tar.gz").unwrap();
    let size: usize = std::str::from_utf8(&full[at + 48..at + 58])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    full[..at + 60 + size - cut].to_vec()
}

/// A .deb cut in the middle of its `data.tar.gz` member header.
pub fn deb_cut_in_data_header() -> Vec<u8> {
    let full = good_deb("truncated");
    let at = full.windows(11).position(|w| w == b"data.tar.gz").unwrap();
    full[..at + 30].to_vec()
}

/// A PNG image's first bytes.
pub fn png() -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0".to_vec();
    out.extend_from_slice(&[0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 0, b'I', b'E', b'N', b'D']);
    out
}

/// A real ELF executable of this machine.
pub fn elf() -> Vec<u8> {
    std::fs::read("/bin/true").unwrap()
}

/// A data tar whose one file carries the xattr `name` = `value` in a PAX record.
pub fn tar_with_xattr(name: &[u8], value: &[u8]) -> Vec<u8> {
    let key = format!("SCHILY.xattr.{}", String::from_utf8(name.to_vec()).unwrap());
    Tar::new()
        .dir("./")
        .pax(&[(&key, value)])
        .file("./with-xattr", b"x\n")
        .finish()
}

/// A data tar with one file `levels` directories deep (`./a/a/…/f`), named by PAX.
pub fn tar_deep(levels: usize) -> Vec<u8> {
    let mut path = "./".to_string() + &"a/".repeat(levels);
    path.push('f');
    tar_with_pax_path(path.as_bytes())
}

/// A data tar with one file whose path, as `/…` from the root, is `len` bytes long:
/// 200-byte components under `./`.
pub fn tar_long_path(len: usize) -> Vec<u8> {
    tar_with_pax_path(format!(".{}", long_path(len)).as_bytes())
}

/// A path `/ccc…/ccc…/…` of exactly `len` bytes, in components of at most 200 bytes.
pub fn long_path(len: usize) -> String {
    let mut path = String::new();
    while path.len() < len {
        let part = (len - path.len() - 1).min(200);
        path.push('/');
        path.push_str(&"c".repeat(part.max(1)));
    }
    assert_eq!(path.len(), len);
    path
}

/// A data tar of `n` directories, then `n` symlinks: long runs of header-only entries,
/// as real trees of icons or locales have.
pub fn tar_many_small_entries(n: usize) -> Vec<u8> {
    let mut tar = Tar::new();
    tar.dir("./").dir("./d/").dir("./l/");
    for i in 0..n {
        tar.dir(&format!("./d/{i}/"));
    }
    for i in 0..n {
        tar.symlink(&format!("./l/{i}"), "../d/0");
    }
    tar.finish()
}
