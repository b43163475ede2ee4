//! RPM's version ordering: `[EPOCH:]VERSION[-RELEASE]`, compared as rpm does
//! (`rpmvercmp` for version and release, a missing epoch counting as 0).
//!
//! `rpmvercmp` splits a string into runs of digits and runs of letters, skipping every
//! other character. Digit runs compare as numbers and beat letter runs; letter runs
//! compare as bytes. `~` sorts before anything, even the end (`1.0~rc1 < 1.0`); `^`
//! sorts after the end but before any further run (`1.0 < 1.0^git1 < 1.0.1`).

use std::cmp::Ordering;
use std::fmt;

/// Compares two version (or release) strings as `rpmvercmp` does.
pub fn vercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (mut one, mut two) = (a.as_bytes(), b.as_bytes());
    let separator = |c: &u8| !c.is_ascii_alphanumeric() && *c != b'~' && *c != b'^';
    loop {
        one = &one[one.iter().take_while(|c| separator(c)).count()..];
        two = &two[two.iter().take_while(|c| separator(c)).count()..];
        match (one.first(), two.first()) {
            (Some(b'~'), Some(b'~')) => {
                one = &one[1..];
                two = &two[1..];
                continue;
            }
            (Some(b'~'), _) => return Ordering::Less,
            (_, Some(b'~')) => return Ordering::Greater,
            _ => {}
        }
        match (one.first(), two.first()) {
            (None, Some(b'^')) => return Ordering::Less,
            (Some(b'^'), None) => return Ordering::Greater,
            (Some(b'^'), Some(b'^')) => {
                one = &one[1..];
                two = &two[1..];
                continue;
            }
            (Some(b'^'), Some(_)) => return Ordering::Less,
            (Some(_), Some(b'^')) => return Ordering::Greater,
            _ => {}
        }
        let (Some(first), Some(_)) = (one.first(), two.first()) else {
            break;
        };
        let numeric = first.is_ascii_digit();
        let run = |s: &[u8]| {
            s.iter()
                .take_while(|c| match numeric {
                    true => c.is_ascii_digit(),
                    false => c.is_ascii_alphabetic(),
                })
                .count()
        };
        let (n1, n2) = (run(one), run(two));
        if n2 == 0 {
            // Different kinds of run: a number is newer than letters.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let (mut s1, mut s2) = (&one[..n1], &two[..n2]);
        one = &one[n1..];
        two = &two[n2..];
        let order = if numeric {
            s1 = &s1[s1.iter().take_while(|&&c| c == b'0').count()..];
            s2 = &s2[s2.iter().take_while(|&&c| c == b'0').count()..];
            s1.len().cmp(&s2.len()).then_with(|| s1.cmp(s2))
        } else {
            s1.cmp(s2)
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    match (one.is_empty(), two.is_empty()) {
        (true, true) => Ordering::Equal,
        (false, _) => Ordering::Greater,
        (_, false) => Ordering::Less,
    }
}

/// An epoch, version and release.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Evr {
    /// The epoch; an absent one is 0.
    pub epoch: u32,
    /// The version.
    pub version: String,
    /// The release; a requirement may leave it out (`foo >= 1.2`).
    pub release: Option<String>,
}

impl Evr {
    /// Parses `[EPOCH:]VERSION[-RELEASE]` (the release after the last `-`).
    pub fn parse(s: &str) -> Evr {
        let (epoch, rest) = match s.split_once(':') {
            Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
                (e.parse().unwrap_or(u32::MAX), rest)
            }
            _ => (0, s),
        };
        let (version, release) = match rest.rsplit_once('-') {
            Some((v, r)) => (v.to_string(), Some(r.to_string())),
            None => (rest.to_string(), None),
        };
        Evr {
            epoch,
            version,
            release,
        }
    }

    /// Orders two EVRs as rpm orders a dependency against a package: epochs, then
    /// versions, then releases only when both have one.
    pub fn compare(&self, other: &Evr) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| vercmp(&self.version, &other.version))
            .then_with(|| match (&self.release, &other.release) {
                (Some(a), Some(b)) => vercmp(a, b),
                _ => Ordering::Equal,
            })
    }
}

impl fmt::Display for Evr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.epoch != 0 {
            write!(f, "{}:", self.epoch)?;
        }
        f.write_str(&self.version)?;
        if let Some(r) = &self.release {
            write!(f, "-{r}")?;
        }
        Ok(())
    }
}

/// Orders two `[EPOCH:]VERSION-RELEASE` strings (as package records hold them).
pub fn compare(a: &str, b: &str) -> Ordering {
    Evr::parse(a).compare(&Evr::parse(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn orders_as_rpmvercmp() {
        // Cases from rpm's own test suite (rpmvercmp.at).
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0.1a", Less),
            ("5.5p1", "5.5p2", Less),
            ("5.5p10", "5.5p1", Greater),
            ("10xyz", "10.1xyz", Less),
            ("xyz10", "xyz10.1", Less),
            ("xyz.4", "8", Less),
            ("xyz.4", "2", Less),
            ("5.5p2", "5.6p1", Less),
            ("5.6p1", "6.5p1", Less),
            ("6.0.rc1", "6.0", Greater),
            ("10b2", "10a1", Greater),
            ("1.0aa", "1.0a", Greater),
            ("10.0001", "10.1", Equal),
            ("10.0001", "10.0039", Less),
            ("4.999.9", "5.0", Less),
            ("20101121", "20101122", Less),
            ("2_0", "2_0", Equal),
            ("2.0", "2_0", Equal),
            ("a", "a", Equal),
            ("a+", "a_", Equal),
            ("+", "_", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~rc1~git123", "1.0~rc1", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.01", Less),
            ("1.0^20160101", "1.0.1", Less),
            ("1.0^20160101^git1", "1.0^20160101", Greater),
            ("1.0~rc1^git1", "1.0~rc1", Greater),
            ("1.0^git1~pre", "1.0^git1", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(vercmp(a, b), want, "{a} vs {b}");
            assert_eq!(vercmp(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn epochs_and_releases() {
        assert_eq!(compare("1:1.0-1", "2.0-1"), Greater);
        assert_eq!(compare("0:1.0-1", "1.0-1"), Equal);
        assert_eq!(compare("1.0-2", "1.0-10"), Less);
        // A requirement without a release matches every release.
        assert_eq!(Evr::parse("1.0").compare(&Evr::parse("1.0-7")), Equal);
        assert_eq!(Evr::parse("2:1.0-1.fc41").to_string(), "2:1.0-1.fc41");
    }
}

/// `vercmp` against rpm's own, on random strings: this needs the `rpm` command
/// (Debian package `rpm`, which `scripts/test.sh` installs).
#[cfg(test)]
mod against_rpm {
    use super::vercmp;
    use std::process::Command;

    /// A small deterministic generator: the same strings on every run.
    fn strings(count: usize) -> Vec<String> {
        const ALPHABET: &[u8] = b"0123456789aAbz.~^_+";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..count)
            .map(|_| {
                let len = 1 + (next() % 8) as usize;
                (0..len)
                    .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize] as char)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn agrees_with_rpm_on_random_versions() {
        let s = strings(4000);
        let pairs: Vec<(&String, &String)> = s.chunks(2).map(|p| (&p[0], &p[1])).collect();
        let mut lua = String::from("%{lua:");
        for (a, b) in &pairs {
            lua.push_str(&format!("print(rpm.vercmp([[{a}]], [[{b}]]), '\\n') "));
        }
        lua.push('}');
        let out = Command::new("rpm")
            .args(["--eval", &lua])
            .output()
            .expect("running rpm (install Debian's rpm package: bash scripts/test.sh does)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let answers: Vec<i32> = String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(|w| w.parse().unwrap())
            .collect();
        assert_eq!(answers.len(), pairs.len());
        let mut wrong = Vec::new();
        for ((a, b), rpm) in pairs.iter().zip(answers) {
            let want = rpm.cmp(&0);
            if vercmp(a, b) != want {
                wrong.push(format!("{a:?} vs {b:?}: rpm says {want:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
