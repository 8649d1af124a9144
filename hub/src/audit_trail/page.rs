//! The audit trail's web page (`/audit`) for hub and community admins: the records they may read,
//! filtered by person, action, study, patient, share, transfer and dates, with exports of the same
//! selection as JSON lines and FHIR AuditEvent resources. The page reads through the same query as
//! the API, so the scopes are the same and each view is itself recorded.

use axum::extract::{ConnectInfo, Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::AuditQuery;
use crate::error::AppError;
use crate::state::AppState;
use crate::ui::{Ctx, error_page, layout, time_ms};

/// The page's filters, as the form sends them (empty fields are no filter).
#[derive(Debug, Default, Deserialize)]
pub struct Filters {
    #[serde(default)]
    email: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    study: String,
    #[serde(default)]
    patient_id: String,
    #[serde(default)]
    share: String,
    #[serde(default)]
    transfer: String,
    /// YYYY-MM-DD (UTC), inclusive.
    #[serde(default)]
    from: String,
    /// YYYY-MM-DD (UTC), inclusive.
    #[serde(default)]
    to: String,
}

/// Unix ms of 00:00 UTC on a YYYY-MM-DD date.
fn day_start(date: &str) -> Result<i64, AppError> {
    let bad = || AppError::BadRequest(format!("{date:?} is not a date (YYYY-MM-DD)"));
    let mut parts = date.trim().splitn(3, '-').map(|p| p.parse::<i32>().map_err(|_| bad()));
    let (y, m, d) = (parts.next().ok_or_else(bad)??, parts.next().ok_or_else(bad)??, parts.next().ok_or_else(bad)??);
    let month = u8::try_from(m).ok().and_then(|m| time::Month::try_from(m).ok()).ok_or_else(bad)?;
    let day = time::Date::from_calendar_date(y, month, u8::try_from(d).map_err(|_| bad())?).map_err(|_| bad())?;
    Ok(day.midnight().assume_utc().unix_timestamp() * 1000)
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The API query of the filters; a person's email becomes their `user:` actor (in place of a
/// principal given as such).
async fn to_query(state: &AppState, f: &Filters) -> Result<AuditQuery, AppError> {
    let mut actor = some(&f.actor);
    if let Some(email) = some(&f.email) {
        // An unknown address matches nothing (and says nothing about which addresses exist).
        let id = crate::accounts::db::user_id_by_email(&state.db, &email.to_lowercase()).await?;
        actor = Some(format!("user:{}", id.unwrap_or_else(|| "-".into())));
    }
    Ok(AuditQuery {
        actor,
        action: some(&f.action),
        study: some(&f.study),
        patient_id: some(&f.patient_id),
        share: some(&f.share),
        transfer: some(&f.transfer),
        from: some(&f.from).map(|d| day_start(&d)).transpose()?,
        to: some(&f.to).map(|d| day_start(&d).map(|t| t + DAY_MS)).transpose()?,
        limit: Some(500),
        ..Default::default()
    })
}

/// The names of the accounts among the records' actors (staff and referrers, never patients), so
/// the page can say who; the id stays beside the name.
async fn account_names(
    state: &AppState,
    events: &[ferry_schemas::AuditEvent],
) -> Result<std::collections::HashMap<String, String>, AppError> {
    let mut ids: Vec<&str> = events.iter().filter_map(|e| e.actor.strip_prefix("user:")).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut names = std::collections::HashMap::new();
    for chunk in ids.chunks(200) {
        names.extend(super::db::user_names(&state.db, chunk).await?.into_iter().map(|(id, name)| (format!("user:{id}"), name)));
    }
    Ok(names)
}

/// The export link of the selection shown.
fn export_link(q: &AuditQuery, format: &str) -> String {
    let mut pairs: Vec<(&str, String)> = vec![("format", format.into()), ("limit", "100000".into())];
    for (k, v) in [
        ("actor", &q.actor),
        ("action", &q.action),
        ("study", &q.study),
        ("patient_id", &q.patient_id),
        ("share", &q.share),
        ("transfer", &q.transfer),
    ] {
        if let Some(v) = v {
            pairs.push((k, v.clone()));
        }
    }
    for (k, v) in [("from", q.from), ("to", q.to)] {
        if let Some(v) = v {
            pairs.push((k, v.to_string()));
        }
    }
    format!("/api/v1/audit?{}", serde_urlencoded::to_string(&pairs).unwrap_or_default())
}

pub async fn audit_page(
    State(state): State<AppState>,
    ci: ConnectInfo<std::net::SocketAddr>,
    ctx: Ctx,
    Query(f): Query<Filters>,
) -> Response {
    let who = match ctx.require() {
        Ok((p, _)) => p.clone(),
        Err(r) => return r.into_response(),
    };
    let q = match to_query(&state, &f).await {
        Ok(q) => q,
        Err(e) => return error_page(&ctx, e),
    };
    let events = match super::query(&state, &who, &crate::http::client_addr(&ci), &q).await {
        Ok(v) => v,
        Err(e) => return error_page(&ctx, e),
    };
    let names = match account_names(&state, &events).await {
        Ok(n) => n,
        Err(e) => return error_page(&ctx, e),
    };
    let field = |id: &'static str, label: &'static str, value: &str, kind: &'static str| {
        html! { div { label for=(id) { (label) } input id=(id) name=(id) type=(kind) value=(value); } }
    };
    layout(&ctx, ctx.t("audit.title"), html! {
        h1 { (ctx.t("audit.title")) }
        p { (ctx.t("audit.intro")) }
        form.card.filters method="get" action="/audit" role="search" {
            div.row {
                (field("email", ctx.t("audit.person"), &f.email, "email"))
                (field("action", ctx.t("audit.action"), &f.action, "text"))
                (field("study", ctx.t("audit.study"), &f.study, "text"))
                (field("patient_id", ctx.t("transfer.pid"), &f.patient_id, "text"))
            }
            div.row {
                (field("actor", ctx.t("audit.actor"), &f.actor, "text"))
                (field("share", ctx.t("audit.share"), &f.share, "text"))
                (field("transfer", ctx.t("audit.transfer"), &f.transfer, "text"))
                (field("from", ctx.t("audit.from"), &f.from, "date"))
                (field("to", ctx.t("audit.to"), &f.to, "date"))
            }
            button type="submit" { (ctx.t("inbound.filter")) }
        }
        p {
            (ctx.t("audit.export")) ": "
            a href=(export_link(&q, "jsonl")) download { "JSON Lines" } " · "
            a href=(export_link(&q, "fhir")) download { "FHIR AuditEvent (R4)" }
        }
        @if events.is_empty() {
            p { (ctx.t("audit.none")) }
        } @else {
            div.table-wrap { table {
                thead { tr {
                    th { "#" } th { (ctx.t("audit.when")) } th { (ctx.t("audit.who")) } th { (ctx.t("audit.action")) }
                    th { (ctx.t("audit.object")) } th { (ctx.t("audit.result")) } th { (ctx.t("audit.detail")) }
                } }
                tbody {
                    @for e in &events {
                        tr data-action=(e.action) data-result=(e.result) {
                            td { (e.seq.unwrap_or_default()) }
                            td { (time_ms(ctx.lang, e.at)) }
                            td {
                                a href={"/audit?actor=" (crate::ui::urlencode(&e.actor))} {
                                    @if let Some(name) = names.get(&e.actor) { (name) br; small { code { (e.actor) } } } @else { code { (e.actor) } }
                                }
                                @if !e.client_addr.is_empty() { br; small { (e.client_addr) } }
                            }
                            td { a href={"/audit?action=" (crate::ui::urlencode(&e.action))} { (e.action) } }
                            td { (e.object_kind) @if !e.object_id.is_empty() { br; small { code { (e.object_id) } } } }
                            td { @if e.result == "ok" { span.badge { (e.result) } } @else { span.badge.state-failed { (e.result) } } }
                            td { small { (e.detail) } }
                        }
                    }
                }
            } }
            @if events.len() == 500 { p { small { (ctx.t("audit.more")) } } }
        }
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_days_and_bad_ones_are_refused() {
        assert_eq!(day_start("1970-01-02").ok(), Some(DAY_MS));
        assert_eq!(day_start("2026-11-26").ok(), Some(1_795_651_200_000));
        for bad in ["2026-13-01", "2026-02-30", "yesterday", "2026-11"] {
            assert!(day_start(bad).is_err(), "{bad}");
        }
    }
}
