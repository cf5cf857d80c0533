//! Gives libblkin.so a versioned soname so installs can keep ABI versions
//! apart, and marks it never to be unloaded: threads that recorded keep a
//! pointer into it in their rseq area (see `blkkin::rseq`), and the process's
//! rings stay mapped for the life of the process anyway.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libblkin.so.0");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
}
