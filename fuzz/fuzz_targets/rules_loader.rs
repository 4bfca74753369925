//! One rule file through the whole loader (`orch::policy::load_sources`: parse, merge,
//! sections, Rhai compilation, validation). It must never panic — a hot reload runs it on
//! whatever an editor left on disk — and a rejection must name at least one problem.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader takes text; a file that is not UTF-8 is refused before it (by `read_dir`).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files = vec![(PathBuf::from("rules/fuzz.toml"), text.to_string())];
    match orch::policy::load_sources(files) {
        Ok(set) => assert!(!set.version().is_empty()),
        Err(errors) => {
            assert!(!errors.0.is_empty(), "rejected without a reason");
            assert!(!errors.to_string().is_empty());
        }
    }
});
