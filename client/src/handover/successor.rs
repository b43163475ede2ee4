//! The successor's side: asking the live process for its mount, and taking it.

use super::socket::socket_path;
use super::wire::{Message, STEP_WAIT, receive, receive_fd, send};
use super::{Offer, Options, Shown};
use crate::open_files::{FilesState, KernelInit};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Why a hand-over could not be done.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The live process runs with other options.
    #[error(
        "{mountpoint} is already a canopy mount, served with other options: {reason}. To \
         restart it with new options, stop it first (`systemctl restart canopy-mount`, or \
         `umount {mountpoint}` and start canopy mount again); to take it over live, give the \
         same options"
    )]
    Refused {
        /// The mountpoint.
        mountpoint: String,
        /// Which options differ.
        reason: String,
    },
    /// The exchange failed.
    #[error("taking over the canopy mount at {mountpoint}: {reason}")]
    Failed {
        /// The mountpoint.
        mountpoint: String,
        /// What went wrong.
        reason: String,
    },
}

/// A hand-over under way: the live process waits for [`Pending::take`].
pub struct Pending {
    stream: UnixStream,
    mountpoint: String,
    /// What to load before taking over.
    pub offer: Offer,
}

/// What a successor receives.
pub struct Taken {
    /// The connection.
    pub device: OwnedFd,
    /// The kernel's INIT offer.
    pub init: KernelInit,
    /// The open files.
    pub files: FilesState,
    /// Every version shown, oldest first (may have grown since the offer).
    pub history: Vec<Shown>,
}

/// Asks the process serving `mountpoint` to hand it over. `Ok(None)`: no process
/// answers at its socket.
pub fn ask(mountpoint: &Path, options: &Options) -> Result<Option<Pending>, HandoverError> {
    let path = socket_path(mountpoint);
    let failed = |reason: String| HandoverError::Failed {
        mountpoint: mountpoint.display().to_string(),
        reason,
    };
    let Ok(mut stream) = UnixStream::connect(&path) else {
        return Ok(None);
    };
    let io = |e: std::io::Error| failed(format!("{}: {e}", path.display()));
    stream.set_read_timeout(Some(STEP_WAIT)).map_err(io)?;
    stream.set_write_timeout(Some(STEP_WAIT)).map_err(io)?;
    send(
        &mut stream,
        &Message::Hello {
            options: options.clone(),
            pid: std::process::id(),
        },
    )
    .map_err(io)?;
    match receive(&mut stream).map_err(io)? {
        Message::Offer(offer) => Ok(Some(Pending {
            stream,
            mountpoint: mountpoint.display().to_string(),
            offer,
        })),
        Message::Refused { reason } => Err(HandoverError::Refused {
            mountpoint: mountpoint.display().to_string(),
            reason,
        }),
        _ => Err(failed("the live process spoke out of turn".into())),
    }
}

impl Pending {
    /// Takes the connection over: the live process sends it and its state, and exits.
    /// Returns once it is gone.
    pub fn take(mut self) -> Result<Taken, HandoverError> {
        let mountpoint = self.mountpoint.clone();
        let failed = |reason: String| HandoverError::Failed {
            mountpoint: mountpoint.clone(),
            reason,
        };
        let io = |e: std::io::Error| failed(e.to_string());
        send(&mut self.stream, &Message::Go).map_err(io)?;
        let device = receive_fd(&self.stream).map_err(io)?;
        let Message::Take {
            init,
            files,
            history,
        } = receive(&mut self.stream).map_err(io)?
        else {
            return Err(failed("the live process spoke out of turn".into()));
        };
        send(&mut self.stream, &Message::Taken).map_err(io)?;
        // The live process exits now: its end closes when it is gone, and with it the
        // cache lock it holds.
        let mut rest = Vec::new();
        let _ = self.stream.read_to_end(&mut rest);
        Ok(Taken {
            device,
            init,
            files,
            history,
        })
    }
}
