//! The repository, run against both backends: a fresh SQLite file and a fresh PostgreSQL
//! database per test.

use catalog::CatalogStore;
use catalog::domain::{NewProduct, NewReview, ProductId, ProductPatch};
use catalog::seed;
use storage::{Database, StoreError};

storage::backend_tests!(catalog::ALL_MIGRATIONS;
    creates_and_reads_products_exactly,
    pages_by_id_without_gaps_or_repeats,
    updates_check_the_version,
    deletes_remove_reviews_too,
    reviews_need_an_existing_product,
    seeding_is_deterministic_and_puts_laptop_and_mouse_first,
    the_database_refuses_what_the_domain_refuses,
    the_read_cache_never_hides_this_processs_own_writes,
    lists_show_every_write_whoever_made_it,
);

async fn creates_and_reads_products_exactly(db: &Database) {
    let store = CatalogStore::new(db.clone());
    let laptop = store
        .create_product(&NewProduct::parse("Laptop", 999.99, 50).unwrap())
        .await
        .unwrap();
    assert_eq!(laptop.price.minor(), 99_999);
    assert_eq!(laptop.version, 1);
    assert!(laptop.created_at > 0 && laptop.created_at == laptop.updated_at);
    let read = store.product(laptop.id).await.unwrap().unwrap();
    assert_eq!(*read, laptop);
    assert_eq!(read.price.to_decimal(), 999.99);
    assert!(store.product(ProductId(999_999)).await.unwrap().is_none());
}

async fn pages_by_id_without_gaps_or_repeats(db: &Database) {
    let store = CatalogStore::new(db.clone());
    for i in 0..23 {
        store
            .create_product(&NewProduct::parse(&format!("P{i}"), 1.0, i).unwrap())
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.products(after, 5).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        after = page.last().map(|p| p.id);
        seen.extend(page.into_iter().map(|p| p.id.0));
    }
    let expected: Vec<i64> = (1..=23).collect();
    assert_eq!(seen, expected);
}

async fn updates_check_the_version(db: &Database) {
    let store = CatalogStore::new(db.clone());
    let p = store
        .create_product(&NewProduct::parse("Mouse", 29.99, 200).unwrap())
        .await
        .unwrap();
    let patch = ProductPatch::parse(None, Some(24.99), None).unwrap();
    let updated = store.update_product(p.id, &patch, Some(1)).await.unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.price.minor(), 2_499);
    assert_eq!(updated.name.as_str(), "Mouse");
    assert_eq!(updated.stock.units(), 200);

    let stale = store
        .update_product(p.id, &patch, Some(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            StoreError::Stale {
                expected: 1,
                current: 2
            }
        ),
        "{stale:?}"
    );
    // Nothing changed by the refused update.
    assert_eq!(store.product(p.id).await.unwrap().unwrap().version, 2);

    let missing = store
        .update_product(ProductId(4242), &patch, None)
        .await
        .unwrap_err();
    assert!(matches!(missing, StoreError::NotFound(_)), "{missing:?}");
    // Without a version the update is unconditional.
    assert_eq!(
        store
            .update_product(p.id, &patch, None)
            .await
            .unwrap()
            .version,
        3
    );
}

async fn deletes_remove_reviews_too(db: &Database) {
    let store = CatalogStore::new(db.clone());
    let p = store
        .create_product(&NewProduct::parse("Lamp", 10.0, 1).unwrap())
        .await
        .unwrap();
    store
        .create_review(&NewReview::parse(p.id, 1, 5, Some("bright")).unwrap())
        .await
        .unwrap();
    assert!(store.delete_product(p.id).await.unwrap());
    assert!(!store.delete_product(p.id).await.unwrap());
    assert!(store.reviews(p.id, None, 10).await.unwrap().is_empty());
}

async fn reviews_need_an_existing_product(db: &Database) {
    let store = CatalogStore::new(db.clone());
    let err = store
        .create_review(&NewReview::parse(ProductId(77), 1, 4, None).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
    let p = store
        .create_product(&NewProduct::parse("Desk", 150.0, 3).unwrap())
        .await
        .unwrap();
    for rating in 1..=5 {
        store
            .create_review(&NewReview::parse(p.id, rating, rating, Some("ok")).unwrap())
            .await
            .unwrap();
    }
    let first = store.reviews(p.id, None, 3).await.unwrap();
    let rest = store
        .reviews(p.id, first.last().map(|r| r.id), 3)
        .await
        .unwrap();
    let ratings: Vec<u8> = first
        .iter()
        .chain(&rest)
        .map(|r| r.rating.stars())
        .collect();
    assert_eq!(ratings, [1, 2, 3, 4, 5]);
    assert_eq!(first[0].comment.as_ref().unwrap().as_str(), "ok");
}

async fn seeding_is_deterministic_and_puts_laptop_and_mouse_first(db: &Database) {
    let store = CatalogStore::new(db.clone());
    let seeded = seed::seed(&store, 40, 60, 10).await.unwrap();
    assert_eq!(seeded.products, 40);
    assert_eq!(seeded.reviews, 60);
    let laptop = store.product(ProductId(1)).await.unwrap().unwrap();
    assert_eq!(
        (
            laptop.name.as_str(),
            laptop.price.to_decimal(),
            laptop.stock.units()
        ),
        ("Laptop", 999.99, 50)
    );
    let mouse = store.product(ProductId(2)).await.unwrap().unwrap();
    assert_eq!(
        (
            mouse.name.as_str(),
            mouse.price.to_decimal(),
            mouse.stock.units()
        ),
        ("Mouse", 29.99, 200)
    );
    // A second run leaves a seeded catalog alone.
    assert_eq!(
        seed::seed(&store, 40, 60, 10).await.unwrap(),
        seed::Seeded::default()
    );
    assert_eq!(store.product_count().await.unwrap(), 40);
    // Same inputs, same data: product 17 is always the same.
    let p17 = store.product(ProductId(17)).await.unwrap().unwrap();
    let other = storage::testing::sqlite(catalog::ALL_MIGRATIONS).await;
    let other_store = CatalogStore::new(other.db.clone());
    seed::seed(&other_store, 40, 60, 10).await.unwrap();
    let q17 = other_store.product(ProductId(17)).await.unwrap().unwrap();
    assert_eq!(
        (p17.name.clone(), p17.price, p17.stock),
        (q17.name.clone(), q17.price, q17.stock)
    );
}

async fn the_database_refuses_what_the_domain_refuses(db: &Database) {
    // Defence in depth: even a raw insert cannot store a negative stock or price.
    let result = sqlx::query(
        "INSERT INTO products (name, price_minor, stock, version, created_at, updated_at) \
         VALUES ('Bad', -1, 5, 1, 0, 0)",
    )
    .execute(db.pool())
    .await;
    assert!(result.is_err());
    let result = sqlx::query(
        "INSERT INTO products (name, price_minor, stock, version, created_at, updated_at) \
         VALUES ('Bad', 1, -5, 1, 0, 0)",
    )
    .execute(db.pool())
    .await;
    assert!(result.is_err());
}

async fn the_read_cache_never_hides_this_processs_own_writes(db: &Database) {
    // A long ttl: only invalidation can make the second read see the change.
    let store =
        CatalogStore::with_read_cache(db.clone(), std::time::Duration::from_secs(3600), 100);
    let laptop = store
        .create_product(&NewProduct::parse("Laptop", 999.99, 50).unwrap())
        .await
        .unwrap();
    assert_eq!(store.product(laptop.id).await.unwrap().unwrap().version, 1);

    let patch = ProductPatch::parse(None, None, Some(7)).unwrap();
    store.update_product(laptop.id, &patch, None).await.unwrap();
    let read = store.product(laptop.id).await.unwrap().unwrap();
    assert_eq!((read.version, read.stock.units()), (2, 7));

    // A refused write (stale version) still drops the entry: someone else changed it.
    let other = CatalogStore::new(db.clone());
    other.update_product(laptop.id, &patch, None).await.unwrap();
    assert_eq!(
        store.product(laptop.id).await.unwrap().unwrap().version,
        2,
        "cached"
    );
    // What If-Match compares with comes from the database, whatever the cache holds.
    let fresh = store.product_fresh(laptop.id).await.unwrap().unwrap();
    assert_eq!(fresh.version, 3);
    assert_eq!(
        store.product(laptop.id).await.unwrap().unwrap().version,
        3,
        "refreshed"
    );
    other.update_product(laptop.id, &patch, None).await.unwrap();
    let refused = store.update_product(laptop.id, &patch, Some(2)).await;
    assert!(
        matches!(refused, Err(StoreError::Stale { .. })),
        "{refused:?}"
    );
    assert_eq!(store.product(laptop.id).await.unwrap().unwrap().version, 4);

    assert!(store.delete_product(laptop.id).await.unwrap());
    assert!(store.product(laptop.id).await.unwrap().is_none());
}

/// Lists keep the products they read and reuse them while a row's version is unchanged
/// (`store::interned`); a write from anywhere (this store, another store on the database,
/// a raw statement that bumps the version as every write does) is listed at once.
async fn lists_show_every_write_whoever_made_it(db: &Database) {
    let store =
        CatalogStore::with_read_cache(db.clone(), std::time::Duration::from_secs(3600), 100);
    for name in ["A", "B", "C", "D"] {
        store
            .create_product(&NewProduct::parse(name, 1.0, 1).unwrap())
            .await
            .unwrap();
    }
    let listed = |store: CatalogStore| async move {
        store
            .products(None, 10)
            .await
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p.id.0,
                    p.name.as_str().to_owned(),
                    p.stock.units(),
                    p.version,
                )
            })
            .collect::<Vec<_>>()
    };
    let first = listed(store.clone()).await;
    assert_eq!(first.len(), 4);
    // Read again unchanged: the same values (on SQLite, the very values kept).
    let before = store.products(None, 10).await.unwrap();
    let again = store.products(None, 10).await.unwrap();
    assert_eq!(again, before);
    if db.readers().is_some() {
        assert!(
            again
                .iter()
                .zip(&before)
                .all(|(a, b)| std::sync::Arc::ptr_eq(a, b))
        );
    }

    let patch = ProductPatch::parse(Some("B2"), None, None).unwrap();
    store
        .update_product(ProductId(2), &patch, None)
        .await
        .unwrap();
    let other = CatalogStore::new(db.clone());
    let patch = ProductPatch::parse(None, None, Some(9)).unwrap();
    other
        .update_product(ProductId(3), &patch, None)
        .await
        .unwrap();
    sqlx::query("UPDATE products SET name = 'D2', version = version + 1 WHERE id = 4")
        .execute(db.pool())
        .await
        .unwrap();
    assert!(other.delete_product(ProductId(1)).await.unwrap());

    assert_eq!(
        listed(store.clone()).await,
        vec![
            (2, "B2".to_owned(), 1, 2),
            (3, "C".to_owned(), 9, 2),
            (4, "D2".to_owned(), 1, 2),
        ]
    );
    // Pages that start between kept products, and a limit that ends among them.
    let page = store.products(Some(ProductId(2)), 1).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!((page[0].id.0, page[0].stock.units()), (3, 9));

    // A row that no longer validates is refused, whatever was kept for the product.
    sqlx::query("UPDATE products SET name = '   ', version = version + 1 WHERE id = 3")
        .execute(db.pool())
        .await
        .unwrap();
    let refused = store.products(None, 10).await;
    assert!(
        matches!(refused, Err(StoreError::Corrupt(_))),
        "{refused:?}"
    );
}
