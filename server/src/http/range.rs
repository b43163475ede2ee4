//! HTTP `Range` requests on objects, as RFC 9110 (§14) says: the satisfiable part of
//! what was asked is served, a suffix longer than the object is the whole object,
//! several ranges are answered as `multipart/byteranges`, and only a request with no
//! satisfiable range at all gets 416.
//!
//! A header that is malformed, names another unit, or asks for more pieces than
//! [`MAX_PIECES`] is ignored and the whole object served (200), as the RFC allows: a
//! client always gets bytes it can use, and many small ranges cannot make the server
//! do more work than one full answer.

use std::ops::Range;

/// Most distinct pieces one answer is cut into; asking for more gets the whole object.
pub(crate) const MAX_PIECES: usize = 32;

/// What to answer to a request for an object of a known length.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ranges {
    /// 200 with the whole object: no `Range`, or one to ignore.
    Whole,
    /// 206 with these pieces, sorted, non-empty, disjoint and not adjacent.
    Partial(Vec<Range<u64>>),
    /// 416: nothing asked for lies within the object.
    Unsatisfiable,
}

/// Reads a `Range` header value for an object of `len` bytes.
pub(crate) fn parse(header: &str, len: u64) -> Ranges {
    let Some((unit, specs)) = header.split_once('=') else {
        return Ranges::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || len == 0 {
        // An empty object has no byte to select: it is served whole.
        return Ranges::Whole;
    }
    let mut pieces = Vec::new();
    let mut any = false;
    for spec in specs.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        any = true;
        let Some((first, last)) = spec.split_once('-') else {
            return Ranges::Whole;
        };
        let (first, last) = (first.trim(), last.trim());
        let piece = if first.is_empty() {
            // bytes=-N: the last N bytes, or all of them if N is larger.
            match number(last) {
                Some(0) => None,
                Some(n) => Some(len.saturating_sub(n)..len),
                None => return Ranges::Whole,
            }
        } else {
            let Some(start) = number(first) else {
                return Ranges::Whole;
            };
            let end = if last.is_empty() {
                len
            } else {
                match number(last) {
                    Some(l) if l >= start => l.saturating_add(1).min(len),
                    _ => return Ranges::Whole,
                }
            };
            (start < len).then_some(start..end)
        };
        pieces.extend(piece);
        if pieces.len() > 4 * MAX_PIECES {
            return Ranges::Whole;
        }
    }
    if !any {
        return Ranges::Whole;
    }
    pieces.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(pieces.len());
    for p in pieces {
        match merged.last_mut() {
            Some(last) if p.start <= last.end => last.end = last.end.max(p.end),
            _ => merged.push(p),
        }
    }
    match merged.len() {
        0 => Ranges::Unsatisfiable,
        n if n > MAX_PIECES => Ranges::Whole,
        _ => Ranges::Partial(merged),
    }
}

/// A decimal number of digits only; too large ones saturate (they still compare right).
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

/// The `Content-Range` value of one piece.
pub(crate) fn content_range(piece: &Range<u64>, len: u64) -> String {
    format!("bytes {}-{}/{len}", piece.start, piece.end - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(h: &str, len: u64) -> Ranges {
        parse(h, len)
    }
    fn part(r: &[(u64, u64)]) -> Ranges {
        Ranges::Partial(r.iter().map(|&(a, b)| a..b).collect())
    }

    #[test]
    fn single_ranges_and_suffixes() {
        assert_eq!(p("bytes=0-9", 100), part(&[(0, 10)]));
        assert_eq!(p("bytes=90-", 100), part(&[(90, 100)]));
        assert_eq!(p("bytes=90-1000", 100), part(&[(90, 100)]));
        assert_eq!(p("bytes=-10", 100), part(&[(90, 100)]));
        // A suffix longer than the object is the whole object, not a 416.
        assert_eq!(p("bytes=-1000", 100), part(&[(0, 100)]));
        assert_eq!(p("BYTES = 5-5", 100), part(&[(5, 6)]));
        assert_eq!(
            p("bytes=99999999999999999999999-", 100),
            Ranges::Unsatisfiable
        );
        assert_eq!(p("bytes=0-99999999999999999999999", 100), part(&[(0, 100)]));
    }

    #[test]
    fn several_ranges_keep_the_satisfiable_ones() {
        assert_eq!(p("bytes=0-1, 10-19", 100), part(&[(0, 2), (10, 20)]));
        assert_eq!(p("bytes=500-600, 10-19", 100), part(&[(10, 20)]));
        assert_eq!(
            p("bytes=10-19,0-1,-5", 100),
            part(&[(0, 2), (10, 20), (95, 100)])
        );
        // Overlapping and adjacent pieces are merged.
        assert_eq!(p("bytes=0-10,5-20,21-30", 100), part(&[(0, 31)]));
        assert_eq!(p("bytes=0-0,,", 100), part(&[(0, 1)]));
        assert_eq!(p("bytes=200-300, 400-", 100), Ranges::Unsatisfiable);
        assert_eq!(p("bytes=-0", 100), Ranges::Unsatisfiable);
    }

    #[test]
    fn what_is_ignored_serves_the_whole_object() {
        for h in [
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=",
            "bytes",
            "bytes=1",
            "bytes=--1",
        ] {
            assert_eq!(p(h, 100), Ranges::Whole, "{h}");
        }
        assert_eq!(p("bytes=0-0", 0), Ranges::Whole);
        let many: Vec<String> = (0..40).map(|i| format!("{}-{}", i * 3, i * 3)).collect();
        assert_eq!(p(&format!("bytes={}", many.join(",")), 1000), Ranges::Whole);
        let lots = "0-0,".repeat(100_000);
        assert_eq!(p(&format!("bytes={lots}"), 1000), Ranges::Whole);
    }
}
