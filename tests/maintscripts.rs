//! What dpkg does around maintainer scripts, done at assemble time: a preinst gets its
//! whole control archive (however large its debconf templates), runs once what its
//! package pre-depends on is configured, may divert another package's file; and what
//! host identity leaves the shared root takes the links to it along.
//!
//! Each test has its own store with dpkg's smallest closure imported (see
//! `configure.rs`), and packages built with dpkg-deb at test time.

use crate::configure::{assemble_args, dpkg_store, script_deb};
use crate::debs;
use crate::installed::checkout;
use crate::util::{cmd, dpkg_build_as_root, write_control, write_file};
use std::fs;
use std::path::{Path, PathBuf};

#[test]
fn a_preinst_gets_its_whole_control_archive_however_large() {
    // Large sets carry megabytes of debconf templates (all their translations) in the
    // control archives of packages with a preinst, each of which the preinst finds
    // beside it in tmp.ci/: they reached the sandbox cut at 4 MiB, and configuring
    // postgresql, apache2, locales and tzdata together failed.
    let env = dpkg_store("installed-templates");
    let tree = env.path("debs/canopy-templates");
    write_control(&tree, "canopy-templates", "1.0", "all");
    let templates: String = (0..60_000)
        .map(|i| format!("Template: canopy/question-{i}\nType: boolean\nDefault: true\n\n"))
        .collect();
    assert!(templates.len() > 3 << 20);
    write_file(&tree.join("DEBIAN/templates"), templates.as_bytes(), 0o644);
    write_file(
        &tree.join("DEBIAN/preinst"),
        b"#!/bin/sh\nset -e\nsha256sum < \"${0%/*}/templates\" > /etc/canopy-templates.sum\n",
        0o755,
    );
    let deb = env.path("debs/canopy-templates_1.0_all.deb");
    dpkg_build_as_root(&tree, &deb);
    env.cmd(["import", "deb"]).arg(&deb).stdout();
    let out = env.stdout(assemble_args("big", &["canopy-templates"]));
    assert!(out.contains("configured "), "{out}");
    let dir = checkout(&env, "big", "big");
    let sum = fs::read_to_string(dir.join("etc/canopy-templates.sum")).unwrap();
    let want = crate::handover::to_hex(&<sha2::Sha256 as sha2::Digest>::digest(&templates));
    assert_eq!(sum, format!("{want}  -\n"));
}

#[test]
fn links_to_host_identity_leave_with_it() {
    // make-ssl-cert links the snakeoil certificate under its hash, as c_rehash does:
    // with the certificate left out of the shared root, the link would dangle there,
    // under a name no host's own certificate has.
    let env = dpkg_store("installed-identity-links");
    let deb = script_deb(
        &env.mkdir("debs"),
        "canopy-snakeoil",
        "1.0",
        "mkdir -p /etc/ssl/certs /etc/ssl/private\n\
         echo cert > /etc/ssl/certs/ssl-cert-snakeoil.pem\n\
         ln -s ssl-cert-snakeoil.pem /etc/ssl/certs/0a1b2c3d.0\n\
         ln -s ../certs/./ssl-cert-snakeoil.pem /etc/ssl/private/relative.0\n\
         echo other > /etc/ssl/certs/other.pem\n\
         ln -s other.pem /etc/ssl/certs/4e5f6a7b.0",
    );
    env.cmd(["import", "deb"]).arg(&deb).stdout();
    env.stdout(assemble_args("links", &["canopy-snakeoil"]));
    let dir = checkout(&env, "links", "links");
    let certs = dir.join("etc/ssl/certs");
    assert!(!certs.join("ssl-cert-snakeoil.pem").exists());
    assert!(fs::symlink_metadata(certs.join("0a1b2c3d.0")).is_err());
    assert!(fs::symlink_metadata(dir.join("etc/ssl/private/relative.0")).is_err());
    assert_eq!(
        fs::read_to_string(certs.join("4e5f6a7b.0")).unwrap(),
        "other\n"
    );
    let log = env.json(["roots", "log", "links"]);
    let stripped = log[0]["configure"]["stripped"].as_array().unwrap();
    assert!(
        stripped
            .iter()
            .any(|s| s["path"] == "/etc/ssl/certs/0a1b2c3d.0"
                && s["what"] == "link to a snakeoil TLS certificate"),
        "{stripped:?}"
    );
}

/// A package shipping `/usr/bin/canopy-tool` saying `says`, with `preinst` if given.
fn tool_deb(dir: &Path, name: &str, says: &str, preinst: Option<&str>) -> PathBuf {
    let tree = dir.join(name);
    write_control(&tree, name, "1.0", "all");
    write_file(
        &tree.join("usr/bin/canopy-tool"),
        format!("#!/bin/sh\necho {says}\n").as_bytes(),
        0o755,
    );
    if let Some(preinst) = preinst {
        write_file(
            &tree.join("DEBIAN/preinst"),
            format!("#!/bin/sh\nset -e\n{preinst}\n").as_bytes(),
            0o755,
        );
    }
    let out = dir.join(format!("{name}_1.0_all.deb"));
    dpkg_build_as_root(&tree, &out);
    out
}

#[test]
fn a_file_another_package_diverts_goes_where_the_diversion_says() {
    // molly-guard diverts systemd-sysv's /sbin/halt in its preinst and ships its own:
    // apt installs the two, and so must assemble, rather than call it a conflict.
    let env = dpkg_store("installed-diversion");
    let dir = env.mkdir("debs");
    let shipper = tool_deb(&dir, "canopy-shipper", "original", None);
    let diverter = tool_deb(
        &dir,
        "canopy-diverter",
        "wrapper",
        Some(
            "dpkg-divert --package canopy-diverter --add --rename \
             --divert /usr/bin/canopy-tool.real /usr/bin/canopy-tool",
        ),
    );
    let liar = tool_deb(
        &dir,
        "canopy-liar",
        "liar",
        Some("dpkg-divert --package canopy-liar --add --divert /usr/bin/other.real /usr/bin/other"),
    );
    env.cmd(["import", "deb"])
        .args([&shipper, &diverter, &liar])
        .stdout();
    // In either order.
    for (root, pkgs) in [
        ("div", ["canopy-shipper", "canopy-diverter"]),
        ("vid", ["canopy-diverter", "canopy-shipper"]),
    ] {
        env.stdout(assemble_args(root, &pkgs));
        let dir = checkout(&env, root, root);
        let tool = |name: &str| cmd("chroot").arg(&dir).arg(name).stdout();
        assert_eq!(tool("/usr/bin/canopy-tool"), "wrapper\n", "{root}");
        assert_eq!(tool("/usr/bin/canopy-tool.real"), "original\n", "{root}");
        let listed = cmd("chroot")
            .arg(&dir)
            .args(["dpkg-divert", "--list"])
            .stdout();
        assert!(
            listed.contains(
                "diversion of /usr/bin/canopy-tool to /usr/bin/canopy-tool.real by canopy-diverter"
            ),
            "{listed}"
        );
    }
    // dpkg runs a preinst before it unpacks: a package that diverts a path it ships
    // itself under the other name of a merged-/usr root (molly-guard ships
    // /sbin/pm-suspend and diverts /usr/sbin/pm-suspend) keeps its file there.
    let merged = debs::more_debs(&["usr-is-merged"]);
    let own = {
        let tree = dir.join("canopy-self");
        write_control(&tree, "canopy-self", "1.0", "all");
        write_file(&tree.join("sbin/canopy-x"), b"own\n", 0o644);
        write_file(
            &tree.join("DEBIAN/preinst"),
            b"#!/bin/sh\nset -e\nmkdir -p /usr/lib/canopy-self\n\
              dpkg-divert --package canopy-self --divert /usr/lib/canopy-self/x --rename /usr/sbin/canopy-x\n",
            0o755,
        );
        let out = dir.join("canopy-self_1.0_all.deb");
        dpkg_build_as_root(&tree, &out);
        out
    };
    env.cmd(["import", "deb"])
        .arg(&own)
        .arg(&merged[0].path)
        .stdout();
    env.stdout(assemble_args("self", &["canopy-self", "usr-is-merged"]));
    let root = checkout(&env, "self", "self");
    assert_eq!(
        fs::read_to_string(root.join("usr/sbin/canopy-x")).unwrap(),
        "own\n"
    );
    assert!(fs::symlink_metadata(root.join("usr/lib/canopy-self/x")).is_err());

    // A preinst that diverts something else leaves the conflict a conflict.
    let before = env.snapshot();
    let out = env.fails(assemble_args("bad", &["canopy-shipper", "canopy-liar"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "conflict at /usr/bin/canopy-tool between canopy-shipper 1.0 and canopy-liar 1.0"
        ) && err.contains("did not divert it"),
        "{err}"
    );
    before.assert_unchanged("a conflict no diversion explains");
    // Unconfigured, there is no diversion: the conflict stands.
    let out = env.fails(
        [
            assemble_args("raw", &["canopy-shipper", "canopy-diverter"]),
            vec!["--no-configure"],
        ]
        .concat(),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("conflict at /usr/bin/canopy-tool"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_preinst_runs_once_what_its_package_pre_depends_on_is_configured() {
    // mariadb-server's preinst runs adduser, which it pre-depends on: dpkg configures
    // adduser (and what it depends on) before it unpacks mariadb-server.
    let env = dpkg_store("installed-predepends");
    let dir = env.mkdir("debs");
    let provider = script_deb(
        &dir,
        "canopy-provider",
        "1.0",
        "echo ready > /etc/canopy-provider.conf",
    );
    let tree = dir.join("canopy-needs");
    write_control(&tree, "canopy-needs", "1.0", "all");
    let control = tree.join("DEBIAN/control");
    let mut text = fs::read_to_string(&control).unwrap();
    text.push_str("Pre-Depends: canopy-provider\n");
    fs::write(&control, text).unwrap();
    write_file(
        &tree.join("DEBIAN/preinst"),
        b"#!/bin/sh\nset -e\ncp /etc/canopy-provider.conf /etc/canopy-needs.seen\n",
        0o755,
    );
    let needs = dir.join("canopy-needs_1.0_all.deb");
    dpkg_build_as_root(&tree, &needs);
    env.cmd(["import", "deb"])
        .args([&provider, &needs])
        .stdout();
    env.stdout(assemble_args("pre", &["canopy-needs", "canopy-provider"]));
    let root = checkout(&env, "pre", "pre");
    assert_eq!(
        fs::read_to_string(root.join("etc/canopy-needs.seen")).unwrap(),
        "ready\n"
    );
    let status = cmd("chroot")
        .arg(&root)
        .args([
            "dpkg-query",
            "-W",
            "-f",
            "${db:Status-Abbrev}${Package}\n",
            "canopy-needs",
            "canopy-provider",
        ])
        .stdout();
    assert_eq!(status, "ii canopy-needs\nii canopy-provider\n");
}
