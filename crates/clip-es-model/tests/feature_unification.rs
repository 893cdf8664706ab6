//! The Python package (`maturin build`, which builds `clip-es-py` alone) resolves every
//! dependency with the same features as the workspace's test build (`cargo test --workspace`,
//! which also unifies the dev-dependencies' features). A feature only the test build turns on
//! makes cargo compile that dependency and everything above it (burn among them) a second
//! time in `.ci/run`'s maturin step.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// `cargo tree` lines `name version [features]` of the given package selection.
fn features(selection: &[&str]) -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["tree", "--offline", "--locked", "--prefix", "none"])
        .args(["--target", "all", "-f", "{p} [{f}]"])
        .args(selection)
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree {selection:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.replace(" (*)", "").replace(" (proc-macro)", ""))
        // the workspace's own crates carry their path: the comparison is about features
        .map(|l| match l.find(" (/") {
            Some(i) => l[..i].to_string() + &l[l.rfind(')').unwrap() + 1..],
            None => l,
        })
        .filter(|l| !l.trim().is_empty())
        .collect()
}

#[test]
fn python_package_build_has_the_features_of_the_workspace_test_build() {
    let package = features(&["-p", "clip-es-py", "-e", "normal,build"]);
    let workspace = features(&["--workspace"]);
    let names = |set: &BTreeSet<String>| -> BTreeSet<String> {
        set.iter()
            .map(|l| l.split(" [").next().unwrap().to_string())
            .collect()
    };
    let workspace_names = names(&workspace);
    // Every dependency of the package, with its features exactly as the workspace has them.
    let differing: Vec<&String> = package
        .iter()
        .filter(|l| {
            let name = l.split(" [").next().unwrap();
            workspace_names.contains(name) && !workspace.contains(*l)
        })
        .collect();
    assert!(
        differing.is_empty(),
        "built with other features by `maturin build` than by `cargo test --workspace`: \
         {differing:?}"
    );
    assert!(package.len() > 100, "{} packages", package.len());
}
