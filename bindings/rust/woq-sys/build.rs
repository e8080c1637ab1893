// Links libwoq.so, unless the `dynamic` feature loads it at run time.
// WOQ_LIB_DIR names the directory holding it (a CMake build directory, or an
// install prefix's lib/); otherwise the system paths apply.
fn main() {
    println!("cargo:rerun-if-env-changed=WOQ_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_DYNAMIC").is_some() {
        return;
    }
    if let Ok(dir) = std::env::var("WOQ_LIB_DIR") {
        println!("cargo:rustc-link-search=native={dir}");
    }
    println!("cargo:rustc-link-lib=dylib=woq");
}
