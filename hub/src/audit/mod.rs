//! Audit recording: who did what to which object, from where, with what result. Every access to
//! a share (code redemption attempts included, failed ones too), every download and every change
//! by staff is recorded here, in a hash chain. Records hold identifiers only, never patient
//! demographics. Reading the trail (the page, the API, the exports) is the feature
//! `audit_trail`.

use axum::extract::ConnectInfo;
use axum::response::Response;
use ferry_schemas::AuditEvent;

use crate::db::{Db, now_ms};

/// DICOMweb reads are recorded once per reader, study and this many seconds: a viewer fetching
/// hundreds of frames leaves one record, not hundreds.
pub const READ_WINDOW_SECS: u64 = 600;

/// The DICOMweb reads recorded within the window.
#[derive(Clone, Default)]
pub struct Recent(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), std::time::Instant>>>);

impl Recent {
    /// True when this reader's read of this study is not yet recorded within the window.
    pub fn first(&self, actor: &str, study: &str) -> bool {
        let window = std::time::Duration::from_secs(READ_WINDOW_SECS);
        let now = std::time::Instant::now();
        let mut m = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if m.len() > 10_000 {
            m.retain(|_, at| now.duration_since(*at) < window);
        }
        match m.get(&(actor.to_string(), study.to_string())) {
            Some(at) if now.duration_since(*at) < window => false,
            _ => {
                m.insert((actor.to_string(), study.to_string()), now);
                true
            }
        }
    }
}

/// One thing that happened.
pub struct Event<'a> {
    pub actor: &'a str,
    pub client_addr: &'a str,
    pub action: &'a str,
    pub object_kind: &'a str,
    pub object_id: &'a str,
    /// `ok`, `denied`, `failed`, …
    pub result: &'a str,
    pub detail: &'a str,
}

/// The chain hash of a record: SHA-256 over the previous record's hash and this record's fields
/// (a JSON array, so no field can bleed into another).
#[allow(clippy::too_many_arguments)]
fn chain_hash(
    prev: &str,
    seq: i64,
    id: &str,
    at: i64,
    actor: &str,
    client_addr: &str,
    action: &str,
    object_kind: &str,
    object_id: &str,
    result: &str,
    detail: &str,
) -> String {
    use sha2::{Digest, Sha256};
    let fields = serde_json::json!([seq, id, at, actor, client_addr, action, object_kind, object_id, result, detail]);
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(fields.to_string().as_bytes());
    hex::encode(h.finalize())
}

/// Takes the next place in the chain: the head row is updated first, which locks it until the
/// transaction ends (a row lock on PostgreSQL, the write lock on SQLite), so appends from several
/// hub processes queue instead of forking the chain.
async fn next_place(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(i64, String), sqlx::Error> {
    let head: Head = sqlx::query_as("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash").fetch_one(&mut **tx).await?;
    Ok((head.seq, head.hash))
}

/// The chain's head: the last place taken and its hash.
#[derive(sqlx::FromRow)]
struct Head {
    seq: i64,
    hash: String,
}

/// Records a change made by `actor` (a [`Principal::log_id`](crate::access::Principal::log_id),
/// or `cli` for the command line) to an account, community or connector.
pub async fn change(db: &Db, actor: &str, action: &str, object_kind: &str, object_id: &str, detail: &str) -> anyhow::Result<()> {
    record(db, Event { actor, client_addr: "", action, object_kind, object_id, result: "ok", detail }).await
}

tokio::task_local! {
    /// The client address of the request being handled (see [`client_scope`]).
    static CLIENT: String;
}

/// Middleware: makes the caller's address known to every audit record written while the
/// request is handled, so handlers need not pass it along. A record that names an address
/// itself keeps it; records written outside a request (command line, background loops) have none.
pub async fn client_scope(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let client = req.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
    CLIENT.scope(client, next.run(req)).await
}

/// Appends an event to the chain. A failure to audit is logged and reported to the caller: an
/// access that cannot be audited should not go ahead where the caller can still refuse it.
pub async fn record(db: &Db, e: Event<'_>) -> anyhow::Result<()> {
    let r = append(db, &e).await;
    if let Err(err) = &r {
        tracing::error!(error = %err, action = e.action, object = e.object_id, "audit record failed");
    }
    r.map_err(Into::into)
}

async fn append(db: &Db, e: &Event<'_>) -> Result<(), sqlx::Error> {
    let from_request = if e.client_addr.is_empty() { CLIENT.try_with(Clone::clone).unwrap_or_default() } else { String::new() };
    let e = &Event { client_addr: if e.client_addr.is_empty() { &from_request } else { e.client_addr }, ..*e };
    let mut tx = db.begin().await?;
    let (seq, prev) = next_place(&mut tx).await?;
    let (id, at) = (uuid::Uuid::new_v4().to_string(), now_ms());
    let hash = chain_hash(&prev, seq, &id, at, e.actor, e.client_addr, e.action, e.object_kind, e.object_id, e.result, e.detail);
    sqlx::query(
        "INSERT INTO audit_events (id, at, actor, client_addr, action, object_kind, object_id, result, detail, seq, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&id)
    .bind(at)
    .bind(e.actor)
    .bind(e.client_addr)
    .bind(e.action)
    .bind(e.object_kind)
    .bind(e.object_id)
    .bind(e.result)
    .bind(e.detail)
    .bind(seq)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&hash).execute(&mut *tx).await?;
    tx.commit().await
}

const COLUMNS: &str = "id, at, actor, client_addr, action, object_kind, object_id, result, detail";

#[derive(sqlx::FromRow)]
struct Stored {
    id: String,
    at: i64,
    actor: String,
    client_addr: String,
    action: String,
    object_kind: String,
    object_id: String,
    result: String,
    detail: String,
}

/// A record with its place in the chain, as `verify` reads it.
#[derive(sqlx::FromRow)]
struct Chained {
    #[sqlx(flatten)]
    stored: Stored,
    seq: i64,
    hash: String,
}

impl Stored {
    fn hash(&self, prev: &str, seq: i64) -> String {
        chain_hash(
            prev,
            seq,
            &self.id,
            self.at,
            &self.actor,
            &self.client_addr,
            &self.action,
            &self.object_kind,
            &self.object_id,
            &self.result,
            &self.detail,
        )
    }
}

/// Chains records written before the chain existed (at start-up, after the migration).
pub async fn chain_unchained(db: &Db) -> anyhow::Result<u64> {
    let mut done = 0;
    loop {
        let sql = format!("SELECT {COLUMNS} FROM audit_events WHERE seq IS NULL ORDER BY at, id LIMIT 500");
        let rows: Vec<Stored> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(db).await?;
        if rows.is_empty() {
            return Ok(done);
        }
        for s in &rows {
            let mut tx = db.begin().await?;
            let (seq, prev) = next_place(&mut tx).await?;
            let hash = s.hash(&prev, seq);
            let n = sqlx::query("UPDATE audit_events SET seq = $1, hash = $2 WHERE id = $3 AND seq IS NULL")
                .bind(seq)
                .bind(&hash)
                .bind(&s.id)
                .execute(&mut *tx)
                .await?;
            if n.rows_affected() == 1 {
                sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(&hash).execute(&mut *tx).await?;
                tx.commit().await?;
                done += 1;
            } else {
                tx.rollback().await?; // another hub chained it meanwhile
            }
        }
    }
}

/// What `ferry-hub audit verify` found.
#[derive(Debug)]
pub struct Verified {
    pub records: i64,
    pub head: String,
}

/// Recomputes the whole chain. Fails naming the first place where a record was changed,
/// removed or inserted, or where the end of the chain was cut off.
pub async fn verify(db: &Db) -> anyhow::Result<Verified> {
    let mut prev = String::new();
    let mut expected = 1i64;
    loop {
        let sql = format!("SELECT {COLUMNS}, seq, hash FROM audit_events WHERE seq >= $1 ORDER BY seq LIMIT 1000");
        let rows: Vec<Chained> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(expected).fetch_all(db).await?;
        if rows.is_empty() {
            break;
        }
        for Chained { stored: s, seq, hash } in rows {
            if seq != expected {
                anyhow::bail!("the audit trail is broken: record(s) {expected}–{} are missing (removed)", seq - 1);
            }
            if s.hash(&prev, seq) != hash {
                anyhow::bail!(
                    "the audit trail is broken at record {seq} ({}): it was changed after it was written, or a record before it was replaced",
                    s.id
                );
            }
            prev = hash;
            expected += 1;
        }
    }
    let head: Head = sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(db).await?;
    let (head_seq, head_hash) = (head.seq, head.hash);
    if head_seq != expected - 1 || head_hash != prev {
        anyhow::bail!(
            "the audit trail is broken at its end: the chain ends at record {} but {head_seq} were written (the last records were removed)",
            expected - 1
        );
    }
    Ok(Verified { records: expected - 1, head: prev })
}

/// The events of one object, newest first.
pub async fn of_object(db: &Db, kind: &str, id: &str, limit: i64) -> Result<Vec<AuditEvent>, sqlx::Error> {
    let sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE object_kind = $1 AND object_id = $2 ORDER BY at DESC, id LIMIT $3");
    let rows: Vec<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(kind).bind(id).bind(limit).fetch_all(db).await?;
    Ok(rows.into_iter().map(AuditEvent::from).collect())
}

/// The columns of an [`EventRow`].
pub const EVENT_COLUMNS: &str = "at, actor, client_addr, action, object_kind, object_id, result, detail, seq";

/// A record as readers see it ([`EVENT_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub struct EventRow {
    at: i64,
    actor: String,
    client_addr: String,
    action: String,
    object_kind: String,
    object_id: String,
    result: String,
    detail: String,
    seq: Option<i64>,
}

impl From<EventRow> for AuditEvent {
    fn from(r: EventRow) -> Self {
        AuditEvent {
            at: r.at,
            actor: r.actor,
            client_addr: r.client_addr,
            action: r.action,
            object_kind: r.object_kind,
            object_id: r.object_id,
            result: r.result,
            detail: r.detail,
            seq: r.seq,
        }
    }
}
