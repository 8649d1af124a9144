//! The `ferry-connector` command line: its arguments (clap) and what each command does. The
//! binary (`main.rs`) only parses the arguments and calls [`run`].

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferry-connector", version, about = "Ferry site connector")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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

/// Runs the command line `cli` asks for; the process exit code (0, or 1 with the cause on
/// standard error).
pub async fn run(cli: Cli) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let load = |config: Option<std::path::PathBuf>| crate::config::Config::load(config.as_deref());
    match cli.command {
        Command::Check { hub: Some(hub), .. } => match crate::check_hub(&hub).await {
            Ok(version) => {
                crate::say!("hub OK (Ferry {version})");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Check { config, hub: None } => match load(config) {
            Ok(cfg) => match crate::service::check(&cfg).await {
                Ok(true) => std::process::ExitCode::SUCCESS,
                Ok(false) => std::process::ExitCode::FAILURE,
                Err(e) => fail(e),
            },
            Err(e) => fail(e),
        },
        Command::Run { config, once } => match load(config) {
            Ok(cfg) => match crate::service::run(&cfg, once).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => fail(e),
            },
            Err(e) => fail(e),
        },
        Command::Status { config } => match load(config) {
            Ok(cfg) => match crate::service::status(&cfg).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => fail(e),
            },
            Err(e) => fail(e),
        },
        Command::Import { config, code, answer, portal, reports_dir } => match load(config) {
            Ok(cfg) => {
                let o = crate::import::ImportOptions { portal, code, answers: answer, reports_dir };
                match crate::import::import(&cfg, &o).await {
                    Ok(r) => {
                        crate::say!("imported {} instance(s) of {} study(ies) into {}", r.instances, r.studies, r.targets.join(", "));
                        for p in &r.reports {
                            crate::say!("report saved: {}", p.display());
                        }
                        std::process::ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
            Err(e) => fail(e),
        },
        Command::Send { hub, token, community, note, appointment, urgent, send_partial, paths } => {
            let o = crate::send::SendOptions { hub, token, community, note, appointment, urgent, paths, send_partial };
            let result = crate::send::send(&o, |p| {
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
                    crate::say!("sent transfer {} to {} ({} images): {}", t.id, t.community_name, t.instances, t.state);
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
