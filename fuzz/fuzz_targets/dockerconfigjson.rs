#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// One file per fuzzing process, rewritten for every input.
fn secret_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!(
            "mirrorgate-fuzz-pull-secret-{}.json",
            std::process::id()
        ))
    })
}

fuzz_target!(|data: &[u8]| mirrorgate_fuzz::dockerconfigjson(data, secret_path()));
