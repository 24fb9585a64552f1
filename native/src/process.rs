//! Process set-up for a well-behaved command-line tool.

/// Call first thing in `main`, before any thread starts:
/// - a closed stdout (`sphinx variants | head -0`) ends the process quietly, as for any
///   Unix filter, instead of a panic inside `println!` (Rust ignores SIGPIPE by default);
/// - on a machine without a display session, the Wayland client library that GPU
///   adapter probing loads prints "XDG_RUNTIME_DIR is invalid or not set" to stderr; an
///   empty private runtime directory keeps the output clean (nothing is ever served there).
pub fn quiet_setup() {
    #[cfg(unix)]
    {
        // SAFETY: restoring the default disposition of SIGPIPE has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
        if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
            use std::os::unix::fs::{DirBuilderExt, MetadataExt};
            // SAFETY: getuid has no preconditions.
            let uid = unsafe { libc::getuid() };
            let dir = std::env::temp_dir().join(format!("sphinx-runtime-{uid}"));
            let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
            // Only a real directory of ours, private to us (not a symlink someone planted).
            let ours = dir.symlink_metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0);
            if ours {
                // SAFETY: called before any other thread exists (see above).
                unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
            }
        }
    }
}
