//! `schemas <dir>`: write every filter's schemas into `<dir>` (`make build`: dist/schemas).
//! `schemas --check <dir>`: change nothing; exit 1 if `<dir>` differs from the config types.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (check, dir) = match args.as_slice() {
        [dir] => (false, dir),
        [flag, dir] if flag == "--check" => (true, dir),
        _ => {
            eprintln!("usage: schemas [--check] <dir>");
            return ExitCode::from(2);
        }
    };
    let dir = Path::new(dir);
    let files = schemas::files();
    if check {
        let stale: Vec<String> = files
            .iter()
            .filter(|(name, value)| std::fs::read_to_string(dir.join(name)).ok() != Some(schemas::text(value)))
            .map(|(name, _)| name.clone())
            .collect();
        if !stale.is_empty() {
            eprintln!("{}: stale or missing (run make build and commit them): {}", dir.display(), stale.join(", "));
            return ExitCode::FAILURE;
        }
        return ExitCode::SUCCESS;
    }
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("{}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, value) in &files {
        let path = dir.join(name);
        // Unchanged files are left alone (no spurious mtime change in a committed copy).
        if std::fs::read_to_string(&path).ok().as_deref() == Some(schemas::text(value).as_str()) {
            continue;
        }
        if let Err(e) = std::fs::write(&path, schemas::text(value)) {
            eprintln!("{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
