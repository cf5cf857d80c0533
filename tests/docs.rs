//! The docs' command lines against the binaries they name.
//!
//! Every command in a fenced `sh` block of README.md and docs/*.md that
//! runs one of our programs (`blkkin`, `blkkin-relayd`, `blkkin-consumerd`,
//! `blkkin-collector`, as `target/release/…` or `cargo run --` too) is given
//! to that binary with `--help` appended: clap reads the arguments left to
//! right and stops at the first one it does not know or cannot parse, so a
//! renamed flag, a removed subcommand or a value of the wrong form in the
//! docs fails here. The `blkkin certs` examples are run for real, in
//! order, and the files the following examples pass to the daemons must be
//! what they wrote. Scripts the docs name must exist and answer `--help`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A command line from the docs: where it is and its words.
#[derive(Debug)]
struct Example {
    at: String,
    words: Vec<String>,
}

/// Our programs, by the name the docs use.
const PROGRAMS: [&str; 4] = [
    "blkkin",
    "blkkin-relayd",
    "blkkin-consumerd",
    "blkkin-collector",
];

/// The markdown files with examples: README.md and docs/*.md.
fn doc_files() -> Vec<PathBuf> {
    let root = common::root();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The shell command lines of `text`'s fenced `sh`/`bash`/`console`
/// blocks: continuation lines joined, comments dropped, split at `&&`,
/// `||`, `;`, `|` and a trailing `&`.
fn shell_commands(name: &str, text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_shell = None::<bool>;
    let mut pending = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some(lang) = t.strip_prefix("```") {
            in_shell = match in_shell {
                Some(_) => None,
                None => Some(matches!(lang.trim(), "sh" | "bash" | "console" | "shell")),
            };
            continue;
        }
        if in_shell != Some(true) {
            continue;
        }
        if pending.is_empty() {
            start = i + 1;
        }
        let code = strip_comment(t.strip_prefix("$ ").unwrap_or(t));
        match code.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(code);
                let at = format!("{name}:{start}");
                for part in pending.split(['|', ';', '&']) {
                    if !part.trim().is_empty() {
                        out.push((at.clone(), part.trim().to_string()));
                    }
                }
                pending.clear();
            }
        }
    }
    out
}

/// `line` without a trailing `# comment` (a `#` at a word's start).
fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    let cut = (0..b.len()).find(|&i| b[i] == b'#' && (i == 0 || b[i - 1].is_ascii_whitespace()));
    line[..cut.unwrap_or(b.len())].trim_end()
}

/// The examples that run one of our programs, with the program's name as
/// the first word (leading `VAR=value` assignments dropped).
fn examples() -> Vec<Example> {
    let mut out = Vec::new();
    for file in doc_files() {
        let name = file
            .strip_prefix(common::root())
            .unwrap()
            .display()
            .to_string();
        let text = std::fs::read_to_string(&file).unwrap();
        for (at, cmd) in shell_commands(&name, &text) {
            let mut words =
                shlex::split(&cmd).unwrap_or_else(|| panic!("{at}: cannot split {cmd}"));
            while words.first().is_some_and(|w| {
                w.split_once('=').is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                })
            }) {
                words.remove(0);
            }
            if words.starts_with(&["cargo".into(), "run".into(), "--".into()]) {
                words.splice(0..3, ["blkkin".to_string()]);
            }
            let Some(first) = words.first_mut() else {
                continue;
            };
            let program = first.rsplit('/').next().unwrap().to_string();
            if PROGRAMS.contains(&program.as_str()) {
                *first = program;
                out.push(Example { at, words });
            }
        }
    }
    out
}

#[test]
fn every_documented_command_line_parses_with_the_binary_it_names() {
    let examples = examples();
    let mut seen = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for ex in &examples {
        seen.insert(ex.words[0].clone());
        let out = Command::new(common::bin(&ex.words[0]))
            .args(&ex.words[1..])
            .arg("--help")
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{}: {}\n{}",
                ex.at,
                ex.words.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The parser must have found the examples, or this test checks nothing.
    assert_eq!(
        seen,
        PROGRAMS.iter().map(|p| p.to_string()).collect(),
        "{examples:#?}"
    );
    assert!(examples.len() >= 15, "{examples:#?}");
}

#[test]
fn a_wrong_flag_in_an_example_is_caught() {
    // The check above relies on clap refusing what it does not know before
    // it prints the help: a flag the docs could misspell.
    let out = Command::new(common::bin("blkkin-collector"))
        .args([
            "--relay",
            "node1:7420",
            "--cassandra-keyspaces",
            "zipkin2",
            "--help",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cassandra-keyspaces"));
}

#[test]
fn the_certs_examples_make_the_files_the_daemon_examples_use() {
    let tmp = tempfile::tempdir().unwrap();
    let examples = examples();
    let certs: Vec<&Example> = examples
        .iter()
        .filter(|e| e.words.get(1).map(String::as_str) == Some("certs"))
        .collect();
    assert!(certs.len() >= 2, "{examples:#?}");
    let mut pki = None;
    for ex in &certs {
        let out = Command::new(common::bin("blkkin"))
            .args(&ex.words[1..])
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}\n{}",
            ex.at,
            ex.words.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = ex
            .words
            .windows(2)
            .find(|w| w[0] == "--out")
            .map(|w| w[1].clone());
        pki = pki.or(dir);
    }
    let pki = tmp.path().join(pki.expect("the examples name --out"));
    // Every PEM file the other examples pass must have been written.
    let mut used = Vec::new();
    for ex in &examples {
        for w in ex.words.windows(2) {
            if matches!(
                w[0].as_str(),
                "--tls-cert" | "--tls-key" | "--tls-ca" | "--tls-client-ca"
            ) {
                used.push((ex.at.clone(), w[1].clone()));
            }
        }
    }
    assert!(!used.is_empty());
    for (at, file) in used {
        let name = Path::new(&file).file_name().unwrap();
        assert!(
            pki.join(name).is_file(),
            "{at}: {file} is not among what the certs examples wrote: {:?}",
            std::fs::read_dir(&pki)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn the_scripts_the_docs_name_exist_and_explain_themselves() {
    let root = common::root();
    let mut named = std::collections::BTreeSet::new();
    for file in doc_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (_, cmd) in shell_commands("", &text) {
            if let Some(first) = shlex::split(&cmd).and_then(|w| w.into_iter().next()) {
                if first.starts_with("scripts/") || first.starts_with("bench/") {
                    named.insert(first);
                }
            }
        }
    }
    assert!(named.contains("scripts/test.sh"), "{named:?}");
    for script in named {
        let path = root.join(&script);
        assert!(
            path.is_file(),
            "the docs name {script}, which does not exist"
        );
        let out = Command::new("bash")
            .arg(&path)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "{script} --help: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn comments_and_continuations_are_read_as_a_shell_would() {
    let text = "```sh\nblkkin-collector --relay a:1 \\\n    --store s.db   # keep spans\nx=1 blkkin status h:1 | head\n```\n```text\nblkkin nothing\n```\n";
    let got = shell_commands("t", text);
    let cmds: Vec<&str> = got.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(
        cmds,
        [
            "blkkin-collector --relay a:1  --store s.db",
            "x=1 blkkin status h:1",
            "head"
        ]
    );
    assert_eq!(got[0].0, "t:2");
}
