//! `bext-locking-header`: writes `include/bext_locking.h` (`make header`),
//! or with `--check` fails when the committed copy has drifted.

use std::process::ExitCode;

fn main() -> ExitCode {
    let root = bext_locking_header::repo_root();
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("usage: bext-locking-header [--check]  (unknown argument `{other}`)");
            return ExitCode::from(2);
        }
    };
    let result = if check {
        bext_locking_header::check(&root)
    } else {
        bext_locking_header::generate(&root).and_then(|text| {
            let path = bext_locking_header::header_path(&root);
            std::fs::write(&path, text)
                .map(|()| println!("wrote {}", path.display()))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        })
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
