//! Cross-crate ABI tests live in `tests/`; this library is empty.
