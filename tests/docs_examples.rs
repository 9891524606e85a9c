//! The documentation's example configurations are configurations the agent accepts.
//!
//! Every fenced block opened with `` ```toml `` in `README.md` and in `docs/*.md` is run
//! through the real loader, [`perfpilot::config::load_from_str`] (what `perfpilot
//! check-config` runs), with no environment and no flags. A block it refuses fails the test
//! with the file, the block's first line and the loader's message (every problem of it).
//!
//! The rule for blocks that are deliberately partial or invalid (a fragment that needs the
//! rest of a file, an example of what is refused): open the fence as `` ```toml,ignore ``, or
//! make the block's first line a comment starting `# not a whole config` (saying why). Those
//! two are the only ways a `toml` block is skipped; a block in another language (`sh`,
//! `rust`) is not read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use perfpilot::config::{load_from_str, Overrides};

/// The first-line comment that marks a block as deliberately not a whole configuration.
const NOT_A_WHOLE_CONFIG: &str = "# not a whole config";

/// One fenced `toml` block of a Markdown file.
#[derive(Debug)]
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    /// Whether the block is marked as deliberately partial or invalid.
    ignored: bool,
    /// The block's text, its fence's indentation removed.
    text: String,
}

/// The fenced blocks whose info string's language is `toml` (`toml`, `toml,ignore`,
/// `toml ignore`), in order. Fences may be indented (inside a list); the closing fence is the
/// next line that is only backticks (at least as many as the opening one).
fn toml_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let trimmed = line.trim_start();
        let ticks = trimmed.chars().take_while(|&c| c == '`').count();
        if ticks < 3 {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let info = trimmed[ticks..].trim();
        let mut words = info.split([',', ' ']).filter(|w| !w.is_empty());
        let is_toml = words.next() == Some("toml");
        let fence_ignored = words.any(|w| w == "ignore");
        let mut text = String::new();
        for (_, inner) in lines.by_ref() {
            let inner_trimmed = inner.trim();
            if inner_trimmed.len() >= ticks && inner_trimmed.chars().all(|c| c == '`') {
                break;
            }
            let cut = inner.len() - inner.trim_start().len();
            text.push_str(&inner[cut.min(indent)..]);
            text.push('\n');
        }
        if is_toml {
            let marked = text
                .lines()
                .next()
                .is_some_and(|first| first.trim_start().starts_with(NOT_A_WHOLE_CONFIG));
            blocks.push(Block {
                line: index + 1,
                ignored: fence_ignored || marked,
                text,
            });
        }
    }
    blocks
}

/// `README.md` and every `docs/*.md`, sorted.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let docs = root.join("docs");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&docs)
        .unwrap_or_else(|e| panic!("read {}: {e}", docs.display()))
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    pages.sort();
    files.extend(pages);
    files
}

/// The loader's verdict on one block: `Err` with its message when refused.
fn check(text: &str) -> Result<(), String> {
    load_from_str(text, &HashMap::new(), &Overrides::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn every_toml_example_in_the_docs_is_a_valid_configuration() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    let (mut checked, mut skipped) = (0, 0);
    for file in documents() {
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        let name = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for block in toml_blocks(&text) {
            if block.ignored {
                skipped += 1;
                continue;
            }
            checked += 1;
            if let Err(message) = check(&block.text) {
                failures.push(format!(
                    "{name}, the ```toml block at line {}: {message}",
                    block.line
                ));
            }
        }
    }
    println!("{checked} toml blocks checked, {skipped} marked partial and skipped");
    assert!(
        checked >= 3,
        "only {checked} toml blocks found in README.md and docs/*.md: is the extraction broken?"
    );
    assert!(
        failures.is_empty(),
        "{} documented configuration(s) refused by the loader (mark a deliberately partial \
         block with ```toml,ignore or a first line `{NOT_A_WHOLE_CONFIG}`):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_extraction_finds_indented_and_marked_blocks_and_the_loader_refuses_a_bad_one() {
    let markdown = "text\n\n```toml\ninterval = \"1s\"\n```\n\n- a list item:\n\n  ```toml\n  \
                    interval = \"nonsense\"\n  ```\n\n```toml,ignore\nnot = valid = toml\n```\n\n\
                    ```toml\n# not a whole config: a fragment\n[x\n```\n\n```sh\nls\n```\n";
    let blocks = toml_blocks(markdown);
    let summary: Vec<(usize, bool, &str)> = blocks
        .iter()
        .map(|b| (b.line, b.ignored, b.text.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (3, false, "interval = \"1s\"\n"),
            (9, false, "interval = \"nonsense\"\n"),
            (13, true, "not = valid = toml\n"),
            (17, true, "# not a whole config: a fragment\n[x\n"),
        ]
    );
    assert_eq!(check(&blocks[0].text), Ok(()));
    let refused = check(&blocks[1].text).expect_err("an interval of \"nonsense\" is refused");
    assert!(
        refused.contains("interval"),
        "the message names the key: {refused}"
    );
}
