fn main() -> std::process::ExitCode {
    apimail::main()
}
