//! The store's local `config`: its format line, then, for a store whose objects and
//! refs live elsewhere, where they are. Written last by `init`, so a directory without
//! it is an interrupted `init`, never a half store.
//!
//! ```text
//! canopy-store 1                  a local store: nothing else
//!
//! canopy-store 1                  a store in a bucket
//! backend s3://canopy/site1
//! endpoint http://s3.internal:8333
//! region us-east-1
//! ```
//!
//! Credentials are never written here (see [`super::s3::config`]).

use super::StoreError;
use super::error::FORMAT;
use super::s3::config::{S3Config, S3Url};
use std::path::Path;

/// Where a store keeps its objects and refs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// In the store's directory.
    Local,
    /// In a bucket.
    S3(S3Config),
}

impl Backend {
    /// The config file's text.
    pub(crate) fn render(&self) -> String {
        match self {
            Backend::Local => FORMAT.to_string(),
            Backend::S3(c) => {
                let mut text = format!("{FORMAT}backend {}\n", c.url);
                if let Some(endpoint) = &c.endpoint {
                    text.push_str(&format!("endpoint {endpoint}\n"));
                }
                text.push_str(&format!("region {}\n", c.region));
                text
            }
        }
    }

    /// Reads the config file's text (`store` names the store in errors).
    pub(crate) fn parse(text: &str, store: &Path) -> Result<Backend, StoreError> {
        let unsupported = || StoreError::UnsupportedFormat {
            path: store.to_path_buf(),
            found: text.to_string(),
        };
        if text == FORMAT {
            return Ok(Backend::Local);
        }
        let rest = text.strip_prefix(FORMAT).ok_or_else(unsupported)?;
        let (mut url, mut endpoint, mut region) = (None, None, None);
        for line in rest.lines() {
            match line.split_once(' ') {
                Some(("backend", v)) => url = Some(v.parse::<S3Url>().map_err(|_| unsupported())?),
                Some(("endpoint", v)) => endpoint = Some(v.to_string()),
                Some(("region", v)) => region = Some(v.to_string()),
                _ => return Err(unsupported()),
            }
        }
        Ok(Backend::S3(S3Config {
            url: url.ok_or_else(unsupported)?,
            endpoint,
            region: region.unwrap_or_else(|| "us-east-1".into()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_read_back_what_they_wrote() {
        let s3 = Backend::S3(S3Config {
            url: "s3://canopy/site1".parse().unwrap(),
            endpoint: Some("http://127.0.0.1:8333".into()),
            region: "eu-west-1".into(),
        });
        for b in [Backend::Local, s3] {
            assert_eq!(Backend::parse(&b.render(), Path::new("/s")).unwrap(), b);
        }
        for bad in [
            "canopy-store 2\n",
            "canopy-store 1\nbackend ftp://x\n",
            "canopy-store 1\nweird x\n",
        ] {
            assert!(Backend::parse(bad, Path::new("/s")).is_err(), "{bad}");
        }
    }
}
