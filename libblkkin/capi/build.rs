//! Gives libblkin.so a versioned soname so installs can keep ABI versions apart.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libblkin.so.0");
}
