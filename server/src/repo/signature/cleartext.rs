//! InRelease files: the cleartext signature framework, read in one bounded pass.

use super::SignatureError;
use super::keyring::MAX_SIGNATURES;
use pgp::composed::{Deserializable, DetachedSignature};
use pgp::packet::Signature;

/// Without a keyring (the user passed --no-verify-signature): the text of an InRelease
/// file, signature not checked. Refuses input that is not a cleartext-signed message.
pub fn cleartext_unverified(inrelease: &[u8]) -> Result<String, SignatureError> {
    Ok(release_text(&Cleartext::parse(inrelease)?.signed))
}

const BEGIN_MESSAGE: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE: &str = "-----BEGIN PGP SIGNATURE-----";
pub(super) const END_SIGNATURE: &str = "-----END PGP SIGNATURE-----";

/// An InRelease file taken apart (the cleartext signature framework of RFC 9580, section
/// 7). Read here in one pass: the pgp crate's own reader rescans the text read so far at
/// every line, which makes a multi-megabyte file from a hostile mirror take minutes.
pub(super) struct Cleartext {
    /// What the signatures are over: the text dash-unescaped, blanks at line ends
    /// removed, lines joined by CRLF, no line break after the last.
    pub(super) signed: String,
    pub(super) signatures: Vec<Signature>,
}

impl Cleartext {
    /// Parses a cleartext-signed message, refusing text around it.
    pub(super) fn parse(inrelease: &[u8]) -> Result<Cleartext, SignatureError> {
        let malformed = |reason: String| SignatureError::Malformed {
            what: "InRelease",
            reason,
        };
        let text = std::str::from_utf8(inrelease)
            .map_err(|e| malformed(format!("not UTF-8 text ({e})")))?;
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let is = |line: &str, marker: &str| line.trim_end() == marker;

        // Blank lines around the message are no text; anything else is refused.
        if !lines
            .by_ref()
            .find(|l| !l.trim().is_empty())
            .is_some_and(|l| is(l, BEGIN_MESSAGE))
        {
            let begins_later = text
                .split('\n')
                .any(|l| is(l.trim_end_matches('\r'), BEGIN_MESSAGE));
            return Err(match begins_later {
                true => SignatureError::OutsideSignedPart {
                    place: "before the BEGIN line",
                },
                false => malformed(format!(
                    "not a cleartext-signed message (no {BEGIN_MESSAGE} line)"
                )),
            });
        }
        // Armor headers: only "Hash:", which names the hashes the signatures also name.
        loop {
            match lines.next() {
                None => return Err(malformed("it ends in its armor headers".into())),
                Some(line) if line.trim_end().is_empty() => break,
                Some(line) if line.starts_with("Hash:") => {}
                Some(line) => return Err(malformed(format!("unexpected armor header {line:?}"))),
            }
        }
        // The text: lines starting with a dash are escaped by "- ", so the first that is
        // not must begin the signature.
        let mut signed = Vec::new();
        let armor_start = loop {
            let line = lines
                .next()
                .ok_or_else(|| malformed(format!("no {BEGIN_SIGNATURE} line")))?;
            match line.strip_prefix("- ") {
                Some(unescaped) => signed.push(unescaped),
                None if line.starts_with('-') => break line,
                None => signed.push(line),
            }
        };
        if !is(armor_start, BEGIN_SIGNATURE) {
            return Err(malformed(format!(
                "line {armor_start:?} is neither dash-escaped text nor {BEGIN_SIGNATURE}"
            )));
        }
        // OpenPGP would read a lone CR as a line break, a Release parser as text: refuse.
        if signed.iter().any(|l| l.contains('\r')) {
            return Err(malformed("a carriage return inside a line".into()));
        }
        let signed: Vec<&str> = signed
            .iter()
            .map(|l| l.trim_end_matches([' ', '\t']))
            .collect();

        let mut armor = vec![BEGIN_SIGNATURE];
        loop {
            let line = lines
                .next()
                .ok_or_else(|| malformed(format!("no {END_SIGNATURE} line")))?;
            armor.push(line);
            if is(line, END_SIGNATURE) {
                break;
            }
        }
        if lines.any(|l| !l.trim().is_empty()) {
            return Err(SignatureError::OutsideSignedPart {
                place: "after the signature block",
            });
        }
        Ok(Cleartext {
            signed: signed.join("\r\n"),
            signatures: parse_signatures(armor.join("\n").as_bytes(), "InRelease signature")?,
        })
    }
}

/// The signatures of an armored or binary signature block; at most one more than
/// [`MAX_SIGNATURES`] are read, enough to refuse a flood.
pub(super) fn parse_signatures(
    bytes: &[u8],
    what: &'static str,
) -> Result<Vec<Signature>, SignatureError> {
    let malformed = |e: pgp::errors::Error| SignatureError::Malformed {
        what,
        reason: e.to_string(),
    };
    let (signatures, _) = DetachedSignature::from_reader_many(bytes).map_err(malformed)?;
    signatures
        .take(MAX_SIGNATURES + 1)
        .map(|s| s.map(|s| s.signature).map_err(malformed))
        .collect()
}

/// The signed text as the Release file it was made from: OpenPGP hashes it with CRLF line
/// ends and without the last line's end, a Release file has LF after every line.
pub(super) fn release_text(signed: &str) -> String {
    let mut text = signed.replace("\r\n", "\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text
}
