//! Parsing of `Accept` headers as DICOMweb clients send them: several media ranges, quoted or
//! unquoted `type=` and `transfer-syntax=` parameters, q-values.

#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    /// Lower-case `type/subtype`.
    pub essence: String,
    /// Lower-case names, values with quotes removed.
    pub params: Vec<(String, String)>,
    pub q: f32,
}

impl MediaRange {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn matches(&self, essence: &str) -> bool {
        if self.essence == "*/*" || self.essence == essence {
            return true;
        }
        match (self.essence.split_once('/'), essence.split_once('/')) {
            (Some((t, "*")), Some((et, _))) => t == et,
            _ => false,
        }
    }
}

/// Splits on `sep` outside double quotes.
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// Parses an Accept header (all values joined); a missing or empty header means `*/*`.
/// Ranges with q=0 are dropped; the rest are ordered by q, highest first.
pub fn parse_accept<'a>(values: impl Iterator<Item = &'a str>) -> Vec<MediaRange> {
    let mut out = Vec::new();
    for value in values {
        for range in split_unquoted(value, ',') {
            let mut parts = split_unquoted(range, ';').into_iter();
            let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if essence.is_empty() {
                continue;
            }
            let mut q = 1.0;
            let mut params = Vec::new();
            for p in parts {
                let Some((n, v)) = p.split_once('=') else { continue };
                let n = n.trim().to_ascii_lowercase();
                let v = v.trim().trim_matches('"').to_string();
                if n == "q" {
                    q = v.parse().unwrap_or(1.0);
                } else {
                    params.push((n, v));
                }
            }
            if q > 0.0 {
                out.push(MediaRange { essence, params, q });
            }
        }
    }
    if out.is_empty() {
        out.push(MediaRange { essence: "*/*".into(), params: vec![], q: 1.0 });
    }
    out.sort_by(|a, b| b.q.partial_cmp(&a.q).unwrap_or(std::cmp::Ordering::Equal));
    out
}

pub fn from_headers(headers: &axum::http::HeaderMap) -> Vec<MediaRange> {
    parse_accept(headers.get_all(axum::http::header::ACCEPT).iter().filter_map(|v| v.to_str().ok()))
}

/// Parses a `Content-Type` value (quoted or unquoted parameters, spaces in quoted values).
pub fn parse_content_type(value: &str) -> Option<MediaRange> {
    let r = parse_accept(std::iter::once(value)).into_iter().next()?;
    (r.essence != "*/*" && r.essence.contains('/')).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dicomweb_accept_headers() {
        let r = parse_accept([r#"multipart/related; type="application/dicom"; transfer-syntax=*, application/dicom;q=0.5"#].into_iter());
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].essence, "multipart/related");
        assert_eq!(r[0].param("type"), Some("application/dicom"));
        assert_eq!(r[0].param("transfer-syntax"), Some("*"));
        assert_eq!(r[1].q, 0.5);
        let r = parse_accept(["multipart/related; type=application/octet-stream"].into_iter());
        assert_eq!(r[0].param("type"), Some("application/octet-stream"));
        assert_eq!(parse_accept(std::iter::empty())[0].essence, "*/*");
        assert!(parse_accept(["image/*"].into_iter())[0].matches("image/png"));
    }
}
