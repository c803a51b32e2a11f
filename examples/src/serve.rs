//! What every example server shares: its keys (from files or the
//! environment, with the `capnagent` CLI's flags, or random in a private
//! directory), its hash-chained audit log, `/metrics`, and the one JSON
//! line a script reads to find all of them. See `examples/README.md`,
//! "Running a server for real".

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use capnagent::keys::KeySource;
use capnagent::{Auditor, Issuer, KeyRing, KeyRole, Verifier};
use capnagent_gateway::open_audit_sink;
use capnagent_tower::AuditLogSink;
use serde::Serialize;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The flags every example server takes: the keys, with the `capnagent`
/// command's names and formats (`capnagent keygen` output works as it is),
/// the audit log, and metrics.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Root key(s) as a key spec (`HEX` or `KID:HEX`, comma-separated; the
    /// first mints). Visible in the process list: prefer --root-key-file or
    /// CAPNAGENT_ROOT_KEY.
    #[arg(long, value_name = "SPEC")]
    pub root_key_hex: Option<String>,
    /// File holding the root key(s): a key spec, or `capnagent keygen`
    /// output. Or set CAPNAGENT_ROOT_KEY. None given: a random key, written
    /// to a private temporary directory for this run.
    #[arg(long, value_name = "PATH")]
    pub root_key_file: Option<PathBuf>,
    /// Audit key(s) as a key spec (the first signs receipts). Prefer
    /// --audit-key-file or CAPNAGENT_AUDIT_KEY.
    #[arg(long, value_name = "SPEC")]
    pub audit_key_hex: Option<String>,
    /// File holding the audit key(s), as for --root-key-file. Or set
    /// CAPNAGENT_AUDIT_KEY. None given: a random key, as for the root key.
    #[arg(long, value_name = "PATH")]
    pub audit_key_file: Option<PathBuf>,
    /// Append receipts to this hash-chained audit log (kept on exit;
    /// check it with `capnagent audit verify`). Default: a file in the
    /// private temporary directory, removed on exit.
    #[arg(long, value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// Start a new audit log file (the chain carries over) when the
    /// active one would exceed this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub audit_rotate_bytes: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0: any free
    /// port; the URL is printed).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// What a server runs with, from [`ServerArgs`].
pub struct Setup {
    /// The root keys (the first mints the demo's tokens).
    pub root: KeyRing,
    /// Checks tokens under every root key.
    pub verifier: Verifier,
    /// Mints under the primary root key.
    pub issuer: Issuer,
    /// Signs receipts under the primary audit key.
    pub auditor: Auditor,
    /// The hash-chained audit log, behind a write-ahead sink.
    pub sink: AuditLogSink,
    /// The active audit log file.
    pub log_path: PathBuf,
    /// The root key file (given, or written for a random key); `None` when
    /// the key came from the flag or the environment.
    pub root_key_file: Option<PathBuf>,
    /// The audit key file, likewise.
    pub audit_key_file: Option<PathBuf>,
    /// `http://host:port/metrics` with `--metrics-addr`.
    pub metrics_url: Option<String>,
    /// Random keys and the default audit log; removed when dropped.
    dir: Option<tempfile::TempDir>,
}

impl Setup {
    /// Resolves the keys (random ones when none are given), opens the
    /// audit log and, with `--metrics-addr`, serves `/metrics`. `name`
    /// prefixes the private temporary directory.
    pub async fn new(args: &ServerArgs, name: &str) -> Result<Setup, BoxError> {
        let mut dir = None;
        let (root, root_key_file) = keys(
            KeyRole::Root,
            KeySource::new(KeyRole::Root)
                .hex(args.root_key_hex.as_deref())
                .file(args.root_key_file.as_deref()),
            args.root_key_file.as_deref(),
            "root.key",
            &mut dir,
            name,
        )?;
        let (audit, audit_key_file) = keys(
            KeyRole::Audit,
            KeySource::new(KeyRole::Audit)
                .hex(args.audit_key_hex.as_deref())
                .file(args.audit_key_file.as_deref()),
            args.audit_key_file.as_deref(),
            "audit.key",
            &mut dir,
            name,
        )?;
        let verifier = Verifier::from_keys(&root)?;
        let auditor = Auditor::from_keys(&audit)?;
        verifier.check_audit_key(&auditor)?;
        let issuer = Issuer::from_keys(&root)?;

        let log_path = match &args.audit_log {
            Some(path) => path.clone(),
            None => private_dir(&mut dir, name)?.join("audit.ndjson"),
        };
        let (_, sink) = open_audit_sink(&audit, &log_path, args.audit_rotate_bytes)?;
        let metrics_url = match args.metrics_addr {
            Some(addr) => Some(serve_metrics(addr).await?),
            None => None,
        };
        Ok(Setup {
            root,
            verifier,
            issuer,
            auditor,
            sink,
            log_path,
            root_key_file,
            audit_key_file,
            metrics_url,
            dir,
        })
    }

    /// Where random keys and the default audit log are (removed on exit).
    pub fn private_dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }

    /// The ready line for this setup.
    pub fn ready<'a>(
        &'a self,
        server: &'static str,
        url: &'a str,
        tokens: &[(&str, &str)],
    ) -> Ready<'a> {
        Ready {
            event: "ready",
            server,
            url,
            tokens: tokens
                .iter()
                .map(|(name, token)| ((*name).to_owned(), (*token).into()))
                .collect(),
            root_key_file: self.root_key_file.as_deref(),
            audit_key_file: self.audit_key_file.as_deref(),
            root_key_ids: self.root.ids().map(ToString::to_string).collect(),
            audit_log: &self.log_path,
            metrics_url: self.metrics_url.as_deref(),
        }
    }

    /// Prints where the keys and the audit log are.
    pub fn describe(&self) {
        let source = |file: &Option<PathBuf>| match file {
            Some(path) => path.display().to_string(),
            None => "the flag or the environment".to_owned(),
        };
        if let Some(dir) = self.private_dir() {
            println!(
                "private directory for this run (removed on exit): {}",
                dir.display()
            );
        }
        let ids: Vec<String> = self.root.ids().map(ToString::to_string).collect();
        println!(
            "root key(s) {} from {}",
            ids.join(", "),
            source(&self.root_key_file)
        );
        println!("audit key from {}", source(&self.audit_key_file));
        println!("audit log (hash-chained): {}", self.log_path.display());
        if let Some(url) = &self.metrics_url {
            println!("metrics: {url}");
        }
    }

    /// Writes every pending receipt, prints what the log holds, and removes
    /// the private directory (random keys, the default audit log).
    pub async fn finish(self) -> Result<(), BoxError> {
        self.sink.flush().await?;
        println!(
            "stopped; {} receipts written to {}",
            self.sink.stats().written,
            self.log_path.display()
        );
        drop(self.sink);
        if let Some(dir) = self.dir {
            dir.close()?;
        }
        Ok(())
    }
}

/// The ring `source` gives, with the file it came from; a random key,
/// written to `file_name` in the private directory, when none is given.
fn keys(
    role: KeyRole,
    source: KeySource<'_>,
    given_file: Option<&Path>,
    file_name: &str,
    dir: &mut Option<tempfile::TempDir>,
    name: &str,
) -> Result<(KeyRing, Option<PathBuf>), BoxError> {
    if let Some(ring) = source.resolve()? {
        return Ok((ring, given_file.map(Path::to_path_buf)));
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| format!("random key: {e}"))?;
    let ring = KeyRing::new(role, None, &key)?;
    let hex = base16ct::lower::encode_string(&key);
    let path = write_private(private_dir(dir, name)?, file_name, &format!("{hex}\n"))?;
    Ok((ring, Some(path)))
}

/// The private temporary directory (0700), made on first use.
fn private_dir<'a>(
    dir: &'a mut Option<tempfile::TempDir>,
    name: &str,
) -> std::io::Result<&'a Path> {
    let dir = match dir {
        Some(dir) => dir,
        None => dir.insert(
            tempfile::Builder::new()
                .prefix(&format!("capnagent-{name}-"))
                .tempdir()?,
        ),
    };
    Ok(dir.path())
}

// `--metrics-addr`: the gateway's Prometheus endpoint, shared.
pub use capnagent_gateway::metrics::{DECISION_BUCKETS, metrics_router, serve_metrics};

/// Writes `text` to a new file `name` in `dir`, readable by its owner
/// only (0600 on Unix).
pub fn write_private(dir: &Path, name: &str, text: &str) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(path)
}

/// The one JSON line a server prints once it listens, for scripts: see
/// `examples/README.md` for the fields.
#[derive(Debug, Serialize)]
pub struct Ready<'a> {
    /// Always `"ready"`.
    pub event: &'static str,
    /// The binary's name.
    pub server: &'static str,
    /// Where the tool API listens (for gRPC, the `http://host:port` a
    /// client connects to; for MCP, the endpoint).
    pub url: &'a str,
    /// Capabilities the server minted for this run, by name.
    pub tokens: serde_json::Map<String, serde_json::Value>,
    /// The root key file: the one given, the one written for random keys,
    /// or `null` when the key came from the environment.
    pub root_key_file: Option<&'a Path>,
    /// The audit key file, likewise.
    pub audit_key_file: Option<&'a Path>,
    /// Key ids of the root keys (the first mints).
    pub root_key_ids: Vec<String>,
    /// The hash-chained audit log.
    pub audit_log: &'a Path,
    /// `http://host:port/metrics`, or `null` without `--metrics-addr`.
    pub metrics_url: Option<&'a str>,
}

impl Ready<'_> {
    /// Prints the line on standard output, flushed.
    pub fn print(&self) -> Result<(), BoxError> {
        let line = serde_json::to_string(self)?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    }
}
