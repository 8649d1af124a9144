//! QIDO-RS search at study, series and instance level: single values, `*`/`?` wildcards,
//! date/time ranges, UID lists, case-insensitive person names, `includefield`, `limit`/`offset`,
//! `fuzzymatching`. Results are `application/dicom+json`; no match is `200 []`.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use dicom_core::Tag;
use dicom_core::dictionary::DataDictionary;
use dicom_dictionary_std::StandardDataDictionary;
use serde_json::{Map, Value, json};

use super::{DICOM_JSON, DicomPath, base_url};
use crate::access::Principal;
use crate::db::Dialect;
use crate::error::{AppError, AppResult};
use crate::ingest::describe::valid_uid;
use crate::state::AppState;

const DEFAULT_LIMIT: i64 = 1000;
const MAX_LIMIT: i64 = 10_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Level {
    Study,
    Series,
    Instance,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Exact or wildcard, case-sensitive.
    Text,
    /// Person name: case-insensitive, matched against an upper-cased column.
    PersonName,
    /// Case-insensitive text (descriptions).
    TextCi,
    Date,
    Time,
    UidList,
    /// '|'-delimited list column (ModalitiesInStudy).
    Modalities,
    Integer,
}

/// Matching keys: (tag, column, kind, lowest level where it is a matching key).
const KEYS: &[(Tag, &str, Kind, Level)] = &[
    (Tag(0x0010, 0x0010), "s.patient_name_norm", Kind::PersonName, Level::Study),
    (Tag(0x0010, 0x0020), "s.patient_id", Kind::Text, Level::Study),
    (Tag(0x0010, 0x0030), "s.patient_birth_date", Kind::Date, Level::Study),
    (Tag(0x0010, 0x0040), "s.patient_sex", Kind::Text, Level::Study),
    (Tag(0x0008, 0x0020), "s.study_date", Kind::Date, Level::Study),
    (Tag(0x0008, 0x0030), "s.study_time", Kind::Time, Level::Study),
    (Tag(0x0008, 0x0050), "s.accession_number", Kind::Text, Level::Study),
    (Tag(0x0020, 0x0010), "s.study_id", Kind::Text, Level::Study),
    (Tag(0x0020, 0x000D), "s.study_uid", Kind::UidList, Level::Study),
    (Tag(0x0008, 0x1030), "s.study_description", Kind::TextCi, Level::Study),
    (Tag(0x0008, 0x0090), "s.referring_physician_norm", Kind::PersonName, Level::Study),
    (Tag(0x0008, 0x0061), "s.modalities", Kind::Modalities, Level::Study),
    (Tag(0x0008, 0x0060), "se.modality", Kind::Text, Level::Series),
    (Tag(0x0020, 0x000E), "se.series_uid", Kind::UidList, Level::Series),
    (Tag(0x0020, 0x0011), "se.series_number", Kind::Text, Level::Series),
    (Tag(0x0008, 0x103E), "se.series_description", Kind::TextCi, Level::Series),
    (Tag(0x0008, 0x0021), "se.series_date", Kind::Date, Level::Series),
    (Tag(0x0008, 0x0016), "i.sop_class_uid", Kind::UidList, Level::Instance),
    (Tag(0x0008, 0x0018), "i.sop_instance_uid", Kind::UidList, Level::Instance),
    (Tag(0x0020, 0x0013), "i.instance_number", Kind::Integer, Level::Instance),
];

/// Attributes returned by default at each level (PS3.18 Tables 6.7.1-2, -2a, -2b).
const STUDY_FIELDS: &[u32] = &[
    0x0008_0005,
    0x0008_0020,
    0x0008_0030,
    0x0008_0050,
    0x0008_0056,
    0x0008_0061,
    0x0008_0090,
    0x0008_1030,
    0x0008_1190,
    0x0010_0010,
    0x0010_0020,
    0x0010_0030,
    0x0010_0040,
    0x0020_000D,
    0x0020_0010,
    0x0020_1206,
    0x0020_1208,
];
const SERIES_FIELDS: &[u32] = &[
    0x0008_0005,
    0x0008_0056,
    0x0008_0060,
    0x0008_0021,
    0x0008_103E,
    0x0008_1190,
    0x0020_000D,
    0x0020_000E,
    0x0020_0011,
    0x0020_1209,
    0x0040_0244,
    0x0040_0245,
];
const INSTANCE_FIELDS: &[u32] = &[
    0x0008_0005,
    0x0008_0016,
    0x0008_0018,
    0x0008_0056,
    0x0008_1190,
    0x0020_000D,
    0x0020_000E,
    0x0020_0013,
    0x0028_0008,
    0x0028_0010,
    0x0028_0011,
    0x0028_0100,
];

fn tag_key(t: Tag) -> String {
    format!("{:04X}{:04X}", t.group(), t.element())
}

fn u32_tag(v: u32) -> Tag {
    Tag((v >> 16) as u16, (v & 0xFFFF) as u16)
}

/// Resolves a query key given as keyword (`PatientName`) or hex tag (`00100010`).
fn resolve_tag(key: &str) -> Option<Tag> {
    if key.len() == 8 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        let g = u16::from_str_radix(&key[..4], 16).ok()?;
        let e = u16::from_str_radix(&key[4..], 16).ok()?;
        return Some(Tag(g, e));
    }
    StandardDataDictionary.by_name(key).map(|e| e.tag.inner())
}

struct Search {
    filters: Vec<(Tag, String)>,
    include_all: bool,
    include: Vec<Tag>,
    limit: i64,
    offset: i64,
    fuzzy: bool,
}

fn parse_params(params: Vec<(String, String)>) -> AppResult<Search> {
    let mut s = Search { filters: vec![], include_all: false, include: vec![], limit: DEFAULT_LIMIT, offset: 0, fuzzy: false };
    for (k, v) in params {
        match k.as_str() {
            "limit" => {
                s.limit = v
                    .parse()
                    .ok()
                    .filter(|l| *l >= 0)
                    .ok_or_else(|| AppError::BadRequest("limit must be a non-negative integer".into()))?;
                s.limit = s.limit.min(MAX_LIMIT);
            }
            "offset" => {
                s.offset = v
                    .parse()
                    .ok()
                    .filter(|o| *o >= 0)
                    .ok_or_else(|| AppError::BadRequest("offset must be a non-negative integer".into()))?;
            }
            "fuzzymatching" => {
                s.fuzzy = match v.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(AppError::BadRequest("fuzzymatching is true or false".into())),
                };
            }
            "includefield" => {
                for f in v.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if f.eq_ignore_ascii_case("all") {
                        s.include_all = true;
                    } else {
                        let tag = resolve_tag(f).ok_or_else(|| AppError::BadRequest(format!("unknown attribute in includefield: {f}")))?;
                        s.include.push(tag);
                    }
                }
            }
            "format" | "charset" => {}
            key => {
                // Sequence paths such as 00400275.00401001 are not supported for matching.
                let tag = resolve_tag(key).ok_or_else(|| AppError::BadRequest(format!("unknown query parameter or attribute: {key}")))?;
                s.filters.push((tag, v));
            }
        }
    }
    Ok(s)
}

/// Escapes a DICOM wildcard pattern into the dialect's pattern syntax.
fn wildcard(dialect: Dialect, value: &str) -> (String, &'static str) {
    let mut out = String::with_capacity(value.len() + 4);
    match dialect {
        Dialect::Sqlite => {
            // GLOB: case-sensitive, * and ? as in DICOM; [ starts a class, so escape it.
            for c in value.chars() {
                match c {
                    '[' => out.push_str("[[]"),
                    c => out.push(c),
                }
            }
            (out, "GLOB")
        }
        Dialect::Postgres => {
            for c in value.chars() {
                match c {
                    '*' => out.push('%'),
                    '?' => out.push('_'),
                    '%' | '_' | '\\' => {
                        out.push('\\');
                        out.push(c);
                    }
                    c => out.push(c),
                }
            }
            (out, "LIKE")
        }
    }
}

struct SqlBuilder {
    dialect: Dialect,
    clauses: Vec<String>,
    binds: Vec<BindValue>,
}

enum BindValue {
    Text(String),
    Int(i64),
}

impl SqlBuilder {
    fn bind(&mut self, v: BindValue) -> String {
        self.binds.push(v);
        format!("${}", self.binds.len())
    }

    fn text_match(&mut self, column: &str, value: &str, upper: bool) {
        let value = if upper { value.to_uppercase() } else { value.to_string() };
        if value.contains(['*', '?']) {
            let (pattern, op) = wildcard(self.dialect, &value);
            let p = self.bind(BindValue::Text(pattern));
            let esc = if op == "LIKE" { " ESCAPE '\\'" } else { "" };
            self.clauses.push(format!("{column} {op} {p}{esc}"));
        } else {
            let p = self.bind(BindValue::Text(value));
            self.clauses.push(format!("{column} = {p}"));
        }
    }

    fn range(&mut self, column: &str, value: &str, date: bool) -> AppResult<()> {
        let valid = |v: &str| {
            if date {
                v.len() == 8 && v.bytes().all(|b| b.is_ascii_digit())
            } else {
                !v.is_empty() && v.len() <= 16 && v.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b':')
            }
        };
        let norm = |v: &str| v.replace(':', "");
        let what = if date { "date (YYYYMMDD)" } else { "time (HHMMSS)" };
        match value.split_once('-') {
            Some((from, to)) => {
                if from.is_empty() && to.is_empty() {
                    return Err(AppError::BadRequest(format!("empty {what} range")));
                }
                if !from.is_empty() {
                    if !valid(from) {
                        return Err(AppError::BadRequest(format!("invalid {what}: {from}")));
                    }
                    let p = self.bind(BindValue::Text(norm(from)));
                    self.clauses.push(format!("({column} <> '' AND {column} >= {p})"));
                }
                if !to.is_empty() {
                    if !valid(to) {
                        return Err(AppError::BadRequest(format!("invalid {what}: {to}")));
                    }
                    // An end time of 1200 includes 1200xx.xxx: pad with nines (digits and the
                    // dot only, so every collation orders it the same way).
                    let upper = if date {
                        norm(to)
                    } else {
                        let t = norm(to);
                        let (hms, frac) = t.split_once('.').unwrap_or((&t, ""));
                        format!("{hms:9<6}.{frac:9<6}")
                    };
                    let p = self.bind(BindValue::Text(upper));
                    self.clauses.push(format!("({column} <> '' AND {column} <= {p})"));
                }
            }
            None => {
                if !valid(value) {
                    return Err(AppError::BadRequest(format!("invalid {what}: {value}")));
                }
                if date {
                    let p = self.bind(BindValue::Text(value.to_string()));
                    self.clauses.push(format!("{column} = {p}"));
                } else {
                    let (pattern, op) = wildcard(self.dialect, &format!("{}*", norm(value)));
                    let p = self.bind(BindValue::Text(pattern));
                    let esc = if op == "LIKE" { " ESCAPE '\\'" } else { "" };
                    self.clauses.push(format!("{column} {op} {p}{esc}"));
                }
            }
        }
        Ok(())
    }
}

fn add_filter(b: &mut SqlBuilder, column: &str, kind: Kind, value: &str, fuzzy: bool) -> AppResult<()> {
    let value = value.trim();
    if value.is_empty() {
        // Universal matching: the key only asks for the attribute to be returned.
        return Ok(());
    }
    match kind {
        Kind::Text => b.text_match(column, value, false),
        Kind::TextCi => b.text_match(&format!("UPPER({column})"), value, true),
        Kind::PersonName => {
            // DICOM PN matching is case-insensitive here; with fuzzymatching, any name
            // component may start with the value.
            if fuzzy && !value.contains(['*', '?']) {
                let up = value.to_uppercase();
                let (p1, op) = wildcard(b.dialect, &format!("{up}*"));
                let (p2, _) = wildcard(b.dialect, &format!("*^{up}*"));
                let (p3, _) = wildcard(b.dialect, &format!("* {up}*"));
                let esc = if op == "LIKE" { " ESCAPE '\\'" } else { "" };
                let a = b.bind(BindValue::Text(p1));
                let c = b.bind(BindValue::Text(p2));
                let d = b.bind(BindValue::Text(p3));
                b.clauses.push(format!("({column} {op} {a}{esc} OR {column} {op} {c}{esc} OR {column} {op} {d}{esc})"));
            } else {
                b.text_match(column, value, true);
            }
        }
        Kind::Date => b.range(column, value, true)?,
        Kind::Time => b.range(column, value, false)?,
        Kind::UidList => {
            let uids: Vec<&str> = value.split([',', '\\']).map(str::trim).filter(|u| !u.is_empty()).collect();
            if uids.iter().any(|u| !valid_uid(u)) {
                return Err(AppError::BadRequest("UID list contains an invalid UID".into()));
            }
            // Only separators and spaces: no UID named, so it matches like an empty value (every
            // study). `IN ()` would be an error on PostgreSQL.
            if !uids.is_empty() {
                let ps: Vec<String> = uids.iter().map(|u| b.bind(BindValue::Text(u.to_string()))).collect();
                b.clauses.push(format!("{column} IN ({})", ps.join(", ")));
            }
        }
        Kind::Modalities => {
            let mut ors = Vec::new();
            for m in value.split([',', '\\']).map(str::trim).filter(|m| !m.is_empty()) {
                let (pattern, op) = wildcard(b.dialect, &format!("*|{m}|*"));
                let p = b.bind(BindValue::Text(pattern));
                let esc = if op == "LIKE" { " ESCAPE '\\'" } else { "" };
                ors.push(format!("{column} {op} {p}{esc}"));
            }
            if !ors.is_empty() {
                b.clauses.push(format!("({})", ors.join(" OR ")));
            }
        }
        Kind::Integer => {
            let n: i64 = value.parse().map_err(|_| AppError::BadRequest(format!("not an integer: {value}")))?;
            let p = b.bind(BindValue::Int(n));
            b.clauses.push(format!("{column} = {p}"));
        }
    }
    Ok(())
}

/// A study, series or instance found; the columns a level does not select stay empty.
#[derive(sqlx::FromRow)]
struct Found {
    study_uid: String,
    #[sqlx(default)]
    series_uid: String,
    #[sqlx(default)]
    sop_instance_uid: String,
    /// The stored DICOM JSON: a study's or series' attributes, an instance's metadata.
    attrs: String,
    /// A study's modalities, `|`-separated.
    #[sqlx(default)]
    modalities: String,
    #[sqlx(default)]
    series_count: i64,
    #[sqlx(default)]
    instance_count: i64,
    #[sqlx(default)]
    number_of_frames: i64,
}

async fn run_search(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    level: Level,
    mut params: Vec<(String, String)>,
    study: Option<String>,
    series: Option<String>,
) -> AppResult<Response> {
    let ranges = crate::http::accept::from_headers(headers);
    if !ranges.iter().any(|r| r.matches(DICOM_JSON) || r.essence == "application/json") {
        return Err(AppError::NotAcceptable("search results are available as application/dicom+json".into()));
    }
    for (uid, key) in [(&study, "StudyInstanceUID"), (&series, "SeriesInstanceUID")] {
        if let Some(u) = uid {
            if !valid_uid(u) {
                return Err(AppError::BadRequest("a UID in the path is not valid".into()));
            }
            params.push((key.into(), u.clone()));
        }
    }
    let search = parse_params(params)?;
    let mut b = SqlBuilder { dialect: state.dialect, clauses: vec![], binds: vec![] };
    let mut ignored = Vec::new();
    for (tag, value) in &search.filters {
        match KEYS.iter().find(|(t, ..)| t == tag) {
            Some((_, column, kind, key_level)) if (*key_level as u8) <= (level as u8) => {
                add_filter(&mut b, column, *kind, value, search.fuzzy)?;
            }
            _ if value.trim().is_empty() => {}
            _ => ignored.push(tag_key(*tag)),
        }
    }
    // Rows are matched by origin and UID (see crate::index): a caller sees the rows its
    // holdings link, and counts and modalities come from those rows only.
    let scope = principal.study_scope();
    let (scope_origin, scope_column, scope_level) = match level {
        Level::Study => ("s.origin", "s.study_uid", crate::index::scope::Level::Study),
        Level::Series => ("se.origin", "se.series_uid", crate::index::scope::Level::Series),
        Level::Instance => ("i.origin", "i.sop_instance_uid", crate::index::scope::Level::Instance),
    };
    if let Some(cond) = scope.condition(scope_origin, scope_column, scope_level, &mut |v| b.bind(BindValue::Text(v))) {
        b.clauses.push(cond);
    }
    // ` AND <the caller may see row (alias.origin, alias.column)>`, or nothing when unrestricted.
    let visible = |b: &mut SqlBuilder, alias: &str, column: &str, level: crate::index::scope::Level| {
        scope
            .condition(&format!("{alias}.origin"), &format!("{alias}.{column}"), level, &mut |v| b.bind(BindValue::Text(v)))
            .map(|c| format!(" AND {c}"))
            .unwrap_or_default()
    };
    // Series are counted from the series rows the caller sees (a holding links whole studies of
    // an origin), instances from the instance rows; both by UID, once each. Only the levels whose
    // answer carries a count build (and bind) its subquery.
    let series_count = match level {
        Level::Study => {
            let f = visible(&mut b, "x", "series_uid", crate::index::scope::Level::Series);
            format!("SELECT COUNT(DISTINCT x.series_uid) FROM series x WHERE x.study_uid = s.study_uid{f}")
        }
        _ => String::new(),
    };
    let instance_count = {
        let f = match level {
            Level::Instance => String::new(),
            _ => visible(&mut b, "y", "sop_instance_uid", crate::index::scope::Level::Instance),
        };
        match level {
            Level::Series => format!("SELECT COUNT(DISTINCT y.sop_instance_uid) FROM instances y WHERE y.series_uid = se.series_uid{f}"),
            _ => format!("SELECT COUNT(DISTINCT y.sop_instance_uid) FROM instances y WHERE y.study_uid = s.study_uid{f}"),
        }
    };
    let where_ = if b.clauses.is_empty() { String::new() } else { format!("WHERE {}", b.clauses.join(" AND ")) };
    let limit_p = b.bind(BindValue::Int(search.limit + 1));
    let offset_p = b.bind(BindValue::Int(search.offset));
    let sql = match level {
        Level::Study => format!(
            "SELECT s.study_uid, s.attrs, s.modalities, ({series_count}) AS series_count, ({instance_count}) AS instance_count \
             FROM studies s {where_} ORDER BY s.study_date DESC, s.study_time DESC, s.study_uid, s.created_at, s.origin \
             LIMIT {limit_p} OFFSET {offset_p}"
        ),
        Level::Series => format!(
            "SELECT se.study_uid, se.series_uid, se.attrs, ({instance_count}) AS instance_count \
             FROM series se JOIN studies s ON s.origin = se.origin AND s.study_uid = se.study_uid {where_} \
             ORDER BY se.study_uid, se.created_at, se.series_uid, se.origin LIMIT {limit_p} OFFSET {offset_p}"
        ),
        Level::Instance => format!(
            "SELECT i.study_uid, i.series_uid, i.sop_instance_uid, i.metadata AS attrs, i.number_of_frames \
             FROM instances i JOIN series se ON se.origin = i.origin AND se.series_uid = i.series_uid \
             JOIN studies s ON s.origin = i.origin AND s.study_uid = i.study_uid {where_} \
             ORDER BY i.study_uid, i.series_uid, i.instance_number, i.sop_instance_uid, i.created_at, i.origin \
             LIMIT {limit_p} OFFSET {offset_p}"
        ),
    };
    let mut q = sqlx::query_as::<_, Found>(sqlx::AssertSqlSafe(sql));
    for v in b.binds {
        q = match v {
            BindValue::Text(t) => q.bind(t),
            BindValue::Int(i) => q.bind(i),
        };
    }
    let rows = q.fetch_all(&state.db).await?;
    let more = rows.len() as i64 > search.limit;
    let base = base_url(state, headers);
    let rows: Vec<_> = rows.into_iter().take(search.limit as usize).collect();
    // One result per UID: a caller who sees rows of several origins under one UID gets the first
    // (attributes of one origin; counts over all it may see).
    let uid = |row: &Found| match level {
        Level::Study => row.study_uid.clone(),
        Level::Series => row.series_uid.clone(),
        Level::Instance => row.sop_instance_uid.clone(),
    };
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut unique = Vec::with_capacity(rows.len());
    // ModalitiesInStudy: the union over the caller's rows of the study. A holding links whole
    // studies of an origin (see crate::index), so a row's modalities are all visible to it.
    let mut modalities: Vec<Vec<String>> = Vec::with_capacity(rows.len());
    for row in rows {
        let mods: Vec<String> = match level {
            Level::Study => row.modalities.split('|').filter(|m| !m.is_empty()).map(str::to_string).collect(),
            _ => Vec::new(),
        };
        match seen.entry(uid(&row)) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let have = &mut modalities[*e.get()];
                for m in mods {
                    if !have.contains(&m) {
                        have.push(m);
                    }
                }
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(unique.len());
                unique.push(row);
                modalities.push(mods);
            }
        }
    }
    let mut out = Vec::with_capacity(unique.len());
    for (row, mods) in unique.iter().zip(&modalities) {
        let obj = match level {
            Level::Study => {
                let (uid, attrs, nseries, ninst) = (&row.study_uid, &row.attrs, row.series_count, row.instance_count);
                let mut computed = Map::new();
                computed.insert("00080061".into(), if mods.is_empty() { json!({"vr": "CS"}) } else { json!({"vr": "CS", "Value": mods}) });
                computed.insert("00201206".into(), json!({"vr": "IS", "Value": [nseries]}));
                computed.insert("00201208".into(), json!({"vr": "IS", "Value": [ninst]}));
                computed.insert("00081190".into(), json!({"vr": "UR", "Value": [format!("{base}/studies/{uid}")]}));
                select_fields(attrs, computed, STUDY_FIELDS, &search)
            }
            Level::Series => {
                let (st, se, attrs, ninst) = (&row.study_uid, &row.series_uid, &row.attrs, row.instance_count);
                let mut computed = Map::new();
                computed.insert("00201209".into(), json!({"vr": "IS", "Value": [ninst]}));
                computed.insert("00081190".into(), json!({"vr": "UR", "Value": [format!("{base}/studies/{st}/series/{se}")]}));
                select_fields(attrs, computed, SERIES_FIELDS, &search)
            }
            Level::Instance => {
                let (st, se, i, metadata, frames) =
                    (&row.study_uid, &row.series_uid, &row.sop_instance_uid, &row.attrs, row.number_of_frames);
                let mut computed = Map::new();
                computed
                    .insert("00081190".into(), json!({"vr": "UR", "Value": [format!("{base}/studies/{st}/series/{se}/instances/{i}")]}));
                if frames > 0 {
                    computed.insert("00280008".into(), json!({"vr": "IS", "Value": [frames]}));
                }
                select_fields(metadata, computed, INSTANCE_FIELDS, &search)
            }
        };
        out.push(obj);
    }
    Ok(json_response(out, &ignored, more))
}

/// Picks the default fields of the level, the requested `includefield`s (or all top-level
/// attributes for `includefield=all`) and the matching keys, from a stored DICOM JSON document.
fn select_fields(stored: &str, computed: Map<String, Value>, defaults: &[u32], search: &Search) -> Value {
    let doc: Map<String, Value> = serde_json::from_str(stored).unwrap_or_default();
    let mut out = Map::new();
    if search.include_all {
        for (k, v) in &doc {
            if v.get("BulkDataURI").is_none() && !k.starts_with("0002") && k != "7FE00010" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    let wanted = defaults
        .iter()
        .map(|t| tag_key(u32_tag(*t)))
        .chain(search.include.iter().map(|t| tag_key(*t)))
        .chain(search.filters.iter().map(|(t, _)| tag_key(*t)));
    for key in wanted {
        if let Some(v) = doc.get(&key)
            && v.get("BulkDataURI").is_none()
        {
            out.insert(key, v.clone());
        }
    }
    out.insert("00080056".into(), json!({"vr": "CS", "Value": ["ONLINE"]}));
    for (k, v) in computed {
        out.insert(k, v);
    }
    Value::Object(out)
}

fn json_response(results: Vec<Value>, ignored: &[String], more: bool) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, DICOM_JSON)], Value::Array(results).to_string()).into_response();
    let mut warnings = Vec::new();
    if !ignored.is_empty() {
        warnings
            .push(format!("299 ferry \"The following attributes are not supported for matching and were ignored: {}\"", ignored.join(",")));
    }
    if more {
        warnings.push("299 ferry \"There are more results; use offset to page\"".to_string());
    }
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&w) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// Query parameters in order, with repeated keys kept (a malformed query is a 400 problem).
pub struct Params(pub Vec<(String, String)>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Params {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, AppError> {
        let RawQuery(q) = RawQuery::from_request_parts(parts, state).await.map_err(|_| AppError::BadRequest("malformed query".into()))?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or(""))
            .map_err(|e| AppError::BadRequest(format!("malformed query string: {e}")))?;
        Ok(Params(pairs))
    }
}

pub async fn search_studies(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Params(p): Params,
) -> AppResult<Response> {
    run_search(&state, &principal, &headers, Level::Study, p, None, None).await
}

/// Series of all studies, or of the study in the path.
pub async fn search_series(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    path: DicomPath,
    Params(p): Params,
) -> AppResult<Response> {
    run_search(&state, &principal, &headers, Level::Series, p, path.study, None).await
}

/// Instances of all studies, or of the study (and series) in the path.
pub async fn search_instances(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    path: DicomPath,
    Params(p): Params,
) -> AppResult<Response> {
    run_search(&state, &principal, &headers, Level::Instance, p, path.study, path.series).await
}
