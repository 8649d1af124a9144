//! SQL of the audit trail: which records a query selects, and the names beside their actors.

use ferry_schemas::AuditEvent;

use super::AuditQuery;
use crate::audit::{EVENT_COLUMNS, EventRow};
use crate::db::Db;

/// The ids of the communities `user_id` administers.
pub async fn administered_communities(db: &Db, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT community_id FROM memberships WHERE user_id = $1 AND role = 'admin'").bind(user_id).fetch_all(db).await
}

/// The chained records matching `q`, newest first, at most `limit`; with `scope`, only those of
/// these communities' shares, transfers, connectors and studies.
pub async fn events(db: &Db, q: &AuditQuery, scope: Option<&[String]>, limit: i64) -> Result<Vec<AuditEvent>, sqlx::Error> {
    let mut conds: Vec<String> = vec!["seq IS NOT NULL".into()];
    let mut binds: Vec<String> = vec![];
    let arg = |binds: &mut Vec<String>, v: &str| {
        binds.push(v.to_string());
        format!("${}", binds.len())
    };
    for (col, v) in [("actor", &q.actor), ("action", &q.action), ("object_kind", &q.object_kind), ("object_id", &q.object_id)] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            let p = arg(&mut binds, v);
            conds.push(format!("{col} = {p}"));
        }
    }
    for (kind, v) in [("share", &q.share), ("transfer", &q.transfer)] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            let p = arg(&mut binds, v);
            conds.push(format!("(object_kind = '{kind}' AND object_id = {p})"));
        }
    }
    if let Some(study) = q.study.as_deref().filter(|v| !v.is_empty()) {
        let p = arg(&mut binds, study);
        conds.push(format!(
            "((object_kind = 'share' AND object_id IN (SELECT share_id FROM share_instances WHERE study_uid = {p})) \
             OR (object_kind = 'transfer' AND object_id IN (SELECT transfer_id FROM transfer_instances WHERE study_uid = {p})) \
             OR (object_kind = 'study' AND object_id = {p}))"
        ));
    }
    if let Some(pid) = q.patient_id.as_deref().filter(|v| !v.is_empty()) {
        let p = arg(&mut binds, pid);
        conds.push(format!(
            "((object_kind = 'share' AND object_id IN (SELECT id FROM shares WHERE patient_id = {p} \
                UNION SELECT si.share_id FROM share_instances si JOIN studies s ON s.origin = si.origin AND s.study_uid = si.study_uid WHERE s.patient_id = {p})) \
             OR (object_kind = 'transfer' AND object_id IN (SELECT ti.transfer_id FROM transfer_instances ti JOIN studies s ON s.origin = ti.origin AND s.study_uid = ti.study_uid WHERE s.patient_id = {p})) \
             OR (object_kind = 'study' AND object_id IN (SELECT study_uid FROM studies WHERE patient_id = {p})))"
        ));
    }
    if let Some(ids) = scope {
        let ps: Vec<String> = ids.iter().map(|id| arg(&mut binds, id)).collect();
        let list = ps.join(", ");
        conds.push(format!(
            "((object_kind = 'share' AND object_id IN (SELECT id FROM shares WHERE community_id IN ({list}))) \
             OR (object_kind = 'transfer' AND object_id IN (SELECT id FROM transfers WHERE community_id IN ({list}))) \
             OR (object_kind = 'community' AND object_id IN ({list})) \
             OR (object_kind = 'connector' AND object_id IN (SELECT id FROM connectors WHERE community_id IN ({list}))) \
             OR (object_kind = 'study' AND (object_id IN (SELECT ti.study_uid FROM transfer_instances ti JOIN transfers t ON t.id = ti.transfer_id \
                    WHERE t.community_id IN ({list}) AND t.state <> 'draft') \
                 OR object_id IN (SELECT si.study_uid FROM share_instances si JOIN shares sh ON sh.id = si.share_id WHERE sh.community_id IN ({list}))) \
                 AND (actor IN (SELECT 'user:' || user_id FROM memberships WHERE community_id IN ({list})) \
                 OR actor IN (SELECT 'connector:' || id FROM connectors WHERE community_id IN ({list})) \
                 OR actor IN (SELECT 'share:' || id FROM shares WHERE community_id IN ({list})))))"
        ));
    }
    let mut times = vec![];
    if let Some(f) = q.from {
        times.push(f);
        conds.push(format!("at >= ${}", binds.len() + times.len()));
    }
    if let Some(t) = q.to {
        times.push(t);
        conds.push(format!("at < ${}", binds.len() + times.len()));
    }
    let sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE {} ORDER BY seq DESC LIMIT {limit}", conds.join(" AND "));
    let mut query = sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(sql));
    for b in &binds {
        query = query.bind(b);
    }
    for t in &times {
        query = query.bind(*t);
    }
    Ok(query.fetch_all(db).await?.into_iter().map(AuditEvent::from).collect())
}

/// The names of these accounts, by id.
pub async fn user_names(db: &Db, ids: &[&str]) -> Result<Vec<(String, String)>, sqlx::Error> {
    let params: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!("SELECT id, name FROM users WHERE id IN ({})", params.join(", "));
    let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(*id);
    }
    q.fetch_all(db).await
}
