//! The edge snapshot, kept per API instance for a short max age.
//!
//! Every gateway pulls `GET /v1/edge/snapshot` every `snapshot.intervalSeconds` (15 s by
//! default), and building it reads the budget block list, every tenant page, each plan,
//! each tenant's keys and the day and month usage of each tenant with a quota: ten
//! DynamoDB calls (seven `Query`) for one tenant with a quota (`cargo xtask bench api`),
//! about six more for each further one. All gateways get the same reply, so an instance
//! keeps the body it built and serves it again while it is younger than the max age,
//! instead of rebuilding it for each of them.
//!
//! - **Byte-identical.** The cached body is the text the build serialised, served with the
//!   same headers, so a hit cannot be told from the uncached reply of the moment it was
//!   built. `generatedAt` stays the build time on purpose: it is the `taken_at` of every
//!   quota reading in it, and the filter's quota counters ignore a snapshot that is not
//!   newer than the one they hold (`QuotaCounter::apply_snapshot`), so serving the same
//!   body twice leaves the gateway's local count since that snapshot intact. Stamping a
//!   fresh time on an old body would make it reset that count to usage that is older
//!   than it claims. There are no `ETag` or `Cache-Control` headers to keep in step.
//! - **One entry.** The reply depends on neither the caller (every admin key gets the
//!   same snapshot; others never reach the handler) nor the query (the route refuses any
//!   parameter), only on the data and on "now": the day and month windows the quotas
//!   are counted in, the month of the budget blocks, the plan version in force. The entry
//!   is therefore dropped when the UTC day changes (which also covers the month), and
//!   within a day the max age bounds how late a change shows.
//! - **Single flight.** The entry sits behind an async mutex held across a rebuild, so
//!   requests arriving during a rebuild wait for it and are served its result instead of
//!   each building their own. (A Lambda instance takes one request at a time; this
//!   matters where the API serves requests concurrently, such as in-process servers.)
//! - **Errors are not kept.** A failed build returns its error and leaves nothing behind:
//!   the next request builds again.
//! - **Age** is measured on the monotonic clock from the start of the build, since the
//!   data it read is that old.
//!
//! The max age is `TOLLGATE_SNAPSHOT_MAX_AGE_SECONDS` in the Lambda (see `main.rs`);
//! [`crate::App::new`] starts with the cache off.

use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tollgate_core::window::Window;

use crate::error::ApiError;

/// The max age the SAM template deploys with.
///
/// Why 15 s, the gateways' default poll interval: an instance then builds at most one
/// snapshot per poll interval whatever the size of the fleet (10 gateways polling every
/// 15 s cost one build instead of ten), which takes the polling from 17 % to under 10 %
/// of the headline cost in `docs/cost.md`. What it delays: the budget block list, the
/// suspensions, the active keys and the quota use reach a gateway up to 30 s after they
/// change instead of 15 s. Each is already later than that by construction: quota use
/// arrives through the edge flush (10 s) and the ingest batching window (90 s), and the
/// budget job writes blocks every 5 minutes. It stays far below the gateways'
/// `stale.maxAgeSeconds` (300 s by default; whoever lowers it should keep it above the
/// poll interval plus this). Where a revocation must bite sooner, lower it: 5 s costs
/// about $0.0014 more per million metered requests at the headline.
pub const RECOMMENDED_SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(15);

/// The longest max age accepted: the gateways' default `stale.maxAgeSeconds`, beyond
/// which a cached snapshot would be stale at the edge before it is even served.
pub const MAX_SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(300);

/// The built body of `GET /v1/edge/snapshot`, kept for at most `max_age` within one UTC
/// day. A max age of zero turns the cache off.
pub struct SnapshotCache {
    max_age: Duration,
    entry: Mutex<Option<Entry>>,
}

struct Entry {
    body: String,
    /// When its build started.
    built: Instant,
    /// The UTC day it was built in.
    day: Window,
}

impl SnapshotCache {
    /// A cache keeping a body for `max_age`; zero builds every time.
    pub fn new(max_age: Duration) -> SnapshotCache {
        SnapshotCache {
            max_age,
            entry: Mutex::new(None),
        }
    }

    /// A cache that builds every time.
    pub fn off() -> SnapshotCache {
        SnapshotCache::new(Duration::ZERO)
    }

    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// The kept body if it was built in `day` less than the max age ago; else the body
    /// `build` makes, which is kept unless it failed. Callers arriving while a build runs
    /// wait for it.
    pub async fn get_or_build<F, Fut>(&self, day: Window, build: F) -> Result<String, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, ApiError>>,
    {
        if self.max_age.is_zero() {
            return build().await;
        }
        let mut entry = self.entry.lock().await;
        if let Some(kept) = entry
            .as_ref()
            .filter(|kept| kept.day == day && kept.built.elapsed() < self.max_age)
        {
            return Ok(kept.body.clone());
        }
        *entry = None;
        let built = Instant::now();
        let body = build().await?;
        *entry = Some(Entry {
            body: body.clone(),
            built,
            day,
        });
        Ok(body)
    }
}

impl fmt::Debug for SnapshotCache {
    /// The max age only: the body lists tenants and key digests, which stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotCache")
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use chrono::{TimeZone, Utc};
    use tollgate_core::window::Granularity;

    use super::*;

    fn day(d: u32) -> Window {
        let at = Utc.with_ymd_and_hms(2026, 11, d, 12, 0, 0).single();
        Window::containing(Granularity::Day, at.unwrap_or_default())
    }

    /// Builds bodies `"1"`, `"2"`, … and counts the builds.
    struct Builder(AtomicU32);

    impl Builder {
        fn new() -> Builder {
            Builder(AtomicU32::new(0))
        }

        async fn build(&self) -> Result<String, ApiError> {
            Ok((self.0.fetch_add(1, Ordering::SeqCst) + 1).to_string())
        }

        fn builds(&self) -> u32 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_body_is_served_again_within_the_max_age_and_the_same_day() -> Result<(), ApiError> {
        let cache = SnapshotCache::new(Duration::from_secs(60));
        let builder = Builder::new();
        assert_eq!(cache.get_or_build(day(23), || builder.build()).await?, "1");
        assert_eq!(cache.get_or_build(day(23), || builder.build()).await?, "1");
        assert_eq!(builder.builds(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_new_utc_day_rebuilds_however_young_the_body() -> Result<(), ApiError> {
        let cache = SnapshotCache::new(Duration::from_secs(60));
        let builder = Builder::new();
        cache.get_or_build(day(23), || builder.build()).await?;
        assert_eq!(cache.get_or_build(day(24), || builder.build()).await?, "2");
        assert_eq!(builder.builds(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn an_expired_body_is_rebuilt() -> Result<(), ApiError> {
        let cache = SnapshotCache::new(Duration::from_millis(50));
        let builder = Builder::new();
        cache.get_or_build(day(23), || builder.build()).await?;
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(cache.get_or_build(day(23), || builder.build()).await?, "2");
        Ok(())
    }

    #[tokio::test]
    async fn a_max_age_of_zero_builds_every_time() -> Result<(), ApiError> {
        let cache = SnapshotCache::off();
        let builder = Builder::new();
        cache.get_or_build(day(23), || builder.build()).await?;
        assert_eq!(cache.get_or_build(day(23), || builder.build()).await?, "2");
        Ok(())
    }

    #[tokio::test]
    async fn a_failed_build_is_not_kept() -> Result<(), ApiError> {
        let cache = SnapshotCache::new(Duration::from_secs(60));
        let failed = cache
            .get_or_build(day(23), || async {
                Err(ApiError::internal(std::io::Error::other(
                    "the store is down",
                )))
            })
            .await;
        assert!(failed.is_err());
        let builder = Builder::new();
        assert_eq!(cache.get_or_build(day(23), || builder.build()).await?, "1");
        Ok(())
    }

    #[tokio::test]
    async fn requests_during_a_build_wait_for_it_instead_of_building() -> Result<(), ApiError> {
        let cache = SnapshotCache::new(Duration::from_secs(60));
        let builder = Builder::new();
        let slow = || async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            builder.build().await
        };
        let (a, b, c) = tokio::join!(
            cache.get_or_build(day(23), slow),
            cache.get_or_build(day(23), slow),
            cache.get_or_build(day(23), slow),
        );
        assert_eq!((a?, b?, c?), ("1".into(), "1".into(), "1".into()));
        assert_eq!(builder.builds(), 1);
        Ok(())
    }
}
