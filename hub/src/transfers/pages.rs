//! The transfers' pages: my sendings, sending (directory search, the send page), a transfer with
//! the clinic's actions, the inbound worklist and the viewer of a transfer's study.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use ferry_schemas::{Transfer, TransferState, Urgency};
use maud::{Markup, html};
use serde::Deserialize;

use crate::error::AppError;
use crate::state::AppState;
use crate::transfers::{self, ListQuery, Relation};
use crate::ui::{Ctx, dicom_date, human_size, layout, person_name, script_texts, state_badge, time_ms};
use crate::ui::{page, signed_in};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/app", get(my_transfers))
        .route("/send", get(directory))
        .route("/send/{code}", get(send_page))
        .route("/send/{code}/approval", post(ask_approval))
        .route("/transfers/{id}", get(transfer_page))
        .route("/transfers/{id}/done", post(mark_done))
        .route("/transfers/{id}/reject", post(reject))
        .route("/inbound", get(inbound))
        .route("/viewer/{id}/{study}", get(viewer))
}

fn patients(t: &Transfer) -> String {
    let mut names: Vec<String> = t.studies.iter().map(|s| person_name(&s.patient_name)).collect();
    names.dedup();
    names.join("; ")
}

fn transfers_table(ctx: &Ctx, state: &AppState, list: &[Transfer], inbound: bool) -> Markup {
    let viewer = crate::ohif::installed(state);
    html! {
        div.table-wrap {
            table {
                thead { tr {
                    th { (ctx.t("transfer.sent")) }
                    @if inbound { th { (ctx.t("transfer.from")) } } @else { th { (ctx.t("transfer.to")) } }
                    th { (ctx.t("transfer.patient")) }
                    @if inbound { th { (ctx.t("transfer.birth")) } th { (ctx.t("transfer.pid")) } }
                    th { (ctx.t("transfer.note")) }
                    th { (ctx.t("transfer.images")) }
                    th { (ctx.t("transfer.state")) }
                    @if viewer { th { "" } }
                } }
                tbody {
                    @for t in list {
                        tr data-transfer=(t.id) {
                            td { a href={"/transfers/" (t.id)} { (time_ms(ctx.lang, t.sent_at.unwrap_or(t.created_at))) } }
                            @if inbound { td { (t.sender_name) @if !t.sender_practice.is_empty() { br; small { (t.sender_practice) } } } }
                            @else { td { (t.community_name) } }
                            td { (patients(t)) }
                            @if inbound {
                                td { @for s in t.studies.iter().take(1) { (dicom_date(ctx.lang, &s.patient_birth_date)) } }
                                td { @for s in t.studies.iter().take(1) { (s.patient_id) } }
                            }
                            td { @if t.urgency == Urgency::Urgent { strong.urgent { (ctx.t("urgency.urgent")) ": " } } (t.reason) }
                            td { (t.instances) }
                            td { (state_badge(ctx, t.state.as_str())) }
                            @if viewer { td { (ohif_link(ctx, state, t, !inbound)) } }
                        }
                    }
                }
            }
        }
    }
}

/// "Open in viewer" for a transfer's studies (all of them at once), where the user may see them.
fn ohif_link(ctx: &Ctx, state: &AppState, t: &Transfer, sender: bool) -> Markup {
    let uids: Vec<&str> = t.studies.iter().map(|s| s.study_uid.as_str()).collect();
    match crate::ohif::study_link(state, &uids) {
        Some(link) if t.state != TransferState::Draft || sender => ohif_anchor(ctx, &link),
        _ => html! {},
    }
}

fn ohif_anchor(ctx: &Ctx, link: &str) -> Markup {
    html! { a.ohif href=(link) target="_blank" rel="noopener" { (ctx.t("transfer.ohif")) } }
}

async fn my_transfers(State(state): State<AppState>, ctx: Ctx) -> Response {
    let (who, _) = signed_in!(ctx);
    let list = page!(ctx, transfers::list(&state, &who, &ListQuery::default()).await);
    layout(
        &ctx,
        ctx.t("mine.title"),
        html! {
            h1 { (ctx.t("mine.title")) }
            p { a.button href="/send" { (ctx.t("nav.send")) } }
            @if list.is_empty() { p { (ctx.t("mine.none")) } } @else { (transfers_table(&ctx, &state, &list, false)) }
        },
    )
    .into_response()
}

#[derive(Deserialize, Default)]
struct SearchQuery {
    q: Option<String>,
}

async fn directory(State(state): State<AppState>, ctx: Ctx, Query(q): Query<SearchQuery>) -> Response {
    let _ = signed_in!(ctx);
    let text = q.q.clone().unwrap_or_default();
    let found = if text.trim().is_empty() { vec![] } else { page!(ctx, crate::communities::search(&state, &text, 50).await) };
    layout(
        &ctx,
        ctx.t("send.title"),
        html! {
            h1 { (ctx.t("send.title")) }
            form.card.search method="get" action="/send" role="search" {
                label for="q" { (ctx.t("send.search")) }
                div.row {
                    input id="q" type="search" name="q" value=(text) autofocus autocomplete="off";
                    button type="submit" { (ctx.t("send.search.submit")) }
                }
            }
            @if !text.trim().is_empty() && found.is_empty() { p { (ctx.t("send.noresults")) } }
            ul.results {
                @for c in &found {
                    li.card data-code=(c.code) {
                        @if c.has_logo { img.logo src={"/api/v1/communities/" (c.code) "/logo"} alt="" height="40"; " " }
                        strong { (c.name) } " "
                        span.muted { (c.city) " · " code { (c.code) } }
                        @if !c.departments.is_empty() { br; small { (c.departments.join(", ")) } }
                        br;
                        @if c.accepts_inbound { a.button href={"/send/" (c.code)} { (ctx.t("send.here")) } }
                    }
                }
            }
        },
    )
    .into_response()
}

async fn send_page(State(state): State<AppState>, ctx: Ctx, Path(code): Path<String>) -> Response {
    let (who, account) = signed_in!(ctx);
    let c = page!(
        ctx,
        crate::communities::find(&state.db, &code).await.and_then(|c| c.ok_or_else(|| AppError::NotFound("no such community".into())))
    );
    let id = page!(ctx, crate::communities::staff::community_id(&state, &code).await);
    let allowed = page!(ctx, transfers::may_send(&state, &id, c.requires_approval, &account.id).await);
    let _ = who;
    layout(&ctx, ctx.t("send.title"), html! {
        h1 { (ctx.t("send.to")) " " (c.name) }
        p.muted { (c.city) " · " code { (c.code) } }
        @if !c.accepts_inbound {
            p.error role="alert" { "This community does not accept studies." }
        } @else if !allowed {
            p.notice { (ctx.t("send.approval")) }
            form method="post" action={"/send/" (c.code) "/approval"} { button type="submit" { (ctx.t("send.request")) } }
        } @else {
            form.card id="send" data-community=(c.code) {
                label for="reason" { (ctx.t("send.reason")) }
                textarea id="reason" name="reason" rows="3" maxlength="2000" {}
                div.row {
                    div {
                        label for="appointment" { (ctx.t("send.appointment")) }
                        input id="appointment" type="date" name="appointment";
                    }
                    div {
                        label for="urgency" { (ctx.t("send.urgency")) }
                        select id="urgency" name="urgency" {
                            option value="routine" { (ctx.t("urgency.routine")) }
                            option value="urgent" { (ctx.t("urgency.urgent")) }
                        }
                    }
                }
                div.drop id="drop" tabindex="0" {
                    label for="files" { (ctx.t("send.files")) }
                    input id="files" type="file" multiple;
                    label for="folder" { (ctx.t("send.folder")) }
                    input id="folder" type="file" webkitdirectory multiple;
                    p.muted { (ctx.t("send.drop")) }
                }
                div id="summary" aria-live="polite" {}
                progress id="progress" value="0" max="100" hidden {}
                p id="status" role="status" aria-live="polite" {}
                button id="submit" type="submit" disabled { (ctx.t("send.submit")) }
            }
            (script_texts(&ctx, &["send.found", "transfer.patient", "transfer.birth", "transfer.pid", "transfer.studies", "transfer.series", "transfer.images", "transfer.size"]))
            script type="module" src="/assets/send.js" {}
        }
    })
    .into_response()
}

async fn ask_approval(State(state): State<AppState>, ctx: Ctx, Path(code): Path<String>) -> Response {
    let (who, _) = signed_in!(ctx);
    page!(ctx, crate::communities::staff::request_approval(&state, &who, &code).await);
    crate::ui::notice(&ctx, ctx.t("send.title"), ctx.t("send.requested"), Some(("/send", ctx.t("back"))))
}

async fn transfer_page(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let (who, _) = signed_in!(ctx);
    let (_, rel) = page!(ctx, transfers::visible(&state, &who, &id).await);
    let t = page!(
        ctx,
        transfers::db::load(&state.db, &id)
            .await
            .map_err(AppError::from)
            .and_then(|t| t.ok_or_else(|| AppError::NotFound("no such transfer".into())))
    );
    let clinic = matches!(rel, Relation::Member | Relation::CommunityAdmin);
    let open = matches!(t.state, TransferState::Sent | TransferState::Received | TransferState::Stored | TransferState::Failed);
    layout(&ctx, ctx.t("transfer.title"), html! {
        h1 { (ctx.t("transfer.title")) " " (state_badge(&ctx, t.state.as_str())) }
        @if !t.state_message.is_empty() { p.notice id="state-message" { (t.state_message) } }
        dl.facts {
            dt { (ctx.t("transfer.from")) } dd { (t.sender_name) @if !t.sender_practice.is_empty() { " (" (t.sender_practice) ")" } }
            dt { (ctx.t("transfer.to")) } dd { (t.community_name) }
            dt { (ctx.t("transfer.note")) } dd { @if t.urgency == Urgency::Urgent { strong.urgent { (ctx.t("urgency.urgent")) } " " } (t.reason) }
            @if !t.appointment.is_empty() { dt { (ctx.t("send.appointment")) } dd { (t.appointment) } }
            dt { (ctx.t("transfer.images")) } dd { (t.instances) " · " (human_size(t.bytes)) }
        }
        @if !t.targets.is_empty() {
            h2 { (ctx.t("transfer.targets")) }
            ul.targets id="targets" { @for p in &t.targets { li data-target=(p.target) data-state=(p.state.as_str()) {
                strong { (p.target) } @if !p.required { " (" (ctx.t("target.optional")) ")" } ": "
                (ctx.t(target_state_key(p.state))) " " (p.stored) "/" (p.total)
                @if let Some(since) = p.since { " " (ctx.t("connector.since")) " " (crate::ui::time_ms(ctx.lang, since)) }
                @if !p.message.is_empty() { " — " (ctx.t("target.last")) ": " (p.message) }
            } } }
        }
        h2 { (ctx.t("transfer.studies")) }
        div.table-wrap { table {
            thead { tr { th { (ctx.t("transfer.patient")) } th { (ctx.t("transfer.birth")) } th { (ctx.t("transfer.pid")) } th { "Datum / Date" } th { "" } th { (ctx.t("transfer.images")) } th { "" } } }
            tbody { @for s in &t.studies { tr {
                td { (person_name(&s.patient_name)) }
                td { (dicom_date(ctx.lang, &s.patient_birth_date)) }
                td { (s.patient_id) }
                td { (dicom_date(ctx.lang, &s.study_date)) }
                td { (s.description) " " span.muted { (s.modalities.join("/")) } }
                td { (s.instances) }
                td { @if t.state != TransferState::Draft || rel == Relation::Sender {
                    a href={"/viewer/" (t.id) "/" (s.study_uid)} { (ctx.t("transfer.view")) }
                    @if let Some(link) = crate::ohif::study_link(&state, &[s.study_uid.as_str()]) {
                        " · " (ohif_anchor(&ctx, &link))
                    }
                } }
            } } }
        } }
        @if t.state != TransferState::Draft { p { a.button.secondary href={"/api/v1/transfers/" (t.id) "/download"} download { (ctx.t("transfer.download")) } } }
        @if clinic && open {
            div.row.actions {
                form.card method="post" action={"/transfers/" (t.id) "/done"} {
                    label for="done-message" { (ctx.t("transfer.message")) }
                    input id="done-message" name="message" maxlength="2000";
                    button type="submit" id="mark-done" { (ctx.t("transfer.done")) }
                }
                form.card method="post" action={"/transfers/" (t.id) "/reject"} {
                    label for="reject-message" { (ctx.t("transfer.message")) }
                    input id="reject-message" name="message" required maxlength="2000";
                    button.danger type="submit" { (ctx.t("transfer.reject")) }
                }
            }
        }
        h2 { (ctx.t("transfer.history")) }
        ol.history { @for e in &t.events { li { (time_ms(ctx.lang, e.at)) " – " (state_badge(&ctx, &e.state)) @if !e.message.is_empty() { " " q { (e.message) } } } } }
    })
    .into_response()
}

#[derive(Deserialize)]
struct MessageForm {
    #[serde(default)]
    message: String,
}

async fn mark_done(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>, Form(f): Form<MessageForm>) -> Response {
    let (who, _) = signed_in!(ctx);
    page!(ctx, transfers::decide(&state, &who, &id, "done", &f.message).await);
    Redirect::to(&format!("/transfers/{id}")).into_response()
}

async fn reject(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>, Form(f): Form<MessageForm>) -> Response {
    let (who, _) = signed_in!(ctx);
    page!(ctx, transfers::decide(&state, &who, &id, "rejected", &f.message).await);
    Redirect::to(&format!("/transfers/{id}")).into_response()
}

#[derive(Deserialize, Default)]
struct InboundQuery {
    community: Option<String>,
    state: Option<String>,
    q: Option<String>,
}

async fn inbound(State(state): State<AppState>, ctx: Ctx, Query(q): Query<InboundQuery>) -> Response {
    let (who, account) = signed_in!(ctx);
    let query = ListQuery {
        box_: Some("inbound".into()),
        community: q.community.clone().filter(|c| !c.is_empty()),
        state: q.state.clone().filter(|s| !s.is_empty()),
        q: q.q.clone(),
        limit: Some(200),
        offset: None,
    };
    let list = page!(ctx, transfers::list(&state, &who, &query).await);
    let sel = |v: &str, cur: &Option<String>| cur.as_deref() == Some(v);
    layout(&ctx, ctx.t("inbound.title"), html! {
        h1 { (ctx.t("inbound.title")) }
        form.card.filters method="get" action="/inbound" role="search" {
            div.row {
                div {
                    label for="q" { (ctx.t("inbound.search")) }
                    input id="q" type="search" name="q" value=(q.q.clone().unwrap_or_default());
                }
                @if account.memberships.len() > 1 {
                    div {
                        label for="community" { (ctx.t("transfer.to")) }
                        select id="community" name="community" {
                            option value="" { (ctx.t("inbound.all")) }
                            @for m in &account.memberships { option value=(m.community) selected[sel(&m.community, &q.community)] { (m.community_name) } }
                        }
                    }
                }
                div {
                    label for="state" { (ctx.t("transfer.state")) }
                    select id="state" name="state" {
                        option value="" { (ctx.t("inbound.all")) }
                        @for s in ["sent", "received", "stored", "failed", "done", "rejected"] {
                            option value=(s) selected[sel(s, &q.state)] { (ctx.t(crate::ui::state_key(s))) }
                        }
                    }
                }
                button type="submit" { (ctx.t("inbound.filter")) }
            }
        }
        @if list.is_empty() { p { (ctx.t("inbound.none")) } } @else { (transfers_table(&ctx, &state, &list, true)) }
    })
    .into_response()
}

async fn viewer(State(state): State<AppState>, ctx: Ctx, Path((id, study)): Path<(String, String)>) -> Response {
    let (who, _) = signed_in!(ctx);
    page!(ctx, transfers::visible(&state, &who, &id).await);
    let t = page!(
        ctx,
        transfers::db::load(&state.db, &id)
            .await
            .map_err(AppError::from)
            .and_then(|t| t.ok_or_else(|| AppError::NotFound("no such transfer".into())))
    );
    let s = page!(
        ctx,
        t.studies.iter().find(|s| s.study_uid == study).cloned().ok_or_else(|| AppError::NotFound("no such study in this transfer".into()))
    );
    layout(
        &ctx,
        ctx.t("viewer.title"),
        html! {
            h1 { (person_name(&s.patient_name)) " · " (dicom_date(ctx.lang, &s.study_date)) " " span.muted { (s.description) } }
            p { a href={"/transfers/" (t.id)} { (ctx.t("back")) } }
            (crate::ui::viewer_markup(&ctx, &s.study_uid, &s.series))
        },
    )
    .into_response()
}

fn target_state_key(s: ferry_schemas::TargetState) -> &'static str {
    match s {
        ferry_schemas::TargetState::Stored => "target.stored",
        ferry_schemas::TargetState::Pending => "target.pending",
        ferry_schemas::TargetState::Retrying => "target.retrying",
        ferry_schemas::TargetState::Failed => "target.failed",
    }
}
