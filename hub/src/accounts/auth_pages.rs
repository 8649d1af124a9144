//! Sign-in, registration, email confirmation, password reset, first-admin setup, sign-out and
//! the language switch.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use ferry_schemas::Registration;
use maud::{Markup, html};
use serde::Deserialize;

use crate::state::AppState;
use crate::ui::{Ctx, error_box, layout, notice};

pub fn router(state: &AppState) -> Router<AppState> {
    let limited = Router::new()
        .route("/login", post(login_submit))
        .route("/register", post(register_submit))
        .route("/forgot", post(forgot_submit))
        .route("/reset", post(reset_submit))
        .route("/setup", post(setup_submit));
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page))
        .route("/register", get(register_page))
        .route("/verify", get(verify))
        .route("/forgot", get(forgot_page))
        .route("/reset", get(reset_page))
        .route("/setup", get(setup_page))
        .route("/logout", post(logout))
        .route("/lang/{lang}", get(switch_lang))
        .merge(state.auth_limit.wrap(limited))
}

#[derive(Deserialize, Default)]
pub struct ReturnTo {
    return_to: Option<String>,
}

async fn home(ctx: Ctx) -> Response {
    if ctx.account.is_some() {
        return Redirect::to("/app").into_response();
    }
    layout(
        &ctx,
        "Ferry",
        html! {
            h1 { "Ferry" }
            p.lead { (ctx.t("tagline")) }
            p { a.button href="/login" { (ctx.t("nav.login")) } " " a.button.secondary href="/register" { (ctx.t("nav.register")) } }
        },
    )
    .into_response()
}

fn login_form(ctx: &Ctx, state: &AppState, error: Option<&str>, email: &str, return_to: &str) -> Markup {
    layout(
        ctx,
        ctx.t("login.title"),
        html! {
            h1 { (ctx.t("login.title")) }
            (error_box(error))
            form.card method="post" action="/login" {
                input type="hidden" name="return_to" value=(return_to);
                label for="email" { (ctx.t("email")) }
                input id="email" type="email" name="email" value=(email) required autocomplete="username" autofocus;
                label for="password" { (ctx.t("password")) }
                input id="password" type="password" name="password" required autocomplete="current-password";
                button type="submit" { (ctx.t("login.submit")) }
            }
            @if !state.config.auth.oidc.is_empty() {
                section.card aria-label=(ctx.t("login.with")) {
                    @for p in &state.config.auth.oidc {
                        a.button.secondary href={"/auth/oidc/" (p.id) "/start?return_to=" (crate::ui::urlencode(return_to))} {
                            (ctx.t("login.with")) " " (if p.label.is_empty() { &p.id } else { &p.label })
                        }
                    }
                }
            }
            p { a href="/forgot" { (ctx.t("login.forgot")) } }
            p { a href="/register" { (ctx.t("login.noaccount")) } }
        },
    )
}

async fn login_page(State(state): State<AppState>, ctx: Ctx, Query(q): Query<ReturnTo>) -> Markup {
    login_form(&ctx, &state, None, "", &crate::accounts::local_path(q.return_to.as_deref(), "/app"))
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    return_to: Option<String>,
}

async fn login_submit(State(state): State<AppState>, ctx: Ctx, jar: CookieJar, Form(f): Form<LoginForm>) -> Response {
    let back = crate::accounts::local_path(f.return_to.as_deref(), "/app");
    match crate::accounts::login(&state, &f.email, f.password).await {
        Ok((_, token)) => (jar.add(crate::accounts::session_cookie(&state, token)), Redirect::to(&back)).into_response(),
        Err(e) => with_status(login_form(&ctx, &state, Some(&e.to_string()), &f.email, &back), &e),
    }
}

fn register_form(ctx: &Ctx, error: Option<&str>, r: &Registration) -> Markup {
    layout(
        ctx,
        ctx.t("register.title"),
        html! {
            h1 { (ctx.t("register.title")) }
            p { (ctx.t("register.intro")) }
            (error_box(error))
            form.card method="post" action="/register" {
                label for="name" { (ctx.t("name")) }
                input id="name" name="name" value=(r.name) required autocomplete="name";
                label for="practice" { (ctx.t("practice")) }
                input id="practice" name="practice" value=(r.practice) autocomplete="organization";
                label for="address" { (ctx.t("address")) }
                input id="address" name="address" value=(r.address) autocomplete="street-address";
                label for="phone" { (ctx.t("phone")) }
                input id="phone" type="tel" name="phone" value=(r.phone) autocomplete="tel";
                label for="email" { (ctx.t("email")) }
                input id="email" type="email" name="email" value=(r.email) required autocomplete="email";
                label for="password" { (ctx.t("password.new")) }
                input id="password" type="password" name="password" required minlength="10" autocomplete="new-password";
                button type="submit" { (ctx.t("register.submit")) }
            }
        },
    )
}

async fn register_page(ctx: Ctx) -> Markup {
    register_form(&ctx, None, &Registration::default())
}

async fn register_submit(State(state): State<AppState>, ctx: Ctx, Form(r): Form<Registration>) -> Response {
    let keep = Registration { password: String::new(), ..r.clone() };
    match crate::accounts::register(&state, r).await {
        Ok(()) => notice(&ctx, ctx.t("register.title"), ctx.t("register.done"), None),
        Err(e) => with_status(register_form(&ctx, Some(&e.to_string()), &keep), &e),
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn verify(State(state): State<AppState>, ctx: Ctx, Query(q): Query<TokenQuery>) -> Response {
    match crate::accounts::verify_email(&state, q.token.as_deref().unwrap_or("")).await {
        Ok(()) => notice(&ctx, ctx.t("login.title"), ctx.t("verify.done"), Some(("/login", ctx.t("login.submit")))),
        Err(e) => crate::ui::error_page(&ctx, e),
    }
}

async fn forgot_page(ctx: Ctx) -> Markup {
    layout(
        &ctx,
        ctx.t("forgot.title"),
        html! {
            h1 { (ctx.t("forgot.title")) }
            form.card method="post" action="/forgot" {
                label for="email" { (ctx.t("email")) }
                input id="email" type="email" name="email" required autocomplete="email";
                button type="submit" { (ctx.t("forgot.submit")) }
            }
        },
    )
}

#[derive(Deserialize)]
struct EmailForm {
    email: String,
}

async fn forgot_submit(State(state): State<AppState>, ctx: Ctx, Form(f): Form<EmailForm>) -> Response {
    match crate::accounts::request_reset(&state, &f.email).await {
        Ok(()) => notice(&ctx, ctx.t("forgot.title"), ctx.t("forgot.done"), None),
        Err(e) => crate::ui::error_page(&ctx, e),
    }
}

fn reset_form(ctx: &Ctx, token: &str, error: Option<&str>) -> Markup {
    layout(
        ctx,
        ctx.t("forgot.title"),
        html! {
            h1 { (ctx.t("forgot.title")) }
            (error_box(error))
            form.card method="post" action="/reset" {
                input type="hidden" name="token" value=(token);
                label for="password" { (ctx.t("password.new")) }
                input id="password" type="password" name="password" required minlength="10" autocomplete="new-password";
                button type="submit" { (ctx.t("reset.submit")) }
            }
        },
    )
}

async fn reset_page(ctx: Ctx, Query(q): Query<TokenQuery>) -> Markup {
    reset_form(&ctx, q.token.as_deref().unwrap_or(""), None)
}

#[derive(Deserialize)]
struct ResetForm {
    token: String,
    password: String,
}

async fn reset_submit(State(state): State<AppState>, ctx: Ctx, Form(f): Form<ResetForm>) -> Response {
    match crate::accounts::reset_password(&state, &f.token, f.password).await {
        Ok(()) => notice(&ctx, ctx.t("forgot.title"), ctx.t("reset.done"), Some(("/login", ctx.t("login.submit")))),
        Err(e) => with_status(reset_form(&ctx, &f.token, Some(&e.to_string())), &e),
    }
}

fn setup_form(ctx: &Ctx, token: &str, error: Option<&str>) -> Markup {
    layout(
        ctx,
        ctx.t("setup.title"),
        html! {
            h1 { (ctx.t("setup.title")) }
            (error_box(error))
            form.card method="post" action="/setup" {
                input type="hidden" name="token" value=(token);
                label for="name" { (ctx.t("name")) }
                input id="name" name="name" required;
                label for="email" { (ctx.t("email")) }
                input id="email" type="email" name="email" required autocomplete="username";
                label for="password" { (ctx.t("password.new")) }
                input id="password" type="password" name="password" required minlength="10" autocomplete="new-password";
                button type="submit" { (ctx.t("setup.submit")) }
            }
        },
    )
}

async fn setup_page(ctx: Ctx, Query(q): Query<TokenQuery>) -> Markup {
    setup_form(&ctx, q.token.as_deref().unwrap_or(""), None)
}

#[derive(Deserialize)]
struct SetupForm {
    token: String,
    name: String,
    email: String,
    password: String,
}

async fn setup_submit(State(state): State<AppState>, ctx: Ctx, Form(f): Form<SetupForm>) -> Response {
    let r = Registration { email: f.email, password: f.password, name: f.name, ..Default::default() };
    match crate::accounts::setup_admin(&state, &f.token, r).await {
        Ok(_) => notice(&ctx, ctx.t("setup.title"), ctx.t("verify.done"), Some(("/login", ctx.t("login.submit")))),
        Err(e) => with_status(setup_form(&ctx, &f.token, Some(&e.to_string())), &e),
    }
}

async fn logout(State(state): State<AppState>, jar: CookieJar) -> Response {
    match crate::accounts::logout(&state, jar).await {
        Ok(jar) => (jar, Redirect::to("/")).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn switch_lang(jar: CookieJar, Path(lang): Path<String>, Query(q): Query<ReturnTo>) -> Response {
    let lang = if lang == "en" { "en" } else { "de" };
    let cookie = Cookie::build(("lang", lang.to_string())).path("/").same_site(SameSite::Lax).max_age(time::Duration::days(365)).build();
    let back = crate::accounts::local_path(q.return_to.as_deref(), "/");
    (jar.add(cookie), Redirect::to(&back)).into_response()
}

/// A form shown again with its error, answered with the error's status.
fn with_status(page: Markup, e: &crate::error::AppError) -> Response {
    let mut r = page.into_response();
    *r.status_mut() = e.status();
    r
}
