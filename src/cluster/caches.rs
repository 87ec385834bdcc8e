//! Cluster-wide, metadata-only caches of ServiceAccounts and Namespaces, fed by the shared watch
//! loop (list, then watch, reconnecting with backoff). Each object is cut down to what the contract
//! reads — its name, the annotations under our prefixes and, for Namespaces, the labels — as it
//! arrives, so 10,000 ServiceAccounts cost a few megabytes rather than a full `ObjectMeta` each.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PartialObjectMeta};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::lookup;
use super::watch::Store;
use crate::contract::Denial;

/// Annotation prefixes the contract reads on a ServiceAccount or Namespace; everything else
/// (notably `kubectl.kubernetes.io/last-applied-configuration`) is dropped on arrival.
const KEPT_ANNOTATION_PREFIXES: [&str; 2] = ["sbmesh.io/", "azure.workload.identity/"];

pub(super) const SERVICE_ACCOUNTS: &str = "serviceaccounts";
pub(super) const NAMESPACES: &str = "namespaces";

/// The slice of a ServiceAccount or Namespace that the contract reads.
#[derive(Debug, Clone, Default)]
pub(super) struct Meta {
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

pub(super) struct Caches {
    client: Client,
    service_accounts: Cache,
    namespaces: Cache,
}

impl Caches {
    pub fn start(client: Client, tasks: &mut Vec<AbortHandle>) -> Self {
        let service_accounts =
            Cache::start::<ServiceAccount>(client.clone(), SERVICE_ACCOUNTS, false, tasks);
        let namespaces = Cache::start::<Namespace>(client.clone(), NAMESPACES, true, tasks);
        Self {
            client,
            service_accounts,
            namespaces,
        }
    }

    pub fn states(&self) -> [(&'static str, bool); 2] {
        [
            (SERVICE_ACCOUNTS, self.service_accounts.synced()),
            (NAMESPACES, self.namespaces.synced()),
        ]
    }

    pub fn objects(&self) -> [(&'static str, usize); 2] {
        [
            (SERVICE_ACCOUNTS, self.service_accounts.len()),
            (NAMESPACES, self.namespaces.len()),
        ]
    }

    /// The ServiceAccount's annotations: cache, else one GET.
    pub async fn service_account(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<Meta, Denial> {
        if let Some(meta) = self.service_accounts.get(namespace, name) {
            return Ok(meta);
        }
        let api: Api<PartialObjectMeta<ServiceAccount>> =
            Api::namespaced(self.client.clone(), namespace);
        let what = lookup::What::ServiceAccount { namespace, name };
        let sa = lookup::get(&api, name, timeout, &what).await?;
        Ok(Slim::of(&sa.metadata, false).to_meta())
    }

    /// The Namespace's annotations and labels: cache, else one GET.
    pub async fn namespace(&self, name: &str, timeout: Duration) -> Result<Meta, Denial> {
        if let Some(meta) = self.namespaces.get("", name) {
            return Ok(meta);
        }
        let api: Api<PartialObjectMeta<Namespace>> = Api::all(self.client.clone());
        let what = lookup::What::Namespace { name };
        let ns = lookup::get(&api, name, timeout, &what).await?;
        Ok(Slim::of(&ns.metadata, true).to_meta())
    }
}

type Pairs = Box<[(Box<str>, Box<str>)]>;

/// What is kept of one object: boxed slices, no spare capacity, nothing the contract ignores.
#[derive(Debug, Default)]
struct Slim {
    annotations: Pairs,
    labels: Pairs,
}

impl Slim {
    fn of(meta: &ObjectMeta, keep_labels: bool) -> Slim {
        let pairs = |m: &BTreeMap<String, String>, keep: &dyn Fn(&str) -> bool| -> Pairs {
            m.iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                .collect()
        };
        Slim {
            annotations: meta
                .annotations
                .as_ref()
                .map(|a| {
                    pairs(a, &|k| {
                        KEPT_ANNOTATION_PREFIXES.iter().any(|p| k.starts_with(p))
                    })
                })
                .unwrap_or_default(),
            labels: meta
                .labels
                .as_ref()
                .filter(|_| keep_labels)
                .map(|l| pairs(l, &|_| true))
                .unwrap_or_default(),
        }
    }

    fn to_meta(&self) -> Meta {
        let map = |p: &Pairs| {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Meta {
            annotations: map(&self.annotations),
            labels: map(&self.labels),
        }
    }
}

/// Objects by namespace ("" for cluster-scoped ones), then name.
type Objects = HashMap<Box<str>, HashMap<Box<str>, Slim>>;

/// One resource's cache and whether it has completed its first list.
struct Cache {
    objects: Arc<RwLock<Objects>>,
    synced: Arc<watch::Sender<bool>>,
}

impl Cache {
    /// Lists and watches `K` cluster-wide, metadata only, in a background task that reconnects
    /// with backoff and keeps serving what it has meanwhile.
    fn start<K>(
        client: Client,
        cache: &'static str,
        keep_labels: bool,
        tasks: &mut Vec<AbortHandle>,
    ) -> Cache
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let objects: Arc<RwLock<Objects>> = Arc::default();
        let synced = Arc::new(watch::channel(false).0);
        let store = Feed::<K> {
            objects: objects.clone(),
            listing: None,
            keep_labels,
            kind: PhantomData,
        };
        super::watch::spawn(Api::all(client), cache, store, synced.clone(), tasks);
        Cache { objects, synced }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Meta> {
        read(&self.objects)
            .get(namespace)?
            .get(name)
            .map(Slim::to_meta)
    }

    fn synced(&self) -> bool {
        *self.synced.borrow()
    }

    fn len(&self) -> usize {
        count(&read(&self.objects))
    }
}

/// The watch's side of one [`Cache`]: slims each object as it arrives.
struct Feed<K> {
    objects: Arc<RwLock<Objects>>,
    /// The (re)list in progress, swapped in whole at its end.
    listing: Option<Objects>,
    keep_labels: bool,
    kind: PhantomData<fn() -> K>,
}

impl<K: Send + 'static> Store for Feed<K> {
    type Object = PartialObjectMeta<K>;
    const WHILE_DOWN: &'static str = "the cache keeps serving what it has";

    fn begin_relist(&mut self) {
        self.listing = Some(Objects::new());
    }

    fn relist_apply(&mut self, o: PartialObjectMeta<K>) {
        let listing = self.listing.get_or_insert_with(Objects::new);
        insert(listing, &o.metadata, self.keep_labels);
    }

    fn finish_relist(&mut self) -> usize {
        let mut listed = self.listing.take().unwrap_or_default();
        // The list grew these maps one insert at a time; they are read-mostly from now on.
        listed.values_mut().for_each(HashMap::shrink_to_fit);
        listed.shrink_to_fit();
        let n = count(&listed);
        *write(&self.objects) = listed;
        n
    }

    fn apply(&mut self, o: PartialObjectMeta<K>) {
        insert(&mut write(&self.objects), &o.metadata, self.keep_labels);
    }

    fn delete(&mut self, o: PartialObjectMeta<K>) {
        remove(&mut write(&self.objects), &o.metadata);
    }
}

fn insert(objects: &mut Objects, meta: &ObjectMeta, keep_labels: bool) {
    let (Some(name), namespace) = (
        meta.name.as_deref(),
        meta.namespace.as_deref().unwrap_or(""),
    ) else {
        return;
    };
    let slim = Slim::of(meta, keep_labels);
    match objects.get_mut(namespace) {
        Some(names) => {
            names.insert(name.into(), slim);
        }
        None => {
            objects.insert(namespace.into(), HashMap::from([(name.into(), slim)]));
        }
    }
}

fn remove(objects: &mut Objects, meta: &ObjectMeta) {
    let namespace = meta.namespace.as_deref().unwrap_or("");
    if let (Some(name), Some(names)) = (meta.name.as_deref(), objects.get_mut(namespace)) {
        names.remove(name);
        if names.is_empty() {
            objects.remove(namespace);
        }
    }
}

fn count(objects: &Objects) -> usize {
    objects.values().map(HashMap::len).sum()
}

// A panic while holding the lock cannot leave the map half-updated in a way that matters
// (each write is one insert, remove or swap), so a poisoned lock is used as is.
fn read(lock: &RwLock<Objects>) -> std::sync::RwLockReadGuard<'_, Objects> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write(lock: &RwLock<Objects>) -> std::sync::RwLockWriteGuard<'_, Objects> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use kube::core::PartialObjectMetaExt as _;

    use super::*;

    fn meta(namespace: Option<&str>, name: &str, annotations: &[(&str, &str)]) -> ObjectMeta {
        let pairs = |p: &[(&str, &str)]| -> BTreeMap<String, String> {
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        ObjectMeta {
            name: Some(name.into()),
            namespace: namespace.map(Into::into),
            annotations: Some(pairs(annotations)),
            labels: Some(pairs(&[("team", "payments")])),
            ..ObjectMeta::default()
        }
    }

    fn feed<K>(keep_labels: bool) -> (Feed<K>, Cache) {
        let objects: Arc<RwLock<Objects>> = Arc::default();
        let feed = Feed {
            objects: objects.clone(),
            listing: None,
            keep_labels,
            kind: PhantomData,
        };
        let cache = Cache {
            objects,
            synced: Arc::new(watch::channel(false).0),
        };
        (feed, cache)
    }

    #[test]
    fn relist_is_buffered_then_replaces_the_cache() {
        let (mut feed, cache) = feed::<ServiceAccount>(false);
        feed.apply(meta(Some("a"), "gone", &[]).into_response_partial());
        feed.begin_relist();
        feed.relist_apply(meta(Some("a"), "orders", &[]).into_response_partial());
        feed.relist_apply(meta(Some("b"), "billing", &[]).into_response_partial());
        assert!(cache.get("a", "gone").is_some(), "served while relisting");
        assert!(
            cache.get("a", "orders").is_none(),
            "not before the list ends"
        );

        assert_eq!(feed.finish_relist(), 2);
        assert!(
            cache.get("a", "gone").is_none(),
            "deleted while the watch was down"
        );
        assert!(cache.get("a", "orders").is_some() && cache.get("b", "billing").is_some());

        feed.delete(meta(Some("b"), "billing", &[]).into_response_partial());
        assert_eq!(cache.len(), 1);
        assert!(
            read(&cache.objects).get("b").is_none(),
            "empty namespaces go"
        );
    }

    #[test]
    fn only_our_annotations_and_namespace_labels_are_kept() {
        let annotations = [
            ("sbmesh.io/queues", "orders"),
            ("azure.workload.identity/client-id", "id"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        ];
        let (mut sas, sa_cache) = feed::<ServiceAccount>(false);
        sas.apply(meta(Some("a"), "orders", &annotations).into_response_partial());
        let sa = sa_cache.get("a", "orders").unwrap_or_default();
        assert_eq!(
            sa.annotations.keys().collect::<Vec<_>>(),
            ["azure.workload.identity/client-id", "sbmesh.io/queues"]
        );
        assert!(sa.labels.is_empty());

        let (mut nss, ns_cache) = feed::<Namespace>(true);
        nss.apply(meta(None, "a", &annotations).into_response_partial());
        let ns = ns_cache.get("", "a").unwrap_or_default();
        assert_eq!(ns.annotations.len(), 2);
        assert_eq!(ns.labels.get("team").map(String::as_str), Some("payments"));
    }
}
