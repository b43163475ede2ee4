//! Compression formats of archives and archive members.

use super::{Class, ImportError};
use std::io::{BufRead, BufReader, Read};

/// Most memory an xz stream may ask for (xz -9 needs 65 MiB to decode).
const XZ_MEMLIMIT: u64 = 256 << 20;

/// A compression format, told by its magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
    /// Read only where the container declares it (RPM payloads of older distributions).
    Bzip2,
}

impl Compression {
    /// The format a `.deb` member's suffix declares (`data.tar.xz` → Xz).
    pub(crate) fn from_suffix(suffix: &str) -> Option<Self> {
        match suffix {
            "" => Some(Compression::None),
            ".gz" => Some(Compression::Gzip),
            ".xz" => Some(Compression::Xz),
            ".zst" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The format whose magic starts `head`; `None` means "looks uncompressed".
    fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else {
            Compression::None
        }
    }

    fn label(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
        }
    }
}

/// Magic numbers of formats canopy cannot read, to name them in the error.
fn unsupported(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
        Some("lz4")
    } else if head.starts_with(&[0x5d, 0x00, 0x00]) {
        Some("lzma")
    } else {
        None
    }
}

/// Returns a decompressing reader. With `declared`, the content must be in that format
/// (a `.deb` member and an RPM header say what it is); without, the format is detected.
/// bzip2 is read only when declared: `.deb` and tar imports refuse it, as dpkg-deb
/// no longer writes it.
pub(crate) fn decoder<'a, R: Read + 'a>(
    reader: R,
    declared: Option<Compression>,
    what: &str,
) -> Result<Box<dyn Read + 'a>, ImportError> {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let head = reader
        .fill_buf()
        .map_err(|e| ImportError::from_read(e, what, false))?
        .to_vec();
    if let Some(name) = unsupported(&head) {
        return Err(ImportError::refused(
            Class::BadCompression,
            format!("{what} is {name}-compressed, which canopy does not read"),
        ));
    }
    let found = Compression::sniff(&head);
    if found == Compression::Bzip2 && declared != Some(Compression::Bzip2) {
        return Err(ImportError::refused(
            Class::BadCompression,
            format!("{what} is bzip2-compressed, which canopy does not read"),
        ));
    }
    if let Some(declared) = declared
        && declared != found
    {
        return Err(ImportError::refused(
            Class::BadCompression,
            format!(
                "{what} should be {} but its content is {}",
                declared.label(),
                found.label()
            ),
        ));
    }
    let inner: Box<dyn Read + 'a> = match found {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Xz => {
            // Bounded: a hostile header could otherwise ask for a 1.5 GiB dictionary.
            let stream = liblzma::stream::Stream::new_stream_decoder(
                XZ_MEMLIMIT,
                liblzma::stream::CONCATENATED,
            )
            .map_err(|e| ImportError::refused(Class::BadCompression, format!("{what}: {e}")))?;
            Box::new(liblzma::bufread::XzDecoder::new_stream(reader, stream))
        }
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(|e| ImportError::refused(Class::BadCompression, format!("{what}: {e}")))?,
        ),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(reader)),
    };
    Ok(inner)
}
