#![forbid(unsafe_code)]

fn main() {
    std::process::exit(n2d::main_with_args(std::env::args_os()));
}
