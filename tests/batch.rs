//! Many archives in one `canopy import`: read several at once and committed together,
//! they give the same packages, trees and per-archive counts as importing them one by
//! one; an archive named twice is imported once, a refused one costs the others nothing,
//! and nothing is left behind.

use crate::debs;
use crate::util::{Canopy, Imported, parse_import};
use std::collections::BTreeMap;
use std::fs;

/// Real packages sharing files (gcc-12-base and libgcc-s1 come from one source).
const PACKAGES: &[&str] = &[
    "gcc-12-base",
    "libacl1",
    "libattr1",
    "libc6",
    "libgcc-s1",
    "libselinux1",
];

/// Every package's tree, by name.
fn trees(canopy: &Canopy) -> BTreeMap<String, String> {
    canopy
        .json(["packages", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["tree"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn a_batch_imports_as_one_by_one_does() {
    let paths = debs::paths(PACKAGES);

    let one = Canopy::init("batch-one-by-one");
    let mut expected: Vec<Imported> = Vec::new();
    for path in &paths {
        let out = one.cmd(["import", "deb"]).arg(path).stdout();
        expected.extend(parse_import(&out));
    }

    let all = Canopy::init("batch-all");
    // libc6 cut short: refused, in the middle of the batch.
    let cut = all.path("cut.deb");
    let libc = fs::read(&debs::deb("libc6").path).unwrap();
    fs::write(&cut, &libc[..libc.len() / 2]).unwrap();
    let mut args = paths.clone();
    args.insert(2, cut.clone());
    // The first archive again, at the end: already imported by then.
    args.push(paths[0].clone());
    let out = all.cmd(["import", "deb"]).args(&args).failure(1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let got = parse_import(&stdout);
    assert_eq!(got.len(), PACKAGES.len() + 1, "{stdout}");
    // In the order given, each with the counts importing them one by one gave.
    assert_eq!(got[..PACKAGES.len()], expected[..], "{stdout}");
    let again = &got[PACKAGES.len()];
    assert!(
        !again.new && again.name == PACKAGES[0],
        "the repeated archive was not skipped:\n{stdout}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("cut.deb") && l.ends_with("[truncated]")),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 8 archives failed"), "{stderr}");

    assert_eq!(trees(&all), trees(&one));
    all.fsck_clean();
    assert_eq!(all.fsck_report()["unreachable"], 0);
    assert_eq!(fs::read_dir(all.store().join("tmp")).unwrap().count(), 0);

    // Importing the whole batch again reads only hashes: every archive is skipped.
    let out = all.cmd(["import", "deb"]).args(&paths).stdout();
    assert!(parse_import(&out).iter().all(|i| !i.new), "{out}");
}
