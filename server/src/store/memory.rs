//! The in-memory backend: objects and refs in maps, for unit tests that exercise the
//! store's logic (transactions, assemble, closure, gc, the read view) in milliseconds.
//! Nothing survives the process.

use super::backend::{ObjectBackend, RefBackend};
use super::{IoContext, StoreError};
use canopy_protocol::ObjectId;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// Objects in a map.
#[derive(Default)]
pub struct MemoryObjects {
    map: RwLock<HashMap<ObjectId, Arc<[u8]>>>,
}

impl MemoryObjects {
    fn bytes(&self, id: &ObjectId) -> Result<Arc<[u8]>, StoreError> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or(StoreError::Missing {
                id: *id,
                store: "memory".into(),
            })
    }
}

/// A reader over shared bytes.
struct SharedReader(Arc<[u8]>, usize);

impl Read for SharedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (&self.0[self.1..]).read(buf)?;
        self.1 += n;
        Ok(n)
    }
}

impl ObjectBackend for MemoryObjects {
    fn location(&self) -> String {
        "memory".into()
    }

    fn put(&self, staged: Vec<(ObjectId, PathBuf)>) -> Result<Vec<bool>, StoreError> {
        let mut existed = Vec::with_capacity(staged.len());
        for (id, tmp) in staged {
            let bytes = std::fs::read(&tmp).ctx(|| format!("reading {}", tmp.display()))?;
            std::fs::remove_file(&tmp).ctx(|| format!("removing {}", tmp.display()))?;
            let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
            existed.push(map.contains_key(&id));
            map.entry(id).or_insert_with(|| bytes.into());
        }
        Ok(existed)
    }

    fn get(&self, id: &ObjectId) -> Result<Box<dyn Read + Send>, StoreError> {
        Ok(Box::new(SharedReader(self.bytes(id)?, 0)))
    }

    fn read_at(&self, id: &ObjectId, offset: u64, buf: &mut [u8]) -> Result<usize, StoreError> {
        let bytes = self.bytes(id)?;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let n = buf.len().min(bytes.len() - start);
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }

    fn size(&self, id: &ObjectId) -> Result<u64, StoreError> {
        Ok(self.bytes(id)?.len() as u64)
    }

    fn exists(&self, id: &ObjectId) -> Result<bool, StoreError> {
        Ok(self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id))
    }

    fn list(&self) -> Result<Vec<ObjectId>, StoreError> {
        Ok(self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect())
    }

    fn delete(&self, id: &ObjectId) -> Result<u64, StoreError> {
        let removed = self
            .map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        Ok(removed.map_or(0, |b| b.len() as u64))
    }
}

/// Refs and logs in maps.
#[derive(Default)]
pub struct MemoryRefs {
    refs: Mutex<BTreeMap<String, ObjectId>>,
    logs: Mutex<HashMap<String, Vec<String>>>,
}

impl RefBackend for MemoryRefs {
    fn location(&self) -> String {
        "memory".into()
    }

    fn get(&self, name: &str) -> Result<Option<ObjectId>, StoreError> {
        Ok(self
            .refs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied())
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectId)>, StoreError> {
        let dir = format!("{prefix}/");
        Ok(self
            .refs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .range(dir.clone()..)
            .take_while(|(name, _)| name.starts_with(&dir))
            .map(|(name, id)| (name[dir.len()..].to_string(), *id))
            .collect())
    }

    fn compare_and_swap(
        &self,
        name: &str,
        expected: Option<ObjectId>,
        new: Option<ObjectId>,
    ) -> Result<(), StoreError> {
        let mut refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
        StoreError::unless_expected(name, expected, refs.get(name).copied())?;
        match new {
            Some(id) => refs.insert(name.to_string(), id),
            None => refs.remove(name),
        };
        Ok(())
    }

    fn append_log(&self, name: &str, entry: &str) -> Result<(), StoreError> {
        self.logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_string())
            .or_default()
            .push(entry.to_string());
        Ok(())
    }

    fn log_names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let dir = format!("{prefix}/");
        Ok(self
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .filter_map(|name| name.strip_prefix(&dir).map(str::to_string))
            .collect())
    }

    fn read_log(&self, name: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .logs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .unwrap_or_default())
    }
}
