//! One fetch per key: the first request for a key starts the work in its own task, later requests
//! for the same key wait for its result instead of starting another.
//!
//! The work runs in a spawned task, so it completes (and fills the cache) even if the request that
//! started it goes away; waiters are never left hanging, since a task that dies without a result
//! drops its sender and every waiter sees that.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Fetches under way, by key.
pub struct Flights<V> {
    running: Arc<Mutex<HashMap<String, watch::Receiver<Option<V>>>>>,
}

impl<V> Default for Flights<V> {
    fn default() -> Self {
        Flights {
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<V: Clone + Send + Sync + 'static> Flights<V> {
    /// The result of the fetch for `key`: joins one under way (returning `joined = true`), or
    /// starts `work` in a task. `None` if the task ended without a result.
    pub async fn run<F>(&self, key: &str, work: impl FnOnce() -> F) -> (Option<V>, bool)
    where
        F: Future<Output = V> + Send + 'static,
    {
        let (mut receiver, joined) = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            match running.get(key) {
                Some(receiver) => (receiver.clone(), true),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    running.insert(key.to_owned(), receiver.clone());
                    let future = work();
                    let running = self.running.clone();
                    let key = key.to_owned();
                    tokio::spawn(async move {
                        let value = future.await;
                        // Leave the map first: the work has stored its result by now, so a later
                        // request finds it in the cache, and a finished fetch is never joined.
                        running
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(&key);
                        sender.send_replace(Some(value));
                    });
                    (receiver, false)
                }
            }
        };
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
        let flights = Arc::new(Flights::<u32>::default());
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
    async fn a_finished_fetch_is_not_reused() {
        let flights = Flights::<u32>::default();
        let first = flights.run("key", || async { 1 }).await.0;
        let second = flights.run("key", || async { 2 }).await.0;
        assert_eq!((first, second), (Some(1), Some(2)));
    }
}
