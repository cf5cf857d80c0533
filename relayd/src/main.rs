//! `blkkin-relayd`: placeholder binary until its issue lands.
//!
//! The workspace already carries this crate so the layout is fixed; it
//! refuses to run rather than pretend to work.

fn main() -> std::process::ExitCode {
    eprintln!("blkkin-relayd: not implemented yet; see docs/ARCHITECTURE.md (planned components)");
    std::process::ExitCode::from(2)
}
