//! What Docker sends the volume plugin (a `VolumeDriver.Create` body), the plugin's
//! state file, and the lines the plugin and its mount server exchange, read from any
//! bytes: a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    canopy_client::volume::read_untrusted(bytes);
});
