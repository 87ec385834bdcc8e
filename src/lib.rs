//! sbmesh: a mutating admission webhook that gives pods Azure Service Bus access with workload
//! identity through an Istio mesh.
//!
//! The pure core, with one entry point ([`core::admit`]):
//! - [`pod`]: the read-only view of a pod over its raw JSON (the one way paths are read);
//! - [`contract`]: annotations and their resolution (pod → ServiceAccount → Namespace →
//!   config) into a typed plan;
//! - [`mutate`]: the plan applied to the pod as RFC 6902 operations;
//! - [`denial`]: why a pod is refused, and the one place its message is written.
//!
//! The shells around it: [`admission`] (AdmissionReview in and out), [`server`] (HTTPS,
//! metrics, drain), [`cluster`] (ServiceAccount, Namespace and webhook-configuration caches),
//! [`inject`] (offline manifests), [`config`] (settings) and [`certs`].

pub mod admission;
pub mod certs;
pub mod cluster;
pub mod config;
pub mod contract;
pub mod core;
pub mod denial;
pub mod inject;
pub mod mutate;
pub mod onboard;
pub mod pod;
pub mod selfmanaged;
pub mod server;
