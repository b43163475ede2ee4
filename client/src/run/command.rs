//! What a run executes, as whom, where and with which environment: the caller's
//! `-- COMMAND`, else an image's `Entrypoint`/`Cmd` (or one of its `RUN`, `INSTALL`,
//! `UNINSTALL` labels, with `IMAGE` and `NAME` substituted), its `Env`, `WorkingDir` and
//! `User`, with users and groups named as the root's own `/etc/passwd` and
//! `/etc/group` name them.

use super::RunError;
use canopy_protocol::ImageConfig;

/// The labels an image can carry to say how it is run, installed and removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// `RUN`: how to run it.
    Run,
    /// `INSTALL`: what sets the host up for it.
    Install,
    /// `UNINSTALL`: what undoes the install.
    Uninstall,
}

impl Label {
    /// The label's key in the image config.
    pub fn key(self) -> &'static str {
        match self {
            Label::Run => "RUN",
            Label::Install => "INSTALL",
            Label::Uninstall => "UNINSTALL",
        }
    }
}

/// The words of label `label` of `image`, split as a shell would, with `IMAGE` and
/// `NAME` substituted wherever they stand as words (`IMAGE`, `-e NAME=NAME`, `echo
/// install IMAGE`) or as `$IMAGE`/`${IMAGE}`.
pub fn label_command(
    image: Option<&ImageConfig>,
    label: Label,
    image_name: &str,
    name: &str,
) -> Result<Vec<String>, RunError> {
    let key = label.key();
    let text = image
        .and_then(|i| {
            i.labels
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        })
        .ok_or_else(|| {
            RunError::Usage(format!(
                "{image_name} has no {key} label{}",
                match image {
                    None => " (it was not imported from an image)".to_string(),
                    Some(i) if i.labels.is_empty() => " (its image has no labels)".to_string(),
                    Some(i) => format!(
                        " (its labels: {})",
                        i.labels.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                }
            ))
        })?;
    let words = shlex::split(&text).ok_or_else(|| {
        RunError::Usage(format!(
            "the {key} label of {image_name} is not a command line: {text:?}"
        ))
    })?;
    if words.is_empty() {
        return Err(RunError::Usage(format!(
            "the {key} label of {image_name} is empty"
        )));
    }
    Ok(words
        .into_iter()
        .map(|w| substitute(&w, image_name, name))
        .collect())
}

fn substitute(word: &str, image: &str, name: &str) -> String {
    let bare = |w: &str| match w {
        "IMAGE" => Some(image.to_string()),
        "NAME" => Some(name.to_string()),
        _ => None,
    };
    if let Some(v) = bare(word) {
        return v;
    }
    if let Some((key, value)) = word.split_once('=')
        && let Some(v) = bare(value)
    {
        return format!("{key}={v}");
    }
    let word = word
        .replace("${IMAGE}", image)
        .replace("$IMAGE", image)
        .replace("${NAME}", name)
        .replace("$NAME", name);
    whole_words(&whole_words(&word, "IMAGE", image), "NAME", name)
}

/// `text` with every occurrence of `word` that stands alone (not inside a longer
/// name such as `IMAGES` or `HOSTNAME`) replaced by `by`.
fn whole_words(text: &str, word: &str, by: &str) -> String {
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back().or(out.chars().next_back());
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        if ident(before) || ident(after) {
            out.push_str(word);
        } else {
            out.push_str(by);
        }
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

/// The program and arguments to run: `args` if given (after the image's entrypoint,
/// as `docker run IMAGE ARGS` does), else the image's command.
pub fn command(image: Option<&ImageConfig>, args: &[String]) -> Result<Vec<String>, RunError> {
    let words = match image {
        Some(i) => i.command(args),
        None => args.to_vec(),
    };
    if words.is_empty() {
        return Err(RunError::Usage(
            "no command: give one after `--` (canopy run ROOT -- COMMAND…); only roots imported from an image with an Entrypoint or Cmd have one of their own".into(),
        ));
    }
    Ok(words)
}

/// A user and group of the root: numbers, or names looked up in its account files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ids {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
}

/// Resolves `spec` (`USER[:GROUP]`, each a name or a number; "" is root) against the
/// root's `passwd` and `group` files. A user named without a group gets their
/// primary group; a uid that `passwd` lacks gets the same number as gid.
pub fn resolve_user(spec: &str, passwd: &str, group: &str) -> Result<Ids, RunError> {
    if spec.is_empty() {
        return Ok(Ids { uid: 0, gid: 0 });
    }
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = |file: &str, name: &str, field: usize| -> Option<Vec<String>> {
        file.lines()
            .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
            .find(|f| f.len() > field && (f[0] == name || f[2] == name))
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (
            n,
            entry(passwd, user, 3)
                .and_then(|f| f[3].parse().ok())
                .unwrap_or(n),
        ),
        Err(_) => {
            let f = entry(passwd, user, 3).ok_or_else(|| {
                RunError::Usage(format!("user {user:?} is not in the root's /etc/passwd"))
            })?;
            let bad = || {
                RunError::Usage(format!(
                    "the root's /etc/passwd entry of {user} is malformed"
                ))
            };
            (
                f[2].parse().map_err(|_| bad())?,
                f[3].parse().map_err(|_| bad())?,
            )
        }
    };
    let gid = match grp {
        None | Some("") => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => entry(group, g, 2)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    RunError::Usage(format!("group {g:?} is not in the root's /etc/group"))
                })?,
        },
    };
    Ok(Ids { uid, gid })
}

/// The supplementary groups of `user` in the root's `group` file.
pub fn groups(user_name: Option<&str>, group: &str) -> Vec<u32> {
    let Some(user) = user_name else {
        return Vec::new();
    };
    group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() == 4 && f[3].split(',').any(|m| m == user))
                .then(|| f[2].parse().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:www-data\nwww-data:x:33:\n";

    #[test]
    fn users_resolve_by_name_and_number() {
        assert_eq!(
            resolve_user("", PASSWD, GROUP).unwrap(),
            Ids { uid: 0, gid: 0 }
        );
        assert_eq!(
            resolve_user("www-data", PASSWD, GROUP).unwrap(),
            Ids { uid: 33, gid: 33 }
        );
        assert_eq!(
            resolve_user("33:adm", PASSWD, GROUP).unwrap(),
            Ids { uid: 33, gid: 4 }
        );
        assert_eq!(
            resolve_user("1000", PASSWD, GROUP).unwrap(),
            Ids {
                uid: 1000,
                gid: 1000
            }
        );
        assert!(resolve_user("nginx", PASSWD, GROUP).is_err());
        assert_eq!(groups(Some("www-data"), GROUP), [4]);
    }

    #[test]
    fn labels_substitute_image_and_name() {
        let image = ImageConfig {
            labels: [(
                "INSTALL".to_string(),
                "/bin/sh -c 'echo $IMAGE is IMAGE, not IMAGES' -e NAME=NAME IMAGE --name=${NAME}"
                    .to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let words = label_command(Some(&image), Label::Install, "app", "app1").unwrap();
        assert_eq!(
            words,
            [
                "/bin/sh",
                "-c",
                "echo app is app, not IMAGES",
                "-e",
                "NAME=app1",
                "app",
                "--name=app1"
            ]
        );
        let err = label_command(Some(&image), Label::Run, "app", "app").unwrap_err();
        assert!(err.to_string().contains("its labels: INSTALL"), "{err}");
    }
}
