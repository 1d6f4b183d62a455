//! The committed C header must be exactly what cbindgen generates from the sources.
//! Regenerate it with `ETCDC_BLESS=1 cargo test --test header`.

use std::path::Path;

fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config =
        cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(format!(
        "\n#define ETCDC_VERSION_MAJOR {}\n#define ETCDC_VERSION_MINOR {}\n#define ETCDC_VERSION_PATCH {}\n#define ETCDC_VERSION_STRING \"{}\"",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION"),
    ));
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut out);
    String::from_utf8(out).expect("utf-8 header")
}

#[test]
fn committed_header_is_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/etcdc.h");
    let fresh = generate();
    if std::env::var_os("ETCDC_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write include/etcdc.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/etcdc.h differs from a fresh cbindgen run: regenerate it with `ETCDC_BLESS=1 cargo test --test header` and commit it"
    );
}

#[test]
fn every_export_is_documented_and_prefixed() {
    let header = generate();
    let mut undocumented = Vec::new();
    let lines: Vec<&str> = header.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let decl = line.trim_start();
        let is_fn = decl.contains(" etcdc_")
            && decl.contains('(')
            && !decl.starts_with('*')
            && !decl.starts_with("//")
            && !line.starts_with(' ');
        if !is_fn {
            continue;
        }
        let name = decl
            .split('(')
            .next()
            .unwrap_or("")
            .rsplit([' ', '*'])
            .next()
            .unwrap_or("");
        assert!(
            name.starts_with("etcdc_"),
            "export {name:?} lacks the etcdc_ prefix"
        );
        if i == 0 || !lines[i - 1].trim_start().starts_with("*/") {
            undocumented.push(name.to_string());
        }
    }
    assert!(
        undocumented.is_empty(),
        "exports without a doc comment: {undocumented:?}"
    );
}
