//! The unified social credit code (统一社会信用代码, GB 32100-2015) and its compact key form.
//!
//! A valid code is 18 characters of `0-9 A-H J-N P-R T U W-Y` whose last character is the check
//! character of the first 17. [`EntityKey`] packs the 18 characters into 90 bits of a `u128`, so an entity
//! costs 16 bytes as a map key instead of a heap string, and keys order like their strings.

use std::fmt;

/// The 31 characters of the code, in value order (value = index). ASCII order equals value order.
const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";

/// Weights of positions 1..=17 (3^(i-1) mod 31).
const WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// Length of a credit code.
pub const LEN: usize = 18;

/// Value of each byte in the alphabet, `INVALID` for bytes outside it.
const VALUES: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const INVALID: u8 = 0xff;

/// The check character for the first 17 characters, if they are all in the alphabet.
pub fn check_char(first17: &[u8]) -> Option<u8> {
    let mut sum = 0;
    for (c, w) in first17.iter().zip(WEIGHTS) {
        let v = VALUES[usize::from(*c)];
        if v == INVALID {
            return None;
        }
        sum += u32::from(v) * w;
    }
    Some(ALPHABET[((31 - sum % 31) % 31) as usize])
}

/// An entity, identified by its credit code packed into 90 bits (5 bits per character), most significant
/// word first, so that it costs 12 bytes with 4-byte alignment and orders like the code's string.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityKey([u32; 3]);

impl EntityKey {
    /// Validates a credit code (alphabet, length, check character) and packs it.
    pub fn parse(code: &str) -> Option<EntityKey> {
        let b = code.as_bytes();
        if b.len() != LEN {
            return None;
        }
        // The first 6 characters go to `hi` (30 bits), the last 12 to `lo` (60 bits); the check sum is
        // computed in the same pass.
        let (mut hi, mut lo, mut sum, mut bad) = (0u64, 0u64, 0u32, 0u8);
        for (i, &c) in b.iter().enumerate() {
            let v = VALUES[usize::from(c)];
            bad |= v & 0x80;
            let v = v & 0x1f;
            if i < 6 {
                hi = hi << 5 | u64::from(v);
            } else {
                lo = lo << 5 | u64::from(v);
            }
            if i < 17 {
                sum += u32::from(v) * WEIGHTS[i];
            }
        }
        let check = VALUES[usize::from(b[17])];
        (bad == 0 && u32::from(check) == (31 - sum % 31) % 31).then_some(EntityKey([
            hi as u32,
            (lo >> 32) as u32,
            lo as u32,
        ]))
    }

    /// The code as its 18 ASCII characters.
    pub fn to_bytes(self) -> [u8; LEN] {
        let packed = u128::from(self.0[0]) << 60 | u128::from(self.0[1]) << 32 | u128::from(self.0[2]);
        let mut out = [0u8; LEN];
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (LEN - 1 - i);
            *slot = ALPHABET[((packed >> shift) & 31) as usize];
        }
        out
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.to_bytes();
        // The alphabet is ASCII, so this cannot fail; fall back to nothing rather than panic.
        f.write_str(std::str::from_utf8(&bytes).unwrap_or_default())
    }
}

impl fmt::Debug for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityKey({self})")
    }
}

/// Completes a 17-character prefix with its check character (used by the generator and tests).
pub fn complete(first17: &str) -> Option<String> {
    let c = check_char(first17.as_bytes()).filter(|_| first17.len() == 17)?;
    Some(format!("{first17}{}", c as char))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_validate() {
        // Published codes (check characters computed by GB 32100-2015).
        for code in ["91350100M000100Y43", "91110000802100433B", "911100001000080343"] {
            let key = EntityKey::parse(code).unwrap_or_else(|| panic!("{code} refused"));
            assert_eq!(key.to_string(), code);
        }
    }

    #[test]
    fn refuses_bad_codes() {
        assert!(EntityKey::parse("91350100M000100Y44").is_none(), "wrong check char");
        assert!(EntityKey::parse("91350100m000100Y43").is_none(), "lower case");
        assert!(EntityKey::parse("91350100I000100Y43").is_none(), "I is not in the alphabet");
        assert!(EntityKey::parse("91350100M000100Y4").is_none(), "17 chars");
        assert!(EntityKey::parse("").is_none());
    }

    #[test]
    fn keys_order_like_strings() {
        let a = complete("91350100M000100Y4").unwrap();
        let b = complete("91350100N000100Y4").unwrap();
        assert!(a < b);
        assert!(EntityKey::parse(&a).unwrap() < EntityKey::parse(&b).unwrap());
    }
}
