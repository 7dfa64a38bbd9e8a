//! The `roomcast` binary: parses arguments, loads configuration, reports start-up errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use roomcast::auth::api_key::PresentedKey;
use roomcast::config::{Config, LogFormat};
use roomcast::server::{Server, admin_record};
use roomcast::store::KeyKind;

/// sysexits.h: the configuration is wrong.
const EX_CONFIG: u8 = 78;
/// sysexits.h: a service the program needs is unavailable.
const EX_UNAVAILABLE: u8 = 69;

#[derive(Debug, Parser)]
#[command(name = "roomcast", version, about = "Self-hosted realtime WebSocket broadcast hub")]
struct Cli {
    /// Configuration file (default: config/roomcast.toml when it exists).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub (the default).
    Serve,
    /// Administrative tasks on the store.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an admin API key and print it once.
    CreateKey {
        /// A name to recognise the key by in listings.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("roomcast: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    init_tracing(&config);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("roomcast: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => runtime.block_on(serve(config)),
        Command::Admin { command: AdminCommand::CreateKey { name } } => {
            runtime.block_on(create_key(config, &name))
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config) -> ExitCode {
    // Every client is a file descriptor: take the hard limit rather than the usual soft 1,024.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(limit, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    let server = match Server::build(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("roomcast: {e}");
            return ExitCode::from(match e {
                roomcast::server::StartError::Config(_) => EX_CONFIG,
                _ => EX_UNAVAILABLE,
            });
        }
    };
    if let Some(key) = server.bootstrap_admin_key() {
        println!("No admin key existed, so one was created. It is shown only this once:");
        println!("ROOMCAST_ADMIN_KEY={key}");
    }
    println!("roomcast listening on http://{}", server.local_addr());
    server.run(roomcast::shutdown::signal()).await;
    ExitCode::SUCCESS
}

async fn create_key(config: Config, name: &str) -> ExitCode {
    let store = match roomcast::server::open_store(&config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("roomcast: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    let key = PresentedKey::generate(KeyKind::Admin);
    if let Err(e) = store.insert_key(&admin_record(&key, name)).await {
        eprintln!("roomcast: cannot store the key: {e}");
        return ExitCode::from(EX_UNAVAILABLE);
    }
    println!("{}", key.plaintext());
    ExitCode::SUCCESS
}
