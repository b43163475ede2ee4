//! User namespaces: which host ids the ids inside a sandbox stand for, and how the
//! kernel is told.
//!
//! A shifted map (inside ids `0..65536` → host ids `B..B+65536`) lets a sandbox run code
//! as root inside while every file it creates, and every process it runs, belongs to a
//! host id that no host user has: writes to `/proc/sys` or to host files are refused by
//! the kernel, and `chown www-data` inside works because uid 33 is mapped too.
//!
//! - As **root**, canopy writes `/proc/PID/uid_map` itself, to a range of host ids that
//!   no line of `/etc/subuid` or `/etc/subgid` hands out (see [`Users::shifted`]).
//! - As **any other user**, the range comes from that user's line in `/etc/subuid` and
//!   `/etc/subgid`, and the setuid helpers `newuidmap`/`newgidmap` (Debian's `uidmap`)
//!   write the map, as `podman` and `mmdebstrap --mode=unshare` do.

use crate::SandboxError;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

/// Where subordinate uid ranges are handed out.
pub const SUBUID: &str = "/etc/subuid";
/// Where subordinate gid ranges are handed out.
pub const SUBGID: &str = "/etc/subgid";

/// The ids a shifted namespace maps: uid/gid 0 to 65535, the range Debian allocates
/// system and user accounts from (`nobody` is 65534).
pub const SHIFTED_IDS: u32 = 65536;

/// The highest host id a root-owned shifted map may start at: the last 64 Ki block of
/// the range systemd reserves for containers (`524288…1879048191`), clear of the
/// ids below 2³¹ that some tools mishandle. Lower blocks are tried when
/// `/etc/subuid` or `/etc/subgid` already hands this one out.
pub const ROOT_RANGE_TOP: u32 = 1_879_048_192 - SHIFTED_IDS;

/// One line of a uid or gid map: `count` ids from `inside` stand for host ids from
/// `outside`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMap {
    /// First id inside the namespace.
    pub inside: u32,
    /// First host id it stands for.
    pub outside: u32,
    /// How many consecutive ids.
    pub count: u32,
}

impl IdMap {
    fn overlaps(&self, start: u32, count: u32) -> bool {
        let (a0, a1) = (self.outside as u64, self.outside as u64 + self.count as u64);
        let (b0, b1) = (start as u64, start as u64 + count as u64);
        a0 < b1 && b0 < a1
    }
}

/// The user namespace a sandbox runs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Users {
    /// The caller's own user namespace and credentials: no new one. Mounting then needs
    /// the caller to be root (in its namespace) — e.g. a super-privileged container, or
    /// a sandbox started from inside another sandbox's namespace.
    Current,
    /// A new user namespace with these maps (uids, then gids).
    Mapped {
        /// uid map lines.
        uids: Vec<IdMap>,
        /// gid map lines.
        gids: Vec<IdMap>,
    },
}

impl Users {
    /// A new user namespace where ids `0..count` inside stand for a range of host ids
    /// that belongs to no host user: as root, the highest block at or below
    /// [`ROOT_RANGE_TOP`] that `/etc/subuid` and `/etc/subgid` do not hand out (a
    /// `root:START:COUNT` line there is used instead, if it has room); otherwise the
    /// caller's own subordinate ranges. Without a range, the error names the lines to
    /// add.
    pub fn shifted(count: u32) -> Result<Users, SandboxError> {
        let uid = nix::unistd::geteuid();
        let name = user_name(uid.as_raw());
        let subuid = read_ranges(Path::new(SUBUID))?;
        let subgid = read_ranges(Path::new(SUBGID))?;
        let (u, g) = if uid.is_root() {
            let own = |ranges: &[Range]| find(ranges, &name, 0, count);
            match (own(&subuid), own(&subgid)) {
                (Some(u), Some(g)) => (u, g),
                _ => {
                    let start = unused_block(&subuid, &subgid, count)?;
                    (start, start)
                }
            }
        } else {
            let u = find(&subuid, &name, uid.as_raw(), count).ok_or_else(|| {
                no_range(&name, SUBUID, count, first_free(&subuid, &subgid, count))
            })?;
            let g = find(&subgid, &name, uid.as_raw(), count).ok_or_else(|| {
                no_range(&name, SUBGID, count, first_free(&subuid, &subgid, count))
            })?;
            (u, g)
        };
        Ok(Users::Mapped {
            uids: vec![IdMap {
                inside: 0,
                outside: u,
                count,
            }],
            gids: vec![IdMap {
                inside: 0,
                outside: g,
                count,
            }],
        })
    }

    /// A new user namespace where the caller is root and no other id exists, as
    /// `unshare --map-root-user` makes: needs no subordinate range, but `chown` to any
    /// other id fails inside.
    pub fn caller_as_root() -> Users {
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        Users::Mapped {
            uids: vec![IdMap {
                inside: 0,
                outside: uid.as_raw(),
                count: 1,
            }],
            gids: vec![IdMap {
                inside: 0,
                outside: gid.as_raw(),
                count: 1,
            }],
        }
    }

    /// A new user namespace where the caller is root, as rootless podman maps it: the
    /// caller's own uid and gid are 0 inside, and ids `1..count` stand for the caller's
    /// subordinate range (`/etc/subuid`, `/etc/subgid`, written with `newuidmap`), so
    /// files the caller owns are root's inside and other owners (`www-data`…) exist
    /// too. For root, every id inside is the same host id (an identity map): the
    /// namespace isolates capabilities and mounts, not file ownership. Without a range
    /// the error names the lines to add.
    pub fn caller_root(count: u32) -> Result<Users, SandboxError> {
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        if uid.is_root() {
            let all = vec![IdMap {
                inside: 0,
                outside: 0,
                count,
            }];
            return Ok(Users::Mapped {
                uids: all.clone(),
                gids: all,
            });
        }
        let name = user_name(uid.as_raw());
        let subuid = read_ranges(Path::new(SUBUID))?;
        let subgid = read_ranges(Path::new(SUBGID))?;
        let rest = count - 1;
        let u = find(&subuid, &name, uid.as_raw(), rest)
            .ok_or_else(|| no_range(&name, SUBUID, rest, first_free(&subuid, &subgid, rest)))?;
        let g = find(&subgid, &name, uid.as_raw(), rest)
            .ok_or_else(|| no_range(&name, SUBGID, rest, first_free(&subuid, &subgid, rest)))?;
        let maps = |own: u32, start: u32| {
            vec![
                IdMap {
                    inside: 0,
                    outside: own,
                    count: 1,
                },
                IdMap {
                    inside: 1,
                    outside: start,
                    count: rest,
                },
            ]
        };
        Ok(Users::Mapped {
            uids: maps(uid.as_raw(), u),
            gids: maps(gid.as_raw(), g),
        })
    }

    /// Also maps the caller's own uid and gid, at `inside`, so that root in the
    /// namespace can read and write the caller's files (a store, say). Only for a
    /// non-root caller: root's own files are never mapped into a sandbox.
    pub fn with_caller_at(self, inside: u32) -> Users {
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        match self {
            Users::Mapped { mut uids, mut gids } if !uid.is_root() => {
                uids.push(IdMap {
                    inside,
                    outside: uid.as_raw(),
                    count: 1,
                });
                gids.push(IdMap {
                    inside,
                    outside: gid.as_raw(),
                    count: 1,
                });
                Users::Mapped { uids, gids }
            }
            other => other,
        }
    }

    /// The host uid that an id inside stands for, if the namespace maps it
    /// ([`Users::Current`] maps every id to itself).
    pub fn host_uid(&self, inside: u32) -> Option<u32> {
        match self {
            Users::Current => Some(inside),
            Users::Mapped { uids, .. } => translate(uids, inside),
        }
    }

    /// The host gid that a gid inside stands for, if mapped.
    pub fn host_gid(&self, inside: u32) -> Option<u32> {
        match self {
            Users::Current => Some(inside),
            Users::Mapped { gids, .. } => translate(gids, inside),
        }
    }

    /// Whether `setgroups` works inside: not in a namespace whose only map line is the
    /// caller's own id written without the setuid helpers.
    pub(crate) fn setgroups_allowed(&self) -> bool {
        match self {
            Users::Current => true,
            Users::Mapped { .. } => nix::unistd::geteuid().is_root() || !self.caller_only(),
        }
    }

    fn caller_only(&self) -> bool {
        let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
        matches!(self, Users::Mapped { uids, gids }
            if uids.len() == 1 && gids.len() == 1
                && uids[0].count == 1 && gids[0].count == 1
                && uids[0].outside == uid.as_raw() && gids[0].outside == gid.as_raw())
    }

    /// Writes the maps of the namespace of process `pid`: directly as root (or for a
    /// map of the caller's own ids alone), through `newuidmap`/`newgidmap` otherwise.
    pub(crate) fn write_maps(&self, pid: i32) -> Result<(), SandboxError> {
        let Users::Mapped { uids, gids } = self else {
            return Ok(());
        };
        if nix::unistd::geteuid().is_root() || self.caller_only() {
            let proc = Path::new("/proc").join(pid.to_string());
            if !nix::unistd::geteuid().is_root() {
                // An unprivileged process may map its own gid only with setgroups off.
                write_proc(&proc.join("setgroups"), "deny")?;
            }
            write_proc(&proc.join("uid_map"), &map_lines(uids))?;
            write_proc(&proc.join("gid_map"), &map_lines(gids))?;
            return Ok(());
        }
        run_helper("newuidmap", pid, uids)?;
        run_helper("newgidmap", pid, gids)
    }
}

fn translate(maps: &[IdMap], inside: u32) -> Option<u32> {
    maps.iter().find_map(|m| {
        (inside >= m.inside && (inside - m.inside) < m.count)
            .then(|| m.outside + (inside - m.inside))
    })
}

fn map_lines(maps: &[IdMap]) -> String {
    let mut s = String::new();
    for m in maps {
        let _ = writeln!(s, "{} {} {}", m.inside, m.outside, m.count);
    }
    s
}

fn write_proc(path: &Path, text: &str) -> Result<(), SandboxError> {
    fs::write(path, text).map_err(|source| SandboxError::Io {
        what: format!("writing {text:?} to {}", path.display()),
        source,
    })
}

fn run_helper(tool: &'static str, pid: i32, maps: &[IdMap]) -> Result<(), SandboxError> {
    let mut cmd = Command::new(tool);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([
            m.inside.to_string(),
            m.outside.to_string(),
            m.count.to_string(),
        ]);
    }
    let out = cmd.output().map_err(|e| SandboxError::IdMapTool {
        tool,
        detail: if e.kind() == std::io::ErrorKind::NotFound {
            format!("{tool} is not installed (Debian package uidmap)")
        } else {
            format!("running {tool}: {e}")
        },
    })?;
    if !out.status.success() {
        return Err(SandboxError::IdMapTool {
            tool,
            detail: format!(
                "{tool} {} failed ({}): {}",
                map_lines(maps).trim().replace('\n', ", "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

/// One line of `/etc/subuid` or `/etc/subgid`: `NAME_OR_ID:START:COUNT`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Range {
    owner: String,
    start: u32,
    count: u32,
}

fn read_ranges(path: &Path) -> Result<Vec<Range>, SandboxError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(SandboxError::Io {
                what: format!("reading {}", path.display()),
                source,
            });
        }
    };
    Ok(parse_ranges(&text))
}

/// Parses subordinate id lines, skipping comments and lines that do not parse (as
/// shadow's own tools do).
fn parse_ranges(text: &str) -> Vec<Range> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let mut parts = line.split(':');
            let owner = parts.next()?.to_string();
            let start = parts.next()?.parse().ok()?;
            let count = parts.next()?.parse().ok()?;
            (!owner.is_empty() && parts.next().is_none()).then_some(Range {
                owner,
                start,
                count,
            })
        })
        .collect()
}

/// The start of the caller's first range with room for `count` ids.
fn find(ranges: &[Range], name: &str, uid: u32, count: u32) -> Option<u32> {
    ranges
        .iter()
        .find(|r| (r.owner == name || r.owner == uid.to_string()) && r.count >= count)
        .map(|r| r.start)
}

fn handed_out(subuid: &[Range], subgid: &[Range], start: u32, count: u32) -> bool {
    subuid.iter().chain(subgid).any(|r| {
        IdMap {
            inside: 0,
            outside: r.start,
            count: r.count,
        }
        .overlaps(start, count)
    })
}

fn unused_block(subuid: &[Range], subgid: &[Range], count: u32) -> Result<u32, SandboxError> {
    let mut start = ROOT_RANGE_TOP;
    while start >= 524_288 {
        if !handed_out(subuid, subgid, start, count) {
            return Ok(start);
        }
        start -= count.max(1);
    }
    Err(SandboxError::NoFreeRange)
}

/// A block a new `/etc/subuid` line could use, for the error message.
fn first_free(subuid: &[Range], subgid: &[Range], count: u32) -> u32 {
    let mut start = 100_000;
    while handed_out(subuid, subgid, start, count) {
        start += count;
    }
    start
}

fn no_range(name: &str, file: &'static str, count: u32, free: u32) -> SandboxError {
    SandboxError::NoSubordinateIds {
        user: name.to_string(),
        file,
        count,
        line: format!("{name}:{free}:{count}"),
    }
}

fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subordinate_lines() {
        let ranges = parse_ranges("# comment\nalice:100000:65536\nbad line\n1001:165536:10\n");
        assert_eq!(ranges.len(), 2);
        assert_eq!(find(&ranges, "alice", 1000, 65536), Some(100_000));
        assert_eq!(find(&ranges, "bob", 1001, 10), Some(165_536));
        assert_eq!(find(&ranges, "bob", 1001, 65536), None, "too small");
    }

    #[test]
    fn root_range_avoids_handed_out_blocks() {
        let taken = vec![Range {
            owner: "x".into(),
            start: ROOT_RANGE_TOP + 5,
            count: 10,
        }];
        assert_eq!(
            unused_block(&taken, &[], SHIFTED_IDS).unwrap(),
            ROOT_RANGE_TOP - SHIFTED_IDS
        );
        assert_eq!(unused_block(&[], &[], SHIFTED_IDS).unwrap(), ROOT_RANGE_TOP);
        assert_eq!(first_free(&taken, &[], SHIFTED_IDS), 100_000);
    }

    #[test]
    fn translates_ids() {
        let users = Users::Mapped {
            uids: vec![IdMap {
                inside: 0,
                outside: 200_000,
                count: 65536,
            }],
            gids: vec![],
        };
        assert_eq!(users.host_uid(33), Some(200_033));
        assert_eq!(users.host_uid(65536), None);
        assert_eq!(users.host_gid(0), None);
        assert_eq!(Users::Current.host_uid(7), Some(7));
    }
}
