//! `capnagent-gateway --config FILE`: the gateway (see the crate README).
//! `capnagent-gateway --check-config FILE`: validate the file and exit (0
//! valid, 2 with the error).

use std::path::PathBuf;
use std::process::ExitCode;

use capnagent_gateway::{Config, Gateway};
use clap::Parser;

/// A reverse proxy that checks every tool call against the caller's
/// capnagent capability before forwarding it.
#[derive(Debug, Parser)]
#[command(name = "capnagent-gateway", version)]
struct Options {
    /// The configuration file (TOML).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "check_config",
        required_unless_present = "check_config"
    )]
    config: Option<PathBuf>,
    /// Validate this configuration file (and its keys) without serving.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let options = Options::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .json()
        .init();
    if let Some(path) = options.check_config {
        return match Config::load(&path).and_then(Config::validate) {
            Ok(config) => match capnagent_gateway::check_keys(&config) {
                Ok(()) => {
                    println!("{}: valid", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    ExitCode::from(2)
                }
            },
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                ExitCode::from(2)
            }
        };
    }
    let Some(path) = options.config else {
        eprintln!("capnagent-gateway: --config FILE is required");
        return ExitCode::from(2);
    };
    let config = match Config::load(&path).and_then(Config::validate) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("capnagent-gateway: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("capnagent-gateway failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: capnagent_gateway::Validated) -> Result<(), capnagent_gateway::BoxError> {
    let gateway = Gateway::start(config).await?;
    tracing::info!(url = %gateway.url(), "listening");
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", gateway.ready_line())?;
        out.flush()?;
    }
    gateway.serve(capnagent_gateway::shutdown_signal()).await
}
