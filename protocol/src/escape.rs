//! Names as they may be shown to a person: file names are any bytes but `/` and NUL,
//! so a name printed raw can forge a line of output (`a\nD /usr/bin/sudo`), move the
//! cursor or recolour a terminal. [`Escaped`] shows such bytes as escapes instead.
//!
//! Printable UTF-8 stays as it is; `\` becomes `\\`, newline, tab and carriage return
//! become `\n`, `\t`, `\r`; other control characters and bytes that are not UTF-8
//! become `\xNN`; Unicode format characters that reorder or hide text (bidirectional
//! overrides and isolates, zero-width characters) become `\u{NNNN}`. The result is
//! unambiguous: two different names never show the same way. Machine-readable output
//! (`--json`) carries the exact name instead.
//!
//! ```
//! use canopy_protocol::Escaped;
//! assert_eq!(Escaped(b"a\nD /usr/bin/sudo").to_string(), "a\\nD /usr/bin/sudo");
//! assert_eq!(Escaped(b"\x1b[31mred").to_string(), "\\x1b[31mred");
//! assert_eq!(Escaped("été".as_bytes()).to_string(), "été");
//! assert_eq!(Escaped(b"\xff").to_string(), "\\xff");
//! ```

use std::fmt::{self, Write};

/// Bytes shown with every control character, backslash, invisible or reordering
/// character and non-UTF-8 byte escaped (see the module documentation).
#[derive(Clone, Copy)]
pub struct Escaped<'a>(pub &'a [u8]);

/// Characters that change how surrounding text is shown without being visible:
/// bidirectional embeddings, overrides and isolates, zero-width characters, the
/// byte-order mark.
fn invisible(c: char) -> bool {
    matches!(c,
        '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\n' => f.write_str("\\n")?,
                    '\t' => f.write_str("\\t")?,
                    '\r' => f.write_str("\\r")?,
                    c if (c as u32) < 0x20 || c == '\u{7f}' => write!(f, "\\x{:02x}", c as u32)?,
                    // C1 controls (U+0080..U+009F) are read as escape sequences by some
                    // terminals.
                    c if c.is_control() || invisible(c) => write!(f, "\\u{{{:04x}}}", c as u32)?,
                    c => f.write_char(c)?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;
    use proptest::prelude::*;

    fn shown(b: &[u8]) -> String {
        Escaped(b).to_string()
    }

    #[test]
    fn escapes_what_could_forge_or_hide_output() {
        assert_eq!(shown(b"plain name.txt"), "plain name.txt");
        assert_eq!(shown(b"a\\b"), "a\\\\b");
        assert_eq!(shown(b"x\r\ty\x7f\x00"), "x\\r\\ty\\x7f\\x00");
        assert_eq!(shown("\u{202e}txt.exe".as_bytes()), "\\u{202e}txt.exe");
        assert_eq!(shown("\u{85}".as_bytes()), "\\u{0085}");
        assert_eq!(shown(b"caf\xc3"), "caf\\xc3");
        assert_eq!(shown("日本".as_bytes()), "日本");
    }

    proptest! {
        #[test]
        fn output_is_printable_and_unambiguous(a in proptest::collection::vec(any::<u8>(), 0..40),
                                               b in proptest::collection::vec(any::<u8>(), 0..40)) {
            let (sa, sb) = (shown(&a), shown(&b));
            prop_assert!(!sa.chars().any(|c| c.is_control()));
            prop_assert_eq!(a == b, sa == sb);
        }
    }
}
