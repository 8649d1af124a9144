//! Directory search the way people type: case-insensitive, umlauts and ß folded
//! (`saarbruecken` finds "Saarbrücken"), word prefixes in any order (`radiolo saar`), and small
//! typos (one edit from four letters on, two from nine; transpositions count as one; the first
//! letter must be right).

pub use crate::text::fold;

/// Optimal-string-alignment distance (Damerau–Levenshtein with adjacent transpositions),
/// giving up early once it exceeds `max`.
fn distance(a: &[char], b: &[char], max: usize) -> Option<usize> {
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for (j, cell) in d.iter_mut().take(w).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        d[i * w] = i;
        let mut row_min = usize::MAX;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1).min(d[i * w + j - 1] + 1).min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
            row_min = row_min.min(v);
        }
        if row_min > max {
            return None;
        }
    }
    let v = d[a.len() * w + b.len()];
    (v <= max).then_some(v)
}

/// How well one folded query token matches one folded word: 4 the whole word, 3 a prefix,
/// 1 a prefix within the typo allowance, 0 no match.
fn token_score(token: &str, token_chars: &[char], word: &str) -> u32 {
    if word.starts_with(token) {
        return if word.len() == token.len() { 4 } else { 3 };
    }
    let token = token_chars;
    // Typos are forgiven in longer words only, and not in the first letter: "kardiologie" must
    // not find "radiologie".
    if token.len() < 4 || token.first() != word.chars().next().as_ref() {
        return 0;
    }
    let word: Vec<char> = word.chars().collect();
    let max = if token.len() <= 8 { 1 } else { 2 };
    // Compare with the word's prefixes around the token's length (the rest may be unfinished).
    let lo = token.len().saturating_sub(max).max(1);
    let hi = (token.len() + max).min(word.len());
    for len in lo..=hi {
        if distance(token, &word[..len], max).is_some() {
            return 1;
        }
    }
    0
}

/// A prepared query.
pub struct Query {
    tokens: Vec<(String, Vec<char>)>,
}

impl Query {
    pub fn new(q: &str) -> Self {
        let tokens = fold(q).split(' ').filter(|t| !t.is_empty()).map(|t| (t.to_string(), t.chars().collect())).collect();
        Self { tokens }
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Scores a folded document (name, city, departments, code); `None` unless every token
    /// matches some word.
    pub fn score(&self, folded: &str) -> Option<u32> {
        let mut total = 0;
        for (t, chars) in &self.tokens {
            let best = folded.split(' ').map(|w| token_score(t, chars, w)).max().unwrap_or(0);
            if best == 0 {
                return None;
            }
            total += best;
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(q: &str, doc: &str) -> bool {
        Query::new(q).score(&fold(doc)).is_some()
    }

    #[test]
    fn folds_and_matches_like_people_type() {
        assert_eq!(fold("Radiologie Klinikum Saarbrücken, Straße"), "radiologie klinikum saarbruecken strasse");
        let doc = "Radiologie Klinikum Saarbrücken Homburg CT MRT bM1X";
        assert!(matches("saarbruecken", doc));
        assert!(matches("Saarbrücken", doc));
        assert!(matches("radiolo saar", doc));
        assert!(matches("saar radiolo", doc));
        assert!(matches("SAARBRÜCKEN", doc));
        assert!(matches("bm1x", doc));
        assert!(matches("saarbrucken", doc), "missing e after u");
        assert!(matches("radiolgoie", doc), "transposition");
        assert!(matches("klinkum", doc), "one letter missing");
        assert!(!matches("kardiologie", doc));
        assert!(!matches("radiologie berlin", doc));
        assert!(!matches("xy", doc));
    }
}
