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

/// Runs `work` on a thread of a dedicated rayon pool (`RAYON_NUM_THREADS` threads, else
/// one per core), so that the thread issuing the model's CPU operations is one of the
/// threads that run them. Issued from outside the pool, each parallel operation
/// (hundreds per decoded token) was handed over to the pool while the caller slept until
/// it finished, and the handing over showed as a tenth of a decode profile in the
/// scheduler: TinyLlama's shape at q4_0 on 2 cores decoded at 40.3 tok/s and prefilled
/// at 122 from outside, 43.3 and 136 from inside (docs/design.md §9). GPU devices are
/// unaffected: the pool's threads sleep.
pub fn on_compute_threads<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    match rayon::ThreadPoolBuilder::new().thread_name(|i| format!("sphinx-cpu-{i}")).build() {
        Ok(pool) => pool.install(work),
        // No thread could be started: the operations fall back to rayon's global pool.
        Err(_) => work(),
    }
}
