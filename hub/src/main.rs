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
    /// Administration on the hub's database (run beside or instead of `serve`).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
        /// Folder for the embedded defaults (database, blobs, keys).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a community (an institution that can receive studies). Prints its public code.
    CreateCommunity {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        city: String,
        /// The public code (3–12 letters or digits); generated when omitted.
        #[arg(long)]
        code: Option<String>,
        #[arg(long, default_value = "")]
        address: String,
        /// A department (repeat for several).
        #[arg(long = "department")]
        departments: Vec<String>,
        #[arg(long, default_value = "")]
        contact: String,
        /// The community does not accept inbound studies.
        #[arg(long)]
        no_inbound: bool,
        /// A logo (PNG or JPEG, at most 256 KiB).
        #[arg(long)]
        logo: Option<PathBuf>,
    },
    /// Create an account with a verified email. The password is read from standard input with
    /// --password-stdin; otherwise a random one is generated and printed once.
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// Make the account a hub admin.
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Make an account a member (or admin) of a community.
    AddMember {
        /// The community's public code.
        #[arg(long)]
        community: String,
        #[arg(long)]
        email: String,
        /// admin or member
        #[arg(long, default_value = "member")]
        role: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (listen, data_dir, admin) = match cli.command {
        Some(Command::Serve { listen, data_dir }) => (listen, data_dir, None),
        Some(Command::Admin { command, data_dir }) => (None, data_dir, Some(command)),
        None => (None, None, None),
    };
    let config = match Config::load(cli.config.as_deref(), CliOverrides { listen, data_dir }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry-hub: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    ferry_hub::telemetry::init(&config.log);
    let result = match admin {
        Some(command) => run_admin(config, command).await,
        None => serve(config).await,
    };
    match result {
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
    if let Some(link) = ferry_hub::accounts::setup_link(app.state()).await? {
        use std::io::Write;
        // Ignored when nobody reads stdout (a daemon); `ferry-hub admin create-user` works too.
        let _ = writeln!(std::io::stdout(), "No admin account yet. Create the first one (link valid for 24 hours): {link}");
    }
    app.run_until_stopped().await
}

async fn run_admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)?;
    let pools = ferry_hub::db::connect_pools(&config.database_url(), Some(2)).await?;
    match command {
        AdminCommand::CreateCommunity { name, city, code, address, departments, contact, no_inbound, logo } => {
            // Checked before anything is created, so a bad logo leaves no half-made community.
            let logo = match logo {
                Some(path) => {
                    let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("cannot read the logo {}: {e}", path.display()))?;
                    ferry_hub::communities::logo::check(&bytes).map_err(|e| anyhow::anyhow!("logo {}: {e}", path.display()))?;
                    Some(bytes)
                }
                None => None,
            };
            let new = ferry_schemas::NewCommunity {
                name,
                code,
                city,
                address,
                departments,
                contact,
                accepts_inbound: Some(!no_inbound),
            };
            let c = ferry_hub::communities::create(&pools.write, &new)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(bytes) = logo {
                let id = ferry_hub::communities::staff::community_id_in(&pools.read, &c.code).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                ferry_hub::communities::logo::store(&pools.write, &id, &bytes).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            println!("{}\t{}", c.code, c.name);
        }
        AdminCommand::CreateUser { email, name, admin, password_stdin } => {
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_string(), false)
            } else {
                (ferry_hub::accounts::tokens::new_secret("")[..20].to_string(), true)
            };
            let id = ferry_hub::accounts::create_user_cli(&pools.write, &email, &name, password.clone(), admin)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("created account {id}{}", if admin { " (hub admin)" } else { "" });
            if generated {
                println!("password (shown once): {password}");
            }
        }
        AdminCommand::AddMember { community, email, role } => {
            let state_less = ferry_hub::communities::staff::add_member_cli(&pools, &community, &email, &role).await;
            state_less.map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{email} is now {role} of {community}");
        }
    }
    Ok(())
}
