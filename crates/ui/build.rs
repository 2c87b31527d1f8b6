//! Embeds every file under `assets/` in the binary: writes `$OUT_DIR/assets.rs`, a sorted table
//! of `(path, include_bytes!, etag)`. A table built here rather than by rust-embed or memory-serve:
//! no proc macro and no new dependency, and debug and release builds serve the same bytes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("assets");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    let mut out = String::from("pub static ASSETS: &[Asset] = &[\n");
    for rel in &files {
        let full = root.join(rel);
        println!("cargo:rerun-if-changed={}", full.display());
        let bytes = std::fs::read(&full).unwrap();
        writeln!(
            out,
            "    Asset {{ path: {rel:?}, body: include_bytes!({full:?}), etag: \"\\\"{:016x}\\\"\" }},",
            fnv1a(&bytes),
            full = full.display().to_string(),
        )
        .unwrap();
    }
    out.push_str("];\n");
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("assets.rs");
    std::fs::write(dest, out).unwrap();
}

/// Relative paths with `/` separators, directories watched for added files.
fn walk(root: &Path, dir: &Path, files: &mut Vec<String>) {
    println!("cargo:rerun-if-changed={}", dir.display());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, files);
        } else {
            let rel = path.strip_prefix(root).unwrap();
            let parts: Vec<_> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            files.push(parts.join("/"));
        }
    }
}

/// A content hash for the ETag (not cryptographic: it only has to change when the file does).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}
