//! The Debian resolver's tests: small indexes written as Packages text.

use super::*;
use crate::debian::control::parse_paragraphs;
use proptest::prelude::*;

/// Candidates from a Packages snippet.
fn index(text: &str) -> Vec<Candidate> {
    parse_paragraphs(text)
        .unwrap()
        .iter()
        .map(|p| Candidate::from_paragraph(p).unwrap())
        .collect()
}

/// An amd64 stanza: `pkg("app", "1", "Depends: lib; Recommends: doc")`.
fn pkg(name: &str, version: &str, fields: &str) -> String {
    let fields = fields.replace("; ", "\n");
    format!("Package: {name}\nVersion: {version}\nArchitecture: amd64\n{fields}\n\n")
}

fn request(specs: &str) -> Request {
    Request {
        packages: specs
            .split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect(),
        arch: "amd64".into(),
        essential: false,
        recommends: false,
    }
}

/// The chosen set as `name=version`, sorted by name.
fn names(candidates: &[Candidate], r: &Resolution) -> Vec<String> {
    r.chosen
        .iter()
        .map(|&i| format!("{}={}", candidates[i].name, candidates[i].version))
        .collect()
}

fn resolved(text: &str, req: &Request) -> Vec<String> {
    let candidates = index(text);
    let r = resolve(&candidates, req).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.problems, Vec::<String>::new());
    names(&candidates, &r)
}

fn unsatisfiable(text: &str, req: &Request) -> String {
    match resolve(&index(text), req) {
        Err(ResolveError::Unsatisfiable(why)) => why,
        other => panic!("expected unsatisfiable, got {other:?}"),
    }
}

#[test]
fn follows_depends_and_pre_depends() {
    let text = pkg("app", "1", "Depends: liba, libb (>= 2)")
        + &pkg("liba", "1", "Pre-Depends: libc")
        + &pkg("libb", "2", "")
        + &pkg("libc", "1", "")
        + &pkg("unrelated", "1", "");
    assert_eq!(
        resolved(&text, &request("app")),
        ["app=1", "liba=1", "libb=2", "libc=1"]
    );
    assert_eq!(resolved(&text, &request("")), Vec::<String>::new());
}

#[test]
fn alternatives_prefer_the_first_that_works() {
    let text = pkg("app", "1", "Depends: first | second")
        + &pkg("first", "1", "")
        + &pkg("second", "1", "");
    assert_eq!(resolved(&text, &request("app")), ["app=1", "first=1"]);
    // A later alternative when the first has no candidate or none that fits.
    let text = pkg("app", "1", "Depends: missing | old (>= 2) | second")
        + &pkg("old", "1", "")
        + &pkg("second", "1", "");
    assert_eq!(resolved(&text, &request("app")), ["app=1", "second=1"]);
    // ...or when the first one's own dependencies cannot be met.
    let text = pkg("app", "1", "Depends: first | second")
        + &pkg("first", "1", "Depends: nowhere")
        + &pkg("second", "1", "");
    assert_eq!(resolved(&text, &request("app")), ["app=1", "second=1"]);
}

#[test]
fn virtual_packages_resolve_through_provides() {
    let text = pkg("app", "1", "Depends: mta")
        + &pkg("postfix", "3", "Provides: mta")
        + &pkg("exim", "4", "Provides: mta");
    // One provider, the first in the index when none has a higher priority.
    assert_eq!(resolved(&text, &request("app")), ["app=1", "postfix=3"]);
    let text = pkg("app", "1", "Depends: mta")
        + &pkg("postfix", "3", "Provides: mta")
        + &pkg("exim", "4", "Provides: mta; Priority: standard");
    assert_eq!(resolved(&text, &request("app")), ["app=1", "exim=4"]);
    // A provider already in the set serves.
    assert_eq!(
        resolved(&text, &request("app postfix")),
        ["app=1", "postfix=3"]
    );
    // The request may name a virtual package too.
    assert_eq!(resolved(&text, &request("mta")).len(), 1);
    // A real package of the name comes before providers.
    let text = text + &pkg("mta", "1", "");
    assert_eq!(resolved(&text, &request("app")), ["app=1", "mta=1"]);
}

#[test]
fn versioned_provides_satisfy_versioned_dependencies() {
    let text = pkg("app", "1", "Depends: foo (>= 1)")
        + &pkg("plain", "1", "Provides: foo")
        + &pkg("versioned", "1", "Provides: foo (= 1.2)");
    assert_eq!(resolved(&text, &request("app")), ["app=1", "versioned=1"]);
    // An unversioned Provides satisfies only an unversioned dependency.
    let text = pkg("app", "1", "Depends: foo (>= 1)") + &pkg("plain", "1", "Provides: foo");
    let why = unsatisfiable(&text, &request("app"));
    assert!(why.contains("foo"), "{why}");
    let text =
        pkg("app", "1", "Depends: foo (>= 2)") + &pkg("versioned", "1", "Provides: foo (= 1.2)");
    unsatisfiable(&text, &request("app"));
}

#[test]
fn version_constraints_pick_matching_versions() {
    let lib = pkg("lib", "1.0~rc1", "") + &pkg("lib", "1.0", "") + &pkg("lib", "1.1", "");
    let cases = [
        ("<< 1.0", "lib=1.0~rc1"),
        ("<= 1.0", "lib=1.0"),
        ("= 1.0", "lib=1.0"),
        (">= 1.0", "lib=1.1"),
        (">> 1.0", "lib=1.1"),
        ("< 1.0", "lib=1.0"),
        ("> 1.0~rc1", "lib=1.1"),
        ("= 1.0~rc1", "lib=1.0~rc1"),
    ];
    for (constraint, want) in cases {
        let text = pkg("app", "1", &format!("Depends: lib ({constraint})")) + &lib;
        assert_eq!(
            resolved(&text, &request("app")),
            ["app=1", want],
            "{constraint}"
        );
    }
    let text = pkg("app", "1", "Depends: lib (>> 1.1)") + &lib;
    let why = unsatisfiable(&text, &request("app"));
    assert!(why.contains("lib (>> 1.1)"), "{why}");
}

#[test]
fn epochs_and_tildes_order_versions() {
    let text = pkg("app", "1", "Depends: lib (>> 2.0)")
        + &pkg("lib", "1:0.9", "")
        + &pkg("lib", "3.0", "");
    assert_eq!(resolved(&text, &request("app")), ["app=1", "lib=1:0.9"]);
    let text = pkg("lib", "1.0~rc1", "") + &pkg("lib", "1.0", "") + &pkg("lib", "1.0~rc2", "");
    assert_eq!(resolved(&text, &request("lib")), ["lib=1.0"]);
}

#[test]
fn picks_the_highest_version_unless_pinned() {
    let text = pkg("lib", "1.2", "") + &pkg("lib", "1.10", "") + &pkg("lib", "1.9", "");
    assert_eq!(resolved(&text, &request("lib")), ["lib=1.10"]);
    assert_eq!(resolved(&text, &request("lib=1.9")), ["lib=1.9"]);
    assert_eq!(resolved(&text, &request("lib:amd64=1.2")), ["lib=1.2"]);
    // A pin holds against a dependant that would like a newer one.
    let text = text + &pkg("app", "1", "Depends: lib (>= 1.2)");
    assert_eq!(
        resolved(&text, &request("app lib=1.2")),
        ["app=1", "lib=1.2"]
    );
}

#[test]
fn pins_name_architectures() {
    let text =
        "Package: tool\nVersion: 1\nArchitecture: all\n\n".to_string() + &pkg("tool", "2", "");
    assert_eq!(resolved(&text, &request("tool")), ["tool=2"]);
    assert_eq!(resolved(&text, &request("tool:all")), ["tool=1"]);
    assert_eq!(resolved(&text, &request("tool:amd64")), ["tool=2"]);
    let err = resolve(&index(&text), &request("tool:i386")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no package matches tool:i386; the index has tool:all=1, tool:amd64=2"
    );
}

#[test]
fn unknown_and_unmatched_requests_are_clear_errors() {
    let text = pkg("bash", "5.2", "");
    let candidates = index(&text);
    assert_eq!(
        resolve(&candidates, &request("nosuch")),
        Err(ResolveError::UnknownPackage {
            spec: "nosuch".into(),
            near: None
        })
    );
    assert_eq!(
        resolve(&candidates, &request("bash=9"))
            .unwrap_err()
            .to_string(),
        "no package matches bash=9; the index has bash:amd64=5.2"
    );
    assert!(matches!(
        resolve(&candidates, &request("bash=!")),
        Err(ResolveError::BadVersion { .. })
    ));
}

#[test]
fn unsatisfiable_requests_explain_the_chain() {
    let text = pkg("app", "1", "Depends: middle | other-mid")
        + &pkg("middle", "1", "Depends: libgone (>= 2), libc")
        + &pkg("other-mid", "1", "Depends: mta (>= 2)")
        + &pkg("libgone", "1", "")
        + &pkg("libc", "1", "")
        + &pkg("exim", "1", "Provides: mta (= 1)")
        + &pkg("fine", "1", "");
    let err = resolve(&index(&text), &request("fine app")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the request cannot be satisfied:\n\
         app cannot be installed because there are no viable options:\n\
         └─ app 1 would require\n   \
            └─ middle | other-mid, which cannot be installed because there are no viable options:\n      \
               ├─ middle 1 would require\n      \
               │  └─ libgone (>= 2), for which no candidates were found.\n      \
               └─ other-mid 1 would require\n         \
                  └─ mta (>= 2), for which no candidates were found."
    );
}

#[test]
fn pre_depends_cycles_resolve() {
    let text = pkg("aa", "1", "Pre-Depends: bb")
        + &pkg("bb", "1", "Pre-Depends: cc")
        + &pkg("cc", "1", "Depends: aa (>= 1)");
    assert_eq!(resolved(&text, &request("aa")), ["aa=1", "bb=1", "cc=1"]);
}

#[test]
fn conflicts_are_avoided_by_choosing_an_alternative() {
    let text = pkg("app", "1", "Depends: awk-a | awk-b; Conflicts: awk-a")
        + &pkg("awk-a", "1", "")
        + &pkg("awk-b", "1", "");
    assert_eq!(resolved(&text, &request("app")), ["app=1", "awk-b=1"]);
    // A versioned conflict only rules out the versions it names.
    let text = pkg("app", "1", "Depends: lib; Breaks: lib (>= 2)")
        + &pkg("lib", "1", "")
        + &pkg("lib", "2", "");
    assert_eq!(resolved(&text, &request("app")), ["app=1", "lib=1"]);
}

#[test]
fn conflicts_on_a_virtual_name_spare_the_package_itself() {
    // Debian's "only one of us": each provides and conflicts with the virtual name.
    let text = pkg("mta-a", "1", "Provides: mta; Conflicts: mta")
        + &pkg("mta-b", "1", "Provides: mta; Conflicts: mta")
        + &pkg("app", "1", "Depends: mta")
        + &pkg("tool", "1", "Depends: mta-b");
    assert_eq!(resolved(&text, &request("mta-a")), ["mta-a=1"]);
    assert_eq!(
        resolved(&text, &request("app tool")),
        ["app=1", "mta-b=1", "tool=1"]
    );
    let candidates = index(&text);
    let r = resolve(&candidates, &request("mta-a mta-b")).unwrap();
    assert_eq!(names(&candidates, &r), ["mta-a=1", "mta-b=1"]);
    assert_eq!(
        r.problems,
        [
            "mta-a 1 conflicts with mta-b 1 (conflicts with mta)",
            "mta-b 1 conflicts with mta-a 1 (conflicts with mta)"
        ]
    );
}

#[test]
fn unavoidable_breaks_are_reported() {
    let text = pkg("new", "2", "Breaks: old (<< 2)")
        + &pkg("old", "1", "")
        + &pkg("app", "1", "Depends: new, old");
    let candidates = index(&text);
    let r = resolve(&candidates, &request("app")).unwrap();
    assert_eq!(names(&candidates, &r), ["app=1", "new=2", "old=1"]);
    assert_eq!(r.problems, ["new 2 breaks old 1 (breaks old (<< 2))"]);
}

#[test]
fn essential_packages_only_when_asked() {
    let text = pkg("base", "1", "Essential: yes; Depends: libbase")
        + &pkg("libbase", "1", "")
        + &pkg("app", "1", "");
    assert_eq!(resolved(&text, &request("app")), ["app=1"]);
    let mut req = request("app");
    req.essential = true;
    assert_eq!(resolved(&text, &req), ["app=1", "base=1", "libbase=1"]);
}

#[test]
fn recommends_only_when_asked_and_where_they_fit() {
    let text = pkg("app", "1", "Recommends: extra, missing, clash | extra2")
        + &pkg("extra", "1", "Recommends: extra-more")
        + &pkg("extra-more", "1", "")
        + &pkg("extra2", "1", "")
        + &pkg("clash", "1", "Conflicts: app");
    assert_eq!(resolved(&text, &request("app")), ["app=1"]);
    let mut req = request("app");
    req.recommends = true;
    assert_eq!(
        resolved(&text, &req),
        ["app=1", "extra=1", "extra-more=1", "extra2=1"]
    );
    // One that cannot fit is left out, and said so; the others still come.
    let text = pkg("app", "1", "Recommends: clash, extra")
        + &pkg("extra", "1", "Recommends: extra-more")
        + &pkg("extra-more", "1", "")
        + &pkg("clash", "1", "Conflicts: app");
    let candidates = index(&text);
    let r = resolve(&candidates, &req).unwrap();
    assert_eq!(names(&candidates, &r), ["app=1", "extra=1", "extra-more=1"]);
    assert_eq!(
        r.problems,
        ["app 1 recommends clash: left out, it cannot be installed with the rest"]
    );
}

#[test]
fn any_qualifier_needs_multi_arch_allowed() {
    let text = pkg("app", "1", "Depends: perl:any") + &pkg("perl", "5", "Multi-Arch: allowed");
    assert_eq!(resolved(&text, &request("app")), ["app=1", "perl=5"]);
    // As in dpkg, `:any` is not satisfied by a package that is not Multi-Arch: allowed.
    for multi_arch in ["Multi-Arch: foreign", "Multi-Arch: same", ""] {
        let text = pkg("app", "1", "Depends: perl:any") + &pkg("perl", "5", multi_arch);
        unsatisfiable(&text, &request("app"));
    }
    // Foreign packages satisfy plain dependencies; :native and the target arch too.
    let text = pkg("app", "1", "Depends: make, perl:native, tar:amd64")
        + &pkg("make", "4", "Multi-Arch: foreign")
        + &pkg("perl", "5", "Multi-Arch: allowed")
        + "Package: tar\nVersion: 1\nArchitecture: all\n\n";
    assert_eq!(
        resolved(&text, &request("app")),
        ["app=1", "make=4", "perl=5", "tar=1"]
    );
    let text = pkg("app", "1", "Depends: tar:i386") + &pkg("tar", "1", "");
    unsatisfiable(&text, &request("app"));
}

#[test]
fn architecture_lists_are_evaluated_for_the_target() {
    let text = pkg(
        "app",
        "1",
        "Depends: only-amd64 [amd64], only-arm [arm64], not-i386 [!i386], not-amd64 [!amd64] | fallback",
    ) + &pkg("only-amd64", "1", "")
        + &pkg("not-i386", "1", "")
        + &pkg("fallback", "1", "");
    assert_eq!(
        resolved(&text, &request("app")),
        ["app=1", "fallback=1", "not-i386=1", "only-amd64=1"]
    );
}

#[test]
fn other_architectures_are_ignored_and_duplicates_keep_the_first() {
    let text = "Package: lib\nVersion: 9\nArchitecture: i386\n\n".to_string()
        + &pkg("lib", "1", "Depends: first")
        + &pkg("lib", "1", "Depends: second")
        + &pkg("first", "1", "")
        + &pkg("second", "1", "");
    assert_eq!(resolved(&text, &request("lib")), ["first=1", "lib=1"]);
    let text = "Package: i386only\nVersion: 1\nArchitecture: i386\n\n";
    assert_eq!(
        resolve(&index(text), &request("i386only")),
        Err(ResolveError::UnknownPackage {
            spec: "i386only".into(),
            near: None
        })
    );
}

#[test]
fn bad_paragraphs_name_package_and_field() {
    let cases = [
        (
            "Version: 1\nArchitecture: all",
            "package ?: field Package: missing",
        ),
        (
            "Package: a0\nArchitecture: all",
            "package a0: field Version: missing",
        ),
        (
            "Package: a0\nVersion: 1",
            "package a0: field Architecture: missing",
        ),
        (
            "Package: A\nVersion: 1\nArchitecture: all",
            "field Package: \"A\" is not",
        ),
        (
            "Package: a0\nVersion: x y\nArchitecture: all",
            "field Version",
        ),
        (
            "Package: a0\nVersion: 1\nArchitecture: all\nDepends: b0 (>",
            "field Depends: relation",
        ),
        (
            "Package: a0\nVersion: 1\nArchitecture: all\nProvides: b0 (>= 1)",
            "(= VERSION)",
        ),
        (
            "Package: a0\nVersion: 1\nArchitecture: all\nConflicts: b0 | c0",
            "alternatives",
        ),
        (
            "Package: a0\nVersion: 1\nArchitecture: all\nMulti-Arch: maybe",
            "field Multi-Arch",
        ),
        (
            "Package: a0\nVersion: 1\nArchitecture: all\nEssential: sure",
            "field Essential",
        ),
    ];
    for (text, words) in cases {
        let p = &parse_paragraphs(text).unwrap()[0];
        let err = Candidate::from_paragraph(p).unwrap_err().to_string();
        assert!(err.contains(words), "{text:?} gave {err}");
    }
}

/// A small random index: a few names, versions and relations among them.
fn random_index() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec!["aa", "bb", "cc", "dd", "vv"]);
    let version = prop::sample::select(vec!["1", "2", "1:0", "2~rc1"]);
    let op = prop::sample::select(vec!["", " (>= 2)", " (<< 2)", " (= 1)", " (>> 1:0)"]);
    let relation = (name.clone(), op).prop_map(|(n, o)| format!("{n}{o}"));
    let group = prop::collection::vec(relation, 1..3).prop_map(|g| g.join(" | "));
    let field = |label: &'static str, of: BoxedStrategy<String>| {
        prop::collection::vec(of, 0..3).prop_map(move |list| match list.is_empty() {
            true => String::new(),
            false => format!("{label}: {}\n", list.join(", ")),
        })
    };
    let stanza = (
        name.clone(),
        version,
        field("Depends", group.clone().boxed()),
        field("Recommends", group.boxed()),
        field(
            "Provides",
            name.clone().prop_map(|n| format!("{n} (= 1)")).boxed(),
        ),
        field("Conflicts", name.prop_map(String::from).boxed()),
    )
        .prop_map(|(n, v, d, r, p, c)| {
            format!("Package: {n}\nVersion: {v}\nArchitecture: amd64\n{d}{r}{p}{c}\n")
        });
    prop::collection::vec(stanza, 1..8).prop_map(|s| s.concat())
}

proptest! {
    /// Whatever the index, resolving never panics, and an answer keeps its promises:
    /// one version per name, every dependency of every chosen package met inside the
    /// set, and every Conflicts or Breaks left in it reported.
    #[test]
    fn answers_are_consistent(text in random_index(), asked in prop::sample::subsequence(vec!["aa", "bb", "cc", "vv"], 0..3), recommends: bool) {
        let candidates = index(&text);
        let mut req = request(&asked.join(" "));
        req.recommends = recommends;
        let Ok(r) = resolve(&candidates, &req) else { return Ok(()) };
        let set = Index::new(&candidates, "amd64");
        let names: HashSet<&str> = r.chosen.iter().map(|&i| candidates[i].name.as_str()).collect();
        prop_assert_eq!(names.len(), r.chosen.len());
        for &i in &r.chosen {
            for group in candidates[i].pre_depends.iter().chain(&candidates[i].depends) {
                let met = group.iter().any(|rel| {
                    let target = Target::of(rel, "amd64");
                    r.chosen.iter().any(|&j| set.satisfies(j, &target, false))
                });
                prop_assert!(met, "{} needs {:?} in {:?}", candidates[i].name, group, r.chosen);
            }
        }
        for spec in &req.packages {
            let target = Target::of_spec(spec).unwrap();
            prop_assert!(r.chosen.iter().any(|&j| set.satisfies(j, &target, false)));
        }
        let clashes = set.clashes(&r.chosen).len();
        let reported = r.problems.iter().filter(|p| !p.contains("recommends") && !p.starts_with("Recommends")).count();
        prop_assert_eq!(clashes, reported);
    }
}
