#![no_main]
//! Fuzzes ocimux::testing::fuzzing::document_bytes (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::testing::fuzzing::document_bytes(data));
