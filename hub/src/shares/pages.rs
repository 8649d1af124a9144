//! The pages of access codes. For holders: redeeming (the code, from the QR link or typed, then
//! the question), the overview with thumbnails, report status and downloads, the viewer,
//! forwarding and deleting. For clinic staff: the list of shares, sharing studies the clinic holds
//! or uploaded files, a share's page (extend, revoke, unlock, reissue, reports, access log) and
//! the printable sheet.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use ferry_schemas::{ExtendShare, IssuedShare, NewShare, ShareOptions, SheetRequest};
use maud::{Markup, PreEscaped, html};
use serde::Deserialize;

use super::db;
use super::holder::{self, ShareHolder};
use super::redeem::{self, Outcome, SessionKind};
use crate::error::AppError;
use crate::state::AppState;
use crate::ui::{Ctx, dicom_date, error_page, human_size, layout, person_name, time_ms};

pub fn router(state: &AppState) -> Router<AppState> {
    // The page looks the code of its link up: one budget with the answers, as in DLX.
    let limited = Router::new().route("/redeem", get(redeem_page).post(redeem_submit));
    Router::new()
        .merge(state.redeem_limit.wrap(limited))
        .route("/s", get(overview))
        .route("/s/view/{study}", get(view_study))
        .route("/s/forward", post(forward))
        .route("/s/delete", post(delete))
        .route("/s/logout", post(logout))
        .route("/shares", get(staff_list))
        .route("/shares/new", get(new_page).post(new_submit))
        .route("/shares/upload", post(upload_submit).layer(DefaultBodyLimit::disable()))
        .route("/shares/{id}", get(staff_page))
        .route("/shares/{id}/issue", post(issue_submit))
        .route("/shares/{id}/extend", post(extend_submit))
        .route("/shares/{id}/revoke", post(revoke_submit))
        .route("/shares/{id}/unlock", post(unlock_submit))
        .route("/shares/{id}/reissue", post(reissue_submit))
        .route("/shares/{id}/report", post(report_submit).layer(DefaultBodyLimit::max(super::reports::MAX_BYTES + 65536)))
        .route("/shares/{id}/sheet.pdf", post(sheet_submit))
}

use crate::ui::page;

/// Form fields as pairs (repeated names allowed).
fn pairs(body: &[u8]) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body).unwrap_or_default()
}

fn field<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.trim().is_empty())
}

// ---- holders ------------------------------------------------------------------------------

#[derive(Deserialize, Default)]
struct TokenQuery {
    token: Option<String>,
}

/// The redeem page; asked with the DLX header it answers like `/dlx/v1/token/{value}`. A code in
/// the link is looked up as there (audited; rate limited with the answers).
async fn redeem_page(
    State(state): State<AppState>,
    ctx: Ctx,
    ci: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Response {
    let token = q.token.unwrap_or_default();
    let client = crate::http::client_addr(&ci);
    if headers.contains_key(ferry_schemas::dlx::HEADER) {
        return match crate::shares::dlx::lookup_questions(&state, &token, &client).await {
            Ok(info) => Json(info).into_response(),
            Err(e) => e.into_response(),
        };
    }
    let lookup = (!token.trim().is_empty()).then_some(client.as_str());
    redeem_form(&state, &ctx, &token, lookup, None, StatusCode::OK).await
}

/// The form for `token`; `lookup`: the client address when the page looks the code up for an
/// outsider (audited), `None` after an answer (audited already).
async fn redeem_form(state: &AppState, ctx: &Ctx, token: &str, lookup: Option<&str>, error: Option<&str>, status: StatusCode) -> Response {
    let info = match lookup {
        Some(client) => crate::shares::dlx::lookup_questions(state, token, client).await,
        None => crate::shares::dlx::questions(state, token).await,
    };
    let question = page!(ctx, info).tfa_question.into_iter().next();
    let text = question
        .as_ref()
        .and_then(|q| q.question.iter().find(|t| t.language == ctx.lang.code()).or(q.question.first()))
        .map(|t| t.text.clone())
        .unwrap_or_default();
    let is_date = question.as_ref().is_some_and(|q| q.answer_format == "DATE");
    let mut r = layout(ctx, ctx.l("Zugangscode einlösen", "Redeem an access code"), html! {
        h1 { (ctx.l("Ihre Bilder ansehen", "See your images")) }
        p { (ctx.l("Geben Sie den Zugangscode von Ihrem Blatt ein und beantworten Sie die Frage.", "Enter the access code from your sheet and answer the question.")) }
        (crate::ui::error_box(error))
        form.card method="post" action="/redeem" autocomplete="off" {
            label for="token" { (ctx.l("Zugangscode", "Access code")) }
            input id="token" name="token" value=(token) required autocapitalize="characters" spellcheck="false" placeholder="XXXX-XXXX-XXXX" class="code";
            label for="answer" { (text) }
            @if is_date {
                input id="answer" name="answer" required inputmode="numeric" placeholder=(ctx.l("TT.MM.JJJJ", "DD.MM.YYYY"));
            } @else {
                input id="answer" name="answer" required autocapitalize="characters" spellcheck="false";
            }
            p.muted { (ctx.l("Nach mehreren falschen Antworten wird der Code eine Zeit lang gesperrt; die Praxis kann ihn entsperren.", "After several wrong answers the code is locked for a while; the clinic can unlock it.")) }
            button type="submit" { (ctx.l("Weiter", "Continue")) }
        }
    })
    .into_response();
    *r.status_mut() = status;
    r
}

async fn redeem_submit(State(state): State<AppState>, ctx: Ctx, ci: ConnectInfo<SocketAddr>, jar: CookieJar, body: Bytes) -> Response {
    let f = pairs(&body);
    let token = field(&f, "token").unwrap_or("").trim().to_string();
    let answers = [ferry_schemas::dlx::Answer { question_id: "1".into(), answer: field(&f, "answer").unwrap_or("").to_string() }];
    let outcome = page!(ctx, redeem::redeem(&state, &token, &answers, SessionKind::Browser, &crate::http::client_addr(&ci)).await);
    match outcome {
        Outcome::Granted { token, .. } => (jar.add(holder::cookie(&state, token)), Redirect::to("/s")).into_response(),
        Outcome::Denied => {
            let msg = ctx.l(
                "Code oder Antwort stimmen nicht, oder der Code ist nach zu vielen falschen Antworten vorübergehend gesperrt.",
                "The code or the answer is wrong, or the code is locked for a while after too many wrong answers.",
            );
            redeem_form(&state, &ctx, &token, None, Some(msg), StatusCode::UNAUTHORIZED).await
        }
        Outcome::Expired => {
            let msg = ctx
                .l("Diese Freigabe ist abgelaufen. Die Praxis kann sie verlängern.", "This share has expired. The clinic can extend it.");
            redeem_form(&state, &ctx, &token, None, Some(msg), StatusCode::FORBIDDEN).await
        }
        Outcome::Typo(_) => {
            let msg = ctx.l(
                "Dieser Code enthält einen Tippfehler. Bitte prüfen Sie jedes Zeichen.",
                "This code has a typo. Please check every character.",
            );
            redeem_form(&state, &ctx, &token, None, Some(msg), StatusCode::BAD_REQUEST).await
        }
    }
}

/// The holder from the share cookie, or a redirect to the redeem page.
async fn holder_or_redirect(state: &AppState, jar: &CookieJar) -> Result<ShareHolder, Response> {
    match holder::by_cookie(state, jar).await {
        Ok(Some(h)) => Ok(h),
        Ok(None) => Err(Redirect::to("/redeem").into_response()),
        Err(e) => Err(e.into_response()),
    }
}

macro_rules! holder {
    ($state:expr, $jar:expr) => {
        match holder_or_redirect(&$state, &$jar).await {
            Ok(h) => h,
            Err(r) => return r,
        }
    };
}

fn date_of(ctx: &Ctx, ms: i64) -> String {
    time_ms(ctx.lang, ms).split(' ').next().unwrap_or_default().to_string()
}

async fn overview(State(state): State<AppState>, ctx: Ctx, jar: CookieJar) -> Response {
    let h = holder!(state, jar);
    let v = page!(ctx, holder::view(&state, &h.share).await);
    let patient = v.studies.first().map(|s| person_name(&s.patient_name)).unwrap_or_default();
    layout(&ctx, ctx.l("Ihre Bilder", "Your images"), html! {
        h1 { (ctx.l("Ihre Bilder", "Your images")) " " span.muted { (patient) } }
        p { (v.community_name) " · " (ctx.l("verfügbar bis", "available until")) " " strong id="expires" { (date_of(&ctx, v.expires_at)) } }
        p.notice role="note" { (ctx.l("Vorschau, nicht für die Befundung. Für Ihre Ärztin / Ihren Arzt: alles als ZIP herunterladen (Import in jedes PACS).", "Preview, not for diagnostic use. For your doctor: download everything as a ZIP (any PACS imports it).")) }
        p { a.button id="download-all" href="/api/v1/share/download" download { (ctx.l("Alles herunterladen (ZIP)", "Download everything (ZIP)")) } }
        ul.studies {
            @for s in &v.studies {
                li.card data-study=(s.study_uid) {
                    a href={"/s/view/" (s.study_uid)} {
                        img src={"/dicomweb/studies/" (s.study_uid) "/thumbnail"} alt="" width="192" height="192" loading="lazy";
                    }
                    h2 { (dicom_date(ctx.lang, &s.study_date)) " " (s.modalities.join(", ")) }
                    p { (s.description) br; span.muted { (s.series.len()) " " (ctx.l("Serien", "series")) ", " (s.instances) " " (ctx.l("Bilder", "images")) ", " (human_size(s.bytes)) } }
                    p {
                        a.button href={"/s/view/" (s.study_uid)} { (ctx.l("Ansehen", "View")) } " "
                        a.button.secondary href={"/api/v1/share/studies/" (s.study_uid) "/download"} download { "ZIP" }
                    }
                }
            }
        }
        h2 { (ctx.l("Befund", "Report")) }
        @if v.reports.is_empty() {
            p id="report-status" { (ctx.l("Befund noch nicht verfügbar.", "Report not yet available.")) }
        } @else {
            ul id="reports" {
                @for r in &v.reports {
                    li {
                        @if r.released {
                            a href={"/api/v1/share/reports/" (r.id)} target="_blank" rel="noopener" { (ctx.l("Befund öffnen (PDF)", "Open the report (PDF)")) }
                        } @else {
                            span { (ctx.l("Befund noch nicht verfügbar – ab", "Report not yet available – from")) " " (time_ms(ctx.lang, r.release_at)) }
                        }
                    }
                }
            }
        }
        @if v.can_forward {
            details.card {
                summary { (ctx.l("An eine Ärztin / einen Arzt weitergeben", "Forward to a doctor")) }
                form method="post" action="/s/forward" {
                    p { (ctx.l("Sie erhalten einen eigenen Code für die gewählten Untersuchungen. Er gilt höchstens so lange wie Ihrer.", "You get a code of its own for the chosen studies. It never lasts longer than yours.")) }
                    @for s in &v.studies {
                        label.check { input type="checkbox" name="study" value=(s.study_uid) checked; " " (dicom_date(ctx.lang, &s.study_date)) " " (s.description) }
                    }
                    label for="fwd-factor" { (ctx.l("Zweiter Faktor", "Second factor")) }
                    select id="fwd-factor" name="second_factor" {
                        option value="password" { (ctx.l("Einmal-Passwort", "One-time password")) }
                        option value="birth_date" { (ctx.l("Geburtsdatum", "Date of birth")) }
                    }
                    button type="submit" { (ctx.l("Code erzeugen", "Create a code")) }
                }
            }
        }
        details.card {
            summary { (ctx.l("Freigabe löschen", "Delete this share")) }
            form method="post" action="/s/delete" {
                p { (ctx.l("Der Code und weitergegebene Codes werden ungültig; die Bilder werden gelöscht, soweit die Praxis sie nicht anderweitig aufbewahrt.", "The code and any forwarded codes stop working; the images are deleted unless the clinic keeps them otherwise.")) }
                label.check { input type="checkbox" name="confirm" value="yes" required; " " (ctx.l("Ja, endgültig löschen", "Yes, delete for good")) }
                button.danger type="submit" { (ctx.l("Löschen", "Delete")) }
            }
        }
        form method="post" action="/s/logout" { button.secondary type="submit" { (ctx.l("Abmelden", "Sign out")) } }
    })
    .into_response()
}

async fn view_study(State(state): State<AppState>, ctx: Ctx, jar: CookieJar, Path(study): Path<String>) -> Response {
    let h = holder!(state, jar);
    let v = page!(ctx, holder::view(&state, &h.share).await);
    let s = page!(
        ctx,
        v.studies.into_iter().find(|s| s.study_uid == study).ok_or_else(|| AppError::NotFound("no such study in this share".into()))
    );
    layout(
        &ctx,
        ctx.t("viewer.title"),
        html! {
            h1 { (dicom_date(ctx.lang, &s.study_date)) " " span.muted { (s.description) } }
            p { a href="/s" { (ctx.t("back")) } }
            (crate::ui::viewer_markup(&ctx, &s.study_uid, &s.series))
        },
    )
    .into_response()
}

/// The code (and QR, and password) just issued: shown once, printable, with the PDF sheet.
fn issued_page(ctx: &Ctx, i: &IssuedShare, staff: bool) -> Response {
    let svg = super::sheet::qr_svg(&i.redeem_url);
    layout(ctx, ctx.l("Zugangscode", "Access code"), html! {
        h1 { (ctx.l("Zugangscode", "Access code")) }
        p.notice.no-print role="status" { (ctx.l("Der Code wird nur jetzt angezeigt. Drucken Sie das Blatt oder notieren Sie ihn.", "The code is shown only now. Print the sheet or write it down.")) }
        div.card {
            div.qr { (PreEscaped(svg)) }
            p.code id="code" { (i.code) }
            p { (ctx.l("Verfügbar bis", "Available until")) " " strong { (date_of(ctx, i.share.expires_at)) } }
            p.muted { (ctx.l("Einlösen unter", "Redeem at")) " " a id="redeem-url" href=(i.redeem_url) { (i.redeem_url) } }
        }
        @if let Some(p) = &i.password {
            div.card { p { (ctx.l("Passwort (getrennt aushändigen)", "Password (hand over separately)")) } p.code id="password" { (p) } }
        }
        @if staff {
            form.no-print method="post" action={"/shares/" (i.share.id) "/sheet.pdf"} target="_blank" {
                input type="hidden" name="code" value=(i.code);
                @if let Some(p) = &i.password { input type="hidden" name="password" value=(p); }
                button type="submit" id="sheet" { (ctx.l("Blatt drucken (PDF)", "Print the sheet (PDF)")) }
            }
            p.no-print { a href={"/shares/" (i.share.id)} { (ctx.l("Zur Freigabe", "To the share")) } }
        } @else {
            p.no-print { a href="/s" { (ctx.t("back")) } }
        }
    })
    .into_response()
}

async fn forward(State(state): State<AppState>, ctx: Ctx, jar: CookieJar, ci: ConnectInfo<SocketAddr>, body: Bytes) -> Response {
    let h = holder!(state, jar);
    let f = pairs(&body);
    let studies: Vec<String> = f.iter().filter(|(k, _)| k == "study").map(|(_, v)| v.clone()).collect();
    if studies.is_empty() {
        return error_page(
            &ctx,
            AppError::BadRequest(ctx.l("Wählen Sie mindestens eine Untersuchung.", "Choose at least one study.").into()),
        );
    }
    let options = ShareOptions { second_factor: field(&f, "second_factor").map(str::to_string), ..Default::default() };
    let issued = page!(ctx, super::forward(&state, &h.share, &studies, &options, &crate::http::client_addr(&ci)).await);
    issued_page(&ctx, &issued, false)
}

async fn delete(State(state): State<AppState>, ctx: Ctx, jar: CookieJar, ci: ConnectInfo<SocketAddr>) -> Response {
    let h = holder!(state, jar);
    page!(ctx, holder::delete(&state, &h, &crate::http::client_addr(&ci)).await);
    let jar = holder::without_cookie(jar);
    (jar, crate::ui::notice(&ctx, ctx.l("Gelöscht", "Deleted"), ctx.l("Die Freigabe ist gelöscht.", "The share is deleted."), None))
        .into_response()
}

async fn logout(State(state): State<AppState>, jar: CookieJar) -> Response {
    let _ = holder::end_session(&state, &jar).await;
    (holder::without_cookie(jar), Redirect::to("/redeem")).into_response()
}

// ---- staff --------------------------------------------------------------------------------

macro_rules! staff {
    ($ctx:expr) => {
        match $ctx.require() {
            Ok((p, _)) => p.clone(),
            Err(r) => return r.into_response(),
        }
    };
}

fn state_label(ctx: &Ctx, s: &str) -> &'static str {
    match s {
        "active" => ctx.l("aktiv", "active"),
        "expired" => ctx.l("abgelaufen", "expired"),
        "revoked" => ctx.l("widerrufen", "revoked"),
        "deleted" => ctx.l("gelöscht", "deleted"),
        _ => ctx.l("Entwurf", "draft"),
    }
}

async fn staff_list(State(state): State<AppState>, ctx: Ctx, Query(q): Query<super::ListQuery>) -> Response {
    let who = staff!(ctx);
    let list = page!(ctx, super::list(&state, &who, &q).await);
    layout(&ctx, ctx.l("Freigaben", "Shares"), html! {
        h1 { (ctx.l("Freigaben für Patienten", "Shares for patients")) }
        p { a.button href="/shares/new" { (ctx.l("Neue Freigabe", "New share")) } }
        div.table-wrap { table {
            thead { tr {
                th { (ctx.l("Patient", "Patient")) } th { (ctx.l("Untersuchungen", "Studies")) } th { (ctx.l("Erstellt", "Created")) }
                th { (ctx.l("Gültig bis", "Expires")) } th { (ctx.l("Letzter Zugriff", "Last access")) } th { (ctx.l("Fehlversuche", "Failed attempts")) } th { (ctx.l("Status", "State")) }
            } }
            tbody { @for s in &list { tr data-share=(s.id) {
                td { a href={"/shares/" (s.id)} { (person_name(&s.patient_name)) } br; span.muted { (s.patient_id) } }
                td { @for st in &s.studies { (dicom_date(ctx.lang, &st.study_date)) " " (st.description) br; } }
                td { (time_ms(ctx.lang, s.created_at)) br; span.muted { (s.created_by) } }
                td { (date_of(&ctx, s.expires_at)) }
                td { @if let Some(t) = s.last_access_at { (time_ms(ctx.lang, t)) } }
                td { (s.failed_attempts) @if s.locked { " " span.badge.state-failed { (ctx.l("gesperrt", "locked")) } } }
                td { span class={"badge state-" (s.state)} { (state_label(&ctx, s.state.as_str())) } }
            } } }
        } }
    })
    .into_response()
}

#[derive(Deserialize, Default)]
struct NewQuery {
    community: Option<String>,
    studies: Option<String>,
}

fn options_fields(ctx: &Ctx) -> Markup {
    html! {
        label for="second_factor" { (ctx.l("Zweiter Faktor", "Second factor")) }
        select id="second_factor" name="second_factor" {
            option value="birth_date" { (ctx.l("Geburtsdatum des Patienten", "Patient's date of birth")) }
            option value="password" { (ctx.l("Einmal-Passwort (separater Zettel)", "One-time password (separate slip)")) }
            option value="study_date" { (ctx.l("Datum der Untersuchung", "Date of the examination")) }
            option value="custom" { (ctx.l("Eigene Frage (unten)", "A question of your own (below)")) }
        }
        label for="question" { (ctx.l("Eigene Frage und Antwort (nur bei „Eigene Frage“)", "Own question and answer (only with “question of your own”)")) }
        input id="question" name="question" placeholder=(ctx.l("z. B. Name Ihres Hausarztes?", "e.g. your family doctor's name?"));
        input id="answer" name="answer" aria-label=(ctx.l("Antwort", "Answer")) placeholder=(ctx.l("Antwort", "Answer"));
        label for="birth_date" { (ctx.l("Geburtsdatum (falls nicht in den Bildern)", "Date of birth (if not in the images)")) }
        input id="birth_date" name="birth_date" placeholder=(ctx.l("TT.MM.JJJJ", "DD.MM.YYYY"));
        label for="days" { (ctx.l("Gültigkeit", "Valid for")) }
        select id="days" name="days" {
            option value="" { (ctx.l("Standard der Einrichtung", "The clinic's default")) }
            option value="28" { (ctx.l("4 Wochen", "4 weeks")) }
            option value="56" { (ctx.l("8 Wochen", "8 weeks")) }
            option value="84" { (ctx.l("12 Wochen", "12 weeks")) }
            option value="90" { (ctx.l("90 Tage", "90 days")) }
            option value="365" { (ctx.l("1 Jahr", "1 year")) }
        }
        label for="note" { (ctx.l("Notiz (nur für die Praxis)", "Note (for the clinic only)")) }
        input id="note" name="note";
    }
}

fn options_from(f: &[(String, String)]) -> Result<ShareOptions, AppError> {
    let birth = match field(f, "birth_date") {
        Some(b) => Some(super::factor::parse_date(b).ok_or_else(|| AppError::BadRequest("the date of birth is not a valid date".into()))?),
        None => None,
    };
    let days = match field(f, "days") {
        Some(d) => Some(d.trim().parse::<u32>().map_err(|_| AppError::BadRequest("the validity is not a number of days".into()))?),
        None => None,
    };
    Ok(ShareOptions {
        second_factor: field(f, "second_factor").map(str::to_string),
        birth_date: birth,
        expires_in_days: days,
        note: field(f, "note").map(str::to_string),
        question: field(f, "question").map(str::to_string),
        answer: field(f, "answer").map(str::to_string),
        ..Default::default()
    })
}

async fn new_page(ctx: Ctx, Query(q): Query<NewQuery>) -> Response {
    let (_, account) = match ctx.require() {
        Ok((p, a)) => (p.clone(), a.clone()),
        Err(r) => return r.into_response(),
    };
    let chosen = q.community.clone().unwrap_or_default();
    let communities = html! {
        select id="community" name="community" {
            @for m in &account.memberships {
                option value=(m.community) selected[m.community == chosen] { (m.community_name) }
            }
        }
    };
    layout(&ctx, ctx.l("Neue Freigabe", "New share"), html! {
        h1 { (ctx.l("Bilder für den Patienten freigeben", "Share images with the patient")) }
        @if account.memberships.is_empty() {
            p.error { (ctx.l("Sie sind in keiner Einrichtung Mitglied.", "You are not a member of any clinic.")) }
        }
        form.card method="post" action="/shares/new" {
            h2 { (ctx.l("Untersuchungen, die hier vorliegen", "Studies the clinic holds")) }
            label for="community" { (ctx.l("Einrichtung", "Clinic")) } (communities)
            label for="patient_id" { (ctx.l("Alle Untersuchungen des Patienten (Patienten-ID)", "All studies of the patient (patient ID)")) }
            input id="patient_id" name="patient_id";
            label for="studies" { (ctx.l("oder Study Instance UIDs (eine pro Zeile)", "or Study Instance UIDs (one per line)")) }
            textarea id="studies" name="studies" rows="3" { (q.studies.clone().unwrap_or_default().replace(',', "\n")) }
            (options_fields(&ctx))
            button type="submit" { (ctx.l("Code erzeugen", "Create the code")) }
        }
        form.card method="post" enctype="multipart/form-data" action={"/shares/upload?community=" (crate::ui::urlencode(&chosen))} id="upload-form" {
            h2 { (ctx.l("Oder Dateien hochladen", "Or upload files")) }
            p.muted { (ctx.l("DICOM-Dateien, ein ZIP oder der Inhalt einer CD mit DICOMDIR. Danach wählen Sie den zweiten Faktor.", "DICOM files, a ZIP or a CD's content with its DICOMDIR. Then you choose the second factor.")) }
            @if chosen.is_empty() && account.memberships.len() > 1 {
                p.error { (ctx.l("Wählen Sie die Einrichtung über ?community=CODE.", "Choose the clinic with ?community=CODE.")) }
            }
            input id="files" type="file" name="file" multiple required;
            button type="submit" { (ctx.l("Hochladen", "Upload")) }
        }
    })
    .into_response()
}

async fn new_submit(State(state): State<AppState>, ctx: Ctx, body: Bytes) -> Response {
    let who = staff!(ctx);
    let f = pairs(&body);
    let community = field(&f, "community").unwrap_or("").to_string();
    let studies: Vec<String> = field(&f, "studies")
        .unwrap_or("")
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let options = page!(ctx, options_from(&f));
    let patient_id = field(&f, "patient_id").map(str::to_string);
    if studies.is_empty() && patient_id.is_none() {
        return error_page(
            &ctx,
            AppError::BadRequest(
                ctx.l(
                    "Nennen Sie eine Patienten-ID oder Untersuchungen, oder laden Sie Dateien hoch.",
                    "Give a patient ID or studies, or upload files.",
                )
                .into(),
            ),
        );
    }
    let community_id = page!(ctx, super::managed_community(&state, &who, &community).await);
    let n = NewShare { community, studies, patient_id, options };
    match page!(ctx, super::create(&state, &super::actor(&who), &community_id, &n).await) {
        Ok(issued) => issued_page(&ctx, &issued, true),
        Err(draft) => Redirect::to(&format!("/shares/{}", draft.id)).into_response(),
    }
}

#[derive(Deserialize)]
struct UploadQuery {
    community: Option<String>,
}

async fn upload_submit(State(state): State<AppState>, ctx: Ctx, Query(q): Query<UploadQuery>, headers: HeaderMap, body: Body) -> Response {
    let who = staff!(ctx);
    let code = match q.community.filter(|c| !c.is_empty()) {
        Some(c) => c,
        None => match ctx.account.as_ref().and_then(|a| (a.memberships.len() == 1).then(|| a.memberships[0].community.clone())) {
            Some(c) => c,
            None => return error_page(&ctx, AppError::BadRequest("choose the clinic (?community=CODE)".into())),
        },
    };
    let community_id = page!(ctx, super::managed_community(&state, &who, &code).await);
    let n = NewShare { community: code, ..Default::default() };
    let draft = match page!(ctx, super::create(&state, &super::actor(&who), &community_id, &n).await) {
        Err(draft) => draft,
        Ok(_) => return error_page(&ctx, AppError::Internal(anyhow::anyhow!("an upload share was issued without files"))),
    };
    page!(ctx, crate::uploads::ingest_body(&state, &headers, body, crate::index::Holding::Share.origin(&draft.id)).await);
    Redirect::to(&format!("/shares/{}", draft.id)).into_response()
}

async fn staff_page(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let who = staff!(ctx);
    let row = page!(ctx, super::managed(&state, &who, &id).await);
    let s = page!(ctx, db::load(&state.db, &row).await.map_err(AppError::from));
    let log = page!(ctx, crate::audit::of_object(&state.db, "share", &id, 200).await.map_err(AppError::from));
    layout(&ctx, ctx.l("Freigabe", "Share"), html! {
        h1 { (person_name(&s.patient_name)) " " span class={"badge state-" (s.state)} id="share-state" { (state_label(&ctx, s.state.as_str())) } }
        dl.facts {
            dt { (ctx.l("Patienten-ID", "Patient ID")) } dd { (s.patient_id) }
            dt { (ctx.l("Einrichtung", "Clinic")) } dd { (s.community_name) }
            dt { (ctx.l("Erstellt", "Created")) } dd { (time_ms(ctx.lang, s.created_at)) " · " (s.created_by) }
            dt { (ctx.l("Gültig bis", "Expires")) } dd id="expires" { (time_ms(ctx.lang, s.expires_at)) }
            dt { (ctx.l("Zweiter Faktor", "Second factor")) } dd { (s.question_type) }
            dt { (ctx.l("Letzter Zugriff", "Last access")) } dd { @if let Some(t) = s.last_access_at { (time_ms(ctx.lang, t)) } @else { "–" } }
            dt { (ctx.l("Fehlversuche", "Failed attempts")) } dd id="failed" { (s.failed_attempts) @if s.locked { " · " strong { (ctx.l("gesperrt", "locked")) } } }
            @if let Some(p) = &s.parent_id { dt { (ctx.l("Weitergegeben von", "Forwarded from")) } dd { a href={"/shares/" (p)} { (p) } } }
            @if !s.note.is_empty() { dt { (ctx.l("Notiz", "Note")) } dd { (s.note) } }
        }
        h2 { (ctx.l("Untersuchungen", "Studies")) }
        ul { @for st in &s.studies { li { (dicom_date(ctx.lang, &st.study_date)) " " (st.modalities.join(", ")) " " (st.description) " (" (st.instances) ")" } } }
        @if s.state == "draft" {
            form.card method="post" enctype="multipart/form-data" action={"/shares/upload?community=" (s.community)} {
                p.muted { (ctx.l("Weitere Dateien kommen in eine neue Freigabe; diese hier geben Sie unten frei.", "More files go into a new share; issue this one below.")) }
            }
            form.card method="post" action={"/shares/" (s.id) "/issue"} {
                h2 { (ctx.l("Code erzeugen", "Create the code")) }
                (options_fields(&ctx))
                button type="submit" { (ctx.l("Code erzeugen", "Create the code")) }
            }
        }
        @if s.state == "active" || s.state == "expired" {
            div.row {
                form.card method="post" action={"/shares/" (s.id) "/extend"} {
                    label for="extend-days" { (ctx.l("Verlängern um", "Extend by")) }
                    select id="extend-days" name="days" { option value="28" { "4 " (ctx.l("Wochen", "weeks")) } option value="56" { "8 " (ctx.l("Wochen", "weeks")) } option value="84" { "12 " (ctx.l("Wochen", "weeks")) } option value="91" selected { "3 " (ctx.l("Monate", "months")) } }
                    button type="submit" { (ctx.l("Verlängern", "Extend")) }
                }
                form.card method="post" action={"/shares/" (s.id) "/report"} enctype="multipart/form-data" {
                    label for="report" { (ctx.l("Befund (PDF)", "Report (PDF)")) }
                    input id="report" type="file" name="report" accept="application/pdf" required;
                    label for="release" { (ctx.l("Freigeben in Stunden", "Release in hours")) }
                    input id="release" name="release_in_hours" type="number" min="0" value="0";
                    button type="submit" { (ctx.l("Hochladen", "Upload")) }
                }
            }
            @if !s.reports.is_empty() {
                ul { @for r in &s.reports { li { (r.name) " · " (human_size(r.size)) " · " @if r.released { (ctx.l("freigegeben", "released")) } @else { (ctx.l("frei ab", "released from")) " " (time_ms(ctx.lang, r.release_at)) } } } }
            }
            p {
                @if s.locked {
                    form.inline method="post" action={"/shares/" (s.id) "/unlock"} { button type="submit" { (ctx.l("Entsperren", "Unlock")) } } " "
                }
                form.inline method="post" action={"/shares/" (s.id) "/reissue"} { button.secondary type="submit" { (ctx.l("Neues Blatt (neuer Code)", "New sheet (new code)")) } } " "
                form.inline method="post" action={"/shares/" (s.id) "/revoke"} { button.danger type="submit" { (ctx.l("Widerrufen", "Revoke")) } }
            }
        }
        h2 { (ctx.l("Zugriffsprotokoll", "Access log")) }
        div.table-wrap { table id="access-log" {
            thead { tr { th { (ctx.l("Zeit", "Time")) } th { (ctx.l("Wer", "Who")) } th { (ctx.l("Adresse", "Address")) } th { (ctx.l("Aktion", "Action")) } th { (ctx.l("Ergebnis", "Result")) } } }
            tbody { @for e in &log { tr { td { (time_ms(ctx.lang, e.at)) } td { (e.actor) } td { (e.client_addr) } td { (e.action) } td { (e.result) " " span.muted { (e.detail) } } } } }
        } }
    })
    .into_response()
}

async fn issue_submit(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>, body: Bytes) -> Response {
    let who = staff!(ctx);
    let row = page!(ctx, super::managed(&state, &who, &id).await);
    let options = page!(ctx, options_from(&pairs(&body)));
    let issued = page!(ctx, super::issue_linked(&state, &super::actor(&who), &row, &options, None).await);
    issued_page(&ctx, &issued, true)
}

async fn extend_submit(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>, body: Bytes) -> Response {
    let who = staff!(ctx);
    let row = page!(ctx, super::managed(&state, &who, &id).await);
    let days = field(&pairs(&body), "days").and_then(|d| d.parse().ok());
    page!(ctx, super::extend(&state, &super::actor(&who), &row, &ExtendShare { days, until: None }).await);
    Redirect::to(&format!("/shares/{id}")).into_response()
}

async fn revoke_submit(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let who = staff!(ctx);
    let row = page!(ctx, super::managed(&state, &who, &id).await);
    page!(ctx, super::revoke(&state, &super::actor(&who), &row).await);
    Redirect::to(&format!("/shares/{id}")).into_response()
}

async fn unlock_submit(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let who = staff!(ctx);
    let row = page!(ctx, super::managed(&state, &who, &id).await);
    page!(ctx, super::unlock(&state, &super::actor(&who), &row).await);
    Redirect::to(&format!("/shares/{id}")).into_response()
}

async fn reissue_submit(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> Response {
    let who = staff!(ctx);
    let row = page!(ctx, super::managed(&state, &who, &id).await);
    let issued = page!(ctx, super::reissue(&state, &super::actor(&who), &row).await);
    issued_page(&ctx, &issued, true)
}

async fn report_submit(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>, headers: HeaderMap, body: Body) -> Response {
    let who = staff!(ctx);
    let row = page!(ctx, super::managed(&state, &who, &id).await);
    let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(boundary) = ct.split(';').find_map(|p| p.trim().strip_prefix("boundary=")).map(|b| b.trim_matches('"').to_string()) else {
        return error_page(&ctx, AppError::BadRequest("expected a form upload".into()));
    };
    let mut mp = multer::Multipart::new(body.into_data_stream(), boundary);
    let (mut pdf, mut hours) = (Vec::new(), None);
    while let Ok(Some(field)) = mp.next_field().await {
        match field.name() {
            Some("report") => pdf = page!(ctx, field.bytes().await.map_err(|e| AppError::BadRequest(e.to_string()))).to_vec(),
            Some("release_in_hours") => hours = field.text().await.ok().and_then(|t| t.trim().parse().ok()),
            _ => {}
        }
    }
    let q = super::reports::ReportQuery { release_in_hours: hours, ..Default::default() };
    page!(ctx, super::reports::attach(&state, &super::actor(&who), &row, &q, pdf).await);
    Redirect::to(&format!("/shares/{id}")).into_response()
}

async fn sheet_submit(State(state): State<AppState>, ctx: Ctx, Path(id): Path<String>, body: Bytes) -> Response {
    let who = staff!(ctx);
    let row = page!(ctx, super::managed(&state, &who, &id).await);
    let f = pairs(&body);
    let req = SheetRequest { code: field(&f, "code").unwrap_or("").into(), password: field(&f, "password").map(str::to_string) };
    let pdf = page!(ctx, super::sheet_for(&state, &row, &req).await);
    super::sheet::pdf_response(pdf)
}
