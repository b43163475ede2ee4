//! What `/run` holds when a run starts.
//!
//! A run's `/run` is a fresh tmpfs, as a booted host's is, and configuring a root keeps
//! only the directories of its `/run` (`/run/lock`, which `/var/lock` points to). A
//! booted host then finds there what `systemd-tmpfiles` makes at boot: the directories
//! `tmpfiles.d` declares with `d` or `D` lines (`/run/postgresql`, owned by postgres).
//! And as it starts each enabled service, systemd makes the unit's
//! `RuntimeDirectory=` (`/run/sshd`, `/run/redis`). A run makes all of them, with their
//! modes and owners, so that services which expect them (`apache2ctl` takes a lock in
//! `/var/lock`, `pg_ctl` writes a pid file in `/run/postgresql`, sshd wants
//! `/run/sshd`) start as they would on a host.

use super::source::Source;
use std::collections::BTreeMap;

/// One directory made in a run's `/run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeDir {
    /// Absolute path, under `/run`.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner inside the run.
    pub uid: u32,
    /// Group inside the run.
    pub gid: u32,
}

/// At most this many directories are made (a root is not trusted to be small).
const MAX_DIRS: usize = 512;
/// How deep the root's own `/run` is copied.
const MAX_DEPTH: usize = 4;
/// At most this many `tmpfiles.d` files are read, each of at most this many bytes.
const MAX_CONFIGS: usize = 256;
const MAX_CONFIG_BYTES: u64 = 256 << 10;

/// Where `tmpfiles.d` files live, the first overriding a file of the same name in the
/// next ones (as systemd reads them; `/run/tmpfiles.d` is empty at boot).
const TMPFILES_DIRS: [&str; 3] = ["/etc/tmpfiles.d", "/usr/lib/tmpfiles.d", "/lib/tmpfiles.d"];

/// The directories a run's `/run` starts with, parents before children: the root's
/// own `/run` directories, then those its `tmpfiles.d` declares (which set the mode
/// and owner of one the root has too).
pub fn dirs(source: &Source) -> Vec<RuntimeDir> {
    let passwd = source.read("/etc/passwd", 4 << 20).unwrap_or_default();
    let group = source.read("/etc/group", 4 << 20).unwrap_or_default();
    let (passwd, group) = (
        String::from_utf8_lossy(&passwd),
        String::from_utf8_lossy(&group),
    );
    let mut found: BTreeMap<String, RuntimeDir> = BTreeMap::new();
    skeleton(source, "/run", 0, &mut found);
    let mut configs: BTreeMap<String, String> = BTreeMap::new();
    for dir in TMPFILES_DIRS {
        for name in source.list(dir, MAX_CONFIGS).unwrap_or_default() {
            if name.ends_with(".conf") && !configs.contains_key(&name) {
                configs.insert(name.clone(), format!("{dir}/{name}"));
            }
        }
    }
    for path in configs.values().take(MAX_CONFIGS) {
        let Some(text) = source.read(path, MAX_CONFIG_BYTES) else {
            continue;
        };
        for line in String::from_utf8_lossy(&text).lines() {
            if let Some(d) = tmpfiles_line(line, &passwd, &group) {
                if found.len() >= MAX_DIRS && !found.contains_key(&d.path) {
                    break;
                }
                found.insert(d.path.clone(), d);
            }
        }
    }
    services(source, &passwd, &group, &mut found);
    let mut out: Vec<RuntimeDir> = found.into_values().collect();
    out.sort_by_key(|d| d.path.matches('/').count());
    out
}

/// Where unit files are looked for by name, in systemd's order.
const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];
/// At most this many enabled services are read.
const MAX_SERVICES: usize = 128;

/// The `RuntimeDirectory=` of each service the root enables (a `.service` in an
/// `/etc/systemd/system/*.wants/` directory): systemd makes them, owned by the
/// service's `User=` and `Group=`, as it starts the service on a booted host, and the
/// daemons expect them (sshd refuses to start without `/run/sshd`).
fn services(source: &Source, passwd: &str, group: &str, out: &mut BTreeMap<String, RuntimeDir>) {
    let mut names = Vec::new();
    for wants in source
        .list("/etc/systemd/system", MAX_SERVICES)
        .unwrap_or_default()
    {
        if !wants.ends_with(".wants") {
            continue;
        }
        for name in source
            .list(&format!("/etc/systemd/system/{wants}"), MAX_SERVICES)
            .unwrap_or_default()
        {
            if name.ends_with(".service")
                && !names.iter().any(|(_, n)| *n == name)
                && names.len() < MAX_SERVICES
            {
                names.push((format!("/etc/systemd/system/{wants}/{name}"), name));
            }
        }
    }
    for (enabled, name) in names {
        // The link's target is found by name (a link into /lib would not resolve in a
        // merged-/usr root); an instance (`postgresql@15-main.service`) is read from its
        // template.
        let template = name
            .split_once('@')
            .map(|(base, _)| format!("{base}@.service"));
        let Some(text) = std::iter::once(Some(enabled))
            .chain(UNIT_DIRS.iter().flat_map(|d| {
                [
                    Some(format!("{d}/{name}")),
                    template.as_ref().map(|t| format!("{d}/{t}")),
                ]
            }))
            .flatten()
            .find_map(|path| source.read(&path, MAX_CONFIG_BYTES))
        else {
            continue;
        };
        for d in unit_dirs(&String::from_utf8_lossy(&text), passwd, group) {
            if out.len() >= MAX_DIRS {
                return;
            }
            out.entry(d.path.clone()).or_insert(d);
        }
    }
}

/// The runtime directories a unit file asks for, with `RuntimeDirectoryMode=` (default
/// 0755) and its `User=`/`Group=` (default root; a user's group is its primary one).
fn unit_dirs(unit: &str, passwd: &str, group: &str) -> Vec<RuntimeDir> {
    let mut dirs = Vec::new();
    let (mut mode, mut user, mut grp) = (0o755, None, None);
    let mut in_service = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
            continue;
        }
        let Some((key, value)) = line.split_once('=').filter(|_| in_service) else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "RuntimeDirectory" => dirs.extend(value.split_whitespace().map(str::to_string)),
            "RuntimeDirectoryMode" => {
                mode = u32::from_str_radix(value, 8).map_or(mode, |m| m & 0o7777)
            }
            "User" => user = Some(value.to_string()),
            "Group" => grp = Some(value.to_string()),
            _ => {}
        }
    }
    let entry = |file: &str, name: &str| -> Option<Vec<String>> {
        file.lines()
            .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
            .find(|f| f.len() > 3 && (f[0] == name || f[2] == name))
    };
    let (uid, primary) = match &user {
        None => (Some(0), Some(0)),
        Some(u) => match entry(passwd, u) {
            Some(f) => (f[2].parse().ok(), f[3].parse().ok()),
            None => (u.parse().ok(), u.parse().ok()),
        },
    };
    let gid = match &grp {
        None => primary,
        Some(g) => entry(group, g)
            .and_then(|f| f[2].parse().ok())
            .or_else(|| g.parse().ok()),
    };
    let (Some(uid), Some(gid)) = (uid, gid) else {
        return Vec::new();
    };
    dirs.into_iter()
        .filter(|d| {
            !d.contains('%') && d.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        })
        .map(|d| RuntimeDir {
            path: format!("/run/{d}"),
            mode,
            uid,
            gid,
        })
        .collect()
}

/// The directories below `path` in the root (not `path` itself), depth first.
fn skeleton(source: &Source, path: &str, depth: usize, out: &mut BTreeMap<String, RuntimeDir>) {
    if depth >= MAX_DEPTH {
        return;
    }
    for name in source.list(path, MAX_DIRS).unwrap_or_default() {
        if out.len() >= MAX_DIRS {
            return;
        }
        let child = format!("{path}/{name}");
        let Some(s) = source.stat(&child).filter(|s| s.dir) else {
            continue;
        };
        out.insert(
            child.clone(),
            RuntimeDir {
                path: child.clone(),
                mode: s.mode,
                uid: s.uid,
                gid: s.gid,
            },
        );
        skeleton(source, &child, depth + 1, out);
    }
}

/// A `d` or `D` line of a `tmpfiles.d` file for a directory under `/run`, with its
/// mode (default 0755) and owners (default root; names from the root's `passwd` and
/// `group`). Other lines, specifiers other than `%t`, and unknown names give `None`.
fn tmpfiles_line(line: &str, passwd: &str, group: &str) -> Option<RuntimeDir> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (kind, path) = (fields.first()?, fields.get(1)?);
    let mut kind = kind.chars();
    if !matches!(kind.next(), Some('d' | 'D')) || !kind.all(|c| "!-+=".contains(c)) {
        return None;
    }
    let path = path.replace("%t", "/run");
    let path = if let Some(rest) = path.strip_prefix("/var/run/") {
        format!("/run/{rest}")
    } else if path == "/var/lock" || path.starts_with("/var/lock/") {
        format!("/run/lock{}", &path["/var/lock".len()..])
    } else {
        path
    };
    let rest = path.strip_prefix("/run/")?.trim_end_matches('/');
    if path.contains('%')
        || rest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    let field = |i: usize| fields.get(i).copied().filter(|f| *f != "-");
    let mode = match field(2) {
        None => 0o755,
        Some(m) => u32::from_str_radix(m.trim_start_matches(['~', ':']), 8).ok()? & 0o7777,
    };
    let id = |value: Option<&str>, file: &str| -> Option<u32> {
        let Some(v) = value else { return Some(0) };
        let v = v.trim_start_matches(':');
        v.parse().ok().or_else(|| {
            file.lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == v)
                .and_then(|f| f[2].parse().ok())
        })
    };
    Some(RuntimeDir {
        path: format!("/run/{rest}"),
        mode,
        uid: id(field(3), passwd)?,
        gid: id(field(4), group)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0::/root:/bin/sh\npostgres:x:101:104::/var/lib/postgresql:/bin/bash\n";
    const GROUP: &str = "root:x:0:\npostgres:x:104:\n";

    fn line(l: &str) -> Option<RuntimeDir> {
        tmpfiles_line(l, PASSWD, GROUP)
    }

    #[test]
    fn tmpfiles_directories_under_run_with_modes_and_owners() {
        assert_eq!(
            line("d /run/postgresql 2775 postgres postgres - -"),
            Some(RuntimeDir {
                path: "/run/postgresql".into(),
                mode: 0o2775,
                uid: 101,
                gid: 104
            })
        );
        assert_eq!(
            line("D! /var/run/sshd 0755"),
            Some(RuntimeDir {
                path: "/run/sshd".into(),
                mode: 0o755,
                uid: 0,
                gid: 0
            })
        );
        assert_eq!(line("d %t/app - - -").unwrap().path, "/run/app");
        assert_eq!(
            line("d /var/lock/subsys 0755").unwrap().path,
            "/run/lock/subsys"
        );
        assert_eq!(line("d /run/x ~0700 1000 :1000").unwrap().mode, 0o700);
    }

    #[test]
    fn services_runtime_directories() {
        let unit = "[Unit]\nRuntimeDirectory=not-here\n[Service]\nUser=postgres\n\
                    RuntimeDirectory=pg pg/sub\nRuntimeDirectoryMode=2750\n";
        assert_eq!(
            unit_dirs(unit, PASSWD, GROUP),
            vec![
                RuntimeDir {
                    path: "/run/pg".into(),
                    mode: 0o2750,
                    uid: 101,
                    gid: 104
                },
                RuntimeDir {
                    path: "/run/pg/sub".into(),
                    mode: 0o2750,
                    uid: 101,
                    gid: 104
                }
            ]
        );
        let sshd = unit_dirs("[Service]\nRuntimeDirectory=sshd\n", PASSWD, GROUP);
        assert_eq!(
            (sshd[0].path.as_str(), sshd[0].mode, sshd[0].uid),
            ("/run/sshd", 0o755, 0)
        );
        assert!(unit_dirs("[Service]\nRuntimeDirectory=../etc %i\n", PASSWD, GROUP).is_empty());
        assert!(
            unit_dirs(
                "[Service]\nUser=nosuch\nRuntimeDirectory=x\n",
                PASSWD,
                GROUP
            )
            .is_empty()
        );
    }

    #[test]
    fn other_lines_are_left_alone() {
        for l in [
            "# d /run/commented",
            "",
            "f /run/file 0644",
            "L /run/link - - - - /x",
            "d /var/cache/man 0755 man man 1w",
            "d /run/../etc 0755",
            "d /run 0755",
            "d /run/%U/x 0700",
            "d /run/nobody 0755 nosuchuser",
            "d /run/bad 0999",
        ] {
            assert_eq!(line(l), None, "{l}");
        }
    }
}
