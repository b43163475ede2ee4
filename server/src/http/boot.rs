//! The netboot routes: an iPXE script per root, and canopy's boot script archive (see
//! [`crate::netboot`]).

use super::answer::{Answer, Source, Status};
use super::conn::Request;
use super::{App, IMMUTABLE, blocking, no_root, root_name, store_error};
use crate::netboot;
use bytes::Bytes;
use std::sync::Arc;

/// `GET /v1/roots/{name}/boot.ipxe`: an iPXE script that boots a diskless node from the
/// root's current commit: kernel and initramfs by their object URLs, `/` from
/// `/NAME@COMMIT` of the NFS server named by `?nfs=HOST[:PORT]`, else by the host the
/// script was asked from; `?args=` puts more arguments first (`console=ttyS0`). The
/// commit is pinned, so a node runs on one version until it reboots, and gets the
/// newest then.
pub(super) async fn ipxe(app: &Arc<App>, req: &Request, name: &str) -> Result<Answer, Answer> {
    let name = root_name(name)?;
    let asked = netboot::query_value(&req.query, "nfs");
    let args = netboot::query_value(&req.query, "args");
    if let Some(args) = args.as_ref().filter(|a| !netboot::valid_args(a)) {
        return Err(Answer::error(
            Status::BadRequest,
            "bad-request",
            format!(
                "args={args:?}: kernel arguments are words of letters, digits and ,.=_:/@+- \
                 separated by single spaces"
            ),
        ));
    }
    let host = req.host.as_deref().map(|h| netboot::host_of(h).to_string());
    let Some(server) = asked.or(host).filter(|s| netboot::valid_server(s)) else {
        return Err(Answer::error(
            Status::BadRequest,
            "bad-request",
            "name the NFS server: ?nfs=HOST or ?nfs=HOST:PORT",
        ));
    };
    let store = app.store.clone();
    let script = blocking(move || {
        let head = store
            .root_ref(&name)
            .map_err(store_error)?
            .ok_or_else(|| no_root(&name))?;
        let tree = store.commit(&head).map_err(store_error)?.body.tree;
        let files = netboot::boot_files(&store, &tree, &name.to_string())
            .map_err(|e| Answer::error(Status::NotFound, "not-bootable", e.to_string()))?;
        let at = netboot::Locations {
            kernel: format!("/v1/objects/{}", files.kernel.blob),
            initrd: format!("/v1/objects/{}", files.initrd.blob),
            boot_script: format!("/v1/netboot/{}", netboot::boot_script_name()),
        };
        let mut cmdline = netboot::cmdline(&server, &format!("/{name}@{head}"));
        if let Some(args) = args {
            cmdline = format!("{args} {cmdline}");
        }
        Ok(netboot::ipxe_script(
            &at,
            &cmdline,
            &format!(
                "canopy: root {name}, commit {head}, kernel {}",
                files.version
            ),
        ))
    })
    .await?;
    let n = script.len() as u64;
    Ok(Answer::new(Status::Ok)
        .header("content-type", "text/plain; charset=utf-8")
        // Each boot must see the root's current commit.
        .header("cache-control", "no-store")
        .body(Source::Memory(Bytes::from(script)), n))
}

/// `GET /v1/netboot/{file}`: canopy's boot script archive, the second initramfs of a
/// netbooted node; its name holds its content's hash, so it is cached for good.
pub(super) fn script(file: &str) -> Result<Answer, Answer> {
    if file != netboot::boot_script_name() {
        return Err(Answer::error(
            Status::NotFound,
            "not-found",
            format!(
                "no netboot file {file:?}; this server has {}",
                netboot::boot_script_name()
            ),
        ));
    }
    let cpio = netboot::boot_script_cpio();
    Ok(Answer::new(Status::Ok)
        .header("content-type", "application/octet-stream")
        .header("cache-control", IMMUTABLE)
        .body(Source::Memory(Bytes::from_static(cpio)), cpio.len() as u64))
}
