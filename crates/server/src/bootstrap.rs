//! The admin key of a manager started without `SWITCHBOARD_ADMIN_KEY`.
//!
//! On a fresh store (no API key, no delegate token, no admin key generated before) the
//! first manager to start generates one, stores its hash and prints it once on stdout, so
//! a newcomer can use the API without configuring anything. Later starts, and other
//! replicas, find the stored hash and accept the same key without printing it. A store
//! that is already in use never gets one: its operators configure `SWITCHBOARD_ADMIN_KEY`
//! or use API keys.

use std::io::Write;

use chrono::Utc;
use switchboard_domain::{Secret, SecretHash, SecretKind};
use switchboard_store::{AdminKey, Store, StoreResult};

use crate::config::Settings;
use crate::secrets;

/// Which admin key this manager accepts, and where it came from.
#[derive(Debug)]
pub enum AdminKeySource {
    /// `admin_key` is set: that key, and no other.
    Configured(SecretHash),
    /// Generated now, on a fresh store: the secret is in clear this once, to be printed.
    Generated(Secret),
    /// Generated on an earlier start (of this manager or another replica).
    Stored(SecretHash),
    /// None: `/api/v1` takes API keys only.
    None,
}

impl AdminKeySource {
    /// The hash requests are compared against.
    pub fn hash(&self) -> Option<SecretHash> {
        match self {
            AdminKeySource::Configured(hash) | AdminKeySource::Stored(hash) => Some(*hash),
            AdminKeySource::Generated(secret) => Some(secret.hash()),
            AdminKeySource::None => None,
        }
    }
}

/// Decides the admin key: the configured one, else the stored one, else (on a fresh store)
/// a new one.
pub async fn admin_key(store: &dyn Store, settings: &Settings) -> StoreResult<AdminKeySource> {
    if let Some(configured) = &settings.admin_key {
        return Ok(AdminKeySource::Configured(configured.hash()));
    }
    let candidate = secrets::generate(SecretKind::AdminKey);
    Ok(match store.bootstrap_admin_key(&candidate.hash(), Utc::now()).await? {
        AdminKey::Created => AdminKeySource::Generated(candidate),
        AdminKey::Existing(hash) => AdminKeySource::Stored(hash),
        AdminKey::NotFresh => AdminKeySource::None,
    })
}

/// Tells the operator which admin key is in force; prints a generated key, once, on
/// `out` (stdout), never in the logs.
pub fn announce(source: &AdminKeySource, out: &mut impl Write) -> std::io::Result<()> {
    match source {
        AdminKeySource::Configured(_) => tracing::info!("admin key: from the admin_key setting"),
        AdminKeySource::Generated(secret) => {
            tracing::warn!("admin key: generated for this new store and printed on stdout, this once");
            writeln!(
                out,
                "switchboard generated an admin key for this new store. It is shown this once and \
                 stored only as a hash:\n\n    {}\n\nUse it as SWITCHBOARD_ADMIN_KEY (or --key) with the \
                 switchboard CLI, and create scoped keys with `switchboard keys create`.",
                secret.expose()
            )?;
            out.flush()?;
        }
        AdminKeySource::Stored(_) => {
            tracing::info!("admin key: the one generated on this store's first start (set admin_key to replace it)")
        }
        AdminKeySource::None => {
            tracing::warn!("no admin key: /api/v1 accepts API keys only; set SWITCHBOARD_ADMIN_KEY for an admin key")
        }
    }
    Ok(())
}
