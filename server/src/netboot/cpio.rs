//! The newc ("new ASCII") cpio format, as Linux unpacks an initramfs: only what a small
//! archive of canopy's own files needs (directories and regular files owned by root,
//! time 0), so the same files always give the same bytes.

/// One archive member.
pub enum Member<'a> {
    /// A directory, mode 0755.
    Dir(&'a str),
    /// A regular file, mode 0644, with its content.
    File(&'a str, &'a [u8]),
}

/// The archive of `members`, in order, ending with the trailer.
pub fn archive(members: &[Member<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ino, member) in members.iter().enumerate() {
        let (name, mode, data): (&str, u32, &[u8]) = match member {
            Member::Dir(name) => (name, 0o040755, &[]),
            Member::File(name, data) => (name, 0o100644, data),
        };
        entry(&mut out, ino as u32 + 1, name, mode, data);
    }
    entry(&mut out, 0, "TRAILER!!!", 0, &[]);
    out
}

fn entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let nlink = if mode & 0o040000 != 0 { 2 } else { 1 };
    // magic, then ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    // rdevmajor, rdevminor, namesize (with its NUL), check: 8 hex digits each.
    out.extend_from_slice(b"070701");
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad(out);
    out.extend_from_slice(data);
    pad(out);
}

/// Header plus name, and data, each end on a 4-byte boundary.
fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_lists_what_was_archived() {
        let bytes = archive(&[Member::Dir("d"), Member::File("d/f", b"hello\n")]);
        assert_eq!(bytes.len() % 4, 0);
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("cpio")
            .args(["-i", "-d", "--quiet"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("cpio runs");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read(dir.path().join("d/f")).unwrap(), b"hello\n");
    }
}
