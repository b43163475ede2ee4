//! The hand-over's messages on its unix socket: length-prefixed JSON, and the
//! `/dev/fuse` descriptor as SCM_RIGHTS.

use super::{Offer, Options, Shown};
use crate::open_files::{FilesState, KernelInit};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// How long each other step of the exchange may take.
pub(super) const STEP_WAIT: Duration = Duration::from_secs(20);
/// Bound on one message.
const MAX_MESSAGE: u32 = 256 << 20;
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(super) enum Message {
    Hello {
        options: Options,
        pid: u32,
    },
    Refused {
        reason: String,
    },
    Offer(Offer),
    Go,
    Take {
        init: KernelInit,
        files: FilesState,
        history: Vec<Shown>,
    },
    Taken,
    /// Not a hand-over: what does the live process show?
    Query,
    /// The answer to `Query`.
    Serves {
        options: Options,
        history: Vec<Shown>,
    },
}

pub(super) fn send(stream: &mut UnixStream, message: &Message) -> std::io::Result<()> {
    let body = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    stream.write_all(&frame)
}

pub(super) fn receive(stream: &mut UnixStream) -> std::io::Result<Message> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_MESSAGE {
        return Err(std::io::Error::other(format!(
            "hand-over message of {len} bytes"
        )));
    }
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body)?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

/// Sends descriptor `fd` with one byte.
pub(super) fn send_fd(stream: &UnixStream, fd: &impl AsFd) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let raw = [fd.as_fd().as_raw_fd()];
    let iov = [std::io::IoSlice::new(b"F")];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// Receives the descriptor [`send_fd`] sent.
pub(super) fn receive_fd(stream: &UnixStream) -> std::io::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel just installed this descriptor for us; nothing else
            // owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err(std::io::Error::other(
        "no descriptor in the hand-over message",
    ))
}
