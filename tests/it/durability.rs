//! `--durability`: what the store reports it applies to the writer's commits, for both
//! settings on both backends (the setting in effect, read back from the database).

use activity_hub::store::{Durability, Store, StoreOptions};

use crate::helpers::{Backend, TestDb};

crate::dual!(the_store_applies_the_durability_asked_for);

async fn the_store_applies_the_durability_asked_for(b: Backend) {
    for wanted in [Durability::PowerLoss, Durability::ProcessCrash] {
        let db = TestDb::new(b).await;
        let mut opts = StoreOptions::new(db.url.clone());
        opts.durability = wanted;
        let store = Store::connect(&opts).await.unwrap();
        assert_eq!(store.durability().await.unwrap(), wanted, "{b:?}");
        store.close().await;
    }
    assert_eq!(
        StoreOptions::new("sqlite://x.db").durability,
        Durability::PowerLoss,
        "power-loss safety is the default"
    );
}
