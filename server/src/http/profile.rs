//! `GET /v1/packs/profile/{commit}/{part}`: part `part` of the files a commit's access
//! profile names, in profile order, in the directory-pack format (see
//! [`canopy_protocol::profile`] for the plan, [`canopy_protocol::pack`] for the format).
//!
//! The plan comes from the signed commit alone (its profile and its tree), so the URL
//! names its answer for good and is cached as objects are. Plans are computed once per
//! commit and kept for the next parts and hosts ([`PLANS`] of them).

use super::answer::{Answer, Status};
use super::conn::Request;
use super::{App, bad_id, blocking, store_error};
use crate::store::StoreError;
use canopy_protocol::CommitId;
use canopy_protocol::profile::{self, Plan, Profile};
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

/// Commits whose plans are kept.
const PLANS: usize = 64;

/// A commit's plan: computed once, by the first request that needs it, while the
/// requests for its other parts (and other hosts') wait for that one computation. One
/// that fails is not kept: the next request computes it again.
type Slot = Arc<tokio::sync::OnceCell<Arc<Plan>>>;

/// Plans computed or being computed, by commit.
pub(super) struct Plans(Mutex<LruCache<CommitId, Slot>>);

impl Default for Plans {
    fn default() -> Self {
        Plans(Mutex::new(LruCache::new(
            NonZeroUsize::new(PLANS).expect("non-zero"),
        )))
    }
}

impl Plans {
    /// The slot of commit `id`'s plan.
    fn slot(&self, id: CommitId) -> Slot {
        self.0
            .lock()
            .expect("plans lock")
            .get_or_insert(id, Slot::default)
            .clone()
    }
}

/// Answers a request for part `part` of commit `commit`'s profile pack.
pub(super) async fn answer(
    app: &Arc<App>,
    req: &Request,
    commit: &str,
    part: &str,
) -> Result<Answer, Answer> {
    let id = CommitId(commit.parse().map_err(|e| bad_id(commit, e))?);
    let index = super::pack::part_number(part)?;
    let etag = format!("\"profile-{}-{index}\"", id.0.to_hex());
    if let Some(same) = super::pack::not_modified(req, &etag) {
        return Ok(same);
    }
    let plan = app
        .profile_plans
        .slot(id)
        .get_or_try_init(|| {
            let store = app.store.clone();
            async move { Ok::<_, Answer>(Arc::new(blocking(move || plan_of(&store, id)).await?)) }
        })
        .await?
        .clone();
    let members = super::pack::part_of(
        &plan.parts,
        index,
        format_args!("the profile of commit {id}"),
    )?;
    super::pack::answer_members(app, members, etag).await
}

/// The plan of commit `id`'s profile against its tree.
fn plan_of(store: &crate::store::Store, id: CommitId) -> Result<Plan, Answer> {
    let commit = store.commit(&id).map_err(store_error)?;
    let profile = match Profile::of(&commit.body.extensions) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            return Err(Answer::error(
                Status::NotFound,
                "not-found",
                format!("commit {id} has no usable profile: {e}"),
            ));
        }
        None => {
            return Err(Answer::error(
                Status::NotFound,
                "not-found",
                format!("commit {id} has no profile"),
            ));
        }
    };
    // A tree the store cannot read fails the answer, and nothing is kept: a plan that
    // left its paths out would be served for good under the same URLs.
    profile::plan(&profile, commit.body.tree, |t| store.tree(t).map(Arc::new)).map_err(
        |e| match e {
            StoreError::Missing { .. } | StoreError::Decode { .. } => {
                tracing::error!("the profile of commit {id}: {e}");
                Answer::error(
                    Status::Internal,
                    "store-damaged",
                    format!(
                        "the profile of commit {id}: {e} (the store lacks a tree of the \
                         commit; canopy fsck on the server says more)"
                    ),
                )
            }
            e => store_error(e),
        },
    )
}
