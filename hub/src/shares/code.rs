//! Access codes: 11 random Crockford base32 symbols and a check symbol, shown as `XXXX-XXXX-XXXX`.
//!
//! Crockford's alphabet leaves out I, L, O and U, so a code read aloud or typed from paper is
//! rarely misread, and decoding maps the look-alikes (I/L → 1, O → 0) back. The check symbol is
//! Crockford's mod-37 check over the 55-bit value: every single wrong symbol and every swap of two
//! neighbours is caught before the code is looked up, so a typo never counts as a wrong guess.
//! Codes whose check would be one of the five extra check symbols (`*~$=U`) are drawn again, so
//! a code only ever uses the 32 plain symbols (55 bits minus 0.2 bits of entropy).

use rand::Rng;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RANDOM_SYMBOLS: usize = 11;

/// A well-formed access code (check symbol verified), normalised to 12 upper-case symbols.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessCode(String);

impl std::fmt::Debug for AccessCode {
    // Codes are secrets: never printed by accident.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessCode(…)")
    }
}

/// Why a typed code was refused before any lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("an access code has 12 letters and digits (XXXX-XXXX-XXXX)")]
    Length,
    #[error("an access code contains only letters and digits")]
    Symbol,
    #[error("this code has a typo: please check every character")]
    Check,
}

fn value_of(c: char) -> Option<u8> {
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    ALPHABET.iter().position(|&a| a as char == c).map(|p| p as u8)
}

/// Crockford's check symbol value: the number mod 37.
fn check_of(values: &[u8]) -> u8 {
    let mut rem: u32 = 0;
    for &v in values {
        rem = (rem * 32 + v as u32) % 37;
    }
    rem as u8
}

impl AccessCode {
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        loop {
            let values: Vec<u8> = (0..RANDOM_SYMBOLS).map(|_| rng.random_range(0..32u8)).collect();
            let check = check_of(&values);
            if check < 32 {
                let mut s: String = values.iter().map(|&v| ALPHABET[v as usize] as char).collect();
                s.push(ALPHABET[check as usize] as char);
                return Self(s);
            }
        }
    }

    /// Parses what a person typed: case, spaces, hyphens and look-alikes don't matter.
    pub fn parse(input: &str) -> Result<Self, CodeError> {
        let symbols: Vec<char> = input.chars().filter(|c| !matches!(c, '-' | ' ' | '\u{a0}' | '\t')).collect();
        if symbols.len() != RANDOM_SYMBOLS + 1 {
            return Err(CodeError::Length);
        }
        let values: Vec<u8> = symbols.iter().map(|&c| value_of(c)).collect::<Option<_>>().ok_or(CodeError::Symbol)?;
        let (data, check) = values.split_at(RANDOM_SYMBOLS);
        if check_of(data) != check[0] {
            return Err(CodeError::Check);
        }
        Ok(Self(values.iter().map(|&v| ALPHABET[v as usize] as char).collect()))
    }

    /// The 12 symbols without separators (what is hashed and what URLs carry).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `XXXX-XXXX-XXXX`, for reading aloud and printing.
    pub fn display(&self) -> String {
        format!("{}-{}-{}", &self.0[0..4], &self.0[4..8], &self.0[8..12])
    }
}

/// A one-time password for the second factor: 10 Crockford symbols (50 bits), `XXXXX-XXXXX`.
pub fn one_time_password() -> String {
    let mut rng = rand::rng();
    let s: String = (0..10).map(|_| ALPHABET[rng.random_range(0..32usize)] as char).collect();
    format!("{}-{}", &s[..5], &s[5..])
}

/// Normalises a typed one-time password the way codes are (case, separators, look-alikes).
pub fn normalize_password(input: &str) -> String {
    input
        .chars()
        .filter(|c| !matches!(c, '-' | ' ' | '\u{a0}' | '\t'))
        .map(|c| value_of(c).map(|v| ALPHABET[v as usize] as char).unwrap_or(c))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_parse_and_typos_are_caught() {
        for _ in 0..500 {
            let code = AccessCode::generate();
            let shown = code.display();
            assert_eq!(shown.len(), 14);
            assert!(shown.chars().all(|c| c == '-' || ALPHABET.contains(&(c as u8))));
            assert_eq!(AccessCode::parse(&shown).unwrap(), code);
            assert_eq!(AccessCode::parse(&shown.to_lowercase().replace('-', " ")).unwrap(), code);
            // Every single wrong symbol is caught.
            let raw: Vec<char> = code.as_str().chars().collect();
            for i in 0..raw.len() {
                for &a in ALPHABET.iter() {
                    if a as char == raw[i] {
                        continue;
                    }
                    let mut typo = raw.clone();
                    typo[i] = a as char;
                    let typo: String = typo.into_iter().collect();
                    assert_eq!(AccessCode::parse(&typo), Err(CodeError::Check), "{typo}");
                }
            }
            // Every swap of two different neighbours is caught.
            for i in 0..raw.len() - 1 {
                if raw[i] != raw[i + 1] {
                    let mut swapped = raw.clone();
                    swapped.swap(i, i + 1);
                    let swapped: String = swapped.into_iter().collect();
                    assert_eq!(AccessCode::parse(&swapped), Err(CodeError::Check));
                }
            }
        }
    }

    #[test]
    fn look_alikes_and_bad_input() {
        let code = AccessCode::generate();
        let with_o = code.as_str().replace('0', "o").replace('1', "l");
        assert_eq!(AccessCode::parse(&with_o).unwrap(), code);
        assert_eq!(AccessCode::parse("ABC"), Err(CodeError::Length));
        assert_eq!(AccessCode::parse("ABCD-EFGH-JKM!"), Err(CodeError::Symbol));
        assert_eq!(normalize_password("abcde-fgh1o"), "ABCDEFGH10");
    }
}
