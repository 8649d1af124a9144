//! `ferry-connector`: the command line of the site connector.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferry-connector", version, about = "Ferry site connector")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check that the hub is reachable and ready.
    Check {
        /// The hub's URL, e.g. https://ferry.example.org
        #[arg(long, env = "FERRY_HUB_URL")]
        hub: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { hub } => match ferry_connector::check_hub(&hub).await {
            Ok(version) => {
                println!("hub OK (Ferry {version})");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ferry-connector: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
