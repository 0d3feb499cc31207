//! Pagination of the `/v1` lists: `?limit=` (1–500, default 100), and
//! the `next_cursor` a page hands out for the next one.

use super::error::ApiError;
use super::schema::PageQuery;

const DEFAULT_PAGE: u32 = 100;
/// One less than the store's own cap: a page asks for one row more to
/// know whether another page follows.
const MAX_PAGE: u32 = 500;

/// The rows a page holds (`?limit=`), or 422 naming `limit`.
pub(super) fn page_size(limit: Option<u32>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(DEFAULT_PAGE as usize),
        Some(n) if (1..=MAX_PAGE).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::field("limit", "limit must be between 1 and 500")),
    }
}

/// One page of `items` (sorted by `key`) after `cursor`.
pub(super) fn paginate<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    q: &PageQuery,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let n = page_size(q.limit)?;
    let mut rest: Vec<T> = match &q.cursor {
        Some(c) => items.into_iter().filter(|i| key(i) > c.as_str()).collect(),
        None => items,
    };
    let next = (rest.len() > n).then(|| key(&rest[n - 1]).to_string());
    rest.truncate(n);
    Ok((rest, next))
}
