//! Host identity: the files a root shared by many hosts must not carry, because each
//! host needs its own — machine ids, host keys, seeds, logs, caches and backups that
//! installing packages leaves behind.
//!
//! This is the one list canopy keeps of them. Configuring a root strips them (an empty
//! `/etc/machine-id` stays, as systemd's first-boot convention wants); `canopy run` and
//! netbooted hosts create them in their per-host state (see [`PerHost`]).
//!
//! Patterns are absolute paths whose components may hold `*` (any run of characters
//! within one component); a last component `**` matches everything below a directory.
//!
//! ```
//! use canopy_protocol::{host_identity, Keep};
//!
//! let rule = host_identity("/etc/ssh/ssh_host_ed25519_key").unwrap();
//! assert_eq!(rule.keep, Keep::Nothing);
//! assert_eq!(host_identity("/etc/machine-id").unwrap().keep, Keep::EmptyFile);
//! assert!(host_identity("/etc/ssh/sshd_config").is_none());
//! ```

/// What a shared root keeps where a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Nothing: the entry is removed, whatever it is.
    Nothing,
    /// An empty regular file (a non-file entry is removed).
    EmptyFile,
    /// Directories, symlinks and empty files stay; regular files with content are
    /// removed (log directories must exist, with their owners, for daemons to start).
    EmptyFiles,
}

/// How a host gets its own copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PerHost {
    /// A new random 128-bit id as 32 lowercase hex digits and a newline (what
    /// `systemd-machine-id-setup` writes); systemd writes one at first boot into the
    /// empty file on its own.
    MachineId,
    /// This command, run in the host's root, makes it (when the program exists there).
    Command(&'static str),
    /// Nothing to do: the program that uses it creates it when missing.
    Created,
}

/// One entry of the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostIdentity {
    /// The paths it covers (see the module docs for the pattern syntax).
    pub pattern: &'static str,
    /// What a shared root keeps there.
    pub keep: Keep,
    /// How each host makes its own.
    pub per_host: PerHost,
    /// What it is, for listings.
    pub what: &'static str,
}

/// Every per-host path, in the order a listing shows them.
pub const HOST_IDENTITY: &[HostIdentity] = &[
    HostIdentity {
        pattern: "/etc/machine-id",
        keep: Keep::EmptyFile,
        per_host: PerHost::MachineId,
        what: "machine id",
    },
    HostIdentity {
        pattern: "/var/lib/dbus/machine-id",
        keep: Keep::Nothing,
        per_host: PerHost::Command("dbus-uuidgen --ensure"),
        what: "D-Bus machine id",
    },
    HostIdentity {
        pattern: "/etc/ssh/ssh_host_*_key",
        keep: Keep::Nothing,
        per_host: PerHost::Command("ssh-keygen -A"),
        what: "SSH host private key",
    },
    HostIdentity {
        pattern: "/etc/ssh/ssh_host_*_key.pub",
        keep: Keep::Nothing,
        per_host: PerHost::Command("ssh-keygen -A"),
        what: "SSH host public key",
    },
    HostIdentity {
        pattern: "/etc/ssl/private/ssl-cert-snakeoil.key",
        keep: Keep::Nothing,
        per_host: PerHost::Command("make-ssl-cert generate-default-snakeoil --force-overwrite"),
        what: "snakeoil TLS private key",
    },
    HostIdentity {
        pattern: "/etc/ssl/certs/ssl-cert-snakeoil.pem",
        keep: Keep::Nothing,
        per_host: PerHost::Command("make-ssl-cert generate-default-snakeoil --force-overwrite"),
        what: "snakeoil TLS certificate",
    },
    HostIdentity {
        pattern: "/var/lib/systemd/random-seed",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "random seed",
    },
    HostIdentity {
        pattern: "/var/lib/urandom/random-seed",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "random seed",
    },
    HostIdentity {
        pattern: "/var/lib/systemd/credential.secret",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "systemd credential key",
    },
    HostIdentity {
        pattern: "/var/lib/dhcp/*.leases",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "DHCP lease",
    },
    HostIdentity {
        pattern: "/var/log/**",
        keep: Keep::EmptyFiles,
        per_host: PerHost::Created,
        what: "log written while installing",
    },
    HostIdentity {
        pattern: "/var/cache/ldconfig/aux-cache",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "ldconfig's cache of file times",
    },
    HostIdentity {
        pattern: "/var/cache/apt/*.bin",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "apt package cache",
    },
    HostIdentity {
        pattern: "/var/cache/debconf/*-old",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "debconf database backup",
    },
    HostIdentity {
        pattern: "/var/lib/dpkg/*-old",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "dpkg database backup",
    },
    HostIdentity {
        pattern: "/etc/passwd-",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "account database backup",
    },
    HostIdentity {
        pattern: "/etc/group-",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "account database backup",
    },
    HostIdentity {
        pattern: "/etc/shadow-",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "account database backup",
    },
    HostIdentity {
        pattern: "/etc/gshadow-",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "account database backup",
    },
    HostIdentity {
        pattern: "/etc/subuid-",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "account database backup",
    },
    HostIdentity {
        pattern: "/etc/subgid-",
        keep: Keep::Nothing,
        per_host: PerHost::Created,
        what: "account database backup",
    },
];

/// The rule covering `path` (absolute, `/`-separated), if any.
pub fn host_identity(path: &str) -> Option<&'static HostIdentity> {
    HOST_IDENTITY.iter().find(|r| r.matches(path))
}

impl HostIdentity {
    /// Whether `path` is one of this rule's paths.
    pub fn matches(&self, path: &str) -> bool {
        let mut pat = self.pattern.split('/');
        let mut parts = path.split('/');
        loop {
            match (pat.next(), parts.next()) {
                (Some("**"), Some(part)) => return !part.is_empty(),
                (Some(p), Some(part)) if component(p.as_bytes(), part.as_bytes()) => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

/// Whether one path component matches a pattern component with `*` wildcards.
fn component(pat: &[u8], name: &[u8]) -> bool {
    match pat.iter().position(|&b| b == b'*') {
        None => pat == name,
        Some(star) => {
            let (head, rest) = (&pat[..star], &pat[star + 1..]);
            name.starts_with(head) && (head.len()..=name.len()).any(|i| component(rest, &name[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_what_they_name() {
        for (path, expected) in [
            ("/etc/machine-id", Some("/etc/machine-id")),
            ("/etc/ssh/ssh_host_rsa_key", Some("/etc/ssh/ssh_host_*_key")),
            (
                "/etc/ssh/ssh_host_rsa_key.pub",
                Some("/etc/ssh/ssh_host_*_key.pub"),
            ),
            ("/var/log/nginx/error.log", Some("/var/log/**")),
            ("/var/log", None),
            ("/var/lib/dpkg/status-old", Some("/var/lib/dpkg/*-old")),
            ("/var/lib/dpkg/status", None),
            ("/var/lib/dpkg/info/x-old/y", None),
            ("/etc/passwd-", Some("/etc/passwd-")),
            ("/etc/passwd", None),
            ("/etc/machine-id/x", None),
        ] {
            assert_eq!(host_identity(path).map(|r| r.pattern), expected, "{path}");
        }
        assert!(component(b"a*b*c", b"aXXbYc"));
        assert!(!component(b"a*b", b"aXXc"));
    }
}
