//! The pages of access codes: redeeming (code, then the question), the holder's overview with
//! thumbnails, the viewer, reports and downloads; and for clinic staff the list of shares, the
//! share page (extend, revoke, unlock, reissue, access log) and the printable sheet.

use axum::Router;

use crate::state::AppState;

pub fn router(_state: &AppState) -> Router<AppState> {
    Router::new()
}
