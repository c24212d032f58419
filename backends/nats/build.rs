fn main() {
    // A dlclose must never unmap a Rust cdylib (thread-local destructors may still point into it).
    println!("cargo::rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
