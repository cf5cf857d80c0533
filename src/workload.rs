//! `blkkin workload`: the sample storage-stack workload
//! (examples/demo/storage_stack.c), compiled into this binary by build.rs.

use std::ffi::{c_char, c_int, CString};
use std::process::ExitCode;

use anyhow::Context;

// The C ABI the workload calls (its #[no_mangle] blkin_* functions).
extern crate blkin as _;

extern "C" {
    /// The workload's entry point; `argv` as for a C `main`. It forks its
    /// layers, so it must run before this process starts any thread.
    fn blkkin_demo_stack(argc: c_int, argv: *mut *mut c_char) -> c_int;
}

/// What to run: the workload's own options.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkloadArgs {
    /// Stop after this many requests (0: no limit).
    #[arg(long, short = 'n', default_value_t = 200, value_name = "N")]
    pub requests: u64,
    /// Stop after this many seconds (0: no limit).
    #[arg(long, short = 's', default_value_t = 0, value_name = "SECS")]
    pub seconds: u64,
    /// Requests per second (0: as fast as the stack answers).
    #[arg(long, short = 'r', default_value_t = 0, value_name = "N")]
    pub rate: u64,
}

/// Runs the workload in this process (single-threaded at this point).
pub fn run(args: &WorkloadArgs) -> anyhow::Result<ExitCode> {
    let argv: Vec<CString> = [
        "storage_stack".to_string(),
        format!("-n{}", args.requests),
        format!("-s{}", args.seconds),
        format!("-r{}", args.rate),
    ]
    .into_iter()
    .map(CString::new)
    .collect::<Result<_, _>>()
    .context("workload arguments")?;
    let mut ptrs: Vec<*mut c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    ptrs.push(std::ptr::null_mut());
    // SAFETY: argv is a NULL-terminated array of NUL-terminated strings that
    // outlive the call (C getopt may permute the pointer array, which is
    // ours, but never writes through the strings); no other thread runs yet,
    // so the workload's fork() is safe.
    let rc = unsafe { blkkin_demo_stack(argv.len() as c_int, ptrs.as_mut_ptr()) };
    Ok(match rc {
        0 => ExitCode::SUCCESS,
        n => {
            eprintln!("blkkin workload: the storage stack failed (status {n})");
            ExitCode::from(u8::try_from(n).unwrap_or(1))
        }
    })
}
