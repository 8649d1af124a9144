//! DICOM DIMSE on dicom-ul: C-ECHO, C-STORE (streamed from files, several associations in
//! parallel) and Modality Worklist C-FIND as a user. dicom-ul negotiates associations and frames PDUs; the DIMSE command
//! sets are built here (PS3.7 §9.3 and §E).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR, dicom_value};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_object::mem::InMemElement;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::association::{AsyncAssociation, client::AsyncClientAssociation};
use dicom_ul::pdu::{PDataValue, PDataValueType, PresentationContextResultReason};
use dicom_ul::{ClientAssociationOptions, Pdu};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub const VERIFICATION: &str = "1.2.840.10008.1.1";
pub const MODALITY_WORKLIST_FIND: &str = "1.2.840.10008.5.1.4.31";
pub const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
pub const EXPLICIT_BE: &str = "1.2.840.10008.1.2.2";
const NATIVE: [&str; 3] = [EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE];

pub const C_STORE_RQ: u16 = 0x0001;
pub const C_STORE_RSP: u16 = 0x8001;
pub const C_FIND_RQ: u16 = 0x0020;
pub const C_ECHO_RQ: u16 = 0x0030;
pub const C_ECHO_RSP: u16 = 0x8030;
pub const NO_DATASET: u16 = 0x0101;

/// A DICOM peer reached over TCP.
#[derive(Debug, Clone)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    pub called_ae: String,
    pub calling_ae: String,
}

impl Peer {
    fn describe(&self) -> String {
        format!("{}@{}:{}", self.called_ae, self.host, self.port)
    }

    async fn associate(&self, contexts: &[(String, Vec<String>)]) -> anyhow::Result<AsyncClientAssociation<TcpStream>> {
        let mut opts = ClientAssociationOptions::new()
            .calling_ae_title(self.calling_ae.as_str())
            .called_ae_title(self.called_ae.as_str())
            .max_pdu_length(65536)
            .connection_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .write_timeout(Duration::from_secs(120));
        for (abstract_syntax, ts) in contexts {
            opts = opts.with_presentation_context(abstract_syntax.as_str(), ts.iter().map(String::as_str).collect());
        }
        let mut a = opts.establish_async(format!("{}:{}", self.host, self.port)).await.map_err(|e| plain_ul_error(self, &e))?;
        // Without it every reply waits for the delayed ACK (~40 ms per image).
        a.inner_stream().set_nodelay(true)?;
        Ok(a)
    }
}

/// The PACS answered but will not take what is offered (association rejected, or none of the
/// presentation contexts accepted): retrying soon does not help, unlike an unreachable PACS.
#[derive(Debug)]
pub struct AssociationRefused(pub String);

impl std::fmt::Display for AssociationRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AssociationRefused {}

/// Says in plain words why an association did not come about.
fn plain_ul_error(peer: &Peer, e: &dicom_ul::association::Error) -> anyhow::Error {
    use dicom_ul::association::Error as E;
    let head = format!("cannot open a DICOM association with {}", peer.describe());
    match e {
        E::Rejected { .. } => anyhow::Error::new(AssociationRefused(format!(
            "{head}: it rejected the association ({e}); check the called AE title and that the PACS knows the connector's AE title"
        ))),
        E::NoAcceptedPresentationContexts { .. } => {
            anyhow::Error::new(AssociationRefused(format!("{head}: it accepts none of the SOP classes and transfer syntaxes offered")))
        }
        _ if format!("{e}").contains("onnect") => {
            anyhow::anyhow!("{head}: nothing answers there (is the PACS running, host and port right, a firewall in between?)")
        }
        _ => anyhow::anyhow!("{head}: {e}"),
    }
}

pub fn us(tag: Tag, v: u16) -> InMemElement {
    DataElement::new(tag, VR::US, dicom_value!(U16, [v]))
}

pub fn ui(tag: Tag, v: &str) -> InMemElement {
    DataElement::new(tag, VR::UI, PrimitiveValue::from(v))
}

fn ts(uid: &str) -> anyhow::Result<&'static dicom_encoding::TransferSyntax> {
    TransferSyntaxRegistry.get(uid).with_context(|| format!("unknown transfer syntax {uid}"))
}

/// Encodes a command set (always Implicit VR Little Endian), with its group length.
pub fn encode_command(elements: Vec<InMemElement>) -> anyhow::Result<Vec<u8>> {
    let obj = InMemDicomObject::command_from_element_iter(elements);
    let mut buf = Vec::new();
    obj.write_dataset_with_ts(&mut buf, ts(IMPLICIT_LE)?)?;
    Ok(buf)
}

pub fn decode_command(bytes: &[u8]) -> anyhow::Result<InMemDicomObject> {
    Ok(InMemDicomObject::read_dataset_with_ts(bytes, ts(IMPLICIT_LE)?)?)
}

pub fn uint(obj: &InMemDicomObject, tag: Tag) -> Option<u16> {
    obj.element(tag).ok()?.to_int::<u16>().ok()
}

pub fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim_end_matches(['\0', ' ']).to_string()).unwrap_or_default()
}

/// One DIMSE message: its command set, the presentation context it came on, and whether a data
/// set followed (written to the sink given to [`read_message`]).
pub struct Message {
    pub command: InMemDicomObject,
    pub context_id: u8,
    pub has_dataset: bool,
}

/// Reads one DIMSE message; its data set, if any, is written to `data` as it arrives.
pub async fn read_message<A, W>(assoc: &mut A, data: &mut W) -> anyhow::Result<Option<Message>>
where
    A: AsyncAssociation<TcpStream> + Send,
    W: AsyncWrite + Unpin + Send,
{
    read_message_with(assoc, data, |_, _| Vec::new()).await
}

/// Like [`read_message`], but once the command set announcing a data set has arrived, what
/// `before_data` returns for it (and its presentation context) is written to `data` ahead of the
/// data set — the Storage SCP writes the file meta group there, so the file is whole at once.
pub async fn read_message_with<A, W, F>(assoc: &mut A, data: &mut W, mut before_data: F) -> anyhow::Result<Option<Message>>
where
    A: AsyncAssociation<TcpStream> + Send,
    W: AsyncWrite + Unpin + Send,
    F: FnMut(&InMemDicomObject, u8) -> Vec<u8> + Send,
{
    let mut command = Vec::new();
    let mut parsed: Option<InMemDicomObject> = None;
    let mut context_id: u8;
    loop {
        let pdu = AsyncAssociation::receive(assoc).await.context("the peer's connection broke off")?;
        match pdu {
            Pdu::PData { data: values } => {
                for v in values {
                    context_id = v.presentation_context_id;
                    match v.value_type {
                        PDataValueType::Command => {
                            command.extend_from_slice(&v.data);
                            if v.is_last {
                                let c = decode_command(&command)?;
                                if uint(&c, tags::COMMAND_DATA_SET_TYPE) == Some(NO_DATASET) {
                                    return Ok(Some(Message { command: c, context_id, has_dataset: false }));
                                }
                                let prefix = before_data(&c, context_id);
                                data.write_all(&prefix).await?;
                                parsed = Some(c);
                            }
                        }
                        PDataValueType::Data => {
                            data.write_all(&v.data).await?;
                            if v.is_last {
                                let c = parsed.take().context("a data set arrived before its command")?;
                                data.flush().await?;
                                return Ok(Some(Message { command: c, context_id, has_dataset: true }));
                            }
                        }
                    }
                }
            }
            Pdu::ReleaseRQ => {
                AsyncAssociation::send(assoc, &Pdu::ReleaseRP).await?;
                return Ok(None);
            }
            Pdu::AbortRQ { .. } => bail!("the peer aborted the association"),
            other => bail!("unexpected PDU from the peer: {}", pdu_name(&other)),
        }
    }
}

fn pdu_name(p: &Pdu) -> &'static str {
    match p {
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        _ => "unknown",
    }
}

/// Sends a command set as one P-DATA PDU.
pub async fn send_command<A: AsyncAssociation<TcpStream> + Send>(
    assoc: &mut A,
    context_id: u8,
    elements: Vec<InMemElement>,
) -> anyhow::Result<()> {
    let data = encode_command(elements)?;
    let pdu = Pdu::PData {
        data: vec![PDataValue { presentation_context_id: context_id, value_type: PDataValueType::Command, is_last: true, data }],
    };
    AsyncAssociation::send(assoc, &pdu).await?;
    Ok(())
}

/// C-ECHO: Ok when the peer answers with success.
pub async fn echo(peer: &Peer) -> anyhow::Result<()> {
    let mut a = peer.associate(&[(VERIFICATION.into(), vec![IMPLICIT_LE.into()])]).await?;
    let pc = accepted(&a, VERIFICATION).next().map(|(id, _)| id).context("the peer does not accept C-ECHO (Verification)")?;
    send_command(
        &mut a,
        pc,
        vec![
            ui(tags::AFFECTED_SOP_CLASS_UID, VERIFICATION),
            us(tags::COMMAND_FIELD, C_ECHO_RQ),
            us(tags::MESSAGE_ID, 1),
            us(tags::COMMAND_DATA_SET_TYPE, NO_DATASET),
        ],
    )
    .await?;
    let m = read_message(&mut a, &mut tokio::io::sink()).await?.context("the peer released instead of answering")?;
    let _ = a.release().await;
    match uint(&m.command, tags::STATUS) {
        Some(0) => Ok(()),
        s => bail!("C-ECHO answered status {}", s.map(|s| format!("0x{s:04X}")).unwrap_or_else(|| "none".into())),
    }
}

fn accepted<'a>(a: &'a AsyncClientAssociation<TcpStream>, abstract_syntax: &'a str) -> impl Iterator<Item = (u8, &'a str)> + 'a {
    a.presentation_contexts()
        .iter()
        .filter(move |pc| {
            pc.reason == PresentationContextResultReason::Acceptance && pc.abstract_syntax.trim_end_matches('\0') == abstract_syntax
        })
        .map(|pc| (pc.id, pc.transfer_syntax.trim_end_matches('\0')))
}

/// A DICOM file ready to be stored: where its data set starts and what it is.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub path: PathBuf,
    pub sop_class: String,
    pub sop_instance: String,
    pub transfer_syntax: String,
    /// Byte offset of the data set (after preamble and file meta group).
    pub offset: u64,
}

impl Outgoing {
    /// Reads the file meta group of a Part-10 file.
    pub fn read(path: PathBuf) -> anyhow::Result<Outgoing> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut head = [0u8; 132];
        f.read_exact(&mut head).context("not a DICOM file (too short)")?;
        let start = if &head[128..132] == b"DICM" {
            128
        } else if &head[..4] == b"DICM" {
            0
        } else {
            bail!("not a DICOM Part-10 file (no DICM marker)");
        };
        f.seek(SeekFrom::Start(start))?;
        let meta = dicom_object::FileMetaTable::from_reader(&mut f).context("the file meta group cannot be read")?;
        let offset = start + 4 + 12 + u64::from(meta.information_group_length);
        let clean = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
        Ok(Outgoing {
            path,
            sop_class: clean(&meta.media_storage_sop_class_uid),
            sop_instance: clean(&meta.media_storage_sop_instance_uid),
            transfer_syntax: clean(meta.transfer_syntax()),
            offset,
        })
    }
}

/// What the PACS answered to one C-STORE.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// Success (0x0000) or a warning status (0xBxxx, 0x0001): the instance is stored.
    Ok(u16),
    /// The PACS refused the instance (status, plain words).
    Refused(u16, String),
}

pub fn is_stored(status: u16) -> bool {
    status == 0 || status == 0x0001 || status & 0xF000 == 0xB000
}

pub fn status_words(status: u16) -> &'static str {
    match status {
        0x0000 => "success",
        0xB000 => "coercion of data elements",
        0xB006 => "elements discarded",
        0xB007 => "data set does not match SOP class",
        0x0122 => "SOP class not supported",
        0x0124 => "not authorized",
        0x0211 => "unrecognized operation",
        s if s & 0xFF00 == 0xA700 => "out of resources",
        s if s & 0xFF00 == 0xA900 => "data set does not match SOP class",
        s if s & 0xF000 == 0xC000 => "cannot understand",
        _ => "refused",
    }
}

/// Builds the presentation contexts for a set of files: per SOP class, each file's own transfer
/// syntax first (sent as is), then Explicit/Implicit VR Little Endian to fall back on for
/// uncompressed images. Split into groups that fit one association (≤ 127 contexts).
fn context_groups(files: &[Outgoing]) -> Vec<Vec<(String, Vec<String>)>> {
    let mut by_class: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for f in files {
        by_class.entry(&f.sop_class).or_default().insert(&f.transfer_syntax);
    }
    let mut groups = vec![];
    let mut current: Vec<(String, Vec<String>)> = vec![];
    for (class, syntaxes) in by_class {
        let mut ctx: Vec<(String, Vec<String>)> = syntaxes.iter().map(|t| (class.to_string(), vec![t.to_string()])).collect();
        if syntaxes.iter().any(|t| NATIVE.contains(t)) {
            ctx.push((class.to_string(), vec![EXPLICIT_LE.into(), IMPLICIT_LE.into()]));
        }
        if current.len() + ctx.len() > 120 {
            groups.push(std::mem::take(&mut current));
        }
        current.extend(ctx);
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// The outcome of storing one file: stored/refused, or `Err` when the PACS could not be reached
/// or the association broke (worth retrying later).
pub type StoreResult = (Outgoing, Result<Stored, String>);

/// Stores files into a PACS over `associations` parallel associations. Every file gets exactly
/// one result on `results`; files not attempted because the PACS was unreachable get `Err`.
pub async fn store_all(peer: &Peer, associations: usize, files: Vec<Outgoing>, results: tokio::sync::mpsc::UnboundedSender<StoreResult>) {
    for group in context_groups(&files) {
        let classes: BTreeSet<&str> = group.iter().map(|(c, _)| c.as_str()).collect();
        let queue: VecDeque<Outgoing> = files.iter().filter(|f| classes.contains(f.sop_class.as_str())).cloned().collect();
        let n = associations.clamp(1, queue.len().max(1));
        let queue = Arc::new(Mutex::new(queue));
        let group = Arc::new(group);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..n {
            let (peer, queue, group, results) = (peer.clone(), queue.clone(), group.clone(), results.clone());
            workers.spawn(async move { worker(&peer, &group, &queue, &results).await });
        }
        let mut last_error = String::new();
        while let Some(r) = workers.join_next().await {
            if let Ok(Err(e)) = r {
                last_error = format!("{e:#}");
            }
        }
        // Whatever no worker could take (the PACS went away) is reported for a later retry.
        let left: Vec<Outgoing> = queue.lock().map(|mut q| q.drain(..).collect()).unwrap_or_default();
        for f in left {
            let _ = results.send((f, Err(if last_error.is_empty() { "the PACS could not be reached".into() } else { last_error.clone() })));
        }
    }
}

async fn worker(
    peer: &Peer,
    contexts: &[(String, Vec<String>)],
    queue: &Mutex<VecDeque<Outgoing>>,
    results: &tokio::sync::mpsc::UnboundedSender<StoreResult>,
) -> anyhow::Result<()> {
    let mut assoc = match peer.associate(contexts).await {
        Ok(a) => a,
        Err(e) => {
            if let Some(refused) = e.downcast_ref::<AssociationRefused>() {
                // Everything this association was for is refused, with the PACS's reason.
                let all: Vec<Outgoing> = queue.lock().map(|mut q| q.drain(..).collect()).unwrap_or_default();
                for f in all {
                    let _ = results.send((f, Ok(Stored::Refused(0, refused.0.clone()))));
                }
            }
            return Err(e);
        }
    };
    let mut message_id: u16 = 0;
    loop {
        let next = queue.lock().ok().and_then(|mut q| q.pop_front());
        let Some(f) = next else { break };
        message_id = message_id.wrapping_add(1).max(1);
        match store_one(&mut assoc, &f, message_id).await {
            Ok(s) => {
                let _ = results.send((f, Ok(s)));
            }
            Err(e) => {
                // The association is unusable now; this file is retried later.
                let msg = format!("{e:#}");
                let _ = results.send((f, Err(msg)));
                let _ = assoc.abort().await;
                return Err(e);
            }
        }
    }
    let _ = assoc.release().await;
    Ok(())
}

/// Sends one C-STORE. The data set goes out as the file holds it when the PACS accepted the
/// file's transfer syntax; an uncompressed image is re-encoded when only the other uncompressed
/// syntaxes were accepted. `Err` means the association failed.
async fn store_one(assoc: &mut AsyncClientAssociation<TcpStream>, f: &Outgoing, message_id: u16) -> anyhow::Result<Stored> {
    let own = accepted(assoc, &f.sop_class).find(|(_, t)| *t == f.transfer_syntax).map(|(id, _)| id);
    let (pc, reencode_to) = match own {
        Some(id) => (id, None),
        None if NATIVE.contains(&f.transfer_syntax.as_str()) => match accepted(assoc, &f.sop_class).find(|(_, t)| NATIVE.contains(t)) {
            Some((id, t)) => (id, Some(t.to_string())),
            None => return Ok(Stored::Refused(0x0122, format!("the PACS accepts no transfer syntax for SOP class {}", f.sop_class))),
        },
        None => {
            return Ok(Stored::Refused(
                0x0122,
                format!(
                    "the PACS does not accept SOP class {} in transfer syntax {} (compressed images are sent as they are)",
                    f.sop_class, f.transfer_syntax
                ),
            ));
        }
    };
    send_command(
        assoc,
        pc,
        vec![
            ui(tags::AFFECTED_SOP_CLASS_UID, &f.sop_class),
            us(tags::COMMAND_FIELD, C_STORE_RQ),
            us(tags::MESSAGE_ID, message_id),
            us(tags::PRIORITY, 0),
            us(tags::COMMAND_DATA_SET_TYPE, 0),
            ui(tags::AFFECTED_SOP_INSTANCE_UID, &f.sop_instance),
        ],
    )
    .await?;
    {
        let mut w = assoc.send_pdata(pc);
        match reencode_to {
            None => {
                let mut file = tokio::fs::File::open(&f.path).await?;
                file.seek(std::io::SeekFrom::Start(f.offset)).await?;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = file.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    w.write_all(&buf[..n]).await?;
                }
            }
            Some(target) => {
                let path = f.path.clone();
                let bytes = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
                    let obj = dicom_object::OpenFileOptions::new().open_file(&path)?;
                    let mut out = Vec::new();
                    obj.write_dataset_with_ts(&mut out, ts(&target)?)?;
                    Ok(out)
                })
                .await??;
                w.write_all(&bytes).await?;
            }
        }
        w.finish().await?;
    }
    let m = read_message(assoc, &mut tokio::io::sink()).await?.context("the PACS released the association instead of answering")?;
    if uint(&m.command, tags::COMMAND_FIELD) != Some(C_STORE_RSP) {
        bail!("the PACS answered a C-STORE with something else");
    }
    let status = uint(&m.command, tags::STATUS).context("the PACS's C-STORE answer has no status")?;
    if is_stored(status) {
        Ok(Stored::Ok(status))
    } else {
        let comment = text(&m.command, tags::ERROR_COMMENT);
        let extra = if comment.is_empty() { String::new() } else { format!(": {comment}") };
        Ok(Stored::Refused(
            status,
            format!("the PACS refused {} with status 0x{status:04X} ({}){extra}", f.sop_instance, status_words(status)),
        ))
    }
}

/// One worklist entry found by [`find_worklist`].
#[derive(Debug, Clone, PartialEq)]
pub struct WorklistEntry {
    pub patient_id: String,
    pub issuer: String,
    pub accession: String,
}

/// Modality Worklist C-FIND for a patient by name and birth date.
pub async fn find_worklist(peer: &Peer, patient_name: &str, birth_date: &str) -> anyhow::Result<Vec<WorklistEntry>> {
    let mut a = peer.associate(&[(MODALITY_WORKLIST_FIND.into(), vec![EXPLICIT_LE.into(), IMPLICIT_LE.into()])]).await?;
    let (pc, syntax) = accepted(&a, MODALITY_WORKLIST_FIND)
        .next()
        .map(|(id, t)| (id, t.to_string()))
        .context("the worklist peer does not accept Modality Worklist C-FIND")?;
    let mut q = InMemDicomObject::new_empty();
    if !patient_name.is_ascii() {
        q.put(DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, PrimitiveValue::from("ISO_IR 192")));
    }
    q.put(DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from(patient_name)));
    q.put(DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, PrimitiveValue::from(birth_date)));
    q.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::Empty));
    q.put(DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, PrimitiveValue::Empty));
    q.put(DataElement::new(tags::ACCESSION_NUMBER, VR::SH, PrimitiveValue::Empty));
    let mut sps = InMemDicomObject::new_empty();
    sps.put(DataElement::new(tags::SCHEDULED_STATION_AE_TITLE, VR::AE, PrimitiveValue::Empty));
    sps.put(DataElement::new(tags::SCHEDULED_PROCEDURE_STEP_START_DATE, VR::DA, PrimitiveValue::Empty));
    sps.put(DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::Empty));
    q.put(DataElement::new(tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE, VR::SQ, dicom_core::value::DataSetSequence::from(vec![sps])));
    let mut identifier = Vec::new();
    let cs = if patient_name.is_ascii() {
        dicom_encoding::text::SpecificCharacterSet::default()
    } else {
        dicom_encoding::text::SpecificCharacterSet::ISO_IR_192
    };
    q.write_dataset_with_ts_cs(&mut identifier, ts(&syntax)?, cs)?;
    send_command(
        &mut a,
        pc,
        vec![
            ui(tags::AFFECTED_SOP_CLASS_UID, MODALITY_WORKLIST_FIND),
            us(tags::COMMAND_FIELD, C_FIND_RQ),
            us(tags::MESSAGE_ID, 1),
            us(tags::PRIORITY, 0),
            us(tags::COMMAND_DATA_SET_TYPE, 0),
        ],
    )
    .await?;
    a.send(&Pdu::PData {
        data: vec![PDataValue { presentation_context_id: pc, value_type: PDataValueType::Data, is_last: true, data: identifier }],
    })
    .await?;
    let mut found = vec![];
    loop {
        let mut data = Vec::new();
        let m = read_message(&mut a, &mut data).await?.context("the worklist peer released the association mid-query")?;
        let status = uint(&m.command, tags::STATUS).context("C-FIND answer without status")?;
        match status {
            0xFF00 | 0xFF01 if m.has_dataset => {
                let item = InMemDicomObject::read_dataset_with_ts(&data[..], ts(&syntax)?)?;
                found.push(WorklistEntry {
                    patient_id: text(&item, tags::PATIENT_ID),
                    issuer: text(&item, tags::ISSUER_OF_PATIENT_ID),
                    accession: text(&item, tags::ACCESSION_NUMBER),
                });
            }
            0xFF00 | 0xFF01 => {}
            0x0000 => break,
            s => {
                let _ = a.abort().await;
                bail!("the worklist query failed with status 0x{s:04X}");
            }
        }
    }
    let _ = a.release().await;
    Ok(found)
}
