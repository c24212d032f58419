//! The conformance suite against the memory backend, in-process and through
//! its `.so`.

use bext_locking::LockingPlugin;
use bext_locking::conformance::{self, Options};
use bext_locking_memory::{Memory, MemoryPlugin};

fn options() -> Options {
    Options { fencing: Some(true), ..Options::default() }
}

#[test]
fn in_process() {
    let ns = format!("conformance-{}", std::process::id());
    let factory = || Ok(Box::new(MemoryPlugin::new(Memory::shared(&ns))) as Box<dyn LockingPlugin>);
    conformance::run(&factory, &options()).assert_passed();
}

#[test]
fn through_the_so() {
    let plugin =
        bext_locking_loader::load(bext_locking_test_support::plugin_path("memory")).unwrap();
    let config = r#"{"namespace":"so-conformance"}"#;
    let factory = || plugin.create(config);
    conformance::run(&factory, &options()).assert_passed();
}
