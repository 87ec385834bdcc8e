//! The core's one entry point. Every caller (the webhook, `sbmesh inject`, the tests, the fuzz
//! targets and the benchmarks) asks the same two questions here: which ServiceAccount does this
//! pod's configuration come from ([`service_account`]), and what is the answer for it given
//! what the cluster says ([`admit`]). Pure and synchronous: no I/O, no clock, no globals.

use crate::contract::{self, Context, Decision, Defaults, InjectionPlan};
use crate::denial::Denial;
use crate::mutate::{self, Mutation};
use crate::pod::Pod;

/// What the core answers for a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// The pod did not opt in: admit it unchanged.
    Skip,
    /// The pod opted in: the resolved plan and the mutation (whose patch may be empty when
    /// the pod already holds everything, as on re-admission).
    Patch {
        plan: Box<InjectionPlan>,
        mutation: Mutation,
    },
    Deny(Denial),
}

/// The ServiceAccount whose annotations (and whose Namespace's) the pod's parameters are read
/// from: `None` when the pod did not opt in, so that no lookup is made for it.
pub fn service_account<'p>(pod: &'p Pod<'_>) -> Result<Option<&'p str>, Denial> {
    Ok(contract::opted_in(pod)?.then(|| pod.service_account_name()))
}

/// Reads the contract off the pod and computes its patch. `namespace` is the namespace the pod
/// is created in (`request.namespace`); `ctx` is what the cluster says about its ServiceAccount
/// and Namespace.
pub fn admit(pod: &Pod, namespace: &str, ctx: &Context, defaults: &Defaults) -> Admission {
    match contract::plan(pod, namespace, ctx, defaults) {
        Ok(Decision::Skip) => Admission::Skip,
        Ok(Decision::Inject(plan)) => match mutate::mutate(pod, &plan) {
            Ok(mutation) => Admission::Patch { plan, mutation },
            Err(d) => Admission::Deny(d),
        },
        Err(d) => Admission::Deny(d),
    }
}

/// [`admit`] on a pod given as JSON text (the offline callers' form). Text that is not JSON is
/// a malformed pod.
pub fn admit_json(json: &str, namespace: &str, ctx: &Context, defaults: &Defaults) -> Admission {
    match Pod::parse(json) {
        Ok(pod) => admit(&pod, namespace, ctx, defaults),
        Err(e) => Admission::Deny(Denial::Internal(format!("the pod is not JSON: {e}"))),
    }
}
