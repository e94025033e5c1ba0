// mimalloc: a 100,000-agent run allocates and frees millions of small objects across
// threads; glibc's allocator spent a tenth of the run in malloc and kept freed memory.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    orc::init_logging();
    orc::run(std::env::args_os())
}
