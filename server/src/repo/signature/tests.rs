//! Keys and signatures made at test time by gpg, the tool repositories sign with.

use super::cleartext::END_SIGNATURE;
use super::keyring::MAX_SIGNATURES;
use super::*;
use proptest::prelude::*;
use std::process::Command;
use std::sync::OnceLock;

/// A Release file with what cleartext signing must get right: a line gpg dash-escapes
/// because it looks like armor, one starting with a dash, blanks at a line's end.
const RELEASE: &str = "Origin: Test\nLabel: Test\nSuite: stable\n\
    -----BEGIN PGP SIGNATURE----- in the text\n- starts with a dash\n\
    Description: blanks at the end   \n";
/// What a verified RELEASE reads as: the blanks at the end are not signed.
const SIGNED: &str = "Origin: Test\nLabel: Test\nSuite: stable\n\
    -----BEGIN PGP SIGNATURE----- in the text\n- starts with a dash\n\
    Description: blanks at the end\n";

/// A throwaway gpg home; its agent is stopped when it is dropped.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        Gpg {
            home: tempfile::Builder::new().prefix("gpg").tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--batch", "--yes", "--pinentry-mode", "loopback"])
            .args(["--passphrase", ""])
            .args(args)
            .output()
            .expect("gpg runs (Debian package gnupg)");
        assert!(
            out.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A new key; `usage` is gpg's ("sign", or "cert" for a primary key that only
    /// certifies its subkeys).
    fn key(&self, uid: &str, algo: &str, usage: &str, extra: &[&str]) {
        self.run(&[extra, &["--quick-gen-key", uid, algo, usage, "never"]].concat());
    }

    fn fingerprint(&self, uid: &str) -> String {
        self.colons(uid, "fpr", 9)
    }

    /// The long key id of `uid`'s primary key (`pub`) or first subkey (`sub`).
    fn key_id(&self, uid: &str, kind: &str) -> String {
        self.colons(uid, kind, 4)
    }

    fn colons(&self, uid: &str, kind: &str, field: usize) -> String {
        let listing = self.run(&["--with-colons", "--list-keys", uid]);
        let listing = String::from_utf8(listing).unwrap();
        let line = listing.lines().find(|l| l.starts_with(&format!("{kind}:")));
        line.unwrap().split(':').nth(field).unwrap().to_string()
    }

    /// gpg's output for `args` over `data`, passed as a file.
    fn over(&self, data: &[u8], args: &[&str]) -> Vec<u8> {
        let input = self.home.path().join("input");
        std::fs::write(&input, data).unwrap();
        self.run(&[args, &["--output", "-", input.to_str().unwrap()]].concat())
    }

    fn clearsign(&self, signers: &[&str], extra: &[&str]) -> Vec<u8> {
        let users = signers.iter().flat_map(|s| ["--local-user", s]);
        let args: Vec<&str> = users.chain(extra.iter().copied()).collect();
        self.over(RELEASE.as_bytes(), &[&args[..], &["--clearsign"]].concat())
    }

    fn export(&self, uids: &[&str], armor: bool) -> Vec<u8> {
        let armor: &[&str] = if armor { &["--armor"] } else { &[] };
        self.run(&[armor, &["--export"], uids].concat())
    }

    /// Imports the revocation certificate gpg made along with the key.
    fn revoke(&self, uid: &str) {
        let dir = self.home.path().join("openpgp-revocs.d");
        let path = dir.join(format!("{}.rev", self.fingerprint(uid)));
        // gpg puts a colon before the armor so the certificate is not imported by mistake.
        let certificate = std::fs::read_to_string(&path)
            .unwrap()
            .replace(":-----", "-----");
        std::fs::write(&path, certificate).unwrap();
        self.run(&["--import", path.to_str().unwrap()]);
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

/// Everything gpg made, made once for all tests: keyrings and signed files.
struct Fixture {
    /// Keyrings by name, binary export.
    rsa: Vec<u8>,
    rsa_armored: Vec<u8>,
    ed: Vec<u8>,
    ed_armored: Vec<u8>,
    /// rsa, ed and sub in one armored export.
    three_armored: Vec<u8>,
    sub: Vec<u8>,
    old: Vec<u8>,
    revoked: Vec<u8>,
    /// Signed by the RSA key, by ed25519, by a signing subkey, by a key in no keyring.
    by_rsa: Vec<u8>,
    by_ed: Vec<u8>,
    by_sub: Vec<u8>,
    by_other: Vec<u8>,
    /// Signed by "other" and by ed.
    by_other_and_ed: Vec<u8>,
    by_rsa_sha1: Vec<u8>,
    /// Signed in 2020 by a key that expired in 2021.
    by_old: Vec<u8>,
    /// Signed by a key revoked afterwards.
    by_revoked: Vec<u8>,
    detached_rsa_armored: Vec<u8>,
    detached_ed_binary: Vec<u8>,
    detached_other: Vec<u8>,
    other_id: String,
    ed_id: String,
    sub_id: String,
    sub_primary_id: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let gpg = Gpg::new();
        // RSA 2048 rather than Debian's 4096: same code, a fraction of the key
        // generation time on a busy machine.
        gpg.key("rsa@test", "rsa2048", "sign", &[]);
        gpg.key("ed@test", "ed25519", "sign", &[]);
        gpg.key("other@test", "ed25519", "sign", &[]);
        gpg.key("revoked@test", "ed25519", "sign", &[]);
        gpg.key("sub@test", "ed25519", "cert", &[]);
        let sub_fpr = gpg.fingerprint("sub@test");
        gpg.run(&["--quick-add-key", &sub_fpr, "ed25519", "sign", "never"]);
        let past: &[&str] = &["--faked-system-time", "20200101T000000!"];
        gpg.run(
            &[
                past,
                &["--quick-gen-key", "old@test", "ed25519", "sign", "1y"],
            ]
            .concat(),
        );
        let by_revoked = gpg.clearsign(&["revoked@test"], &[]);
        gpg.revoke("revoked@test");
        Fixture {
            rsa: gpg.export(&["rsa@test"], false),
            rsa_armored: gpg.export(&["rsa@test"], true),
            ed: gpg.export(&["ed@test"], false),
            ed_armored: gpg.export(&["ed@test"], true),
            three_armored: gpg.export(&["rsa@test", "ed@test", "sub@test"], true),
            sub: gpg.export(&["sub@test"], false),
            old: gpg.export(&["old@test"], false),
            revoked: gpg.export(&["revoked@test"], false),
            by_rsa: gpg.clearsign(&["rsa@test"], &[]),
            by_ed: gpg.clearsign(&["ed@test"], &[]),
            by_sub: gpg.clearsign(&["sub@test"], &[]),
            by_other: gpg.clearsign(&["other@test"], &[]),
            by_other_and_ed: gpg.clearsign(&["other@test", "ed@test"], &[]),
            by_rsa_sha1: gpg.clearsign(&["rsa@test"], &["--digest-algo", "SHA1"]),
            by_old: gpg.clearsign(
                &["old@test"],
                &[past, &["--digest-algo", "SHA512"]].concat(),
            ),
            by_revoked,
            detached_rsa_armored: gpg.over(
                RELEASE.as_bytes(),
                &["--local-user", "rsa@test", "--armor", "--detach-sign"],
            ),
            detached_ed_binary: gpg.over(
                RELEASE.as_bytes(),
                &["--local-user", "ed@test", "--detach-sign"],
            ),
            detached_other: gpg.over(
                RELEASE.as_bytes(),
                &["--local-user", "other@test", "--detach-sign"],
            ),
            other_id: gpg.key_id("other@test", "pub"),
            ed_id: gpg.key_id("ed@test", "pub"),
            sub_id: gpg.key_id("sub@test", "sub"),
            sub_primary_id: gpg.key_id("sub@test", "pub"),
        }
    })
}

fn keyring(parts: &[&[u8]]) -> Keyring {
    Keyring::from_bytes(&parts.concat()).unwrap()
}

/// The error verifying `signed` with a keyring of `keys` fails with.
fn refused(keys: &[&[u8]], signed: &[u8]) -> SignatureError {
    keyring(keys).verify_cleartext(signed).unwrap_err()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

#[test]
fn rsa_and_ed25519_signatures_verify_with_binary_and_armored_keyrings() {
    let f = fixture();
    for (ring, signed) in [
        (&f.rsa, &f.by_rsa),
        (&f.rsa_armored, &f.by_rsa),
        (&f.ed, &f.by_ed),
        (&f.ed_armored, &f.by_ed),
        (&f.three_armored, &f.by_rsa),
        (&f.three_armored, &f.by_ed),
        (&f.three_armored, &f.by_sub),
    ] {
        let release = keyring(&[ring]).verify_cleartext(signed).unwrap();
        assert_eq!(release, SIGNED);
    }
    // Keyrings concatenated as files are: binary, or armor block after armor block.
    for parts in [[&f.rsa, &f.ed], [&f.rsa_armored, &f.ed_armored]] {
        let ring = keyring(&[parts[0], parts[1]]);
        assert_eq!(ring.verify_cleartext(&f.by_rsa).unwrap(), SIGNED);
        assert_eq!(ring.verify_cleartext(&f.by_ed).unwrap(), SIGNED);
    }
}

#[test]
fn a_signing_subkey_verifies_and_is_named_when_the_text_is_altered() {
    let f = fixture();
    let ring = keyring(&[&f.sub]);
    assert_eq!(ring.verify_cleartext(&f.by_sub).unwrap(), SIGNED);
    let altered = text(&f.by_sub).replace("Label: Test", "Label: Tesu");
    let err = ring.verify_cleartext(altered.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, SignatureError::BadSignature { key_id } if *key_id == f.sub_id),
        "{err}"
    );
    assert_ne!(f.sub_id, f.sub_primary_id, "gpg signed with the subkey");
}

#[test]
fn one_signature_by_a_keyring_key_among_several_is_enough() {
    let f = fixture();
    let release = keyring(&[&f.ed])
        .verify_cleartext(&f.by_other_and_ed)
        .unwrap();
    assert_eq!(release, SIGNED);
    let err = refused(&[&f.rsa], &f.by_other_and_ed);
    let SignatureError::UnknownKey { key_ids } = &err else {
        panic!("{err}")
    };
    assert_eq!(key_ids.len(), 2, "{err}");
    assert!(
        key_ids.contains(&f.other_id) && key_ids.contains(&f.ed_id),
        "{err}"
    );
}

#[test]
fn altered_text_is_refused() {
    let f = fixture();
    let ring = keyring(&[&f.ed, &f.rsa]);
    for (from, to) in [
        ("Suite: stable", "Suite: stablf"),
        ("Suite: stable\n", "Suite: stable\nExtra: line\n"),
        ("- - starts with a dash", "- starts with a dash"),
    ] {
        let altered = text(&f.by_ed).replacen(from, to, 1);
        assert_ne!(altered.as_bytes(), f.by_ed);
        let err = ring.verify_cleartext(altered.as_bytes()).unwrap_err();
        assert!(
            matches!(err, SignatureError::BadSignature { .. }),
            "{from:?}: {err}"
        );
        assert!(err.to_string().contains(&f.ed_id), "{err}");
    }
}

#[test]
fn a_key_outside_the_keyring_is_refused_with_its_id() {
    let f = fixture();
    let err = refused(&[&f.rsa, &f.ed], &f.by_other);
    assert!(matches!(err, SignatureError::UnknownKey { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!("signed by key {}, which is not in the keyring", f.other_id)
    );
}

#[test]
fn sha1_signatures_are_refused() {
    let f = fixture();
    let err = refused(&[&f.rsa], &f.by_rsa_sha1);
    assert!(matches!(err, SignatureError::WeakHash { .. }), "{err}");
    assert!(err.to_string().contains("SHA1"), "{err}");
}

#[test]
fn an_expired_key_is_refused_with_its_expiry() {
    let f = fixture();
    let err = refused(&[&f.old], &f.by_old);
    let SignatureError::KeyExpired { expired, .. } = &err else {
        panic!("{err}")
    };
    // Made at 2020-01-01 with a lifetime of one year, which gpg counts as 365 days.
    let made = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_577_836_800);
    assert_eq!(expired.duration_since(made).unwrap().as_secs(), 365 * 86400);
    assert!(
        err.to_string().contains("expired at 2020-12-31T00:00:00Z"),
        "{err}"
    );
}

#[test]
fn a_revoked_key_is_refused_and_a_keyring_of_revoked_keys_does_not_load() {
    let f = fixture();
    let err = refused(&[&f.revoked, &f.ed], &f.by_revoked);
    assert!(matches!(err, SignatureError::KeyRevoked { .. }), "{err}");
    let err = Keyring::from_bytes(&f.revoked).unwrap_err();
    assert!(err.to_string().contains("no usable signing key"), "{err}");
    assert!(err.to_string().contains("revoked"), "{err}");
}

#[test]
fn detached_signatures_verify_armored_and_binary() {
    let f = fixture();
    let ring = keyring(&[&f.rsa, &f.ed]);
    let release = RELEASE.as_bytes();
    ring.verify_detached(release, &f.detached_rsa_armored)
        .unwrap();
    ring.verify_detached(release, &f.detached_ed_binary)
        .unwrap();
    let both = [&f.detached_other[..], &f.detached_ed_binary].concat();
    ring.verify_detached(release, &both).unwrap();

    let altered = RELEASE.replace("stable", "stablf");
    let err = ring
        .verify_detached(altered.as_bytes(), &f.detached_ed_binary)
        .unwrap_err();
    assert!(matches!(err, SignatureError::BadSignature { .. }), "{err}");
    let err = ring
        .verify_detached(release, &f.detached_other)
        .unwrap_err();
    assert!(err.to_string().contains(&f.other_id), "{err}");
    // Each signature costs a verification: a flood of them is refused unread.
    let flood = f.detached_ed_binary.repeat(MAX_SIGNATURES + 1);
    let too_many = [&b""[..], &flood];
    for garbage in too_many
        .into_iter()
        .chain([&b"not a signature"[..], &f.by_ed, &f.ed])
    {
        let err = ring.verify_detached(release, garbage).unwrap_err();
        assert!(matches!(err, SignatureError::Malformed { .. }), "{err}");
    }
}

#[test]
fn text_outside_the_signed_part_is_refused() {
    let f = fixture();
    let ring = keyring(&[&f.ed]);
    let signed = text(&f.by_ed);
    for (input, place) in [
        (format!("Origin: Evil\n{signed}"), "before"),
        (format!("{signed}Origin: Evil\n"), "after"),
        (
            format!("{signed}\n-----BEGIN PGP SIGNED MESSAGE-----\n"),
            "after",
        ),
    ] {
        for result in [
            ring.verify_cleartext(input.as_bytes()),
            cleartext_unverified(input.as_bytes()),
        ] {
            let err = result.unwrap_err();
            assert!(
                matches!(&err, SignatureError::OutsideSignedPart { place: p } if p.starts_with(place)),
                "{err}"
            );
        }
    }
    // Blank lines around the message are no text.
    let padded = format!("\n \n{signed}\n\n");
    assert_eq!(ring.verify_cleartext(padded.as_bytes()).unwrap(), SIGNED);
}

#[test]
fn cleartext_unverified_returns_the_text_and_refuses_what_is_not_cleartext_signed() {
    let f = fixture();
    assert_eq!(cleartext_unverified(&f.by_other).unwrap(), SIGNED);
    for input in [
        RELEASE.as_bytes(),
        &b""[..],
        &f.detached_rsa_armored,
        &f.detached_ed_binary,
        &f.ed_armored,
    ] {
        let err = cleartext_unverified(input).unwrap_err();
        assert!(matches!(err, SignatureError::Malformed { .. }), "{err}");
    }
}

#[test]
fn crlf_files_verify_and_stray_carriage_returns_or_headers_are_refused() {
    let f = fixture();
    let ring = keyring(&[&f.ed]);
    let crlf = text(&f.by_ed).replace('\n', "\r\n");
    assert_eq!(ring.verify_cleartext(crlf.as_bytes()).unwrap(), SIGNED);
    for (from, to) in [
        ("Label: Test\n", "Label: Te\rst\n"),
        ("Hash: SHA256\n", "Hash: SHA256\nComment: unsigned\n"),
        ("Suite: stable\n", "Suite: stable\n-Unescaped: dash\n"),
    ] {
        let input = text(&f.by_ed).replacen(from, to, 1);
        assert_ne!(input.as_bytes(), f.by_ed, "{from:?} is in the message");
        let err = ring.verify_cleartext(input.as_bytes()).unwrap_err();
        assert!(
            matches!(err, SignatureError::Malformed { .. }),
            "{to:?}: {err}"
        );
    }
}

#[test]
fn truncated_or_corrupt_messages_are_errors() {
    let f = fixture();
    let ring = keyring(&[&f.ed]);
    let signed = text(&f.by_ed);
    let end = signed.find(END_SIGNATURE).unwrap();
    for cut in (0..end).step_by(7) {
        assert!(
            ring.verify_cleartext(&f.by_ed[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    // Damage inside the armored signature: wrong base64, a bad checksum, no signature.
    let armor = signed.find("-----BEGIN PGP SIGNATURE-----").unwrap();
    let body = signed[armor..].find("\n\n").unwrap() + armor + 2;
    let corrupt = [
        format!("{}!!!!{}", &signed[..body], &signed[body + 4..]),
        format!("{}AAAA{}", &signed[..body], &signed[body + 4..]),
        format!("{}{}", &signed[..body], &signed[end..]),
    ];
    for input in corrupt {
        let err = ring.verify_cleartext(input.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                SignatureError::Malformed { .. } | SignatureError::BadSignature { .. }
            ),
            "{err}"
        );
    }
}

#[test]
fn keyring_errors_name_the_file() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gpg");
    let err = Keyring::load(&missing).unwrap_err();
    assert!(matches!(err, SignatureError::ReadKeyring { .. }), "{err}");
    assert!(err.to_string().contains("missing.gpg"), "{err}");
    for (name, bytes) in [
        ("empty.gpg", &b""[..]),
        ("garbage.gpg", b"\x99\x01\x02garbage"),
        ("text.asc", b"hello\n"),
        ("signed.asc", &f.by_ed),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = Keyring::load(&path).unwrap_err();
        assert!(
            matches!(err, SignatureError::BadKeyring { .. }),
            "{name}: {err}"
        );
        assert!(err.to_string().contains(name), "{err}");
    }
    let path = dir.path().join("good.gpg");
    std::fs::write(&path, &f.rsa).unwrap();
    let ring = Keyring::load(&path).unwrap();
    assert_eq!(ring.verify_cleartext(&f.by_rsa).unwrap(), SIGNED);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let ring = keyring(&[&fixture().ed]);
        prop_assert!(cleartext_unverified(&bytes).is_err());
        prop_assert!(ring.verify_cleartext(&bytes).is_err());
        prop_assert!(ring.verify_detached(RELEASE.as_bytes(), &bytes).is_err());
        let _ = Keyring::from_bytes(&bytes);
    }

    #[test]
    fn a_changed_byte_never_panics_nor_verifies_other_text(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let f = fixture();
        let mut input = f.by_ed.clone();
        let at = at.index(input.len());
        input[at] = byte;
        if let Ok(release) = keyring(&[&f.ed]).verify_cleartext(&input) {
            prop_assert_eq!(release, SIGNED);
        }
    }
}
