//! Recipes in shared-cache's syntax: parsed or refused, and printed back the same.
#![no_main]
libfuzzer_sys::fuzz_target!(|text: &str| larder::fuzzing::recipe(text));
