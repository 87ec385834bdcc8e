//! sbmesh: a mutating admission webhook that gives pods Azure Service Bus access with workload
//! identity through an Istio mesh. The mutation core (`contract`, `mutate`) is pure; the
//! server, the cluster caches and the offline injector are shells around it.

pub mod admission;
pub mod certs;
pub mod cluster;
pub mod config;
pub mod contract;
pub mod inject;
pub mod mutate;
pub mod server;
