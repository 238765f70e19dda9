//! The `checksum` option: `sha256:<64 hex digits>`, the form Ansible's
//! `get_url` takes, checked against the installer before it runs.

use crate::sha256::{self, Sha256};
use crate::Error;
use std::io::{self, Read};
use std::path::Path;

/// An expected SHA-256 digest, as lower-case hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksum(String);

impl Checksum {
    /// Parses `sha256:<hex>`; the error says what is wrong and what is wanted.
    pub fn parse(text: &str) -> Result<Checksum, Error> {
        let text = text.trim();
        let Some((algorithm, digest)) = text.split_once(':') else {
            return Err(Error::ChecksumPrefix(text.to_string()));
        };
        if !algorithm.eq_ignore_ascii_case("sha256") {
            return Err(Error::ChecksumAlgorithm(algorithm.to_string()));
        }
        let digest = digest.trim();
        let all_hex = digest.bytes().all(|b| b.is_ascii_hexdigit());
        if digest.len() != 64 || !all_hex {
            return Err(Error::ChecksumDigest {
                length: digest.len(),
                all_hex,
            });
        }
        Ok(Checksum(digest.to_ascii_lowercase()))
    }

    pub fn hex(&self) -> &str {
        &self.0
    }
}

/// The SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = crate::stage::open_regular(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(sha256::hex(&hasher.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn sha256_prefix_and_64_hex_digits_are_accepted_in_any_case() {
        let c = Checksum::parse(&format!("SHA256:{}", ABC.to_uppercase())).unwrap();
        assert_eq!(c.hex(), ABC);
    }

    fn parse_error(text: &str) -> String {
        Checksum::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn malformed_values_say_what_is_wrong() {
        let no_prefix = parse_error(ABC);
        assert!(no_prefix.contains("no `sha256:` prefix"), "{no_prefix}");
        let md5 = parse_error("md5:d41d8cd98f00b204e9800998ecf8427e");
        assert!(md5.contains("only sha256 is supported"), "{md5}");
        let short = parse_error("sha256:abc");
        assert!(short.contains("got 3 characters"), "{short}");
        let not_hex = parse_error(&format!("sha256:{}", "z".repeat(64)));
        assert!(not_hex.contains("not all of them hex digits"), "{not_hex}");
    }

    #[test]
    fn file_digest_matches_sha256sum() {
        let path = std::env::temp_dir().join(format!("nvidia-driver-sum-{}", std::process::id()));
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), ABC);
        std::fs::remove_file(&path).unwrap();
    }
}
