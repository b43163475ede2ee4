//! `canopy init`: making a store, or attaching this machine to one that lives in a
//! bucket, whose other writers sign with the same key.

use super::s3::{self, Bucket};
use super::{Access, Backend, IoContext, Store, StoreError, write_atomic};
use canopy_protocol::SigningKey;
use std::fs;
use std::path::Path;

/// Where the signing key lives, under the store's directory.
pub(crate) const KEY: &str = "keys/ed25519.secret";

/// What `init` found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initialised {
    /// A new store.
    Created,
    /// The bucket held a store already: this machine's local state now points at it.
    Attached,
    /// The directory was a store already (of the same backend); nothing changed.
    Existing,
}

/// A hex ed25519 seed, as `keys/ed25519.secret` holds it.
pub(crate) fn parse_key(text: &str, path: &Path) -> Result<SigningKey, StoreError> {
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|e| StoreError::BadKey {
        path: path.to_path_buf(),
        reason: format!("{e} (expected 64 hex digits, as keys/ed25519.secret holds)"),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

fn read_key(path: &Path) -> Result<SigningKey, StoreError> {
    let text = fs::read_to_string(path).ctx(|| format!("reading key {}", path.display()))?;
    parse_key(&text, path)
}

fn write_key(root: &Path, key: &SigningKey) -> Result<(), StoreError> {
    write_atomic(
        &root.join(KEY),
        format!("{}\n", hex::encode(key.to_bytes())).as_bytes(),
        0o600,
    )
}

fn new_key(root: &Path) -> Result<SigningKey, StoreError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| StoreError::BadKey {
        path: root.join(KEY),
        reason: format!("no randomness for a new key: {e}"),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Makes the signing key in `root/keys/` unless it exists.
pub(crate) fn make_key(root: &Path) -> Result<(), StoreError> {
    if root.join(KEY).exists() {
        return Ok(());
    }
    write_key(root, &new_key(root)?)
}

fn wrong_key(path: &Path, store: &str) -> StoreError {
    StoreError::BadKey {
        path: path.to_path_buf(),
        reason: format!("it is not the key {store} signs with"),
    }
}

impl Store {
    /// Creates a local store at `root` (or completes one whose `init` was interrupted)
    /// with a new key. Returns the open store and whether anything was created.
    pub fn init(root: &Path) -> Result<(Store, bool), StoreError> {
        let (store, done) = Store::init_with(root, &Backend::Local, None)?;
        Ok((store, done != Initialised::Existing))
    }

    /// Creates a store at `root` whose objects and refs live in `backend`, signing with
    /// the key in `key` (else a new one), or attaches `root` to the store a bucket holds
    /// already (whose key `key` must then be, if given). The local config is written
    /// last.
    pub fn init_with(
        root: &Path,
        backend: &Backend,
        key: Option<&Path>,
    ) -> Result<(Store, Initialised), StoreError> {
        let key = key
            .map(|path| Ok::<_, StoreError>((path, read_key(path)?)))
            .transpose()?;
        if let Ok(text) = fs::read_to_string(root.join("config")) {
            // `canopy init` without --backend asks for `Local`: on a store in a bucket
            // that is running init again, which changes nothing.
            let has = Backend::parse(&text, root)?;
            let other = |reason: String| StoreError::OtherBackend {
                store: root.display().to_string(),
                reason,
            };
            match (&has, backend) {
                (Backend::Local | Backend::S3(_), Backend::Local) => {}
                (Backend::S3(a), Backend::S3(b)) if a.url == b.url => {}
                (Backend::S3(a), Backend::S3(b)) => {
                    return Err(other(format!(
                        "with its objects and refs in {}: give another --store for {}",
                        a.url, b.url
                    )));
                }
                (Backend::Local, Backend::S3(b)) => {
                    return Err(other(format!(
                        "with its objects on this machine: give another --store for {} \
                         (`canopy replicate` copies roots from one store to another)",
                        b.url
                    )));
                }
            }
            let store = Store::open(root, Access::Write)?;
            if let Some((path, key)) = &key
                && store.verifying_key()? != key.verifying_key()
            {
                return Err(wrong_key(path, &store.objects().location()));
            }
            return Ok((store, Initialised::Existing));
        }
        let mut dirs = vec!["tmp", "keys"];
        if *backend == Backend::Local {
            dirs.extend(["objects", "refs/roots", "refs/packages"]);
        }
        for dir in dirs {
            let p = root.join(dir);
            fs::create_dir_all(&p).ctx(|| format!("creating {}", p.display()))?;
        }
        let done = match backend {
            Backend::Local => {
                match &key {
                    Some((_, key)) => write_key(root, key)?,
                    None => make_key(root)?,
                }
                Initialised::Created
            }
            Backend::S3(config) => {
                let bucket = Bucket::connect(config, s3::Patience::Writer)?;
                bucket.check_conditional_writes()?;
                let (secret, done) = claim(&bucket, key.as_ref().map(|(p, k)| (*p, k)))?;
                if let Some(secret) = secret {
                    write_key(root, &secret)?;
                }
                done
            }
        };
        // config last: a store without it is an interrupted init, never a half store.
        write_atomic(&root.join("config"), backend.render().as_bytes(), 0o644)?;
        Ok((Store::open(root, Access::Write)?, done))
    }
}

/// Makes the bucket's store (with `key`, else a new key) or checks `key` against the
/// one it has. Returns the secret key to keep locally, if any.
fn claim(
    bucket: &std::sync::Arc<Bucket>,
    key: Option<(&Path, &SigningKey)>,
) -> Result<(Option<SigningKey>, Initialised), StoreError> {
    loop {
        if let Some(public) = bucket.stored_public_key()? {
            if let Some((path, key)) = key {
                if key.verifying_key() != public {
                    return Err(wrong_key(path, &bucket.describe()));
                }
                return Ok((Some(key.clone()), Initialised::Attached));
            }
            return Ok((None, Initialised::Attached));
        }
        let secret = match key {
            Some((_, key)) => key.clone(),
            None => new_key(Path::new("."))?,
        };
        // Two machines may init one bucket at once: one marker wins, the other attaches.
        if bucket.create_marker(&secret.verifying_key())? {
            return Ok((Some(secret), Initialised::Created));
        }
    }
}
