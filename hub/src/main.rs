//! `ferry-hub`: the command line. Parses flags, loads the layered config, sets up tracing and
//! hands over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ferry_hub::config::{CliOverrides, Config};

#[derive(Parser)]
#[command(name = "ferry-hub", version, about = "Ferry hub: exchange DICOM studies securely")]
struct Cli {
    /// Configuration file (default: ./ferry-hub.toml when it exists).
    #[arg(long, global = true, env = "FERRY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (the default). With no configuration: 127.0.0.1:8080, SQLite and local files
    /// under ./ferry-data.
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:0 for a free port.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Folder for the embedded defaults (database, blobs, keys).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (listen, data_dir) = match cli.command {
        Some(Command::Serve { listen, data_dir }) => (listen, data_dir),
        None => (None, None),
    };
    let config = match Config::load(cli.config.as_deref(), CliOverrides { listen, data_dir }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry-hub: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    ferry_hub::telemetry::init(&config.log);
    match serve(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-hub: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = ferry_hub::Application::build(config).await?;
    let addr = app.local_addr();
    // Scripts wait for this line to learn the port.
    println!("Ferry hub listening on http://{addr}");
    tracing::info!(%addr, "ready");
    app.run_until_stopped().await
}
