//! The access sheet the clinic hands the patient: a PDF (A4) with the QR code of the redeem link,
//! the code for typing, "available until", the studies, and short instructions in German and
//! English. A one-time password goes on a second page, to be cut off and handed over apart.
//!
//! Built with pdf-writer: the standard Helvetica and Courier fonts (WinAnsi encoding covers the
//! German letters), the QR modules drawn as filled squares — no font files, no images.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use ferry_schemas::TransferStudy;
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};

use super::factor;
use crate::ui::{Lang, dicom_date, person_name};

pub struct SheetData<'a> {
    pub community_name: &'a str,
    pub code: &'a str,
    pub redeem_url: &'a str,
    pub redeem_page: &'a str,
    pub expires_at: i64,
    pub question_type: &'a str,
    pub password: Option<&'a str>,
    pub studies: &'a [TransferStudy],
}

/// Text in WinAnsi (Latin-1 for the letters used here); anything else becomes `?`.
fn win_ansi(s: &str) -> Vec<u8> {
    s.chars().map(|c| if (c as u32) < 0x100 && !c.is_control() { c as u32 as u8 } else { b'?' }).collect()
}

struct Page {
    content: Content,
    y: f32,
}

impl Page {
    fn text(&mut self, font: &[u8], size: f32, x: f32, s: &str) {
        self.content.begin_text();
        self.content.set_font(Name(font), size);
        self.content.next_line(x, self.y);
        self.content.show(Str(&win_ansi(s)));
        self.content.end_text();
        self.y -= size * 1.45;
    }

    fn gap(&mut self, pts: f32) {
        self.y -= pts;
    }
}

fn date(ms: i64) -> (String, String) {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let da = format!("{:04}{:02}{:02}", t.year(), t.month() as u8, t.day());
    (dicom_date(Lang::De, &da), dicom_date(Lang::En, &da))
}

/// Renders the sheet as PDF bytes.
pub fn render(d: &SheetData<'_>) -> anyhow::Result<Vec<u8>> {
    let qr = qrcode::QrCode::with_error_correction_level(d.redeem_url.as_bytes(), qrcode::EcLevel::M)?;
    let mut p = Page { content: Content::new(), y: 780.0 };
    p.text(b"F2", 20.0, 56.0, "Ihre Bilder online / Your images online");
    p.text(b"F1", 12.0, 56.0, d.community_name);
    p.gap(8.0);

    // The QR code, 170 pt wide, with its quiet zone left white.
    let modules = qr.width();
    let size = 170.0;
    let cell = size / modules as f32;
    let (qx, qy) = (56.0, p.y - size);
    p.content.set_fill_gray(0.0);
    for (i, color) in qr.to_colors().iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (col, row) = ((i % modules) as f32, (i / modules) as f32);
            p.content.rect(qx + col * cell, qy + size - (row + 1.0) * cell, cell + 0.02, cell + 0.02);
        }
    }
    p.content.fill_nonzero();
    // The code beside the QR code.
    let top = p.y;
    p.y = top - 30.0;
    let x = 250.0;
    p.text(b"F1", 11.0, x, "Zugangscode / Access code:");
    p.text(b"F3", 22.0, x, d.code);
    p.gap(6.0);
    let (de, en) = date(d.expires_at);
    p.text(b"F1", 11.0, x, &format!("Verfügbar bis / Available until: {de}"));
    p.text(b"F1", 9.0, x, &format!("({en})"));
    p.y = top - size - 28.0;

    let answer_de = match d.question_type {
        factor::PASSWORD => "das Passwort vom separaten Zettel",
        factor::STUDY_DATE => "das Datum Ihrer Untersuchung",
        factor::CUSTOM => "die Antwort auf die Frage, die die Praxis Ihnen genannt hat",
        _ => "Ihr Geburtsdatum",
    };
    let answer_en = match d.question_type {
        factor::PASSWORD => "the password on the separate slip",
        factor::STUDY_DATE => "the date of your examination",
        factor::CUSTOM => "the answer to the question the clinic told you",
        _ => "your date of birth",
    };
    p.text(b"F2", 12.0, 56.0, "So geht's");
    for line in [
        "1. Scannen Sie den QR-Code mit dem Handy, oder öffnen Sie".to_string(),
        format!("    {} und geben Sie den Zugangscode ein.", d.redeem_page),
        format!("2. Geben Sie {answer_de} ein."),
        "3. Sehen Sie die Bilder und den Befund an, oder laden Sie alles als ZIP".to_string(),
        "    für Ihre Ärztin / Ihren Arzt herunter (Import in jedes PACS).".to_string(),
    ] {
        p.text(b"F1", 10.0, 56.0, &line);
    }
    p.gap(6.0);
    p.text(b"F2", 12.0, 56.0, "How it works");
    for line in [
        "1. Scan the QR code with your phone, or open".to_string(),
        format!("    {} and enter the access code.", d.redeem_page),
        format!("2. Enter {answer_en}."),
        "3. View the images and the report, or download everything as a ZIP".to_string(),
        "    for your doctor (any PACS imports it).".to_string(),
    ] {
        p.text(b"F1", 10.0, 56.0, &line);
    }
    p.gap(8.0);
    if !d.studies.is_empty() {
        p.text(b"F2", 12.0, 56.0, "Untersuchungen / Studies");
        for s in d.studies.iter().take(12) {
            let line = format!(
                "{}  {}  {}  ({} Bilder / images)",
                dicom_date(Lang::De, &s.study_date),
                s.modalities.join(", "),
                s.description,
                s.instances
            );
            p.text(b"F1", 10.0, 56.0, &line);
        }
        if let Some(first) = d.studies.first() {
            p.text(b"F1", 10.0, 56.0, &format!("Patient: {}", person_name(&first.patient_name)));
        }
        p.gap(6.0);
    }
    p.text(
        b"F1",
        8.0,
        56.0,
        "Bewahren Sie dieses Blatt sicher auf: wer Code und Antwort kennt, sieht die Bilder. Nicht für die Befundung.",
    );
    p.text(b"F1", 8.0, 56.0, "Keep this sheet safe: whoever knows the code and the answer sees the images. Not for diagnostic use.");

    let mut pages = vec![p.content];
    if let Some(pw) = d.password {
        let mut slip = Page { content: Content::new(), y: 780.0 };
        slip.text(b"F2", 16.0, 56.0, "Passwort / Password");
        slip.text(b"F1", 11.0, 56.0, d.community_name);
        slip.gap(10.0);
        slip.text(b"F3", 26.0, 56.0, pw);
        slip.gap(10.0);
        slip.text(b"F1", 10.0, 56.0, "Getrennt vom Zugangscode aufbewahren. Keep apart from the access code.");
        pages.push(slip.content);
    }

    let mut pdf = Pdf::new();
    let catalog = Ref::new(1);
    let tree = Ref::new(2);
    let fonts = [(Ref::new(3), b"F1", "Helvetica"), (Ref::new(4), b"F2", "Helvetica-Bold"), (Ref::new(5), b"F3", "Courier-Bold")];
    let mut next = 6;
    let mut kids = Vec::new();
    let mut streams = Vec::new();
    for content in pages {
        let (page, stream) = (Ref::new(next), Ref::new(next + 1));
        next += 2;
        kids.push(page);
        streams.push((page, stream, content.finish()));
    }
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(kids.iter().copied()).count(kids.len() as i32);
    for (page, stream, bytes) in &streams {
        let mut pg = pdf.page(*page);
        pg.media_box(Rect::new(0.0, 0.0, 595.0, 842.0));
        pg.parent(tree);
        pg.contents(*stream);
        let mut res = pg.resources();
        let mut f = res.fonts();
        for (id, name, _) in &fonts {
            f.pair(Name(*name), *id);
        }
        f.finish();
        res.finish();
        pg.finish();
        pdf.stream(*stream, bytes);
    }
    for (id, _, base) in &fonts {
        pdf.type1_font(*id).base_font(Name(base.as_bytes())).encoding_predefined(Name(b"WinAnsiEncoding"));
    }
    pdf.document_info(Ref::new(next)).title(pdf_writer::TextStr("Zugangscode / Access code"));
    Ok(pdf.finish())
}

pub fn pdf_response(pdf: Vec<u8>) -> Response {
    let mut r = pdf.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/pdf"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("inline; filename=\"access-sheet.pdf\""));
    r
}

/// The QR code of the redeem link as inline SVG (for the printable page).
pub fn qr_svg(url: &str) -> String {
    qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M)
        .map(|c| c.render::<qrcode::render::svg::Color>().min_dimensions(220, 220).quiet_zone(true).build())
        .unwrap_or_default()
}
