//! Compiles the sample workload (examples/demo/storage_stack.c, written
//! against include/zipkin_c.h) into the `blkkin` binary, so `blkkin demo`
//! needs nothing but this binary. Its blkin_* calls resolve to the
//! blkin-capi crate linked into the same binary.

fn main() {
    println!("cargo:rerun-if-changed=examples/demo/storage_stack.c");
    println!("cargo:rerun-if-changed=include/zipkin_c.h");
    cc::Build::new()
        .file("examples/demo/storage_stack.c")
        .include("include")
        .warnings(true)
        .extra_warnings(true)
        .compile("blkkin_demo_stack");
}
