//! Fetching directory packs (`GET /v1/packs/{tree}/{part}`, see
//! [`canopy_protocol::pack`]): many small objects in one answer, each verified against
//! its id as it arrives.
//!
//! The client knows every member's id and size from the tree before it asks, so the
//! answer is read against that list: a member whose bytes do not hash to its id is
//! dropped alone (logged as a `hash mismatch`; whoever wants it fetches it by itself,
//! and gets EIO if that is wrong too), while a member the list does not expect, or of
//! another size, ends the answer, since nothing after it can be framed. The deadline
//! is that of every fetch: `--timeout`, then the answer's size at `--min-rate`.

use crate::demand::Gate;
use crate::remote::{FetchError, Remote};
use canopy_protocol::pack::{self, HEAD_LEN, MEMBER_HEAD_LEN, MISSING, Member};
use canopy_protocol::{Hasher, ObjectId, TreeId};
use std::collections::HashMap;
use std::time::Instant;

/// Whether a failed pack request says the server has no pack endpoint (a server from
/// before packs, or a proxy that passes only objects through): then objects are
/// fetched one by one.
pub fn unsupported(e: &FetchError) -> bool {
    match e {
        FetchError::Status {
            status, message, ..
        } => {
            matches!(status, 404 | 405 | 501)
                && (message.starts_with("no such endpoint") || message.starts_with("not an answer"))
        }
        FetchError::AllFailed(errors) => errors.iter().any(unsupported),
        _ => false,
    }
}

/// Where a pack's answer is in its reading.
enum State {
    /// Reading the pack's head.
    Head(Vec<u8>),
    /// Reading a member's head; `left` members to go.
    MemberHead { buf: Vec<u8>, left: usize },
    /// Reading a member's bytes.
    Body {
        id: ObjectId,
        want: usize,
        data: Vec<u8>,
        left: usize,
    },
    /// Every member read.
    Done,
}

impl Remote {
    /// Fetches part `part` of `tree`'s pack, whose `members` the plan gives, from the
    /// server that answered last, and calls `deliver` with each member whose bytes hash
    /// to its id, as it arrives. Members not delivered (missing on the server, damaged,
    /// or after an error) are the caller's to fetch otherwise. The answer gives way to
    /// readers' fetches as `gate` says (see [`crate::demand`]); time held does not count
    /// against the minimum rate.
    pub async fn pack(
        &self,
        tree: &TreeId,
        part: usize,
        members: &[Member],
        gate: Gate<'_>,
        deliver: impl FnMut(ObjectId, Vec<u8>),
    ) -> Result<(), FetchError> {
        let path = format!("v1/packs/{tree}/{part}");
        self.pack_at(&path, members, Some(gate), deliver).await
    }

    /// Fetches the pack at `path` (under the server's base URL), whose `members` its
    /// plan gives, as [`Remote::pack`] does; giving way to readers' fetches only if a
    /// `gate` is given.
    pub async fn pack_at(
        &self,
        path: &str,
        members: &[Member],
        mut gate: Option<Gate<'_>>,
        mut deliver: impl FnMut(ObjectId, Vec<u8>),
    ) -> Result<(), FetchError> {
        let Some(base) = self.preferred() else {
            return Ok(());
        };
        let expected: HashMap<ObjectId, u64> = members.iter().map(|m| (m.blob.0, m.size)).collect();
        let limit = HEAD_LEN as u64
            + members
                .iter()
                .map(|m| MEMBER_HEAD_LEN as u64 + m.size)
                .sum::<u64>();
        let (url, mut res) = self.get(&base, path).await?;
        let framing = |message: String| FetchError::Status {
            url: url.clone(),
            status: 200,
            message,
        };
        let (mut started, mut received) = (Instant::now(), 0);
        let mut state = State::Head(Vec::with_capacity(HEAD_LEN));
        loop {
            if let Some(gate) = &mut gate {
                started += gate.pass().await;
            }
            let Some(chunk) = self
                .chunk(&url, &mut res, started, &mut received, limit)
                .await?
            else {
                break;
            };
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                state = match state {
                    State::Head(mut buf) => {
                        take(&mut buf, &mut rest, HEAD_LEN);
                        if buf.len() < HEAD_LEN {
                            State::Head(buf)
                        } else {
                            let n = pack::parse_head(buf[..].try_into().expect("head length"))
                                .ok_or_else(|| framing("not a canopy pack".into()))?;
                            if n != members.len() {
                                return Err(framing(format!(
                                    "the pack has {n} members, not the {} of its plan",
                                    members.len()
                                )));
                            }
                            next_member(n)
                        }
                    }
                    State::MemberHead { mut buf, left } => {
                        take(&mut buf, &mut rest, MEMBER_HEAD_LEN);
                        if buf.len() < MEMBER_HEAD_LEN {
                            State::MemberHead { buf, left }
                        } else {
                            let (id, len) =
                                pack::parse_member_head(buf[..].try_into().expect("head length"));
                            match expected.get(&id) {
                                _ if len == MISSING => next_member(left - 1),
                                Some(size) if *size == len => State::Body {
                                    id,
                                    want: len as usize,
                                    data: Vec::with_capacity(len as usize),
                                    left,
                                },
                                _ => {
                                    return Err(framing(format!(
                                        "member {id} of {len} bytes is not in the pack's plan"
                                    )));
                                }
                            }
                        }
                    }
                    State::Body {
                        id,
                        want,
                        mut data,
                        left,
                    } => {
                        take(&mut data, &mut rest, want);
                        if data.len() < want {
                            State::Body {
                                id,
                                want,
                                data,
                                left,
                            }
                        } else {
                            finish(&url, id, data, &mut deliver);
                            next_member(left - 1)
                        }
                    }
                    State::Done => {
                        return Err(framing("bytes after the last member".into()));
                    }
                };
            }
        }
        // Empty members need no bytes: the last ones may be complete at the end.
        while let State::Body {
            id, want: 0, left, ..
        } = state
        {
            finish(&url, id, Vec::new(), &mut deliver);
            state = next_member(left - 1);
        }
        match state {
            State::Done => Ok(()),
            _ => Err(framing("the pack ends before its last member".into())),
        }
    }
}

/// The state after a member, with `left` more to read.
fn next_member(left: usize) -> State {
    if left == 0 {
        State::Done
    } else {
        State::MemberHead {
            buf: Vec::with_capacity(MEMBER_HEAD_LEN),
            left,
        }
    }
}

/// Moves bytes from the front of `rest` into `buf` until it holds `want`.
fn take(buf: &mut Vec<u8>, rest: &mut &[u8], want: usize) {
    let n = (want - buf.len()).min(rest.len());
    buf.extend_from_slice(&rest[..n]);
    *rest = &rest[n..];
}

/// Hands a member on if its bytes are its id's; logs it otherwise.
fn finish(url: &str, id: ObjectId, data: Vec<u8>, deliver: &mut impl FnMut(ObjectId, Vec<u8>)) {
    let mut hasher = Hasher::new();
    hasher.update(&data);
    let actual = hasher.finish();
    if actual == id {
        deliver(id, data);
    } else {
        tracing::error!(
            "hash mismatch for object {id} in the pack from {url}: content hashes to {actual}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, message: &str) -> FetchError {
        FetchError::Status {
            url: "http://server/v1/packs/x/0".into(),
            status,
            message: message.into(),
        }
    }

    #[test]
    fn a_server_without_packs_is_told_from_a_missing_part() {
        // A canopy server from before packs, and a proxy that is not canopy.
        assert!(unsupported(&status(404, "no such endpoint; see /v1/roots")));
        assert!(unsupported(&FetchError::AllFailed(vec![status(
            404,
            "not an answer from canopy: is this URL a canopy server?"
        )])));
        // A server with packs that lacks this tree or part: prefetch goes on.
        assert!(!unsupported(&status(
            404,
            "tree 3f2a has 1 pack parts, not 2"
        )));
        assert!(!unsupported(&status(503, "no such endpoint")));
    }
}
