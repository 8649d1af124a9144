//! The account page: the signed-in person's details and personal access tokens.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use ferry_schemas::NewToken;
use maud::html;

use crate::state::AppState;
use crate::ui::{Ctx, layout, time_ms};
use crate::ui::{page, signed_in};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/account", get(account))
        .route("/account/tokens", post(create_token))
        .route("/account/tokens/{id}/revoke", post(revoke_token))
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
