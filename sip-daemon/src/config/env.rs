//! `${NAME}` in the configuration's string values, replaced by environment
//! variable NAME when the file is loaded: secrets (JWT secret, trunk
//! passwords, the webhook secret) reach the daemon from Kubernetes Secrets
//! or a systemd `EnvironmentFile`, so the file itself holds none and can be
//! a ConfigMap. `$${` is a literal `${`; a `$` followed by anything else is
//! kept as it is. Only strings are expanded: a value's type never changes.

use toml::Value;

/// Expands every string in `value` in place; returns one problem per string
/// that names an unset variable or is malformed, with the key's path (never
/// a value: the neighbours of a secret may be secrets too).
pub(super) fn expand(value: &mut Value, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut problems = Vec::new();
    walk(&mut String::new(), value, lookup, &mut problems);
    problems
}

fn walk(
    path: &mut String,
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    let here = path.len();
    match value {
        Value::String(s) if s.contains('$') => match expand_str(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(e) => problems.push(format!("{path}: {e}")),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push_str(&format!("[{i}]"));
                walk(path, item, lookup, problems);
                path.truncate(here);
            }
        }
        Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                walk(path, item, lookup, problems);
                path.truncate(here);
            }
        }
        _ => {}
    }
}

/// Why a string's `${…}` cannot be expanded. The text is never echoed: it
/// may be a literal secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
enum ExpandError {
    #[error("a ${{ without its closing }}")]
    Unclosed,
    #[error(
        "a ${{…}} reference that is no environment variable name (letters, digits, _; $${{ for a literal)"
    )]
    NotAName,
    #[error("environment variable {0} is not set")]
    Unset(String),
}

fn expand_str(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or(ExpandError::Unclosed)?;
            let name = &tail[..end];
            let valid = name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(ExpandError::NotAName);
            }
            let v = lookup(name).ok_or_else(|| ExpandError::Unset(name.to_string()))?;
            out.push_str(&v);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "JWT" => Some("s3cret".into()),
            "EMPTY" => Some(String::new()),
            "A_1" => Some("one".into()),
            _ => None,
        }
    }

    fn one(s: &str) -> Result<String, String> {
        expand_str(s, &env).map_err(|e| e.to_string())
    }

    #[test]
    fn variables_are_replaced_and_the_rest_is_kept() {
        assert_eq!(one("${JWT}").unwrap(), "s3cret");
        assert_eq!(
            one("pre-${A_1}-${JWT}-post").unwrap(),
            "pre-one-s3cret-post"
        );
        assert_eq!(one("${EMPTY}").unwrap(), "");
        assert_eq!(one("no variables").unwrap(), "no variables");
        assert_eq!(one("cost $5, $x and a $").unwrap(), "cost $5, $x and a $");
        assert_eq!(one("$${JWT} stays").unwrap(), "${JWT} stays");
        // Left to right: a lone `$`, then the literal `$${`.
        assert_eq!(one("$$${JWT}").unwrap(), "$${JWT}");
    }

    #[test]
    fn an_unset_or_malformed_variable_is_a_problem_naming_the_key() {
        assert_eq!(
            one("${NOPE}").unwrap_err(),
            "environment variable NOPE is not set"
        );
        assert!(one("${JWT").unwrap_err().contains("closing }"));
        assert!(
            one("${}")
                .unwrap_err()
                .contains("no environment variable name")
        );
        assert!(
            one("${1A}")
                .unwrap_err()
                .contains("no environment variable name")
        );
        let err = one("pa${ss-w0rd}").unwrap_err();
        assert!(err.contains("no environment variable name"), "{err}");
        assert!(!err.contains("w0rd"), "the text is echoed: {err}");

        let mut v: Value = toml::from_str(
            r#"
            [api]
            jwt_secret = "${JWT}"
            [[trunks]]
            name = "carrier"
            password = "${TRUNK_PASSWORD}"
            port = 5060
            "#,
        )
        .unwrap();
        let problems = expand(&mut v, &env);
        assert_eq!(
            problems,
            vec!["trunks[0].password: environment variable TRUNK_PASSWORD is not set"]
        );
        assert_eq!(v["api"]["jwt_secret"].as_str(), Some("s3cret"));
        assert_eq!(v["trunks"][0]["port"].as_integer(), Some(5060));
    }
}
