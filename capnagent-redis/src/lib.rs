//! Redis-backed stores for `capnagent` verifiers that run as a fleet.
//!
//! - [`RedisNonceStore`]: a [`NonceStore`] shared by every verifier, so a
//!   holder-of-key proof accepted by one server is refused by all others.
//!   One atomic `SET key 1 NX PX ttl` per proof.
//! - [`RedisRevocationStore`]: a [`RevocationStore`] holding the newest
//!   signed [`RevocationList`] (a Lua script
//!   refuses to overwrite a newer list).
//! - [`RedisBudgetStore`]: a [`BudgetStore`] for budget caveats
//!   (`calls <= 20`, `sum(arg.amount_cents) <= 50000 per 1d`; see
//!   `docs/caveats.md`), shared by every verifier and kept across their
//!   restarts. One Lua script per decision checks and reserves all its
//!   budgets, all or none.
//! - [`spawn_revocation_feed`]: polls any [`RevocationStore`] and installs
//!   newer lists into a verifier's
//!   [`RevocationCell`].
//!
//! **Fail closed.** Every Redis call has a deadline
//! ([`RedisConfig::timeout`]); an error or a timeout is a
//! [`StoreError`], which the verifier turns into a denial with a signed
//! receipt. When Redis comes back, the connection manager reconnects and
//! calls are served again.
//!
//! **Clocks.** The servers of a fleet, the publishers of revocation lists
//! and Redis must keep their clocks within a known bound of each other
//! ([`RedisConfig::max_clock_offset`], and the same bound on each
//! [`Verifier`](capnagent::Verifier) and
//! [`RevocationCell`]; default
//! [`DEFAULT_MAX_CLOCK_OFFSET`]).
//! Nonce records expire on Redis's clock after a TTL that the verifier
//! sizes to cover the whole acceptance window of a proof plus that bound,
//! so a server whose clock is behind the one that accepted a proof still
//! finds the record for as long as it could accept the proof. A revocation
//! list dated beyond the bound, by Redis's clock, is refused on publish,
//! and by each server's clock on install.
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
    BoxFuture, BudgetCharge, BudgetStore, DEFAULT_MAX_CLOCK_OFFSET, NonceStore, Reservation,
    RevocationCell, RevocationList, RevocationStore, StoreError,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, Client, Script};

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisConfig {
    url: String,
    prefix: String,
    timeout: Duration,
    max_clock_offset: Duration,
}

impl RedisConfig {
    /// Connects to `url` (`redis://host:port/db`), with key prefix
    /// `capnagent`, a 250 ms deadline per call and a clock-offset bound of
    /// [`DEFAULT_MAX_CLOCK_OFFSET`].
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            prefix: "capnagent".to_owned(),
            timeout: Duration::from_millis(250),
            max_clock_offset: DEFAULT_MAX_CLOCK_OFFSET,
        }
    }

    /// Sets how far ahead of the Redis server's clock a published
    /// revocation list may be dated ([`RedisRevocationStore::publish`]
    /// refuses lists dated further ahead). Use the fleet's clock-offset
    /// bound, the one given to
    /// [`Verifier::with_max_clock_offset`](capnagent::Verifier::with_max_clock_offset).
    pub fn max_clock_offset(mut self, bound: Duration) -> Self {
        self.max_clock_offset = bound;
        self
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
            .field("max_clock_offset", &self.max_clock_offset)
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
/// Expiry runs on the Redis server's clock (the TTL is relative). The
/// verifiers' clocks still matter: each decides by its own clock whether a
/// proof is within its window, so the TTL the verifier passes covers the
/// whole window plus the fleet's clock-offset bound
/// ([`Verifier::with_max_clock_offset`](capnagent::Verifier::with_max_clock_offset)).
/// Keep every verifier's clock within that bound of the others; a jump of
/// Redis's own clock shortens live records and counts against the bound.
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
            push_hex(&mut key, nonce);
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

/// Appends `bytes` in lowercase hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// Checks every budget of one decision, then reserves them all or none.
/// KEYS[i]: a budget record (the running total); ARGV[3i-2]: its limit,
/// ARGV[3i-1]: this call's amount, ARGV[3i]: TTL in ms (0: no expiry).
/// Reply `{0, 0}` when reserved, `{i, used}` for the first budget that
/// does not fit (nothing changed), `{-1, i}` when record `i` is not a
/// number. Values stay below 2^53 (limits and amounts are at most 10^15),
/// so Lua's doubles add them exactly.
const RESERVE: &str = r"
for i = 1, #KEYS do
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used == nil then
    return {-1, i}
  end
  if used + tonumber(ARGV[3 * i - 1]) > tonumber(ARGV[3 * i - 2]) then
    return {i, used}
  end
end
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[3 * i - 1])
  local ttl = tonumber(ARGV[3 * i])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return {0, 0}
";

/// A [`BudgetStore`] in Redis: one string per budget and window,
/// `<prefix>:budget:<hex scope>:<window start ms>`, holding the running
/// total.
///
/// Each decision is one `EVALSHA` of a Lua script that checks every budget
/// of the decision and reserves them all or none (one round trip whatever
/// the number of budget caveats), under the configured deadline
/// ([`RedisConfig::timeout`]); an error or a timeout denies the call. A
/// reservation whose answer was lost (a timeout after Redis ran the
/// script) stays counted: budgets can be under-used after an outage,
/// never over-used.
///
/// A windowed budget's key expires (`PEXPIRE`, on Redis's clock) once its
/// window has ended plus the fleet's clock-offset bound; a budget without a
/// window is kept for good. The keys of one decision go into one script,
/// so Redis Cluster (keys in several slots) is not supported.
#[derive(Clone)]
pub struct RedisBudgetStore {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    reserve: Arc<Script>,
}

impl RedisBudgetStore {
    /// Connects (fails if Redis is unreachable now; reconnects later on
    /// its own).
    pub async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        Ok(RedisBudgetStore {
            conn: config.connect().await?,
            prefix: format!("{}:budget:", config.prefix),
            timeout: config.timeout,
            reserve: Arc::new(Script::new(RESERVE)),
        })
    }

    /// The Redis key of a budget record.
    pub fn key(&self, scope: &[u8; 32], window_start_ms: u64) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 86);
        key.push_str(&self.prefix);
        push_hex(&mut key, scope);
        key.push(':');
        key.push_str(&window_start_ms.to_string());
        key
    }
}

impl BudgetStore for RedisBudgetStore {
    fn try_reserve<'a>(
        &'a self,
        charges: &'a [BudgetCharge],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Reservation, StoreError>> {
        Box::pin(async move {
            if charges.is_empty() {
                return Ok(Reservation::Reserved);
            }
            let mut invocation = self.reserve.prepare_invoke();
            for charge in charges {
                let ttl_ms = charge
                    .expires_at_ms
                    .map_or(0, |at| at.saturating_sub(now_ms).max(1));
                invocation
                    .key(self.key(&charge.scope, charge.window_start_ms))
                    .arg(charge.limit)
                    .arg(charge.amount)
                    .arg(ttl_ms);
            }
            let mut conn = self.conn.clone();
            let (status, value): (i64, i64) =
                deadline(self.timeout, invocation.invoke_async(&mut conn)).await?;
            match (status, usize::try_from(status), u64::try_from(value)) {
                (0, _, _) => Ok(Reservation::Reserved),
                (_, Ok(i), Ok(used)) if (1..=charges.len()).contains(&i) => {
                    Ok(Reservation::Exhausted { index: i - 1, used })
                }
                (-1, _, _) => Err(StoreError::Invalid(format!(
                    "budget record {value} is not a number"
                ))),
                _ => Err(StoreError::Invalid(format!(
                    "unexpected budget script reply {{{status}, {value}}}"
                ))),
            }
        })
    }
}

impl fmt::Debug for RedisBudgetStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBudgetStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Stores a revocation list unless it is dated more than ARGV[3] ms ahead
/// of the Redis server's clock (reply `{-1, now}`) or the list held is as
/// new or newer (reply `{0, held}`, as stored); a held list itself dated beyond the
/// bound is replaced. Reply `{1, 0}` when stored. Timestamps are compared
/// as Lua numbers (exact below 2^53 ms, far beyond any real date; larger
/// values are refused as future-dated).
const PUBLISH: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local issued = tonumber(ARGV[1])
local limit = tonumber(ARGV[3])
if issued == nil or issued > now + limit then
  return {-1, now}
end
local current = redis.call('HGET', KEYS[1], 'issued_at_ms')
if current then
  local held = tonumber(current)
  if held ~= nil and held >= issued and held <= now + limit then
    return {0, current}
  end
end
redis.call('HSET', KEYS[1], 'issued_at_ms', ARGV[1], 'list', ARGV[2])
return {1, 0}
";

/// A [`RevocationStore`] in Redis: one hash `<prefix>:revocations` holding
/// the newest signed list.
#[derive(Clone)]
pub struct RedisRevocationStore {
    conn: ConnectionManager,
    key: String,
    timeout: Duration,
    max_clock_offset_ms: u64,
    publish: Arc<Script>,
}

impl RedisRevocationStore {
    /// Connects (fails if Redis is unreachable now).
    pub async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        Ok(RedisRevocationStore {
            conn: config.connect().await?,
            key: format!("{}:revocations", config.prefix),
            timeout: config.timeout,
            max_clock_offset_ms: u64::try_from(config.max_clock_offset.as_millis())
                .unwrap_or(u64::MAX),
            publish: Arc::new(Script::new(PUBLISH)),
        })
    }
}

impl RevocationStore for RedisRevocationStore {
    /// Publishes `list` in one atomic script. Refused
    /// ([`StoreError::Refused`]) when Redis holds a list as new or newer,
    /// or when `list` is dated more than the clock-offset bound
    /// ([`RedisConfig::max_clock_offset`]) ahead of the Redis server's
    /// clock. The signature is not checked here: every verifier checks it
    /// on install.
    fn publish<'a>(&'a self, list: &'a RevocationList) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let wire = list.serialize();
            let mut invocation = self.publish.key(&self.key);
            invocation
                .arg(list.issued_at_ms())
                .arg(wire)
                .arg(self.max_clock_offset_ms);
            let (status, value): (i64, redis::Value) =
                deadline(self.timeout, invocation.invoke_async(&mut conn)).await?;
            let issued = list.issued_at_ms();
            let value = match value {
                redis::Value::Int(n) => n.to_string(),
                redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                other => format!("{other:?}"),
            };
            match status {
                1 => Ok(()),
                0 => Err(StoreError::Refused(format!(
                    "Redis holds a revocation list issued at {value}, not older than this one ({issued})"
                ))),
                -1 => Err(StoreError::Refused(format!(
                    "revocation list issued at {issued} is dated more than {} ms after the Redis server's clock ({value})",
                    self.max_clock_offset_ms
                ))),
                other => Err(StoreError::Invalid(format!(
                    "unexpected publish script reply {other}"
                ))),
            }
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
