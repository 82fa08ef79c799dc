//! Memory given back after load: glibc's allocator, told not to hold on to what the
//! server frees.
//!
//! By default glibc raises its mmap threshold to the size of the largest block freed (up
//! to 32 MiB): after the first Argon2 hash (19 MiB at OWASP's costs) every later one is
//! carved from an arena and stays resident, one arena per hashing thread. A fixed
//! threshold keeps large blocks mapped and unmapped on free, and a periodic
//! `malloc_trim` returns the free pages inside the arenas that a burst of work (a
//! benchmark, a reconnect storm) left behind. Elsewhere (musl, other systems) this is a
//! no-op.

/// Blocks of this size and above are mapped on their own and returned on free.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 1 << 20;

/// How often free arena pages are returned to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Applies the settings once per process and starts the trimming thread.
pub fn give_back_freed_memory() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        #[allow(unsafe_code)]
        {
            // SAFETY: mallopt and malloc_trim only change or walk the allocator's own
            // state under its locks; they take no pointers from us.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
            let spawned = std::thread::Builder::new()
                .name("malloc-trim".into())
                .spawn(|| loop {
                    std::thread::sleep(TRIM_INTERVAL);
                    // SAFETY: as above.
                    unsafe { libc::malloc_trim(0) };
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "could not start the malloc-trim thread");
            }
        }
    });
}
