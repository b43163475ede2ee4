//! RPM packages written byte by byte: a lead, a signature header, a main header and a
//! cpio payload, each of which a case can spoil on purpose. Good ones import; the
//! hostile ones are the RPM lines of `hostile.rs`.

use crate::corpus::gzip;
use sha2::{Digest, Sha256};

/// Header data types.
const STRING: u32 = 6;
const INT16: u32 = 3;
const INT32: u32 = 4;
const STRING_ARRAY: u32 = 8;

/// One file of a generated package.
#[derive(Clone)]
pub struct File {
    /// Absolute path.
    pub path: &'static str,
    /// `stat` mode, with type bits.
    pub mode: u32,
    /// Content (a symlink's target for symlinks).
    pub content: Vec<u8>,
}

pub fn file(path: &'static str, content: &[u8]) -> File {
    File {
        path,
        mode: 0o100644,
        content: content.to_vec(),
    }
}

/// How a package is written; every field can be spoiled.
#[derive(Clone)]
pub struct Rpm {
    pub name: &'static str,
    pub files: Vec<File>,
    /// The payload, if not the cpio of `files` gzip-compressed.
    pub payload: Option<Vec<u8>>,
    /// Lead type: 0 binary, 1 source.
    pub lead_type: u16,
    /// Overrides of the main header intro's tag count and data size.
    pub intro: Option<(u32, u32)>,
    /// A wrong header SHA-256 in the signature header.
    pub bad_digest: bool,
    /// SHA-256 file digests (`FILEDIGESTS`, algorithm 8, as rpmbuild writes them) for
    /// regular files, the content of the file at this index spoiled in its digest.
    pub file_digests: Option<Option<usize>>,
    /// Stripped (`07070X`) records instead of newc ones.
    pub stripped: bool,
    /// The compressor the header declares.
    pub compressor: &'static str,
}

pub fn rpm(name: &'static str, files: Vec<File>) -> Rpm {
    Rpm {
        name,
        files,
        payload: None,
        lead_type: 0,
        intro: None,
        bad_digest: false,
        file_digests: None,
        stripped: false,
        compressor: "gzip",
    }
}

/// A header under construction: (tag, type, count, data, alignment).
struct Header(Vec<(u32, u32, u32, Vec<u8>, usize)>);

impl Header {
    fn string(&mut self, tag: u32, s: &str) {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.0.push((tag, STRING, 1, d, 1));
    }
    fn strings(&mut self, tag: u32, items: &[String]) {
        let mut d = Vec::new();
        for s in items {
            d.extend(s.as_bytes());
            d.push(0);
        }
        self.0.push((tag, STRING_ARRAY, items.len() as u32, d, 1));
    }
    fn int32(&mut self, tag: u32, items: &[u32]) {
        let d = items.iter().flat_map(|v| v.to_be_bytes()).collect();
        self.0.push((tag, INT32, items.len() as u32, d, 4));
    }
    fn int16(&mut self, tag: u32, items: &[u16]) {
        let d = items.iter().flat_map(|v| v.to_be_bytes()).collect();
        self.0.push((tag, INT16, items.len() as u32, d, 2));
    }
    fn encode(mut self, intro: Option<(u32, u32)>) -> Vec<u8> {
        self.0.sort_by_key(|e| e.0);
        let mut index = Vec::new();
        let mut store: Vec<u8> = Vec::new();
        for (tag, kind, count, data, align) in &self.0 {
            while !store.len().is_multiple_of(*align) {
                store.push(0);
            }
            for v in [*tag, *kind, store.len() as u32, *count] {
                index.extend(v.to_be_bytes());
            }
            store.extend(data);
        }
        let (tags, size) = intro.unwrap_or((self.0.len() as u32, store.len() as u32));
        let mut out = vec![0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0];
        out.extend(tags.to_be_bytes());
        out.extend(size.to_be_bytes());
        out.extend(index);
        out.extend(store);
        out
    }
}

fn cpio_record(out: &mut Vec<u8>, name: &[u8], ino: u32, mode: u32, nlink: u32, data: &[u8]) {
    out.extend(b"070701");
    for v in [ino, mode, 0, 0, nlink, 0, data.len() as u32, 0, 0, 0, 0] {
        out.extend(format!("{v:08x}").bytes());
    }
    out.extend(format!("{:08x}", name.len() + 1).bytes());
    out.extend(b"00000000");
    out.extend(name);
    out.push(0);
    pad(out);
    out.extend(data);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The cpio archive of `files`, with entry names as given (usually `./PATH`).
pub fn cpio(entries: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (name, mode, data)) in entries.iter().enumerate() {
        cpio_record(&mut out, name, i as u32 + 1, *mode, 1, data);
    }
    cpio_record(&mut out, b"TRAILER!!!", 0, 0, 1, b"");
    out
}

impl Rpm {
    fn default_cpio(&self) -> Vec<u8> {
        if self.stripped {
            let mut out = Vec::new();
            for (i, f) in self.files.iter().enumerate() {
                out.extend(format!("07070X{i:08x}").bytes());
                pad(&mut out);
                out.extend(&f.content);
                pad(&mut out);
            }
            cpio_record(&mut out, b"TRAILER!!!", 0, 0, 1, b"");
            return out;
        }
        let names: Vec<Vec<u8>> = self
            .files
            .iter()
            .map(|f| format!(".{}", f.path).into_bytes())
            .collect();
        let entries: Vec<(&[u8], u32, &[u8])> = self
            .files
            .iter()
            .zip(&names)
            .map(|(f, n)| (n.as_slice(), f.mode, f.content.as_slice()))
            .collect();
        cpio(&entries)
    }

    /// The package's bytes.
    pub fn build(&self) -> Vec<u8> {
        let archive = self.default_cpio();
        let payload = self
            .payload
            .clone()
            .unwrap_or_else(|| match self.compressor {
                "zstd" => zstd::encode_all(archive.as_slice(), 3).unwrap(),
                _ => gzip(&archive),
            });
        let mut h = Header(Vec::new());
        h.string(1000, self.name);
        h.string(1001, "1.0");
        h.string(1002, "1");
        h.string(1022, "noarch");
        h.string(1124, "cpio");
        h.string(1125, self.compressor);
        let mut dirs: Vec<String> = Vec::new();
        let mut dir_index = Vec::new();
        let mut bases = Vec::new();
        for f in &self.files {
            let (dir, base) = f.path.rsplit_once('/').unwrap();
            let dir = format!("{dir}/");
            let i = dirs.iter().position(|d| *d == dir).unwrap_or_else(|| {
                dirs.push(dir);
                dirs.len() - 1
            });
            dir_index.push(i as u32);
            bases.push(base.to_string());
        }
        let n = self.files.len();
        let is_link = |f: &File| f.mode & 0o170000 == 0o120000;
        h.int32(
            1028,
            &self
                .files
                .iter()
                .map(|f| f.content.len() as u32)
                .collect::<Vec<_>>(),
        );
        h.int16(
            1030,
            &self.files.iter().map(|f| f.mode as u16).collect::<Vec<_>>(),
        );
        h.int16(1033, &vec![0; n]);
        h.int32(1034, &vec![0; n]);
        match self.file_digests {
            None => h.strings(1035, &vec![String::new(); n]),
            Some(spoiled) => {
                let digests: Vec<String> = self
                    .files
                    .iter()
                    .enumerate()
                    .map(|(i, f)| match f.mode & 0o170000 == 0o100000 {
                        true if spoiled == Some(i) => {
                            hex::encode(Sha256::digest([&f.content[..], b"!"].concat()))
                        }
                        true => hex::encode(Sha256::digest(&f.content)),
                        false => String::new(),
                    })
                    .collect();
                h.strings(1035, &digests);
                h.int32(5011, &[8]);
            }
        }
        h.strings(
            1036,
            &self
                .files
                .iter()
                .map(|f| match is_link(f) {
                    true => String::from_utf8(f.content.clone()).unwrap(),
                    false => String::new(),
                })
                .collect::<Vec<_>>(),
        );
        h.int32(1037, &vec![0; n]);
        h.strings(1039, &vec!["root".to_string(); n]);
        h.strings(1040, &vec!["root".to_string(); n]);
        h.int32(1095, &vec![1; n]);
        h.int32(1096, &(1..=n as u32).collect::<Vec<_>>());
        h.int32(1116, &dir_index);
        h.strings(1117, &bases);
        h.strings(1118, &dirs);
        let main = h.encode(self.intro);
        let mut sig = Header(Vec::new());
        sig.int32(1000, &[(main.len() + payload.len()) as u32]);
        let digest = match self.bad_digest {
            true => "0".repeat(64),
            false => hex::encode(Sha256::digest(&main)),
        };
        sig.string(273, &digest);
        let sig = sig.encode(None);
        let mut out = vec![0xed, 0xab, 0xee, 0xdb, 3, 0];
        out.extend(self.lead_type.to_be_bytes());
        out.resize(96, 0);
        out.extend(&sig);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        out.extend(main);
        out.extend(payload);
        out
    }
}

/// A good package: a file, a directory, a symlink.
pub fn good(name: &'static str) -> Rpm {
    rpm(
        name,
        vec![
            File {
                path: "/usr/share/gen",
                mode: 0o040755,
                content: Vec::new(),
            },
            file("/usr/share/gen/data", b"generated\n"),
            File {
                path: "/usr/share/gen/link",
                mode: 0o120777,
                content: b"data".to_vec(),
            },
        ],
    )
}

/// `good`, with a payload made from the given cpio entries.
pub fn with_cpio(name: &'static str, entries: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
    let mut r = good(name);
    r.payload = Some(gzip(&cpio(entries)));
    r.build()
}

/// The cpio entries of `good`, for spoiling.
pub const GOOD_ENTRIES: [(&[u8], u32, &[u8]); 3] = [
    (b"./usr/share/gen", 0o040755, b""),
    (b"./usr/share/gen/data", 0o100644, b"generated\n"),
    (b"./usr/share/gen/link", 0o120777, b"data"),
];
