//! The connector's DICOM Storage SCP (dicom-ul as acceptor): the PACS sends studies to it by
//! C-STORE (and checks it by C-ECHO). Every instance is written to the outbound spool as a
//! Part-10 file as it arrives — a file meta group naming the negotiated transfer syntax, then the
//! data set exactly as received — made durable and recorded in the state database before the
//! C-STORE response says success. [`crate::outbound`] routes the studies once they are complete.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_ul::ServerAssociationOptions;
use dicom_ul::association::server::AccessControl;
use dicom_ul::pdu::{AssociationRJServiceUserReason, PresentationContextResultReason, UserIdentity};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Outbound;
use crate::dimse::{self, C_ECHO_RQ, C_ECHO_RSP, C_STORE_RQ, C_STORE_RSP, read_message_with, send_command, text, uint};
use crate::state::State;

/// Refuses callers not in `allowed_callers` (when that list is not empty) and calls for another
/// AE title than the connector's.
struct Callers {
    allowed: Vec<String>,
}

impl AccessControl for Callers {
    fn check_access(
        &self,
        this_ae: &str,
        calling_ae: &str,
        called_ae: &str,
        _user: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        let trim = |s: &str| s.trim_end_matches(['\0', ' ']).trim_start().to_string();
        if trim(this_ae) != trim(called_ae) {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| *a == trim(calling_ae)) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Binds the SCP's port (a clear error when it is taken or not allowed).
pub async fn bind(o: &Outbound) -> anyhow::Result<TcpListener> {
    TcpListener::bind(&o.listen).await.with_context(|| format!("the Storage SCP cannot listen on {} (outbound.listen)", o.listen))
}

/// Accepts associations until the task is dropped.
pub async fn serve(listener: TcpListener, o: Outbound, state: State) {
    let o = Arc::new(o);
    let incoming = state.dir.join("outbound").join("incoming");
    // Half-received files of an earlier run were never confirmed to the PACS; it sends them again.
    let _ = std::fs::remove_dir_all(&incoming);
    if let Err(e) = std::fs::create_dir_all(&incoming) {
        tracing::error!(error = %e, "the outbound spool cannot be created; the Storage SCP is off");
        return;
    }
    loop {
        let (socket, addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a DICOM connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        let (o, state, incoming) = (o.clone(), state.clone(), incoming.clone());
        tokio::spawn(async move {
            if let Err(e) = association(socket, &o, &state, &incoming).await {
                tracing::warn!(peer = %addr, error = %format!("{e:#}"), "DICOM association ended with an error");
            }
        });
    }
}

async fn association(socket: TcpStream, o: &Outbound, state: &State, incoming: &Path) -> anyhow::Result<()> {
    socket.set_nodelay(true)?;
    let opts = ServerAssociationOptions::new()
        .ae_access_control(Callers { allowed: o.allowed_callers.clone() })
        .ae_title(o.ae_title.as_str())
        .promiscuous(true)
        .max_pdu_length(65536)
        .read_timeout(std::time::Duration::from_secs(120))
        .write_timeout(std::time::Duration::from_secs(120));
    let mut assoc = match opts.establish_async(socket).await {
        Ok(a) => a,
        Err(e) => {
            // Rejected callers, port probes of monitoring tools: worth a note, not an alarm.
            tracing::info!(error = %e, "no association");
            return Ok(());
        }
    };
    let calling = {
        use dicom_ul::association::Association;
        assoc.peer_ae_title().trim_end_matches(['\0', ' ']).trim().to_string()
    };
    let contexts: Vec<(u8, String)> = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| (pc.id, pc.transfer_syntax.trim_end_matches('\0').to_string()))
        .collect();
    loop {
        let part = incoming.join(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let mut file = tokio::io::BufWriter::with_capacity(256 * 1024, tokio::fs::File::create(&part).await?);
        // The file meta group goes in front of the data set as it arrives: the file is whole at once.
        let meta = |command: &InMemDicomObject, context: u8| {
            let ts = contexts.iter().find(|(id, _)| *id == context).map(|(_, ts)| ts.as_str()).unwrap_or_default();
            meta_group(&text(command, tags::AFFECTED_SOP_CLASS_UID), &text(command, tags::AFFECTED_SOP_INSTANCE_UID), ts, &calling)
        };
        let msg = match read_message_with(&mut assoc, &mut file, meta).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                drop(file);
                let _ = tokio::fs::remove_file(&part).await;
                return Ok(());
            }
            Err(e) => {
                drop(file);
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        };
        drop(file);
        let command = uint(&msg.command, tags::COMMAND_FIELD).unwrap_or(0);
        let message_id = uint(&msg.command, tags::MESSAGE_ID).unwrap_or(0);
        let class = text(&msg.command, tags::AFFECTED_SOP_CLASS_UID);
        let mut reply = vec![
            dimse::ui(tags::AFFECTED_SOP_CLASS_UID, &class),
            dimse::us(tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id),
            dimse::us(tags::COMMAND_DATA_SET_TYPE, dimse::NO_DATASET),
        ];
        match command {
            C_ECHO_RQ => {
                let _ = tokio::fs::remove_file(&part).await;
                reply.extend([dimse::us(tags::COMMAND_FIELD, C_ECHO_RSP), dimse::us(tags::STATUS, 0)]);
            }
            C_STORE_RQ => {
                let sop = text(&msg.command, tags::AFFECTED_SOP_INSTANCE_UID);
                let ts = contexts.iter().find(|(id, _)| *id == msg.context_id).map(|(_, ts)| ts.clone()).unwrap_or_default();
                let status = if !msg.has_dataset || ts.is_empty() {
                    0xC000
                } else {
                    match keep(state, &part, &class, &sop, &calling).await {
                        Ok(()) => 0x0000,
                        Err(Failure::Unreadable(e)) => {
                            tracing::warn!(error = %format!("{e:#}"), calling_ae = %calling, "refused an instance that cannot be read");
                            0xC000
                        }
                        Err(Failure::Resources(e)) => {
                            tracing::error!(error = %format!("{e:#}"), "an instance could not be kept (disk or state database)");
                            0xA700
                        }
                    }
                };
                let _ = tokio::fs::remove_file(&part).await;
                reply.extend([
                    dimse::us(tags::COMMAND_FIELD, C_STORE_RSP),
                    dimse::us(tags::STATUS, status),
                    dimse::ui(tags::AFFECTED_SOP_INSTANCE_UID, &sop),
                ]);
            }
            other => {
                let _ = tokio::fs::remove_file(&part).await;
                // 0x0211: unrecognized operation.
                reply.extend([dimse::us(tags::COMMAND_FIELD, other | 0x8000), dimse::us(tags::STATUS, 0x0211)]);
            }
        }
        send_command(&mut assoc, msg.context_id, reply).await?;
    }
}

enum Failure {
    /// Not a data set the connector can read (0xC000).
    Unreadable(anyhow::Error),
    /// Disk full, state database unusable (0xA700).
    Resources(anyhow::Error),
}

/// Preamble, `DICM` and the file meta group for a received data set; nothing when the command
/// names no valid UIDs or transfer syntax (the instance is then refused with 0xC000).
fn meta_group(class: &str, sop: &str, ts: &str, calling: &str) -> Vec<u8> {
    if !ferry_schemas::Uid::is_valid(class) || !ferry_schemas::Uid::is_valid(sop) || ts.is_empty() {
        return Vec::new();
    }
    let Ok(meta) = dicom_object::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(class)
        .media_storage_sop_instance_uid(sop)
        .transfer_syntax(ts)
        .source_application_entity_title(calling)
        .build()
    else {
        return Vec::new();
    };
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    if meta.write(&mut out).is_err() {
        return Vec::new();
    }
    out
}

/// Makes the received Part-10 file durable and records it in its study's batch.
async fn keep(state: &State, file: &Path, class: &str, sop: &str, calling: &str) -> Result<(), Failure> {
    if !ferry_schemas::Uid::is_valid(sop) || !ferry_schemas::Uid::is_valid(class) {
        return Err(Failure::Unreadable(anyhow::anyhow!("the C-STORE request carries no valid SOP Instance/Class UID")));
    }
    let checked = {
        let file = file.to_path_buf();
        tokio::task::spawn_blocking(move || durable_study(&file)).await
    };
    let (study, size) = match checked {
        Ok(r) => r?,
        Err(e) => return Err(Failure::Resources(e.into())),
    };
    crate::outbound::add_instance(state, &study, calling, sop, size, file).await.map_err(Failure::Resources)
}

/// Fsyncs the file; returns its Study Instance UID (which also proves the data set parses) and size.
fn durable_study(file: &Path) -> Result<(String, u64), Failure> {
    let f = std::fs::File::open(file).map_err(|e| Failure::Resources(e.into()))?;
    f.sync_all().map_err(|e| Failure::Resources(e.into()))?;
    let size = f.metadata().map_err(|e| Failure::Resources(e.into()))?.len();
    let obj =
        dicom_object::OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(file).map_err(|e| Failure::Unreadable(e.into()))?;
    let study = text(&obj, tags::STUDY_INSTANCE_UID);
    if !ferry_schemas::Uid::is_valid(&study) {
        return Err(Failure::Unreadable(anyhow::anyhow!("the instance has no valid Study Instance UID")));
    }
    Ok((study, size))
}

/// Where a batch's files lie.
pub fn batch_dir(state: &State, batch: &str) -> PathBuf {
    state.dir.join("outbound").join(batch)
}
