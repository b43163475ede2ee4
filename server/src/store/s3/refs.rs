//! Refs and their logs in a bucket, moved only by conditional writes (see [`super`]).

use super::Bucket;
use crate::store::StoreError;
use crate::store::backend::RefBackend;
use bytes::Bytes;
use canopy_protocol::ObjectId;
use object_store::{PutMode, UpdateVersion};
use std::path::PathBuf;
use std::sync::Arc;

/// Refs and logs in a bucket.
pub struct S3Refs {
    bucket: Arc<Bucket>,
}

impl S3Refs {
    /// The refs of `bucket`.
    pub fn new(bucket: Arc<Bucket>) -> Self {
        S3Refs { bucket }
    }

    /// A ref's value and ETag.
    fn read(&self, name: &str) -> Result<Option<(ObjectId, Option<String>)>, StoreError> {
        let rel = format!("refs/{name}");
        let Some((bytes, etag)) = self.bucket.get_small(&rel)? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        let id = text.strip_suffix('\n').unwrap_or(&text).parse().map_err(
            |e: canopy_protocol::IdError| StoreError::BadRef {
                path: PathBuf::from(format!("{}/{rel}", self.bucket.config.url)),
                reason: e.to_string(),
            },
        )?;
        Ok(Some((id, etag)))
    }
}

fn ref_body(id: ObjectId) -> Bytes {
    Bytes::from(format!("{id}\n"))
}

impl RefBackend for S3Refs {
    fn location(&self) -> String {
        self.bucket.config.describe()
    }

    fn get(&self, name: &str) -> Result<Option<ObjectId>, StoreError> {
        Ok(self.read(name)?.map(|(id, _)| id))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, StoreError> {
        let names: Vec<String> = self
            .bucket
            .list_under(&format!("refs/{prefix}"))?
            .into_iter()
            .map(|(name, _, _)| name)
            .filter(|name| !name.contains('/'))
            .collect();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            // A ref removed since the listing is simply gone.
            if let Some(id) = self.get(&format!("{prefix}/{name}"))? {
                out.push((name, id));
            }
        }
        Ok(out)
    }

    fn compare_and_swap(
        &self,
        name: &str,
        expected: Option<ObjectId>,
        new: Option<ObjectId>,
    ) -> Result<(), StoreError> {
        let rel = format!("refs/{name}");
        let current = self.read(name)?;
        let found = current.as_ref().map(|(id, _)| *id);
        StoreError::unless_expected(name, expected, found)?;
        let won = match (new, current) {
            (Some(new), None) => self
                .bucket
                .put_small(&rel, ref_body(new), PutMode::Create)?,
            (Some(new), Some((_, etag))) => {
                let version = UpdateVersion {
                    e_tag: etag,
                    version: None,
                };
                self.bucket
                    .put_small(&rel, ref_body(new), PutMode::Update(version))?
            }
            // S3 has no conditional delete everywhere: the value was checked just above,
            // which leaves a window of one request.
            (None, Some(_)) => {
                self.bucket.delete_key(&rel)?;
                true
            }
            (None, None) => true,
        };
        if won {
            return Ok(());
        }
        // Another writer got there first, unless a retried request of ours did.
        let found = self.get(name)?;
        if found.is_some() && found == new {
            return Ok(());
        }
        Err(StoreError::Conflict {
            name: name.to_string(),
            expected,
            found,
        })
    }

    fn append_log(&self, name: &str, entry: &str) -> Result<(), StoreError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut salt = [0u8; 4];
        getrandom::fill(&mut salt).map_err(|e| StoreError::Backend {
            what: "naming a log entry".into(),
            reason: e.to_string(),
        })?;
        let rel = format!("logs/{name}/{nanos:020}-{}", hex::encode(salt));
        if !self
            .bucket
            .put_small(&rel, Bytes::from(entry.to_string()), PutMode::Create)?
        {
            return Err(StoreError::Backend {
                what: format!("appending to the log of {name}"),
                reason: format!("{rel} exists already"),
            });
        }
        Ok(())
    }

    fn log_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Each entry is a key of its own (NAME/SEQ): the names are the first parts.
        let mut names: Vec<String> = self
            .bucket
            .list_under(&format!("logs/{prefix}"))?
            .into_iter()
            .filter_map(|(key, _, _)| key.split_once('/').map(|(name, _)| name.to_string()))
            .collect();
        names.dedup();
        Ok(names)
    }

    fn read_log(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for (key, _, _) in self.bucket.list_under(&format!("logs/{name}"))? {
            if let Some((bytes, _)) = self.bucket.get_small(&format!("logs/{name}/{key}"))? {
                out.push(String::from_utf8_lossy(&bytes).into_owned());
            }
        }
        Ok(out)
    }
}
