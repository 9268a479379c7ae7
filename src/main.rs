//! The `credit-sentinel` binary: everything is in the library.

/// jemalloc: size classes without per-allocation headers (most entities hold one small allocation),
/// and transparent huge pages for its extents, which cuts TLB misses on millions of entities.
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options (read by jemalloc itself; the symbol name is its contract).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"thp:always,metadata_thp:auto\0";

fn main() -> std::process::ExitCode {
    credit_sentinel::cli::main()
}
