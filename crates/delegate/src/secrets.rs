//! The secrets of an acquired task, made into values: a value the manager delivered is
//! used as it is; a reference is resolved here, where the task runs, so its value never
//! leaves this network. This delegate resolves `env:NAME` (a variable of its own
//! environment) and `file:/path` (the file's content, without a final newline); any
//! other scheme fails the task with `secret_unresolved`, for a delegate that knows it.

use switchboard_domain::Secret;
use switchboard_protocol::secrets::DeliveredSecret;

/// Why a task cannot start: its failure code and detail.
pub type Unresolved = (&'static str, String);

/// Each secret's name and value, in the task's order; the first that cannot be had ends
/// it (`secret_missing` when the manager could not deliver it).
pub fn resolve(delivered: &[DeliveredSecret]) -> Result<Vec<(String, Secret)>, Unresolved> {
    delivered.iter().map(one).collect()
}

fn one(s: &DeliveredSecret) -> Result<(String, Secret), Unresolved> {
    let name = s.name.to_string();
    if let Some(why) = &s.missing {
        return Err(("secret_missing", why.clone()));
    }
    if let Some(value) = &s.value {
        return Ok((name, value.clone()));
    }
    let Some(reference) = &s.reference else {
        return Err((
            "secret_missing",
            format!("the manager sent neither a value nor a reference for {name}"),
        ));
    };
    let value = match reference.parts() {
        ("env", var) => std::env::var(var).map_err(|_| {
            (
                "secret_unresolved",
                format!("{reference} (secret {name}): the variable is not set on this delegate"),
            )
        })?,
        ("file", path) => std::fs::read_to_string(path)
            .map(|text| text.strip_suffix('\n').unwrap_or(&text).to_owned())
            .map_err(|e| ("secret_unresolved", format!("{reference} (secret {name}): {e}")))?,
        (scheme, _) => {
            return Err((
                "secret_unresolved",
                format!("{reference} (secret {name}): this delegate resolves env: and file: references, not {scheme}:"),
            ));
        }
    };
    Ok((name, Secret::presented(value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_domain::Ident;
    use switchboard_domain::vault::SecretReference;

    fn delivered(value: Option<&str>, reference: Option<&str>, missing: Option<&str>) -> DeliveredSecret {
        DeliveredSecret {
            name: Ident::parse("db").unwrap(),
            value: value.map(Secret::presented),
            reference: reference.map(|r| SecretReference::parse(r).unwrap()),
            missing: missing.map(str::to_owned),
        }
    }

    #[test]
    fn values_pass_and_references_resolve_here() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let got = resolve(&[
            delivered(Some("sealed-value"), None, None),
            delivered(None, Some(&format!("file:{}", file.display())), None),
            delivered(None, Some("env:PATH"), None),
        ])
        .unwrap();
        assert_eq!(got[0].1.expose(), "sealed-value");
        assert_eq!(got[1].1.expose(), "from-a-file");
        assert_eq!(got[2].1.expose(), std::env::var("PATH").unwrap());
    }

    #[test]
    fn what_cannot_be_resolved_says_why() {
        let unset = resolve(&[delivered(None, Some("env:SWITCHBOARD_TEST_SURELY_UNSET_VAR"), None)]).unwrap_err();
        assert_eq!(unset.0, "secret_unresolved");
        let vault = resolve(&[delivered(None, Some("vault:secret/db#pw"), None)]).unwrap_err();
        assert!(vault.1.contains("not vault:"), "{vault:?}");
        let gone = resolve(&[delivered(None, None, Some("deleted"))]).unwrap_err();
        assert_eq!(gone, ("secret_missing", "deleted".to_owned()));
    }
}
