//! The README and the docs tell the truth: the library's example (in
//! docs/library.md) is `examples/first_fleet.rs` byte for byte, that program
//! runs, and every `slum` command line the README and the pages of `docs/`
//! show is one the `slum` binary accepts.
//!
//! None of it needs the network or root, so it runs with every `cargo test`.

use std::path::Path;
use std::process::Command;

#[path = "../examples/first_fleet.rs"]
mod first_fleet;

const README: &str = include_str!("../README.md");
const LIBRARY: &str = include_str!("../docs/library.md");
const EXAMPLE: &str = include_str!("../examples/first_fleet.rs");

/// The fenced blocks of a Markdown text whose info string is `lang`, each
/// without its fences; a block indented in a list item loses its indent.
fn fenced_blocks(markdown: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if line.trim_start() != open {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let mut block = String::new();
        loop {
            let Some(line) = lines.next() else {
                panic!("a ```{lang} block is never closed");
            };
            if line.trim_start().starts_with("```") {
                break;
            }
            let unindented = line
                .get(indent..)
                .filter(|_| line[..indent].trim().is_empty());
            block.push_str(unindented.unwrap_or(line.trim_start()));
            block.push('\n');
        }
        blocks.push(block);
    }
    blocks
}

#[test]
fn the_library_page_shows_the_first_fleet_example_byte_for_byte() {
    let blocks = fenced_blocks(LIBRARY, "rust");
    assert_eq!(
        blocks.len(),
        1,
        "docs/library.md has one Rust block, the example"
    );
    assert!(
        blocks[0] == EXAMPLE,
        "docs/library.md's Rust block differs from examples/first_fleet.rs; paste the file into it again"
    );
}

#[tokio::test]
async fn the_first_fleet_example_stores_a_server_and_a_tenant_that_read_back() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let db = first_fleet::first_fleet(&dir.path().join("slum.db"), "http://east.example.com", None)
        .await?;

    let east = db.get_server("east").await?;
    assert_eq!(east.url, "http://east.example.com");
    assert_eq!(east.region.as_deref(), Some("us-east"));
    assert_eq!((east.capacity_mb, east.free_capacity_mb()), (1024, 1024));

    let tenant = db.get_tenant_by_domain("customer-1.example.com").await?;
    assert_eq!(tenant.server_id, "east");
    assert_eq!(
        tenant.instance_key(),
        "customer-1:prod",
        "named by its domain"
    );
    let on_east = db.list_tenants_on_server("east").await?;
    assert_eq!(on_east, vec![tenant]);
    Ok(())
}

#[test]
fn the_first_fleet_example_runs_to_its_end_without_a_tenement_server() -> anyhow::Result<()> {
    // Without TEN_URL and TEN_TOKEN the program stops short of spawning; with
    // them (someone's real server) it spawns there, and that must work too.
    first_fleet::main()
}

/// Splits a shell command line into words: blanks separate, quotes group,
/// `#` after a blank starts a comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, '#') if word.is_none() => break,
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// Every `slum ...` command of the ```sh blocks of `markdown`, as its
/// arguments (a line continued with `\` is one command; `;` separates two;
/// a redirection or a pipe ends one).
fn slum_commands(markdown: &str) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    for block in fenced_blocks(markdown, "sh") {
        let joined = block.replace("\\\n", " ");
        for line in joined.lines() {
            for command in line.split(';') {
                // A redirection or a pipe ends the command's own words.
                let words: Vec<String> = shell_words(command)
                    .into_iter()
                    .take_while(|w| !w.starts_with(['>', '<', '|', '&']))
                    .collect();
                if words.first().is_some_and(|w| w == "slum") {
                    commands.push(words[1..].to_vec());
                }
            }
        }
    }
    commands
}

#[test]
fn every_slum_command_in_the_readme_and_docs_is_one_the_binary_accepts() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![("README.md".to_owned(), README.to_owned())];
    for entry in std::fs::read_dir(root.join("docs"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            let name = path.strip_prefix(root)?.display().to_string();
            pages.push((name, std::fs::read_to_string(&path)?));
        }
    }

    let mut seen = Vec::new();
    for (page, text) in &pages {
        for args in slum_commands(text) {
            // `--help` at the end: clap still parses every word before it (an
            // unknown flag, a bad value or a stray argument fails), then prints
            // the help instead of running the command.
            let out = Command::new(env!("CARGO_BIN_EXE_slum"))
                .args(&args)
                .arg("--help")
                .output()?;
            assert!(
                out.status.success(),
                "{page}: `slum {}` is refused: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            seen.push(args.join(" "));
        }
    }
    // The README's own commands were found, so the check above checked them.
    for shown in ["serve", "server add", "tenant add", "spawn"] {
        assert!(
            seen.iter().any(|c| c.starts_with(shown)),
            "no `slum {shown}` found among {seen:?}"
        );
    }
    Ok(())
}
