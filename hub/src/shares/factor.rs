//! The second factor of a share: the question a holder of the code must answer (DLX question
//! types), how answers are normalised before comparing, and the questions' wording.

use ferry_schemas::ShareOptions;
use ferry_schemas::dlx::{Question, Text};

use super::code;
use crate::accounts::password;
use crate::error::{AppError, AppResult};

pub const BIRTH_DATE: &str = "PAT_BIRTH_DATE";
pub const PASSWORD: &str = "PASSWORD";
pub const STUDY_DATE: &str = "STUDY_DATE";
pub const CUSTOM: &str = "CUSTOM";

/// What is stored for a share's question.
pub struct Factor {
    pub question_type: &'static str,
    pub question_text: String,
    pub answer_hash: String,
    /// A generated one-time password, shown once.
    pub password: Option<String>,
}

/// A date as a person types it (`19700201`, `1970-02-01`, `01.02.1970`, `1.2.1970`) → `YYYYMMDD`.
pub fn parse_date(input: &str) -> Option<String> {
    let s = input.trim();
    let (y, m, d) = if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        (s[0..4].parse().ok()?, s[4..6].parse().ok()?, s[6..8].parse().ok()?)
    } else if let Some((y, rest)) = s.split_once('-') {
        let (m, d) = rest.split_once('-')?;
        (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)
    } else {
        let mut parts = s.split('.');
        let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        (y.trim().parse().ok()?, m.trim().parse().ok()?, d.trim().parse().ok()?)
    };
    let (y, m, d): (i32, u8, u8) = (y, m, d);
    let month = time::Month::try_from(m).ok()?;
    time::Date::from_calendar_date(y, month, d).ok()?;
    if !(1850..=2200).contains(&y) {
        return None;
    }
    Some(format!("{y:04}{m:02}{d:02}"))
}

/// The form an answer is compared in.
pub fn normalize(question_type: &str, answer: &str) -> String {
    match question_type {
        BIRTH_DATE | STUDY_DATE => parse_date(answer).unwrap_or_else(|| answer.trim().to_string()),
        PASSWORD => code::normalize_password(answer),
        _ => answer.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase(),
    }
}

/// Chooses and prepares the second factor from the options and the facts of the shared
/// studies: (patient id, birth date, study date) each.
pub async fn choose(options: &ShareOptions, facts: &[(String, String, String)]) -> AppResult<Factor> {
    let kind = options.second_factor.as_deref().map(str::trim).unwrap_or("birth_date");
    let distinct = |pick: fn(&(String, String, String)) -> &String| {
        let mut v: Vec<String> = facts.iter().map(pick).filter(|s| !s.trim().is_empty()).cloned().collect();
        v.sort();
        v.dedup();
        v
    };
    let (question_type, text, answer, password) = match kind {
        "birth_date" | "PAT_BIRTH_DATE" => {
            let date = match options.birth_date.as_deref() {
                Some(given) => parse_date(given).ok_or_else(|| AppError::BadRequest("birth_date is not a valid date (YYYYMMDD)".into()))?,
                None => {
                    let dates = distinct(|f| &f.1);
                    match dates.as_slice() {
                        [one] => parse_date(one).ok_or_else(|| {
                            AppError::BadRequest("the images carry no valid birth date; give birth_date or use a password".into())
                        })?,
                        [] => {
                            return Err(AppError::BadRequest(
                                "the images carry no birth date; give birth_date or use second_factor \"password\"".into(),
                            ));
                        }
                        _ => {
                            return Err(AppError::BadRequest(
                                "the studies carry different birth dates; give birth_date or use a password".into(),
                            ));
                        }
                    }
                }
            };
            (BIRTH_DATE, String::new(), date, None)
        }
        "password" | "PASSWORD" => {
            let p = code::one_time_password();
            (PASSWORD, String::new(), code::normalize_password(&p), Some(p))
        }
        "study_date" | "STUDY_DATE" => {
            let dates = distinct(|f| &f.2);
            let newest = dates
                .last()
                .and_then(|d| parse_date(d))
                .ok_or_else(|| AppError::BadRequest("the studies carry no study date to ask for; choose another second factor".into()))?;
            (STUDY_DATE, String::new(), newest, None)
        }
        "custom" | "CUSTOM" => {
            let q = options.question.as_deref().map(str::trim).unwrap_or("");
            let a = options.answer.as_deref().map(str::trim).unwrap_or("");
            if q.is_empty() || a.is_empty() {
                return Err(AppError::BadRequest("a custom second factor needs a question and an answer".into()));
            }
            if q.chars().count() > 200 || a.chars().count() > 100 || q.chars().chain(a.chars()).any(char::is_control) {
                return Err(AppError::BadRequest(
                    "the question (200) or answer (100 characters) is too long or has control characters".into(),
                ));
            }
            (CUSTOM, q.to_string(), normalize(CUSTOM, a), None)
        }
        other => {
            return Err(AppError::BadRequest(format!("unknown second_factor {other:?}: use birth_date, password, study_date or custom")));
        }
    };
    let answer_hash = password::hash(answer).await?;
    Ok(Factor { question_type, question_text: text, answer_hash, password })
}

/// The question type shown for a well-formed code that names no share, from the code's keyed
/// [`decoy_seed`](crate::storage::keys::HubSecret::decoy_seed): half birth date (the default
/// factor), a quarter each one-time password and study date. Every question a decoy shows is,
/// text for text, one a real code shows, so a lookup does not tell a real code from an unknown
/// one. A custom question is the clinic's own text and cannot be imitated: see hub/SECURITY.md.
pub fn decoy_type(seed: u8) -> &'static str {
    match seed {
        0..=127 => BIRTH_DATE,
        128..=191 => PASSWORD,
        _ => STUDY_DATE,
    }
}

/// The question as DLX and the redeem page ask it.
pub fn question(question_type: &str, custom: &str) -> Question {
    let (format, de, en) = match question_type {
        PASSWORD => ("STRING", "Wie lautet das Passwort auf Ihrem Zettel?", "What is the password on your slip?"),
        STUDY_DATE => ("DATE", "An welchem Tag war Ihre Untersuchung?", "On which day was your examination?"),
        CUSTOM => ("STRING", custom, custom),
        _ => ("DATE", "Wann haben Sie Geburtstag?", "When is your date of birth?"),
    };
    let question_type = match question_type {
        PASSWORD | STUDY_DATE | CUSTOM => question_type,
        _ => BIRTH_DATE,
    };
    Question {
        question_id: "1".into(),
        question_type: question_type.into(),
        answer_format: format.into(),
        question: vec![Text { text: de.into(), language: "de".into() }, Text { text: en.into(), language: "en".into() }],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dates_as_people_type_them() {
        for s in ["19700201", "1970-02-01", "01.02.1970", "1.2.1970", " 01.02.1970 "] {
            assert_eq!(parse_date(s).as_deref(), Some("19700201"), "{s}");
        }
        for s in ["19701301", "31.02.1970", "1970", "", "01.02.70", "abc"] {
            assert_eq!(parse_date(s), None, "{s}");
        }
        assert_eq!(normalize(CUSTOM, "  Dr.   Bob "), "dr. bob");
    }
}
