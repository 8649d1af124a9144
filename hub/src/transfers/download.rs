//! A transfer's images as one ZIP in IHE PDI layout (DICOMDIR, `STUDnn/SERnn/IMGnnn`), streamed
//! with its length announced — the same archive a patient's download is (see `crate::archive`),
//! so a PACS or viewer imports it from its DICOMDIR.

use axum::extract::{Path, State};
use axum::response::Response;

use crate::access::Principal;
use crate::error::{AppError, AppResult};
use crate::index::Holding;
use crate::state::AppState;

pub async fn api_download(
    State(state): State<AppState>,
    ci: axum::extract::ConnectInfo<std::net::SocketAddr>,
    who: Principal,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let (t, _) = super::visible(&state, &who, &id).await?;
    let items = crate::archive::pdi::items(&state, Holding::Transfer, &t.id, None).await?;
    if items.is_empty() {
        return Err(AppError::NotFound("the transfer holds no images".into()));
    }
    tracing::info!(transfer = %t.id, principal = %who.log_id(), instances = items.len(), "transfer download");
    let actor = who.log_id();
    let client = crate::http::client_addr(&ci);
    let detail = format!("{} instance(s)", items.len());
    crate::audit::record(
        &state.db_write,
        crate::audit::Event {
            actor: &actor,
            client_addr: &client,
            action: "transfer.download",
            object_kind: "transfer",
            object_id: &t.id,
            result: "ok",
            detail: &detail,
        },
    )
    .await?;
    let plan = crate::archive::pdi::plan(&state, items, Vec::new(), "Ferry").await?;
    plan.into_response(state.blobs.clone(), &format!("ferry-{}.zip", &t.id[..8]))
}
