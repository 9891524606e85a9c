//! `perfpilot completions SHELL` and `perfpilot man` on the real binary: every subcommand
//! and flag of the command line (read from its clap definition) is in what they print.

mod common;

use std::process::{Command, Stdio};

use clap::CommandFactory;
use perfpilot::cli::Cli;

use common::perfpilot;

/// Runs `perfpilot ARGS`, which must succeed; returns its stdout.
fn stdout_of(args: &[&str]) -> String {
    let output = perfpilot().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "perfpilot {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Every subcommand's name, and every long flag of it, from the clap definition.
fn subcommands_and_flags() -> Vec<(String, Vec<String>)> {
    Cli::command()
        .get_subcommands()
        .map(|sub| {
            let flags = sub
                .get_arguments()
                .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
                .collect();
            (sub.get_name().to_owned(), flags)
        })
        .collect()
}

#[test]
fn completions_name_every_subcommand_and_flag() {
    let commands = subcommands_and_flags();
    assert!(commands.iter().any(|(name, _)| name == "run"));
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["completions", shell]);
        for (name, flags) in &commands {
            assert!(script.contains(name.as_str()), "{shell}: no `{name}`");
            for flag in flags {
                // fish writes `-l target-pid`, the others `--target-pid`.
                let bare = flag.trim_start_matches('-');
                assert!(script.contains(bare), "{shell}: no {flag} of `{name}`");
            }
        }
    }
    // The bash script parses.
    let mut bash = Command::new("bash")
        .args(["-n", "/dev/stdin"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    bash.stdin
        .take()
        .unwrap()
        .write_all(stdout_of(&["completions", "bash"]).as_bytes())
        .unwrap();
    assert!(bash.wait().unwrap().success(), "bash -n refused the script");
}

#[test]
fn an_unknown_shell_is_refused_naming_the_known_ones() {
    let output = perfpilot().args(["completions", "tcsh"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tcsh") && stderr.contains("bash"),
        "{stderr}"
    );
}

#[test]
fn the_manual_page_lists_every_subcommand_and_a_page_per_subcommand_is_written() {
    let page = stdout_of(&["man"]);
    assert!(page.contains(".TH perfpilot 1"), "{page}");
    let commands = subcommands_and_flags();
    // roff escapes each `-` as `\-`.
    let roff = |text: &str| text.replace('-', "\\-");
    for (name, _) in &commands {
        assert!(
            page.contains(&roff(name)),
            "perfpilot.1 does not name `{name}`"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    stdout_of(&["man", "--dir", pages.to_str().unwrap()]);
    for (name, flags) in &commands {
        let path = pages.join(format!("perfpilot-{name}.1"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for flag in flags {
            assert!(text.contains(&roff(flag)), "{}: no {flag}", path.display());
        }
    }
    assert!(pages.join("perfpilot.1").is_file());
}

/// Whether `text` has `token` standing alone: not inside a longer word or flag
/// (`--target-pid` is not found in `--target-pidfile`).
fn names(text: &str, token: &str) -> bool {
    let part_of_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices(token).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + token.len()..].chars().next();
        !before.is_some_and(part_of_word) && !after.is_some_and(part_of_word)
    })
}

#[test]
fn docs_cli_md_names_every_subcommand_flag_and_variable_of_the_command_line() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let mut missing = Vec::new();
    for sub in Cli::command().get_subcommands() {
        let name = sub.get_name();
        if !names(&doc, &format!("perfpilot {name}")) {
            missing.push(format!("perfpilot {name}"));
        }
        for arg in sub.get_arguments() {
            let spellings = arg
                .get_long()
                .map(|long| format!("--{long}"))
                .into_iter()
                .chain(arg.get_short().map(|short| format!("-{short}")))
                .chain(arg.get_env().map(|env| env.to_string_lossy().into_owned()));
            for spelling in spellings {
                if !names(&doc, &spelling) {
                    missing.push(format!("{spelling} (perfpilot {name})"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} does not name: {}",
        path.display(),
        missing.join(", ")
    );
}
