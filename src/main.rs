//! The `dinodiff` binary: parse the command line (`cli`), run it (`app`), print the error chain
//! once and map the outcome to an exit code (`dinodiff::exit`, docs/exit-codes.md). SIGINT,
//! SIGTERM and SIGHUP remove the run's temporary files before ending it (`dinodiff::cleanup`).

mod app;
mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    dinodiff::cleanup::install_signal_handlers();
    match app::run(cli) {
        Ok(code) => dinodiff::exit::code(code),
        Err(err) => {
            eprintln!("error: {err:#}");
            dinodiff::exit::code(dinodiff::exit::ERROR)
        }
    }
}
