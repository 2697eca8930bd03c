//! New credential keys, from the OS's CSPRNG: an AK of 128 bits as 32 lower-case hex digits,
//! an SK of 40 and an AppCode of 64 characters from [A-Za-z0-9] (about 238 and 381 bits).

const HEX: &[u8] = b"0123456789abcdef";
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new (access key, secret key, AppCode).
pub fn credential_keys() -> Result<(String, String, String), getrandom::Error> {
    Ok((random_string(32, HEX)?, random_string(40, ALPHANUMERIC)?, random_string(64, ALPHANUMERIC)?))
}

/// `len` characters drawn uniformly from `alphabet` (rejection sampling: no modulo bias).
fn random_string(len: usize, alphabet: &[u8]) -> Result<String, getrandom::Error> {
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf)?;
        for b in buf.iter().map(|b| *b as usize).filter(|b| *b < limit) {
            if out.len() < len {
                out.push(alphabet[b % alphabet.len()] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_have_their_lengths_and_alphabets_and_differ() {
        let (ak, sk, code) = super::credential_keys().unwrap();
        assert!(ak.len() == 32 && ak.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert!(sk.len() == 40 && sk.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(code.len(), 64);
        assert_ne!(super::credential_keys().unwrap().1, sk);
    }
}
