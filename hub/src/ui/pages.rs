//! The signed-in pages: my sendings, sending (directory search, the send page), a transfer with
//! the clinic's actions, the inbound worklist, the viewer, community management, hub admin and
//! the account page with API tokens.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use ferry_schemas::{CommunitySettings, NewCommunity, NewMember, NewToken, Transfer};
use maud::{Markup, html};
use serde::Deserialize;

use super::{Ctx, dicom_date, error_page, human_size, layout, person_name, script_texts, state_badge, time_ms};
use crate::error::AppError;
use crate::state::AppState;
use crate::transfers::{self, ListQuery, Relation};

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
        .route("/communities/{code}/manage", get(manage).post(manage_settings))
        .route("/communities/{code}/members", post(manage_add_member))
        .route("/communities/{code}/logo", post(manage_logo))
        .route("/communities/{code}/connectors", post(manage_register_connector))
        .route("/communities/{code}/connectors/{id}/revoke", post(manage_revoke_connector))
        .route("/communities/{code}/members/{user}/remove", post(manage_remove_member))
        .route("/communities/{code}/referrers/{user}", post(manage_decide))
        .route("/admin", get(admin).post(admin_create))
        .route("/account", get(account))
        .route("/account/tokens", post(create_token))
        .route("/account/tokens/{id}/revoke", post(revoke_token))
}

/// Requires a signed-in user (else redirect to sign-in).
macro_rules! signed_in {
    ($ctx:expr) => {
        match $ctx.require() {
            Ok((p, a)) => (p.clone(), a.clone()),
            Err(r) => return r.into_response(),
        }
    };
}

fn patients(t: &Transfer) -> String {
    let mut names: Vec<String> = t.studies.iter().map(|s| person_name(&s.patient_name)).collect();
    names.dedup();
    names.join("; ")
}

fn transfers_table(ctx: &Ctx, state: &AppState, list: &[Transfer], inbound: bool) -> Markup {
    let viewer = state.ohif.is_some();
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
                            td { @if t.urgency == "urgent" { strong.urgent { (ctx.t("urgency.urgent")) ": " } } (t.reason) }
                            td { (t.instances) }
                            td { (state_badge(ctx, &t.state)) }
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
        Some(link) if t.state != "draft" || sender => ohif_anchor(ctx, &link),
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
    let found =
        if text.trim().is_empty() { vec![] } else { page!(ctx, crate::communities::search(&state.db, &state.directory, &text, 50).await) };
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
    super::notice(&ctx, ctx.t("send.title"), ctx.t("send.requested"), Some(("/send", ctx.t("back"))))
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
    let open = matches!(t.state.as_str(), "sent" | "received" | "stored" | "failed");
    layout(&ctx, ctx.t("transfer.title"), html! {
        h1 { (ctx.t("transfer.title")) " " (state_badge(&ctx, &t.state)) }
        @if !t.state_message.is_empty() { p.notice id="state-message" { (t.state_message) } }
        dl.facts {
            dt { (ctx.t("transfer.from")) } dd { (t.sender_name) @if !t.sender_practice.is_empty() { " (" (t.sender_practice) ")" } }
            dt { (ctx.t("transfer.to")) } dd { (t.community_name) }
            dt { (ctx.t("transfer.note")) } dd { @if t.urgency == "urgent" { strong.urgent { (ctx.t("urgency.urgent")) } " " } (t.reason) }
            @if !t.appointment.is_empty() { dt { (ctx.t("send.appointment")) } dd { (t.appointment) } }
            dt { (ctx.t("transfer.images")) } dd { (t.instances) " · " (human_size(t.bytes)) }
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
                td { @if t.state != "draft" || rel == Relation::Sender {
                    a href={"/viewer/" (t.id) "/" (s.study_uid)} { (ctx.t("transfer.view")) }
                    @if let Some(link) = crate::ohif::study_link(&state, &[s.study_uid.as_str()]) {
                        " · " (ohif_anchor(&ctx, &link))
                    }
                } }
            } } }
        } }
        @if t.state != "draft" { p { a.button.secondary href={"/api/v1/transfers/" (t.id) "/download"} download { (ctx.t("transfer.download")) } } }
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
                            option value=(s) selected[sel(s, &q.state)] { (ctx.t(super::state_key(s))) }
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
            (super::viewer_markup(&ctx, &s.study_uid, &s.series))
        },
    )
    .into_response()
}

async fn manage(State(state): State<AppState>, ctx: Ctx, Path(code): Path<String>) -> Response {
    manage_page(&state, &ctx, &code, None).await
}

async fn manage_page(state: &AppState, ctx: &Ctx, code: &str, fresh: Option<ferry_schemas::Connector>) -> Response {
    let (state, code) = (state.clone(), code.to_string());
    let (who, _) = signed_in!(ctx);
    let id = page!(ctx, crate::communities::staff::administered(&state, &who, &code).await);
    let c = page!(
        ctx,
        crate::communities::find(&state.db, &code).await.and_then(|c| c.ok_or_else(|| AppError::NotFound("no such community".into())))
    );
    let members = page!(ctx, crate::communities::staff::members(&state, &id).await);
    let referrers = page!(ctx, crate::communities::staff::referrers(&state, &id).await);
    let connectors = page!(ctx, crate::connectors::list(&state, &id).await);
    layout(ctx, ctx.t("nav.manage"), html! {
        h1 { (c.name) " " span.muted { code { (c.code) } } }
        h2 { (ctx.t("manage.members")) }
        div.table-wrap { table {
            thead { tr { th { (ctx.t("name")) } th { (ctx.t("email")) } th { (ctx.t("manage.role")) } th { "" } } }
            tbody { @for m in &members { tr {
                td { (m.name) } td { (m.email.clone().unwrap_or_default()) } td { (m.role) }
                td { form.inline method="post" action={"/communities/" (c.code) "/members/" (m.user_id) "/remove"} { button.link type="submit" { (ctx.t("manage.remove")) } } }
            } } }
        } }
        form.card method="post" action={"/communities/" (c.code) "/members"} {
            h3 { (ctx.t("manage.add")) }
            div.row {
                div { label for="m-email" { (ctx.t("email")) } input id="m-email" type="email" name="email" required; }
                div { label for="m-role" { (ctx.t("manage.role")) } select id="m-role" name="role" { option value="member" { "member" } option value="admin" { "admin" } } }
                button type="submit" { (ctx.t("manage.add")) }
            }
        }
        h2 { (ctx.t("manage.referrers")) }
        div.table-wrap { table {
            thead { tr { th { (ctx.t("name")) } th { (ctx.t("practice")) } th { (ctx.t("address")) } th { (ctx.t("phone")) } th { (ctx.t("transfer.state")) } th { "" } } }
            tbody { @for r in &referrers { tr {
                td { (r.name) br; small { (r.email.clone().unwrap_or_default()) } } td { (r.practice) } td { (r.address) } td { (r.phone) } td { (r.status) }
                td {
                    form.inline method="post" action={"/communities/" (c.code) "/referrers/" (r.user_id)} {
                        input type="hidden" name="status" value="approved"; button.link type="submit" { (ctx.t("manage.approve")) }
                    }
                    form.inline method="post" action={"/communities/" (c.code) "/referrers/" (r.user_id)} {
                        input type="hidden" name="status" value="rejected"; button.link type="submit" { (ctx.t("transfer.reject")) }
                    }
                }
            } } }
        } }
        h2 { "Connectors" }
        @if let Some(f) = &fresh {
            p.notice role="status" id="connector-secret" {
                (ctx.t("account.token.once")) br;
                "client_id: " code { (f.client_id) } br;
                "client_secret: " code { (f.client_secret.clone().unwrap_or_default()) }
            }
        }
        div.table-wrap { table {
            thead { tr { th { (ctx.t("name")) } th { "client_id" } th { "Version" } th { (ctx.t("transfer.state")) } th { "" } } }
            tbody { @for k in &connectors { tr data-connector=(k.id) {
                td { (k.name) } td { code { (k.client_id) } } td { (k.version) }
                td {
                    @if k.revoked { "revoked" } @else {
                        @if let Some(t) = k.last_seen_at { (time_ms(ctx.lang, t)) } @else { "–" }
                        " · queue " (k.queue_depth)
                        @if !k.last_error.is_empty() { br; span.error { (k.last_error) } }
                    }
                }
                td { @if !k.revoked { form.inline method="post" action={"/communities/" (c.code) "/connectors/" (k.id) "/revoke"} { button.link type="submit" { (ctx.t("manage.remove")) } } } }
            } } }
        } }
        form.card method="post" action={"/communities/" (c.code) "/connectors"} {
            div.row {
                div { label for="k-name" { (ctx.t("name")) } input id="k-name" name="name" required maxlength="100"; }
                button type="submit" { "Register connector" }
            }
        }
        h2 { (ctx.t("manage.settings")) }
        form.card method="post" action={"/communities/" (c.code) "/logo"} enctype="multipart/form-data" {
            @if c.has_logo { img.logo src={"/api/v1/communities/" (c.code) "/logo"} alt="Logo" height="48"; }
            label for="logo" { "Logo (PNG/JPEG, ≤ 256 KB)" }
            input id="logo" type="file" name="logo" accept="image/png,image/jpeg" required;
            button type="submit" { (ctx.t("save")) }
        }
        form.card method="post" action={"/communities/" (c.code) "/manage"} {
            label.check { input type="checkbox" name="requires_approval" value="on" checked[c.requires_approval]; " " (ctx.t("manage.requires_approval")) }
            label.check { input type="checkbox" name="accepts_inbound" value="on" checked[c.accepts_inbound]; " " (ctx.t("manage.accepts_inbound")) }
            label for="days" { (ctx.t("manage.share_days")) }
            input id="days" type="number" name="default_share_days" min="1" max="3650" value=(c.default_share_days);
            label for="contact" { (ctx.t("manage.contact")) }
            input id="contact" name="contact" value=(c.contact);
            label for="address" { (ctx.t("address")) }
            input id="address" name="address" value=(c.address);
            button type="submit" { (ctx.t("save")) }
        }
    })
    .into_response()
}

#[derive(Deserialize)]
struct SettingsForm {
    requires_approval: Option<String>,
    accepts_inbound: Option<String>,
    default_share_days: Option<u32>,
    contact: Option<String>,
    address: Option<String>,
}

async fn manage_settings(State(state): State<AppState>, ctx: Ctx, Path(code): Path<String>, Form(f): Form<SettingsForm>) -> Response {
    let (who, _) = signed_in!(ctx);
    let id = page!(ctx, crate::communities::staff::administered(&state, &who, &code).await);
    let s = CommunitySettings {
        requires_approval: Some(f.requires_approval.is_some()),
        accepts_inbound: Some(f.accepts_inbound.is_some()),
        default_share_days: f.default_share_days,
        contact: f.contact,
        address: f.address,
        departments: None,
    };
    page!(ctx, crate::communities::staff::configure(&state, &who, &id, &s).await);
    Redirect::to(&format!("/communities/{code}/manage")).into_response()
}

async fn manage_add_member(State(state): State<AppState>, ctx: Ctx, Path(code): Path<String>, Form(m): Form<NewMember>) -> Response {
    let (who, _) = signed_in!(ctx);
    let id = page!(ctx, crate::communities::staff::administered(&state, &who, &code).await);
    page!(ctx, crate::communities::staff::put_member(&state, &who, &id, &m).await);
    Redirect::to(&format!("/communities/{code}/manage")).into_response()
}

async fn manage_remove_member(State(state): State<AppState>, ctx: Ctx, Path((code, user)): Path<(String, String)>) -> Response {
    let (who, _) = signed_in!(ctx);
    let id = page!(ctx, crate::communities::staff::administered(&state, &who, &code).await);
    page!(ctx, crate::communities::staff::remove_member(&state, &who, &id, &user).await);
    Redirect::to(&format!("/communities/{code}/manage")).into_response()
}

#[derive(Deserialize)]
struct StatusForm {
    status: String,
}

async fn manage_decide(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((code, user)): Path<(String, String)>,
    Form(f): Form<StatusForm>,
) -> Response {
    let (who, _) = signed_in!(ctx);
    let id = page!(ctx, crate::communities::staff::administered(&state, &who, &code).await);
    page!(ctx, crate::communities::staff::decide_referrer(&state, &who, &id, &user, &f.status).await);
    Redirect::to(&format!("/communities/{code}/manage")).into_response()
}

async fn admin(State(state): State<AppState>, ctx: Ctx) -> Response {
    let (who, _) = signed_in!(ctx);
    if !who.is_admin() {
        return error_page(&ctx, AppError::Forbidden);
    }
    let all = page!(ctx, crate::communities::search(&state.db, &state.directory, "", 200).await);
    layout(&ctx, ctx.t("nav.admin"), html! {
        h1 { (ctx.t("nav.admin")) }
        form.card method="post" action="/admin" {
            h2 { (ctx.t("admin.create")) }
            label for="c-name" { (ctx.t("name")) } input id="c-name" name="name" required;
            label for="c-code" { (ctx.t("admin.code")) } input id="c-code" name="code" pattern="[A-Za-z0-9]{3,12}";
            label for="c-city" { (ctx.t("admin.city")) } input id="c-city" name="city";
            label for="c-address" { (ctx.t("address")) } input id="c-address" name="address";
            label for="c-departments" { (ctx.t("admin.departments")) } input id="c-departments" name="departments";
            label for="c-contact" { (ctx.t("manage.contact")) } input id="c-contact" name="contact";
            button type="submit" { (ctx.t("admin.create")) }
        }
        h2 { (ctx.t("admin.communities")) }
        ul { @for c in &all { li { (c.name) " · " (c.city) " · " code { (c.code) } " · " a href={"/communities/" (c.code) "/manage"} { (ctx.t("nav.manage")) } } } }
    })
    .into_response()
}

#[derive(Deserialize)]
struct CommunityForm {
    name: String,
    code: Option<String>,
    #[serde(default)]
    city: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    departments: String,
    #[serde(default)]
    contact: String,
}

async fn admin_create(State(state): State<AppState>, ctx: Ctx, Form(f): Form<CommunityForm>) -> Response {
    let (who, _) = signed_in!(ctx);
    if !who.is_admin() {
        return error_page(&ctx, AppError::Forbidden);
    }
    let new = NewCommunity {
        name: f.name,
        code: f.code.filter(|c| !c.trim().is_empty()).map(|c| c.trim().to_string()),
        city: f.city,
        address: f.address,
        departments: f.departments.split(',').map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect(),
        contact: f.contact,
        accepts_inbound: Some(true),
    };
    let c = page!(ctx, crate::communities::create(&state.db_write, &who.log_id(), &new).await);
    Redirect::to(&format!("/communities/{}/manage", c.code)).into_response()
}

async fn account(State(state): State<AppState>, ctx: Ctx) -> Response {
    account_page(&state, &ctx, None).await
}

async fn account_page(state: &AppState, ctx: &Ctx, fresh: Option<ferry_schemas::ApiToken>) -> Response {
    let (_, a) = signed_in!(ctx);
    let tokens = page!(ctx, crate::accounts::list_tokens(state, &a.id).await);
    layout(ctx, ctx.t("account.title"), html! {
        h1 { (ctx.t("account.title")) }
        dl.facts {
            dt { (ctx.t("name")) } dd { (a.name) }
            dt { (ctx.t("email")) } dd { (a.email.clone().unwrap_or_default()) }
            dt { (ctx.t("practice")) } dd { (a.practice) }
            dt { (ctx.t("address")) } dd { (a.address) }
            dt { (ctx.t("phone")) } dd { (a.phone) }
        }
        @if !state.config.auth.oidc.is_empty() {
            p { @for p in &state.config.auth.oidc { a.button.secondary href={"/auth/oidc/" (p.id) "/start?link=1&return_to=/account"} { (ctx.t("account.link")) " " (if p.label.is_empty() { &p.id } else { &p.label }) } " " } }
        }
        h2 { (ctx.t("account.tokens")) }
        @if let Some(t) = &fresh { p.notice role="status" { (ctx.t("account.token.once")) br; code id="new-token" { (t.token.clone().unwrap_or_default()) } } }
        ul { @for t in &tokens { li { (t.name) " · " (time_ms(ctx.lang, t.expires_at)) " "
            form.inline method="post" action={"/account/tokens/" (t.id) "/revoke"} { button.link type="submit" { (ctx.t("manage.remove")) } } } } }
        form.card method="post" action="/account/tokens" {
            div.row {
                div { label for="t-name" { (ctx.t("account.token.name")) } input id="t-name" name="name" required; }
                div { label for="t-days" { (ctx.t("account.token.days")) } input id="t-days" type="number" name="expires_in_days" value="90" min="1" max="365"; }
                button type="submit" { (ctx.t("account.token.create")) }
            }
        }
    })
    .into_response()
}

async fn create_token(State(state): State<AppState>, ctx: Ctx, Form(n): Form<NewToken>) -> Response {
    let (who, a) = signed_in!(ctx);
    if let Err(e) = who.require_session_user() {
        return e.into_response();
    }
    let t = page!(ctx, crate::accounts::create_token(&state, &a.id, &n).await);
    account_page(&state, &ctx, Some(t)).await
}

async fn revoke_token(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let (who, a) = signed_in!(ctx);
    if let Err(e) = who.require_session_user() {
        return e.into_response();
    }
    page!(ctx, crate::accounts::revoke_token(&state, &a.id, &id).await);
    Redirect::to("/account").into_response()
}

async fn manage_logo(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(code): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    let (who, _) = signed_in!(ctx);
    let id = page!(ctx, crate::communities::staff::administered(&state, &who, &code).await);
    let boundary =
        headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        return error_page(&ctx, AppError::BadRequest("send the logo as a form upload".into()));
    };
    let constraints = multer::Constraints::new()
        .size_limit(multer::SizeLimit::new().whole_stream(crate::communities::logo::MAX_BYTES as u64 + 16 * 1024));
    let mut mp = multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let bytes = match mp.next_field().await {
        Ok(Some(field)) => page!(
            ctx,
            field.bytes().await.map_err(|e| AppError::PayloadTooLarge(format!("the logo is too large or the upload broke: {e}")))
        ),
        _ => return error_page(&ctx, AppError::BadRequest("no logo in the form".into())),
    };
    page!(ctx, crate::communities::logo::store(&state.db_write, &id, &bytes).await);
    Redirect::to(&format!("/communities/{code}/manage")).into_response()
}

async fn manage_register_connector(
    State(state): State<AppState>,
    ctx: Ctx,
    Path(code): Path<String>,
    Form(n): Form<ferry_schemas::NewConnector>,
) -> Response {
    let (who, _) = signed_in!(ctx);
    let id = page!(ctx, crate::communities::staff::administered(&state, &who, &code).await);
    let c = page!(ctx, crate::connectors::register(&state, &who, &id, &n).await);
    manage_page(&state, &ctx, &code, Some(c)).await
}

async fn manage_revoke_connector(State(state): State<AppState>, ctx: Ctx, Path((code, connector)): Path<(String, String)>) -> Response {
    let (who, _) = signed_in!(ctx);
    let id = page!(ctx, crate::communities::staff::administered(&state, &who, &code).await);
    page!(ctx, crate::connectors::revoke(&state, &who, &id, &connector).await);
    Redirect::to(&format!("/communities/{code}/manage")).into_response()
}
