//! Redis-backed stores for `capnagent` verifiers that run as a fleet.
//!
//! - [`RedisNonceStore`]: a [`NonceStore`] shared by every verifier, so a
//!   holder-of-key proof accepted by one server is refused by all others.
//!   One atomic `SET key 1 NX PX ttl` per proof.
//! - [`RedisRevocationStore`]: a [`RevocationStore`] holding the newest
//!   signed [`RevocationList`](capnagent::RevocationList) (a Lua script
//!   refuses to overwrite a newer list).
//! - [`spawn_revocation_feed`]: polls any [`RevocationStore`] and installs
//!   newer lists into a verifier's
//!   [`RevocationCell`](capnagent::RevocationCell).
//!
//! **Fail closed.** Every Redis call has a deadline
//! ([`RedisConfig::timeout`]); an error or a timeout is a
//! [`StoreError`], which the verifier turns into a denial with a signed
//! receipt. When Redis comes back, the connection manager reconnects and
//! calls are served again.
//!
//! **Staleness bound.** A revocation published to Redis reaches a server
//! within one feed interval plus one Redis round trip. With
//! [`RevocationCell::with_max_age`](capnagent::RevocationCell::with_max_age)
//! and a publisher that re-publishes more often than `max_age`, a server
//! cut off from Redis denies every call once its list is older than
//! `max_age`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use capnagent::{RevocationCell, Verifier};
//! use capnagent_redis::{RedisConfig, RedisNonceStore, RedisRevocationStore, spawn_revocation_feed};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let root_key = [7u8; 32];
//! let config = RedisConfig::new("redis://127.0.0.1:6379/");
//! let nonces = RedisNonceStore::connect(&config).await?;
//! let revocations = Arc::new(RedisRevocationStore::connect(&config).await?);
//! let cell = RevocationCell::new(&root_key)?.with_max_age(Duration::from_secs(60));
//! let _feed = spawn_revocation_feed(revocations, cell.clone(), Duration::from_secs(1));
//! let verifier = Verifier::new(&root_key)?
//!     .with_nonce_store(Arc::new(nonces))
//!     .with_revocations(cell);
//! # let _ = verifier; Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use capnagent::{
    BoxFuture, NonceStore, RevocationCell, RevocationList, RevocationStore, StoreError,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, Client, Script};

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisConfig {
    url: String,
    prefix: String,
    timeout: Duration,
}

impl RedisConfig {
    /// Connects to `url` (`redis://host:port/db`), with key prefix
    /// `capnagent` and a 250 ms deadline per call.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "capnagent".to_owned(),
            timeout: Duration::from_millis(250),
        }
    }

    /// Sets the prefix of every key this crate writes.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Sets the deadline for each Redis call; past it the call fails
    /// (and the verifier denies).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn connect(&self) -> Result<ConnectionManager, StoreError> {
        let client = Client::open(self.url.as_str()).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password.
        f.debug_struct("RedisConfig")
            .field("url", &format_args!(".."))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

async fn deadline<T>(
    timeout: Duration,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(StoreError::Timeout),
    }
}

/// A [`NonceStore`] in Redis: `SET <prefix>:nonce:<hex> 1 NX PX <ttl>`.
///
/// Expiry runs on the Redis server's clock (the TTL is relative), so
/// verifiers need not agree on the time to agree on replays.
#[derive(Clone)]
pub struct RedisNonceStore {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl RedisNonceStore {
    /// Connects (fails if Redis is unreachable now; reconnects later on
    /// its own).
    pub async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        Ok(RedisNonceStore {
            conn: config.connect().await?,
            prefix: format!("{}:nonce:", config.prefix),
            timeout: config.timeout,
        })
    }
}

impl NonceStore for RedisNonceStore {
    fn try_record<'a>(
        &'a self,
        nonce: &'a [u8; 32],
        _now_ms: u64,
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            if ttl_ms == 0 {
                // Already expired, as in the in-memory contract.
                return Ok(true);
            }
            let mut key = String::with_capacity(self.prefix.len() + 64);
            key.push_str(&self.prefix);
            for b in nonce {
                key.push_str(&format!("{b:02x}"));
            }
            let mut conn = self.conn.clone();
            let reply: Option<String> = deadline(
                self.timeout,
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async(&mut conn),
            )
            .await?;
            Ok(reply.is_some())
        })
    }
}

impl fmt::Debug for RedisNonceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisNonceStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Stores the newest revocation list unless a newer one is already there.
const PUBLISH: &str = r"
local current = redis.call('HGET', KEYS[1], 'issued_at_ms')
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'issued_at_ms', ARGV[1], 'list', ARGV[2])
return 1
";

/// A [`RevocationStore`] in Redis: one hash `<prefix>:revocations` holding
/// the newest signed list.
#[derive(Clone)]
pub struct RedisRevocationStore {
    conn: ConnectionManager,
    key: String,
    timeout: Duration,
    publish: Arc<Script>,
}

impl RedisRevocationStore {
    /// Connects (fails if Redis is unreachable now).
    pub async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        Ok(RedisRevocationStore {
            conn: config.connect().await?,
            key: format!("{}:revocations", config.prefix),
            timeout: config.timeout,
            publish: Arc::new(Script::new(PUBLISH)),
        })
    }
}

impl RevocationStore for RedisRevocationStore {
    fn publish<'a>(&'a self, list: &'a RevocationList) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let wire = list.serialize();
            let mut invocation = self.publish.key(&self.key);
            invocation.arg(list.issued_at_ms()).arg(wire);
            let _: i64 = deadline(self.timeout, invocation.invoke_async(&mut conn)).await?;
            Ok(())
        })
    }

    fn latest(&self) -> BoxFuture<'_, Result<Option<RevocationList>, StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let wire: Option<String> = deadline(self.timeout, conn.hget(&self.key, "list")).await?;
            wire.map(|w| RevocationList::parse(&w).map_err(|e| StoreError::Invalid(e.to_string())))
                .transpose()
        })
    }
}

impl fmt::Debug for RedisRevocationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRevocationStore")
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Polls `store` every `interval` and installs newer lists into `cell`
/// (signature checked; older lists ignored). Errors are logged with
/// `tracing` and retried at the next tick. Drop or abort the handle to stop.
///
/// The interval (plus one store round trip) bounds how long a published
/// revocation takes to reach this verifier.
pub fn spawn_revocation_feed(
    store: Arc<dyn RevocationStore>,
    cell: RevocationCell,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match capnagent::refresh(store.as_ref(), &cell).await {
                Ok(true) => tracing::debug!("installed a newer revocation list"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "revocation feed refresh failed"),
            }
        }
    })
}
