//! Per-call overhead of the whole resilience stack on a healthy path (issue 5: goal
//! ≤ 1 µs): `Downstream::call` around an operation that succeeds at once, against the
//! same operation awaited bare. Run with `cargo bench -p resilience --bench overhead`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use problem::Problem;
use resilience::downstream::{Downstream, Policy};

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let downstream = Downstream::new("bench", Policy::default());
    let mut group = c.benchmark_group("healthy call");
    group.bench_function("bare", |b| {
        b.iter(|| {
            rt.block_on(async { black_box(Ok::<u64, Problem>(black_box(7))) })
                .unwrap()
        })
    });
    group.bench_function("through Downstream::call", |b| {
        b.iter(|| {
            rt.block_on(downstream.call(true, |_| async { Ok::<u64, Problem>(black_box(7)) }))
                .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);
