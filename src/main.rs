fn main() -> std::process::ExitCode {
    orc::init_logging();
    orc::run(std::env::args_os())
}
