//! Orphan sweeper: blobs whose upload never reached the index (the hub died, the client went away)
//! are listed in `pending_blobs`; once older than the configured age they are deleted. Safe on
//! several hubs at once: deleting a missing blob or row is a no-op.

use super::BlobStore;
use crate::db::{Db, now_ms};

/// Deletes pending blobs older than `age_ms`. Returns how many were removed.
pub async fn sweep_orphans(db: &Db, blobs: &BlobStore, age_ms: i64) -> anyhow::Result<u64> {
    let cutoff = now_ms() - age_ms;
    let mut removed = 0;
    for path in super::pending::due(db, cutoff, 1000).await? {
        // The blob may have been indexed after all (the row is then already gone); only delete
        // blobs that no instance references.
        let used = sqlx::query("SELECT 1 FROM instances WHERE blob_path = $1 UNION ALL SELECT 1 FROM share_reports WHERE blob_path = $1")
            .bind(&path)
            .fetch_optional(db)
            .await?
            .is_some();
        if !used {
            blobs.delete(&path).await?;
            removed += 1;
        }
        super::pending::forget(db, &path).await?;
    }
    if removed > 0 {
        tracing::info!(removed, "swept orphaned blobs");
    }
    Ok(removed)
}
