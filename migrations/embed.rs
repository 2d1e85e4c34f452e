// The build script of each store backend, shared: `include!`d by
// crates/store-postgres/build.rs and crates/store-sqlite/build.rs.
//
// It lists the backend's folder of migrations (`NNNN_description.sql`), in version order,
// and writes `$OUT_DIR/migrations.rs`: the constant `MIGRATIONS`, each file's version,
// description and SQL (through `include_str!`, so editing one rebuilds the crate). Adding
// a file is all a new migration takes; cargo reruns this when the folder changes. A file
// whose name does not fit, or a version used twice, stops the build naming it.

use std::fmt::Write as _;
use std::path::Path;

fn embed_migrations(folder: &str) {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest).join(folder);
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut found: Vec<(i64, String, std::path::PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())) {
        let path = entry.expect("a readable folder entry").path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        let Some(stem) = name.strip_suffix(".sql") else { continue };
        let (version, description) = stem
            .split_once('_')
            .and_then(|(v, d)| Some((v.parse::<i64>().ok()?, d)))
            .unwrap_or_else(|| panic!("{}: a migration is named NNNN_description.sql", path.display()));
        if let Some((_, other, _)) = found.iter().find(|(v, _, _)| *v == version) {
            panic!("{}: version {version} is also {other}", path.display());
        }
        found.push((version, description.to_owned(), path));
    }
    found.sort_by_key(|(version, _, _)| *version);
    let mut out = String::from("/// This backend's migrations, in version order: version, description, SQL.\n");
    out.push_str("const MIGRATIONS: &[(i64, &str, &str)] = &[\n");
    for (version, description, path) in &found {
        let _ = writeln!(out, "    ({version}, {description:?}, include_str!({:?})),", path.display().to_string());
    }
    out.push_str("];\n");
    let target = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    std::fs::write(&target, out).unwrap_or_else(|e| panic!("cannot write {}: {e}", target.display()));
}
