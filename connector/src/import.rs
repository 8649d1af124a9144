//! Import by code ("bring your code instead of your CD"): clinic staff enter the access code and
//! second factor a patient brought from another portal — another Ferry hub or any portal that
//! speaks DLX (DIN/TS 19455). The connector redeems it over the DLX API (`token`, `tokentfa`),
//! lists what it unlocks, downloads each study ZIP (IHE PDI layout) and report PDF, reconciles
//! the studies by the site's rules and stores them into the inbound PACS targets. Nothing is
//! changed but the reconciled identifiers; storing again after an interruption is harmless (a
//! PACS keeps an instance once by its SOP Instance UID).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use dicom_dictionary_std::tags;
use ferry_schemas::dlx::{self, Answer, DataList, TfaAnswers, TokenInfo};
use tokio::io::AsyncWriteExt;

use crate::config::{Config, Target};
use crate::dimse::{Outgoing, Stored, text};
use crate::inbound::{peer, store_into, target_kind};
use crate::reconcile::Reconciler;
use crate::state::State;

/// The DICOMDIR's own SOP class (Media Storage Directory Storage): not stored into a PACS.
const MEDIA_DIRECTORY: &str = "1.2.840.10008.1.3.10";

pub struct ImportOptions {
    /// The portal's URL (its root or its `/dlx/v1` base); the connector's hub when `None`.
    pub portal: Option<String>,
    pub code: String,
    /// One answer per question the portal asks, in its order.
    pub answers: Vec<String>,
    /// Where report PDFs are saved.
    pub reports_dir: PathBuf,
}

/// What an import brought into the PACS.
#[derive(Debug, Default)]
pub struct Imported {
    pub studies: usize,
    pub instances: usize,
    pub reports: Vec<PathBuf>,
    pub targets: Vec<String>,
}

fn dlx_base(portal: &str) -> String {
    let p = portal.trim_end_matches('/');
    if p.ends_with("/dlx/v1") { p.to_string() } else { format!("{p}/dlx/v1") }
}

/// A DATE answer as YYYYMMDD, from YYYYMMDD, YYYY-MM-DD or DD.MM.YYYY.
fn date_answer(s: &str) -> String {
    let s = s.trim();
    let parts: Vec<&str> = s.split(['.', '-', '/']).collect();
    match parts.as_slice() {
        [y, m, d] if y.len() == 4 => format!("{y}{m:0>2}{d:0>2}"),
        [d, m, y] if y.len() == 4 => format!("{y}{m:0>2}{d:0>2}"),
        _ => s.to_string(),
    }
}

fn describe(q: &dlx::Question) -> String {
    let text = q
        .question
        .iter()
        .find(|t| t.language == "en")
        .or_else(|| q.question.first())
        .map(|t| t.text.clone())
        .unwrap_or_else(|| q.question_type.clone());
    let format = if q.answer_format == "DATE" { "a date, YYYYMMDD" } else { "text" };
    format!("{text} ({format})")
}

pub async fn import(cfg: &Config, o: &ImportOptions) -> anyhow::Result<Imported> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let targets: Vec<Target> = cfg.inbound_targets().into_iter().cloned().collect();
    if targets.is_empty() {
        bail!("no PACS target to import into ([[pacs]] and inbound.targets in the configuration)");
    }
    let base = dlx_base(o.portal.as_deref().unwrap_or(&cfg.hub.url));
    let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
    let code = o.code.trim();
    if code.is_empty() || code.len() > 64 || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ' ') {
        bail!("the code has characters no access code has");
    }
    let code = code.replace(' ', "");

    // 1. The questions (a portal answers this for any code, so nothing is learnt yet).
    let resp = http
        .get(format!("{base}/token/{code}"))
        .header(dlx::HEADER, "1")
        .send()
        .await
        .with_context(|| format!("cannot reach the portal at {base}"))?;
    if !resp.status().is_success() {
        bail!("the portal at {base} does not answer like a DLX portal (HTTP {} for the code's questions)", resp.status());
    }
    let info: TokenInfo = resp.json().await.with_context(|| format!("the portal at {base} does not answer like a DLX portal"))?;
    if info.tfa_question.len() != o.answers.len() {
        let asked: Vec<String> = info.tfa_question.iter().enumerate().map(|(i, q)| format!("  {}. {}", i + 1, describe(q))).collect();
        bail!("the portal asks {} question(s); give one --answer for each, in this order:\n{}", info.tfa_question.len(), asked.join("\n"));
    }
    let answers = TfaAnswers {
        tfa_answer: info
            .tfa_question
            .iter()
            .zip(&o.answers)
            .map(|(q, a)| Answer {
                question_id: q.question_id.clone(),
                answer: if q.answer_format == "DATE" { date_answer(a) } else { a.trim().to_string() },
            })
            .collect(),
    };

    // 2. Redeem.
    let resp = http
        .post(format!("{base}/tokentfa/{code}"))
        .json(&answers)
        .send()
        .await
        .with_context(|| format!("cannot reach the portal at {base}"))?;
    let token = match resp.status().as_u16() {
        200 => resp.text().await?.trim().to_string(),
        401 => bail!(
            "the portal did not accept the code or the answer (check both with the patient; every wrong answer counts, and the code locks after a few)"
        ),
        403 => bail!("the code is right, but what it shared has expired at the portal"),
        429 => bail!("the portal asks to wait before the next attempt (too many attempts from here)"),
        s => bail!("the portal answered HTTP {s} to the code"),
    };

    // 3. What it unlocks.
    let resp = http.get(format!("{base}/list")).bearer_auth(&token).send().await?;
    if !resp.status().is_success() {
        bail!("the portal did not list what the code unlocks: HTTP {}", resp.status());
    }
    let list: DataList = resp.json().await.context("the portal's list is not DLX")?;
    if list.data_item.is_empty() {
        bail!("the code unlocks nothing (no study, no report)");
    }

    let state = State::open(&cfg.state_dir).await?;
    let work = state.dir.join("import").join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&work)?;
    let result = fetch_and_store(cfg, o, &http, &base, &token, &list, &work, &targets).await;
    let _ = std::fs::remove_dir_all(&work);
    match &result {
        Ok(r) => {
            state.event("import", &format!("{} instance(s) of {} study(ies) imported by code from {base}", r.instances, r.studies)).await?
        }
        Err(e) => state.event("import", &format!("import by code from {base} failed: {e:#}")).await?,
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn fetch_and_store(
    cfg: &Config,
    o: &ImportOptions,
    http: &reqwest::Client,
    base: &str,
    token: &str,
    list: &DataList,
    work: &Path,
    targets: &[Target],
) -> anyhow::Result<Imported> {
    let mut imported = Imported { targets: targets.iter().map(|t| t.name.clone()).collect(), ..Default::default() };
    let mut files: Vec<PathBuf> = Vec::new();
    for (n, item) in list.data_item.iter().enumerate() {
        let is_pdf = item.mime_type.contains("pdf");
        let dest = work.join(format!("item{n}"));
        download(http, &format!("{base}/download/{}", item.id), token, &dest)
            .await
            .with_context(|| format!("downloading item {} of {}", n + 1, list.data_item.len()))?;
        if is_pdf {
            std::fs::create_dir_all(&o.reports_dir).with_context(|| format!("cannot create {}", o.reports_dir.display()))?;
            let clean: String = item.description.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').take(40).collect();
            let to = o.reports_dir.join(format!("report-{}-{}.pdf", n + 1, if clean.is_empty() { "report".into() } else { clean }));
            std::fs::copy(&dest, &to).with_context(|| format!("cannot save the report to {}", to.display()))?;
            imported.reports.push(to);
        } else {
            let into = work.join(format!("unzipped{n}"));
            let (zip, dir) = (dest.clone(), into.clone());
            let found = tokio::task::spawn_blocking(move || unzip_dicom(&zip, &dir)).await??;
            let _ = std::fs::remove_file(&dest);
            files.extend(found);
        }
    }
    if files.is_empty() {
        if imported.reports.is_empty() {
            bail!("the portal's downloads hold no DICOM instance");
        }
        return Ok(imported);
    }

    // Reconcile per study, as for studies from the hub.
    let worklist = cfg.inbound.reconcile.worklist.as_deref().and_then(|w| cfg.target(w)).and_then(peer);
    let mut reconciler = Reconciler::new(&cfg.inbound.reconcile, worklist)?;
    let mut outgoing = Vec::new();
    let mut studies = std::collections::HashSet::new();
    for f in files {
        let p = f.clone();
        let study = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            let obj = dicom_object::OpenFileOptions::new().read_until(tags::PIXEL_DATA).open_file(&p)?;
            Ok(text(&obj, tags::STUDY_INSTANCE_UID))
        })
        .await??;
        let out = f.with_extension("reconciled");
        let path = reconciler.prepare(&study, f, out).await.context("import reconciliation")?;
        studies.insert(study);
        outgoing.push(tokio::task::spawn_blocking(move || Outgoing::read(path)).await??);
    }
    imported.studies = studies.len();
    imported.instances = outgoing.len();

    let mut problems = Vec::new();
    for t in targets {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sender = {
            let (t, http, files) = (t.clone(), http.clone(), outgoing.clone());
            tokio::spawn(async move { store_into(&t, &http, files, tx).await })
        };
        let mut stored = 0;
        let mut last = String::new();
        while let Some((_, r)) = rx.recv().await {
            match r {
                Ok(Stored::Ok(_)) => stored += 1,
                Ok(Stored::Refused(_, msg)) | Err(msg) => last = msg,
            }
        }
        sender.await.context("the storing task failed")?;
        if stored < outgoing.len() {
            problems.push(format!("{} ({}): {stored} of {} stored; {last}", t.name, target_kind(t), outgoing.len()));
        }
    }
    if !problems.is_empty() {
        bail!("not everything reached the PACS (running the import again is safe):\n  {}", problems.join("\n  "));
    }
    Ok(imported)
}

/// Downloads one DLX item to `to`; waits and asks again while the portal answers 503 (busy).
async fn download(http: &reqwest::Client, url: &str, token: &str, to: &Path) -> anyhow::Result<()> {
    for _ in 0..20 {
        let mut resp = http.get(url).bearer_auth(token).send().await.with_context(|| format!("cannot reach {url}"))?;
        match resp.status().as_u16() {
            200 => {}
            503 => {
                let wait = resp.json::<dlx::Busy>().await.map(|b| b.time_out_in_seconds).unwrap_or(5).clamp(1, 60);
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            401 => bail!("the portal no longer accepts the session (it may have expired; run the import again)"),
            s => bail!("the portal answered HTTP {s}"),
        }
        let mut file = tokio::fs::File::create(to).await?;
        while let Some(chunk) = resp.chunk().await.context("the download broke off")? {
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        return Ok(());
    }
    bail!("the portal stayed busy; try again later")
}

/// Unpacks the DICOM files of a ZIP (names checked: nothing lands outside `dir`); returns the
/// DICOM instances (the DICOMDIR, README, pages and PDFs left out).
fn unzip_dicom(zip: &Path, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(zip)?).context("the portal's download is not a ZIP")?;
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i)?;
        if entry.is_dir() {
            continue;
        }
        let Some(name) = entry.enclosed_name() else { continue };
        let to = dir.join(format!("f{i}"));
        let mut f = std::fs::File::create(&to)?;
        std::io::copy(&mut entry, &mut f).with_context(|| format!("unpacking {}", name.display()))?;
        drop(f);
        match Outgoing::read(to.clone()) {
            Ok(o) if o.sop_class != MEDIA_DIRECTORY => out.push(to),
            _ => {
                let _ = std::fs::remove_file(&to);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_in_the_forms_staff_type() {
        assert_eq!(super::date_answer("19700201"), "19700201");
        assert_eq!(super::date_answer("1970-02-01"), "19700201");
        assert_eq!(super::date_answer("1.2.1970"), "19700201");
        assert_eq!(super::dlx_base("https://p.example/"), "https://p.example/dlx/v1");
        assert_eq!(super::dlx_base("https://p.example/dlx/v1"), "https://p.example/dlx/v1");
    }
}
