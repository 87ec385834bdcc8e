//! The mutation core end to end, in process: AdmissionReview bytes → parse → plan → mutate →
//! response JSON, on the bodies in `support` (per byte, so growth with pod size is visible),
//! and the stages alone on the typical pod: parse, `contract::plan`, `mutate::mutate`,
//! `core::admit` (plan and mutate) and the response encoding.
//!
//! `cargo bench --bench mutation` (about a minute); `-- --quick` for a rough pass.

mod support;

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sbmesh::admission;
use sbmesh::contract::{self, Context, Decision, IdentityMode};
use sbmesh::core;
use sbmesh::mutate;

fn end_to_end(c: &mut Criterion) {
    let defaults = support::defaults();
    let ctx = Context::offline(IdentityMode::Inject);
    let mut group = c.benchmark_group("review");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    for body in support::all() {
        // A body that does not give a patch would measure the wrong path.
        let response = admission::review(&body.bytes, &ctx, &defaults).expect("a valid review");
        assert_eq!(
            response.outcome,
            admission::Outcome::Patched,
            "{}: {:?}",
            body.name,
            response.status
        );
        group.throughput(Throughput::Bytes(body.bytes.len() as u64));
        group.bench_function(body.name, |b| {
            b.iter(|| {
                let r = admission::review(black_box(&body.bytes), &ctx, &defaults)
                    .expect("a valid review");
                r.to_review_json()
            })
        });
    }
    group.finish();
}

fn stages(c: &mut Criterion) {
    let defaults = support::defaults();
    let ctx = Context::offline(IdentityMode::Inject);
    let body = support::typical();
    let request = admission::parse(&body).expect("a valid review");
    let pod = request.object.get().expect("a pod");
    let plan = match contract::plan(pod, "payments", &ctx, &defaults).expect("plan") {
        Decision::Inject(p) => p,
        Decision::Skip => panic!("the typical pod opts in"),
    };
    let response = admission::review(&body, &ctx, &defaults).expect("a valid review");

    let mut group = c.benchmark_group("typical");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse", |b| {
        b.iter(|| admission::parse(black_box(&body)).is_ok())
    });
    group.bench_function("plan", |b| {
        b.iter(|| contract::plan(black_box(pod), "payments", &ctx, &defaults))
    });
    group.bench_function("mutate", |b| {
        b.iter(|| mutate::mutate(black_box(pod), &plan))
    });
    group.bench_function("admit", |b| {
        b.iter(|| core::admit(black_box(pod), "payments", &ctx, &defaults))
    });
    group.bench_function("encode_response", |b| {
        b.iter(|| black_box(&response).to_review_json())
    });
    group.finish();
}

criterion_group!(benches, end_to_end, stages);
criterion_main!(benches);
