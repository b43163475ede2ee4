//! Hostile images: each is refused with its error class and leaves the store
//! byte-for-byte unchanged. Every case is a well-formed image (written by `layout.rs`
//! over `corpus::Tar` layers) with exactly one flaw, imported into a store that already
//! holds an image sharing its base layer.

use crate::corpus::{HARDLINK, Header, Tar};
use crate::layout::{self, Comp, Image, Layer, blob_path, digest};
use crate::util::{Canopy, cmd};
use serde_json::json;
use std::fs;
use std::path::Path;

/// The base layer every case starts from: /etc/hostname, /bin/true and a symlink.
fn base() -> Layer {
    let mut t = Tar::new();
    t.dir("etc/").file("etc/hostname", b"image\n");
    t.dir("bin/").file("bin/true", b"#!/bin/sh\n");
    t.symlink("lib", "/etc");
    Layer::new(&t.finish(), Comp::Gzip)
}

fn layer(build: impl FnOnce(&mut Tar)) -> Layer {
    let mut t = Tar::new();
    build(&mut t);
    Layer::new(&t.finish(), Comp::Gzip)
}

fn image(top: Layer) -> Image {
    Image::new(vec![base(), top])
}

/// One hostile image: written into `dir` by `make`; `import` is `oci` or
/// `docker-archive`, and canopy must end its error with `[class]`.
struct Case {
    name: &'static str,
    import: &'static str,
    class: &'static str,
    make: fn(&Path),
}

/// The cases: a flaw each.
fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "layer entry with ..",
            import: "oci",
            class: "path-traversal",
            make: |d| {
                let mut t = Tar::new();
                t.file("etc/../../escape", b"x");
                image(Layer::new(&t.finish(), Comp::Gzip)).write(d, "bad");
            },
        },
        Case {
            name: "absolute symlink followed by a later layer",
            import: "oci",
            class: "through-symlink",
            make: |d| {
                image(layer(|t| {
                    t.file("lib/passwd", b"root::0:0::/:/bin/sh\n");
                }))
                .write(d, "bad");
            },
        },
        Case {
            name: "directory over an earlier layer's symlink",
            import: "oci",
            class: "through-symlink",
            make: |d| {
                image(layer(|t| {
                    t.dir("lib/").file("lib/shadow", b"x\n");
                }))
                .write(d, "bad");
            },
        },
        Case {
            name: "whiteout of ..",
            import: "oci",
            class: "path-traversal",
            make: |d| {
                image(layer(|t| {
                    t.dir("etc/").file("etc/.wh...", b"");
                }))
                .write(d, "bad");
            },
        },
        Case {
            name: "whiteout outside the root",
            import: "oci",
            class: "path-traversal",
            make: |d| {
                image(layer(|t| {
                    t.file("../.wh.etc", b"");
                }))
                .write(d, "bad");
            },
        },
        Case {
            name: "layer blob that does not match its digest",
            import: "oci",
            class: "bad-digest",
            make: |d| {
                let img = image(layer(|t| {
                    t.file("new", b"new\n");
                }));
                img.write(d, "bad");
                let path = blob_path(d, &digest(&img.layers[1].blob));
                let mut bytes = fs::read(&path).unwrap();
                let last = bytes.len() - 9; // inside the deflate stream's last block
                bytes[last] ^= 0x40;
                fs::write(path, bytes).unwrap();
            },
        },
        Case {
            name: "diff_id that does not match the layer",
            import: "oci",
            class: "bad-digest",
            make: |d| {
                let mut img = image(layer(|t| {
                    t.file("new", b"new\n");
                }));
                img.layers[1].diff_id = digest(b"something else");
                img.write(d, "bad");
            },
        },
        Case {
            name: "config that does not match its digest",
            import: "oci",
            class: "bad-digest",
            make: |d| {
                let img = image(layer(|t| {
                    t.file("new", b"new\n");
                }));
                img.write(d, "bad");
                let config = img.config();
                let mut changed = config.clone();
                let at = changed.iter().position(|&b| b == b'6').unwrap(); // amd64 → amd74
                changed[at] = b'7';
                fs::write(blob_path(d, &digest(&config)), changed).unwrap();
            },
        },
        Case {
            name: "manifest over the size bound",
            import: "oci",
            class: "too-large",
            make: |d| {
                let img = image(layer(|t| {
                    t.file("new", b"new\n");
                }));
                let config = img.config();
                layout::put_blob(d, &config);
                for l in &img.layers {
                    layout::put_blob(d, &l.blob);
                }
                let mut manifest: serde_json::Value =
                    serde_json::from_slice(&img.manifest(&config)).unwrap();
                manifest["annotations"] = json!({"padding": "x".repeat(5 << 20)});
                let bytes = serde_json::to_vec(&manifest).unwrap();
                let m = layout::put_blob(d, &bytes);
                layout::add_to_index(
                    d,
                    json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m, "size": bytes.len()}),
                );
            },
        },
        Case {
            name: "manifest descriptor claiming a huge size",
            import: "oci",
            class: "too-large",
            make: |d| {
                let m = image(layer(|t| {
                    t.file("new", b"new\n");
                }))
                .write(d, "good");
                fs::remove_file(d.join("index.json")).unwrap();
                layout::add_to_index(
                    d,
                    json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m, "size": 1u64 << 40}),
                );
            },
        },
        Case {
            name: "gzip layer that is zstd",
            import: "oci",
            class: "bad-compression",
            make: |d| {
                let mut l = layer(|t| {
                    t.file("new", b"new\n");
                });
                let tar = layout::decompress(&l.blob);
                l.blob = Comp::Zstd.compress(&tar);
                image(l).write(d, "bad");
            },
        },
        Case {
            name: "plain layer that is gzip",
            import: "oci",
            class: "bad-compression",
            make: |d| {
                let mut l = layer(|t| {
                    t.file("new", b"new\n");
                });
                l.media_type = Comp::None.media_type().to_string();
                image(l).write(d, "bad");
            },
        },
        Case {
            name: "layer of a foreign media type",
            import: "oci",
            class: "not-an-image",
            make: |d| {
                let mut l = layer(|t| {
                    t.file("new", b"new\n");
                });
                l.media_type = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".into();
                image(l).write(d, "bad");
            },
        },
        Case {
            name: "hard link to a file of a lower layer",
            import: "oci",
            class: "bad-link",
            make: |d| {
                image(layer(|t| {
                    t.push(
                        &Header {
                            path: b"etc/passwd",
                            kind: HARDLINK,
                            link: b"etc/hostname",
                            ..Header::default()
                        },
                        b"",
                    );
                }))
                .write(d, "bad");
            },
        },
        Case {
            name: "config giving a new layer the diff_id of a layer the store has",
            import: "oci",
            class: "bad-digest",
            make: |d| {
                let mut top = layer(|t| {
                    t.file("etc/shadow", b"root::0:0:::::\n");
                });
                top.diff_id = base().diff_id;
                image(top).write(d, "bad");
            },
        },
        Case {
            name: "not a layout",
            import: "oci",
            class: "not-an-image",
            make: |d| {
                fs::write(d.join("index.json"), "{}").unwrap();
            },
        },
        Case {
            name: "docker config not matching its name",
            import: "docker-archive",
            class: "bad-digest",
            make: |d| {
                let img = image(layer(|t| {
                    t.file("new", b"new\n");
                }));
                let config = img.config();
                let name = format!("{}.json", &digest(b"another config")[7..]);
                fs::write(d.join(&name), config).unwrap();
                docker_manifest(d, &name, &img);
            },
        },
        Case {
            name: "docker layer path leaving the archive",
            import: "docker-archive",
            class: "path-traversal",
            make: |d| {
                let img = image(layer(|t| {
                    t.file("new", b"new\n");
                }));
                let config = img.config();
                let name = format!("{}.json", &digest(&config)[7..]);
                fs::write(d.join(&name), config).unwrap();
                let entry = json!([{"Config": name, "RepoTags": ["bad:1"], "Layers": ["../../etc/passwd", "x/layer.tar"]}]);
                fs::write(d.join("manifest.json"), entry.to_string()).unwrap();
            },
        },
    ]
}

/// Writes `manifest.json` and the layers (uncompressed) of a `docker save` archive.
fn docker_manifest(dir: &Path, config: &str, img: &Image) {
    let mut layers = Vec::new();
    for (i, l) in img.layers.iter().enumerate() {
        let name = format!("layer{i}/layer.tar");
        fs::create_dir_all(dir.join(format!("layer{i}"))).unwrap();
        fs::write(dir.join(&name), layout::decompress(&l.blob)).unwrap();
        layers.push(name);
    }
    let entry = json!([{"Config": config, "RepoTags": ["bad:1"], "Layers": layers}]);
    fs::write(dir.join("manifest.json"), entry.to_string()).unwrap();
}

#[test]
fn every_hostile_image_is_refused_and_leaves_the_store_unchanged() {
    let env = Canopy::init("image-hostile");
    // A good image sharing the base layer: the cases meet a store that has it.
    let good = env.path("good");
    image(layer(|t| {
        t.file("good", b"good\n");
    }))
    .write(&good, "good");
    env.cmd(["import", "oci"])
        .arg(&good)
        .args(["--name", "good"])
        .success();
    let mut wrong = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        let dir = env.mkdir(format!("case{i}"));
        (case.make)(&dir);
        // docker-archive cases go in as a tar, as `docker save` writes them.
        let input = if case.import == "docker-archive" {
            let tar = env.path(format!("case{i}.tar"));
            cmd("tar")
                .arg("-C")
                .arg(&dir)
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .success();
            tar
        } else {
            dir
        };
        let before = env.snapshot();
        let out = env
            .cmd(["import", case.import])
            .arg(&input)
            .args(["--name", "bad"])
            .output();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let suffix = format!("[{}]", case.class);
        if out.status.code() != Some(1) || !stderr.trim_end().ends_with(&suffix) {
            wrong.push(format!(
                "{}: expected exit 1 and {suffix}, got {} and:\n{stderr}",
                case.name, out.status
            ));
        }
        let diff = before.differences(&env.snapshot());
        if !diff.is_empty() {
            wrong.push(format!(
                "{}: changed the store:\n{}",
                case.name,
                diff.join("\n")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    env.fsck_clean();
}

/// Inputs that are hostile as files rather than as images: each is refused within a
/// bounded time (a FIFO must not wait for a writer), with its class, and leaves the
/// store unchanged.
#[test]
fn hostile_image_files_are_refused_without_waiting() {
    let env = Canopy::init("image-hostile-files");
    let good = env.path("good");
    image(layer(|t| {
        t.file("good", b"good\n");
    }))
    .write(&good, "good");
    env.cmd(["import", "oci"])
        .arg(&good)
        .args(["--name", "good"])
        .success();
    let copy = |name: &str| {
        let dir = env.path(name);
        cmd("cp").arg("-r").arg(&good).arg(&dir).success();
        dir
    };
    // index.json a FIFO nobody writes to.
    let fifo = copy("fifo");
    fs::remove_file(fifo.join("index.json")).unwrap();
    cmd("mkfifo").arg(fifo.join("index.json")).success();
    // oci-layout a symlink to a file outside the layout.
    let outside = copy("outside");
    let secret = env.path("secret");
    fs::write(&secret, r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::remove_file(outside.join("oci-layout")).unwrap();
    std::os::unix::fs::symlink(&secret, outside.join("oci-layout")).unwrap();
    // A zstd `docker save` archive that unpacks to 64 MiB, over --max-size.
    let bomb = env.path("bomb.tar.zst");
    fs::write(&bomb, crate::corpus::zstd_zero_bomb(64 << 20)).unwrap();
    let cases: [(&str, &Path, &str, &[&str]); 3] = [
        ("oci", &fifo, "not-an-image", &[]),
        ("oci", &outside, "path-traversal", &[]),
        ("docker-archive", &bomb, "too-large", &["--max-size", "8M"]),
    ];
    let mut wrong = Vec::new();
    for (import, input, class, args) in cases {
        let before = env.snapshot();
        let out = env
            .cmd(["import", import])
            .arg(input)
            .args(["--name", "bad"])
            .args(args)
            .output_within(std::time::Duration::from_secs(120));
        let Some(out) = out else {
            wrong.push(format!("{}: still running after 120 s", input.display()));
            continue;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        let suffix = format!("[{class}]");
        if out.status.code() != Some(1) || !stderr.trim_end().ends_with(&suffix) {
            wrong.push(format!(
                "{}: expected exit 1 and {suffix}, got {} and:\n{stderr}",
                input.display(),
                out.status
            ));
        }
        let diff = before.differences(&env.snapshot());
        if !diff.is_empty() {
            wrong.push(format!(
                "{}: changed the store:\n{}",
                input.display(),
                diff.join("\n")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    env.fsck_clean();
}
