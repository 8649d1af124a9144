//! The communities' pages: community management (settings, members, referrers, logo,
//! connectors) for its admins, and the hub admin's page that creates communities.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use ferry_schemas::{CommunitySettings, NewCommunity, NewMember};
use maud::html;
use serde::Deserialize;

use crate::error::AppError;
use crate::state::AppState;
use crate::ui::{Ctx, error_page, layout, time_ms};
use crate::ui::{page, signed_in};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/communities/{code}/manage", get(manage).post(manage_settings))
        .route("/communities/{code}/members", post(manage_add_member))
        .route("/communities/{code}/logo", post(manage_logo))
        .route("/communities/{code}/connectors", post(manage_register_connector))
        .route("/communities/{code}/connectors/{id}/revoke", post(manage_revoke_connector))
        .route("/communities/{code}/members/{user}/remove", post(manage_remove_member))
        .route("/communities/{code}/referrers/{user}", post(manage_decide))
        .route("/admin", get(admin).post(admin_create))
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
    let connectors = page!(ctx, super::connectors::list(&state, &id).await);
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
                        span.health data-health=(k.health.as_str()) { (health_label(ctx, k)) }
                        @if let Some(t) = k.last_seen_at { " · " (ctx.t("connector.heartbeat")) " " (ago(ctx, t)) }
                        " · queue " (k.queue_depth)
                        @for t in &k.targets { br; span.target data-target=(t.target) {
                            (t.target) ": "
                            @if t.retrying {
                                span.error { (ctx.t("connector.retrying")) @if let Some(since) = t.since { " " (ctx.t("connector.since")) " " (time_ms(ctx.lang, since)) } }
                                @if !t.last_answer.is_empty() { " — " (t.last_answer) }
                            } @else { (ctx.t("connector.target.ok")) }
                            @if t.queue_depth > 0 { " · " (t.queue_depth) " " (ctx.t("connector.waiting")) }
                        } }
                        @if !k.last_error.is_empty() {
                            br; span.error { @if let Some(at) = k.last_error_at { (time_ms(ctx.lang, at)) ": " } (k.last_error) }
                        }
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
    let all = page!(ctx, crate::communities::search(&state, "", 200).await);
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
    let c = page!(ctx, super::connectors::register(&state, &who, &id, &n).await);
    manage_page(&state, &ctx, &code, Some(c)).await
}

async fn manage_revoke_connector(State(state): State<AppState>, ctx: Ctx, Path((code, connector)): Path<(String, String)>) -> Response {
    let (who, _) = signed_in!(ctx);
    let id = page!(ctx, crate::communities::staff::administered(&state, &who, &code).await);
    page!(ctx, super::connectors::revoke(&state, &who, &id, &connector).await);
    Redirect::to(&format!("/communities/{code}/manage")).into_response()
}

/// "healthy", "degraded (archive)", "unreachable" or "never seen", in the page's language.
fn health_label(ctx: &Ctx, k: &ferry_schemas::Connector) -> String {
    match k.health {
        ferry_schemas::ConnectorHealth::Healthy => ctx.t("connector.healthy").to_string(),
        ferry_schemas::ConnectorHealth::Degraded => {
            let sick: Vec<&str> = k.targets.iter().filter(|t| t.retrying).map(|t| t.target.as_str()).collect();
            if sick.is_empty() {
                ctx.t("connector.degraded").to_string()
            } else {
                format!("{} ({})", ctx.t("connector.degraded"), sick.join(", "))
            }
        }
        ferry_schemas::ConnectorHealth::Unreachable => ctx.t("connector.unreachable").to_string(),
        ferry_schemas::ConnectorHealth::Unknown => ctx.t("connector.unknown").to_string(),
    }
}

/// "12 s ago", "5 min ago", "3 h ago" (German: "vor 12 s").
fn ago(ctx: &Ctx, at: i64) -> String {
    let secs = ((crate::db::now_ms() - at) / 1000).max(0);
    let amount = match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        _ => format!("{} h", secs / 3600),
    };
    match ctx.lang {
        crate::ui::i18n::Lang::De => format!("vor {amount}"),
        _ => format!("{amount} ago"),
    }
}
