//! Serving a connection set up by another process: the INIT replayed into a new FUSE
//! session, and the kernel asked to resend what the old process had not answered.

use crate::fs::CanopyFs;
use crate::open_files::KernelInit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The INIT request the kernel sent, as bytes of `/dev/fuse`.
fn init_request(init: &KernelInit) -> Vec<u8> {
    const FUSE_INIT: u32 = 26;
    const FUSE_INIT_EXT: u64 = 1 << 30;
    let flags = init.flags | FUSE_INIT_EXT;
    let mut b = Vec::with_capacity(104);
    // fuse_in_header: len, opcode, unique, nodeid, uid, gid, pid, padding.
    b.extend_from_slice(&104u32.to_ne_bytes());
    b.extend_from_slice(&FUSE_INIT.to_ne_bytes());
    b.extend_from_slice(&1u64.to_ne_bytes());
    b.extend_from_slice(&0u64.to_ne_bytes());
    for _ in 0..4 {
        b.extend_from_slice(&0u32.to_ne_bytes());
    }
    // fuse_init_in: major, minor, max_readahead, flags, flags2, unused[11].
    b.extend_from_slice(&init.major.to_ne_bytes());
    b.extend_from_slice(&init.minor.to_ne_bytes());
    b.extend_from_slice(&init.max_readahead.to_ne_bytes());
    b.extend_from_slice(&(flags as u32).to_ne_bytes());
    b.extend_from_slice(&((flags >> 32) as u32).to_ne_bytes());
    b.resize(104, 0);
    b
}

/// A FUSE session serving `fs` on the live connection `device`, whose kernel sent
/// `init` when it was set up.
pub(crate) fn resume(
    fs: CanopyFs,
    device: OwnedFd,
    init: &KernelInit,
    config: fuser::Config,
) -> std::io::Result<fuser::Session<CanopyFs>> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    nix::unistd::write(&ours, &init_request(init))?;
    let session = fuser::Session::from_fd(fs, theirs, fuser::SessionACL::All, config.clone())?;
    // fuser's answer is for the kernel of the first process: it heard one already.
    let mut answer = [0u8; 4096];
    let n = nix::unistd::read(&ours, &mut answer)?;
    if n < 16 || i32::from_ne_bytes(answer[4..8].try_into().expect("4 bytes")) != 0 {
        return Err(std::io::Error::other(
            "the FUSE session refused the INIT replayed",
        ));
    }
    // The session reads and writes the connection from now on, and clones it for its
    // other threads when it runs.
    // SAFETY: dup2 onto a descriptor the session owns; it stays open (now the device).
    if unsafe { libc::dup2(device.as_raw_fd(), session.as_fd().as_raw_fd()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(session)
}

/// Asks the kernel to queue again every request read from the connection and not
/// answered (by a process that is gone).
pub(crate) fn resend(device: &impl AsFd) -> std::io::Result<()> {
    const FUSE_NOTIFY_RESEND: i32 = 7;
    let mut out = Vec::with_capacity(16);
    // fuse_out_header: len, error (the notification code), unique 0.
    out.extend_from_slice(&16u32.to_ne_bytes());
    out.extend_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes());
    out.extend_from_slice(&0u64.to_ne_bytes());
    nix::unistd::write(device, &out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_replayed_carries_the_offer() {
        let init = KernelInit {
            major: 7,
            minor: 45,
            max_readahead: 131072,
            flags: (1 << 37) | 1,
        };
        let b = init_request(&init);
        assert_eq!(b.len(), 104);
        assert_eq!(u32::from_ne_bytes(b[4..8].try_into().unwrap()), 26);
        assert_eq!(u32::from_ne_bytes(b[40..44].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(b[44..48].try_into().unwrap()), 45);
        assert_eq!(
            u32::from_ne_bytes(b[52..56].try_into().unwrap()),
            1 | 1 << 30
        );
        assert_eq!(u32::from_ne_bytes(b[56..60].try_into().unwrap()), 1 << 5);
    }
}
