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
    /// Pull the transfers sent to this connector's community into a PACS (DICOMweb STOW-RS).
    Pull {
        #[arg(long, env = "FERRY_HUB_URL")]
        hub: String,
        /// The connector's client id (from the community's admin page).
        #[arg(long, env = "FERRY_CLIENT_ID")]
        client_id: String,
        #[arg(long, env = "FERRY_CLIENT_SECRET", hide_env_values = true)]
        client_secret: String,
        /// The PACS's DICOMweb root, e.g. http://pacs:8042/dicom-web
        #[arg(long)]
        stow_url: String,
        /// Handle what is waiting, then exit (otherwise poll every --interval seconds).
        #[arg(long)]
        once: bool,
        #[arg(long, default_value_t = 5)]
        interval: u64,
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
        Command::Pull { hub, client_id, client_secret, stow_url, once, interval } => {
            let o = ferry_connector::pull::PullOptions { hub, client_id, client_secret, stow_url, attempts: 3 };
            loop {
                match ferry_connector::pull::run_once(&o).await {
                    Ok((stored, failed)) if stored + failed > 0 => println!("{stored} transfer(s) stored, {failed} failed"),
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("ferry-connector: {e:#}");
                        if once {
                            return std::process::ExitCode::FAILURE;
                        }
                    }
                }
                if once {
                    return std::process::ExitCode::SUCCESS;
                }
                tokio::time::sleep(std::time::Duration::from_secs(interval.max(1))).await;
            }
        }
        Command::Send { hub, token, community, note, appointment, urgent, send_partial, paths } => {
            let o = ferry_connector::send::SendOptions { hub, token, community, note, appointment, urgent, paths, send_partial };
            let result = ferry_connector::send::send(&o, |p| {
                let pct = (p.bytes_done * 100).checked_div(p.bytes_total).unwrap_or(100);
                eprintln!("{pct:3}%  {}/{} files  {:.1}/{:.1} MB", p.files_done, p.files_total, p.bytes_done as f64 / 1e6, p.bytes_total as f64 / 1e6);
            })
            .await;
            match result {
                Ok(t) => {
                    println!("sent transfer {} to {} ({} images): {}", t.id, t.community_name, t.instances, t.state);
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
