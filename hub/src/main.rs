//! `ferry-hub`: the command line. Parses flags, loads the layered config, sets up tracing and
//! hands over to the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferry_hub::config::{CliOverrides, Config};

/// mimalloc instead of glibc's malloc: under a mixed load of uploads and reads glibc kept about
/// five times the live heap resident (per-thread arenas it does not give back); see
/// bench/README.md, "Load".
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Access codes for patients, made on the hub's database (beside a running hub).
    Share {
        #[command(subcommand)]
        command: ShareCommand,
        /// Folder for the embedded defaults (database, blobs, keys).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// The audit trail: check that nobody changed or removed a record.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        /// Folder for the embedded defaults (database, blobs, keys).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// The key-encryption key: rotate it, or see which keys wrap the study keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        /// Folder for the embedded defaults (database, blobs, keys).
        #[arg(long, global = true)]
        data_dir: Option<PathBuf>,
    },
    /// Back up the database (a consistent snapshot; hubs may keep running) and the encrypted
    /// blobs into a new folder; with --keys-to, the keys into another one (keep them apart).
    Backup {
        /// The new backup folder.
        to: PathBuf,
        /// Where to copy the hub secret and the local key-encryption key(s).
        #[arg(long)]
        keys_to: Option<PathBuf>,
        /// Folder for the embedded defaults (database, blobs, keys).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Restore a backup into an empty database and storage (never over a hub), then check that
    /// every study key unwraps and every instance has its blob.
    Restore {
        /// The backup folder (`ferry-hub backup`).
        from: PathBuf,
        /// The keys saved with --keys-to.
        #[arg(long)]
        keys_from: Option<PathBuf>,
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

#[derive(Subcommand)]
enum KeysCommand {
    /// A new key-encryption key re-wraps every study's data key (the images are not touched);
    /// the old key file is kept as `<file>.retired-<id>` until you delete it. Hubs may keep running.
    Rotate,
    /// How many study keys each key-encryption key wraps, and which one is current.
    Status,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the hash chain of the audit trail; exit 1 naming the first broken record.
    Verify,
}

#[derive(Subcommand)]
enum ShareCommand {
    /// Share studies the community holds; prints the code (shown once) and writes the sheet.
    Create {
        /// The community's public code.
        #[arg(long)]
        community: String,
        /// A Study Instance UID (repeat for several).
        #[arg(long = "study")]
        studies: Vec<String>,
        /// Instead of --study: every study of this patient ID at the community.
        #[arg(long)]
        patient_id: Option<String>,
        /// birth_date (default), password, study_date
        #[arg(long)]
        second_factor: Option<String>,
        /// The birth date to ask for (YYYYMMDD) when the images carry none.
        #[arg(long)]
        birth_date: Option<String>,
        /// Lifetime in days (default: the community's default).
        #[arg(long)]
        days: Option<u32>,
        #[arg(long)]
        note: Option<String>,
        /// Write the printable sheet (PDF) here.
        #[arg(long)]
        sheet: Option<PathBuf>,
    },
    /// Revoke a share (and codes forwarded from it).
    Revoke { id: String },
}

/// What the command line asks for, once the configuration is loaded.
enum Job {
    Serve,
    Admin(AdminCommand),
    Share(ShareCommand),
    Audit(AuditCommand),
    Keys(KeysCommand),
    Backup { to: PathBuf, keys_to: Option<PathBuf> },
    Restore { from: PathBuf, keys_from: Option<PathBuf> },
}

/// `mi_option_purge_delay` in mimalloc 3.x's `mi_option_t` (libmimalloc-sys names no constant
/// for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Transparent huge pages off for the hub: mimalloc's fresh memory was faulted in (and zeroed)
/// 2 MiB at a time, which cost about a tenth of STOW's CPU and doubled the resident size in the
/// benchmark (bench/README.md). MIMALLOC_ALLOW_THP=1 in the environment keeps them on.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // A failure (an old kernel) only costs memory and speed.
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}

/// mimalloc 3 keeps freed memory for a second before giving it back to the system. Ingest frees
/// and allocates ~0.5 MB buffers hundreds of times a second, so a second's worth stayed resident
/// (the benchmark's STOW peaked at ~138 MB). 100 ms keeps the benefit of reuse and halves that;
/// 0 (purge at once) made WADO-RS half as fast. MIMALLOC_PURGE_DELAY in the environment wins.
#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain option value (read by mimalloc at each purge decision); called
        // first thing in main, before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 100) };
    }
}

/// What the hub writes — the database and its WAL, blobs, keys, mails, spooled uploads — is for
/// its own user only, whatever umask it was started with: new folders 0700, new files 0600, also
/// where a library creates them (the local blob store, SQLite). Set before any thread exists.
fn private_umask() {
    #[cfg(target_os = "linux")]
    let _ = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    no_huge_pages();
    private_umask();
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("ferry-hub: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (listen, data_dir, job) = match cli.command {
        Some(Command::Serve { listen, data_dir }) => (listen, data_dir, Job::Serve),
        Some(Command::Admin { command, data_dir }) => (None, data_dir, Job::Admin(command)),
        Some(Command::Share { command, data_dir }) => (None, data_dir, Job::Share(command)),
        Some(Command::Audit { command, data_dir }) => (None, data_dir, Job::Audit(command)),
        Some(Command::Keys { command, data_dir }) => (None, data_dir, Job::Keys(command)),
        Some(Command::Backup { to, keys_to, data_dir }) => (None, data_dir, Job::Backup { to, keys_to }),
        Some(Command::Restore { from, keys_from, data_dir }) => (None, data_dir, Job::Restore { from, keys_from }),
        None => (None, None, Job::Serve),
    };
    let config = match Config::load(cli.config.as_deref(), CliOverrides { listen, data_dir }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferry-hub: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    ferry_hub::telemetry::init(&config.log);
    let result = match job {
        Job::Admin(command) => run_admin(config, command).await,
        Job::Share(command) => run_share(config, command).await,
        Job::Audit(AuditCommand::Verify) => verify_audit(config).await,
        Job::Keys(command) => run_keys(config, command).await,
        Job::Backup { to, keys_to } => backup(config, to, keys_to).await,
        Job::Restore { from, keys_from } => restore(config, from, keys_from).await,
        Job::Serve => serve(config).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-hub: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn backup(config: Config, to: PathBuf, keys_to: Option<PathBuf>) -> anyhow::Result<()> {
    let m = ferry_hub::backup::backup(&config, &to, keys_to.as_deref()).await?;
    println!("backed up the {} database and {} blob(s) ({} bytes, encrypted) to {}", m.database, m.blobs, m.blob_bytes, to.display());
    match keys_to {
        Some(k) => println!("the keys are in {}; keep them apart from the data backup", k.display()),
        None => {
            println!("the keys were not copied (--keys-to): without the hub secret and the key-encryption key this backup cannot be read")
        }
    }
    Ok(())
}

async fn restore(config: Config, from: PathBuf, keys_from: Option<PathBuf>) -> anyhow::Result<()> {
    let r = ferry_hub::backup::restore(&config, &from, keys_from.as_deref()).await?;
    println!("restored {} blob(s); {} study key(s) unwrap and {} instance(s) have their blobs", r.blobs, r.studies, r.instances);
    Ok(())
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

async fn run_keys(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    use ferry_hub::storage::keys;
    if config.keys.provider == ferry_hub::config::KeyProviderKind::Transit {
        return run_transit_keys(config, command).await;
    }
    let kek_file = config.kek_file();
    if !kek_file.exists() {
        anyhow::bail!("there is no key-encryption key at {} (is --data-dir or keys.kek_file right?)", kek_file.display());
    }
    let pools = ferry_hub::db::connect_pools(&config.database_url(), Some(2)).await?;
    match command {
        KeysCommand::Rotate => {
            let r = keys::rotate_local(&pools.write, &kek_file).await?;
            println!("rotated the key-encryption key: {} -> {}", r.old_id, r.new_id);
            println!("re-wrapped {} study key(s); the images were not touched", r.rewrapped);
            println!("the new key is {}; back it up now", kek_file.display());
            println!("the old key is no longer needed: delete {} once the new key is backed up", r.retired_file.display());
        }
        KeysCommand::Status => {
            let (current, _) = keys::LocalKeyFile::load_or_create(&kek_file)?;
            let current = current.current_id();
            println!("current key-encryption key: {current}");
            for (id, n) in keys::kek_usage(&pools.read).await? {
                println!("{n:8} study key(s) wrapped by {id}{}", if id == current { " (current)" } else { "" });
            }
        }
    }
    Ok(())
}

async fn run_transit_keys(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    use ferry_hub::storage::{keys, transit};
    let t = transit::TransitKeys::from_config(&config)?;
    let latest = t.check().await.context("the key service (keys.transit)")?;
    let pools = ferry_hub::db::connect_pools(&config.database_url(), Some(2)).await?;
    match command {
        KeysCommand::Rotate => {
            let r = t.rotate(&pools.write).await?;
            println!("rotated the transit key {}: v{} -> v{}", config.keys.transit.key, r.old_version, r.new_version);
            println!("re-wrapped {} study key(s); the images were not touched", r.rewrapped);
            println!("versions before v{} can no longer decrypt (min_decryption_version)", r.new_version);
            if config.kek_file().exists() {
                println!("no study key needs the local key file any more: {} can be deleted", config.kek_file().display());
            }
        }
        KeysCommand::Status => {
            let current = t.kek_id(latest);
            println!("current key-encryption key: {current}");
            for (id, n) in keys::kek_usage(&pools.read).await? {
                println!("{n:8} study key(s) wrapped by {id}{}", if id == current { " (current)" } else { "" });
            }
        }
    }
    Ok(())
}

async fn verify_audit(config: Config) -> anyhow::Result<()> {
    let pools = ferry_hub::db::connect_pools(&config.database_url(), Some(2)).await?;
    let v = ferry_hub::audit::verify(&pools.read).await?;
    println!("audit trail intact: {} records, chain head {}", v.records, v.head);
    Ok(())
}

async fn run_share(config: Config, command: ShareCommand) -> anyhow::Result<()> {
    let listen = config.listen;
    let state = ferry_hub::startup::build_state(config, listen).await?;
    let err = |e: ferry_hub::error::AppError| anyhow::anyhow!("{e}");
    match command {
        ShareCommand::Create { community, studies, patient_id, second_factor, birth_date, days, note, sheet } => {
            let community_id =
                ferry_hub::shares::managed_community(&state, &ferry_hub::access::Principal::Admin, &community).await.map_err(err)?;
            let n = ferry_schemas::NewShare {
                community,
                studies,
                patient_id,
                options: ferry_schemas::ShareOptions { second_factor, birth_date, expires_in_days: days, note, ..Default::default() },
            };
            if n.studies.is_empty() && n.patient_id.is_none() {
                anyhow::bail!("name the studies (--study UID) or the patient (--patient-id ID)");
            }
            let issued = match ferry_hub::shares::create(&state, "cli", &community_id, &n).await.map_err(err)? {
                Ok(i) => i,
                Err(_) => anyhow::bail!("nothing to share"),
            };
            println!("share     {}", issued.share.id);
            println!("code      {}", issued.code);
            if let Some(p) = &issued.password {
                println!("password  {p}");
            }
            println!("link      {}", issued.redeem_url);
            println!("expires   {}", issued.share.expires_at);
            if let Some(path) = sheet {
                let row = ferry_hub::shares::managed(&state, &ferry_hub::access::Principal::Admin, &issued.share.id).await.map_err(err)?;
                let req = ferry_schemas::SheetRequest { code: issued.code.clone(), password: issued.password.clone() };
                let pdf = ferry_hub::shares::sheet_for(&state, &row, &req).await.map_err(err)?;
                std::fs::write(&path, pdf).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                println!("sheet     {}", path.display());
            }
        }
        ShareCommand::Revoke { id } => {
            let row = ferry_hub::shares::managed(&state, &ferry_hub::access::Principal::Admin, &id).await.map_err(err)?;
            ferry_hub::shares::revoke(&state, "cli", &row).await.map_err(err)?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

async fn run_admin(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    ferry_hub::files::create_dir(&config.data_dir)?;
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
            let new = ferry_schemas::NewCommunity { name, code, city, address, departments, contact, accepts_inbound: Some(!no_inbound) };
            let c = ferry_hub::communities::create(&pools.write, "cli", &new).await.map_err(|e| anyhow::anyhow!("{e}"))?;
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
