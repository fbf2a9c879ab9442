#![no_main]
//! Fuzzes ocimux::testing::fuzzing::mount_helper (see src/fuzzing.rs).
libfuzzer_sys::fuzz_target!(|data: &[u8]| ocimux::testing::fuzzing::mount_helper(data));
