use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = orch::cli::Cli::parse();
    match orch::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole context chain on one line: "opening the database at x: ...".
            eprintln!("orch: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
