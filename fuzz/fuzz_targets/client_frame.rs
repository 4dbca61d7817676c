//! Client frames: parse → decode → validate → apply (see `tandem::fuzzing`).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem::fuzzing::client_frame(data));
