//! MOUNT version 3 (RFC 1813, appendix I): how a client gets the handle of an export's
//! top directory. Served on the NFS port; no mount table is kept (DUMP lists nothing,
//! UMNT forgets nothing), as handles need no state.

use super::export::{Error, Exports};
use super::rpc::Fault;
use super::xdr::{Reader, Writer};

/// The program number of MOUNT.
pub const PROGRAM: u32 = 100_005;
/// RFC 1813's bound on a mount path.
const MNTPATHLEN: usize = 1024;
/// The one credential flavor offered: AUTH_SYS.
const AUTH_SYS: u32 = 1;

fn status(e: Error) -> u32 {
    match e {
        Error::NoEnt | Error::Stale => 2,
        Error::NotDir => 20,
        Error::NameTooLong => 63,
        Error::Io => 10006,
        Error::IsDir | Error::Inval | Error::BadHandle | Error::BadCookie | Error::TooSmall => 22,
    }
}

/// Runs procedure `proc_` with `args`, writing its results to `out`.
pub fn call(exports: &Exports, proc_: u32, args: &[u8], out: &mut Writer) -> Result<(), Fault> {
    let mut r = Reader::new(args);
    match proc_ {
        // NULL, UMNTALL: nothing to do.
        0 | 4 => r.finish()?,
        1 => {
            let path = r.opaque(MNTPATHLEN)?;
            r.finish()?;
            match exports.mount(path) {
                Ok(top) => {
                    out.u32(0)
                        .opaque(&Exports::handle(&top))
                        .u32(1)
                        .u32(AUTH_SYS);
                    tracing::info!("mounted {}", String::from_utf8_lossy(path));
                }
                Err(e) => {
                    out.u32(status(e));
                }
            }
        }
        2 => {
            r.finish()?;
            out.bool(false);
        }
        3 => {
            r.opaque(MNTPATHLEN)?;
            r.finish()?;
        }
        5 => {
            r.finish()?;
            // Every root, to every host (an empty group list).
            for name in exports
                .roots()
                .map(|r| r.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                out.bool(true)
                    .opaque(format!("/{name}").as_bytes())
                    .bool(false);
            }
            out.bool(false);
        }
        _ => return Err(Fault::NoProcedure),
    }
    Ok(())
}
