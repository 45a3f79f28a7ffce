//! Every Rust sample in README.md and docs/*.md is compiled: its file is included as doc tests of a
//! crate (`#[doc = include_str!("../../docs/<file>.md")]` under `cfg(doctest)`), so `cargo test --doc`
//! builds it. A new Rust sample in a file nobody includes fails here.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Whether `text` has a fenced ```rust block (any attributes: `rust,no_run`, ...).
fn has_rust_block(text: &str) -> bool {
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim_start();
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        if !inside {
            let lang = info.trim().split(',').next().unwrap_or("");
            if lang == "rust" {
                return true;
            }
        }
        inside = !inside;
    }
    false
}

fn rust_sources(dir: &Path, out: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_sources(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn every_markdown_file_with_rust_samples_is_doc_tested() {
    let root = root();
    let mut sources = String::new();
    rust_sources(&root, &mut sources);
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut with_rust = 0;
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        if !has_rust_block(&text) {
            continue;
        }
        with_rust += 1;
        let name = path.strip_prefix(&root).unwrap().display().to_string();
        let included = sources.contains(&format!("include_str!(\"../../{name}\")"))
            || sources.contains(&format!("include_str!(\"../{name}\")"));
        assert!(
            included,
            "{name} has ```rust samples but no crate includes it as doc tests; add \
             #[cfg(doctest)] #[doc = include_str!(\"../../{name}\")] to the crate it documents"
        );
    }
    // docs/connectors.md and docs/filters.md hold Rust samples today.
    assert!(with_rust >= 2, "found {with_rust} files with Rust samples");
}

#[test]
fn rust_block_detection() {
    assert!(has_rust_block("a\n```rust\nfn main() {}\n```\n"));
    assert!(has_rust_block("```rust,no_run\nx\n```"));
    assert!(!has_rust_block("```text\nfn x\n```\n```sh\nls\n```"));
    assert!(!has_rust_block("```\nplain\n```"));
}
