//! Debian control data (deb822): paragraphs of `Field: value` lines, as in a repository's
//! `Packages` and `Release` files and a `.deb`'s control file, and the relation fields
//! (`Depends`, `Provides`, `Conflicts`…) they carry.
//!
//! Parsing is strict where leniency would hide a broken index (a line that is not a
//! field, a field given twice, CRLF line ends, comments) and every error names the line
//! or the relation at fault.

use debversion::Version;
use std::fmt;
use std::ops::Range;

/// Most fields one paragraph may hold: real ones have a few dozen. The bound keeps the
/// duplicate-field check linear on hostile input.
const MAX_FIELDS: usize = 1000;

/// Why control data does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A line is not deb822.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// A relation (`name [(op version)] …`) does not parse.
    #[error("relation {relation:?}: {message}")]
    Relation {
        /// The relation as written.
        relation: String,
        /// What is wrong with it.
        message: String,
    },
    /// A package's paragraph lacks a field or has a bad value in one.
    #[error("package {package}: field {field}: {message}")]
    Field {
        /// The package (its `Package` field, or `?` when that is missing).
        package: String,
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

fn syntax(line: usize, message: impl Into<String>) -> ControlError {
    ControlError::Syntax {
        line,
        message: message.into(),
    }
}

/// One paragraph ("stanza") of a control file: fields in order, names compared
/// case-insensitively. A value continued over several lines is joined with `'\n'`, each
/// continuation line without its leading space, and a ` .` line read as an empty line, as
/// dpkg does; a field whose first line is empty (Release's `SHA256:`) starts with `'\n'`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paragraph {
    /// Names and values back to back, so that a paragraph costs two allocations however
    /// many fields it has (an index holds tens of thousands of paragraphs).
    text: String,
    /// (name, value) ranges in `text`.
    fields: Vec<(Range<usize>, Range<usize>)>,
    /// Where the paragraph starts in its file.
    line: usize,
}

impl Paragraph {
    /// The value of a field, its name compared case-insensitively.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields()
            .find(|(name, _)| name.eq_ignore_ascii_case(field))
            .map(|(_, value)| value)
    }

    /// Every field as (name as written, value), in file order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields
            .iter()
            .map(|(name, value)| (&self.text[name.clone()], &self.text[value.clone()]))
    }

    /// The 1-based line of the file the paragraph starts on, for error messages.
    pub fn line(&self) -> usize {
        self.line
    }
}

/// Every paragraph of a control file (Packages, Release, a `.deb`'s control), in order.
/// Errors name the line number.
pub fn parse_paragraphs(text: &str) -> Result<Vec<Paragraph>, ControlError> {
    paragraphs(text).collect()
}

/// The paragraphs of a control file one at a time, so that a whole index need not be held
/// twice; iteration ends after the first error.
pub fn paragraphs(text: &str) -> Paragraphs<'_> {
    Paragraphs {
        rest: Some(text),
        line: 0,
    }
}

/// Iterator over the paragraphs of a control file; see [`paragraphs`].
pub struct Paragraphs<'a> {
    /// What is left to read; `None` at the end or after an error.
    rest: Option<&'a str>,
    /// The number of lines read so far.
    line: usize,
}

impl Iterator for Paragraphs<'_> {
    type Item = Result<Paragraph, ControlError>;

    fn next(&mut self) -> Option<Self::Item> {
        let result = self.read_paragraph().transpose();
        if matches!(result, Some(Err(_))) {
            self.rest = None;
        }
        result
    }
}

impl<'a> Paragraphs<'a> {
    fn next_line(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let (line, rest) = match rest.split_once('\n') {
            Some((line, rest)) => (line, Some(rest)),
            None => (rest, None),
        };
        self.rest = rest;
        self.line += 1;
        Some(line)
    }

    /// Reads lines up to the end of the next paragraph; `None` at the end of the file.
    fn read_paragraph(&mut self) -> Result<Option<Paragraph>, ControlError> {
        let mut paragraph: Option<Paragraph> = None;
        while let Some(line) = self.next_line() {
            let number = self.line;
            // A CRLF file shows as a carriage return at every line end.
            if line.ends_with('\r') {
                return Err(syntax(
                    number,
                    "carriage return in control data (CRLF line ends are not deb822)",
                ));
            }
            if line.trim_matches([' ', '\t']).is_empty() {
                match paragraph {
                    Some(_) => return Ok(paragraph),
                    None => continue,
                }
            }
            if let Some(rest) = line.strip_prefix([' ', '\t']) {
                let p = paragraph
                    .as_mut()
                    .ok_or_else(|| syntax(number, "continuation line with no field before it"))?;
                let rest = rest.trim_end_matches([' ', '\t']);
                p.text.push('\n');
                p.text.push_str(if rest == "." { "" } else { rest });
                let last = p.fields.last_mut().expect("a paragraph has a field");
                last.1.end = p.text.len();
                continue;
            }
            if line.starts_with('#') {
                return Err(syntax(number, "comment lines are not allowed here"));
            }
            let p = paragraph.get_or_insert_with(|| Paragraph {
                // Room for a typical Packages paragraph, so that the buffer is not grown
                // line by line.
                text: String::with_capacity(1024),
                fields: Vec::with_capacity(24),
                line: number,
            });
            add_field(p, line, number)?;
        }
        Ok(paragraph)
    }
}

/// Adds a `Name: value` line to a paragraph.
fn add_field(p: &mut Paragraph, line: &str, number: usize) -> Result<(), ControlError> {
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| syntax(number, format!("{line:?} is not a field (no colon)")))?;
    let valid = !name.is_empty()
        && !name.starts_with('-')
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if !valid {
        return Err(syntax(number, format!("{name:?} is not a field name")));
    }
    if p.get(name).is_some() {
        return Err(syntax(
            number,
            format!("field {name} appears twice in one paragraph"),
        ));
    }
    if p.fields.len() == MAX_FIELDS {
        return Err(syntax(
            number,
            format!("more than {MAX_FIELDS} fields in one paragraph"),
        ));
    }
    let start = p.text.len();
    p.text.push_str(name);
    let middle = p.text.len();
    p.text.push_str(value.trim_matches([' ', '\t']));
    p.fields.push((start..middle, middle..p.text.len()));
    Ok(())
}

/// A version comparison in a relation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `<<`: strictly earlier.
    Earlier,
    /// `<=` (also the obsolete `<`): earlier or equal.
    EarlierEq,
    /// `=`: equal.
    Equal,
    /// `>=` (also the obsolete `>`): later or equal.
    LaterEq,
    /// `>>`: strictly later.
    Later,
}

impl Op {
    /// Whether `version` stands in this relation to `bound` (`version op bound`).
    pub fn admits(self, version: &Version, bound: &Version) -> bool {
        let order = version.cmp(bound);
        match self {
            Op::Earlier => order.is_lt(),
            Op::EarlierEq => order.is_le(),
            Op::Equal => order.is_eq(),
            Op::LaterEq => order.is_ge(),
            Op::Later => order.is_gt(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Earlier => "<<",
            Op::EarlierEq => "<=",
            Op::Equal => "=",
            Op::LaterEq => ">=",
            Op::Later => ">>",
        })
    }
}

/// One relation: `name[:archqual] [(op version)] [[arch list]] [<profiles>]`. Build
/// profiles only matter when building from source, so they are checked and dropped.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Relation {
    /// Package (or virtual package) name.
    pub name: String,
    /// `any`, `native` or an architecture after a colon.
    pub arch_qualifier: Option<String>,
    /// The version constraint, when there is one.
    pub constraint: Option<(Op, Version)>,
    /// The architecture restriction list, `(negated, arch)` each: `[amd64 !i386]`.
    pub arches: Vec<(bool, String)>,
}

impl Relation {
    /// Whether a version satisfies the constraint (always, when there is none).
    pub fn version_matches(&self, version: &Version) -> bool {
        self.constraint
            .as_ref()
            .is_none_or(|(op, bound)| op.admits(version, bound))
    }

    /// Whether the relation applies on an architecture: its restriction list is empty,
    /// names the architecture (or a wildcard matching it), or negates only others.
    pub fn applies_to(&self, arch: &str) -> bool {
        match self.arches.first() {
            None => true,
            Some((true, _)) => !self.arches.iter().any(|(_, a)| arch_matches(a, arch)),
            Some((false, _)) => self.arches.iter().any(|(_, a)| arch_matches(a, arch)),
        }
    }
}

/// Whether an architecture name or wildcard (`any`, `linux-any`, `any-amd64`) matches
/// an architecture. A plain name like `amd64` is the Linux one (`linux-amd64`).
fn arch_matches(pattern: &str, arch: &str) -> bool {
    if pattern == arch || pattern == "any" {
        return true;
    }
    let (os, cpu) = arch.rsplit_once('-').unwrap_or(("linux", arch));
    let os = os.rsplit('-').next().unwrap_or(os);
    match pattern.split_once('-') {
        Some((p_os, "any")) => p_os == os,
        Some(("any", p_cpu)) => p_cpu == cpu,
        _ => false,
    }
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(q) = &self.arch_qualifier {
            write!(f, ":{q}")?;
        }
        if let Some((op, version)) = &self.constraint {
            write!(f, " ({op} {version})")?;
        }
        if !self.arches.is_empty() {
            let list: Vec<String> = self
                .arches
                .iter()
                .map(|(negated, a)| format!("{}{a}", if *negated { "!" } else { "" }))
                .collect();
            write!(f, " [{}]", list.join(" "))?;
        }
        Ok(())
    }
}

/// A relation field (`Depends`, `Pre-Depends`…) as an AND of ORs: `a | b, c` is
/// `[[a, b], [c]]`. An empty field is an empty list.
pub fn parse_relations(field: &str) -> Result<Vec<Vec<Relation>>, ControlError> {
    if field.trim().is_empty() {
        return Ok(Vec::new());
    }
    field
        .split(',')
        .map(|group| group.split('|').map(parse_relation).collect())
        .collect()
}

/// Whether a package name is valid: two or more of `a-z0-9+-.`, starting alphanumeric.
pub fn valid_package_name(name: &str) -> bool {
    name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

/// Whether `name` is an architecture name as dpkg allows them (`amd64`, `all`,
/// `musl-linux-arm64`): it is a path component in dpkg's database (`info/PKG:ARCH.list`)
/// and a word of every listing.
pub fn valid_arch_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Parses one relation, without commas or bars.
fn parse_relation(text: &str) -> Result<Relation, ControlError> {
    let bad = |message: String| ControlError::Relation {
        relation: text.trim().to_string(),
        message,
    };
    let mut rest = text.trim_start();
    if rest.trim_end().is_empty() {
        return Err(bad("empty relation (stray ',' or '|')".into()));
    }
    let (name, after) = split_word(rest, "([<:");
    if !valid_package_name(name) {
        return Err(bad(format!(
            "{name:?} is not a package name (two or more of a-z 0-9 + - ., starting alphanumeric)"
        )));
    }
    rest = after;
    let mut arch_qualifier = None;
    if let Some(after) = rest.strip_prefix(':') {
        let (qualifier, after) = split_word(after, "([<");
        if !valid_arch_name(qualifier) {
            return Err(bad(format!(
                "{qualifier:?} is not an architecture qualifier"
            )));
        }
        arch_qualifier = Some(qualifier.to_string());
        rest = after;
    }
    rest = rest.trim_start();
    let mut constraint = None;
    if let Some(after) = rest.strip_prefix('(') {
        let (inside, after) = after
            .split_once(')')
            .ok_or_else(|| bad("'(' without ')'".into()))?;
        constraint = Some(parse_constraint(inside).map_err(bad)?);
        rest = after.trim_start();
    }
    let mut arches = Vec::new();
    if let Some(after) = rest.strip_prefix('[') {
        let (inside, after) = after
            .split_once(']')
            .ok_or_else(|| bad("'[' without ']'".into()))?;
        arches = parse_arch_list(inside).map_err(bad)?;
        rest = after.trim_start();
    }
    while let Some(after) = rest.strip_prefix('<') {
        let (inside, after) = after
            .split_once('>')
            .ok_or_else(|| bad("'<' without '>'".into()))?;
        if inside.trim().is_empty() || inside.contains(['<', '(', '[']) {
            return Err(bad(format!("<{inside}> is not a build profile list")));
        }
        rest = after.trim_start();
    }
    if !rest.is_empty() {
        return Err(bad(format!("unexpected {rest:?} after the relation")));
    }
    Ok(Relation {
        name: name.to_string(),
        arch_qualifier,
        constraint,
        arches,
    })
}

/// Splits off the leading word: up to white space or one of `stops`.
fn split_word<'a>(text: &'a str, stops: &str) -> (&'a str, &'a str) {
    let end = text
        .find(|c: char| c.is_whitespace() || stops.contains(c))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// Parses `op version`, the inside of the parentheses.
fn parse_constraint(inside: &str) -> Result<(Op, Version), String> {
    let inside = inside.trim_start();
    let (op, version) = [
        ("<<", Op::Earlier),
        ("<=", Op::EarlierEq),
        (">=", Op::LaterEq),
        (">>", Op::Later),
        ("=", Op::Equal),
        ("<", Op::EarlierEq),
        (">", Op::LaterEq),
    ]
    .iter()
    .find_map(|(token, op)| inside.strip_prefix(token).map(|v| (*op, v.trim())))
    .ok_or_else(|| {
        format!("({inside}) does not start with one of << <= = >= >> (or the obsolete < >)")
    })?;
    if version.is_empty() || version.contains(char::is_whitespace) {
        return Err(format!("({inside}) needs one version after the operator"));
    }
    let version = version
        .parse()
        .map_err(|e| format!("{version:?} is not a Debian version: {e}"))?;
    Ok((op, version))
}

/// Parses the inside of `[amd64 !i386]`: all names negated or none, as dpkg requires.
fn parse_arch_list(inside: &str) -> Result<Vec<(bool, String)>, String> {
    let arches: Vec<(bool, String)> = inside
        .split_whitespace()
        .map(|word| match word.strip_prefix('!') {
            Some(name) => (true, name.to_string()),
            None => (false, word.to_string()),
        })
        .collect();
    if arches.is_empty() {
        return Err("empty architecture list []".into());
    }
    if let Some((_, name)) = arches.iter().find(|(_, name)| !valid_arch_name(name)) {
        return Err(format!("{name:?} is not an architecture name"));
    }
    if arches.iter().any(|(negated, _)| *negated != arches[0].0) {
        return Err(format!("[{inside}] mixes negated and plain architectures"));
    }
    Ok(arches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn reads_paragraphs_with_continuations() {
        let text = "Package: hello\nversion:  2.10-3 \nDescription: greets\n the world\n .\n  verbatim\n\n\n\
                    Package: other\nSHA256:\n abc 12 main/Packages\n";
        let ps = parse_paragraphs(text).unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].get("PACKAGE"), Some("hello"));
        assert_eq!(ps[0].get("Version"), Some("2.10-3"));
        assert_eq!(
            ps[0].get("description"),
            Some("greets\nthe world\n\n verbatim")
        );
        assert_eq!(ps[0].get("Missing"), None);
        assert_eq!(ps[0].line(), 1);
        assert_eq!(ps[1].line(), 9);
        assert_eq!(ps[1].get("sha256"), Some("\nabc 12 main/Packages"));
        let names: Vec<&str> = ps[0].fields().map(|(n, _)| n).collect();
        assert_eq!(names, ["Package", "version", "Description"]);
        assert_eq!(parse_paragraphs("\n \n").unwrap(), vec![]);
    }

    #[test]
    fn control_errors_name_the_line() {
        let cases = [
            ("Package: a\nno colon here\n", 2, "not a field"),
            (" starts with a space\n", 1, "continuation line"),
            ("Package: a\npackage: b\n", 2, "appears twice"),
            ("Package: a\r\nVersion: 1\r\n", 1, "carriage return"),
            ("Package: a\n\n# comment\n", 3, "comment"),
            ("Package: a\nbad name: x\n", 2, "not a field name"),
            ("A: 1\n: x\n", 2, "not a field name"),
        ];
        for (text, line, words) in cases {
            let err = parse_paragraphs(text).unwrap_err();
            assert!(
                matches!(&err, ControlError::Syntax { line: l, message } if *l == line && message.contains(words)),
                "{text:?} gave {err}"
            );
            assert!(err.to_string().starts_with(&format!("line {line}: ")));
        }
        let many: String = (0..=MAX_FIELDS).map(|i| format!("F{i}: x\n")).collect();
        assert!(parse_paragraphs(&many).is_err());
    }

    #[test]
    fn parses_relations() {
        let rels = parse_relations(
            "libc6 (>= 2.34), debconf (>= 0.5) | debconf-2.0,python3:any ( << 3.12~ ),\n foo:amd64 [amd64 i386] <!nocheck> <stage1 cross>",
        )
        .unwrap();
        assert_eq!(rels.len(), 4);
        assert_eq!(rels[0][0].name, "libc6");
        assert_eq!(rels[0][0].constraint, Some((Op::LaterEq, v("2.34"))));
        assert_eq!(rels[1].len(), 2);
        assert_eq!(rels[1][1].name, "debconf-2.0");
        assert_eq!(rels[1][1].constraint, None);
        assert_eq!(rels[2][0].arch_qualifier.as_deref(), Some("any"));
        assert_eq!(rels[2][0].constraint, Some((Op::Earlier, v("3.12~"))));
        assert_eq!(rels[3][0].arch_qualifier.as_deref(), Some("amd64"));
        assert_eq!(
            rels[3][0].arches,
            [(false, "amd64".to_string()), (false, "i386".to_string())]
        );
        assert_eq!(
            rels[3][0].to_string(),
            "foo:amd64 [amd64 i386]",
            "profiles are dropped"
        );
        assert_eq!(parse_relations(" ").unwrap(), Vec::<Vec<Relation>>::new());
        // The obsolete one-character operators mean "or equal".
        let old = parse_relations("a0 (< 1), b0 (> 1)").unwrap();
        assert_eq!(old[0][0].constraint.as_ref().unwrap().0, Op::EarlierEq);
        assert_eq!(old[1][0].constraint.as_ref().unwrap().0, Op::LaterEq);
    }

    #[test]
    fn rejects_malformed_relations() {
        let cases = [
            ("a0, , b0", "empty relation"),
            ("a0 |", "empty relation"),
            ("Foo", "not a package name"),
            ("a0 (>= 1", "without ')'"),
            ("a0 (~ 1)", "does not start with"),
            ("a0 (>= )", "needs one version"),
            ("a0 (>= 1 2)", "needs one version"),
            ("a0 (>= !x)", "not a Debian version"),
            ("a0 [amd64 !i386]", "mixes negated"),
            ("a0 []", "empty architecture list"),
            ("a0 [amd64", "without ']'"),
            ("a0: (= 1)", "not an architecture qualifier"),
            ("a0 <nocheck", "without '>'"),
            ("a0 b0", "unexpected"),
            ("a0 (= 1) (= 2)", "unexpected"),
        ];
        for (text, words) in cases {
            let err = parse_relations(text).unwrap_err();
            assert!(
                matches!(&err, ControlError::Relation { message, .. } if message.contains(words)),
                "{text:?} gave {err}"
            );
        }
    }

    #[test]
    fn compares_versions_with_every_operator() {
        let rel = |op: &str| parse_relations(&format!("p0 ({op} 1.0)")).unwrap()[0][0].clone();
        let table = [
            ("<<", [true, false, false]),
            ("<=", [true, true, false]),
            ("=", [false, true, false]),
            (">=", [false, true, true]),
            (">>", [false, false, true]),
        ];
        for (op, expect) in table {
            let got = ["1.0~rc1", "1.0", "1.0.1"].map(|x| rel(op).version_matches(&v(x)));
            assert_eq!(got, expect, "{op}");
        }
        // Epochs outrank everything after them; "~" sorts before the empty string.
        assert!(Op::Later.admits(&v("1:0.9"), &v("2.0")));
        assert!(Op::Earlier.admits(&v("1.0~rc1"), &v("1.0")));
        assert!(Op::Equal.admits(&v("0:1.0"), &v("1.0")));
    }

    #[test]
    fn evaluates_architecture_lists() {
        let applies = |list: &str, arch: &str| {
            parse_relations(&format!("p0 [{list}]")).unwrap()[0][0].applies_to(arch)
        };
        assert!(applies("amd64 i386", "amd64"));
        assert!(!applies("arm64 i386", "amd64"));
        assert!(!applies("!amd64", "amd64"));
        assert!(applies("!i386 !arm64", "amd64"));
        assert!(applies("linux-any", "amd64"));
        assert!(applies("any-amd64", "amd64"));
        assert!(!applies("hurd-any", "amd64"));
        assert!(applies("hurd-any", "hurd-i386"));
        assert!(!applies("any-i386", "amd64"));
    }

    proptest! {
        #[test]
        fn random_text_never_panics(text in "(?s).{0,200}") {
            let _ = parse_paragraphs(&text);
            let _ = parse_relations(&text);
        }

        #[test]
        fn control_like_text_never_panics(
            text in "([A-Za-z0-9 :|,!()<>=~.+\\[\\]#\t\n-]|\r){0,200}"
        ) {
            let _ = parse_paragraphs(&text);
            let _ = parse_relations(&text);
        }
    }
}
