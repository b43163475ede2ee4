//! Every `canopy` command line in the README's code blocks parses: an example a new user
//! copies must at least be a valid command (options in the right place, flags that
//! exist, positional arguments in order).

use super::Cli;
use clap::Parser;

/// The README's shell code blocks, one logical line each (continuations joined).
fn code_lines(readme: &str) -> Vec<String> {
    let (mut inside, mut out, mut pending) = (false, Vec::new(), String::new());
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if !inside {
            continue;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                out.push(std::mem::take(&mut pending));
            }
        }
    }
    out
}

/// Shell words of `line`, quotes removed, up to a comment; control operators (`|`, `&`,
/// `;`, `&&`, `||`) and redirections (`>`) as words of their own.
fn words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut started) = (Vec::new(), String::new(), None, false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, '#') if !started => break,
            (None, ' ' | '\t') => {
                if started {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            (None, '|' | '&' | ';' | '>') => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
                let mut op = c.to_string();
                if chars.peek() == Some(&c) {
                    op.push(chars.next().expect("peeked"));
                }
                words.push(op);
            }
            (None, c) => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// The `canopy …` commands of a line: the words of each pipeline stage or list item
/// that starts with `canopy` (or `sudo canopy`), redirections left out.
fn commands(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut words = words(line).into_iter();
    let flush = |current: &mut Vec<String>, out: &mut Vec<Vec<String>>| {
        let cmd = std::mem::take(current);
        let start = usize::from(cmd.first().is_some_and(|w| w == "sudo"));
        if cmd.get(start).is_some_and(|w| w == "canopy") {
            out.push(cmd[start..].to_vec());
        }
    };
    while let Some(w) = words.next() {
        match w.as_str() {
            "|" | "||" | "&" | "&&" | ";" => flush(&mut current, &mut out),
            ">" | ">>" => {
                words.next();
            }
            _ => current.push(w),
        }
    }
    flush(&mut current, &mut out);
    out
}

/// Inline code spans of the prose and tables that are whole examples (`canopy cat web
/// /etc/os-release`), not synopses: no placeholder in capitals (`ROOT`, `FILE`), no
/// `[optional]` or `…` part.
fn inline_examples(readme: &str) -> Vec<String> {
    let mut prose = String::new();
    let mut inside = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
        } else if !inside {
            // Spans run across line breaks; table cells escape their pipes.
            prose.push_str(&line.replace("\\|", "|"));
            prose.push(' ');
        }
    }
    let placeholder = |span: &str| {
        span.split([' ', '=', ',', ':', '/', '@']).any(|w| {
            w.len() > 1
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c == '.')
        })
    };
    prose
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.starts_with("canopy ") && !placeholder(span))
        .filter(|span| !span.contains(['[', '…', '<']) && !span.contains("..."))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_readme_command_parses() {
    let readme = include_str!("../../README.md");
    let mut checked = 0;
    let mut bad = Vec::new();
    for line in code_lines(readme)
        .into_iter()
        .chain(inline_examples(readme))
    {
        for cmd in commands(&line) {
            checked += 1;
            if let Err(e) = Cli::try_parse_from(&cmd) {
                use clap::error::ErrorKind;
                // `canopy mount` in a sentence names the command: only a wrong
                // argument is a wrong example.
                let mention = matches!(
                    e.kind(),
                    ErrorKind::MissingRequiredArgument
                        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                        | ErrorKind::DisplayHelp
                ) || e.to_string().contains("a value is required");
                if !mention {
                    bad.push(format!(
                        "{}\n    {}",
                        cmd.join(" "),
                        e.render().to_string().lines().next().unwrap_or_default()
                    ));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} commands found in the README");
    assert!(
        bad.is_empty(),
        "README commands that do not parse:\n{}",
        bad.join("\n")
    );
}

#[test]
fn shell_words_as_a_shell_splits_them() {
    assert_eq!(
        commands("docker save app:1 | canopy import docker-archive - --name app  # note"),
        [["canopy", "import", "docker-archive", "-", "--name", "app"]]
    );
    assert_eq!(
        commands("canopy key show > server.pub && canopy run web -- sh -c 'a; b'"),
        vec![
            vec!["canopy", "key", "show"],
            vec!["canopy", "run", "web", "--", "sh", "-c", "a; b"],
        ]
    );
}

/// The examples of every command's `--help`, as `canopy …` lines (a note after them,
/// in parentheses or after `#`, left out).
fn help_examples(cmd: &clap::Command, out: &mut Vec<String>) {
    if let Some(help) = cmd.get_after_help() {
        let help = help.to_string().replace("\\\n", " ");
        for line in help.lines() {
            let line = line.trim_start();
            if !line.starts_with("canopy ") {
                continue;
            }
            let end = [" (", "  #", " # "]
                .iter()
                .filter_map(|m| line.find(m))
                .min()
                .unwrap_or(line.len());
            out.push(line[..end].to_string());
        }
    }
    for sub in cmd.get_subcommands() {
        help_examples(sub, out);
    }
}

#[test]
fn every_help_example_parses() {
    let mut examples = Vec::new();
    help_examples(&<Cli as clap::CommandFactory>::command(), &mut examples);
    assert!(
        examples.len() > 40,
        "only {} examples found",
        examples.len()
    );
    let bad: Vec<String> = examples
        .iter()
        .flat_map(|line| commands(line))
        .filter_map(|cmd| {
            let e = Cli::try_parse_from(&cmd).err()?;
            (e.kind() != clap::error::ErrorKind::DisplayHelp).then(|| {
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                format!("{}\n    {first}", cmd.join(" "))
            })
        })
        .collect();
    assert!(
        bad.is_empty(),
        "--help examples that do not parse:\n{}",
        bad.join("\n")
    );
}
