//! The layering written down in `docs/ARCHITECTURE.md`, checked against the code: every path a
//! library file names (`crate::…`, `super::…`, a child module) must lead to a module of its own
//! layer or a lower one, and no two modules listed in the table may import each other, directly
//! or around a circle. Test code (`#[cfg(test)]` modules and files) is not counted: a test may
//! reach anywhere to set up what it checks. Paths written inside strings (serde's
//! `deserialize_with = "crate::…"`) are not seen; today they all lead to the foundation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const TABLE_START: &str = "<!-- layers: checked by tests/architecture.rs -->";
const TABLE_END: &str = "<!-- /layers -->";

/// A module path, segments without `crate`: `[]` is the crate root, `["oauth", "scope"]` is
/// `src/oauth/scope.rs`.
type ModulePath = Vec<String>;

struct Layer {
    name: String,
    modules: Vec<ModulePath>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The table between the markers: `| 1 | foundation | `clock`, `secret` | … |`; the third
/// column lists the modules of the layer in back-quotes, `crate` standing for the crate root.
fn layers() -> Vec<Layer> {
    let text = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let start = text
        .find(TABLE_START)
        .expect("docs/ARCHITECTURE.md: the layer table's marker");
    let end = text[start..]
        .find(TABLE_END)
        .expect("the table's end marker")
        + start;
    let mut layers = Vec::new();
    for row in text[start..end].lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if cells.len() < 4 || cells[1].parse::<usize>().is_err() {
            continue; // the header and its rule
        }
        assert_eq!(
            cells[1].parse::<usize>().unwrap(),
            layers.len() + 1,
            "layers are numbered from 1 upwards: {row}"
        );
        let modules = cells[3]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|name| match name {
                "crate" => Vec::new(),
                name => name.split("::").map(str::to_owned).collect(),
            })
            .collect();
        layers.push(Layer {
            name: cells[2].to_owned(),
            modules,
        });
    }
    assert!(layers.len() > 3, "the layer table has too few rows");
    layers
}

/// The layer of a module: the one listing the longest prefix of its path.
fn layer_of(layers: &[Layer], module: &ModulePath) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (index, layer) in layers.iter().enumerate() {
        for listed in &layer.modules {
            if covers(listed, module) && best.is_none_or(|(_, len)| listed.len() > len) {
                best = Some((index, listed.len()));
            }
        }
    }
    best.map(|(index, _)| index)
}

/// Whether a table entry covers a module: itself and its descendants; `crate` (the empty path)
/// only the crate root, or every module would be placed in the foundation.
fn covers(listed: &ModulePath, module: &ModulePath) -> bool {
    if listed.is_empty() {
        module.is_empty()
    } else {
        module.starts_with(listed)
    }
}

fn module_of(file: &Path) -> ModulePath {
    let relative = file.strip_prefix(root().join("src")).unwrap();
    let mut segments: ModulePath = relative
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if matches!(segments.last().map(String::as_str), Some("mod" | "lib")) {
        segments.pop();
    }
    segments
}

/// Source without comments, string and character literals (their text is not code) and
/// without `#[cfg(test)]` items; `mod name;` lines under `#[cfg(test)]` are reported so that
/// their files are left out too.
fn code_of(source: &str) -> (String, Vec<String>) {
    let stripped = strip_literals_and_comments(source);
    let mut code = String::new();
    let mut test_modules = Vec::new();
    let mut rest = stripped.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        code.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at its `;` or at the brace closing its body, whichever comes first.
        let semicolon = after.find(';');
        let brace = after.find('{');
        match (semicolon, brace) {
            (Some(s), b) if b.is_none_or(|b| s < b) => {
                let item = &after[..s];
                if let Some(name) = item.trim().rsplit(' ').next()
                    && item.contains("mod ")
                {
                    test_modules.push(name.to_owned());
                }
                rest = &after[s + 1..];
            }
            (_, Some(b)) => {
                let end =
                    closing_brace(after[b..].char_indices()).map_or(after.len(), |i| b + i + 1);
                rest = &after[end..];
            }
            _ => rest = "",
        }
    }
    code.push_str(rest);
    (code, test_modules)
}

fn strip_literals_and_comments(source: &str) -> String {
    let bytes: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < bytes.len() && bytes[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < bytes.len() && !(bytes[i] == '*' && bytes[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&bytes, i) {
            // r"…", r#"…"#
            let mut j = i + 1;
            let mut hashes = 0;
            while bytes.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if bytes.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= bytes.len() {
                    break;
                }
                if bytes[j] == '"' && (0..hashes).all(|k| bytes.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i = after_quoted(&bytes, i);
            out.push_str("\"\"");
        } else if c == '\'' && (bytes.get(i + 2) == Some(&'\'') || next == Some('\\')) {
            // A character literal ('x', '\n', '\u{…}'); a lifetime has no closing quote.
            i = after_quoted(&bytes, i);
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Where a quoted literal opening at `open` ends (just past its closing quote), escapes skipped.
fn after_quoted(chars: &[char], open: usize) -> usize {
    let quote = chars[open];
    let mut i = open + 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The position of the `}` closing the `{` the characters start with.
fn closing_brace(chars: impl Iterator<Item = (usize, char)>) -> Option<usize> {
    let mut depth = 0usize;
    for (i, ch) in chars {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// The paths a file names: `crate::a::b`, `super::a` and `child::a` (its own `mod child;`),
/// with `{…}` groups expanded, as absolute module paths (items included; resolved later).
fn paths_named(code: &str, module: &ModulePath) -> Vec<ModulePath> {
    let chars: Vec<char> = code.chars().collect();
    let children: Vec<String> = child_modules(code);
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_alphabetic() || ident_before(&chars, i) || path_before(&chars, i) {
            i += 1;
            continue;
        }
        let (word, end) = ident_at(&chars, i);
        let base: Option<ModulePath> = match word.as_str() {
            "crate" => Some(Vec::new()),
            "super" => {
                // `super` of a file is the parent of the module the file defines.
                let mut base = module.clone();
                base.pop();
                let mut j = end;
                while chars.get(j) == Some(&':')
                    && chars.get(j + 1) == Some(&':')
                    && ident_at(&chars, j + 2).0 == "super"
                {
                    base.pop();
                    j = ident_at(&chars, j + 2).1;
                }
                found.extend(expand(&chars, j, &base));
                i = j;
                continue;
            }
            // `mod child;` declares a module, it imports nothing: the name is skipped.
            "mod" => {
                let start = (end..chars.len())
                    .find(|&j| !chars[j].is_whitespace())
                    .unwrap_or(end);
                i = ident_at(&chars, start).1.max(end);
                continue;
            }
            // A child's name counts only as the start of a path (`child::Item`), not as a
            // variable that happens to share it.
            name if children.iter().any(|c| c == name)
                && chars.get(end) == Some(&':')
                && chars.get(end + 1) == Some(&':') =>
            {
                let mut base = module.clone();
                base.push(name.to_owned());
                found.extend(expand(&chars, end, &base));
                i = end;
                continue;
            }
            _ => None,
        };
        if let Some(base) = base {
            found.extend(expand(&chars, end, &base));
        }
        i = end;
    }
    found
}

fn path_before(chars: &[char], i: usize) -> bool {
    i >= 2 && chars[i - 1] == ':' && chars[i - 2] == ':'
}

fn ident_at(chars: &[char], start: usize) -> (String, usize) {
    let mut end = start;
    while end < chars.len() && (chars[end].is_alphanumeric() || chars[end] == '_') {
        end += 1;
    }
    (chars[start..end].iter().collect(), end)
}

/// What follows a path prefix at `at`: `::name::name…` or `::{a, b::{c}}`.
fn expand(chars: &[char], at: usize, base: &ModulePath) -> Vec<ModulePath> {
    if !(chars.get(at) == Some(&':') && chars.get(at + 1) == Some(&':')) {
        return vec![base.clone()];
    }
    let mut i = at + 2;
    while chars.get(i).is_some_and(|c| c.is_whitespace()) {
        i += 1;
    }
    if chars.get(i) == Some(&'{') {
        let end = closing_brace(chars.iter().copied().enumerate().skip(i)).unwrap_or(chars.len());
        let inner = &chars[i + 1..end];
        let mut items = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (j, c) in inner.iter().enumerate() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..j]);
                    start = j + 1;
                }
                _ => {}
            }
        }
        items.push(&inner[start..]);
        let mut found = Vec::new();
        for item in items {
            let text: Vec<char> = item
                .iter()
                .copied()
                .skip_while(|c| c.is_whitespace())
                .collect();
            if text.is_empty() {
                continue;
            }
            let (word, end) = ident_at(&text, 0);
            if word.is_empty() || word == "self" {
                found.push(base.clone());
                continue;
            }
            let mut next = base.clone();
            next.push(word);
            found.extend(expand(&text, end, &next));
        }
        return found;
    }
    let (word, end) = ident_at(chars, i);
    if word.is_empty() {
        return vec![base.clone()];
    }
    let mut next = base.clone();
    next.push(word);
    expand(chars, end, &next)
}

/// `mod name;` declarations (not inline modules, which are part of their file).
fn child_modules(code: &str) -> Vec<String> {
    code.split(';')
        .filter_map(|statement| {
            let words: Vec<&str> = statement.split_whitespace().collect();
            match words.as_slice() {
                [.., "mod", name] => Some((*name).to_owned()),
                _ => None,
            }
        })
        .collect()
}

struct Library {
    /// Each library file's module and the modules its paths lead to.
    imports: BTreeMap<ModulePath, BTreeSet<ModulePath>>,
}

fn library() -> Library {
    let mut files = Vec::new();
    collect_files(&root().join("src"), &mut files);
    let mut sources = BTreeMap::new();
    let mut test_only: BTreeSet<ModulePath> = BTreeSet::new();
    for file in &files {
        if file.ends_with("main.rs") {
            continue; // the binary, which may use anything the library exports
        }
        let module = module_of(file);
        let (code, test_modules) = code_of(&std::fs::read_to_string(file).unwrap());
        for name in test_modules {
            let mut child = module.clone();
            child.push(name);
            test_only.insert(child);
        }
        sources.insert(module, code);
    }
    sources.retain(|module, _| !test_only.iter().any(|t| module.starts_with(t)));
    let known: BTreeSet<ModulePath> = sources.keys().cloned().collect();
    let mut imports = BTreeMap::new();
    for (module, code) in &sources {
        let targets = paths_named(code, module)
            .into_iter()
            .filter_map(|path| {
                (0..=path.len())
                    .rev()
                    .map(|len| path[..len].to_vec())
                    .find(|prefix| known.contains(prefix))
            })
            .filter(|target| target != module)
            .collect();
        imports.insert(module.clone(), targets);
    }
    Library { imports }
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

fn name(module: &ModulePath) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

#[test]
fn every_import_points_to_the_same_layer_or_a_lower_one() {
    let problems = upward_imports(&layers(), &library().imports);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn upward_imports(
    layers: &[Layer],
    imports: &BTreeMap<ModulePath, BTreeSet<ModulePath>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (module, targets) in imports {
        let Some(from) = layer_of(layers, module) else {
            problems.push(format!(
                "{} is in no layer of docs/ARCHITECTURE.md",
                name(module)
            ));
            continue;
        };
        for target in targets {
            let Some(to) = layer_of(layers, target) else {
                continue; // reported as the target's own problem
            };
            if to > from {
                problems.push(format!(
                    "{} ({}) imports {} ({}), a higher layer",
                    name(module),
                    layers[from].name,
                    name(target),
                    layers[to].name
                ));
            }
        }
    }
    problems
}

#[test]
fn an_import_upwards_or_an_unplaced_module_is_reported() {
    let path = |text: &str| -> ModulePath { text.split("::").map(str::to_owned).collect() };
    let layers = vec![
        Layer {
            name: "low".into(),
            modules: vec![Vec::new(), path("a::rules")],
        },
        Layer {
            name: "high".into(),
            modules: vec![path("a")],
        },
    ];
    let imports = BTreeMap::from([
        (path("a::rules"), BTreeSet::from([path("a")])),
        (
            path("a"),
            BTreeSet::from([path("a::rules"), path("a::flow")]),
        ),
        (path("z"), BTreeSet::new()),
        (Vec::new(), BTreeSet::from([path("a::rules"), path("a")])),
    ]);
    assert_eq!(
        upward_imports(&layers, &imports),
        [
            "crate (low) imports a (high), a higher layer",
            "a::rules (low) imports a (high), a higher layer",
            "z is in no layer of docs/ARCHITECTURE.md"
        ]
    );
}

/// The unit a module belongs to: the longest entry of the layer table that is a prefix of it
/// (`oauth::scope`, `oauth`, `clients`).
fn unit_of(layers: &[Layer], module: &ModulePath) -> Option<ModulePath> {
    layers
        .iter()
        .flat_map(|layer| &layer.modules)
        .filter(|listed| covers(listed, module))
        .max_by_key(|listed| listed.len())
        .cloned()
}

#[test]
fn no_two_units_of_the_table_import_each_other_even_around_a_circle() {
    let layers = layers();
    let library = library();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, targets) in &library.imports {
        let Some(from) = unit_of(&layers, module) else {
            continue; // reported by the layer check
        };
        for target in targets {
            if let Some(to) = unit_of(&layers, target)
                && to != from
            {
                graph.entry(name(&from)).or_default().insert(name(&to));
            }
        }
    }
    let circles = strongly_connected(&graph);
    assert!(
        circles.is_empty(),
        "modules that import each other: {circles:?}\nedges: {graph:#?}"
    );
}

#[test]
fn the_checker_sees_imports_of_every_form() {
    let code = "use crate::{a::{B, c::D}, e};\nuse super::super::f::G;\nmod child;\npub mod declared;\nuse child::H;\nfn x() { crate::i::j(); let s = \"crate::not_code\"; let child = 1; }\n";
    let (code, _) = code_of(code);
    let found: BTreeSet<String> = paths_named(&code, &vec!["m".into(), "n".into()])
        .iter()
        .map(name)
        .collect();
    for expected in ["a::B", "a::c::D", "e", "f::G", "m::n::child::H", "i::j"] {
        assert!(found.contains(expected), "{expected} not in {found:?}");
    }
    assert!(!found.iter().any(|p| p.contains("not_code")), "{found:?}");
    // A declaration, or a variable named like a child, is no import.
    assert!(
        !found.contains("m::n::declared") && !found.contains("m::n::child"),
        "{found:?}"
    );
    let (code, tests) = code_of(
        "use crate::a;\n#[cfg(test)]\nmod tests {\n use crate::b;\n}\n#[cfg(test)]\nmod support;\n",
    );
    assert!(
        !code.contains("crate::b") && code.contains("crate::a"),
        "{code}"
    );
    assert_eq!(tests, ["support"]);
}

fn strongly_connected(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    // Two nodes are in one circle when each reaches the other.
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(node) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        graph.keys().map(|node| (node, reach(node))).collect();
    let mut circles: Vec<BTreeSet<String>> = Vec::new();
    for (node, reached) in &reachable {
        if !reached.contains(*node) {
            continue;
        }
        let circle: BTreeSet<String> = reached
            .iter()
            .filter(|other| {
                reachable
                    .get(other)
                    .is_some_and(|back| back.contains(*node))
            })
            .cloned()
            .collect();
        if !circles.contains(&circle) {
            circles.push(circle);
        }
    }
    circles
}

#[test]
fn a_circle_is_found_however_long_and_a_chain_is_not_one() {
    let edge = |from: &str, to: &[&str]| {
        (
            from.to_owned(),
            to.iter().map(|t| (*t).to_owned()).collect::<BTreeSet<_>>(),
        )
    };
    let graph = BTreeMap::from([edge("a", &["b"]), edge("b", &["c"]), edge("c", &["a", "d"])]);
    let circles = strongly_connected(&graph);
    assert_eq!(circles.len(), 1);
    assert_eq!(
        circles[0],
        BTreeSet::from(["a".into(), "b".into(), "c".into()])
    );
    let chain = BTreeMap::from([edge("a", &["b"]), edge("b", &["c"])]);
    assert!(strongly_connected(&chain).is_empty());
}
