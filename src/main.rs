use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = dinodiff::cli::Cli::parse();
    match dinodiff::app::run(cli) {
        Ok(code) => dinodiff::exit::code(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            dinodiff::exit::code(dinodiff::exit::ERROR)
        }
    }
}
