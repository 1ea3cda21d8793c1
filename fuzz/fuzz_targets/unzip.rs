//! Archives a recipe unpacks (unzip): never a file outside the folder, never a link out.
#![no_main]
libfuzzer_sys::fuzz_target!(|bytes: &[u8]| {
    let dir = tempfile::tempdir().expect("a folder");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("mkdir");
    larder::fuzzing::archive(bytes, true, &root);
});
