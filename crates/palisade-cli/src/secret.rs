//! Secrets read from the environment variable a flag names, never from a
//! flag's value (which shell histories and process lists keep).

use crate::failure::Failure;

/// The value of the environment variable `name`, given with `flag`, as
/// bytes.
///
/// Messages never repeat `name`: someone who passed the secret itself
/// instead of a variable's name must not see it echoed into a terminal
/// log.
pub(crate) fn from_env(flag: &str, name: &str) -> Result<Vec<u8>, Failure> {
    let looks_like_a_name = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !looks_like_a_name {
        return Err(Failure::usage(format!(
            "{flag} takes the name of an environment variable (letters, digits and `_`), not the secret itself"
        )));
    }
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Err(Failure::usage(format!(
            "the environment variable named by {flag} is empty"
        ))),
        Ok(value) => Ok(value.into_bytes()),
        Err(std::env::VarError::NotPresent) => Err(Failure::usage(format!(
            "the environment variable named by {flag} is not set (the flag takes the variable's name; export the secret in it first)"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(Failure::usage(format!(
            "the environment variable named by {flag} is not valid UTF-8"
        ))),
    }
}
