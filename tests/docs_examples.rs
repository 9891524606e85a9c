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

/// Every example configuration a user may copy: README's and docs/'s whole-config blocks,
/// `examples/*.toml`, deploy/'s files (the container's, the Kustomize component's, the
/// manifest's ConfigMap) and the built-in defaults written out as TOML, as `(name, text)`.
fn example_configs() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &Path| {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    };
    let mut configs = Vec::new();
    for file in documents() {
        let name = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        for block in toml_blocks(&read(&file)) {
            if !block.ignored {
                configs.push((format!("{name}:{}", block.line), block.text));
            }
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .expect("examples/ is there")
        .map(|entry| entry.expect("an examples/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files.push(root.join("deploy/container/perfpilot.toml"));
    files.push(root.join("deploy/kubernetes/kustomize/perfpilot-sidecar/perfpilot.toml"));
    for file in files {
        let name = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .display()
            .to_string();
        configs.push((name, read(&file)));
    }
    // The manifest's ConfigMap: the indented block under `perfpilot.toml: |`.
    let manifest = "deploy/kubernetes/perfpilot-sidecar.yaml";
    let yaml = read(&root.join(manifest));
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "perfpilot.toml: |");
    let key_indent = lines.next().map(|l| l.len() - l.trim_start().len());
    let block: String = lines
        .take_while(|l| {
            l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent.unwrap_or(0)
        })
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    assert!(
        block.contains("interval"),
        "no perfpilot.toml in {manifest}"
    );
    configs.push((format!("{manifest} (ConfigMap)"), block));
    let defaults =
        toml::to_string(&perfpilot::config::Config::default()).expect("defaults as TOML");
    configs.push(("the built-in defaults".to_owned(), defaults));
    configs
}

/// The JSON Schema validator's verdict on each instance: its errors (none: valid). Draft 7,
/// Python's `jsonschema` (Debian's python3-jsonschema, which CI installs); `None`, after
/// saying why, where it is missing.
fn schema_errors(
    schema: &serde_json::Value,
    instances: &[serde_json::Value],
) -> Option<Vec<Vec<String>>> {
    use std::process::{Command, Stdio};
    let probe = Command::new("python3")
        .args(["-c", "import jsonschema"])
        .stderr(Stdio::null())
        .status();
    if !probe.is_ok_and(|status| status.success()) {
        perfpilot_strategies::test_support::skip(
            "python3 with jsonschema (Debian: python3-jsonschema) is not installed",
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let schema_file = dir.path().join("schema.json");
    let cases_file = dir.path().join("cases.json");
    std::fs::write(&schema_file, schema.to_string()).unwrap();
    std::fs::write(
        &cases_file,
        serde_json::Value::from(instances.to_vec()).to_string(),
    )
    .unwrap();
    let script = "import json, sys\n\
                  from jsonschema import Draft7Validator\n\
                  schema = json.load(open(sys.argv[1]))\n\
                  Draft7Validator.check_schema(schema)\n\
                  validator = Draft7Validator(schema)\n\
                  print(json.dumps([[('/'.join(map(str, e.absolute_path)) or '(root)') + ': ' + e.message \
                  for e in validator.iter_errors(case)] for case in json.load(open(sys.argv[2]))]))\n";
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(&schema_file)
        .arg(&cases_file)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the validator failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(serde_json::from_slice(&output.stdout).expect("the validator prints JSON"))
}

/// `perfpilot schema`, from the binary.
fn printed_schema() -> serde_json::Value {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_perfpilot"))
        .arg("schema")
        .output()
        .expect("perfpilot schema runs");
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).expect("perfpilot schema prints JSON")
}

fn as_json(text: &str) -> serde_json::Value {
    toml::from_str(text).unwrap_or_else(|e| panic!("not TOML: {e}\n{text}"))
}

#[test]
fn every_example_configuration_validates_against_the_schema() {
    let schema = printed_schema();
    let configs = example_configs();
    let instances: Vec<serde_json::Value> = configs.iter().map(|(_, text)| as_json(text)).collect();
    let Some(verdicts) = schema_errors(&schema, &instances) else {
        return;
    };
    let failures: Vec<String> = configs
        .iter()
        .zip(&verdicts)
        .filter(|(_, errors)| !errors.is_empty())
        .map(|((name, _), errors)| format!("{name}:\n  {}", errors.join("\n  ")))
        .collect();
    println!("{} example configurations validated", configs.len());
    assert!(
        failures.is_empty(),
        "refused by `perfpilot schema`:\n{}",
        failures.join("\n")
    );
}

/// What the loader refuses, the schema refuses too, where a schema can say it: an unknown key,
/// a wrong type, a number out of its range, an unknown name, a missing required key.
#[test]
fn the_loaders_invalid_cases_do_not_validate() {
    let cases = [
        "intervall = \"5s\"\n",
        "[api]\nlisten = \"127.0.0.1:9750\"\ntokn = \"x\"\n",
        "history_size = \"many\"\n",
        "interval = true\n",
        "memory_budget = \"lots\"\n",
        "history_size = 0\n",
        "history_size = 10001\n",
        "[target]\nport = 0\n",
        "[recorder]\nmax_history_requests = 65\n",
        "[strategies.cache_trim]\nfraction = 1.5\n",
        "[strategies.memory_purge.trigger]\nsignal = \"vibes\"\n",
        "[strategies.webhook.hook]\nbody = {}\n",
        "[budgets.memory]\nsignal = \"memory_usage\"\ngoal = 0.8\nlimit = 0.9\nladder = [\"gc\"]\ncalm = 0\n",
    ];
    for case in cases {
        assert!(check(case).is_err(), "the loader accepts {case:?}");
    }
    // The valid neighbours of some of them, so a schema refusing everything cannot pass.
    let valid = [
        "interval = \"5s\"\n",
        "history_size = 10000\n",
        "[strategies.memory_purge.trigger]\nabove = 0.7\n",
        "[strategies.webhook.hook]\nurl = \"http://127.0.0.1:8080/trim\"\n[strategies.webhook.hook.trigger]\nsignal = \"memory_usage_raw\"\nabove = 0.9\n",
    ];
    for case in valid {
        assert_eq!(check(case), Ok(()), "{case:?}");
    }
    let instances: Vec<serde_json::Value> =
        cases.iter().chain(&valid).map(|c| as_json(c)).collect();
    let Some(verdicts) = schema_errors(&printed_schema(), &instances) else {
        return;
    };
    for (case, errors) in cases.iter().zip(&verdicts) {
        assert!(!errors.is_empty(), "the schema accepts {case:?}");
    }
    for (case, errors) in valid.iter().zip(&verdicts[cases.len()..]) {
        assert!(errors.is_empty(), "the schema refuses {case:?}: {errors:?}");
    }
}
