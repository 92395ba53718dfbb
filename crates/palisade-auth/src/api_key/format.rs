//! The API key format: `<prefix>_<random><checksum>`.
//!
//! - `prefix`: names the issuer and environment (`pal_live`), so secret
//!   scanners can recognise our keys;
//! - `random`: 128 random bits as 22 base62 characters;
//! - `checksum`: the CRC32 of everything before it, as 6 base62 characters,
//!   so a typo or a guessed string is refused before any hashing or store
//!   lookup.
//!
//! Base62 is written here (a dozen lines): fixed-width encoding of a `u128`
//! and a `u32` is all that is needed, and the crates that offer it are
//! larger than this.

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Characters of the random part (62^22 > 2^128).
pub(crate) const RANDOM_LEN: usize = 22;
/// Characters of the checksum (62^6 > 2^32).
pub(crate) const CHECKSUM_LEN: usize = 6;

fn digits(mut value: u128, out: &mut [u8]) {
    for digit in out.iter_mut().rev() {
        *digit = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
}

fn encode(value: u128, width: usize, out: &mut String) {
    let mut buffer = [0u8; RANDOM_LEN];
    digits(value, &mut buffer[..width]);
    for &digit in &buffer[..width] {
        out.push(char::from(digit));
    }
}

fn is_base62(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_alphanumeric)
}

fn checksum(text: &str) -> String {
    let mut out = String::with_capacity(CHECKSUM_LEN);
    encode(
        u128::from(crc32fast::hash(text.as_bytes())),
        CHECKSUM_LEN,
        &mut out,
    );
    out
}

/// Whether `prefix` can start a key: 1 to 32 ASCII letters, digits and `_`,
/// starting with a letter.
pub(crate) fn valid_prefix(prefix: &str) -> bool {
    (1..=32).contains(&prefix.len())
        && prefix.as_bytes()[0].is_ascii_alphabetic()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A new key with this prefix from 16 random bytes.
pub(crate) fn compose(prefix: &str, random: [u8; 16]) -> String {
    let mut key = String::with_capacity(prefix.len() + 1 + RANDOM_LEN + CHECKSUM_LEN);
    key.push_str(prefix);
    key.push('_');
    encode(u128::from_le_bytes(random), RANDOM_LEN, &mut key);
    let sum = checksum(&key);
    key.push_str(&sum);
    key
}

/// Checks shape, prefix and checksum without touching any store.
pub(crate) fn well_formed(key: &str, prefix: &str) -> bool {
    let expected = prefix.len() + 1 + RANDOM_LEN + CHECKSUM_LEN;
    if key.len() != expected || !key.is_char_boundary(prefix.len()) {
        return false;
    }
    let (head, rest) = key.split_at(prefix.len());
    if head != prefix || !rest.starts_with('_') {
        return false;
    }
    let body = &rest.as_bytes()[1..];
    if !is_base62(body) {
        return false;
    }
    let (signed, sum) = key.split_at(key.len() - CHECKSUM_LEN);
    // On the stack: this runs on every request, garbage included.
    let mut expected = [0u8; CHECKSUM_LEN];
    digits(
        u128::from(crc32fast::hash(signed.as_bytes())),
        &mut expected,
    );
    expected == sum.as_bytes()
}

/// The public display form: prefix, the first four random characters, and
/// the last four of the key.
pub(crate) fn display(key: &str, prefix: &str) -> (String, String) {
    let start = prefix.len() + 1;
    let shown = key.get(..start + 4).unwrap_or(prefix).to_owned();
    let last4 = key
        .get(key.len().saturating_sub(4)..)
        .unwrap_or("")
        .to_owned();
    (shown, last4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_carry_their_prefix_and_a_checksum_that_catches_typos() {
        let key = compose("pal_live", [7; 16]);
        assert!(key.starts_with("pal_live_"));
        assert_eq!(key.len(), "pal_live_".len() + 28);
        assert!(well_formed(&key, "pal_live"));
        assert!(!well_formed(&key, "pal_test"));
        let mut typo = key.clone().into_bytes();
        let i = 12;
        typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
        assert!(!well_formed(&String::from_utf8(typo).unwrap(), "pal_live"));
        assert!(!well_formed("pal_live_", "pal_live"));
        assert!(!well_formed("pal_live_ééééééééééééééé", "pal_live"));
        let (shown, last4) = display(&key, "pal_live");
        assert_eq!(shown.len(), "pal_live_".len() + 4);
        assert_eq!(last4.len(), 4);
    }

    proptest! {
        #[test]
        fn every_composed_key_is_well_formed_and_any_single_change_is_not(
            random in any::<[u8; 16]>(),
            position in 9usize..37,
            replacement in proptest::sample::select(ALPHABET.to_vec()),
        ) {
            let key = compose("pal_live", random);
            prop_assert!(well_formed(&key, "pal_live"));
            let mut changed = key.clone().into_bytes();
            prop_assume!(changed[position] != replacement);
            changed[position] = replacement;
            // CRC32 catches every single-character change.
            prop_assert!(!well_formed(&String::from_utf8(changed).unwrap(), "pal_live"));
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,64}") {
            let _ = well_formed(&text, "pal_live");
        }
    }
}
