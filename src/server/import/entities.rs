//! The import file: its shape (vantage6's `v6 server import`), read within bounds and checked
//! whole before anything is written.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

/// A number or a text where the file means a text (vantage6's example has `zipcode: 54331`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Integer(i64),
    Float(f64),
}

fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let t = Option::<Scalar>::deserialize(d)?.map(|t| match t {
        Scalar::Text(s) => s,
        Scalar::Integer(i) => i.to_string(),
        Scalar::Float(f) => f.to_string(),
    });
    spend::<D>(t.as_deref().map_or(0, str::len))?;
    Ok(t)
}

/// The largest import file, in bytes.
pub const MAX_FILE: u64 = 1 << 20;
/// The most text a file may amount to once its aliases are expanded, in bytes: aliases
/// (`*name`) repeat what they name, and a file of a megabyte could otherwise expand to
/// gigabytes.
pub const MAX_TEXT: usize = 4 << 20;

std::thread_local! {
    /// What is left of [`MAX_TEXT`] for the file being read on this thread.
    static LEFT: std::cell::Cell<usize> = const { std::cell::Cell::new(MAX_TEXT) };
}

/// Counts `n` bytes of text against the file's budget.
fn spend<'de, D: serde::Deserializer<'de>>(n: usize) -> Result<(), D::Error> {
    LEFT.with(|left| match left.get().checked_sub(n) {
        Some(rest) => {
            left.set(rest);
            Ok(())
        }
        None => Err(serde::de::Error::custom(format!(
            "the file expands to more than {} MiB of text (aliases included)",
            MAX_TEXT >> 20
        ))),
    })
}

/// A text, counted against the budget.
fn counted<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    spend::<D>(s.len())?;
    Ok(s)
}

/// Texts, counted against the budget.
fn counted_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    spend::<D>(v.iter().map(String::len).sum())?;
    Ok(v)
}

/// The file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entities {
    #[serde(default)]
    pub organizations: Vec<Organization>,
    #[serde(default)]
    pub collaborations: Vec<Collaboration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Organization {
    #[serde(deserialize_with = "counted")]
    pub name: String,
    #[serde(default, deserialize_with = "text")]
    pub domain: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub address1: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub address2: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub zipcode: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub country: Option<String>,
    /// Base64 of its PEM RSA public key, for encrypted collaborations.
    #[serde(default, deserialize_with = "text")]
    pub public_key: Option<String>,
    #[serde(default)]
    pub users: Vec<User>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    #[serde(deserialize_with = "counted")]
    pub username: String,
    #[serde(deserialize_with = "counted")]
    pub password: String,
    #[serde(default, deserialize_with = "text")]
    pub firstname: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub lastname: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub email: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collaboration {
    #[serde(deserialize_with = "counted")]
    pub name: String,
    #[serde(default)]
    pub participants: Vec<Participant>,
    #[serde(default)]
    pub encrypted: bool,
    /// vantage6's example tasks: not made.
    #[serde(default, deserialize_with = "counted_list")]
    pub tasks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    #[serde(deserialize_with = "counted")]
    pub name: String,
    /// The node's API key (a UUID, as vantage6 requires); without it one is made.
    #[serde(default, deserialize_with = "text")]
    pub api_key: Option<String>,
}

/// The shortest password an imported user may have.
const MIN_PASSWORD: usize = 8;

/// Whether `s` is a UUID in its usual text form (8-4-4-4-12 hex digits).
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl Entities {
    /// Parses and checks a file's text; the error names the entry and the reason.
    pub fn parse(text: &str, admin: &str) -> Result<Entities, String> {
        LEFT.with(|left| left.set(MAX_TEXT));
        let e: Entities = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        let mut names = HashSet::new();
        let mut usernames = HashSet::new();
        for (i, o) in e.organizations.iter().enumerate() {
            if o.name.trim().is_empty() {
                return Err(format!("organizations[{i}].name: empty"));
            }
            if !names.insert(o.name.as_str()) {
                return Err(format!("organizations[{i}]: {:?} twice", o.name));
            }
            if let Some(key) = o.public_key.as_deref().filter(|k| !k.is_empty()) {
                crate::crypto::PublicKey::from_base64(key)
                    .map_err(|e| format!("organizations[{i}].public_key: {e}"))?;
            }
            for (j, u) in o.users.iter().enumerate() {
                let at = format!("organizations[{i}].users[{j}]");
                if u.username.trim().is_empty() {
                    return Err(format!("{at}.username: empty"));
                }
                if u.username == admin {
                    return Err(format!(
                        "{at}.username: {:?} is the administrator's name",
                        u.username
                    ));
                }
                if !usernames.insert(u.username.as_str()) {
                    return Err(format!("{at}: user {:?} twice", u.username));
                }
                if u.password.chars().count() < MIN_PASSWORD {
                    return Err(format!("{at}.password: at least {MIN_PASSWORD} characters"));
                }
            }
        }
        let mut collaborations = HashSet::new();
        let mut keys = HashSet::new();
        for (i, c) in e.collaborations.iter().enumerate() {
            if c.name.trim().is_empty() {
                return Err(format!("collaborations[{i}].name: empty"));
            }
            if !collaborations.insert(c.name.as_str()) {
                return Err(format!("collaborations[{i}]: {:?} twice", c.name));
            }
            let mut members = HashSet::new();
            for (j, p) in c.participants.iter().enumerate() {
                let at = format!("collaborations[{i}].participants[{j}]");
                if !members.insert(p.name.as_str()) {
                    return Err(format!("{at}: {:?} twice", p.name));
                }
                if let Some(key) = &p.api_key {
                    if !is_uuid(key) {
                        return Err(format!("{at}.api_key: not a UUID"));
                    }
                    if !keys.insert(key.as_str()) {
                        return Err(format!("{at}.api_key: another participant's too"));
                    }
                }
            }
        }
        Ok(e)
    }
}

/// The file's text, if it is no larger than [`MAX_FILE`].
pub(super) fn read_bounded(file: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(file)?
        .take(MAX_FILE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB",
            MAX_FILE >> 10
        )));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_is_refused_naming_the_entry() {
        let ok = "organizations:\n  - name: A\n    zipcode: 54331\n    address2:\n    users:\n      - {username: ann, password: long-enough}\ncollaborations:\n  - name: C\n    participants: [{name: A, api_key: 123e4567-e89b-12d3-a456-426614174000}]\n    encrypted: false\n    tasks: [hello-world]\n";
        let e = Entities::parse(ok, "root").expect("valid");
        assert_eq!(e.organizations[0].zipcode.as_deref(), Some("54331"));
        for (text, says) in [
            ("organizations: [{name: A}, {name: A}]", "organizations[1]"),
            ("organizations: [{name: ' '}]", "organizations[0].name"),
            ("organizations: [{name: A, users: [{username: u, password: short}]}]", "users[0].password"),
            ("organizations: [{name: A, users: [{username: root, password: long-enough}]}]", "administrator"),
            ("organizations: [{name: A, users: [{username: u, password: long-enough}, {username: u, password: long-enough}]}]", "users[1]"),
            ("organizations: [{name: A, colour: red}]", "colour"),
            ("organizations: [{name: A, public_key: bm90IGEga2V5}]", "organizations[0].public_key"),
            ("collaborations: [{name: C, participants: [{name: A, api_key: nope}]}]", "api_key"),
            ("collaborations: [{name: C, participants: [{name: A, api_key: 123e4567-e89b-12d3-a456-426614174000}, {name: B, api_key: 123e4567-e89b-12d3-a456-426614174000}]}]", "participants[1].api_key"),
            ("collaborations: [{name: C, participants: [{name: A}, {name: A}]}]", "participants[1]"),
            ("organizations: {name: A}", "organizations"),
            ("[1, 2", ""),
        ] {
            let e = Entities::parse(text, "root").expect_err(text);
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn a_file_that_expands_past_its_budget_is_refused_early() {
        // One large anchored text, repeated by 400 aliases: 400 times it would be gigabytes.
        let big = "x".repeat(900 * 1024);
        let mut text = format!("organizations:\n  - name: &big {big}\n");
        for i in 0..400 {
            text.push_str(&format!("  - {{name: *big, domain: o{i}}}\n"));
        }
        assert!(text.len() as u64 <= MAX_FILE);
        let e = Entities::parse(&text, "root").expect_err("refused");
        assert!(e.contains("MiB of text"), "{e}");
        // The same small file again is fine: the budget is per file.
        let ok = "organizations: [{name: &a A, domain: *a}]";
        Entities::parse(ok, "root").expect("a small alias is fine");
    }
}
