//! What the fuzz targets (`fuzz/` at the top of the repository) call: the
//! parsers and unpackers that read input larder does not control. Built only
//! with `--cfg fuzzing`, which `cargo fuzz` sets; not an API.

use std::path::Path;

use crate::recipe::Recipe;

/// A recipe as words: parsing never panics, and what parses prints as
/// text that parses to the same recipe.
pub fn recipe(text: &str) {
    let words: Vec<&str> = text.split_whitespace().collect();
    if let Ok(recipe) = Recipe::parse(&words) {
        let printed = recipe.to_string();
        let again: Vec<&str> = printed.split_whitespace().collect();
        let reparsed = Recipe::parse(&again).expect("a printed recipe parses");
        assert_eq!(reparsed.hash(), recipe.hash(), "{printed}");
    }
}

/// A `source.conf`: read or refused with a message, never a panic.
pub fn source_conf(text: &str) {
    let dir = Path::new("/nonexistent/sources/fuzz");
    let _ = crate::pool::conf::parse("fuzz", dir, &dir.join("source.conf"), text, None);
}

/// An archive unpacked into `root` (an empty folder whose parent holds
/// nothing else): refused or unpacked, but never anything written outside
/// `root`, and never a link in it that leads out.
pub fn archive(bytes: &[u8], zip: bool, root: &Path) {
    let budget = crate::build::extract::Budget::new(Some(64 << 20));
    budget.raw_in.store(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let unpacked = if zip {
        let parent = root.parent().expect("a parent");
        let file = parent.join(".input.zip");
        std::fs::write(&file, bytes).expect("write the input");
        let opened = std::fs::File::open(&file).expect("open the input");
        let _ = std::fs::remove_file(&file);
        crate::build::extract::unzip(opened, root, &budget, "unzip")
    } else {
        crate::build::extract::untar(&mut &bytes[..], root, &budget, "tar")
    };
    if unpacked.is_ok() {
        crate::build::extract::check_all_links(root).expect("links stay inside");
    }
    let parent = root.parent().expect("a parent");
    for entry in std::fs::read_dir(parent).expect("read the parent").flatten() {
        assert_eq!(entry.path(), root, "{} was written outside the folder", entry.path().display());
    }
}

/// Core metadata (`METADATA`, `PKG-INFO`) and the wheels and sdists that
/// carry it: read or refused, never a panic.
pub fn metadata(bytes: &[u8]) {
    let _ = crate::pypi::meta::parse(bytes);
    for kind in [crate::pypi::names::Kind::Wheel, crate::pypi::names::Kind::Sdist] {
        let _ = crate::pypi::meta::read(std::io::Cursor::new(bytes), kind);
    }
}
