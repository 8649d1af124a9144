//! `ferry-hub`: tunes the allocator and the process (umask), parses the command line and hands
//! over to the library (`ferry_hub::cli`).

use clap::Parser;

/// mimalloc instead of glibc's malloc: under a mixed load of uploads and reads glibc kept about
/// five times the live heap resident (per-thread arenas it does not give back); see
/// bench/README.md, "Load".
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3.x's `mi_option_t` (libmimalloc-sys names no constant
/// for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Transparent huge pages off for the hub: mimalloc's fresh memory was faulted in (and zeroed)
/// 2 MiB at a time, which cost about a tenth of STOW's CPU and doubled the resident size in the
/// benchmark (bench/README.md). MIMALLOC_ALLOW_THP=1 in the environment keeps them on.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // A failure (an old kernel) only costs memory and speed.
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}

/// mimalloc 3 keeps freed memory for a second before giving it back to the system. Ingest frees
/// and allocates ~0.5 MB buffers hundreds of times a second, so a second's worth stayed resident
/// (the benchmark's STOW peaked at ~138 MB). 100 ms keeps the benefit of reuse and halves that;
/// 0 (purge at once) made WADO-RS half as fast. MIMALLOC_PURGE_DELAY in the environment wins.
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain option value (read by mimalloc at each purge decision); called
        // first thing in main, before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100) };
    }
}

/// What the hub writes — the database and its WAL, blobs, keys, mails, spooled uploads — is for
/// its own user only, whatever umask it was started with: new folders 0700, new files 0600, also
/// where a library creates them (the local blob store, SQLite). Set before any thread exists.
fn private_umask() {
    #[cfg(target_os = "linux")]
    let _ = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    no_huge_pages();
    private_umask();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(ferry_hub::cli::run(ferry_hub::cli::Cli::parse())),
        Err(e) => {
            eprintln!("ferry-hub: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
