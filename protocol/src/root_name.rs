//! Root names: the `NAME` in `refs/roots/NAME`, `/v1/roots/NAME` and NFS `/NAME`.

use std::fmt;
use std::str::FromStr;

/// A validated root name: 1 to 128 characters from `A-Za-z0-9._+-`, starting with a
/// letter or digit, so it is safe as a file name, a URL path segment and an export path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootName(String);

/// Why a string is not a root name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid root name {0:?}: use 1 to 128 characters from A-Z a-z 0-9 . _ + -, starting with a letter or digit"
)]
pub struct RootNameError(pub String);

impl FromStr for RootName {
    type Err = RootNameError;

    fn from_str(s: &str) -> Result<Self, RootNameError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
        if ok {
            Ok(RootName(s.to_string()))
        } else {
            Err(RootNameError(s.to_string()))
        }
    }
}

impl RootName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RootName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        for good in ["web", "db-2", "usr_base.v1", "a+b", "9"] {
            assert!(good.parse::<RootName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "a@c",
            "..",
            "é",
            &"x".repeat(129),
        ] {
            assert!(bad.parse::<RootName>().is_err(), "{bad}");
        }
    }
}
