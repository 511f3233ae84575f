//! One fetch per key: the first request for a key starts the work in its own task, later requests
//! for the same key follow that work instead of starting another.
//!
//! Principal type: [`Flights`]. A flight publishes its state on a `watch` channel: manifests
//! publish only their result ([`Flights::run`]); blob downloads also publish their progress
//! ([`Flights::join_or_start`]), so that every client streams from the one spool as it grows.
//!
//! The work runs in a spawned task, so it completes (and fills the cache) even if the request that
//! started it goes away; followers are never left hanging, since a task that dies without a result
//! drops its sender and every follower sees that.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Where a flight's work publishes its progress; the flight publishes the final state itself.
pub type Progress<S> = Arc<watch::Sender<S>>;

/// Fetches under way, by key.
pub struct Flights<S> {
    running: Arc<Mutex<HashMap<String, Flight<S>>>>,
}

struct Flight<S> {
    state: watch::Receiver<S>,
    /// Who started it (for blobs: the logical repository).
    origin: String,
}

impl<S> Default for Flights<S> {
    fn default() -> Self {
        Flights {
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<S: Send + Sync + 'static> Flights<S> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Flight<S>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state of the flight for `key`, and who started it, if one is under way.
    pub fn get(&self, key: &str) -> Option<(watch::Receiver<S>, String)> {
        self.lock()
            .get(key)
            .map(|flight| (flight.state.clone(), flight.origin.clone()))
    }

    /// Whether a flight for `key` is under way.
    pub fn contains(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// The flights under way: key and origin.
    pub fn list(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(key, flight)| (key.clone(), flight.origin.clone()))
            .collect()
    }

    /// Follows the flight for `key` (returning who started it), or starts `work` in a task, in
    /// state `initial` (returning `None`). The work publishes its progress through the
    /// [`Progress`] it is given; the state it returns is published last, once the flight has
    /// left the map (so a request that sees it finds the cache filled, and a finished flight is
    /// never joined). The sender is dropped after that: a follower waiting for changes sees the
    /// end. The origin of a joined flight is returned because its outcome is the origin's: a
    /// follower started elsewhere decides whether that outcome is valid for it too.
    pub fn join_or_start<F>(
        &self,
        key: &str,
        origin: &str,
        initial: S,
        work: impl FnOnce(Progress<S>) -> F,
    ) -> (watch::Receiver<S>, Option<String>)
    where
        F: Future<Output = S> + Send + 'static,
    {
        let mut running = self.lock();
        if let Some(flight) = running.get(key) {
            return (flight.state.clone(), Some(flight.origin.clone()));
        }
        let (sender, receiver) = watch::channel(initial);
        running.insert(
            key.to_owned(),
            Flight {
                state: receiver.clone(),
                origin: origin.to_owned(),
            },
        );
        let sender = Arc::new(sender);
        let future = work(sender.clone());
        let map = self.running.clone();
        let key = key.to_owned();
        tokio::spawn(async move {
            let value = future.await;
            map.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            sender.send_replace(value);
        });
        (receiver, None)
    }
}

impl<V: Clone + Send + Sync + 'static> Flights<Option<V>> {
    /// The result of the fetch for `key`: joins one under way (returning `joined = true`), or
    /// starts `work` in a task. `None` if the task ended without a result.
    pub async fn run<F>(&self, key: &str, work: impl FnOnce() -> F) -> (Option<V>, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (mut receiver, joined) = self.join_or_start(key, key, None, |_| {
            let future = work();
            async move { Some(future.await) }
        });
        let joined = joined.is_some();
        loop {
            if let Some(value) = receiver.borrow_and_update().clone() {
                return (Some(value), joined);
            }
            if receiver.changed().await.is_err() {
                return (receiver.borrow().clone(), joined);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_requests_share_one_fetch() {
        let flights = Arc::new(Flights::<Option<u32>>::default());
        let started = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let flights = flights.clone();
                let started = started.clone();
                tokio::spawn(async move {
                    flights
                        .run("key", || async move {
                            started.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            7
                        })
                        .await
                })
            })
            .collect();
        let mut values = Vec::new();
        for task in tasks {
            values.push(task.await.unwrap().0);
        }
        assert_eq!(
            (started.load(Ordering::SeqCst), values),
            (1, vec![Some(7); 8])
        );
    }

    #[tokio::test]
    async fn a_follower_sees_the_progress_then_the_final_state_once_the_flight_left() {
        let flights = Flights::<u32>::default();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (mut first, first_joined) =
            flights.join_or_start("key", "repo-a", 0, |progress| async move {
                progress.send_replace(1);
                let _ = wait.await;
                2
            });
        first.wait_for(|state| *state == 1).await.unwrap();
        let (mut follower, origin) = flights.join_or_start("key", "repo-b", 0, |_| async { 99 });
        let seen_joining = *follower.borrow_and_update();
        go.send(()).unwrap();
        // The sender is dropped after the final state: the end is observable.
        while follower.changed().await.is_ok() {}
        let last = *follower.borrow();
        assert_eq!(
            (
                first_joined,
                seen_joining,
                origin,
                last,
                flights.contains("key")
            ),
            (None, 1, Some("repo-a".to_owned()), 2, false)
        );
    }

    #[tokio::test]
    async fn a_finished_fetch_is_not_reused() {
        let flights = Flights::<Option<u32>>::default();
        let first = flights.run("key", || async { 1 }).await.0;
        let second = flights.run("key", || async { 2 }).await.0;
        assert_eq!((first, second), (Some(1), Some(2)));
    }
}
