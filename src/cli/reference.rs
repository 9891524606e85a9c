//! Reference generated from the code: shell completions (`perfpilot completions SHELL`) and
//! the manual pages (`perfpilot man`) from the command line's own definition, and the
//! configuration reference of docs/configuration.md from the configuration's JSON Schema.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;

/// Writes the completion script for `shell` to stdout.
pub(super) fn completions(shell: Shell) -> Result<(), String> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "perfpilot", &mut out);
    write_stdout(&out)
}

/// Writes the manual page `perfpilot(1)` to stdout, or with `dir` every page (`perfpilot.1`
/// and one per subcommand, `perfpilot-run.1`...) into that directory.
pub(super) fn man(dir: Option<&Path>) -> Result<(), String> {
    let command = Cli::command();
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            clap_mangen::generate_to(command, dir)
                .map_err(|e| format!("cannot write the manual pages into {}: {e}", dir.display()))
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .map_err(|e| format!("cannot render the manual page: {e}"))?;
            write_stdout(&out)
        }
    }
}

fn write_stdout(bytes: &[u8]) -> Result<(), String> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

/// docs/configuration.md's reference table: every key of `perfpilot schema` with its type,
/// default, range and whether a reload applies it ([`crate::reload`]'s restart-only list).
/// Written into the page by its test (`UPDATE_GOLDEN=1`).
#[cfg(test)]
fn configuration_table() -> String {
    let schema = crate::config::schema::json_schema();
    let mut out =
        String::from("| key | type | default | range | reloadable |\n|---|---|---|---|---|\n");
    for row in crate::config::schema::keys(&schema) {
        let cell = |text: &str| {
            if text.is_empty() || text == "required" {
                text.to_owned()
            } else {
                format!("`{}`", text.replace('|', "\\|"))
            }
        };
        let reloadable = if crate::reload::is_restart_only(&row.key) {
            "restart"
        } else {
            "yes"
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {reloadable} |\n",
            row.key,
            row.kind,
            cell(&row.default),
            row.range.replace('|', "\\|"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use perfpilot_strategies::test_support::golden;

    /// docs/configuration.md's reference table (between `<!-- keys:start -->` and
    /// `<!-- keys:end -->`) is the one the schema gives: a key, a default or a range changed
    /// in the code without the page fails here, naming the row. `UPDATE_GOLDEN=1` rewrites it.
    #[test]
    fn the_configuration_reference_is_the_codes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let page = std::fs::read_to_string(&path).expect("read docs/configuration.md");
        let (start, end) = ("<!-- keys:start -->\n", "<!-- keys:end -->");
        let from = page.find(start).expect("the keys:start marker") + start.len();
        let to = page[from..].find(end).expect("the keys:end marker") + from;
        let table = super::configuration_table();
        if golden::updating() {
            let updated = format!("{}{table}{}", &page[..from], &page[to..]);
            std::fs::write(&path, updated).expect("write docs/configuration.md");
            return;
        }
        let shown = &page[from..to];
        assert!(
            shown == table,
            "docs/configuration.md's reference differs from the code's (- page, + code); rerun \
             with UPDATE_GOLDEN=1 to rewrite it:\n{}",
            golden::diff(shown, &table)
        );
    }
}
