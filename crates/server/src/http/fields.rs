//! Checks of body fields that several routes share, each refusing with a 422 that names
//! the field: a delegate's tags (registration, declaration, retagging) and its task types.

use switchboard_domain::delegate::MAX_TASK_TYPES;
use switchboard_domain::selector::parse_selectors;
use switchboard_domain::{Selectors, TaskType};

use super::error::ApiError;

/// The `tags` field as selectors (trimmed, lower-case, deduplicated), naming a bad tag.
pub fn tags(raw: &[String]) -> Result<Selectors, ApiError> {
    parse_selectors(raw.iter().map(String::as_str))
        .map_err(|(tag, e)| ApiError::validation("tags", format!("tag {tag:?}: {e}")))
}

/// The `task_types` field, at most [`MAX_TASK_TYPES`] of them.
pub fn task_types(types: &[TaskType]) -> Result<(), ApiError> {
    if types.len() > MAX_TASK_TYPES {
        return Err(ApiError::validation(
            "task_types",
            format!("at most {MAX_TASK_TYPES} task types"),
        ));
    }
    Ok(())
}
