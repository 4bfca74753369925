use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = orch::cli::Cli::parse();
    match orch::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // The whole context chain on one line: "opening the database at x: ...".
            eprintln!("orch: error: {}", orch::report::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
