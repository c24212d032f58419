fn main() {
    // Every backend crate defines the plugin entry point
    // `bext_locking_plugin_entry` (#[no_mangle]), so linking two of them into
    // one program gives two definitions of one symbol. The fuzz targets never
    // call it (they build each backend's table with `from_export`), so either
    // definition will do.
    println!("cargo::rustc-link-arg-bins=-Wl,--allow-multiple-definition");
}
