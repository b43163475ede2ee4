//! The setup steps the child runs as root of the sandbox's namespaces (directories,
//! owners, mounts, FUSE, the new root, loopback, hostname), each a few system calls
//! on what the parent prepared.

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;
use std::ffi::CString;
use std::os::fd::RawFd;

/// One setup step, run as root of the sandbox's namespaces.
pub(crate) enum Step {
    /// Stops mounts propagating back to the caller's namespace.
    Private,
    /// Each path, in order, is a directory: created with `mode` if missing; a symlink
    /// or other file there fails the step.
    Dirs { paths: Vec<CString>, mode: u32 },
    /// `lchown(2)` then `chmod(2)` (a change of owner clears set-id bits); an id the
    /// user namespace does not map (EINVAL) leaves the owner as it was.
    Owner {
        path: CString,
        uid: u32,
        gid: u32,
        mode: u32,
    },
    /// An empty file (a mount point for a bound file), created if missing.
    File { path: CString },
    /// `mount(2)`.
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: MsFlags,
        data: Option<CString>,
    },
    /// Opens `/dev/fuse` (as the namespace's root: the kernel wants the opener in the
    /// mount's user namespace), mounts it at `target` with `fd=N,` and `options`, and
    /// sends the descriptor to the caller over unix socket `channel`.
    Fuse {
        target: CString,
        options: CString,
        channel: RawFd,
    },
    /// Remounts a bind mount read-only, keeping the flags the kernel locks.
    ReadOnly { target: CString },
    /// `symlink(2)`.
    Symlink { points_to: CString, link: CString },
    /// Makes `root` the new `/` and detaches the old one.
    Pivot { root: CString },
    /// Brings the new network namespace's loopback interface up.
    Loopback,
    /// `sethostname(2)`.
    Hostname(CString),
}

impl Step {
    pub(crate) fn mount(
        source: &str,
        target: &std::path::Path,
        fstype: &str,
        flags: MsFlags,
        data: Option<String>,
    ) -> Step {
        use std::os::unix::ffi::OsStrExt;
        Step::Mount {
            source: Some(CString::new(source).expect("static source")),
            target: CString::new(target.as_os_str().as_bytes()).expect("checked for NUL"),
            fstype: Some(CString::new(fstype).expect("static fstype")),
            flags,
            data: data.map(|d| CString::new(d).expect("options have no NUL")),
        }
    }

    pub(super) fn run(&self) -> Result<(), Errno> {
        match self {
            Step::Private => nix::mount::mount(
                None::<&CStr0>,
                c"/",
                None::<&CStr0>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&CStr0>,
            ),
            Step::Dirs { paths, mode } => {
                for p in paths {
                    dir(p, *mode)?;
                }
                Ok(())
            }
            Step::File { path } => file(path),
            Step::Owner {
                path,
                uid,
                gid,
                mode,
            } => {
                match nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    path.as_c_str(),
                    Some(nix::unistd::Uid::from_raw(*uid)),
                    Some(nix::unistd::Gid::from_raw(*gid)),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                ) {
                    Ok(()) | Err(Errno::EINVAL) => {}
                    Err(e) => return Err(e),
                }
                nix::sys::stat::fchmodat(
                    nix::fcntl::AT_FDCWD,
                    path.as_c_str(),
                    Mode::from_bits_truncate(*mode),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
            }
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => nix::mount::mount(
                source.as_deref(),
                target.as_c_str(),
                fstype.as_deref(),
                *flags,
                data.as_deref(),
            ),
            Step::Fuse {
                target,
                options,
                channel,
            } => fuse(target, options, *channel),
            Step::ReadOnly { target } => read_only(target),
            Step::Symlink { points_to, link } => {
                nix::unistd::symlinkat(points_to.as_c_str(), nix::fcntl::AT_FDCWD, link.as_c_str())
            }
            Step::Pivot { root } => pivot(root),
            Step::Loopback => loopback(),
            Step::Hostname(name) => {
                // SAFETY: name is a valid C string of the given length.
                Errno::result(unsafe { libc::sethostname(name.as_ptr(), name.as_bytes().len()) })
                    .map(drop)
            }
        }
    }
}

type CStr0 = std::ffi::CStr;

fn dir(path: &CString, mode: u32) -> Result<(), Errno> {
    match nix::sys::stat::lstat(path.as_c_str()) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(()),
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => Err(Errno::ELOOP),
        Ok(_) => Err(Errno::ENOTDIR),
        Err(Errno::ENOENT) => {
            nix::unistd::mkdir(path.as_c_str(), Mode::from_bits_truncate(mode))?;
            // mkdir applies the umask; the mode asked for is the mode meant.
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                path.as_c_str(),
                Mode::from_bits_truncate(mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
        }
        Err(e) => Err(e),
    }
}

fn file(path: &CString) -> Result<(), Errno> {
    match nix::sys::stat::lstat(path.as_c_str()) {
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => Err(Errno::ELOOP),
        Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Err(Errno::EISDIR),
        Ok(_) => Ok(()),
        Err(Errno::ENOENT) => {
            let fd = nix::fcntl::open(
                path.as_c_str(),
                nix::fcntl::OFlag::O_CREAT
                    | nix::fcntl::OFlag::O_EXCL
                    | nix::fcntl::OFlag::O_WRONLY
                    | nix::fcntl::OFlag::O_CLOEXEC
                    | nix::fcntl::OFlag::O_NOFOLLOW,
                Mode::from_bits_truncate(0o644),
            )?;
            drop(fd);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Longest option string of a FUSE mount, with room for `fd=N,` in a stack buffer.
pub(crate) const FUSE_OPTIONS_MAX: usize = 480;

fn fuse(target: &CString, options: &CString, channel: RawFd) -> Result<(), Errno> {
    // SAFETY: open with a static path; the descriptor is ours.
    let fd = Errno::result(unsafe {
        libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC)
    })?;
    // "fd=N," then the options, formatted without allocating.
    let mut data = [0u8; FUSE_OPTIONS_MAX + 32];
    let mut len = 0;
    for &b in b"fd=" {
        data[len] = b;
        len += 1;
    }
    let mut digits = [0u8; 12];
    let (mut n, mut count) = (fd as u32, 0);
    loop {
        digits[count] = b'0' + (n % 10) as u8;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in (0..count).rev() {
        data[len] = digits[i];
        len += 1;
    }
    data[len] = b',';
    len += 1;
    for &b in options.as_bytes() {
        data[len] = b;
        len += 1;
    }
    // SAFETY: data is NUL-terminated (zeroed, and shorter than the buffer).
    let result = unsafe {
        libc::mount(
            c"canopy".as_ptr(),
            target.as_ptr(),
            c"fuse.canopy".as_ptr(),
            libc::MS_RDONLY | libc::MS_NOATIME,
            data.as_ptr().cast(),
        )
    };
    let sent = Errno::result(result).and_then(|_| send_fd(channel, fd));
    // SAFETY: closing our own descriptor; the caller has its copy.
    unsafe { libc::close(fd) };
    sent
}

/// Sends descriptor `fd` over unix socket `channel` (SCM_RIGHTS), without allocating.
fn send_fd(channel: RawFd, fd: RawFd) -> Result<(), Errno> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // Aligned room for one cmsghdr carrying one int.
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call, and
    // the control buffer has room for CMSG_SPACE(sizeof(int)).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>(), fd);
        Errno::result(libc::sendmsg(channel, &msg, libc::MSG_NOSIGNAL)).map(drop)
    }
}

fn read_only(target: &CString) -> Result<(), Errno> {
    let vfs = nix::sys::statvfs::statvfs(target.as_c_str())?;
    let have = vfs.flags();
    use nix::sys::statvfs::FsFlags;
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if have.contains(fs) {
            flags |= ms;
        }
    }
    nix::mount::mount(
        None::<&CStr0>,
        target.as_c_str(),
        None::<&CStr0>,
        flags,
        None::<&CStr0>,
    )
}

fn pivot(root: &CString) -> Result<(), Errno> {
    // pivot_root needs the new root to be a mount point; binding it onto itself makes it one.
    nix::mount::mount(
        Some(root.as_c_str()),
        root.as_c_str(),
        None::<&CStr0>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&CStr0>,
    )?;
    nix::unistd::chdir(root.as_c_str())?;
    // Stacks the old root under the new one at ".", then detaches it: no directory is
    // needed in the root for the old one.
    nix::unistd::pivot_root(c".", c".")?;
    nix::mount::umount2(c".", MntFlags::MNT_DETACH)?;
    nix::unistd::chdir(c"/")
}

fn loopback() -> Result<(), Errno> {
    // SAFETY: plain socket and ioctl calls on a zeroed ifreq naming "lo".
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(Errno::last());
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) < 0 {
            result = Err(Errno::last());
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) < 0 {
                result = Err(Errno::last());
            }
        }
        libc::close(sock);
        result
    }
}
