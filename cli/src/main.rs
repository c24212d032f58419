//! `bext-lock`: placeholder until the CLI issue lands.

fn main() {
    eprintln!("bext-lock: not implemented yet");
    std::process::exit(2);
}
