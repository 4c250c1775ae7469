//! Reading an id the way people paste it: from a QR scanner, a printed sheet, a chat.
//!
//! [`PublicId`]'s own parser is strict (one id, one spelling). What people paste is not:
//! the whole output of `wtd id` (the id, then `fingerprint: ...`), an id wrapped over two
//! lines, a `name id` line from a class list, a `wtd:` or `wtd://` URI from a QR code,
//! capitals from a scanner that reads QR text in upper case, the sheet's card text
//! (`wtd card pi-3 token ... owner wtd1...`). [`from_pasted`] finds the one id in all
//! that, and still refuses a typo: the id's checksum (3 bytes of SHA-256) catches it.

use crate::identity::{KeyError, PublicId, PUBLIC_PREFIX};

/// The length of an id's text: the prefix and 56 base32 characters (32 bytes + checksum).
const ID_TEXT_LEN: usize = PUBLIC_PREFIX.len() + 56;

/// Why pasted text gave no id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasteError {
    /// Nothing in the text starts with `wtd1`.
    #[error(
        "no wtd id in what was pasted (an id starts with `{PUBLIC_PREFIX}`; run `wtd id` on their machine)"
    )]
    NoId,
    /// Two different ids: which one was meant?
    #[error("two different wtd ids in what was pasted; paste one at a time")]
    SeveralIds,
    /// The id itself is wrong: a typo (checksum), cut short, or a weak key.
    #[error("{0}")]
    Key(#[from] KeyError),
    /// A `fingerprint:` was pasted with the id and does not match it: one of them was
    /// mistyped, or they come from two machines.
    #[error("the fingerprint pasted with the id ({pasted}) is not its fingerprint ({actual}); copy both again from `wtd id`")]
    FingerprintMismatch { pasted: String, actual: String },
}

/// What [`from_pasted`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pasted {
    pub id: PublicId,
    /// The words before the id, if any (`bob` in `bob wtd1...`): a name, perhaps.
    pub before: Vec<String>,
}

/// Finds the one id in pasted text. See the module doc for what is tolerated.
pub fn from_pasted(text: &str) -> Result<Pasted, PasteError> {
    let words: Vec<String> = text.split_whitespace().map(strip_uri).collect();
    let mut found: Option<(PublicId, usize)> = None;
    let mut i = 0;
    while i < words.len() {
        let lower = words[i].to_ascii_lowercase();
        if !lower.starts_with(PUBLIC_PREFIX) {
            i += 1;
            continue;
        }
        // An id wrapped over lines: join the base32 words that follow until it is whole.
        let mut joined = lower;
        let start = i;
        i += 1;
        while joined.len() < ID_TEXT_LEN && i < words.len() && is_base32(&words[i]) {
            joined.push_str(&words[i].to_ascii_lowercase());
            i += 1;
        }
        let id: PublicId = joined.parse()?;
        match found {
            Some((other, _)) if other != id => return Err(PasteError::SeveralIds),
            Some(_) => {}
            None => found = Some((id, start)),
        }
    }
    let (id, start) = found.ok_or(PasteError::NoId)?;
    if let Some(pos) = words.iter().position(|w| w.eq_ignore_ascii_case("fingerprint:")) {
        if let Some(pasted) = words.get(pos + 1) {
            let actual = id.fingerprint();
            if !pasted.eq_ignore_ascii_case(&actual) {
                return Err(PasteError::FingerprintMismatch {
                    pasted: pasted.chars().take(40).collect(),
                    actual,
                });
            }
        }
    }
    Ok(Pasted {
        id,
        before: words[..start].to_vec(),
    })
}

/// `wtd:wtd1...` and `wtd://wtd1...` (any case) are the id; other words are unchanged.
fn strip_uri(word: &str) -> String {
    let lower = word.to_ascii_lowercase();
    for scheme in ["wtd://", "wtd:"] {
        if lower.starts_with(scheme) && lower.len() > scheme.len() {
            return word[scheme.len()..].trim_end_matches('/').to_string();
        }
    }
    word.to_string()
}

fn is_base32(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| matches!(b.to_ascii_lowercase(), b'a'..=b'z' | b'2'..=b'7'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SecretKey;

    fn id() -> PublicId {
        SecretKey::from_seed(&[7; 32]).public()
    }

    #[test]
    fn every_way_people_paste_an_id_gives_the_id() {
        let text = id().to_string();
        let (head, tail) = text.split_at(30);
        let cases = [
            text.clone(),
            format!("  {text}\n"),
            format!("{text}\nfingerprint: {}\n", id().fingerprint()),
            format!("{head}\n{tail}"),
            format!("{head} {tail}"),
            format!("wtd:{text}"),
            format!("WTD://{}/", text.to_ascii_uppercase()),
            text.to_ascii_uppercase(),
            format!("wtd card pi-3 token none owner {text}"),
            format!("{text} {text}"),
        ];
        for case in cases {
            assert_eq!(from_pasted(&case).map(|p| p.id), Ok(id()), "{case:?}");
        }
        let named = from_pasted(&format!("bob {text}")).unwrap();
        assert_eq!(named.before, ["bob"]);
    }

    #[test]
    fn a_typo_or_a_mix_up_is_refused_with_what_to_do() {
        let text = id().to_string();
        // One character changed: the checksum catches it.
        let last = text.chars().last().unwrap();
        let typo = format!(
            "{}{}",
            &text[..text.len() - 1],
            if last == 'a' { 'b' } else { 'a' }
        );
        assert!(matches!(
            from_pasted(&typo),
            Err(PasteError::Key(KeyError::BadChecksum | KeyError::BadText))
        ));
        assert!(matches!(
            from_pasted(&text[..40]),
            Err(PasteError::Key(KeyError::BadText))
        ));
        assert_eq!(from_pasted("bob"), Err(PasteError::NoId));
        assert_eq!(from_pasted(""), Err(PasteError::NoId));
        let other = SecretKey::from_seed(&[8; 32]).public();
        assert_eq!(
            from_pasted(&format!("{text} {other}")),
            Err(PasteError::SeveralIds)
        );
        let wrong = format!("{text}\nfingerprint: {}", other.fingerprint());
        assert!(matches!(
            from_pasted(&wrong),
            Err(PasteError::FingerprintMismatch { .. })
        ));
        // A weak key (the identity point) is refused even when spelled perfectly.
        let mut point = [0u8; 32];
        point[0] = 1;
        let weak = PublicId::text_of_any_bytes(&point);
        assert_eq!(from_pasted(&weak), Err(PasteError::Key(KeyError::Weak)));
    }
}
