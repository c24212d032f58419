//! The Rust loader refuses broken plugins with an error naming the file and
//! the reason, and survives a plugin that panics.

use bext_locking::LockingPlugin;
use bext_locking_abi_tests::plugin;
use bext_locking_loader::{LoadErrorKind, load};

/// Loads a fixture that must be refused; returns the error's kind and text.
fn refused(fixture: &str) -> (LoadErrorKind, String) {
    let path = plugin(fixture);
    match load(&path) {
        Ok(p) => panic!("{} loaded as plugin `{}`; it must be refused", path.display(), p.name()),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains(&path.display().to_string()),
                "error does not name the file: {text}"
            );
            (e.kind, text)
        }
    }
}

#[test]
fn wrong_abi_version_is_refused() {
    let (kind, text) = refused("fixture-bad-abi");
    assert_eq!(kind, LoadErrorKind::AbiMismatch { found: 2 });
    assert!(text.contains("ABI version 2"), "{text}");
}

#[test]
fn too_small_struct_size_is_refused() {
    let (kind, text) = refused("fixture-small-struct");
    let want = bext_locking_ffi::BEXT_LOCKING_VTABLE_V1_SIZE - size_of::<usize>() as u32;
    assert_eq!(kind, LoadErrorKind::VTableTooSmall { found: want });
    assert!(text.contains("struct_size"), "{text}");
}

#[test]
fn null_mandatory_slot_is_refused() {
    let (kind, text) = refused("fixture-null-slot");
    assert_eq!(kind, LoadErrorKind::NullField("renew"));
    assert!(text.contains("`renew` is NULL"), "{text}");
}

#[test]
fn library_without_entry_is_not_a_plugin() {
    let (kind, text) = refused("fixture-no-entry");
    assert_eq!(kind, LoadErrorKind::NoEntrySymbol);
    assert!(text.contains("not a bext-locking plugin"), "{text}");
}

#[test]
fn missing_file_names_the_file() {
    let path = bext_locking_abi_tests::target_dir().join("libbext_locking_does_not_exist.so");
    let Err(err) = load(&path) else { panic!("a missing file must not load") };
    assert!(matches!(err.kind, LoadErrorKind::Open(_)), "{err}");
    assert!(err.to_string().contains("libbext_locking_does_not_exist.so"), "{err}");
}

#[test]
fn panics_become_errors_and_the_host_lives_on() {
    let loaded = load(plugin("fixture-panicky")).expect("the panicky fixture is a valid plugin");
    assert_eq!(loaded.name(), "panicky");
    let err = loaded
        .create(r#"{"panic_in_create":true}"#)
        .err()
        .expect("a panicking create must be an error");
    assert!(err.contains("panic"), "{err}");

    let locks = loaded.create("{}").expect("create without the panic flag works");
    let err = locks.try_lock("panic/now", 1000).expect_err("a panicking try_lock must be Err");
    assert!(err.contains("panic"), "{err}");
    // Still a working lock after the caught panics.
    let handle = locks.try_lock("jobs/after-panic", 1000).unwrap().expect("free key");
    assert_eq!(locks.try_lock("jobs/after-panic", 1000), Ok(None));
    locks.renew(&handle).unwrap();
    locks.release(handle).unwrap();
    assert!(locks.try_lock("jobs/after-panic", 1000).unwrap().is_some());
}

#[test]
fn panicky_status_is_err_panic_at_the_abi() {
    use std::ffi::{CStr, c_char};
    let loaded = load(plugin("fixture-panicky")).unwrap();
    let slots = loaded.slots();
    let (create, free) = (slots.create, slots.free_string);
    let mut instance = std::ptr::null_mut();
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated input and out-parameters for the call.
    let status = unsafe { create(c"{\"panic_in_create\":true}".as_ptr(), &mut instance, &mut err) };
    assert_eq!(status, bext_locking_ffi::BEXT_LOCKING_ERR_PANIC);
    assert!(instance.is_null());
    assert!(!err.is_null());
    // SAFETY: a live string from this plugin, freed once with its free_string.
    let text = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { free(err) };
    let json: serde_json::Value = serde_json::from_str(&text).expect("error JSON");
    assert_eq!(json["code"], "panic", "{text}");
    let message = json["message"].as_str().expect("message string");
    assert!(message.contains("create was asked to panic"), "{text}");
}
