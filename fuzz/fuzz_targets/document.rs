#![no_main]
//! Fuzzes ocimux::fuzzing::document_bytes (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::fuzzing::document_bytes(data));
