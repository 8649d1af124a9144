//! The `ferry-hub` command line: its arguments (clap) and one module per subcommand. The
//! binary (`main.rs`) only tunes the allocator, parses the arguments and calls [`run`].

/// Prints a line of a command's output. A reader that went away (`… | head -n 1`) ends the
/// output: the command stops quietly with success instead of panicking as `println!` does.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::cli::say_line(format_args!($($arg)*))
    };
}
pub(crate) use say;

#[doc(hidden)]
pub fn say_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("ferry-hub: cannot write the output: {e}");
        std::process::exit(1);
    }
}

mod admin;
mod audit;
mod backup;
mod keys;
mod serve;
mod share;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{CliOverrides, Config};

#[derive(Parser)]
#[command(name = "ferry-hub", version, about = "Ferry hub: exchange DICOM studies securely")]
pub struct Cli {
    /// Configuration file (default: ./ferry-hub.toml when it exists).
    #[arg(long, global = true, env = "FERRY_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
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
pub enum AdminCommand {
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
pub enum KeysCommand {
    /// A new key-encryption key re-wraps every study's data key (the images are not touched);
    /// the old key file is kept as `<file>.retired-<id>` until you delete it. Hubs may keep running.
    Rotate,
    /// How many study keys each key-encryption key wraps, and which one is current.
    Status,
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain of the audit trail; exit 1 naming the first broken record.
    Verify,
}

#[derive(Subcommand)]
pub enum ShareCommand {
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
pub enum Job {
    Serve,
    Admin(AdminCommand),
    Share(ShareCommand),
    Audit(AuditCommand),
    Keys(KeysCommand),
    Backup { to: PathBuf, keys_to: Option<PathBuf> },
    Restore { from: PathBuf, keys_from: Option<PathBuf> },
}

/// Runs the command line `cli` asks for; the process exit code: 0, 1 for a failed command, 2 for
/// a configuration that cannot be loaded.
pub async fn run(cli: Cli) -> std::process::ExitCode {
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
    crate::telemetry::init(&config.log);
    let result = match job {
        Job::Admin(command) => admin::run(config, command).await,
        Job::Share(command) => share::run(config, command).await,
        Job::Audit(AuditCommand::Verify) => audit::verify(config).await,
        Job::Keys(command) => keys::run(config, command).await,
        Job::Backup { to, keys_to } => backup::backup(config, to, keys_to).await,
        Job::Restore { from, keys_from } => backup::restore(config, from, keys_from).await,
        Job::Serve => serve::serve(config).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-hub: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
