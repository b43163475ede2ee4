//! What library prefetch reads from a root's files: an ELF object's headers
//! (interpreter, needed libraries, search paths) and an `ld.so.cache`, from any bytes:
//! a value or an error, never a panic, a hang or a large allocation.
#![no_main]

use canopy_client::prefetch::{elf, ldcache::LdCache};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = elf::needs(std::io::Cursor::new(bytes));
    let _ = LdCache::parse(bytes.to_vec(), 62);
});
