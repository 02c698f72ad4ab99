//! The crate's import arrows point one way: the fleet database imports none
//! of the other parts, the orchestrator imports the fleet database alone, the
//! router imports the fleet database alone, and none of them imports `slum
//! serve`, the management API or the CLI (see the map in `src/lib.rs`).
//!
//! Read from the sources: every `crate::` path in `src/fleet`,
//! `src/orchestrate` and `src/router` (comments aside) must start with the
//! part's own folder, a folder it may use, or a shared leaf. Root re-exports
//! count as the part they come from, so they are refused too (`crate::SlumDb`
//! is the orchestrator's).

use std::path::{Path, PathBuf};

/// What every part may use: the error type, metrics, TLS roots, connections
/// to servers, the helpers of `lib.rs`, and the unit tests' throw-away
/// databases.
const LEAVES: &[&str] = &[
    "error",
    "Error",
    "Kind",
    "Result",
    "metrics",
    "tls",
    "server_conn",
    "lock",
    "AbortOnDrop",
    "test_db",
];

/// Each part, with the first path segments after `crate::` it may use
/// besides [`LEAVES`].
const PARTS: &[(&str, &[&str])] = &[
    ("fleet", &["fleet"]),
    ("orchestrate", &["orchestrate", "fleet"]),
    ("router", &["router", "fleet"]),
];

/// The first segment of every path that starts with `crate::` in `source`,
/// with the line it is on. `use crate::{a::b, c}` gives `a` and `c`. Lines
/// that are comments are skipped.
fn crate_paths(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let lines: Vec<(usize, &str)> = source
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(n, l)| (n + 1, l))
        .collect();
    // `crate :: a` is `crate::a`: blanks around `::` go (not line breaks,
    // which number the lines).
    let text: String = lines
        .iter()
        .map(|(_, l)| {
            let mut line = l.to_string();
            for spaced in [" ::", "\t::", ":: ", "::\t"] {
                while line.contains(spaced) {
                    line = line.replace(spaced, "::");
                }
            }
            format!("{line}\n")
        })
        .collect();
    let line_of = |offset: usize| lines[text[..offset].matches('\n').count()].0;
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = 0;
    while let Some(at) = text[rest..].find("crate::") {
        let start = rest + at;
        rest = start + "crate::".len();
        // Not the end of another name (`my_crate::`).
        if text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let after = text[start + "crate::".len()..].trim_start();
        if let Some(group) = after.strip_prefix('{') {
            // Each item of the group at the outer level.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if c.is_whitespace() => {}
                    _ if item_start => {
                        item_start = false;
                        found.push((line_of(start), ident(&group[i..])));
                    }
                    _ => {}
                }
            }
        } else {
            found.push((line_of(start), ident(after)));
        }
    }
    found
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read a source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The paths of `source` that a file of `part` may not use.
fn forbidden(part: &str, source: &str) -> Vec<(usize, String)> {
    let allowed = PARTS
        .iter()
        .find(|(p, _)| *p == part)
        .map(|(_, a)| *a)
        .expect("a known part");
    crate_paths(source)
        .into_iter()
        .filter(|(_, first)| {
            !allowed.contains(&first.as_str()) && !LEAVES.contains(&first.as_str())
        })
        .collect()
}

#[test]
fn the_checker_sees_every_form_of_a_crate_path() {
    let source = "use crate::fleet::model::Server;\n\
                  // use crate::serve::AppState; (a comment)\n\
                  use crate::{\n    error::Result,\n    orchestrate::{slum_db::SlumDb, health},\n    lock,\n};\n\
                  fn f() -> crate::Result<()> { crate :: router :: serve() }\n\
                  use other_crate::serve;\n";
    let firsts: Vec<String> = crate_paths(source).into_iter().map(|(_, f)| f).collect();
    assert_eq!(
        firsts,
        ["fleet", "error", "orchestrate", "lock", "Result", "router"]
    );
    assert_eq!(
        forbidden("fleet", source),
        [(3, "orchestrate".to_owned()), (8, "router".to_owned())]
    );
    assert_eq!(forbidden("orchestrate", source), [(8, "router".to_owned())]);
    assert_eq!(
        forbidden("router", "use crate::SlumDb;\nuse crate::route_table::X;\n"),
        [(1, "SlumDb".to_owned()), (2, "route_table".to_owned())]
    );
}

#[test]
fn no_part_imports_a_part_it_must_not() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (part, _) in PARTS {
        let files = sources(&src.join(part));
        assert!(files.len() >= 3, "src/{part} has {} files", files.len());
        let mut paths = 0;
        for file in files {
            let source = std::fs::read_to_string(&file).expect("read a source file");
            paths += crate_paths(&source).len();
            for (line, first) in forbidden(part, &source) {
                wrong.push(format!(
                    "{}:{line}: crate::{first}",
                    file.strip_prefix(&src).unwrap_or(&file).display()
                ));
            }
        }
        assert!(paths > 0, "no crate:: path found in src/{part}");
    }
    assert!(
        wrong.is_empty(),
        "imports against the arrows of src/lib.rs's map:\n{}",
        wrong.join("\n")
    );
}

/// `cargo install` installs `slum` alone: the tenant app of the demo and the
/// tests (`slum-demo-app`) needs the `local-fleet` feature, which the default
/// build leaves out.
#[test]
fn cargo_install_installs_slum_and_not_the_demo_app() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("Cargo.toml");
    let bins: Vec<&str> = manifest.split("[[bin]]").skip(1).collect();
    let demo = bins
        .iter()
        .find(|b| b.contains("name = \"slum-demo-app\""))
        .expect("the demo app's [[bin]]");
    assert!(
        demo.contains("required-features = [\"local-fleet\"]"),
        "the demo app must need local-fleet: {demo}"
    );
    let default = manifest
        .lines()
        .find(|l| l.starts_with("default = "))
        .expect("default features");
    assert!(!default.contains("local-fleet"), "{default}");
}
