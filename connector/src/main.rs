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
    /// Run the connector: pull the community's transfers into the PACS until stopped.
    Run {
        /// The configuration file (default: ./ferry-connector.toml).
        #[arg(long, short, env = "FERRY_CONNECTOR_CONFIG")]
        config: Option<std::path::PathBuf>,
        /// Handle what is waiting, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Test the hub connection, the credentials and every PACS target (C-ECHO / DICOMweb).
    Check {
        #[arg(long, short, env = "FERRY_CONNECTOR_CONFIG")]
        config: Option<std::path::PathBuf>,
        /// Only check that the hub at this URL is reachable and ready (no configuration needed).
        #[arg(long)]
        hub: Option<String>,
    },
    /// Show what the connector is working on, what it finished, and recent errors.
    Status {
        #[arg(long, short, env = "FERRY_CONNECTOR_CONFIG")]
        config: Option<std::path::PathBuf>,
    },
    /// Import by code: redeem an access code a patient brought (from this hub or any DLX portal),
    /// download its studies, reconcile them and store them into the PACS.
    Import {
        #[arg(long, short, env = "FERRY_CONNECTOR_CONFIG")]
        config: Option<std::path::PathBuf>,
        /// The access code, e.g. ABCD-EFGH-JKMN.
        #[arg(long)]
        code: String,
        /// The answer to the portal's question (e.g. the birth date); once per question, in order.
        #[arg(long)]
        answer: Vec<String>,
        /// The portal that issued the code (default: the connector's hub).
        #[arg(long)]
        portal: Option<String>,
        /// Where report PDFs are saved.
        #[arg(long, default_value = ".")]
        reports_dir: std::path::PathBuf,
    },
    /// Send studies (DICOM files, folders, ZIPs, a CD's content) to a community.
    Send {
        /// The hub's URL.
        #[arg(long, env = "FERRY_HUB_URL")]
        hub: String,
        /// A personal access token (create one on the hub's account page).
        #[arg(long, env = "FERRY_TOKEN", hide_env_values = true)]
        token: String,
        /// The community's public code, e.g. bM1X.
        #[arg(long)]
        community: String,
        /// Reason / clinical question for the clinic.
        #[arg(long, default_value = "")]
        note: String,
        /// The patient's appointment (e.g. 2026-12-01).
        #[arg(long, default_value = "")]
        appointment: String,
        #[arg(long)]
        urgent: bool,
        /// Send what arrived even when some files could not be taken.
        #[arg(long)]
        send_partial: bool,
        /// Files and folders to send.
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
    },
}

fn fail(e: anyhow::Error) -> std::process::ExitCode {
    eprintln!("ferry-connector: {e:#}");
    std::process::ExitCode::FAILURE
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let load = |config: Option<std::path::PathBuf>| ferry_connector::config::Config::load(config.as_deref());
    match cli.command {
        Command::Check { hub: Some(hub), .. } => match ferry_connector::check_hub(&hub).await {
            Ok(version) => {
                ferry_connector::say!("hub OK (Ferry {version})");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Check { config, hub: None } => match load(config) {
            Ok(cfg) => match ferry_connector::service::check(&cfg).await {
                Ok(true) => std::process::ExitCode::SUCCESS,
                Ok(false) => std::process::ExitCode::FAILURE,
                Err(e) => fail(e),
            },
            Err(e) => fail(e),
        },
        Command::Run { config, once } => match load(config) {
            Ok(cfg) => match ferry_connector::service::run(&cfg, once).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => fail(e),
            },
            Err(e) => fail(e),
        },
        Command::Status { config } => match load(config) {
            Ok(cfg) => match ferry_connector::service::status(&cfg).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => fail(e),
            },
            Err(e) => fail(e),
        },
        Command::Import { config, code, answer, portal, reports_dir } => match load(config) {
            Ok(cfg) => {
                let o = ferry_connector::import::ImportOptions { portal, code, answers: answer, reports_dir };
                match ferry_connector::import::import(&cfg, &o).await {
                    Ok(r) => {
                        ferry_connector::say!(
                            "imported {} instance(s) of {} study(ies) into {}",
                            r.instances,
                            r.studies,
                            r.targets.join(", ")
                        );
                        for p in &r.reports {
                            ferry_connector::say!("report saved: {}", p.display());
                        }
                        std::process::ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
            Err(e) => fail(e),
        },
        Command::Send { hub, token, community, note, appointment, urgent, send_partial, paths } => {
            let o = ferry_connector::send::SendOptions { hub, token, community, note, appointment, urgent, paths, send_partial };
            let result = ferry_connector::send::send(&o, |p| {
                let pct = (p.bytes_done * 100).checked_div(p.bytes_total).unwrap_or(100);
                eprintln!(
                    "{pct:3}%  {}/{} files  {:.1}/{:.1} MB",
                    p.files_done,
                    p.files_total,
                    p.bytes_done as f64 / 1e6,
                    p.bytes_total as f64 / 1e6
                );
            })
            .await;
            match result {
                Ok(t) => {
                    ferry_connector::say!("sent transfer {} to {} ({} images): {}", t.id, t.community_name, t.instances, t.state);
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ferry-connector: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}
