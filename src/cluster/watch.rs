//! The one watch loop behind every cluster cache: kube's watcher lists a resource cluster-wide,
//! then watches it, reconnecting with backoff, and each event goes to a [`Store`]. What a store
//! keeps of an object (a slim copy, a one-bit verdict) is the store's business.

use std::fmt::Debug;
use std::pin::pin;
use std::sync::Arc;

use futures::StreamExt as _;
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::lookup;

/// What a watch feeds. A (re)list arrives as `begin_relist`, any number of `relist_apply` and
/// `finish_relist`; the store buffers it and swaps it in whole at the end, so objects deleted
/// while the watch was down disappear and readers never see a half-listed cache. After that,
/// `apply` and `delete` change what readers see one object at a time.
pub(super) trait Store: Send + 'static {
    type Object;

    /// What readers get while the watch is down, for the warning (e.g. "the cache keeps
    /// serving what it has").
    const WHILE_DOWN: &'static str;

    /// A (re)list begins: start an empty buffer, dropping any left by a list that failed
    /// midway.
    fn begin_relist(&mut self);

    /// One listed object, into the buffer; readers do not see it yet.
    fn relist_apply(&mut self, object: Self::Object);

    /// The (re)list is complete: the buffer replaces what readers see. Returns how many
    /// objects readers now see, for the log.
    fn finish_relist(&mut self) -> usize;

    /// An object was added or modified.
    fn apply(&mut self, object: Self::Object);

    /// An object was deleted.
    fn delete(&mut self, object: Self::Object);
}

/// Lists and watches everything `api` reaches into `store`, in a background task whose abort
/// handle goes to `tasks`. `synced` becomes true at the end of the first list and stays true:
/// when the watch later fails, the store keeps serving while the watcher reconnects.
pub(super) fn spawn<S>(
    api: Api<S::Object>,
    cache: &'static str,
    store: S,
    synced: Arc<watch::Sender<bool>>,
    tasks: &mut Vec<AbortHandle>,
) where
    S: Store,
    S::Object: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    // Default config: paginated lists (500 per page, which bounds what a relist of a large
    // cluster holds at once), bookmarks on.
    let events = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut watch = Watch {
        cache,
        store,
        synced,
    };
    let task = tokio::spawn(async move {
        let mut events = pin!(events);
        while let Some(event) = events.next().await {
            watch.handle(event);
        }
    });
    tasks.push(task.abort_handle());
}

/// The watcher's state machine over one store: kept apart from the stream so that tests can
/// feed it events one at a time.
struct Watch<S> {
    cache: &'static str,
    store: S,
    synced: Arc<watch::Sender<bool>>,
}

impl<S: Store> Watch<S> {
    fn handle(&mut self, event: watcher::Result<watcher::Event<S::Object>>) {
        let cache = self.cache;
        match event {
            Ok(watcher::Event::Init) => self.store.begin_relist(),
            Ok(watcher::Event::InitApply(o)) => self.store.relist_apply(o),
            Ok(watcher::Event::InitDone) => {
                let objects = self.store.finish_relist();
                // Set after the swap: a reader woken by `synced` finds the listed objects.
                if !self.synced.send_replace(true) {
                    tracing::info!(cache, objects, "cache synced");
                } else {
                    tracing::debug!(cache, objects, "cache relisted");
                }
            }
            Ok(watcher::Event::Apply(o)) => self.store.apply(o),
            Ok(watcher::Event::Delete(o)) => self.store.delete(o),
            // The watcher retries on its own (with backoff): nothing to do but say so.
            Err(e) => tracing::warn!(
                cache,
                error = %lookup::describe_watch_error(&e),
                "watch failed; reconnecting with backoff ({})",
                S::WHILE_DOWN
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::*;
    use kube::runtime::watcher::{Error, Event};

    /// Names, with the buffered-relist discipline the trait asks for.
    #[derive(Default)]
    struct Names {
        visible: Arc<Mutex<BTreeSet<&'static str>>>,
        listing: BTreeSet<&'static str>,
    }

    impl Store for Names {
        type Object = &'static str;
        const WHILE_DOWN: &'static str = "the test keeps what it has";

        fn begin_relist(&mut self) {
            self.listing.clear();
        }
        fn relist_apply(&mut self, object: &'static str) {
            self.listing.insert(object);
        }
        fn finish_relist(&mut self) -> usize {
            let mut visible = self.visible.lock().unwrap_or_else(|p| p.into_inner());
            *visible = std::mem::take(&mut self.listing);
            visible.len()
        }
        fn apply(&mut self, object: &'static str) {
            self.visible
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(object);
        }
        fn delete(&mut self, object: &'static str) {
            self.visible
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(object);
        }
    }

    fn watch() -> (Watch<Names>, Arc<Mutex<BTreeSet<&'static str>>>) {
        let store = Names::default();
        let visible = store.visible.clone();
        let synced = Arc::new(watch::channel(false).0);
        let watch = Watch {
            cache: "names",
            store,
            synced,
        };
        (watch, visible)
    }

    fn seen(visible: &Mutex<BTreeSet<&'static str>>) -> Vec<&'static str> {
        visible
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn first_list_is_invisible_and_unsynced_until_init_done() {
        let (mut w, visible) = watch();
        w.handle(Ok(Event::Init));
        w.handle(Ok(Event::InitApply("a")));
        w.handle(Ok(Event::InitApply("b")));
        assert!(seen(&visible).is_empty());
        assert!(!*w.synced.borrow());

        w.handle(Ok(Event::InitDone));
        assert_eq!(seen(&visible), ["a", "b"]);
        assert!(*w.synced.borrow());
    }

    #[test]
    fn relist_swaps_in_whole_and_drops_objects_deleted_while_down() {
        let (mut w, visible) = watch();
        for e in [
            Event::Init,
            Event::InitApply("a"),
            Event::InitApply("b"),
            Event::InitDone,
        ] {
            w.handle(Ok(e));
        }
        w.handle(Err(Error::NoResourceVersion));
        w.handle(Ok(Event::Init));
        w.handle(Ok(Event::InitApply("c")));
        assert_eq!(seen(&visible), ["a", "b"], "served while relisting");
        assert!(*w.synced.borrow(), "stays synced while relisting");

        w.handle(Ok(Event::InitDone));
        assert_eq!(seen(&visible), ["c"]);
    }

    #[test]
    fn a_list_failed_midway_leaves_nothing_in_the_next_one() {
        let (mut w, visible) = watch();
        w.handle(Ok(Event::Init));
        w.handle(Ok(Event::InitApply("stale")));
        w.handle(Err(Error::NoResourceVersion));
        assert!(!*w.synced.borrow(), "an error is not a sync");
        w.handle(Ok(Event::Init));
        w.handle(Ok(Event::InitApply("a")));
        w.handle(Ok(Event::InitDone));
        assert_eq!(seen(&visible), ["a"]);
    }

    #[test]
    fn events_after_the_list_apply_one_at_a_time_and_survive_errors() {
        let (mut w, visible) = watch();
        w.handle(Ok(Event::Init));
        w.handle(Ok(Event::InitDone));
        assert!(*w.synced.borrow(), "an empty list is a sync");
        w.handle(Ok(Event::Apply("a")));
        w.handle(Ok(Event::Apply("b")));
        w.handle(Err(Error::NoResourceVersion));
        w.handle(Ok(Event::Delete("a")));
        assert_eq!(seen(&visible), ["b"]);
    }
}
