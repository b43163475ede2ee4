//! Container images in: OCI layouts built with `umoci` (gzip layers, per-file
//! whiteouts) and by `layout.rs` (opaque directories, zstd and plain layers) from real
//! Debian packages, compared with `umoci unpack`; `docker save` from a real dockerd,
//! compared with `docker export`; layers shared between images imported once.

use crate::corpus::{DIR, FILE, Header, Tar};
use crate::layout::{self, Comp, Layer};
use crate::mount::SMALL;
use crate::util::{Canopy, assert_same_tree, cmd, dpkg_extract, write_file};
use crate::{debs, volume::Dockerd};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// `canopy import oci|docker-archive PATH --name ROOT --json`.
fn import(env: &Canopy, format: &str, path: &Path, root: &str, extra: &[&str]) -> Value {
    let mut args: Vec<std::ffi::OsString> = vec!["import".into(), format.into(), path.into()];
    args.extend(["--name".into(), root.into()]);
    args.extend(extra.iter().map(|a| a.into()));
    env.json(args)
}

/// Whether each layer of an import was new.
fn imported(report: &Value) -> Vec<bool> {
    report["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["imported"].as_bool().unwrap())
        .collect()
}

/// The object files of a store.
fn objects(env: &Canopy) -> BTreeSet<PathBuf> {
    crate::util::walk(&env.store().join("objects"))
        .into_iter()
        .filter(|p| p.components().count() == 2)
        .collect()
}

/// Of `paths` (objects of `env`'s store), those that are file contents, not canopy's
/// own encoded trees, packages and commits.
fn blobs(env: &Canopy, paths: &BTreeSet<PathBuf>) -> usize {
    paths
        .iter()
        .filter(|p| {
            let bytes = fs::read(env.store().join("objects").join(p)).unwrap();
            !(bytes.starts_with(b"CNPT")
                || bytes.starts_with(b"CNPP")
                || bytes.starts_with(b"CNPC"))
        })
        .count()
}

/// `DIR.tar` of directory `dir`, owners as numbers.
fn tar_of(env: &Canopy, dir: &Path) -> PathBuf {
    let tar = env.path(format!(
        "{}.tar",
        dir.file_name().unwrap().to_string_lossy()
    ));
    cmd("tar")
        .args(["--numeric-owner", "-C"])
        .arg(dir)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .success();
    tar
}

/// A layer with an opaque /etc/skel (holding only `.profile-site`), a new setuid file
/// owned by 1000:1000, and a whiteout of /usr/share/doc/libc6.
fn opaque_layer() -> Vec<u8> {
    let mut t = Tar::new();
    t.dir("etc/")
        .dir("etc/skel/")
        .file("etc/skel/.wh..wh..opq", b"");
    t.file("etc/skel/.profile-site", b"export SITE=1\n");
    t.dir("usr/").dir("usr/share/").dir("usr/share/doc/");
    t.file("usr/share/doc/.wh.libc6", b"");
    t.dir("opt/");
    t.push(
        &Header {
            path: b"opt/tool",
            kind: FILE,
            mode: 0o4755,
            uid: 1000,
            gid: 1000,
            ..Header::default()
        },
        b"#!/bin/bash\necho tool\n",
    );
    t.push(
        &Header {
            path: b"opt/shared/",
            kind: DIR,
            mode: 0o1777,
            ..Header::default()
        },
        b"",
    );
    t.finish()
}

/// An OCI layout `DIR/layout` with image `app`: SMALL's packages (umoci, gzip), then a
/// per-file whiteout of /etc/bash.bashrc and a replaced /etc/issue (umoci, gzip), then
/// [`opaque_layer`] (layout.rs, gzip); Env, Cmd, WorkingDir and Labels
/// set with `umoci config`. Returns the layout and `umoci unpack`'s rootfs.
pub(crate) fn umoci_image(env: &Canopy) -> (PathBuf, PathBuf) {
    let layout = env.path("layout");
    let image = format!("{}:app", layout.display());
    cmd("umoci")
        .args(["init", "--layout"])
        .arg(&layout)
        .success();
    cmd("umoci").args(["new", "--image", &image]).success();
    let base = env.mkdir("base");
    dpkg_extract(&debs::paths(SMALL), &base);
    cmd("umoci")
        .args(["insert", "--image", &image])
        .arg(&base)
        .arg("/")
        .success();
    cmd("umoci")
        .args([
            "insert",
            "--image",
            &image,
            "--whiteout",
            "/etc/bash.bashrc",
        ])
        .success();
    let issue = env.path("issue");
    write_file(&issue, b"canopy test image\n", 0o600);
    cmd("umoci")
        .args(["insert", "--image", &image])
        .arg(&issue)
        .arg("/etc/issue")
        .success();
    cmd("umoci")
        .args([
            "config",
            "--image",
            &image,
            "--config.env",
            "GREETING=hello",
        ])
        .args(["--config.cmd", "/bin/bash", "--config.cmd", "-c"])
        .args(["--config.cmd", "echo $GREETING from $(pwd)"])
        .args(["--config.workingdir", "/opt"])
        .args([
            "--config.label",
            "INSTALL=/bin/bash -c 'echo install IMAGE as NAME'",
        ])
        .args(["--config.exposedports", "80/tcp"])
        .success();
    // The opaque-directory layer umoci cannot write, appended to umoci's image.
    let mut img = layout::read(&layout, "app");
    img.layers.push(Layer::new(&opaque_layer(), Comp::Gzip));
    fs::remove_file(layout.join("index.json")).unwrap();
    img.write(&layout, "app");
    let bundle = env.path("bundle");
    cmd("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle)
        .success();
    (layout, bundle.join("rootfs"))
}

#[test]
fn oci_layout_matches_umoci_unpack() {
    let env = Canopy::init("image-umoci");
    let (layout, rootfs) = umoci_image(&env);
    assert!(
        !rootfs.join("etc/bash.bashrc").exists(),
        "umoci applied the whiteout"
    );

    let report = import(&env, "oci", &layout, "app", &[]);
    assert_eq!(imported(&report), [true; 4], "{report}");
    let out = env.path("checkout");
    env.cmd(["checkout", "app"]).arg(&out).success();
    assert_same_tree(&rootfs, &out);
    assert_eq!(
        fs::read_dir(out.join("etc/skel")).unwrap().count(),
        1,
        "the opaque directory keeps only its own layer's file"
    );
    assert!(!out.join("usr/share/doc/libc6").exists());

    // The configuration is in the commit, and `roots log` shows it.
    let log = env.json(["roots", "log", "app"]);
    let image = &log[0]["image"];
    assert_eq!(image["Env"][0], "GREETING=hello", "{log}");
    assert_eq!(image["WorkingDir"], "/opt");
    assert_eq!(image["Cmd"][2], "echo $GREETING from $(pwd)");
    assert_eq!(
        image["Labels"]["INSTALL"],
        "/bin/bash -c 'echo install IMAGE as NAME'"
    );
    assert_eq!(image["ExposedPorts"][0], "80/tcp");
    assert_eq!(image["Platform"], "linux/amd64");
    assert_eq!(log[0]["packages"].as_array().unwrap().len(), 4);
    let text = env.stdout(["roots", "log", "app"]);
    assert!(
        text.contains("Label INSTALL=/bin/bash -c 'echo install IMAGE as NAME'"),
        "{text}"
    );

    // Asked for another platform, an image whose index names none is refused by what
    // its config says, and nothing changes.
    let before = env.snapshot();
    let out = env
        .cmd(["import", "oci"])
        .arg(&layout)
        .args(["--name", "app-arm", "--platform", "linux/arm64"])
        .failure(1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("linux/amd64") && err.contains("linux/arm64"),
        "{err}"
    );
    before.assert_unchanged("importing an image for another platform");

    // The same image again writes nothing; a tar of the layout is the same image.
    let again = import(&env, "oci", &layout, "app", &[]);
    assert_eq!(again["new_commit"], false);
    assert_eq!(imported(&again), [false; 4]);
    before.assert_unchanged("importing the same image again");
    let tarball = env.path("layout.tar");
    cmd("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .success();
    let from_tar = import(&env, "oci", &tarball, "app-tar", &[]);
    assert_eq!(imported(&from_tar), [false; 4]);
    assert_eq!(from_tar["new_objects"], 1, "only a commit: {from_tar}");

    // zstd and plain layers: the same diff_ids, so the same root, in a store of its own.
    let other = Canopy::init("image-zstd");
    let mut img = layout::read(&layout, "app");
    let tars: Vec<Vec<u8>> = [&img.layers[2], &img.layers[3]]
        .iter()
        .map(|l| layout::decompress(&l.blob))
        .collect();
    img.layers[2] = Layer::new(&tars[0], Comp::None);
    img.layers[3] = Layer::new(&tars[1], Comp::Zstd);
    let zstd_layout = other.path("zstd-layout");
    img.write(&zstd_layout, "app");
    let report = import(&other, "oci", &zstd_layout, "app", &[]);
    assert_eq!(imported(&report), [true; 4]);
    let out = other.path("checkout");
    other.cmd(["checkout", "app"]).arg(&out).success();
    assert_same_tree(&rootfs, &out);
    env.fsck_clean();
    other.fsck_clean();
}

#[test]
fn images_sharing_a_base_layer_share_its_objects() {
    let env = Canopy::init("image-shared");
    let base = env.mkdir("base");
    dpkg_extract(&debs::paths(&["base-files", "libc6"]), &base);
    let base_layer = Layer::new(&fs::read(tar_of(&env, &base)).unwrap(), Comp::Gzip);
    let mut web = Tar::new();
    web.dir("srv/").file("srv/index.html", b"<h1>web</h1>\n");
    web.file("srv/style.css", b"h1 { color: green }\n");
    web.file("srv/copy-of-index.html", b"<h1>web</h1>\n");
    let mut db = Tar::new();
    db.dir("var/").dir("var/db/").file("var/db/data", b"rows\n");
    // A file whose content base-files already has: no new object for it.
    let version = fs::read(base.join("etc/debian_version")).unwrap();
    db.file("var/db/version", &version);
    let dir = env.path("images");
    layout::Image::new(vec![
        base_layer.clone(),
        Layer::new(&web.finish(), Comp::Gzip),
    ])
    .write(&dir, "web");
    layout::Image::new(vec![base_layer, Layer::new(&db.finish(), Comp::Zstd)]).write(&dir, "db");

    let first = import(&env, "oci", &dir, "web", &["--ref", "web"]);
    assert_eq!(imported(&first), [true, true]);
    let before = objects(&env);
    let second = import(&env, "oci", &dir, "db", &["--ref", "db"]);
    assert_eq!(imported(&second), [false, true], "{second}");
    let added: BTreeSet<PathBuf> = objects(&env).difference(&before).cloned().collect();
    // One new file content (var/db/data): the version's is base-files' own.
    assert_eq!(blobs(&env, &added), 1, "new blobs of the second image");
    assert_eq!(second["new_objects"], added.len() as u64, "{second}");
    assert_eq!(second["layers"][1]["entries"], 4);
    // Without --ref, a layout of two images is refused.
    let out = env
        .cmd(["import", "oci"])
        .arg(&dir)
        .args(["--name", "x"])
        .failure(1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("2 images match; pick one with --ref"),
        "{stderr}"
    );
    env.fsck_clean();
}

/// The paths `docker create` adds to every container, which `docker export` shows.
const DOCKER_ADDED: &[&str] = &[
    ".dockerenv",
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/mtab",
    "dev",
    "proc",
    "sys",
];

#[test]
fn docker_save_matches_docker_export() {
    let env = Canopy::init("image-docker");
    let dockerd = Dockerd::start(&env);
    let base = env.mkdir("base");
    dpkg_extract(&debs::paths(debs::ROOT_PACKAGES), &base);
    dockerd
        .docker(["import"])
        .arg(tar_of(&env, &base))
        .arg("canopy-test/base:1")
        .success();
    let context = env.mkdir("context");
    fs::write(
        context.join("Dockerfile"),
        "FROM canopy-test/base:1\n\
         RUN [\"/bin/bash\", \"-c\", \"rm -r /etc/skel /usr/share/doc/bash && mkdir -p /srv/www && echo hello > /srv/www/index.html && chmod 4750 /srv/www/index.html && chown 33:33 /srv/www\"]\n\
         LABEL INSTALL=\"/bin/echo install IMAGE as NAME\"\n\
         ENV GREETING=hi\n\
         WORKDIR /srv/www\n\
         CMD [\"/bin/bash\", \"-c\", \"echo $GREETING\"]\n",
    )
    .unwrap();
    dockerd
        .docker(["build", "--network", "none", "-t", "canopy-test/app:1"])
        .env("DOCKER_BUILDKIT", "0")
        .arg(&context)
        .success();
    let saved = env.path("app.tar");
    dockerd
        .docker(["save", "-o"])
        .arg(&saved)
        .arg("canopy-test/app:1")
        .success();
    dockerd
        .docker(["create", "--name", "export-me", "canopy-test/app:1"])
        .success();
    let exported = env.path("export.tar");
    dockerd
        .docker(["export", "-o"])
        .arg(&exported)
        .arg("export-me")
        .success();
    drop(dockerd);

    let reference = env.mkdir("reference");
    cmd("tar")
        .args(["--numeric-owner", "--xattrs", "-xpf"])
        .arg(&exported)
        .arg("-C")
        .arg(&reference)
        .success();
    let report = import(&env, "docker-archive", &saved, "app", &[]);
    assert_eq!(imported(&report), [true, true], "{report}");
    assert_eq!(
        report["image"]["Labels"]["INSTALL"],
        "/bin/echo install IMAGE as NAME"
    );
    assert_eq!(report["image"]["WorkingDir"], "/srv/www");
    assert!(
        report["image"]["Env"]
            .as_array()
            .unwrap()
            .contains(&"GREETING=hi".into()),
        "{report}"
    );
    let out = env.path("checkout");
    env.cmd(["checkout", "app"]).arg(&out).success();
    for added in DOCKER_ADDED {
        for tree in [&reference, &out] {
            let p = tree.join(added);
            if p.is_dir() && !p.is_symlink() {
                fs::remove_dir_all(&p).unwrap();
            } else if p.symlink_metadata().is_ok() {
                fs::remove_file(&p).unwrap();
            }
        }
    }
    assert_same_tree(&reference, &out);
    assert_eq!(
        fs::metadata(out.join("srv/www/index.html"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4750
    );

    // The same image as an OCI layout tar (skopeo): nothing new but a commit.
    let oci_tar = env.path("app-oci.tar");
    cmd("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}", saved.display()))
        .arg(format!("oci-archive:{}:app", oci_tar.display()))
        .success();
    let as_oci = import(&env, "oci", &oci_tar, "app-oci", &[]);
    assert_eq!(imported(&as_oci), [false, false]);
    assert_eq!(as_oci["new_objects"], 1, "{as_oci}");
    // And from standard input.
    let piped = cmd("sh")
        .arg("-c")
        .arg(format!(
            "gzip -c {} | {} --store {} import docker-archive - --name app-stdin",
            saved.display(),
            crate::util::BIN,
            env.store().display()
        ))
        .stdout();
    assert!(piped.contains("app-stdin: commit "), "{piped}");
    env.fsck_clean();
}
