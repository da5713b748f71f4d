//! Deterministic demo data: the seed's Laptop (999.99, 50 in stock) and Mouse (29.99, 200)
//! as products 1 and 2, then generated products and reviews. The same counts always give
//! the same rows, so demos and benchmarks are reproducible.

use money::Money;
use storage::StoreError;

use crate::domain::{NewProduct, NewReview, ProductId, ProductName, Rating, Stock, UserId};
use crate::store::CatalogStore;

/// What a seed run inserted; zero when the catalog already had products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seeded {
    pub products: usize,
    pub reviews: usize,
}

const ADJECTIVES: [&str; 12] = [
    "Ergonomic",
    "Compact",
    "Wireless",
    "Rugged",
    "Silent",
    "Smart",
    "Portable",
    "Classic",
    "Premium",
    "Modular",
    "Solar",
    "Vintage",
];
const NOUNS: [&str; 12] = [
    "Keyboard", "Monitor", "Headset", "Webcam", "Charger", "Backpack", "Lamp", "Speaker", "Dock",
    "Tablet", "Router", "Chair",
];
const COMMENTS: [&str; 6] = [
    "Works as described.",
    "Great value for the price.",
    "Arrived quickly, well packed.",
    "Stopped working after a month.",
    "Better than I expected.",
    "",
];

/// Inserts `products` products (the first two being the seed's) and `reviews` reviews by
/// users `1..=users`, in one transaction. Does nothing if the catalog is not empty.
pub async fn seed(
    store: &CatalogStore,
    products: usize,
    reviews: usize,
    users: usize,
) -> Result<Seeded, StoreError> {
    if store.product_count().await? > 0 {
        return Ok(Seeded::default());
    }
    let mut rng = fastrand::Rng::with_seed(0xB41_6ADE);
    let mut tx = store.database().begin_write().await?;

    let mut inserted = Seeded::default();
    for i in 0..products {
        let new = match i {
            0 => fixed("Laptop", 99_999, 50)?,
            1 => fixed("Mouse", 2_999, 200)?,
            _ => {
                let name = format!(
                    "{} {} {}",
                    ADJECTIVES[rng.usize(..ADJECTIVES.len())],
                    NOUNS[rng.usize(..NOUNS.len())],
                    i + 1
                );
                fixed(&name, rng.i64(199..=250_000), rng.i64(0..=500))?
            }
        };
        store.insert_product_in(&mut tx, &new).await?;
        inserted.products += 1;
    }

    if products > 0 && users > 0 {
        for _ in 0..reviews {
            let product = ProductId(rng.i64(1..=products as i64));
            let comment = COMMENTS[rng.usize(..COMMENTS.len())];
            let new = NewReview {
                product_id: product,
                user_id: UserId(rng.i64(1..=users as i64)),
                // Skewed towards good reviews, like real shops.
                rating: Rating::parse([1, 2, 3, 4, 4, 5, 5, 5][rng.usize(..8)])
                    .map_err(|r| StoreError::Corrupt(r.into()))?,
                comment: crate::domain::Comment::parse(comment)
                    .map_err(|r| StoreError::Corrupt(r.into()))?,
            };
            store.insert_review_in(&mut tx, &new).await?;
            inserted.reviews += 1;
        }
    }
    tx.commit().await?;
    Ok(inserted)
}

fn fixed(name: &str, price_minor: i64, stock: i64) -> Result<NewProduct, StoreError> {
    Ok(NewProduct {
        name: ProductName::parse(name).map_err(|r| StoreError::Corrupt(r.into()))?,
        price: Money::from_minor(price_minor).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        stock: Stock::parse(stock).map_err(|r| StoreError::Corrupt(r.into()))?,
    })
}
