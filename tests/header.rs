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

/// Every `extern "C" fn` in src/ffi: the exports, as the source declares them.
fn exports_in_source() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ffi");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src/ffi") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("source");
        for rest in text.split("pub extern \"C\" fn ").skip(1) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push(name);
        }
    }
    names
}

#[test]
fn every_export_is_prefixed_declared_and_documented() {
    let header = generate();
    let lines: Vec<&str> = header.lines().collect();
    let exports = exports_in_source();
    assert!(exports.len() > 100, "found only {} exports", exports.len());
    for name in &exports {
        assert!(
            name.starts_with("etcdc_"),
            "export {name:?} lacks the etcdc_ prefix"
        );
        let decl = lines
            .iter()
            .position(|l| {
                !l.starts_with(' ')
                    && (l.contains(&format!(" {name}(")) || l.contains(&format!("*{name}(")))
            })
            .unwrap_or_else(|| panic!("{name} is not declared in the header"));
        assert!(
            decl > 0 && lines[decl - 1].trim_start().starts_with("*/"),
            "{name} has no doc comment in the header"
        );
    }
}
