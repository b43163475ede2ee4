//! Where a bucket is and how to reach it: `s3://BUCKET/PREFIX`, the endpoint and region
//! (kept in the store's local config), and credentials, which are never kept there nor
//! printed: from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (`AWS_SESSION_TOKEN`), else
//! from the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else
//! `~/.aws/credentials`; profile `AWS_PROFILE`, else `default`), which must not be
//! readable by group or others.

use crate::store::StoreError;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A bucket and a key prefix inside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The prefix, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

/// Why an `s3://` URL is not usable.
#[derive(Debug, thiserror::Error)]
#[error("{url:?} is not a usable S3 location: {reason} (expected s3://BUCKET[/PREFIX])")]
pub struct S3UrlError {
    url: String,
    reason: &'static str,
}

impl FromStr for S3Url {
    type Err = S3UrlError;

    fn from_str(url: &str) -> Result<Self, S3UrlError> {
        let bad = |reason| S3UrlError {
            url: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's rules: 3 to 63 characters, lowercase letters, digits, dots and hyphens,
        // starting and ending with a letter or digit.
        let edge_ok =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !(3..=63).contains(&bucket.len())
            || !bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            || !edge_ok(bucket.chars().next())
            || !edge_ok(bucket.chars().last())
        {
            return Err(bad(
                "bucket names are 3 to 63 lowercase letters, digits, dots and hyphens",
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|c| c == "." || c == "..")
            || prefix.contains("//")
            || prefix
                .chars()
                .any(|c| c.is_control() || c == '\\' || c == '*' || c == '?')
        {
            return Err(bad("the prefix must be plain /-separated names"));
        }
        Ok(S3Url {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// How to reach a bucket: what the store's local config records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket and prefix.
    pub url: S3Url,
    /// The S3 endpoint (`http://…` is allowed: private networks, tests); `None` for AWS.
    pub endpoint: Option<String>,
    /// The region; `us-east-1` unless told.
    pub region: String,
}

impl S3Config {
    /// The configuration for `url` from the environment (`AWS_ENDPOINT_URL`,
    /// `AWS_REGION` or `AWS_DEFAULT_REGION`), as `canopy init --backend` records it.
    pub fn from_env(url: S3Url) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        S3Config {
            url,
            endpoint: var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")),
            region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
        }
    }

    /// This configuration with what the environment says instead (`AWS_ENDPOINT_URL`,
    /// `AWS_REGION`), as the AWS tools let the environment override their config files.
    pub fn overridden_by_env(mut self) -> Self {
        let env = S3Config::from_env(self.url.clone());
        if env.endpoint.is_some() {
            self.endpoint = env.endpoint;
        }
        if std::env::var_os("AWS_REGION").is_some()
            || std::env::var_os("AWS_DEFAULT_REGION").is_some()
        {
            self.region = env.region;
        }
        self
    }

    /// Where the objects are, for messages: the URL and, if not AWS, the endpoint.
    pub fn describe(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("{} at {e}", self.url),
            None => self.url.to_string(),
        }
    }
}

/// An access key; `Debug` shows only the key id.
#[derive(Clone)]
pub(super) struct Credentials {
    pub key_id: String,
    pub secret: String,
    pub token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, secret hidden)", self.key_id)
    }
}

fn no_credentials(detail: String) -> StoreError {
    StoreError::Backend {
        what: "finding S3 credentials".into(),
        reason: format!(
            "{detail}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or write them to \
             ~/.aws/credentials (mode 0600) as aws_access_key_id / aws_secret_access_key"
        ),
    }
}

impl Credentials {
    /// From the environment, else from the shared credentials file.
    pub fn find() -> Result<Credentials, StoreError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let (Some(key_id), Some(secret)) =
            (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
        {
            return Ok(Credentials {
                key_id,
                secret,
                token: var("AWS_SESSION_TOKEN"),
            });
        }
        let path = match var("AWS_SHARED_CREDENTIALS_FILE") {
            Some(p) => PathBuf::from(p),
            None => match var("HOME") {
                Some(home) => Path::new(&home).join(".aws/credentials"),
                None => return Err(no_credentials("no AWS_ACCESS_KEY_ID and no HOME".into())),
            },
        };
        let profile = var("AWS_PROFILE").unwrap_or_else(|| "default".into());
        Self::from_file(&path, &profile)
    }

    /// From an INI file of profiles, refusing one that group or others can read.
    fn from_file(path: &Path, profile: &str) -> Result<Credentials, StoreError> {
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(no_credentials(format!(
                    "no AWS_ACCESS_KEY_ID in the environment and no {}",
                    path.display()
                )));
            }
            Err(e) => {
                return Err(StoreError::Io {
                    what: format!("reading {}", path.display()),
                    source: e,
                });
            }
        };
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(no_credentials(format!(
                "{} is readable by group or others (mode {:o}): `chmod 600` it first",
                path.display(),
                meta.permissions().mode() & 0o777
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| StoreError::Io {
            what: format!("reading {}", path.display()),
            source: e,
        })?;
        let (mut key_id, mut secret, mut token) = (None, None, None);
        let mut in_profile = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                in_profile = name.trim() == profile;
                continue;
            }
            if !in_profile {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim().to_string();
                match k.trim() {
                    "aws_access_key_id" => key_id = Some(v),
                    "aws_secret_access_key" => secret = Some(v),
                    "aws_session_token" => token = Some(v),
                    _ => {}
                }
            }
        }
        match (key_id, secret) {
            (Some(key_id), Some(secret)) => Ok(Credentials {
                key_id,
                secret,
                token,
            }),
            _ => Err(no_credentials(format!(
                "{} has no aws_access_key_id and aws_secret_access_key in profile [{profile}]",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_urls_by_s3_rules() {
        let u: S3Url = "s3://canopy/site1/".parse().unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("canopy", "site1"));
        assert_eq!(u.to_string(), "s3://canopy/site1");
        let bare: S3Url = "s3://my-bucket.1".parse().unwrap();
        assert_eq!(bare.prefix, "");
        for bad in [
            "http://x/y",
            "s3://ab",
            "s3://Upper",
            "s3://-dash",
            "s3://ok/../x",
            "s3://ok/a//b",
        ] {
            assert!(bad.parse::<S3Url>().is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_files_must_be_private_and_name_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[default]\naws_access_key_id = AK\naws_secret_access_key = SK\n[other]\naws_access_key_id=B\naws_secret_access_key=s3cr3t\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Credentials::from_file(&path, "default")
            .unwrap_err()
            .to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(!err.contains("SK"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Credentials::from_file(&path, "other").unwrap();
        assert_eq!((c.key_id.as_str(), c.secret.as_str()), ("B", "s3cr3t"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(Credentials::from_file(&path, "missing").is_err());
    }
}
