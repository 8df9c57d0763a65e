//! The node's `policies` (vantage6's key of node.yaml): which algorithms may run here, sent by
//! whom. A run they refuse never gets a container and ends `not allowed`, its log naming the
//! rule.

use serde::Deserialize;

use crate::api::{OrganizationId, Task};

/// `policies` in node.yaml; each list empty (or absent) admits everyone.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    /// Images that may run: an exact name, a name without its tag (any tag of it), a name whose
    /// image is the same one (same image id on this host), or a regular expression (a pattern
    /// with one of `* \ ? $ ^ [ ] ( ) { } | +` or `\.`, as vantage6 tells them apart), matched
    /// from the start of the name.
    #[serde(default)]
    pub allowed_algorithms: Vec<String>,
    /// Users whose tasks may run, by id.
    #[serde(default)]
    pub allowed_users: Vec<Id>,
    /// Organizations whose tasks may run, by id.
    #[serde(default)]
    pub allowed_organizations: Vec<Id>,
}

/// An id as YAML may give it: a number, or a text of digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Id(pub i64);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Number(i64),
            Text(String),
        }
        match Given::deserialize(d)? {
            Given::Number(n) => Ok(Id(n)),
            Given::Text(t) => t.trim().parse().map(Id).map_err(|_| {
                serde::de::Error::custom(format!(
                    "{t:?} is not an id (names cannot be checked: the node may not read users)"
                ))
            }),
        }
    }
}

/// Whether `pattern` is meant as a regular expression (vantage6's best effort: it contains one
/// of the characters that are common in them).
fn is_regex(pattern: &str) -> bool {
    [
        "*", "\\", "?", "$", "^", "[", "]", "(", ")", "{", "}", "|", "+", r"\.",
    ]
    .iter()
    .any(|c| pattern.contains(c))
}

/// An image's name without its tag or digest (`registry/repo:tag` -> `registry/repo`).
fn without_tag(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    match name.rfind(':') {
        // A colon after the last slash is a tag; before it, a registry's port.
        Some(i) if !name[i..].contains('/') => &name[..i],
        _ => name,
    }
}

/// How an allowed name relates to a run's image.
#[derive(Debug, PartialEq, Eq)]
pub enum Match {
    Yes,
    No,
    /// The same repository with another tag or digest: the same image only if both are one
    /// image on this host.
    SameRepository,
}

/// Checks the pattern and names in `policies` (a bad regular expression is a start-up error).
pub fn check(p: &Policies) -> Result<(), String> {
    for (i, a) in p.allowed_algorithms.iter().enumerate() {
        if is_regex(a) {
            regex::Regex::new(&format!("^(?:{a})"))
                .map_err(|e| format!("policies.allowed_algorithms[{i}]: {e}"))?;
        }
    }
    Ok(())
}

/// How `allowed` relates to `image`.
pub fn matches(allowed: &str, image: &str) -> Match {
    if is_regex(allowed) {
        let matched =
            regex::Regex::new(&format!("^(?:{allowed})")).is_ok_and(|r| r.is_match(image));
        return if matched { Match::Yes } else { Match::No };
    }
    if allowed == image || allowed == without_tag(image) {
        Match::Yes
    } else if without_tag(allowed) == without_tag(image) {
        Match::SameRepository
    } else {
        Match::No
    }
}

/// Why `policies` refuse a task's run, if they do; `same_image` tells whether two names are
/// one image on this host.
pub fn refusal(
    p: &Policies,
    task: &Task,
    same_image: impl Fn(&str, &str) -> bool,
) -> Option<String> {
    if !p.allowed_users.is_empty() || !p.allowed_organizations.is_empty() {
        let user = task.init_user.as_ref().map(|u| u.id);
        let org = task.init_org.as_ref().map(|o| o.id);
        let by_user = user.is_some_and(|u| p.allowed_users.contains(&Id(u)));
        let by_org = org.is_some_and(|OrganizationId(o)| p.allowed_organizations.contains(&Id(o)));
        if !(by_user || by_org) {
            return Some(format!(
                "policies.allowed_users / allowed_organizations: the task was sent by user {} of organization {}, neither of which is allowed",
                user.map_or("?".into(), |u| u.to_string()),
                org.map_or("?".into(), |o| o.to_string())
            ));
        }
    }
    let image = &task.image;
    if !p.allowed_algorithms.is_empty()
        && !p
            .allowed_algorithms
            .iter()
            .any(|a| match matches(a, image) {
                Match::Yes => true,
                Match::SameRepository => same_image(a, image),
                Match::No => false,
            })
    {
        return Some(format!(
            "policies.allowed_algorithms: image {image:?} matches none of them"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tags_and_expressions_are_told_apart_as_vantage6_does() {
        let img = "harbor.example.org/algos/average:1.2";
        assert_eq!(matches(img, img), Match::Yes);
        assert_eq!(matches("harbor.example.org/algos/average", img), Match::Yes);
        assert_eq!(
            matches("harbor.example.org/algos/average:1.3", img),
            Match::SameRepository
        );
        assert_eq!(
            matches("harbor.example.org/algos/average@sha256:abcd", img),
            Match::SameRepository
        );
        assert_eq!(matches("harbor.example.org/algos/averag", img), Match::No);
        // A dot alone is a plain name: "someXname" must not pass "some.name".
        assert_eq!(matches("some.name", "someXname"), Match::No);
        assert_eq!(matches(r"^harbor\.example\.org/algos/.*", img), Match::Yes);
        assert_eq!(
            matches(r"algos/.*", img),
            Match::No,
            "matched from the start"
        );
        assert_eq!(without_tag("localhost:5000/a/b:tag"), "localhost:5000/a/b");
        assert_eq!(without_tag("localhost:5000/a/b"), "localhost:5000/a/b");
        assert!(check(&Policies {
            allowed_algorithms: vec!["[unclosed".into()],
            ..Policies::default()
        })
        .is_err());
    }

    #[test]
    fn ids_are_compared_as_ids_and_names_refused() {
        let p: Policies = yaml_serde::from_str(
            "allowed_users: [5, '7']\nallowed_organizations: [2]\nallowed_algorithms: [echo]",
        )
        .expect("policies");
        assert_eq!(p.allowed_users, [Id(5), Id(7)]);
        let e = yaml_serde::from_str::<Policies>("allowed_users: [alice]").expect_err("a name");
        assert!(e.to_string().contains("alice"), "{e}");
    }
}
