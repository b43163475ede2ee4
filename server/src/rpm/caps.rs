//! File capabilities: RPM headers write them as text (`cap_net_raw=ep`, libcap's
//! `cap_to_text` form); the kernel reads the binary `security.capability` xattr
//! (`struct vfs_cap_data`, revision 2), which is what `rpm -i` sets and what a root
//! must carry.

/// Capability names by number, as in `linux/capability.h`.
const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_FLAGS_EFFECTIVE: u32 = 1;

/// The three capability sets as bit masks.
#[derive(Default)]
struct Sets {
    effective: u64,
    permitted: u64,
    inheritable: u64,
}

/// The `security.capability` value for a textual capability set, or why it cannot be
/// one. An empty text means no capabilities (no xattr).
pub(crate) fn to_xattr(text: &str) -> Result<Option<Vec<u8>>, String> {
    let mut sets = Sets::default();
    for clause in text.split_whitespace() {
        let at = clause
            .find(['=', '+', '-'])
            .ok_or_else(|| format!("{clause:?} has no =, + or -"))?;
        let (names, mut rest) = clause.split_at(at);
        let mut mask = 0u64;
        if names.is_empty() || names.eq_ignore_ascii_case("all") {
            mask = (1u64 << NAMES.len()) - 1;
        } else {
            for name in names.split(',') {
                let lower = name.to_ascii_lowercase();
                let bare = lower.strip_prefix("cap_").unwrap_or(&lower);
                let bit = NAMES
                    .iter()
                    .position(|n| *n == bare)
                    .ok_or_else(|| format!("unknown capability {name:?}"))?;
                mask |= 1 << bit;
            }
        }
        // One or more "op flags" actions follow: `=ep`, `+e-i`.
        while let Some(op) = rest.chars().next() {
            rest = &rest[1..];
            let end = rest.find(['=', '+', '-']).unwrap_or(rest.len());
            let (flags, next) = rest.split_at(end);
            rest = next;
            if op == '=' {
                sets.effective &= !mask;
                sets.permitted &= !mask;
                sets.inheritable &= !mask;
            }
            for flag in flags.chars() {
                let set = match flag {
                    'e' => &mut sets.effective,
                    'p' => &mut sets.permitted,
                    'i' => &mut sets.inheritable,
                    other => return Err(format!("unknown capability flag {other:?}")),
                };
                if op == '-' {
                    *set &= !mask;
                } else {
                    *set |= mask;
                }
            }
        }
    }
    if sets.permitted == 0 && sets.inheritable == 0 {
        return Ok(None);
    }
    // The file format has one effective bit: raise every permitted and inheritable
    // capability at exec, or none.
    let mut magic = VFS_CAP_REVISION_2;
    if sets.effective != 0 {
        magic |= VFS_CAP_FLAGS_EFFECTIVE;
    }
    let mut out = Vec::with_capacity(20);
    out.extend(magic.to_le_bytes());
    for half in [0, 32] {
        out.extend(((sets.permitted >> half) as u32).to_le_bytes());
        out.extend(((sets.inheritable >> half) as u32).to_le_bytes());
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_setcap_writes() {
        // `setcap cap_net_raw=ep FILE` → getfattr -n security.capability -e hex:
        // 0x0100000200200000000000000000000000000000
        let v = to_xattr("cap_net_raw=ep").unwrap().unwrap();
        assert_eq!(hex::encode(&v), "0100000200200000000000000000000000000000");
        let v = to_xattr("cap_net_bind_service,cap_setuid+ip")
            .unwrap()
            .unwrap();
        assert_eq!(v[0], 0);
        assert_eq!(
            u32::from_le_bytes(v[4..8].try_into().unwrap()),
            (1 << 10) | (1 << 7)
        );
        assert_eq!(
            u32::from_le_bytes(v[8..12].try_into().unwrap()),
            (1 << 10) | (1 << 7)
        );
        assert_eq!(to_xattr("").unwrap(), None);
        assert_eq!(to_xattr("cap_bpf=ep").unwrap().unwrap()[12], 0x80);
        assert!(to_xattr("cap_nonsense=ep").is_err());
        assert!(to_xattr("cap_chown=x").is_err());
    }
}
