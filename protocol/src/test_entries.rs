//! Tree entries for unit tests, from a name and the little else a test cares about.

use crate::tree::{Entry, EntryKind, Meta, Name};
use crate::{BlobId, TreeId};

/// A regular file `name` of `size` bytes (as the tree says) whose blob is `content`'s.
pub(crate) fn file(name: &str, content: &[u8], size: u64) -> Entry {
    Entry {
        name: Name::new(name.as_bytes().to_vec()).unwrap(),
        meta: Meta::default(),
        kind: EntryKind::File {
            size,
            blob: BlobId::of(content),
        },
    }
}

/// A directory `name` whose contents are `tree`.
pub(crate) fn dir(name: &str, tree: TreeId) -> Entry {
    Entry {
        name: Name::new(name.as_bytes().to_vec()).unwrap(),
        meta: Meta::default(),
        kind: EntryKind::Dir { tree },
    }
}
