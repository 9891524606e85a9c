//! The layers of both crates (docs/layout.md, "Layers"): a module names only modules of its
//! own layer or of lower ones, and no files name each other in a circle.
//!
//! Every path counts: `use` lines and inline paths alike (`crate::x::y(...)`, `super::z`),
//! in the production code of `src/` and `strategies/src/` (comments, string literals and
//! `#[cfg(test)]` items are left out). A path is resolved to the file of the longest module
//! it names; a module naming its own ancestors or descendants (a parent and the files of its
//! parts) is one unit and is not checked against itself.
//!
//! The layers are read from the tables in docs/layout.md, the one place they are written: a
//! module in no layer fails, and so does a layer naming a module that is not there.
//!
//! `PERFPILOT_LAYERS_DIR=/other/checkout cargo test --test layers -- --nocapture` measures
//! another checkout of the repository.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// A layer: its name and its top-level modules.
type Layer = (String, Vec<String>);

/// The layers of one crate, lowest first, as docs/layout.md lists them in the table under
/// `heading` (the one place they are written).
fn documented_layers(heading: &str) -> Result<Vec<Layer>, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/layout.md");
    let doc = fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let (_, after) = doc
        .split_once(heading)
        .ok_or_else(|| format!("docs/layout.md has no heading {heading:?}"))?;
    let rows: Vec<&str> = after
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .skip(2)
        .collect();
    let mut layers = Vec::new();
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let [name, modules] = cells[..] else {
            return Err(format!(
                "docs/layout.md, {heading}: a row is not `| layer | modules |`: {row}"
            ));
        };
        let modules: Vec<String> = modules
            .split(',')
            .map(|m| m.trim().trim_matches('`').to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        if modules.is_empty() {
            return Err(format!(
                "docs/layout.md, {heading}: layer {name:?} names no modules"
            ));
        }
        layers.push((name.to_owned(), modules));
    }
    if layers.is_empty() {
        return Err(format!("docs/layout.md, {heading}: no layers in the table"));
    }
    Ok(layers)
}

#[test]
fn imports_only_point_down_and_no_files_form_a_circle() {
    let root = std::env::var_os("PERFPILOT_LAYERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let mut failures = Vec::new();
    println!("| crate | upward paths | circles of more than one file |\n|---|---|---|");
    for (name, src, heading) in [
        (
            "perfpilot",
            root.join("src"),
            "### perfpilot (lowest first)",
        ),
        (
            "perfpilot-strategies",
            root.join("strategies/src"),
            "### perfpilot-strategies (lowest first)",
        ),
    ] {
        let layers = documented_layers(heading).unwrap_or_else(|e| panic!("{e}"));
        let krate = Crate::read(&src);
        let upward = krate.upward(&layers, &mut failures);
        let circles = krate.circles();
        println!("| {name} | {} | {} |", upward.len(), circles.len());
        failures.extend(
            upward
                .iter()
                .map(|edge| format!("{name}: {edge} names a higher layer")),
        );
        for circle in &circles {
            let edges: Vec<String> = circle.iter().map(|e| format!("  {e}")).collect();
            let files: BTreeSet<&str> = circle.iter().map(|e| e.file.as_str()).collect();
            failures.push(format!(
                "{name}: {} files naming each other in a circle:\n{}",
                files.len(),
                edges.join("\n")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "the layers of docs/layout.md are broken:\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_checker_sees_use_trees_inline_paths_and_leaves_out_comments_strings_and_tests() {
    let code = code_only(
        r##"
use crate::{a::X, b::{self, Y}};
use super::c::*;
// use crate::commented::X;
/* crate::block::X */
fn f() -> &'static str { let _ = 'x'; crate::d::go(); "crate::string::X" }
const R: &str = r#"crate::raw::X"#;
#[cfg(test)]
mod tests { use crate::e::X; }
#[cfg(test)]
mod more_tests;
"##,
    );
    let mut test_mods = Vec::new();
    let code = without_test_items(&code, &mut test_mods);
    assert_eq!(test_mods, ["more_tests"]);
    let paths: Vec<String> = paths(&code)
        .into_iter()
        .map(|(p, _)| p.join("::"))
        .collect();
    assert_eq!(
        paths,
        [
            "crate::a::X",
            "crate::b",
            "crate::b::Y",
            "super::c",
            "crate::d::go"
        ]
    );
}

/// One path from a file to another module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    file: String,
    line: usize,
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: `{}` names `{}`",
            self.file,
            self.line,
            shown(&self.from),
            shown(&self.to)
        )
    }
}

fn shown(module: &str) -> &str {
    if module.is_empty() {
        "crate"
    } else {
        module
    }
}

/// The production modules of one crate and the paths between them.
struct Crate {
    /// Module path (`sample::target`, `""` for the root) to its file.
    modules: BTreeMap<String, PathBuf>,
    edges: Vec<Edge>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut files = Vec::new();
        collect_rs(src, &mut files);
        let mut modules = BTreeMap::new();
        let mut code = BTreeMap::new();
        let mut test_only = BTreeSet::new();
        // `main.rs` is the binary, a crate of its own that names the library by its name.
        files.retain(|file| {
            file.strip_prefix(src)
                .is_ok_and(|f| f != Path::new("main.rs"))
        });
        for file in files {
            let module = module_of(src, &file);
            let text = fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            let mut test_mods = Vec::new();
            let production = without_test_items(&code_only(&text), &mut test_mods);
            for child in test_mods {
                test_only.insert(join(&module, &child));
            }
            code.insert(module.clone(), production);
            modules.insert(module, file);
        }
        // A file declared under `#[cfg(test)]` is test code, and so are its own parts.
        modules.retain(|module, _| {
            !test_only
                .iter()
                .any(|t| module == t || module.starts_with(&format!("{t}::")))
        });
        let mut edges = Vec::new();
        for (module, file) in &modules {
            for (path, line) in paths(&code[module]) {
                let Some(to) = resolve(&modules, module, &path) else {
                    continue;
                };
                if to != *module {
                    edges.push(Edge {
                        from: module.clone(),
                        to,
                        file: file
                            .strip_prefix(src.parent().unwrap_or(src))
                            .unwrap_or(file)
                            .display()
                            .to_string(),
                        line,
                    });
                }
            }
        }
        edges.sort();
        edges.dedup_by(|a, b| a.from == b.from && a.to == b.to);
        Crate { modules, edges }
    }

    /// The edges between two different units (neither module inside the other).
    fn checked_edges(&self) -> impl Iterator<Item = &Edge> {
        self.edges
            .iter()
            .filter(|e| !inside(&e.from, &e.to) && !inside(&e.to, &e.from))
    }

    /// The paths naming a module of a higher layer; a top-level module in no layer is a
    /// failure of its own.
    fn upward(&self, layers: &[Layer], failures: &mut Vec<String>) -> Vec<Edge> {
        let layer_of = |module: &str| {
            layers
                .iter()
                .position(|(_, members)| members.iter().any(|m| m == top(module)))
        };
        for (layer, members) in layers {
            for member in members.iter().filter(|m| !self.modules.contains_key(*m)) {
                failures.push(format!(
                    "docs/layout.md puts `{member}` in layer {layer:?}, but there is no such module"
                ));
            }
        }
        for module in self.modules.keys().filter(|m| !m.is_empty()) {
            if layer_of(module).is_none() && !module.contains("::") {
                failures.push(format!(
                    "module `{module}` is in no layer: add it to a layer in docs/layout.md"
                ));
            }
        }
        self.checked_edges()
            .filter(|e| match (layer_of(&e.from), layer_of(&e.to)) {
                (Some(from), Some(to)) => to > from,
                _ => false,
            })
            .cloned()
            .collect()
    }

    /// The circles of more than one file (strongly connected components), each as the edges
    /// inside it. A parent naming its parts counts (`sample.rs` → `sample/procfs.rs`: a
    /// circle may run through it); a part naming its parent's shared items does not.
    fn circles(&self) -> Vec<Vec<Edge>> {
        let edges: Vec<&Edge> = self
            .edges
            .iter()
            .filter(|e| !inside(&e.to, &e.from))
            .collect();
        let nodes: Vec<&str> = self.modules.keys().map(String::as_str).collect();
        let index = |m: &str| nodes.iter().position(|n| *n == m).expect("a known module");
        let mut next: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        for edge in &edges {
            next[index(&edge.from)].push(index(&edge.to));
        }
        strongly_connected(&next)
            .into_iter()
            .filter(|component| component.len() > 1)
            .map(|component| {
                let inside: BTreeSet<&str> = component.iter().map(|&i| nodes[i]).collect();
                edges
                    .iter()
                    .filter(|e| inside.contains(e.from.as_str()) && inside.contains(e.to.as_str()))
                    .map(|e| (*e).clone())
                    .collect()
            })
            .collect()
    }
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}::{child}")
    }
}

/// Whether `outer` is `inner` or holds it (the root holds every module).
fn inside(outer: &str, inner: &str) -> bool {
    outer.is_empty() || inner == outer || inner.starts_with(&format!("{outer}::"))
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries =
        fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
}

/// `lib.rs` and `main.rs` → the root `""`; `a/b.rs` and `a/b/mod.rs` → `a::b`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|last| last == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && parts[0] == "lib" {
        parts.clear();
    }
    parts.join("::")
}

/// The module a path from `module` names: the longest module prefix of the absolute path;
/// `None` for paths into other crates and to items of the module itself.
fn resolve(modules: &BTreeMap<String, PathBuf>, module: &str, path: &[String]) -> Option<String> {
    let mut base: Vec<&str> = if module.is_empty() {
        Vec::new()
    } else {
        module.split("::").collect()
    };
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &path[1..];
        }
        Some("self") => rest = &path[1..],
        Some("super") => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        Some(first) => {
            // A bare first segment is a child module of this one (or of the root, for the
            // root), or another crate: only the first is ours.
            if !modules.contains_key(&join(module, first)) {
                return None;
            }
        }
        None => return None,
    }
    let mut full: Vec<&str> = base;
    full.extend(rest.iter().map(String::as_str));
    (0..=full.len())
        .rev()
        .map(|n| full[..n].join("::"))
        .find(|candidate| modules.contains_key(candidate))
}

/// The code of a Rust file with comments and the insides of string and char literals blanked
/// (newlines kept, so that line numbers hold).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = |k: usize| chars.get(i + k).copied().unwrap_or('\0');
        if c == '/' && at(1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && at(1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if (c == 'r' || (c == 'b' && at(1) == 'r'))
            && !is_ident(chars.get(i.wrapping_sub(1)).copied().unwrap_or(' '))
            && {
                let start = if c == 'b' { 2 } else { 1 };
                let hashes = (start..).take_while(|&k| at(k) == '#').count();
                at(start + hashes) == '"'
            }
        {
            let start = if c == 'b' { 2 } else { 1 };
            let hashes = (start..).take_while(|&k| at(k) == '#').count();
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let open_len = start + hashes + 1;
            out.extend(std::iter::repeat_n(' ', open_len));
            i += open_len;
            let rest: String = chars[i..].iter().collect();
            let end = rest.find(&close).map_or(rest.len(), |e| e + close.len());
            out.extend(rest[..end].chars().map(blank));
            i += rest[..end].chars().count();
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if i < chars.len() {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' && (at(1) == '\\' || at(2) == '\'') {
            // A char literal ('x', '\n', '\u{..}'); a lifetime has no closing quote.
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `code` with every `#[cfg(test)]` item blanked; the names of modules declared there
/// without a body (`#[cfg(test)] mod tests;`) are pushed to `test_mods`.
fn without_test_items(code: &str, test_mods: &mut Vec<String>) -> String {
    const ATTRIBUTE: &str = "#[cfg(test)]";
    let mut out = code.to_owned();
    let mut from = 0;
    while let Some(found) = out[from..].find(ATTRIBUTE) {
        let start = from + found;
        let bytes = out.as_bytes();
        let mut i = start + ATTRIBUTE.len();
        let mut depth = 0i32;
        let mut end = bytes.len();
        while i < bytes.len() {
            match bytes[i] {
                b'(' | b'[' => depth += 1,
                b')' | b']' => depth -= 1,
                b';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                b'{' if depth == 0 => {
                    let mut braces = 0;
                    while i < bytes.len() {
                        match bytes[i] {
                            b'{' => braces += 1,
                            b'}' => {
                                braces -= 1;
                                if braces == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                        i += 1;
                    }
                    end = (i + 1).min(bytes.len());
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let item = &out[start + ATTRIBUTE.len()..end];
        let words: Vec<&str> = item
            .split(|c: char| !is_ident(c))
            .filter(|w| !w.is_empty())
            .collect();
        if item.trim_end().ends_with(';') {
            if let Some(name) = words
                .iter()
                .position(|w| *w == "mod")
                .and_then(|k| words.get(k + 1))
            {
                test_mods.push((*name).to_owned());
            }
        }
        let blanked: String = out[start..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(start..end, &blanked);
        from = end;
    }
    out
}

/// Every path of `code` that starts at `crate`, `super` or `self`, or is a `use` path, with
/// its line; `use` trees are expanded (`use a::{b, c::d}` gives `a::b` and `a::c::d`).
fn paths(code: &str) -> Vec<(Vec<String>, usize)> {
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    let mut rest = code.to_owned();
    // `use` declarations first, then blanked, so that their paths are not seen twice.
    let mut from = 0;
    while let Some(at) = find_word(&rest[from..], "use") {
        let start = from + at;
        let Some(len) = rest[start..].find(';') else {
            break;
        };
        let end = start + len;
        let tree = &rest[start + 3..end];
        let mut expanded = Vec::new();
        expand_use(&[], &tokens(tree), &mut expanded);
        let line = line_of(start);
        found.extend(expanded.into_iter().map(|p| (p, line)));
        let blanked: String = rest[start..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        rest.replace_range(start..end, &blanked);
        from = end;
    }
    for anchor in ["crate", "super", "self"] {
        let mut from = 0;
        while let Some(at) = find_word(&rest[from..], anchor) {
            let start = from + at;
            from = start + anchor.len();
            if !rest[from..].starts_with("::") {
                continue;
            }
            let segments: Vec<String> = rest[start..]
                .split("::")
                .map_while(|s| {
                    let ident: String = s.chars().take_while(|&c| is_ident(c)).collect();
                    let whole = ident.len() == s.len();
                    (!ident.is_empty()).then_some((ident, whole))
                })
                .scan(true, |more, (ident, whole)| {
                    let keep = *more;
                    *more = whole;
                    keep.then_some(ident)
                })
                .collect();
            found.push((segments, line_of(start)));
        }
    }
    found
}

/// Where `word` starts in `text` as a whole word, if anywhere.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text[from..].find(word) {
        let start = from + at;
        let before = text[..start].chars().next_back().is_some_and(is_ident);
        let after = text[start + word.len()..]
            .chars()
            .next()
            .is_some_and(is_ident);
        // `$crate` is a macro's own crate.
        let dollar = text[..start].ends_with('$');
        if !before && !after && !dollar {
            return Some(start);
        }
        from = start + word.len();
    }
    None
}

fn tokens(tree: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in tree.chars() {
        if is_ident(c) {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        if matches!(c, '{' | '}' | ',' | '*') {
            tokens.push(c.to_string());
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

/// Expands a `use` tree's tokens (segments, `{`, `}`, `,`, `*`; `::` dropped) under `prefix`.
fn expand_use(prefix: &[String], tokens: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    let mut i = 0;
    while i < tokens.len() {
        match tokens[i].as_str() {
            "{" => {
                let mut depth = 0;
                let mut item_start = i + 1;
                for k in i..tokens.len() {
                    match tokens[k].as_str() {
                        "{" => depth += 1,
                        "}" | "," if depth == 1 => {
                            expand_use(&path, &tokens[item_start..k], out);
                            item_start = k + 1;
                            if tokens[k] == "}" {
                                return;
                            }
                        }
                        "}" => depth -= 1,
                        _ => {}
                    }
                }
                return;
            }
            "*" => break,
            "as" => break,
            "self" if !path.is_empty() => {}
            "pub" if path.is_empty() => {}
            segment => path.push(segment.to_owned()),
        }
        i += 1;
    }
    if !path.is_empty() {
        out.push(path);
    }
}

/// Tarjan's strongly connected components of the graph `next` (node → nodes it names).
fn strongly_connected(next: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct State<'a> {
        next: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        components: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.counter);
        s.low[v] = s.counter;
        s.counter += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &s.next[v] {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(index) if s.on_stack[w] => s.low[v] = s.low[v].min(index),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let mut state = State {
        next,
        index: vec![None; next.len()],
        low: vec![0; next.len()],
        on_stack: vec![false; next.len()],
        stack: Vec::new(),
        counter: 0,
        components: Vec::new(),
    };
    for v in 0..next.len() {
        if state.index[v].is_none() {
            visit(&mut state, v);
        }
    }
    state.components
}
