//! The committed C header must be exactly what cbindgen generates from the sources, with its
//! functions put in reading order (status and process, client, records, kv, txn, watch,
//! lease, cluster: the order of `FILE_ORDER`) — cbindgen itself orders them by file name.
//! Regenerate it with `ETCDC_BLESS=1 cargo test --test header`.

use std::path::Path;

/// The src/ffi files in the order their functions appear in the header.
const FILE_ORDER: &[&str] = &[
    "status.rs",
    "process.rs",
    "client.rs",
    "record.rs",
    "kv.rs",
    "txn.rs",
    "watch.rs",
    "lease.rs",
    "cluster.rs",
    "node.rs",
    "registry.rs",
    "election.rs",
    "queue.rs",
];

fn generate() -> String {
    in_reading_order(&cbindgen_output())
}

/// Reorders the function declarations (each with its doc comment) by `FILE_ORDER`, keeping
/// the source order within a file.
fn in_reading_order(header: &str) -> String {
    const OPEN: &str = "extern \"C\" {\n#endif // __cplusplus\n\n";
    const CLOSE: &str = "#ifdef __cplusplus\n}  // extern \"C\"";
    let start = header.find(OPEN).expect("extern block") + OPEN.len();
    let end = header.rfind(CLOSE).expect("end of extern block");
    let file_of: std::collections::HashMap<String, usize> = exports_in_source()
        .into_iter()
        .map(|(name, file)| {
            let rank = FILE_ORDER
                .iter()
                .position(|f| *f == file)
                .unwrap_or_else(|| panic!("{file} is not in FILE_ORDER"));
            (name, rank)
        })
        .collect();
    let mut decls: Vec<(usize, &str)> = header[start..end]
        .split_inclusive(");\n\n")
        .map(|decl| {
            let code = decl.rsplit("*/").next().unwrap_or(decl);
            let name = code
                .split('(')
                .next()
                .and_then(|head| head.rsplit([' ', '*']).next())
                .unwrap_or_default();
            let rank = *file_of
                .get(name)
                .unwrap_or_else(|| panic!("no source file for {name:?}"));
            (rank, decl)
        })
        .collect();
    decls.sort_by_key(|(rank, _)| *rank);
    let mut out = header[..start].to_string();
    decls.iter().for_each(|(_, d)| out.push_str(d));
    out.push_str(&header[end..]);
    out
}

fn cbindgen_output() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config =
        cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(format!(
        "\n/**\n * etcdc's version when this header was made; etcdc_version() gives the library's at run time.\n */\n#define ETCDC_VERSION_MAJOR {}\n#define ETCDC_VERSION_MINOR {}\n#define ETCDC_VERSION_PATCH {}\n#define ETCDC_VERSION_STRING \"{}\"",
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

/// Every `extern "C" fn` in src/ffi with its file: the exports, as the source declares them.
fn exports_in_source() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ffi");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src/ffi") {
        let path = entry.expect("entry").path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).expect("source");
        for rest in text.split("pub extern \"C\" fn ").skip(1) {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            names.push((name, file.clone()));
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
    for (name, _) in &exports {
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

/// Every `#define` (but the include guard) and every typedef carries a doc comment, so a
/// constant's meaning is beside it.
#[test]
fn every_define_and_typedef_is_documented() {
    let header = generate();
    let lines: Vec<&str> = header.lines().collect();
    let mut checked = 0;
    for (i, line) in lines.iter().enumerate() {
        // Only etcdc's own names: an internal constant made `pub` would show up here.
        assert!(
            !line.starts_with("#define ") || line.starts_with("#define ETCDC_"),
            "{line:?} is not an etcdc name (make the Rust constant pub(crate))"
        );
        let define = line.starts_with("#define ETCDC_") && !line.starts_with("#define ETCDC_H");
        let version = line.starts_with("#define ETCDC_VERSION_");
        let typedef = line.starts_with("typedef ");
        if !(define || typedef) {
            continue;
        }
        checked += 1;
        // The version macros are documented as a group by the comment before the first.
        let mut j = i;
        while version && j > 0 && lines[j - 1].starts_with("#define ETCDC_VERSION_") {
            j -= 1;
        }
        assert!(
            j > 0 && lines[j - 1].trim_start().starts_with("*/"),
            "no doc comment before {line:?}"
        );
    }
    assert!(checked > 20, "found only {checked} defines and typedefs");
}

/// The functions come in reading order: the first of each file in FILE_ORDER's order.
#[test]
fn functions_are_in_reading_order() {
    let header = generate();
    let lines: Vec<&str> = header.lines().collect();
    let first = |name: &str| {
        lines
            .iter()
            .position(|l| {
                !l.starts_with(' ')
                    && (l.contains(&format!(" {name}(")) || l.contains(&format!("*{name}(")))
            })
            .expect(name)
    };
    let order = [
        "etcdc_status_str",
        "etcdc_version",
        "etcdc_client_options_new",
        "etcdc_kv_key",
        "etcdc_get_options_new",
        "etcdc_txn_new",
        "etcdc_watch_options_new",
        "etcdc_lease_grant",
        "etcdc_cluster_members",
    ];
    for pair in order.windows(2) {
        assert!(
            first(pair[0]) < first(pair[1]),
            "{} should come before {}",
            pair[0],
            pair[1]
        );
    }
}
