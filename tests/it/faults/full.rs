//! A full store (SQLite's page limit; a PostgreSQL COMMIT failing with `disk_full`) and
//! a full disk (a small tmpfs).

use super::*;

/// The PostgreSQL fault switch: a deferred constraint trigger on `inbox` and `settings`
/// that fails COMMIT with `disk_full` (53100) while `fault_switch.fail` is true, so the
/// commit itself fails, as a full disk makes it.
async fn pg_commit_fault(db: &TestDb) -> sqlx::PgPool {
    let pool = sqlx::PgPool::connect(&db.url)
        .await
        .expect("connect to the test schema");
    for sql in [
        "CREATE TABLE fault_switch (fail BOOLEAN NOT NULL)",
        "INSERT INTO fault_switch VALUES (false)",
        "CREATE FUNCTION fault_fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         IF (SELECT fail FROM fault_switch LIMIT 1) THEN \
         RAISE EXCEPTION 'injected: could not extend file' USING ERRCODE = 'disk_full'; END IF; \
         RETURN NULL; END $$",
        "CREATE CONSTRAINT TRIGGER fault_inbox AFTER INSERT ON inbox DEFERRABLE INITIALLY DEFERRED \
         FOR EACH ROW EXECUTE FUNCTION fault_fail_commit()",
        "CREATE CONSTRAINT TRIGGER fault_settings AFTER INSERT OR UPDATE ON settings DEFERRABLE \
         INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault_fail_commit()",
    ] {
        sqlx::query(sql).execute(&pool).await.expect(sql);
    }
    pool
}

async fn set_full(b: Backend, s: &TestServer, pg: Option<&sqlx::PgPool>, full: bool) {
    match b {
        // No more pages than the file has now: the next writes that need one fail with
        // SQLITE_FULL, as on a full disk.
        Backend::Sqlite => s
            .store
            .limit_sqlite_pages(full.then_some(1))
            .await
            .expect("page limit"),
        Backend::Postgres => {
            sqlx::query("UPDATE fault_switch SET fail = $1")
                .bind(full)
                .execute(pg.expect("fault pool"))
                .await
                .expect("fault switch");
        }
    }
}

crate::dual!(a_full_store_loses_nothing_acknowledged);

async fn a_full_store_loses_nothing_acknowledged(b: Backend) {
    let db = TestDb::new(b).await;
    let s = TestServer::start(&db, &[]).await;
    let pg = match b {
        Backend::Postgres => Some(pg_commit_fault(&db).await),
        Backend::Sqlite => None,
    };
    let load = Load::start(&s, "full").await;
    let ledger = &load.ledger;
    set_full(b, &s, pg.as_ref(), true).await;
    failed_beyond(ledger, 0, 20, "store full").await;
    assert!(
        ledger.failed_with(Code::ResourceExhausted) > 0,
        "a full store answers RESOURCE_EXHAUSTED: {:?}",
        ledger.failed.lock().unwrap()
    );
    health_becomes(&s.channel, ServingStatus::NotServing, "store full").await;
    // Still full: failures go on, and the health stays NOT_SERVING across probes.
    let failed = ledger.failed();
    failed_beyond(ledger, failed, 20, "still full").await;
    assert_eq!(
        health(&s.channel).await,
        ServingStatus::NotServing as i32,
        "while writes fail"
    );
    // The HTTP readiness probe says the same.
    let ready = crate::web::client::get(s.addr, "/readyz", None).await;
    assert_eq!(ready.status, 503, "/readyz while writes fail: {ready:?}");
    assert_eq!(
        crate::web::client::get(s.addr, "/healthz", None).await.status,
        200
    );

    set_full(b, &s, pg.as_ref(), false).await;
    health_becomes(&s.channel, ServingStatus::Serving, "space freed").await;
    assert_eq!(crate::web::client::get(s.addr, "/readyz", None).await.status, 200);
    load.finish(s, &db, "after space was freed").await;
}

/// A small tmpfs mounted for one test (unmounted on drop): a real disk that fills up.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (and the reason) where mounting is not allowed, e.g. not root.
    fn mount(mib: u32) -> Result<SmallDisk, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(SmallDisk { dir })
    }

    /// Writes a file until the disk is full; removing it frees the space again.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write as _;
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The reporter's case itself: the SQLite file on a filesystem that really fills up
/// (commits fail with `SQLITE_FULL` as the WAL cannot grow), then space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_nothing_acknowledged() {
    let disk = match SmallDisk::mount(16) {
        Ok(d) => d,
        Err(why) => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: faults::a_full_disk_loses_nothing_acknowledged (cannot mount a tmpfs: {why})"
            );
            return;
        }
    };
    let db = TestDb::at(format!("sqlite://{}", disk.dir.path().join("hub.db").display()));
    let s = TestServer::start(&db, &[]).await;
    let load = Load::start(&s, "disk").await;
    let ledger = &load.ledger;
    let filler = disk.fill();
    failed_beyond(ledger, 0, 20, "disk full").await;
    assert!(
        ledger.failed_with(Code::ResourceExhausted) > 0,
        "a full disk answers RESOURCE_EXHAUSTED: {:?}",
        ledger.failed.lock().unwrap()
    );
    health_becomes(&s.channel, ServingStatus::NotServing, "disk full").await;
    std::fs::remove_file(filler).expect("free the space");
    load.finish(s, &db, "after space was freed").await;
}
