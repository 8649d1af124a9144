//! `ferry-connector`: parses the command line and hands over to the library
//! (`ferry_connector::cli`).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    ferry_connector::cli::run(ferry_connector::cli::Cli::parse()).await
}
