//! Stock reservations on both backends: all or nothing, once per order id.

use catalog::CatalogStore;
use catalog::domain::{NewProduct, NewReservation, OrderId, ProductId, ReservationState};
use catalog::store::reservations::{self, ReserveError};
use storage::Database;

storage::backend_tests!(catalog::ALL_MIGRATIONS;
    reserving_takes_stock_once_per_order,
    a_line_that_cannot_be_met_takes_nothing,
    the_same_order_with_other_lines_is_refused,
    releasing_gives_stock_back_once,
    a_release_before_the_reserve_ends_the_order,
    concurrent_orders_never_oversell,
);

async fn products(db: &Database, stocks: &[i64]) -> CatalogStore {
    let store = CatalogStore::new(db.clone());
    for (i, stock) in stocks.iter().enumerate() {
        store
            .create_product(&NewProduct::parse(&format!("P{i}"), 1.0, *stock).unwrap())
            .await
            .unwrap();
    }
    store
}

async fn stock(store: &CatalogStore, id: i64) -> i64 {
    store
        .product(ProductId(id))
        .await
        .unwrap()
        .unwrap()
        .stock
        .units()
}

async fn reserving_takes_stock_once_per_order(db: &Database) {
    let store = products(db, &[50, 200]).await;
    let order = NewReservation::parse("ORD-12345", &[(1, 2), (2, 5)]).unwrap();
    let first = reservations::reserve(db, &order).await.unwrap();
    assert_eq!(first.state, ReservationState::Reserved);
    assert_eq!((stock(&store, 1).await, stock(&store, 2).await), (48, 195));
    // A retry (the worker crashed after the call) changes nothing.
    let again = reservations::reserve(db, &order).await.unwrap();
    assert_eq!(again, first);
    assert_eq!((stock(&store, 1).await, stock(&store, 2).await), (48, 195));
}

async fn a_line_that_cannot_be_met_takes_nothing(db: &Database) {
    let store = products(db, &[10, 3]).await;
    let order = NewReservation::parse("ORD-1", &[(1, 5), (2, 4)]).unwrap();
    let err = reservations::reserve(db, &order).await.unwrap_err();
    assert!(
        matches!(
            err,
            ReserveError::InsufficientStock {
                product_id: 2,
                requested: 4,
                available: 3
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        (stock(&store, 1).await, stock(&store, 2).await),
        (10, 3),
        "all or nothing"
    );
    let problem = problem::Problem::from(catalog::app::CatalogError::from(err));
    assert_eq!(problem.kind(), problem::Kind::InsufficientStock);
    let unknown = NewReservation::parse("ORD-2", &[(99, 1)]).unwrap();
    assert!(matches!(
        reservations::reserve(db, &unknown).await.unwrap_err(),
        ReserveError::UnknownProduct(99)
    ));
    // The failed order id is still free to use.
    let smaller = NewReservation::parse("ORD-1", &[(1, 5), (2, 3)]).unwrap();
    reservations::reserve(db, &smaller).await.unwrap();
    assert_eq!(stock(&store, 2).await, 0);
}

async fn the_same_order_with_other_lines_is_refused(db: &Database) {
    let store = products(db, &[10]).await;
    reservations::reserve(db, &NewReservation::parse("ORD-3", &[(1, 1)]).unwrap())
        .await
        .unwrap();
    let err = reservations::reserve(db, &NewReservation::parse("ORD-3", &[(1, 2)]).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, ReserveError::DifferentLines(_)), "{err:?}");
    assert_eq!(stock(&store, 1).await, 9);
}

async fn releasing_gives_stock_back_once(db: &Database) {
    let store = products(db, &[10]).await;
    let order = NewReservation::parse("ORD-4", &[(1, 4)]).unwrap();
    reservations::reserve(db, &order).await.unwrap();
    let id = OrderId::parse("ORD-4").unwrap();
    let released = reservations::release(db, &id).await.unwrap();
    assert_eq!(released.state, ReservationState::Released);
    assert_eq!(stock(&store, 1).await, 10);
    reservations::release(db, &id).await.unwrap();
    assert_eq!(
        stock(&store, 1).await,
        10,
        "a second release gives nothing back"
    );
    // A late retry of the reserve must not take the stock again.
    let late = reservations::reserve(db, &order).await.unwrap();
    assert_eq!(late.state, ReservationState::Released);
    assert_eq!(stock(&store, 1).await, 10);
}

async fn a_release_before_the_reserve_ends_the_order(db: &Database) {
    let store = products(db, &[10]).await;
    let id = OrderId::parse("ORD-5").unwrap();
    let released = reservations::release(db, &id).await.unwrap();
    assert_eq!(released.state, ReservationState::Released);
    let late = reservations::reserve(db, &NewReservation::parse("ORD-5", &[(1, 2)]).unwrap())
        .await
        .unwrap();
    assert_eq!(late.state, ReservationState::Released);
    assert_eq!(stock(&store, 1).await, 10);
}

async fn concurrent_orders_never_oversell(db: &Database) {
    let store = products(db, &[10]).await;
    let mut tasks = Vec::new();
    for i in 0..25 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let order = NewReservation::parse(&format!("ORD-C{i}"), &[(1, 1)]).unwrap();
            reservations::reserve(&db, &order).await
        }));
    }
    let mut reserved = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => reserved += 1,
            Err(ReserveError::InsufficientStock { .. }) => {}
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(reserved, 10);
    assert_eq!(stock(&store, 1).await, 0);
}
