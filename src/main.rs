fn main() -> std::process::ExitCode {
    orc::run(std::env::args_os())
}
