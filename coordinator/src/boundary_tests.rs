//! The service is the only door to the store: the wire layer (`api/`) and the
//! agent endpoint (`agents/`) call service methods and never name the store,
//! its queries or its transactions. This test reads the sources, so a
//! handler that reaches past the service fails the build's tests.
//! The service's own `store` field is private to `service/` as well.

use std::path::{Path, PathBuf};

/// What a module outside the service must not write.
const FORBIDDEN: &[&str] = &[
    "crate::store",
    "svc.store",
    ".store.",
    "Tx::new",
    "StoreExt",
];

/// Modules that may not touch the store.
const GUARDED: &[&str] = &["api", "agents"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Lines of a file that reach past the service, comments left out.
fn violations(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .filter(|l| FORBIDDEN.iter().any(|f| l.contains(f)) || l.trim() == ".store")
        .map(str::to_string)
        .collect()
}

#[test]
fn only_the_service_touches_the_store() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for g in GUARDED {
        rust_files(&src.join(g), &mut files);
    }
    let mut offending = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let v = violations(&std::fs::read_to_string(f).unwrap());
        if !v.is_empty() {
            offending.push(format!("{rel}: {}", v[0].trim()));
        }
    }
    assert!(
        offending.is_empty(),
        "outside the service, use service methods instead of the store:\n{}",
        offending.join("\n")
    );
    assert!(files.len() > 10, "the guarded modules were not found");
}

#[test]
fn the_check_sees_what_it_forbids() {
    assert_eq!(violations("let x = ctx.svc.store.load(1);").len(), 1);
    assert_eq!(violations("use crate::store::Tx;").len(), 1);
    assert_eq!(violations("    .store\n").len(), 1);
    assert!(violations("// crate::store in a comment").is_empty());
    assert!(violations("let x = ctx.svc.list_vms(&caller);").is_empty());
}
