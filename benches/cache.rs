//! How fast the blob store indexes itself at start: 100,000 stored blobs are read back (names,
//! sizes, file times, LRU order) by `BlobStore::open`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mirrorgate::cache::blobs::BlobStore;
use mirrorgate::cache::stats::CacheStats;

const BLOBS: usize = 100_000;

fn index_at_start(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let blobs = dir.path().join("blobs");
    let store_dir = blobs.join("sha256");
    std::fs::create_dir_all(&store_dir).expect("create store");
    for n in 0..BLOBS {
        // Small files: the cost measured is the directory walk and the metadata, not the data.
        let hex = mirrorgate::proxy::verify::digest_of(
            mirrorgate::reference::Algorithm::Sha256,
            &n.to_le_bytes(),
        )[7..]
            .to_owned();
        std::fs::write(store_dir.join(hex), n.to_le_bytes()).expect("write blob");
    }
    let mut group = c.benchmark_group("blob_store");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("open_100k", |b| {
        b.iter(|| {
            let store = BlobStore::open(
                blobs.clone(),
                dir.path().join("tmp"),
                u64::MAX,
                0,
                Arc::new(CacheStats::default()),
            )
            .expect("open");
            assert_eq!(store.len(), BLOBS);
            black_box(store)
        })
    });
    group.finish();
}

criterion_group!(benches, index_at_start);
criterion_main!(benches);
